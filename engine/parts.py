"""Start the real parts that ciel talks to when no hardware is there: a JACK server with the dummy
driver (a clocked sound card), Xvfb (a display), and find Pure Data. Used by tests, benchmarks and
`ciel run --start-jack`. Each `start_*` returns a context manager that stops what it started and
leaves alone what was already running.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Iterator

def jack_running(name: str | None = None) -> bool:
    """True if the JACK server `name` (default: $JACK_DEFAULT_SERVER or "default") answers."""
    lsp = shutil.which("jack_lsp")
    if lsp is None:
        return False
    env = dict(os.environ, JACK_NO_START_SERVER="1")
    if name is not None:
        env["JACK_DEFAULT_SERVER"] = name
    try:
        return subprocess.run([lsp], capture_output=True, timeout=5, env=env).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@contextlib.contextmanager
def jackd(rate: int = 48000, period: int = 128, name: str | None = None) -> Iterator[subprocess.Popen]:
    """A private JACK server with the dummy driver (a clocked sound card without hardware).

    It runs under its own name (default: the first free of "ciel", "ciel-2"…) at realtime priority
    when allowed (as `jackd -R`), else at normal priority, and $JACK_DEFAULT_SERVER points this process
    and its children at it while the context lasts, so tests and benchmarks neither use nor
    disturb another JACK server on the machine. Yields the server's process.
    """
    exe = shutil.which("jackd")
    if exe is None:
        raise FileNotFoundError("jackd not found: run `bash scripts/setup-system.sh` (Debian package jackd2)")
    name = name or free_server_name("ciel")
    saved = {k: os.environ.get(k) for k in ("JACK_DEFAULT_SERVER", "JACK_NO_START_SERVER")}
    proc = _start_jackd(exe, name, rate, period, realtime=True)
    if proc is None:  # no realtime permission here: a normal-priority server still keeps time
        proc = _start_jackd(exe, name, rate, period, realtime=False)
    if proc is None:
        raise RuntimeError(f"jackd -n {name} did not start")
    try:
        os.environ["JACK_DEFAULT_SERVER"] = name
        os.environ["JACK_NO_START_SERVER"] = "1"
        yield proc
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        stop(proc)


def free_server_name(prefix: str) -> str:
    """The first of `prefix`, `prefix-2` … `prefix-8` that no running JACK server uses.

    Fixed names, not process ids: JACK keeps a registry of at most 8 server names, and a server
    that dies without unregistering holds its slot until a server of the same name starts again.
    """
    for i in range(1, 9):
        name = prefix if i == 1 else f"{prefix}-{i}"
        if not jack_running(name):
            return name
    raise RuntimeError(f"all JACK server names {prefix}..{prefix}-8 are in use")


def _start_jackd(exe: str, name: str, rate: int, period: int, realtime: bool) -> subprocess.Popen | None:
    """Start `jackd -n name -d dummy` and wait until it answers; None if it exits or times out.
    With `realtime`, jackd runs its process thread at SCHED_FIFO (it refuses to start without permission)."""
    env = dict(os.environ, JACK_NO_AUDIO_RESERVATION="1")
    args = [exe, "-n", name] + ([] if realtime else ["--no-realtime"]) + ["-d", "dummy", "-r", str(rate), "-p", str(period)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    deadline = time.monotonic() + 10
    while not jack_running(name):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            return None
        time.sleep(0.1)
    return proc


def stop(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """Terminate a process politely, then kill it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def xvfb(display: str = ":99", size: str = "1920x1080x24") -> Iterator[str]:
    """An Xvfb display (or the current $DISPLAY if one is set). Yields the display name."""
    if os.environ.get("DISPLAY"):
        yield os.environ["DISPLAY"]
        return
    exe = shutil.which("Xvfb")
    if exe is None:
        raise FileNotFoundError("Xvfb not found: run `bash scripts/setup-system.sh` (Debian package xvfb)")
    num = int(display.lstrip(":"))
    while Path(f"/tmp/.X11-unix/X{num}").exists() or Path(f"/tmp/.X{num}-lock").exists():
        num += 1
    display = f":{num}"
    proc = subprocess.Popen([exe, display, "-screen", "0", size, "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not Path(f"/tmp/.X11-unix/X{num}").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Xvfb did not start on {display}")
            time.sleep(0.05)
        yield display
    finally:
        stop(proc)


def pd_binary() -> str:
    """Path of Pure Data (`pd`), or FileNotFoundError saying how to install it."""
    exe = shutil.which("pd") or shutil.which("puredata")
    if exe is None:
        raise FileNotFoundError("Pure Data not found: run `bash scripts/setup-system.sh` (Debian package puredata-core)")
    return exe
