"""`/healthz`: the health document of a running ciel and the HTTP server that serves it.

- `Health` turns a counters source (`engine.app.Engine.health`) into the `/healthz` document
  (rates: frames and audio callbacks per second, underflows, scene, time to next scene, OSC and
  MIDI status) and an `ok` verdict with the reasons when it is not ok.
- `HealthServer` serves it as JSON on 127.0.0.1 (`GET /healthz`: 200 when ok, 503 otherwise, so
  `curl -f` and monitoring tools see a failure) from a daemon thread.

Threads: the supervisor (engine/supervise.py) samples; the HTTP server's threads call
`Health.document`, which only reads.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger("ciel.health")

FRAME_AGE_MAX_S = 5.0     # a frame older than this means the render loop is stuck
AUDIO_RATE_MIN = 1.0      # audio callbacks per second below this means the sound path is dead


def get_path(d: Any, *keys: str) -> Any:
    """Nested lookup that tolerates missing parts: get_path(h, "audio", "callbacks")."""
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


class Health:
    """The /healthz document from `engine.health()`, with rates over the last sampling interval.

    source: `engine.health` (any thread). clock: monotonic seconds. Rates are updated by `sample`
    (main thread, about once a second); `document` (any thread) returns the latest sample.
    """

    def __init__(self, source: Callable[[], dict[str, Any]], clock: Callable[[], float] = time.monotonic,
                 interval: float = 1.0) -> None:
        self.source = source
        self.clock = clock
        self.interval = interval
        self._prev: tuple[float, int, int] | None = None
        self._next = 0.0
        self._doc: dict[str, Any] = {"ok": False, "problems": ["starting"]}
        self._lock = threading.Lock()
        self.callbacks_per_s: float | None = None
        self.frames_per_s: float | None = None
        self.extras: list[Callable[[], dict[str, Any]]] = []

    def sample(self, now: float | None = None) -> dict[str, Any]:
        """Read the engine's counters and rebuild the document (main thread, once per interval)."""
        now = self.clock() if now is None else now
        if now < self._next:
            return self._doc
        self._next = now + self.interval
        raw = self.source()
        frames = int(raw.get("frames") or 0)
        callbacks = get_path(raw, "audio", "callbacks")
        if self._prev is not None and now > self._prev[0]:
            dt = now - self._prev[0]
            self.frames_per_s = (frames - self._prev[1]) / dt
            if callbacks is not None:
                self.callbacks_per_s = max(0.0, (callbacks - self._prev[2]) / dt)
        self._prev = (now, frames, int(callbacks or 0))
        sched = raw.get("scheduler") or {}
        doc: dict[str, Any] = {
            "uptime_s": raw.get("uptime_s"),
            "fps": raw.get("fps"),
            "frames": frames,
            "last_frame_age_s": raw.get("last_frame_age_s"),
            "audio_callbacks_per_s": None if self.callbacks_per_s is None else round(self.callbacks_per_s, 1),
            "underflows": get_path(raw, "audio", "underflows"),
            "audio_restarts": get_path(raw, "audio", "restarts"),
            "scene": sched.get("scene"),
            "next_scene_s": sched.get("next_scene_s"),
            "open": sched.get("open"),
            "osc": raw.get("osc"),
            "midi": raw.get("midi"),
            "audio": raw.get("audio"),
            "scheduler": raw.get("scheduler") or None,
            "messages": raw.get("messages", []),
            "pid": os.getpid(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        for fn in self.extras:
            doc.update(fn())
        problems = []
        age = doc["last_frame_age_s"]
        if raw.get("window", True) and (age is None or age > FRAME_AGE_MAX_S):
            problems.append("no frame drawn" if age is None else f"last frame {age:.1f} s ago")
        if "audio" in raw and raw["audio"] is not None and self.callbacks_per_s is not None \
                and self.callbacks_per_s < AUDIO_RATE_MIN:
            problems.append("audio callbacks stopped")
        doc["ok"] = not problems
        doc["problems"] = problems
        with self._lock:
            self._doc = doc
        return doc

    def document(self) -> dict[str, Any]:
        """The latest document (any thread)."""
        with self._lock:
            return self._doc


class HealthServer:
    """`GET /healthz` → JSON on `host:port` (127.0.0.1 by default; port 0 = any free port)."""

    def __init__(self, health: Callable[[], dict[str, Any]], host: str = "127.0.0.1", port: int = 8090) -> None:
        doc = health

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                if self.path.split("?")[0] not in ("/healthz", "/healthz/"):
                    self.send_error(404, "only /healthz here")
                    return
                body = json.dumps(doc(), default=str).encode()
                self.send_response(200 if doc().get("ok") else 503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", "no-store")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # quiet: no line per poll
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.host, self.port = str(self.server.server_address[0]), int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, name="ciel-healthz", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/healthz"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self.server.shutdown()
            self._thread.join(timeout=2.0)
        self.server.server_close()
