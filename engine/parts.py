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

    It runs under its own name (default "ciel-PID") and $JACK_DEFAULT_SERVER points this process
    and its children at it while the context lasts, so tests and benchmarks neither use nor
    disturb another JACK server on the machine. Yields the server's process.
    """
    exe = shutil.which("jackd")
    if exe is None:
        raise FileNotFoundError("jackd not found: run `bash scripts/setup-system.sh` (Debian package jackd2)")
    name = name or f"ciel-{os.getpid()}"
    env = dict(os.environ, JACK_NO_AUDIO_RESERVATION="1")
    proc = subprocess.Popen([exe, "-n", name, "--no-realtime", "-d", "dummy", "-r", str(rate), "-p", str(period)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    saved = {k: os.environ.get(k) for k in ("JACK_DEFAULT_SERVER", "JACK_NO_START_SERVER")}
    try:
        deadline = time.monotonic() + 10
        while not jack_running(name):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"jackd -n {name} did not start (exit code {proc.poll()})")
            time.sleep(0.1)
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
