"""Supervision parts: /healthz over real HTTP, sd_notify over a real UNIX datagram socket, log
rotation that survives a full disk (/dev/full), and the stall watchdog."""

from __future__ import annotations

import json
import logging
import os
import socket
import urllib.error
import urllib.request

import pytest

from engine.health import Health, HealthServer
from engine.logfiles import SafeRotatingFileHandler, setup_file_logging
from engine.supervise import RestartableWorker, StallWatch
from engine.systemd import Notifier, Watchdog


class FakeEngine:
    """Counters shaped like Engine.health(); the test moves them."""

    def __init__(self) -> None:
        self.t = 0.0
        self.frames = 0
        self.callbacks = 0

    def clock(self) -> float:
        return self.t

    def health(self) -> dict:
        return {"uptime_s": self.t, "fps": 30.0, "frames": self.frames,
                "last_frame_age_s": 0.02 if self.frames else None,
                "audio": {"callbacks": self.callbacks, "underflows": 3, "restarts": 1},
                "osc": {"port": 9000, "received": 12}, "midi": {"inputs": []},
                "scheduler": {"scene": "live-0000000042", "next_scene_s": 12.5, "open": True}, "messages": []}


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}") if e.code == 503 else {}


def test_healthz_reports_what_the_staff_needs():
    eng = FakeEngine()
    health = Health(eng.health, eng.clock)
    server = HealthServer(health.document, "127.0.0.1", 0)
    server.start()
    try:
        assert server.host == "127.0.0.1"
        eng.frames, eng.callbacks = 30, 375
        health.sample(0.0)
        eng.t, eng.frames, eng.callbacks = 1.0, 60, 750
        health.sample(1.0)
        status, doc = get(server.url)
        assert status == 200 and doc["ok"] is True
        for key in ("uptime_s", "fps", "last_frame_age_s", "audio_callbacks_per_s", "underflows", "scene",
                    "next_scene_s", "osc", "midi"):
            assert key in doc, key
        assert doc["audio_callbacks_per_s"] == pytest.approx(375.0)
        assert doc["scene"] == "live-0000000042" and doc["next_scene_s"] == 12.5 and doc["underflows"] == 3
        # sound stops: the endpoint says so with 503 and the reason
        eng.t = 2.0
        eng.frames += 30
        health.sample(2.0)
        status, doc = get(server.url)
        assert status == 503 and doc["ok"] is False and "audio callbacks stopped" in doc["problems"]
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(server.url.replace("/healthz", "/other"), timeout=5)
        assert err.value.code == 404
    finally:
        server.stop()


@pytest.fixture
def notify_socket(tmp_path):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.0)
    yield str(path), sock
    sock.close()


def received(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


def test_systemd_ready_then_watchdog_only_while_frames_and_sound_advance(notify_socket):
    path, sock = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())})
    assert notifier.watchdog_s == 2.0
    counters = {"frames": 0, "callbacks": 0}
    wd = Watchdog(lambda: (counters["frames"], counters["callbacks"]), notifier)
    assert wd.interval == 1.0
    wd.tick(0.0)
    assert received(sock) == []  # nothing runs yet: no READY
    counters.update(frames=10, callbacks=0)
    wd.tick(1.0)
    assert received(sock) == []  # picture but no sound yet
    counters.update(frames=20, callbacks=50)
    wd.tick(2.0)
    msgs = received(sock)
    assert len(msgs) == 1 and msgs[0].startswith("READY=1")
    counters.update(frames=50, callbacks=400)
    wd.tick(3.0)
    assert received(sock) == ["WATCHDOG=1"]
    wd.tick(3.5)  # within the interval: nothing
    assert received(sock) == []
    counters.update(frames=80)  # sound stalled, frames still move
    wd.tick(4.0)
    assert received(sock) == [] and wd.withheld == 1
    counters.update(frames=110, callbacks=800)
    wd.tick(5.0)
    assert received(sock) == ["WATCHDOG=1"]
    wd.close()
    assert received(sock) == ["STOPPING=1"]


def test_systemd_abstract_socket_and_no_socket():
    name = f"ciel-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2.0)
    try:
        n = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert n.ready("ok")
        assert sock.recv(100) == b"READY=1\nSTATUS=ok"
        n.close()
    finally:
        sock.close()
    quiet = Notifier({})
    assert not quiet.enabled and quiet.ready() is False
    gone = Notifier({"NOTIFY_SOCKET": "/nonexistent/notify"})
    assert gone.watchdog() is False and gone.errors == 1  # counted, not raised


def test_full_disk_never_stops_logging(tmp_path, capfd):
    """The log file is /dev/full (every write fails with ENOSPC): records are counted and dropped,
    the caller never sees an exception, and stderr gets one line, not one per record."""
    link = tmp_path / "ciel.log"
    link.symlink_to("/dev/full")
    handler = SafeRotatingFileHandler(link, max_bytes=1000, backups=2)
    logger = logging.getLogger("ciel.test.full")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        for i in range(500):
            logger.warning("scene %d: %s", i, "x" * 100)
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert handler.write_errors == 500
    assert "No space left on device" in handler.last_error
    assert capfd.readouterr().err.count("cannot write log") == 1


def test_logs_rotate(tmp_path):
    handler = setup_file_logging(tmp_path / "logs", max_bytes=2000, backups=3)
    logger = logging.getLogger("ciel.test.rotate")
    try:
        for i in range(400):
            logger.warning("line %d %s", i, "y" * 40)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    files = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert files == ["ciel.log", "ciel.log.1", "ciel.log.2", "ciel.log.3"]
    assert all((tmp_path / "logs" / f).stat().st_size <= 2100 for f in files)
    assert "line 399" in (tmp_path / "logs" / "ciel.log").read_text()
    assert handler.write_errors == 0


def test_stall_watch_restarts_a_stuck_worker_with_backoff():
    state = {"count": 0, "restarts": 0}
    reports = []

    def restart() -> None:
        state["restarts"] += 1

    watch = StallWatch("gan", lambda: state["count"], restart, timeout=5.0, report=lambda s, m: reports.append(m),
                       startup=0.0)
    t = 0.0
    for _ in range(50):  # a healthy worker: 10 keyframes/s
        state["count"] += 1
        t += 0.1
        assert not watch.tick(t)
    # the worker hangs: one restart after 5 s, the next after 10 s more (backoff), not one per frame
    restarts_at = []
    while t < 30.0:
        t += 0.1
        if watch.tick(t):
            restarts_at.append(round(t, 1))
    assert state["restarts"] == len(restarts_at) == 2
    assert restarts_at[0] == pytest.approx(10.0, abs=0.15) and restarts_at[1] == pytest.approx(20.0, abs=0.15)
    assert "gan stalled" in reports[0]
    state["count"] += 1  # it came back: the timeout resets
    watch.tick(t + 0.1)
    assert watch.backoff.wait == 5.0


def test_stall_watch_gives_a_starting_worker_time_and_restarts_a_dead_one_at_once():
    state = {"count": 0, "error": None, "restarts": 0}

    def restart() -> None:
        state["restarts"] += 1
        state["error"] = None

    watch = StallWatch("gan", lambda: state["count"], restart, timeout=5.0, startup=30.0,
                       failed=lambda: state["error"] is not None)
    for i in range(250):  # 25 s loading a model: no output yet, no restart
        assert not watch.tick(i * 0.1)
    state["count"] = 1
    watch.tick(25.0)
    state["error"] = "image generator process exited with code 1"
    assert watch.tick(25.1) is False  # dead: restarted once the short wait has passed
    assert watch.tick(30.2) is True and state["restarts"] == 1


def test_supervision_thread_serves_health_and_restarts_a_stalled_gan(notify_socket):
    """The supervisor thread: /healthz on a free port, READY over sd_notify, and a GAN worker whose
    keyframe counter stops is restarted (and reported) while the engine keeps running."""
    import threading
    import time as _time

    from engine.supervise import Supervision

    path, sock = notify_socket

    class Gan:
        def __init__(self) -> None:
            self.count = 0
            self.restarts = 0
            self.stuck = True
            self.error = "image generator stopped: RuntimeError"

        def restart(self) -> None:
            self.restarts += 1
            self.stuck = False
            self.error = None

    eng = FakeEngine()
    eng.gan = Gan()
    reports = []
    eng.report = lambda source, message: reports.append((source, message))
    eng.clock = _time.monotonic
    stop = threading.Event()

    def engine_loop() -> None:  # frames and audio callbacks advance; the GAN only after its restart
        while not stop.is_set():
            eng.frames += 1
            eng.callbacks += 12
            if not eng.gan.stuck:
                eng.gan.count += 1
            _time.sleep(0.02)

    loop = threading.Thread(target=engine_loop)
    loop.start()
    sup = Supervision(eng.health, eng.clock, eng.report, port=0, gan=eng.gan,
                      notifier=Notifier({"NOTIFY_SOCKET": path}), gan_timeout=0.5, interval=0.1)
    sup.start()
    try:
        deadline = _time.monotonic() + 10
        while eng.gan.restarts == 0 and _time.monotonic() < deadline:
            _time.sleep(0.05)
        assert eng.gan.restarts == 1 and reports and reports[0][0] == "gan"
        while sup.health.callbacks_per_s is None and _time.monotonic() < deadline:
            _time.sleep(0.05)
        status, doc = get(f"http://127.0.0.1:{sup.server.port}/healthz")
        assert status == 200 and doc["ok"] and doc["frames"] > 0 and doc["audio_callbacks_per_s"] > 100
        assert any(m.startswith("READY=1") for m in received(sock))
    finally:
        sup.stop()
        stop.set()
        loop.join()
    assert received(sock)[-1] == "STOPPING=1"


def test_restartable_worker_replaces_a_dead_generator_thread():
    """A GAN worker thread that died (its generator raised) is replaced behind a stable handle; the
    render loop's calls keep working and the keyframe count keeps growing."""
    import threading
    import time as _time

    class Worker(threading.Thread):
        def __init__(self, fail_after: int | None) -> None:
            super().__init__(daemon=True)
            self.count, self.error, self.times_ms = 0, None, []
            self.fail_after = fail_after
            self._halt = threading.Event()

        def latest(self):
            return self.count or None

        def stop(self, timeout: float = 5.0) -> None:
            self._halt.set()
            if self.is_alive():
                self.join(timeout)

        def run(self) -> None:
            while not self._halt.wait(0.01):
                if self.fail_after is not None and self.count >= self.fail_after:
                    self.error = "image generator stopped: RuntimeError"
                    return
                self.count += 1

    made = []

    def factory():
        made.append(Worker(fail_after=5 if not made else None))
        return made[-1]

    handle = RestartableWorker(factory)
    handle.start()
    watch = StallWatch("gan", lambda: handle.count, handle.restart, timeout=0.3)
    t0 = _time.monotonic()
    while handle.restarts == 0 and _time.monotonic() - t0 < 5:
        watch.tick(_time.monotonic())
        _time.sleep(0.02)
    assert handle.restarts == 1 and len(made) == 2 and not made[0].is_alive()
    _time.sleep(0.2)
    assert handle.count > 5 and handle.error is None and handle.latest()
    assert made[1].is_alive() and handle.is_alive()   # the render loop's calls now reach a live, fresh worker
    handle.stop()
    assert not made[1].is_alive()


def test_the_log_says_how_many_records_a_full_disk_lost_once_it_can_write_again(tmp_path):
    """Records lost while the disk was full leave one line in the log when writing resumes."""
    target = tmp_path / "target"
    link = tmp_path / "ciel.log"
    link.symlink_to("/dev/full")
    handler = SafeRotatingFileHandler(link, max_bytes=100_000, backups=1)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("ciel.test.resume")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        for i in range(7):
            logger.warning("lost %d", i)
        link.unlink()                       # space returns: the same path is writable again
        link.symlink_to(target)
        logger.warning("after")
        logger.warning("later")
    finally:
        logger.removeHandler(handler)
        handler.close()
    lines = target.read_text().splitlines()
    assert lines[0] == "WARNING after"
    assert lines[1].startswith("WARNING logging resumed: 7 log records before this one were lost") and "space" in lines[1]
    assert lines[2] == "WARNING later" and len(lines) == 3
    assert handler.write_errors == 7
