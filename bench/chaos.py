"""Fault soak: the installation under Xvfb + JACK for M minutes with a random fault every minute.

`python -m bench chaos --minutes 60` runs ciel the way the documented systemd unit does
(docs/installation.md: `ciel install`, restarted half a second after it exits) on a private JACK
dummy server and an Xvfb display of 1920x1080, and every `--every` seconds (60) injects one fault,
drawn from a shuffled deck so that each kind comes up as often as the others:

- `audio_kill`: SIGKILL to the audio process;           - `gan_kill`: SIGKILL to the generator;
- `jack_restart`: jackd killed, started again after 1 s;
- `disk_full`: the log folder (a 16 MB tmpfs) filled to the last byte for 20 s while a stray OSC
  tool sends to an unknown address (ciel logs that every 2 s), then freed;
- `bad_image`: every image of the baked folder replaced by a malformed file (a truncated PNG, or
  one declaring 2 gigapixels) until the next fault;
- `osc_flood`: 10,000 OSC messages/s for 10 s at ciel's OSC port;
- `bad_preset`: `/ciel/preset/store` with a tab in the name and with a 10,000-character name;
- `x_restart`: the X server killed and started again on the same display (a window cannot
  outlive its display: ciel exits and the service starts it again).

The first half of the run plays live scenes (the generator and the decoder), the second half the
same installation from a baked folder (`ciel install --baked`, weak hardware), with a planned
restart between them: `gan_kill` is drawn only in the live half, `bad_image` only in the baked
one. `--quick` runs 5 minutes with a fault every 15 s.

Where each key is measured:
- `seconds_silent_max`: the longest stretch without sound at ciel's JACK ports (`ciel:out_*`,
  captured by a JACK client in a process of its own, `harness/jackear.py`, started afresh for
  each JACK server: no block with a peak above -80 dBFS), across restarts, jackd included. An ear
  process whose JACK cycles stop for a second is replaced and counted in `ear_deaf_restarts`;
  the time it was deaf counts as silence (the bench cannot tell it from silence); `seconds_dark_max`: the longest stretch without a picture on the display (the
  centre of the X screen read back every 0.25 s; mean level at most 3/255, or no display).
  Both within a half (the planned restart between the halves is not counted).
- `scenes_missed`: scene changes seen on /healthz; a gap of g seconds between two scene starts
  (or a half's start or end) misses round(g / period) - 1 scenes when g > 1.5 periods.
- `faults`/`recovered`: a fault is recovered when, before the next one, ciel runs, /healthz is ok,
  frames advance, sound and picture came back after the fault ended, and the fault's own check
  passed (a new audio or generator process; the log written again after the disk was freed; the
  malformed image named on /healthz; an OSC set read back over OSCQuery after the flood; both bad
  names answered by `/ciel/error` and the patch file unchanged).
- `restarts`: exits of ciel within 30 s after its display was killed; `crashes`: every other
  exit (the planned restart between the halves is neither).
- `rss_mb_growth`/`fds_growth`: memory and open files of ciel's process tree (main, audio and
  generator processes; the fork server they start from is counted too), sampled every 5 s; per
  ciel process that lived at least 5 minutes, the last sample minus the one 2 minutes after its
  start (imports, model, caches and the first scenes are in by then); the largest.
  `growth_lives`: how many processes lived that long; `growth_span_s_max`: the longest span
  measured (a display restart every few minutes ends the main process and its children, so the
  spans are minutes, not the hour). Null with the reason when no process lived that long.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.common import machine_load
from bench.soak import descendants
from harness import parts

log = logging.getLogger("ciel.chaos")

ROOT = Path(__file__).resolve().parents[1]
DARK_LEVEL = 3.0
RESTART_S = 0.5                   # the documented unit's RestartSec
DISPLAY_EXIT_WINDOW_S = 30.0      # an exit this soon after the display was killed is a restart
LONG_LIVED_S = 300.0
RSS_WARMUP_S = 120.0
FAULTS = ("audio_kill", "gan_kill", "jack_restart", "disk_full", "bad_image", "osc_flood", "bad_preset", "x_restart")
LIVE_ONLY, BAKED_ONLY = {"gan_kill"}, {"bad_image"}


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Every:
    """A daemon thread that calls `step()` every `interval` seconds until `stop()`."""

    interval = 0.25

    def __init__(self, name: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.step()

    def step(self) -> None:
        raise NotImplementedError


class Gaps:
    """The longest time between two 'alive' moments (sound heard, picture seen), per cause.

    `alive(now)` from any thread; `begin(now)` starts a half (the gap from it counts); `end(now)`
    closes it (the gap up to it counts). `cause` names the fault under way, for the report."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.last: float | None = None
        self.longest = 0.0
        self.by_cause: dict[str, float] = {}
        self.cause = "none"
        self.counting = False
        self.since_mark = 0.0   # the longest gap since `mark` (the fault under way)

    def begin(self, now: float) -> None:
        with self._lock:
            self.last, self.counting = now, True

    def alive(self, now: float) -> None:
        with self._lock:
            if self.counting and self.last is not None:
                self._gap(now - self.last)
            self.last = now

    def mark(self, cause: str) -> None:
        """A fault begins: gaps that end from now on are its own."""
        with self._lock:
            self.cause, self.since_mark = cause, 0.0

    def _gap(self, gap: float) -> None:
        self.since_mark = max(self.since_mark, gap)
        self.longest = max(self.longest, gap)
        self.by_cause[self.cause] = round(max(self.by_cause.get(self.cause, 0.0), gap), 2)

    def end(self, now: float) -> None:
        with self._lock:
            if self.counting and self.last is not None:
                self._gap(now - self.last)
            self.counting = False

    def since(self, t: float) -> bool:
        """True when alive at or after `t`."""
        with self._lock:
            return self.last is not None and self.last >= t


class Ear(Every):
    """Hears ciel's output ports (`ciel:out_*`) through `harness.jackear`, a JACK client in a
    process of its own, started afresh for every JACK server (libjack's per-process state does
    not survive a server killed and started again under the same name), and marks every block
    with sound on `gaps`.

    Threads: `step` (its own, every 0.25 s) starts the ear process when the server answers and
    none runs, and ends one whose JACK cycles stopped for a second (triggered by the server, never
    run: deaf); a reader thread per process turns its lines into `gaps.alive` times.
    `restarts` counts the ends for a stall, so a report can say the measuring ear itself failed."""

    STALL_S = 1.0
    START_S = 15.0   # a new ear's first line, on a loaded machine

    def __init__(self, server: str, gaps: Gaps) -> None:
        super().__init__("chaos-ear")
        self.server, self.gaps = server, gaps
        self.proc: subprocess.Popen[str] | None = None
        self.cycles = 0            # JACK cycles the current process has run
        self.moved = 0.0           # when its cycle count last moved (monotonic)
        self.restarts = 0          # processes ended because their cycles stopped
        self.heard_from = False    # the current process has printed a line
        self.starts = 0

    def stop(self) -> None:
        super().stop()
        self._end()

    def _end(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)

    def _read(self, proc: subprocess.Popen[str]) -> None:
        for line in proc.stdout or ():
            try:
                cycles, first, last = line.split()
                c, a, b = int(cycles), float(first), float(last)
            except ValueError:
                continue
            if proc is not self.proc:   # an ended ear's last lines: its times still count, its cycles not
                pass
            elif c != self.cycles or not self.heard_from:
                self.cycles, self.moved, self.heard_from = c, time.monotonic(), True
            if a:
                self.gaps.alive(a)
            if b:
                self.gaps.alive(b)

    def step(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            waited = time.monotonic() - self.moved
            if waited > (self.STALL_S if self.heard_from else self.START_S):
                log.warning("ear: no JACK cycle for %.1f s (deaf); a new ear process", waited)
                self.restarts += 1
                self._end()
            return
        if not parts.jack_running(self.server):
            return
        env = dict(os.environ, JACK_NO_START_SERVER="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "harness.jackear", self.server, r"^ciel:out_"],
                                     cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=None, text=True)   # its one-line errors go to the bench's log
        self.starts += 1
        self.cycles, self.moved, self.heard_from = 0, time.monotonic(), False   # START_S to import and open
        threading.Thread(target=self._read, args=(self.proc,), name="chaos-ear-reader", daemon=True).start()

    def describe(self) -> str:
        """The ear's state and the JACK graph's connections of ciel's ports: one line, for a report."""
        env = dict(os.environ, JACK_DEFAULT_SERVER=self.server, JACK_NO_START_SERVER="1")
        try:
            lsp = subprocess.run(["jack_lsp", "-c"], capture_output=True, text=True, timeout=5, env=env).stdout
        except (OSError, subprocess.TimeoutExpired) as exc:
            lsp = f"jack_lsp: {exc}"
        graph = " ".join(lsp.split())
        return (f"ear: {self.cycles} cycles in process {self.starts}, {self.restarts} ended deaf; "
                f"graph: {graph[:600]}")


class Eye(Every):
    """Reads the centre of the X screen back four times a second; a mean level above DARK_LEVEL/255
    is a picture. Its own thread."""

    def __init__(self, display: Callable[[], str], size: tuple[int, int], gaps: Gaps) -> None:
        super().__init__("chaos-eye")
        self.display, self.gaps = display, gaps
        w, h = size
        self.bbox = (w // 2 - w // 8, h // 2 - h // 8, w // 2 + w // 8, h // 2 + h // 8)
        self.errors = 0

    def step(self) -> None:
        from PIL import ImageGrab

        try:
            im = ImageGrab.grab(bbox=self.bbox, xdisplay=self.display())
        except OSError:   # no display (killed, not yet back)
            self.errors += 1
            return
        if float(np.asarray(im.convert("L"), dtype=np.float32).mean()) > DARK_LEVEL:
            self.gaps.alive(time.monotonic())


@dataclass
class Exit:
    at: float
    code: int | None
    pid: int
    tail: str


class Service:
    """ciel as the systemd unit runs it: started again RESTART_S after any exit (Restart=always).

    Its own thread waits on the process. `switch(args)` ends the current process with SIGTERM
    (a planned exit, not counted) and starts `args` next."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.args, self.env, self.log_path = args, env, log_path
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        self.exits: list[Exit] = []
        self.planned: set[int] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="chaos-service", daemon=True)

    @property
    def pid(self) -> int | None:
        proc = self.proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def start(self) -> None:
        self._thread.start()

    def _spawn(self) -> None:
        with self._lock:
            out = open(self.log_path, "ab")
            self.proc = subprocess.Popen(self.args, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
            out.close()
            self.started_at = time.monotonic()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._spawn()
            proc = self.proc
            if self._stop.is_set():   # stopped while it was being started
                self._end(proc)
            code = proc.wait()
            if proc.pid not in self.planned:
                self.exits.append(Exit(time.monotonic(), code, proc.pid, self._tail()))
            if self._stop.wait(RESTART_S):
                return

    def _tail(self) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-3:])
        except OSError:
            return ""

    def _end(self, proc: subprocess.Popen | None) -> None:
        if proc is not None and proc.poll() is None:
            self.planned.add(proc.pid)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)

    def switch(self, args: list[str]) -> None:
        self.args = args
        self._end(self.proc)

    def stop(self) -> None:
        self._stop.set()
        self._end(self.proc)
        self._thread.join(timeout=25)


class Health(Every):
    """Polls /healthz every 0.25 s on its own thread; keeps the latest document and the times at
    which a new scene appeared."""

    def __init__(self, url: str) -> None:
        super().__init__("chaos-health")
        self.url = url
        self.doc: dict = {}
        self.at = 0.0
        self.scene: tuple | None = None
        self.scene_starts: list[float] = []

    def step(self) -> None:
        try:
            with urllib.request.urlopen(self.url, timeout=1.0) as r:
                doc = json.loads(r.read())
        except urllib.error.HTTPError as exc:   # 503: not ok, still a document
            doc = json.loads(exc.read() or b"{}")
        except (OSError, ValueError):
            return
        now = time.monotonic()
        self.doc, self.at = doc, now
        # a scene is identified by the process and its number there (ids may repeat)
        scene = (doc.get("pid"), (doc.get("scheduler") or {}).get("scene_number"))
        if scene[1] and scene != self.scene:
            self.scene = scene
            self.scene_starts.append(now)

    def get(self, *keys: str):
        d = self.doc
        for k in keys:
            if not isinstance(d, dict):
                return None
            d = d.get(k)
        return d


class Usage(Every):
    """Memory and open files of each process of ciel's tree (main, audio, generator), every 5 s:
    {pid: [(seconds since first seen, resident MB, fds)]}. Its own thread."""

    interval = 5.0

    def __init__(self, service: Service, health: Health) -> None:
        super().__init__("chaos-usage")
        self.service, self.health = service, health
        self.samples: dict[int, list[tuple[float, float, int]]] = {}
        self.roles: dict[int, str] = {}   # pid → main, audio, generator, fork server, resource tracker, other
        self._first: dict[int, float] = {}

    def _role(self, p: int, main: int) -> str:
        if p == main:
            return "main"
        if p == self.health.get("audio", "pid"):
            return "audio"
        if p == self.health.get("gan", "pid"):
            return "generator"
        try:
            cmd = Path(f"/proc/{p}/cmdline").read_bytes()
        except OSError:
            return "other"
        return "resource tracker" if b"resource_tracker" in cmd else "fork server" if b"forkserver" in cmd else "other"

    def step(self) -> None:
        pid = self.service.pid
        if pid is None:
            return
        now = time.monotonic()
        for p in descendants(pid):
            try:
                rss_kb = next(int(line.split()[1]) for line in Path(f"/proc/{p}/status").read_text().splitlines()
                              if line.startswith("VmRSS:"))
                fds = len(os.listdir(f"/proc/{p}/fd"))
            except (OSError, StopIteration, ValueError):
                continue
            first = self._first.setdefault(p, now)
            self.samples.setdefault(p, []).append((now - first, rss_kb / 1024.0, fds))
            if self.roles.get(p, "other") in ("other", "fork server"):   # a worker forked from the server shares
                self.roles[p] = self._role(p, pid)                    # its command line until /healthz names it


class SystemdWatchdog(Every):
    """The unit's `WatchdogSec=30` and `TimeoutStartSec=120`: ciel gets `$NOTIFY_SOCKET` and
    `$WATCHDOG_USEC`; a ciel that is not READY within 120 s of its start, or sends no WATCHDOG=1
    for 30 s, gets SIGABRT (as systemd sends), and the exit is a crash. Its own thread."""

    interval = 1.0

    def __init__(self, path: Path, service: Service, watchdog_s: float = 30.0, start_s: float = 120.0) -> None:
        super().__init__("chaos-watchdog")
        self.path, self.service, self.watchdog_s, self.start_s = path, service, watchdog_s, start_s
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.kills: list[str] = []
        self._started = -1.0
        self._ready = False
        self._ping = 0.0

    def env(self) -> dict[str, str]:
        return {"NOTIFY_SOCKET": str(self.path), "WATCHDOG_USEC": str(int(self.watchdog_s * 1e6))}

    def step(self) -> None:
        now = time.monotonic()
        if self.service.started_at != self._started:   # a new ciel: it starts over
            self._started, self._ready, self._ping = self.service.started_at, False, self.service.started_at
        while True:
            try:
                data = self.sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                break
            if b"READY=1" in data:
                self._ready, self._ping = True, now
            if b"WATCHDOG=1" in data:
                self._ping = now
        pid = self.service.pid
        late = (self._ready and now - self._ping > self.watchdog_s) or (not self._ready and now - self._started > self.start_s)
        if pid is not None and late:
            self.kills.append(f"pid {pid}: {'no WATCHDOG=1 for' if self._ready else 'not READY after'} "
                              f"{now - (self._ping if self._ready else self._started):.0f} s")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGABRT)
            self._started = self.service.started_at + 1e-9   # counted once per process

    def stop(self) -> None:
        super().stop()
        self.sock.close()


@dataclass
class Fault:
    kind: str
    at: float
    ended: float = 0.0
    check: Callable[[], bool] = lambda: True
    recovered: bool = False
    recovery_s: float | None = None
    note: str = ""
    missing: list[str] = field(default_factory=list)   # what was still wrong at the end of its minute
    injected: bool = True   # False: the bench could not do it (the note says why); not counted


@dataclass
class Rig:
    """Everything a fault acts on."""

    tmp: Path
    jack: parts.JackServer
    xvfb: parts.Xvfb
    service: Service
    health: Health
    sound: Gaps
    light: Gaps
    osc_port: int
    query_port: int
    patch: Path
    log_dir: Path
    baked: Path
    disk_full_ok: bool
    display_killed: list[float] = field(default_factory=list)
    images: dict[Path, bytes] = field(default_factory=dict)
    ear: Ear | None = None


def osc_message(address: str, *args: float | str) -> bytes:
    from pythonosc.osc_message_builder import OscMessageBuilder

    b = OscMessageBuilder(address)
    for a in args:
        b.add_arg(a)
    return b.build().dgram


def frames_advance(rig: Rig, since: float) -> Callable[[], bool]:
    start = {"pid": None, "frames": None}

    def check() -> bool:
        pid, frames = rig.health.get("pid"), rig.health.get("frames")
        if rig.health.at < since or frames is None:
            return False
        if start["pid"] != pid or start["frames"] is None:
            start.update(pid=pid, frames=frames)
            return False
        return frames > start["frames"]

    return check


def inject(kind: str, rig: Rig, rng: random.Random) -> Fault:
    """Do the fault `kind` now; returns it with its own recovery check (main thread)."""
    now = time.monotonic()
    f = Fault(kind, now)
    h = rig.health
    if kind in ("audio_kill", "gan_kill"):
        part = "audio" if kind == "audio_kill" else "gan"
        pid = h.get(part, "pid")
        count = int(h.get("gan", "keyframes") or 0)
        f.note = f"pid {pid}"
        try:
            if not pid:
                raise ProcessLookupError("no pid on /healthz")
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError as exc:   # nothing to kill: not a fault the show met
            f.injected, f.note = False, f"{part} process not killed: {exc}"
        if kind == "audio_kill":
            f.check = lambda: h.get("audio", "pid") not in (None, 0, pid) and bool(h.get("audio", "running"))
        else:
            f.check = lambda: h.get("gan", "pid") not in (None, pid) and int(h.get("gan", "keyframes") or 0) > count
    elif kind == "jack_restart":
        rig.jack.kill()
        time.sleep(1.0)
        rig.jack.start()
    elif kind == "disk_full":
        filler = rig.log_dir / "filler"
        with contextlib.suppress(OSError), open(filler, "wb") as fh:
            chunk = b"\0" * (1 << 20)
            while True:
                fh.write(chunk)
                fh.flush()
        with contextlib.suppress(OSError):   # the last bytes: a disk filled to the byte
            with open(filler, "ab", buffering=0) as fh:
                while True:
                    fh.write(b"\0" * 4096)
        errors = int(h.get("log_write_errors") or 0)
        log_file = rig.log_dir / "ciel.log"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            # a stray OSC tool: an unknown address and a malformed packet make ciel log two lines
            # every 2 s (rate-limited), more than the slack in the log file's last page
            for _ in range(15):
                s.sendto(osc_message("/stray/tool", 1.0), ("127.0.0.1", rig.osc_port))
                s.sendto(b"\x00not osc", ("127.0.0.1", rig.osc_port))
                time.sleep(2.0)
            lost = int(h.get("log_write_errors") or 0) - errors
            filler.unlink(missing_ok=True)
            grew = False
            for _ in range(10):
                s.sendto(osc_message("/stray/tool", 1.0), ("127.0.0.1", rig.osc_port))
                time.sleep(1.0)
                grew = "logging resumed" in log_tail(log_file)
                if grew:
                    break
        f.note = f"{lost} log records lost while full; \"logging resumed\" in the log after: {grew}"
        if lost == 0:
            f.injected = False   # every line fit in the log file's last page: the full disk was never met
        f.check = lambda: grew
    elif kind == "bad_image":
        pngs = sorted(rig.baked.glob("*.png"))
        bomb = rng.random() < 0.5
        for p in pngs:
            rig.images.setdefault(p, p.read_bytes())
            data = rig.images[p]
            p.write_bytes(bomb_png() if bomb else data[: len(data) // 3])
        f.note = ("2-gigapixel PNG headers" if bomb else "truncated PNGs") + f" in {len(pngs)} files"
        names = [p.name for p in pngs]
        f.check = lambda: any(n in m for m in (h.get("messages") or []) for n in names)
    elif kind == "osc_flood":
        sent = flood(rig.osc_port, 10_000.0, 10.0)
        f.note = f"{sent} messages in 10 s"
        value = round(rng.uniform(-170, 170), 1)

        def read_back() -> bool:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(osc_message("/ciel/sky/lon", value), ("127.0.0.1", rig.osc_port))
            time.sleep(0.2)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{rig.query_port}/ciel/sky/lon?VALUE", timeout=2) as r:
                    return abs(float(json.loads(r.read())["VALUE"][0]) - value) < 0.01
            except (OSError, ValueError, KeyError, IndexError):
                return False

        f.check = read_back
    elif kind == "bad_preset":
        before = rig.patch.read_bytes()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(3.0)
            s.bind(("127.0.0.1", 0))
            for name in ("bad\tname", "n" * 10_000):
                with contextlib.suppress(OSError):
                    s.sendto(osc_message("/ciel/preset/store", name), ("127.0.0.1", rig.osc_port))
            replies = 0
            with contextlib.suppress(OSError):
                while replies < 2:
                    data, _ = s.recvfrom(65536)
                    replies += data.startswith(b"/ciel/error")
        f.note = f"{replies} of 2 /ciel/error replies"

        def unchanged() -> bool:
            from engine.patch import load_patch

            try:
                load_patch(rig.patch)
            except Exception:  # noqa: BLE001 — any failure to load is the finding
                return False
            return rig.patch.read_bytes() == before and replies == 2

        f.check = unchanged
    elif kind == "x_restart":
        old = rig.service.pid
        rig.display_killed.append(time.monotonic())
        rig.xvfb.kill()
        time.sleep(0.5)
        rig.xvfb.start()
        f.note = f"ciel pid {old}"
        f.check = lambda: rig.service.pid not in (None, old)
    f.ended = time.monotonic()
    return f


def log_tail(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, path.stat().st_size - 20_000))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def bomb_png() -> bytes:
    """A PNG whose header declares 50,000 x 40,000 pixels (2 gigapixels) and holds no image."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", 50_000, 40_000, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def flood(port: int, rate: float, seconds: float) -> int:
    """Send `/ciel/sky/spacing` at `rate` messages/s for `seconds` (paced every 10 ms)."""
    packets = [osc_message("/ciel/sky/spacing", 10.0 + (i % 50)) for i in range(100)]
    sent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        t0 = time.monotonic()
        while (now := time.monotonic()) - t0 < seconds:
            due = int((now - t0) * rate)
            while sent < due:
                with contextlib.suppress(OSError):
                    s.sendto(packets[sent % 100], ("127.0.0.1", port))
                sent += 1
            time.sleep(0.01)
    return sent


def unrecovered(f: Fault, rig: Rig, frames: Callable[[], bool]) -> list[str]:
    """What is still wrong after fault `f`: the general checks after any fault, then the fault's
    own (an empty list: recovered)."""
    h = rig.health
    pid = rig.service.pid
    checks: tuple[tuple[str, Callable[[], bool]], ...] = (
        ("ciel not running", lambda: pid is not None),
        ("no /healthz from the running ciel since the fault", lambda: h.at > f.ended and h.get("pid") == pid),
        (f"/healthz not ok ({'; '.join(h.get('problems') or [])})", lambda: bool(h.get("ok"))),
        ("frames not advancing", frames),
        ("no sound at the JACK ports since the fault", lambda: rig.sound.since(f.ended)),
        ("no picture on the display since the fault", lambda: rig.light.since(f.ended)),
        (f"the fault's own check ({f.note})", f.check))
    missing = []
    for what, ok in checks:   # in order, lazily: later checks depend on earlier ones (and may send)
        if not ok():
            missing.append(what)
            break
    return missing


def ciel_patch(tmp: Path, osc_port: int, query_port: int) -> Path:
    """The installation patch with free ports, no MIDI and no zeroconf, its models by absolute path."""
    import tomlkit

    from engine.installation import INSTALLATION_PATCH

    doc = tomlkit.parse(INSTALLATION_PATCH.read_text())
    for section, key in (("audio", "model"), ("visual", "model")):
        doc[section][key] = str((ROOT / str(doc[section][key])).resolve())
    doc.setdefault("osc", tomlkit.table())["port"] = osc_port
    doc.setdefault("oscquery", tomlkit.table()).update({"port": query_port, "zeroconf": False})
    doc.setdefault("midi", tomlkit.table())["enabled"] = False
    path = tmp / "chaos.toml"
    path.write_text(tomlkit.dumps(doc))
    return path


@contextlib.contextmanager
def log_disk(folder: Path) -> Iterator[bool]:
    """A 16 MB tmpfs at `folder` (True), or a plain folder when mounting is not allowed (False)."""
    folder.mkdir(parents=True, exist_ok=True)
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(folder)],
                        capture_output=True).returncode == 0 if shutil.which("mount") else False
    try:
        yield ok
    finally:
        if ok:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@dataclass(frozen=True)
class Growth:
    """Memory and open files gained by ciel's processes over their lives (see the module)."""

    mb: float | None          # the largest per-process growth, MB (None: no process lived long enough)
    fds: int | None           # the largest per-process growth of open files
    lives: int                # processes measured
    span_s: float | None      # the longest span measured (base sample to last), s
    reason: str               # why None, or ""


def grown_mb(series: list[tuple[float, float, int]]) -> float | None:
    """One process's RSS growth (MB) from RSS_WARMUP_S after it appeared to its last sample."""
    base = next((s for s in series if s[0] >= RSS_WARMUP_S), None)
    return None if base is None else round(series[-1][1] - base[1], 1)


def growth(samples: dict[int, list[tuple[float, float, int]]]) -> Growth:
    """Per process that lived LONG_LIVED_S: its last sample minus the one RSS_WARMUP_S after it
    was first seen; the largest over the processes."""
    best_mb: float | None = None
    best_fd: int | None = None
    spans: list[float] = []
    for series in samples.values():
        if not series or series[-1][0] < LONG_LIVED_S:
            continue
        base = next(s for s in series if s[0] >= RSS_WARMUP_S)
        mb, fds = series[-1][1] - base[1], series[-1][2] - base[2]
        spans.append(series[-1][0] - base[0])
        best_mb = mb if best_mb is None else max(best_mb, mb)
        best_fd = fds if best_fd is None else max(best_fd, fds)
    reason = "" if best_mb is not None else f"no ciel process lived {LONG_LIVED_S / 60:.0f} minutes"
    return Growth(None if best_mb is None else round(best_mb, 1), best_fd, len(spans),
                  round(max(spans), 1) if spans else None, reason)


def classify(exits: list[Exit], display_killed: list[float]) -> tuple[list[Exit], list[Exit]]:
    """(restarts, crashes): each killed display accounts for at most one exit within
    DISPLAY_EXIT_WINDOW_S after it; every other exit is a crash."""
    restarts, crashes = [], []
    kills = sorted(display_killed)
    for e in sorted(exits, key=lambda e: e.at):
        k = next((k for k in kills if 0 <= e.at - k <= DISPLAY_EXIT_WINDOW_S), None)
        if k is None:
            crashes.append(e)
        else:
            kills.remove(k)
            restarts.append(e)
    return restarts, crashes


def run(minutes: float, every: float, period: float, seed: int, kinds: tuple[str, ...] = FAULTS,
        keep: Path | None = None) -> dict:
    rng = random.Random(seed)
    seconds = minutes * 60.0
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ciel-chaos-")))
        jack = stack.enter_context(parts.JackServer(parts.free_server_name("ciel-chaos"), period=64))
        xvfb = stack.enter_context(parts.Xvfb(":90", "1920x1080x24"))
        log_dir = tmp / "logs"
        disk_ok = stack.enter_context(log_disk(log_dir))
        osc_port, query_port, health_port = free_port(socket.SOCK_DGRAM), free_port(), free_port()
        patch = ciel_patch(tmp, osc_port, query_port)
        baked = tmp / "baked"
        env = dict(os.environ, DISPLAY=xvfb.display, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        cli = [sys.executable, "-m", "engine.cli"]
        t_bake = time.monotonic()
        subprocess.run([*cli, "bake", str(baked), str(patch), "--count", "4", "--seconds", str(period), "--no-wav"],
                       env=env, check=True, capture_output=True, timeout=900)
        t_bake = time.monotonic() - t_bake
        base = [*cli, "install", str(patch), "--always-open", "--period", str(period), "--log-dir", str(log_dir),
                "--health-port", str(health_port)]
        service = Service(base, env, tmp / "ciel.out")
        watchdog = SystemdWatchdog(tmp / "notify.sock", service)
        env.update(watchdog.env())
        health = Health(f"http://127.0.0.1:{health_port}/healthz")
        usage = Usage(service, health)
        sound, light = Gaps(), Gaps()
        rig = Rig(tmp, jack, xvfb, service, health, sound, light, osc_port, query_port, patch, log_dir, baked, disk_ok)
        ear, eye = Ear(jack.name, sound), Eye(lambda: xvfb.display, (1920, 1080), light)
        rig.ear = ear
        service.start()
        stack.callback(service.stop)
        for part in (health, ear, eye, watchdog, usage):
            part.start()
            stack.callback(part.stop)

        faults: list[Fault] = []
        not_injected: dict[str, str] = {}
        if not disk_ok:
            not_injected["disk_full"] = "could not mount a tmpfs for the log folder (needs root)"
        halves = (("live", base), ("baked", [*base, "--baked", str(baked)]))
        missed = 0
        deck: list[str] = []
        t_start = time.monotonic()
        for half, (mode, args) in enumerate(halves):
            if half:
                service.switch(args)
            h0 = time.monotonic()
            # the half begins once ciel plays: sound and picture both seen (a start is not a fault)
            while not (sound.since(h0) and light.since(h0) and health.get("pid") == service.pid) \
                    and time.monotonic() - h0 < 120:
                time.sleep(0.25)
            begin = time.monotonic()
            sound.begin(begin)
            light.begin(begin)
            scenes_from = len(health.scene_starts)
            end = t_start + seconds * (half + 1) / 2
            next_fault = begin + every
            while (now := time.monotonic()) < end:
                if now >= next_fault and end - now > every / 2:
                    applicable = [k for k in kinds if k not in not_injected
                                  and not (k in LIVE_ONLY and mode != "live") and not (k in BAKED_ONLY and mode != "baked")]
                    if not any(k in applicable for k in deck):
                        fresh = list(applicable)
                        rng.shuffle(fresh)
                        deck.extend(fresh)
                    kind = next(k for k in deck if k in applicable)
                    deck.remove(kind)
                    restore_images(rig)
                    sound.mark(kind)
                    light.mark(kind)
                    log.info("fault %d: %s", len(faults) + 1, kind)
                    fault = inject(kind, rig, rng)
                    frames = frames_advance(rig, fault.ended)
                    faults.append(fault)
                    slot_end = min(max(fault.at + every, fault.ended + 10.0), end)
                    while time.monotonic() < slot_end:
                        if not fault.recovered:
                            fault.missing = unrecovered(fault, rig, frames)
                            if not fault.missing:
                                fault.recovered = True
                                fault.recovery_s = round(time.monotonic() - fault.at, 2)
                        time.sleep(0.25)
                    next_fault = fault.at + every
                    if not fault.recovered and any("no sound" in m for m in fault.missing):
                        x = jack.xruns()
                        fault.note += (f"; {ear.describe()}; jackd xruns {x.driver_late} late, {x.client_late} by clients"
                                       f"; /healthz audio {rig.health.get('audio')}")
                    outcome = (f"recovered in {fault.recovery_s:.1f} s" if fault.recovered
                               else f"NOT recovered: {'; '.join(fault.missing)}")
                    outcome += (f"; silent {sound.since_mark:.2f} s, dark {light.since_mark:.2f} s, "
                                f"load {os.getloadavg()[0]:.2f}")
                    print(f"chaos: {mode} fault {len(faults)} {kind} ({fault.note}): {outcome}", file=sys.stderr, flush=True)
                    continue
                time.sleep(0.25)
            stop = time.monotonic()
            sound.end(stop)
            light.end(stop)
            starts = [begin, *health.scene_starts[scenes_from:], stop]
            for a, b in zip(starts, starts[1:]):
                if b - a > 1.5 * period:
                    missed += round((b - a) / period) - 1
                    print(f"chaos: {mode}: no new scene for {b - a:.1f} s from {a - t_start:.0f} s into the run",
                          file=sys.stderr)
        restore_images(rig)
        if keep is not None:   # what ciel printed, for reading after the run
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(tmp / "ciel.out", keep / "ciel.out")
            shutil.copy(jack.log_path, keep / "jackd.log")
        after_display, crashes = classify(list(service.exits), rig.display_killed)
        samples = usage.samples
        grown = growth(samples)
        for e in crashes:
            print(f"chaos: crash of pid {e.pid} (exit {e.code}): {e.tail}", file=sys.stderr)
        for line in watchdog.kills:
            print(f"chaos: the watchdog killed {line}", file=sys.stderr)
        done = [f for f in faults if f.injected]
        for f in faults:
            if not f.injected:
                not_injected[f"{f.kind} at {f.at - t_start:.0f} s"] = f.note
        print(f"chaos: {machine_load()}; {len(done)} faults in {minutes:g} min; bake {t_bake:.0f} s; "
              f"silence by fault {sound.by_cause}; dark by fault {light.by_cause}; "
              f"processes (pid, role, s, MB, fds, MB grown from {RSS_WARMUP_S:.0f} s) "
              f"{[(pid, usage.roles.get(pid, 'other'), round(s[-1][0]), round(s[-1][1]), s[-1][2], grown_mb(s)) for pid, s in samples.items()]}",
              file=sys.stderr)
        out = {
            "minutes": round(minutes, 2),
            "faults": len(done),
            "faults_by_kind": {k: sum(f.kind == k for f in done) for k in FAULTS},
            "recovered": sum(f.recovered for f in done),
            "recovery_s_max": max((f.recovery_s for f in done if f.recovery_s is not None), default=None),
            "not_recovered": [f"{f.kind}: {'; '.join(f.missing)}" for f in done if not f.recovered],
            "scenes_missed": missed,
            "seconds_silent_max": round(sound.longest, 2),
            "seconds_dark_max": round(light.longest, 2),
            "rss_mb_growth": grown.mb,
            "fds_growth": grown.fds,
            "growth_lives": grown.lives,
            "growth_span_s_max": grown.span_s,
            "restarts": len(after_display),
            "crashes": len(crashes),
            "watchdog_kills": len(watchdog.kills),
            "ear_deaf_restarts": ear.restarts,
            "not_injected": not_injected or None,
            "dark_sample_s": Eye.interval,
            "silence_block_ms": round(1000 * jack.period / jack.rate, 2),
        }
        if grown.reason:
            out["rss_mb_growth_reason"] = out["fds_growth_reason"] = grown.reason
        return out


def restore_images(rig: Rig) -> None:
    for path, data in rig.images.items():
        path.write_bytes(data)
    rig.images.clear()


def main(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench chaos", description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60.0, help="length of the run (default 60)")
    ap.add_argument("--every", type=float, default=60.0, help="seconds between faults (default 60)")
    ap.add_argument("--period", type=float, default=30.0, help="seconds between scenes (default 30, the installation's)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the fault order")
    ap.add_argument("--faults", default=",".join(FAULTS), help="the kinds to draw from, comma-separated (default: all)")
    ap.add_argument("--keep", type=Path, default=None, help="copy what ciel and jackd printed (ciel.out, jackd.log) into this folder")
    ap.add_argument("--quick", action="store_true", help="5 minutes, a fault every 15 s")
    args = ap.parse_args(argv)
    kinds = tuple(k.strip() for k in args.faults.split(",") if k.strip())
    unknown = [k for k in kinds if k not in FAULTS]
    if unknown or not kinds:
        ap.error(f"--faults: unknown {', '.join(unknown) or '(none given)'}; known: {', '.join(FAULTS)}")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    def stop(signum: int, frame: object) -> None:   # a SIGTERM unwinds like Ctrl-C: ciel, jackd, Xvfb, the tmpfs go
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    if args.quick:
        args.minutes, args.every = 5.0, 15.0
    return run(args.minutes, args.every, args.period, args.seed, kinds, args.keep)
