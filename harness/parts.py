"""Start the real parts that ciel talks to when no hardware is there: a JACK server with the dummy
driver (a clocked sound card), Xvfb (a display), and find Pure Data. Used by tests, benchmarks and
soaks. `JackServer`, `Xvfb`, `jackd()` and `xvfb()` are context managers that stop what they started and
leave alone what was already running.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


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


@dataclass(frozen=True)
class JackXruns:
    """Xruns a JACK server logged, by cause. `driver_late`: the server's own clock thread woke
    after its cycle had ended (with the dummy driver: the machine did not run it in time; no
    client's work is involved). `client_late`: a client had not finished its process callback
    when the next cycle began (the client's dropout). `offset` marks the log position for the next
    `xruns(since=...)`."""

    driver_late: int
    client_late: int
    offset: int


class JackServer:
    """A private JACK server with the dummy driver (a clocked sound card without hardware).

    It runs under its own name, and `start` points this process and its children at it through
    $JACK_DEFAULT_SERVER, so tests, benchmarks and soaks neither use nor disturb another JACK
    server on the machine. It runs at realtime priority when allowed (as `jackd -R`), else at
    normal priority. `kill` is a crash (SIGKILL); starting again under the same name takes the
    registration back; `stop` ends it cleanly (SIGTERM). Also a context manager. What the server
    prints goes to a temporary log that `xruns` reads.
    """

    def __init__(self, name: str | None = None, rate: int = 48000, period: int = 64, playback: int = 2) -> None:
        self.name = name or free_server_name("ciel")
        self.rate, self.period, self.playback = rate, period, playback
        self.proc: subprocess.Popen | None = None
        self.realtime = False
        self._log = tempfile.NamedTemporaryFile(prefix=f"jackd-{self.name}-", suffix=".log")
        self._saved = {k: os.environ.get(k) for k in ("JACK_DEFAULT_SERVER", "JACK_NO_START_SERVER")}

    def describe(self) -> str:
        """One line for benchmark reports: the driver, its clock and its scheduling."""
        how = "SCHED_FIFO (jackd -R)" if self.realtime else "normal priority (no realtime permission)"
        return f"jackd dummy {self.rate} Hz / {self.period} frames at {how}"

    @property
    def log_path(self) -> str:
        """The file what the server printed goes to (until it is closed)."""
        return self._log.name

    def answers(self) -> bool:
        return jack_running(self.name)

    def start(self) -> JackServer:
        """Start it; FileNotFoundError (no jackd) or RuntimeError (it would not start) if not."""
        exe = shutil.which("jackd")
        if exe is None:
            raise FileNotFoundError("jackd not found: run `bash scripts/setup-system.sh` (Debian package jackd2)")
        how = (exe, self.name, self.rate, self.period, self.playback, self._log)
        self.proc = _start_jackd(*how, realtime=True)
        self.realtime = self.proc is not None
        if self.proc is None:  # no realtime permission here: a normal-priority server still keeps time
            self.proc = _start_jackd(*how, realtime=False)
        if self.proc is None:
            raise RuntimeError(f"jackd -n {self.name} did not start")
        os.environ["JACK_DEFAULT_SERVER"] = self.name
        os.environ["JACK_NO_START_SERVER"] = "1"
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.proc = end(self.proc, sig)

    def xruns(self, since: int = 0, client: str | None = None) -> JackXruns:
        """The xruns the server logged after log offset `since` (0: since it started), by cause. A
        client found unfinished in the cycle right after a late driver cycle was woken late itself,
        so it counts as the driver's. With `client`, only that client's late cycles count."""
        with open(self._log.name, "rb") as fh:
            fh.seek(since)
            lines = fh.read().decode("utf-8", "replace").splitlines()
            offset = fh.tell()
        driver = late = 0
        after_driver = False
        for line in lines:
            if "Driver::Process XRun" in line:
                driver, after_driver = driver + 1, True
            elif "was not finished" in line:
                if client is None or f"client = {client} was" in line:
                    late += 0 if after_driver else 1
                after_driver = False
        return JackXruns(driver_late=driver, client_late=late, offset=offset)

    def stop(self) -> None:
        """End the server cleanly and point JACK clients back where they pointed before `start`."""
        self.kill(signal.SIGTERM)
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    def __enter__(self) -> JackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def jackd(rate: int = 48000, period: int = 64, name: str | None = None, playback: int = 2) -> Iterator[JackServer]:
    """A `JackServer` for the length of a `with` block (default name: the first free of "ciel",
    "ciel-2"…), with `playback` output channels (a sound card with that many). Yields the
    running server."""
    with JackServer(name, rate, period, playback) as server:
        yield server


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


def _start_jackd(exe: str, name: str, rate: int, period: int, playback: int,
                 log: tempfile._TemporaryFileWrapper[bytes], realtime: bool) -> subprocess.Popen | None:
    """Start `jackd -n name -d dummy` with `playback` output channels (its output appended to
    `log`) and wait until it answers;
    None if it exits or times out. With `realtime`, jackd runs its process thread at SCHED_FIFO
    (it refuses to start without permission)."""
    env = dict(os.environ, JACK_NO_AUDIO_RESERVATION="1")
    args = [exe, "-n", name] + ([] if realtime else ["--no-realtime"]) + ["-d", "dummy", "-r", str(rate), "-p", str(period),
                                                                         "-P", str(playback)]
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + 10
    while not jack_running(name):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            return None
        time.sleep(0.1)
    return proc


def end(proc: subprocess.Popen | None, sig: int) -> None:
    """Send `sig` to a server process that still runs, then make sure it is gone. Returns None
    (what the caller's handle becomes)."""
    if proc is not None:
        if proc.poll() is None:
            proc.send_signal(sig)
        stop(proc)
    return None


def stop(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """Terminate a process politely, then kill it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Xvfb:
    """An Xvfb display server on a fixed display number that can be killed and started again
    there (a display that goes away and comes back, as after a display manager restart).

    `start` takes the first free number from `display` on and waits for its socket; `kill`
    ends it with `sig` (SIGKILL by default: the clients' connection breaks at once); a second
    `start` opens the same number again. Also a context manager.
    """

    def __init__(self, display: str = ":99", size: str = "1920x1080x24") -> None:
        self.num = int(display.lstrip(":"))
        self.size = size
        self.proc: subprocess.Popen | None = None
        self._fixed = False

    @property
    def display(self) -> str:
        return f":{self.num}"

    def _socket(self) -> Path:
        return Path(f"/tmp/.X11-unix/X{self.num}")

    def start(self) -> Xvfb:
        exe = shutil.which("Xvfb")
        if exe is None:
            raise FileNotFoundError("Xvfb not found: run `bash scripts/setup-system.sh` (Debian package xvfb)")
        if not self._fixed:
            while self._socket().exists() or Path(f"/tmp/.X{self.num}-lock").exists():
                self.num += 1
            self._fixed = True
        self.proc = subprocess.Popen([exe, self.display, "-screen", "0", self.size, "-nolisten", "tcp"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while not self._socket().exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                stop(self.proc)
                raise RuntimeError(f"Xvfb did not start on {self.display}")
            time.sleep(0.05)
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.proc = end(self.proc, sig)
        for leftover in (self._socket(), Path(f"/tmp/.X{self.num}-lock")):  # a killed server leaves them
            leftover.unlink(missing_ok=True)

    def __enter__(self) -> Xvfb:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill(signal.SIGTERM)


@contextlib.contextmanager
def xvfb(display: str = ":99", size: str = "1920x1080x24") -> Iterator[str]:
    """An Xvfb display (or the current $DISPLAY if one is set). Yields the display name."""
    if os.environ.get("DISPLAY"):
        yield os.environ["DISPLAY"]
        return
    with Xvfb(display, size) as server:
        yield server.display


def pd_binary() -> str:
    """Path of Pure Data (`pd`), or FileNotFoundError saying how to install it."""
    exe = shutil.which("pd") or shutil.which("puredata")
    if exe is None:
        raise FileNotFoundError("Pure Data not found: run `make test` or `CIEL_WITH_BROWSER=1 bash scripts/setup-system.sh` (Debian package puredata-core)")
    return exe


def wait_port(port: int, host: str = "127.0.0.1", timeout: float = 20.0) -> None:
    """Wait until something accepts TCP connections on host:port (RuntimeError after `timeout` s)."""
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {host}:{port}")


def nginx_binary() -> str:
    """Path of nginx, or FileNotFoundError saying how to install it."""
    exe = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if exe is None:
        raise FileNotFoundError("nginx not installed (Debian package nginx-light; scripts/setup-system.sh with CIEL_WITH_BROWSER=1)")
    return exe


@contextlib.contextmanager
def nginx(site: Path, port: int, connections: int = 256) -> Iterator[subprocess.Popen]:
    """Debian's nginx serving the folder `site` on 127.0.0.1:port (one worker, `connections`
    connections, HTTP keep-alive as shipped), its configuration and logs in a temporary folder."""
    exe = nginx_binary()
    with tempfile.TemporaryDirectory(prefix="ciel-nginx-") as tmp:
        conf = Path(tmp) / "nginx.conf"
        user = "user root;" if os.geteuid() == 0 else ""
        conf.write_text(f"""
{user}
worker_processes 1;
worker_rlimit_nofile {2 * connections + 64};
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections {connections}; }}
http {{
    include /etc/nginx/mime.types;
    types {{ application/json json; }}
    access_log off;
    client_body_temp_path {tmp}/body;
    server {{ listen 127.0.0.1:{port} backlog=4096; root {site}; }}
}}
""", encoding="utf-8")
        proc = subprocess.Popen([exe, "-c", str(conf), "-p", tmp], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            wait_port(port)
            yield proc
        finally:
            stop(proc)


class JackTone:
    """A JACK client `name` with one output port (`name:out`) that plays a sine while `on`.

    `started`: time.monotonic() of the process cycle in which the tone began, the moment its first
    samples are in the ports it feeds (JACK runs a cycle's clients in graph order, so a reader
    connected to this port gets them in the same cycle). Also a context manager.
    """

    def __init__(self, server: str, name: str = "tone", hz: float = 440.0, amplitude: float = 0.5) -> None:
        import jack
        import numpy as np

        self.client = jack.Client(name, no_start_server=True, servername=server)
        self.port = self.client.outports.register("out")
        self.name = f"{self.client.name}:out"
        self.on = False
        self.started = 0.0
        self._playing = False
        self._phase = 0
        step = 2 * np.pi * hz / self.client.samplerate

        def process(frames: int) -> None:
            buf = self.port.get_array()
            if self.on:
                if not self._playing:
                    self._playing, self.started = True, time.monotonic()
                buf[:] = amplitude * np.sin(step * (self._phase + np.arange(frames)))
                self._phase += frames
            else:
                self._playing = False
                buf[:] = 0.0

        self.client.set_process_callback(process)
        self.client.activate()

    def close(self) -> None:
        self.client.deactivate()
        self.client.close()

    def __enter__(self) -> JackTone:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
