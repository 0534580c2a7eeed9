"""Load test of the broadcast as visitors meet it: the live server and the static export under nginx.

`python -m bench broadcast --listeners 1000 --quick` makes a small baked folder of noise scenes and,
for each target, runs `--listeners` clients that do what the page (engine/web/static/app.js) does,
each from its own address in 127.0.0.0/8, with HTTP keep-alive:

- live (`ciel broadcast --baked DIR`, uvicorn): half the listeners hold /events and, on each scene
  event, fetch the scene's sound and image if they do not have them and the next scene's at a
  random moment in the first half of the time left (the page's prefetch); the other half are
  pages without an event stream: they poll /scene.json just after each boundary (spread over a
  second, as the page does) and fetch the files the same way;
- static (`ciel broadcast --export`, served by Debian's nginx): every listener reads
  manifest.json once, computes the scenes from the clock and fetches each scene's files the same
  way (the static page).

Every page first fetches what a browser fetches on arrival (the page, its code and style, the
shaders). Beside both targets a slow loris holds `--slowloris` (200) connections that send one
header byte a second and never finish a request (reopened when the server closes them). Not
simulated: the page's extra /scene.json poll 2.5 s after a boundary that brought no news (with
a baked folder the next scene is always announced, so no page makes it).
The clients are spread over client processes (one per 250, at most one per core;
`--client-processes`) that share the machine with the server: on 2 cores the figures are a floor
on what the server can do. `--target live|static|both`.

Keys, per target (`live_…`, `static_…`): listeners (clients that completed: every request answered
200 with its whole body and, for live pages, every scene from their first to the end of the load
announced), scene_json_ms_p99 (request sent → body read; for static, manifest.json, from which the
static page computes each scene), page_ms_p99 (the page's own files), media_downloads,
media_ms_p99 (request sent → whole file read), media_mb, reconnects (keep-alive connections the
server had closed, asked again once on a new one), errors (failed or non-200 requests, short
bodies, broken or silent event streams, scenes never announced), server_cpu_percent (the
server's CPU time over the load, % of one core: uvicorn's process, or nginx's master and worker),
slowloris_held_max (slow connections open at once), slowloris_closed (closed by the server),
slowloris_open_errors. A failed request enters its percentile at the 20 s timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench.common import machine_load, percentile

ROOT = Path(__file__).resolve().parent.parent
MAX_LISTENERS = 1000
TIMEOUT_S = 20.0
PAGE_FILES = ("/", "/static/app.js", "/static/sky.js", "/static/sound.js", "/static/style.css",
              "/shaders/webgl/sky.vert", "/shaders/webgl/sky.frag")


def write_noise_scenes(folder: Path, count: int = 3, seconds: float = 2.0) -> None:
    """A baked folder (engine/scenes.py format) of noise sounds and noise images."""
    from engine import baked, scenes

    rng = np.random.default_rng(0)
    entries = []
    for i in range(count):
        sound = (0.2 * rng.standard_normal((int(seconds * 48000), 2))).astype(np.float32)
        image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        sid = f"s{i + 1:04d}"
        entries.append({"id": sid, "seed": i, "seconds": seconds,
                        **scenes.write_scene_files(folder, sid, sound, image, 48000, wav=False)})
    baked.write_index(folder, entries, "bench", 48000, 64)


class Tally:
    def __init__(self) -> None:
        self.latencies_ms: list[float] = []
        self.media_ms: list[float] = []
        self.media_bytes = 0
        self.errors: list[str] = []
        self.failed: set[int] = set()   # clients with at least one error
        self.events: dict[int, set[int]] = {}  # events client → scene ids received
        self.page_ms: list[float] = []
        self.scenes: dict[int, tuple[set[int], float, float]] = {}   # live client → (ids seen, last ends_at, period)
        self.reconnects = 0
        self.slowloris_closed = 0        # slow connections the server closed
        self.slowloris_errors = 0        # slow connections that could not be opened
        self.slowloris_held_max = 0      # the most slow connections open at once
        self.end_wall = 0.0              # when the load ended (seconds since the epoch)

    def error(self, what: str, client: int) -> None:
        self.errors.append(what)
        self.failed.add(client)

    def merge(self, other: Tally) -> None:
        self.latencies_ms += other.latencies_ms
        self.media_ms += other.media_ms
        self.media_bytes += other.media_bytes
        self.errors += other.errors
        self.failed |= other.failed
        self.events.update(other.events)
        self.page_ms += other.page_ms
        self.scenes.update(other.scenes)
        self.reconnects += other.reconnects
        self.slowloris_closed += other.slowloris_closed
        self.slowloris_errors += other.slowloris_errors
        self.slowloris_held_max = max(self.slowloris_held_max, other.slowloris_held_max)
        self.end_wall = max(self.end_wall, other.end_wall)

    def saw(self, client: int, scene: dict) -> None:
        """A live page learned of `scene` (an event or /scene.json)."""
        ids, _, _ = self.scenes.get(client, (set(), 0.0, 0.0))
        ids.add(int(scene["id"]))
        self.scenes[client] = (ids, float(scene["ends_at"]), float(scene["period"]))


def visitor(n: int) -> str:
    """Listener n's own address in 127.0.0.0/8 (all loopback on Linux), so that the server sees
    1,000 visitors, not one address opening 1,000 streams (which its per-address cap refuses)."""
    return f"127.{1 + n // 65025 % 254}.{n // 255 % 255}.{1 + n % 254}"


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    m = re.search(rb"(?i)content-length:\s*(\d+)", head)
    body = await reader.readexactly(int(m.group(1))) if m else b""
    return status, body


class Visitor:
    """One page's keep-alive connection for /scene.json, the manifest and the files (requests in
    turn, as a browser's connection carries them) and the files it already has (its cache)."""

    def __init__(self, n: int, port: int, tally: Tally) -> None:
        self.n, self.port, self.tally = n, port, tally
        self.fetched: set[str] = set()
        self.conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.lock = asyncio.Lock()
        self.tasks: set[asyncio.Task] = set()

    async def get(self, path: str) -> tuple[int, bytes]:
        async with self.lock:
            reused = self.conn is not None
            for attempt in (0, 1):
                if self.conn is None:
                    self.conn = await asyncio.open_connection("127.0.0.1", self.port, local_addr=(visitor(self.n), 0))
                reader, writer = self.conn
                try:
                    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
                    return await asyncio.wait_for(read_response(reader), timeout=TIMEOUT_S)
                except (OSError, asyncio.IncompleteReadError):
                    writer.close()
                    self.conn = None
                    if attempt or not reused:
                        raise
                # a keep-alive connection the server had closed: once more on a new one, as a browser does
                self.tally.reconnects += 1
            raise OSError("unreachable")

    async def timed(self, path: str, into: list[float]) -> tuple[int, bytes]:
        """`get`, its time appended to `into`; a failed request enters at the timeout (a miss is
        counted in the percentile, not dropped) and is raised."""
        t0 = time.perf_counter()
        try:
            status, body = await self.get(path)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            into.append(TIMEOUT_S * 1000)
            raise
        into.append((time.perf_counter() - t0) * 1000)
        return status, body

    async def page(self, prefix: str = "") -> None:
        """What a browser fetches on arrival: the page, its code and style, and the shaders."""
        for path in PAGE_FILES:
            try:
                status, body = await self.timed(prefix + path, self.tally.page_ms)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as exc:
                self.tally.error(f"visitor {self.n}: {path}: {exc!r}", self.n)
                continue
            if status != 200 or not body:
                self.tally.error(f"visitor {self.n}: {path} HTTP {status}, {len(body)} bytes", self.n)

    async def files(self, scene: dict, prefix: str = "") -> None:
        """The scene's sound and image, unless this page has them."""
        for key in ("sound", "image"):
            path = scene.get(key)
            if not path or path in self.fetched:
                continue
            path = prefix + path
            try:
                status, data = await self.timed(path, self.tally.media_ms)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as exc:
                self.tally.error(f"visitor {self.n}: {path}: {exc!r}", self.n)
                continue
            if status != 200 or not data:
                self.tally.error(f"visitor {self.n}: {path} HTTP {status}, {len(data)} bytes", self.n)
            else:
                self.fetched.add(scene[key])
                self.tally.media_bytes += len(data)

    def prefetch(self, scene: dict | None, left: float, prefix: str = "") -> None:
        """The page's prefetch of the next scene: at a random moment in the first half of `left` s."""
        if not scene:
            return

        async def later() -> None:
            await asyncio.sleep(random.uniform(0, min(10.0, max(0.0, left) / 2)))
            await self.files(scene, prefix)

        task = asyncio.ensure_future(later())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        if self.conn is not None:
            self.conn[1].close()


async def events_page(n: int, port: int, until: float, tally: Tally) -> None:
    """A page with an event stream: files of each scene as its event arrives, the next one's soon."""
    seen = tally.events.setdefault(n, set())
    page = Visitor(n, port, tally)
    try:
        await page.page()
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(visitor(n), 0))
        writer.write(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        if b" 200 " not in head.split(b"\r\n", 1)[0]:
            tally.error(f"events {n}: {head.splitlines()[0]!r}", n)
            return
        while (left := until - time.monotonic()) > 0:
            try:
                block = await asyncio.wait_for(reader.readuntil(b"\n\n"), timeout=left)
            except asyncio.TimeoutError:
                break
            for line in block.split(b"\n"):
                if line.startswith(b"data: "):
                    scene = json.loads(line[6:])
                    seen.add(scene["id"])
                    tally.saw(n, scene)
                    await page.files(scene)
                    page.prefetch(scene.get("next"), scene["time_to_next"])
        writer.close()
    except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError, KeyError) as exc:
        tally.error(f"events {n}: {exc!r}", n)
    finally:
        await page.close()


async def polling_page(n: int, port: int, until: float, tally: Tally) -> None:
    """A page without an event stream: /scene.json just after each boundary (spread over a second)."""
    page = Visitor(n, port, tally)
    try:
        await page.page()
        while time.monotonic() < until:
            try:
                status, body = await page.timed("/scene.json", tally.latencies_ms)
                scene = json.loads(body) if status == 200 else {}
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                tally.error(f"poll {n}: {exc!r}", n)
                scene = {}
            if "id" not in scene:
                tally.error(f"poll {n}: /scene.json without a scene", n)
                await asyncio.sleep(1.0)
                continue
            tally.saw(n, scene)
            await page.files(scene)
            page.prefetch(scene.get("next"), scene["time_to_next"])
            await asyncio.sleep(min(10.0, scene["time_to_next"] + 0.3 + random.random()))
    finally:
        await page.close()


async def static_page(n: int, port: int, until: float, tally: Tally) -> None:
    """The static page: manifest.json once, then each scene's files from the clock."""
    page = Visitor(n, port, tally)
    try:
        await page.page()
        try:
            status, body = await page.timed("/manifest.json", tally.latencies_ms)
            manifest = json.loads(body)
            epoch, period, scenes = manifest["epoch"], manifest["period"], manifest["scenes"]
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, KeyError) as exc:
            tally.error(f"static {n}: manifest.json: {exc!r}", n)
            return
        if status != 200:
            tally.error(f"static {n}: manifest.json HTTP {status}", n)
            return
        while time.monotonic() < until:
            sid = int((time.time() - epoch) // period)
            await page.files(scenes[sid % len(scenes)], "/")
            ends = epoch + (sid + 1) * period
            page.prefetch(scenes[(sid + 1) % len(scenes)], ends - time.time(), "/")
            await asyncio.sleep(max(0.0, ends - time.time()) + 0.05)
            if time.monotonic() >= until:
                break
    finally:
        await page.close()


async def slowloris(port: int, count: int, until: float, tally: Tally) -> None:
    """`count` connections that send one header byte a second and never finish a request; one the
    server closes is opened again. Counts closes, failed opens and the most held at once."""
    held = 0

    async def one(k: int) -> None:
        nonlocal held
        while time.monotonic() < until:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(visitor(60000 + k), 0))
            except OSError:
                tally.slowloris_errors += 1
                await asyncio.sleep(1.0)
                continue
            held += 1
            tally.slowloris_held_max = max(tally.slowloris_held_max, held)
            try:
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                while time.monotonic() < until:
                    writer.write(b"a")
                    await writer.drain()
                    try:
                        if await asyncio.wait_for(reader.read(1), timeout=1.0) == b"":
                            tally.slowloris_closed += 1
                            break
                    except asyncio.TimeoutError:
                        continue
            except OSError:
                tally.slowloris_closed += 1
            finally:
                held -= 1
                writer.close()

    await asyncio.gather(*(one(k) for k in range(count)))


async def load(port: int, clients: range, seconds: float, target: str, loris: int) -> Tally:
    tally = Tally()
    until = time.monotonic() + seconds
    tally.end_wall = time.time() + seconds
    tasks = [asyncio.create_task(slowloris(port, loris, until, tally))] if loris else []
    for n in clients:
        if target == "static":
            page = static_page(n, port, until, tally)
        else:
            page = events_page(n, port, until, tally) if n % 2 == 0 else polling_page(n, port, until, tally)
        tasks.append(asyncio.create_task(page))
        if n % 20 == 19:
            await asyncio.sleep(0.05)  # visitors arrive in small bursts
    await asyncio.gather(*tasks)
    return tally


def load_in_process(port: int, clients: range, seconds: float, target: str, loris: int) -> Tally:
    """One client process's share of the listeners (its own event loop)."""
    return asyncio.run(load(port, clients, seconds, target, loris))


def load_spread(port: int, listeners: int, seconds: float, target: str, processes: int, loris: int) -> Tally:
    """The listeners spread over `processes` client processes, so that what is measured is the
    server, not one client event loop that cannot keep up; the slow loris runs in the first."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    shares = [range(i, listeners, processes) for i in range(processes)]
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork")) as pool:
        parts = list(pool.map(load_in_process, [port] * processes, shares, [seconds] * processes,
                              [target] * processes, [loris] + [0] * (processes - 1)))
    tally = Tally()
    for part in parts:
        tally.merge(part)
    return tally


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_live(folder: Path, args: argparse.Namespace, listeners: int, seconds: float, processes: int) -> tuple[Tally, float]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    errors = folder.parent / "server.err"
    with open(errors, "w") as err:   # the server's log goes to a file: a pipe nobody reads would stall it
        proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "broadcast", "--baked", str(folder), "--port", "0",
                                 "--host", "127.0.0.1", "--period", str(args.period), "--log-level", "warning"],
                                stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    try:
        line = proc.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        if not m:
            raise SystemExit(f"bench broadcast: the server did not start: {line}{errors.read_text()}")
        threading.Thread(target=proc.stdout.read, daemon=True).start()   # and its stdout is drained
        port = int(m.group(1))
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        tally = load_spread(port, listeners, seconds, "live", processes, args.slowloris)
        return tally, (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0) * 100
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_static(folder: Path, args: argparse.Namespace, listeners: int, seconds: float, processes: int) -> tuple[Tally, float]:
    from harness import parts

    site = folder.parent / "site"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, "-m", "engine.cli", "broadcast", "--baked", str(folder), "--export", str(site),
                    "--scenes", "3", "--period", str(args.period), "--epoch", str(time.time())],
                   check=True, capture_output=True, env=env, timeout=300)
    port = free_port()
    with parts.nginx(site, port, connections=4 * (listeners + args.slowloris) + 64) as proc:
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        deadline = time.monotonic() + 10
        while not (children := _children(proc.pid)) and time.monotonic() < deadline:   # its worker
            time.sleep(0.05)
        cpu0 += sum(cpu_seconds(c) for c in children)
        tally = load_spread(port, listeners, seconds, "static", processes, args.slowloris)
        cpu = cpu_seconds(proc.pid) + sum(cpu_seconds(c) for c in children if Path(f"/proc/{c}").exists())
        return tally, (cpu - cpu0) / (time.monotonic() - t0) * 100


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def summary(name: str, tally: Tally, listeners: int, cpu: float) -> dict:
    for n, ids in tally.events.items():
        if not ids:
            tally.error(f"events {n}: no scene event", n)
    # every live page should learn of every scene from its first one to the end of the load
    # (allowing 1.5 s after the last boundary for the news to come)
    for n, (ids, ends_at, period) in tally.scenes.items():
        late = tally.end_wall - 1.5 - ends_at
        expected_last = max(ids) + (int(late // period) + 1 if late > 0 and period > 0 else 0)
        missing = sorted(set(range(min(ids), expected_last + 1)) - ids)
        if missing:
            tally.error(f"page {n}: scenes {missing[:5]} never announced", n)
    for e in tally.errors[:5]:
        print(f"bench broadcast ({name}):", e, file=sys.stderr)
    print(f"bench broadcast ({name}): {len(tally.latencies_ms)} scene requests, p50 "
          f"{percentile(tally.latencies_ms, 50)} ms; {len(tally.media_ms)} files, p50 {percentile(tally.media_ms, 50)} ms; "
          f"{machine_load()}", file=sys.stderr)
    out = {"listeners": listeners - len(tally.failed), "listeners_started": listeners,
           "scene_json_ms_p99": percentile(tally.latencies_ms, 99) if tally.latencies_ms else None,
           "media_downloads": len(tally.media_ms),
           "media_ms_p99": percentile(tally.media_ms, 99) if tally.media_ms else None,
           "media_mb": round(tally.media_bytes / 1e6, 2),
           "page_ms_p99": percentile(tally.page_ms, 99) if tally.page_ms else None,
           "reconnects": tally.reconnects,
           "errors": len(tally.errors), "server_cpu_percent": round(cpu, 1),
           "slowloris_held_max": tally.slowloris_held_max, "slowloris_closed": tally.slowloris_closed,
           "slowloris_open_errors": tally.slowloris_errors}
    if not tally.latencies_ms:
        out["scene_json_ms_p99_reason"] = "no client asked for a scene"
    if not tally.media_ms:
        out["media_ms_p99_reason"] = "no client downloaded a sound or an image"
    return {f"{name}_{k}": v for k, v in out.items()}


def main(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench broadcast")
    ap.add_argument("--quick", action="store_true", help="20 s of load per target instead of 60 s")
    ap.add_argument("--listeners", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--period", type=float, default=5.0, help="scene period (s)")
    ap.add_argument("--target", choices=("live", "static", "both"), default="both")
    ap.add_argument("--slowloris", type=int, default=200, help="slow connections held beside the listeners")
    ap.add_argument("--client-processes", type=int, default=0,
                    help="processes the listeners are spread over (default: one per 250 listeners, at most the cores)")
    args = ap.parse_args(argv)
    listeners = max(1, min(args.listeners, MAX_LISTENERS))
    seconds = min(args.seconds or (20.0 if args.quick else 60.0), 600.0)
    processes = args.client_processes or max(1, min(os.cpu_count() or 1, -(-listeners // 250)))
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="ciel-bench-broadcast-") as tmp:
        folder = Path(tmp) / "baked"
        folder.mkdir()
        write_noise_scenes(folder)
        for name, run in (("live", run_live), ("static", run_static)):
            if args.target in (name, "both"):
                tally, cpu = run(folder, args, listeners, seconds, processes)
                out.update(summary(name, tally, listeners, cpu))
    out["slowloris_connections"] = args.slowloris
    return out
