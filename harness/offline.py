"""An artist's whole path with a socket audit: ingest → train → render → bake → broadcast, in this
process, recording every attempt to reach another machine.

    ip netns exec NS python -m harness.offline WORKDIR     # prints one JSON report

Python's audit hooks (PEP 578) see every `socket.connect`, `sendto`, `getaddrinfo` and
`gethostbyname`, also in processes forked from this one (ingest's decoder). An attempt whose
address is not this machine (loopback, a Unix socket) is recorded with the step that made it.
Run inside a network namespace with only loopback, so that nothing could leave even if tried.
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys
import threading
import urllib.request
from pathlib import Path

STEP = ["start"]


def _remote(address: object) -> str | None:
    """The address as text if it names another machine, else None."""
    if isinstance(address, (str, bytes)):            # a Unix socket path (JACK, X11)
        return None
    if isinstance(address, tuple) and address:
        host = address[0]
        if isinstance(host, bytes):
            host = host.decode("ascii", "replace")
        try:
            if ipaddress.ip_address(str(host).split("%")[0]).is_loopback:
                return None
        except ValueError:
            if str(host) in ("localhost", ""):
                return None
        return f"{host}:{address[1] if len(address) > 1 else ''}"
    return repr(address)


def install(log: Path) -> None:
    """Record remote attempts to `log` (one JSON line each; forked children append too)."""
    def hook(event: str, args: tuple) -> None:
        where = None
        if event in ("socket.connect", "socket.sendto"):
            where = _remote(args[1])
        elif event in ("socket.getaddrinfo", "socket.gethostbyname"):
            host = args[0]
            if host not in (None, "localhost", b"localhost") and _remote((host, 0)) is not None:
                where = f"name lookup {host!r}"
        if where is not None:
            with open(log, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"step": STEP[0], "event": event, "to": where, "pid": os.getpid()}) + "\n")

    sys.addaudithook(hook)


def archive(folder: Path) -> Path:
    """A small phone archive: voice-like tones and photos."""
    import numpy as np
    import soundfile as sf
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(6):
        t = np.arange(int(3.0 * 16000)) / 16000
        voice = 0.3 * np.sin(2 * np.pi * (180 + 40 * i) * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
        sf.write(folder / f"note{i}.wav", voice.astype(np.float32), 16000)
        Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(folder / f"photo{i}.png")
    return folder


def main(work: Path) -> dict[str, object]:
    from engine import cli
    from engine.broadcast.source import BakedScenes
    from engine.web.live import serve
    from engine.web.server import Broadcast, SceneClock

    log = work / "attempts.jsonl"
    install(log)
    results: dict[str, object] = {}
    steps = [
        ("ingest", ["ingest", str(archive(work / "archive")), "-o", str(work / "data")]),
        ("train", ["train", "audio", str(work / "data"), "-o", str(work / "run"), "--steps", "4",
                   "--checkpoint-steps", "4", "--batch", "2", "--threads", "1"]),
        ("render", ["render", str(work / "render"), "--seconds", "2", "--fps", "4", "--size", "160x90"]),
        ("bake", ["bake", str(work / "baked"), "--count", "2", "--seconds", "2"]),
    ]
    for name, argv in steps:
        STEP[0] = name
        results[name] = cli.main(argv)
    STEP[0] = "broadcast"
    broadcast = Broadcast(BakedScenes(work / "baked"), SceneClock(5.0), ahead=1)
    broadcast.start()
    server = serve(broadcast, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        with urllib.request.urlopen(server.url + "scene.json", timeout=10) as res:
            results["broadcast"] = res.status
    finally:
        server.shutdown()
        broadcast.stop()
        server.server_close()
    results["attempts"] = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return results


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
