"""Supervision of an unattended ciel: the worker watchdog, restartable workers, and the
installation-mode supervisor that serves `/healthz` and pings systemd.

- `StallWatch` restarts a worker whose heartbeat counter stops moving (the GAN worker), with backoff.
- `RestartableWorker` is a stable handle on a worker that the watchdog can replace.
- `Supervision` runs on its own thread (twice a second) so that a frozen render loop is noticed
  rather than shared: /healthz, the systemd READY/WATCHDOG notifications, the GAN watchdog.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from .health import Health, HealthServer, get_path
from .logfiles import SafeRotatingFileHandler
from .parts import Keyframe, KeyframeSource, SupervisedChild
from .restart import Backoff
from .systemd import Notifier, Watchdog

log = logging.getLogger("ciel.health")


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
        self.backoff = Backoff(timeout, max(backoff_max, timeout))
        self.report = report
        self.restarts = 0
        self._count: int | None = None
        self._since = 0          # the count at the last start: output after it means "producing"
        self._moved = 0.0

    def tick(self, now: float) -> bool:
        """Called periodically (the supervisor thread). Returns True when a restart was made."""
        count = self.heartbeat()
        dead = self.failed() if self.failed is not None else False
        if count != self._count:
            if self._count is not None and count > self._count and self.backoff.backing_off and count > self._since:
                self.backoff.reset()  # healthy again
            self._count, self._moved = count, now
            if not dead:
                return False
        quiet = now - self._moved
        wait = self.backoff.wait
        limit = wait if count > self._since else max(wait, self.startup)
        if (dead and quiet < min(wait, limit)) or (not dead and quiet < limit):
            return False
        self.restarts += 1
        why = "failed" if dead else f"stalled for {quiet:.1f} s"
        message = f"{self.name} {why}: restarting (restart {self.restarts})"
        log.warning(message)
        if self.report is not None:
            self.report(self.name, message)
        try:
            self._restart()
        except Exception as exc:  # noqa: BLE001 — a failed restart is retried after the backoff, never fatal
            log.error("%s restart failed: %s", self.name, exc)
        self._since = self.heartbeat()
        self._count, self._moved = self._since, now
        self.backoff.failed()
        return True


class RestartableWorker:
    """A stable handle on a worker thread that can be replaced: `restart()` abandons the current
    thread (asks it to stop, does not wait for a hung one) and starts a fresh one from `factory`.

    Made for the GAN worker (engine.visual.worker.GanWorker): the render loop keeps calling
    `latest` on this handle while the supervisor restarts the worker behind it. `count` is
    the keyframes made across restarts (the heartbeat the supervisor watches).
    Threads: `latest` from the render thread, `restart` from the supervisor thread.
    """

    def __init__(self, factory: Callable[[], KeyframeSource]) -> None:
        self._factory = factory
        self._worker = factory()
        self._base = 0
        self.restarts = 0
        self._started = False
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        with self._lock:
            return self._base + int(self._worker.count)

    @property
    def error(self) -> str | None:
        return self._worker.error

    @property
    def times_ms(self) -> list[float]:
        return self._worker.times_ms

    def start(self) -> None:
        """Start the worker; a second call does nothing (the engine starts it early, the window
        starts whatever it is given)."""
        if self._started:
            return
        self._started = True
        self._worker.start()

    def latest(self) -> Keyframe | None:
        # under the lock: a restart never releases a worker while the render thread reads it
        with self._lock:
            return self._worker.latest()

    def is_alive(self) -> bool:
        return self._worker.is_alive()

    def restart(self) -> None:
        """Replace the worker with a fresh, started one (nothing to do before `start()`). The
        fresh one is started first and swapped in under the lock; only then is the old one
        stopped and its shared memory released, so the render thread never reads a released
        worker and never waits for a process to spawn."""
        if not self._started:
            return
        fresh = self._factory()
        fresh.start()
        with self._lock:
            old, self._worker = self._worker, fresh
            self._base += int(old.count)
            self.restarts += 1
        old.stop(timeout=0.5)  # a hung generator call cannot be interrupted: leave it behind

    def stop(self, timeout: float = 5.0) -> None:
        self._worker.stop(timeout)

    def __getattr__(self, name: str) -> Any:
        """Anything else (`rate`, `first_at`…) is the current worker's."""
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._worker, name)


class Restartable(SupervisedChild, Protocol):
    """A supervised child the watchdog can replace (`RestartableWorker`)."""

    def restart(self) -> None: ...


class Supervision:
    """Installation-mode supervision on its own thread (every `interval` s): /healthz, the systemd
    READY/WATCHDOG notifications and the GAN worker watchdog.

    It runs beside the render loop rather than inside it, so a frozen render loop is seen (frames
    stop advancing, the systemd pings stop) instead of freezing the supervisor with it.

    source: the counters of the running show (`engine.app.Engine.health`; any thread).
    clock:  monotonic seconds. report(source, message): a failure as data (any thread).
    port/host: where /healthz is served (port 0 = any free port).
    gan:    the keyframe source to watch and restart when its heartbeat `count` stops or its
            `error` is set (None, or one that cannot restart: no watchdog).
    Start with `start()` (also serves /healthz); `stop()` from the main thread at shutdown.
    """

    def __init__(self, source: Callable[[], dict[str, Any]], clock: Callable[[], float],
                 report: Callable[[str, str], None], port: int, host: str = "127.0.0.1",
                 gan: Restartable | None = None, notifier: Notifier | None = None, gan_timeout: float = 5.0,
                 interval: float = 0.5) -> None:
        self.clock, self.report = clock, report
        self.interval = interval
        self.health = Health(source, clock)
        self.health.extras.append(self._log_status)
        self.server: HealthServer | None = None
        try:
            self.server = HealthServer(self.health.document, host, port)
        except OSError as exc:
            report("healthz", f"/healthz not served on {host}:{port}: {exc}")
        self.watchdog = Watchdog(self._progress, notifier)
        self.gan_watch: StallWatch | None = None
        self._gan = gan
        if gan is not None:
            self.health.extras.append(self._gan_status)
        if gan is not None and callable(getattr(gan, "restart", None)):
            self.gan_watch = StallWatch("gan", lambda: int(gan.count), gan.restart, gan_timeout,
                                        report=report, failed=lambda: gan.error is not None)
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

    def _gan_status(self) -> dict[str, Any]:
        gan = self._gan
        if gan is None:
            return {}
        return {"gan": {"pid": getattr(gan, "pid", None), "keyframes": int(gan.count), "error": gan.error,
                        "restarts": self.gan_watch.restarts if self.gan_watch is not None else 0}}

    def _progress(self) -> tuple[int, int | None]:
        h = self.health.document()
        return int(h.get("frames") or 0), get_path(h, "audio", "callbacks")

    def start(self) -> None:
        if self.server is not None:
            self.server.start()
            log.info("health: %s", self.server.url)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick(self.clock())
            except Exception as exc:  # noqa: BLE001 — the supervisor must outlive any part it watches
                log.error("supervisor: %s: %s", type(exc).__name__, exc)

    def tick(self, now: float) -> None:
        """Sample health, ping systemd, watch the GAN worker (supervisor thread, or a test)."""
        doc = self.health.sample(now)
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
