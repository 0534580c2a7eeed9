"""Faults an unattended installation meets, with real parts: the sound server dies and comes back,
the audio process is killed, a model file is corrupt, the log disk is full. In each case the
engine (the main process) keeps running and the sound comes back by itself.

These tests run their own JACK server under a private name (JACK_DEFAULT_SERVER), so killing it
disturbs no other JACK client on the machine.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import missing

from engine.patch import ROOT, load_patch
from harness import parts
from harness.parts import JackServer

SERVER = parts.free_server_name("ciel-faults")  # a fixed name: JACK keeps at most 8


@pytest.fixture
def jack(monkeypatch) -> Iterator[JackServer]:
    monkeypatch.setenv("JACK_DEFAULT_SERVER", SERVER)  # restored after the test
    monkeypatch.setenv("JACK_NO_START_SERVER", "1")
    j = JackServer(SERVER)
    try:
        j.start()  # sets $JACK_DEFAULT_SERVER: the spawned audio process inherits it
    except (FileNotFoundError, RuntimeError) as exc:
        missing(str(exc))
    try:
        yield j
    finally:
        j.stop()


def headless_engine(patch=None, installation: bool = True):
    """The real Engine without a window or control ports: the audio process, the scheduler."""
    from engine.app import Engine, RunOptions

    patch = patch or load_patch(ROOT / "patches" / "installation.toml")
    patch = patch.replace(audio=dataclasses.replace(patch.audio, device="system", seed=3),
                          schedule=dataclasses.replace(patch.schedule, period=0.5, hours=()))
    return Engine(patch, None, RunOptions(window=False, control=False, installation=installation))


def run_until(engine, condition, timeout: float) -> float | None:
    """Drive engine.tick like the headless run loop until `condition()`; seconds taken or None."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        now = engine.clock()
        engine.tick(now)
        engine.frame_done(now)
        if condition():
            return time.monotonic() - t0
        time.sleep(1 / 60)
    return None


def sounding(engine, since_callbacks: int = -1):
    """True when callbacks advance past `since_callbacks` and the output is audible (> -60 dBFS)."""
    def check() -> bool:
        s = engine.audio.status()
        return s.running and s.callbacks > since_callbacks + 50 and s.peak_db > -60.0
    return check


def test_jack_killed_and_restarted_sound_returns_within_5s(jack):
    engine = headless_engine()
    try:
        assert run_until(engine, sounding(engine), 20) is not None, engine.audio.status()
        pid_main = os.getpid()
        jack.kill()
        assert run_until(engine, lambda: not engine.audio.status().running, 10) is not None, \
            "the engine did not notice the sound server is gone"
        run_until(engine, lambda: False, 2.0)  # a while without a server: restarts fail and back off
        jack.start()
        callbacks = engine.audio.status().callbacks
        back = run_until(engine, sounding(engine, callbacks), 15)
        assert back is not None, f"no sound after JACK came back: {engine.audio.status()}"
        print(f"sound back {back:.2f} s after JACK returned")
        assert back < 5.0, f"sound came back after {back:.1f} s"
        assert os.getpid() == pid_main and engine.running
        assert engine.audio.status().restarts >= 1
        scenes = engine.scheduler.scenes
        run_until(engine, lambda: engine.scheduler.scenes > scenes + 1, 5)
        assert engine.scheduler.scenes > scenes + 1, "the scheduler stopped"
    finally:
        engine.close()


def test_audio_process_killed_is_restarted_and_logged(jack, caplog):
    engine = headless_engine()
    try:
        assert run_until(engine, sounding(engine), 20) is not None
        old = engine.audio.pid
        caplog.set_level(logging.WARNING)
        os.kill(old, signal.SIGKILL)
        callbacks = engine.audio.status().callbacks
        back = run_until(engine, lambda: engine.audio.pid != old and sounding(engine, callbacks)(), 20)
        assert back is not None, engine.audio.status()
        assert engine.audio.status().restarts == 1
        assert any("audio process" in r.getMessage() and "restarting" in r.getMessage() for r in caplog.records)
        assert engine.health()["audio"]["restarts"] == 1
    finally:
        engine.close()


def corrupt_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    data = (dst / "model.safetensors").read_bytes()
    (dst / "model.safetensors").write_bytes(b"\x00garbage" + data[len(data) // 2:])
    return dst


def test_corrupt_model_at_start_uses_the_bundled_default(jack, tmp_path):
    from engine.app import checked_model

    bad_audio = corrupt_copy(ROOT / "models" / "audio-default", tmp_path / "audio-bad")
    patch = load_patch(ROOT / "patches" / "installation.toml")
    patch = patch.replace(audio=dataclasses.replace(patch.audio, model=str(bad_audio)))
    engine = headless_engine(patch)
    try:
        messages = " ".join(engine.messages())
        assert str(bad_audio / "model.safetensors") in messages and "bundled default" in messages
        assert Path(engine.patch.audio.model).resolve() == (ROOT / "models" / "audio-default").resolve()
        assert run_until(engine, sounding(engine), 20) is not None, "no sound from the default model"
    finally:
        engine.close()
    bad_image = corrupt_copy(ROOT / "models" / "image-default", tmp_path / "image-bad")
    reports = []
    patch = patch.replace(visual=dataclasses.replace(patch.visual, model=str(bad_image)))
    fixed, _ = checked_model("image", patch, lambda source, message: reports.append(message))
    assert Path(fixed.visual.model).resolve() == (ROOT / "models" / "image-default").resolve()
    assert str(bad_image / "model.safetensors") in reports[0]


@pytest.fixture
def full_disk(tmp_path) -> Iterator[Path]:
    """A folder on a full filesystem: a tiny tmpfs filled up (root), else a log file on /dev/full."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                             capture_output=True).returncode == 0
    try:
        if mounted:
            try:
                with open(mnt / "filler", "wb") as fh:
                    while True:
                        fh.write(b"\0" * 4096)
                        fh.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
        else:
            (mnt / "ciel.log").symlink_to("/dev/full")
        yield mnt
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_log_disk_full_the_show_goes_on(jack, full_disk):
    from engine.logfiles import setup_file_logging

    handler = setup_file_logging(full_disk, logging.INFO)
    engine = headless_engine()
    sup = engine.supervision(port=0)
    sup.start()
    try:
        assert run_until(engine, sounding(engine), 20) is not None
        log = logging.getLogger("ciel.test")
        for i in range(200):
            log.warning("filling the log %d %s", i, "z" * 200)
        os.kill(engine.audio.pid, signal.SIGKILL)  # a real incident that logs while the disk is full
        scenes = engine.scheduler.scenes
        callbacks = engine.audio.status().callbacks
        assert run_until(engine, lambda: engine.audio.status().restarts == 1 and sounding(engine, callbacks)()
                         and engine.scheduler.scenes > scenes + 3, 20) is not None
        assert handler.write_errors >= 200, "the full disk was not hit"
        assert engine.running
        sup.health._next = 0.0
        doc = sup.health.sample()
        assert doc["log_write_errors"] >= 200 and "No space left" in doc["log_error"]
    finally:
        sup.stop()
        engine.close()
        logging.getLogger().removeHandler(handler)
        handler.close()


def test_a_part_that_fails_in_the_frame_becomes_a_line_on_the_overlay(monkeypatch):
    """Not only ciel's own errors: any exception of a part polled in the frame's tick is reported
    as data (overlay, /healthz) and the next frame still runs."""
    from engine.app import Engine, RunOptions

    patch = load_patch()
    patch = patch.replace(audio=dataclasses.replace(patch.audio, output="none"),
                          schedule=dataclasses.replace(patch.schedule, enabled=True, period=0.5))
    engine = Engine(patch, None, RunOptions(window=False, control=False))
    try:
        assert engine.scheduler is not None

        def broken(now: float) -> None:
            raise ZeroDivisionError("a bug in a part")

        monkeypatch.setattr(engine.scheduler, "tick", broken)
        engine.tick(engine.clock())
        engine.tick(engine.clock())
        assert "scheduler: ZeroDivisionError: a bug in a part" in engine.messages()
        assert "scheduler: ZeroDivisionError: a bug in a part" in engine.health()["messages"]
    finally:
        engine.close()
