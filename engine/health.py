"""Supervision of an unattended ciel: `/healthz`, log rotation that survives a full disk, the GAN
worker watchdog and the systemd watchdog, bundled as `Supervision` for installation mode.

- `Health` turns `engine.health()` (counters) into the `/healthz` document (rates: frames and audio
  callbacks per second, underflows, scene, time to next scene, OSC and MIDI status) and an `ok`
  verdict with the reasons when it is not ok.
- `HealthServer` serves it as JSON on 127.0.0.1 (`GET /healthz`: 200 when ok, 503 otherwise, so
  `curl -f` and monitoring tools see a failure) from a daemon thread.
- `SafeRotatingFileHandler` rotates logs and swallows write errors (ENOSPC, EIO) after counting
  them: a full disk never stops the show.
- `StallWatch` restarts a worker whose heartbeat counter stops moving (the GAN worker), with backoff.

Threads: `Supervision` samples on its own thread (twice a second) so that a frozen render loop is
noticed rather than shared; the HTTP server's threads call `Health.document`, which only reads.
"""

from __future__ import annotations

import errno
import json
import logging
import logging.handlers
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

from .systemd import Notifier, Watchdog

log = logging.getLogger("ciel.health")

FRAME_AGE_MAX_S = 5.0     # a frame older than this means the render loop is stuck
AUDIO_RATE_MIN = 1.0      # audio callbacks per second below this means the sound path is dead


def _get(d: Any, *keys: str) -> Any:
    """Nested lookup that tolerates missing parts: _get(h, "audio", "callbacks")."""
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

    def __init__(self, source: Callable[[], dict], clock: Callable[[], float] = time.monotonic,
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
        callbacks = _get(raw, "audio", "callbacks")
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
            "underflows": _get(raw, "audio", "underflows"),
            "audio_restarts": _get(raw, "audio", "restarts"),
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

    def __init__(self, health: Callable[[], dict], host: str = "127.0.0.1", port: int = 8090) -> None:
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
        self.host, self.port = self.server.server_address[:2]
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


class SafeRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating log file whose write errors are counted and swallowed, never raised or printed
    per record: with the disk full the show goes on, and logging resumes when space returns."""

    def __init__(self, filename: str | Path, max_bytes: int = 1_000_000, backups: int = 5) -> None:
        super().__init__(filename, maxBytes=max_bytes, backupCount=backups, encoding="utf-8", delay=True)
        self.write_errors = 0
        self.last_error = ""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's naming)
        import sys

        exc = sys.exc_info()[1]
        self.write_errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}" if exc else "unknown error"
        if self.write_errors == 1 or (isinstance(exc, OSError) and exc.errno == errno.ENOSPC and self.write_errors % 1000 == 0):
            print(f"ciel: cannot write log {self.baseFilename}: {self.last_error} (the show goes on)",
                  file=sys.__stderr__)
        stream, self.stream = self.stream, None  # reopened on the next record
        if stream is not None:
            try:
                stream.close()
            except (OSError, ValueError):
                pass


def setup_file_logging(folder: str | Path, level: int = logging.INFO, max_bytes: int = 1_000_000,
                       backups: int = 5) -> SafeRotatingFileHandler:
    """Add a rotating `ciel.log` in `folder` to the root logger; returns the handler (for its counts)."""
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    handler = SafeRotatingFileHandler(folder / "ciel.log", max_bytes, backups)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    handler.setLevel(level)
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > level or root.level == logging.NOTSET:
        root.setLevel(level)
    return handler


class StallWatch:
    """Restarts a worker that failed, or whose heartbeat counter stopped moving.

    heartbeat: a counter the worker increments as it works (e.g. keyframes made).
    restart:   stops and starts the worker again.
    failed:    optional; True when the worker is known dead (e.g. its `error` is set): restart
               without waiting for the stall timeout.
    timeout:   seconds without progress that count as a stall once the worker has produced;
    startup:   the same before its first output after a start (loading a model takes seconds).
    Backoff doubles after each restart that did not help (up to `backoff_max`); progress resets it.
    """

    def __init__(self, name: str, heartbeat: Callable[[], int], restart: Callable[[], None],
                 timeout: float = 5.0, backoff_max: float = 60.0, report: Callable[[str, str], None] | None = None,
                 failed: Callable[[], bool] | None = None, startup: float = 60.0) -> None:
        self.name = name
        self.heartbeat = heartbeat
        self._restart = restart
        self.failed = failed
        self.timeout = timeout
        self.startup = startup
        self.backoff_max = backoff_max
        self.report = report
        self.restarts = 0
        self._count: int | None = None
        self._since = 0          # the count at the last start: output after it means "producing"
        self._moved = 0.0
        self._wait = timeout

    def tick(self, now: float) -> bool:
        """Called periodically (the supervisor thread). Returns True when a restart was made."""
        count = self.heartbeat()
        dead = self.failed() if self.failed is not None else False
        if count != self._count:
            if self._count is not None and count > self._count and self._wait > self.timeout and count > self._since:
                self._wait = self.timeout  # healthy again
            self._count, self._moved = count, now
            if not dead:
                return False
        quiet = now - self._moved
        limit = self._wait if count > self._since else max(self._wait, self.startup)
        if (dead and quiet < min(self._wait, limit)) or (not dead and quiet < limit):
            return False
        self.restarts += 1
        why = "failed" if dead else f"stalled for {quiet:.1f} s"
        message = f"{self.name} {why}: restarting (restart {self.restarts})"
        log.warning(message)
        if self.report is not None:
            self.report(self.name, message)
        try:
            self._restart()
        except Exception as exc:  # a failed restart is retried after the backoff, never fatal
            log.error("%s restart failed: %s", self.name, exc)
        self._since = self.heartbeat()
        self._count, self._moved = self._since, now
        self._wait = min(self.backoff_max, self._wait * 2)
        return True


class RestartableWorker:
    """A stable handle on a worker thread that can be replaced: `restart()` abandons the current
    thread (asks it to stop, does not wait for a hung one) and starts a fresh one from `factory`.

    Made for the GAN worker (engine.visual.worker.GanWorker): the render loop keeps calling
    `update`/`latest` on this handle while the supervisor restarts the thread behind it. `count` is
    the keyframes made across restarts (the heartbeat the supervisor watches).
    Threads: `update`/`latest` from the render thread, `restart` from the supervisor thread.
    """

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._worker = factory()
        self._base = 0
        self.restarts = 0
        self._lock = threading.Lock()

    @property
    def worker(self) -> Any:
        return self._worker

    @property
    def count(self) -> int:
        return self._base + int(self._worker.count)

    @property
    def error(self) -> str | None:
        return self._worker.error

    @property
    def times_ms(self) -> list[float]:
        return self._worker.times_ms

    def start(self) -> None:
        self._worker.start()

    def update(self, values: Any) -> None:
        self._worker.update(values)

    def latest(self) -> Any:
        return self._worker.latest()

    def is_alive(self) -> bool:
        return self._worker.is_alive()

    def restart(self) -> None:
        with self._lock:
            old = self._worker
            old.stop(timeout=0.5)  # a hung generator call cannot be interrupted: leave it behind
            fresh = self._factory()
            fresh.start()
            self._base += int(old.count)
            self._worker = fresh
            self.restarts += 1

    def stop(self, timeout: float = 5.0) -> None:
        self._worker.stop(timeout)

    def __getattr__(self, name: str) -> Any:
        """Anything else (`rate`, `first_at`…) is the current worker's."""
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._worker, name)


class Supervision:
    """Installation-mode supervision of a running Engine on its own thread (every `interval` s):
    /healthz, the systemd READY/WATCHDOG notifications and the GAN worker watchdog.

    It runs beside the render loop rather than inside it, so a frozen render loop is seen (frames
    stop advancing, the systemd pings stop) instead of freezing the supervisor with it.

    engine: the Engine (engine/app.py); uses `health()` and `report()` (both callable from any
    thread), `clock`, `patch.web.health_port` and, when present, `gan` (the GAN worker, e.g. a
    `RestartableWorker`: a heartbeat counter `count` and `restart()`).
    Start with `start()` (also serves /healthz); `stop()` from the main thread at shutdown.
    """

    def __init__(self, engine: Any, port: int | None = None, host: str = "127.0.0.1",
                 notifier: Notifier | None = None, gan_timeout: float = 5.0, interval: float = 0.5) -> None:
        self.engine = engine
        self.interval = interval
        self.health = Health(engine.health, engine.clock)
        self.health.extras.append(self._log_status)
        port = engine.patch.web.health_port if port is None else port
        self.server: HealthServer | None = None
        try:
            self.server = HealthServer(self.health.document, host, port)
        except OSError as exc:
            engine.report("healthz", f"/healthz not served on {host}:{port}: {exc}")
        self.watchdog = Watchdog(self._progress, notifier)
        self.gan_watch: StallWatch | None = None
        self._gan_timeout = gan_timeout
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ciel-supervisor", daemon=True)

    @property
    def log_handler(self) -> SafeRotatingFileHandler | None:
        """The rotating log handler on the root logger, if installation logging set one up."""
        for h in logging.getLogger().handlers:
            if isinstance(h, SafeRotatingFileHandler):
                return h
        return None

    def _log_status(self) -> dict[str, Any]:
        h = self.log_handler
        return {"log_file": h.baseFilename if h else None, "log_write_errors": h.write_errors if h else None,
                "log_error": (h.last_error or None) if h else None}

    def _progress(self) -> tuple[int, int | None]:
        h = self.health.document()
        return int(h.get("frames") or 0), _get(h, "audio", "callbacks")

    def _watch_gan(self) -> None:
        gan = getattr(self.engine, "gan", None)
        if gan is None or self.gan_watch is not None or not callable(getattr(gan, "restart", None)):
            return
        self.gan_watch = StallWatch("gan", lambda: int(gan.count), gan.restart, self._gan_timeout,
                                    report=self.engine.report, failed=lambda: gan.error is not None)

    def start(self) -> None:
        if self.server is not None:
            self.server.start()
            log.info("health: %s", self.server.url)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick(self.engine.clock())
            except Exception as exc:  # the supervisor must outlive any part it watches
                log.error("supervisor: %s: %s", type(exc).__name__, exc)

    def tick(self, now: float) -> None:
        """Sample health, ping systemd, watch the GAN worker (supervisor thread, or a test)."""
        doc = self.health.sample(now)
        self._watch_gan()
        if self.gan_watch is not None:
            self.gan_watch.tick(now)
        scene = doc.get("scene")
        self.watchdog.tick(now, f"scene {scene}, {doc.get('fps')} fps" if scene else "")

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
        self.watchdog.close()
        if self.server is not None:
            self.server.stop()
