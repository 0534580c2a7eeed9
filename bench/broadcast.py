"""Load test of `ciel broadcast`: many listeners on 127.0.0.1 holding /events and polling /scene.json.

Starts the real command (`python -m engine.cli broadcast --baked DIR --port 0`) on a small baked
folder of noise scenes, then runs `--listeners` asyncio clients in this process for `--seconds`:
each holds one Server-Sent Events stream and, on a second keep-alive connection, fetches
/scene.json every `--interval` seconds (jittered) and, as the page does, downloads the sound and
the image of each scene it has not fetched yet (the current one and the next, which the page
prefetches). Every request goes to 127.0.0.1 only, each listener from its own address in
127.0.0.0/8 (the server caps event streams per address, as it would a real visitor); the run
is bounded in listeners and time and stops the server at the end. The listeners are spread over
client processes (one per 250, at most one per core; `--client-processes`), which share the
machine with the server: on 2 cores the figures are a floor on what the server can do.

Keys: listeners (clients that completed: their event stream saw every scene change and every
request they made, /scene.json and media, answered 200 with a whole body), listeners_started,
scene_json_ms_p99 (request sent → body read, 99th percentile), media_downloads (sounds and images
fetched), media_ms_p99 (request sent → whole file read), media_mb (bytes fetched), errors (failed or
non-200 requests, short bodies, broken or silent event streams, scene changes an event stream
missed), server_cpu_percent (the server process's CPU time over the load phase, % of one core).
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
import time
from pathlib import Path

import numpy as np

from bench.common import machine_load, percentile

ROOT = Path(__file__).resolve().parent.parent
MAX_LISTENERS = 1000


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
        self.events: dict[int, set[int]] = {}  # listener → scene ids received over SSE

    def error(self, what: str, client: int) -> None:
        self.errors.append(what)
        self.failed.add(client)


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


async def poller(n: int, port: int, until: float, interval: float, tally: Tally) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(visitor(n), 0))
    fetched: set[str] = set()   # media paths this client has (the browser's cache: they are immutable)

    async def get(path: str) -> tuple[int, bytes]:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        return await asyncio.wait_for(read_response(reader), timeout=20)

    try:
        await asyncio.sleep(random.uniform(0, interval))
        while time.monotonic() < until:
            t0 = time.perf_counter()
            try:
                status, body = await get("/scene.json")
                tally.latencies_ms.append((time.perf_counter() - t0) * 1000)
                scene = json.loads(body) if status == 200 else {}
                if "id" not in scene:
                    tally.error(f"poller {n}: /scene.json HTTP {status}", n)
                for entry in (scene, scene.get("next") or {}):
                    for key in ("sound", "image"):
                        path = entry.get(key)
                        if not path or path in fetched:
                            continue
                        t1 = time.perf_counter()
                        status, data = await get(path)
                        tally.media_ms.append((time.perf_counter() - t1) * 1000)
                        if status != 200 or not data:
                            tally.error(f"poller {n}: {path} HTTP {status}, {len(data)} bytes", n)
                        else:
                            fetched.add(path)
                            tally.media_bytes += len(data)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                tally.error(f"poller {n}: {exc!r}", n)
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(visitor(n), 0))
            await asyncio.sleep(interval * random.uniform(0.8, 1.2))
    finally:
        writer.close()


async def listener(n: int, port: int, until: float, tally: Tally) -> None:
    seen = tally.events.setdefault(n, set())
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(visitor(n), 0))
        writer.write(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        if b" 200 " not in head.split(b"\r\n", 1)[0]:
            tally.error(f"listener {n}: {head.splitlines()[0]!r}", n)
            return
        while True:
            left = until - time.monotonic()
            if left <= 0:
                break
            try:
                block = await asyncio.wait_for(reader.readuntil(b"\n\n"), timeout=left)
            except asyncio.TimeoutError:
                break
            for line in block.split(b"\n"):
                if line.startswith(b"data: "):
                    seen.add(json.loads(line[6:])["id"])
        writer.close()
    except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as exc:
        tally.error(f"listener {n}: {exc!r}", n)


async def load(port: int, clients: range, seconds: float, interval: float) -> Tally:
    tally = Tally()
    until = time.monotonic() + seconds
    tasks = []
    for n in clients:
        tasks.append(asyncio.create_task(listener(n, port, until, tally)))
        tasks.append(asyncio.create_task(poller(n, port, until, interval, tally)))
        if n % 20 == 19:
            await asyncio.sleep(0.05)  # open connections in small bursts, as visitors arrive
    await asyncio.gather(*tasks)
    return tally


def load_in_process(port: int, clients: range, seconds: float, interval: float) -> Tally:
    """One client process's share of the listeners (its own event loop)."""
    return asyncio.run(load(port, clients, seconds, interval))


def load_spread(port: int, listeners: int, seconds: float, interval: float, processes: int) -> Tally:
    """The listeners spread over `processes` client processes, so that what is measured is the
    server, not one client event loop that cannot keep up with 2,000 connections; tallies merged."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    shares = [range(i, listeners, processes) for i in range(processes)]
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork")) as pool:
        parts = list(pool.map(load_in_process, [port] * processes, shares, [seconds] * processes, [interval] * processes))
    tally = Tally()
    for part in parts:
        tally.latencies_ms += part.latencies_ms
        tally.media_ms += part.media_ms
        tally.media_bytes += part.media_bytes
        tally.errors += part.errors
        tally.failed |= part.failed
        tally.events.update(part.events)
    return tally


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench broadcast")
    ap.add_argument("--quick", action="store_true", help="20 s of load instead of 60 s")
    ap.add_argument("--listeners", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between a listener's /scene.json polls")
    ap.add_argument("--period", type=float, default=5.0, help="scene period of the server (s)")
    ap.add_argument("--client-processes", type=int, default=0,
                    help="processes the listeners are spread over (default: one per 250 listeners, at most the cores)")
    args = ap.parse_args(argv)
    listeners = max(1, min(args.listeners, MAX_LISTENERS))
    seconds = min(args.seconds or (20.0 if args.quick else 60.0), 600.0)
    with tempfile.TemporaryDirectory(prefix="ciel-bench-broadcast-") as tmp:
        write_noise_scenes(Path(tmp))
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "broadcast", "--baked", tmp, "--port", "0",
                                 "--host", "127.0.0.1", "--period", str(args.period), "--log-level", "warning"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            line = proc.stdout.readline()
            m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
            if not m:
                raise SystemExit(f"bench broadcast: the server did not start: {line}{proc.stderr.read()}")
            port = int(m.group(1))
            cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
            processes = args.client_processes or max(1, min(os.cpu_count() or 1, -(-listeners // 250)))
            tally = load_spread(port, listeners, seconds, args.interval, processes)
            cpu = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0) * 100
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    # Every stream should have seen every scene from its first one on (a missed change is an error).
    for n, ids in tally.events.items():
        if not ids:
            tally.error(f"listener {n}: no scene event", n)
        elif len(ids) != max(ids) - min(ids) + 1:
            tally.error(f"listener {n}: missed scene changes ({sorted(ids)})", n)
    for e in tally.errors[:5]:
        print("bench broadcast:", e, file=sys.stderr)
    print(f"bench broadcast: {len(tally.latencies_ms)} scene.json requests in {seconds:g} s, "
          f"p50 {percentile(tally.latencies_ms, 50)} ms, from {processes} client process(es) on the same machine; "
          f"{machine_load()}", file=sys.stderr)
    return {"listeners": listeners - len(tally.failed), "listeners_started": listeners,
            "scene_json_ms_p99": percentile(tally.latencies_ms, 99),
            "media_downloads": len(tally.media_ms),
            "media_ms_p99": percentile(tally.media_ms, 99) if tally.media_ms else None,
            **({} if tally.media_ms else {"media_ms_p99_reason": "no client downloaded a sound or an image"}),
            "media_mb": round(tally.media_bytes / 1e6, 2),
            "errors": len(tally.errors), "server_cpu_percent": round(cpu, 1)}
