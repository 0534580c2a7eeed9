"""`ciel bake` and `ciel install` as a user runs them.

Bake: real models, real synthesis; what comes out must play (Ogg Opus decodes to stereo 48 kHz,
not silent, below the ceiling), show (a square PNG that is not flat) and be reproducible. Install:
a bad schedule is one clear line; a short real run (JACK dummy + Xvfb) serves /healthz, plays
scenes on time and writes its log.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.baked import read_index
from engine.cli import main as ciel

ROOT = Path(__file__).resolve().parent.parent


def decode_ogg(path: Path) -> tuple[np.ndarray, int, int]:
    """(samples (n, channels) float32, rate, channels) of an Ogg file, decoded by FFmpeg (PyAV)."""
    import av

    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        assert stream.codec_context.name == "opus"
        chunks = [f.to_ndarray() for f in c.decode(stream)]
        rate, channels = stream.codec_context.sample_rate, stream.codec_context.channels
    data = np.concatenate(chunks, axis=1) if chunks[0].ndim == 2 else np.concatenate(chunks)
    return data.T.astype(np.float32), rate, channels


@pytest.fixture(scope="module")
def baked(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("baked")
    assert ciel(["bake", "--count", "3", "--seconds", "2", "--seed", "5", str(out)]) == 0
    return out


def test_bake_writes_playable_scenes(baked):
    scenes = read_index(baked)
    assert [s.id for s in scenes] == ["s0001", "s0002", "s0003"]
    assert len({s.seed for s in scenes}) == 3
    index = json.loads((baked / "index.json").read_text())
    assert index["version"] == 1 and index["samplerate"] == 48000 and index["image_size"] == 256
    for s in scenes:
        audio, rate, channels = decode_ogg(s.audio)
        assert (rate, channels) == (48000, 2)
        assert abs(len(audio) / rate - 2.0) < 0.05
        rms = float(np.sqrt(np.mean(audio ** 2)))
        assert rms > 1e-3, f"{s.audio.name} is silent"
        import soundfile as sf

        wav, wrate = sf.read(s.wav, dtype="float32")
        assert wrate == 48000 and wav.shape == (96000, 2)
        assert np.max(np.abs(wav)) <= 10 ** (-1 / 20) + 1e-3, "peak above -1 dBFS"
        img = np.asarray(Image.open(s.image))
        assert img.shape == (256, 256, 3) and img.std() > 2.0, "image is flat"
    # different seeds, different scenes
    a, b = (np.asarray(Image.open(s.image), np.float32) for s in scenes[:2])
    assert np.abs(a - b).mean() > 1.0


def test_bake_is_reproducible_and_resumes(baked, tmp_path):
    again = tmp_path / "again"
    assert ciel(["bake", "--count", "2", "--seconds", "2", "--seed", "5", str(again)]) == 0
    for name in ("s0001.png", "s0001.wav", "s0002.png", "s0002.wav"):
        assert (again / name).read_bytes() == (baked / name).read_bytes(), name
    # a longer bake with the same seed keeps the two scenes already written
    before = (again / "s0001.png").stat().st_mtime_ns
    assert ciel(["bake", "--count", "3", "--seconds", "2", "--seed", "5", "--no-wav", str(again)]) == 0
    assert (again / "s0001.png").stat().st_mtime_ns == before
    assert [s.id for s in read_index(again)] == ["s0001", "s0002", "s0003"]
    assert read_index(again)[2].wav is None


def test_bad_input_is_one_clear_line(tmp_path, capsys):
    patch = tmp_path / "show.toml"
    patch.write_text('[[schedule.hours]]\nstart = "9"\n')
    assert ciel(["install", str(patch), "--headless", "--audio", "none"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "show.toml" in err and "schedule.hours[0].start" in err and "HH:MM" in err
    assert ciel(["install", "--baked", str(tmp_path / "nothing"), "--headless", "--audio", "none"]) == 2
    err = capsys.readouterr().err.strip()
    assert "index.json not found" in err and "ciel bake" in err
    assert ciel(["bake", "--count", "0", str(tmp_path / "x")]) == 2
    assert "--count" in capsys.readouterr().err


def healthz(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return json.loads(r.read())
    except (OSError, ValueError) as exc:
        code = getattr(exc, "code", None)
        if code == 503:
            return json.loads(exc.read())  # type: ignore[attr-defined]
        return None


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_install_runs_scenes_serves_health_and_logs(jackd, xdisplay, tmp_path, baked):
    """`ciel install` for real: JACK dummy sound, a window on Xvfb, a baked folder, a 1 s period."""
    port = free_port()
    logs = tmp_path / "logs"
    env = dict(os.environ, DISPLAY=xdisplay)
    cmd = [sys.executable, "-m", "engine.cli", "install", "--always-open", "--period", "1", "--size", "640x360",
           "--baked", str(baked), "--health-port", str(port), "--log-dir", str(logs), "--osc-port", "0",
           "--seconds", "40"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        seen: list[dict] = []
        deadline = time.monotonic() + 35
        while time.monotonic() < deadline and proc.poll() is None:
            doc = healthz(port)
            if doc and doc.get("scene"):
                seen.append(doc)
                if len({d["scene"] for d in seen}) >= 3 and doc.get("audio_callbacks_per_s"):
                    break
            time.sleep(0.25)
        assert seen, "no /healthz answer with a scene"
        last = seen[-1]
        assert len({d["scheduler"]["scene_number"] for d in seen}) >= 3, "scenes did not change every second"
        assert last["scene"] in {"s0001", "s0002", "s0003"}
        assert last["audio_callbacks_per_s"] > 100, "no sound running"
        # a scene's file plays once the audio process has loaded it; at a 1 s period on a loaded
        # machine a load can outlast its scene (the newest request wins), so any answer of the run
        # may show it, and a few more seconds are looked at
        played = {d.get("audio", {}).get("playing", "") for d in seen} - {""}
        until = time.monotonic() + 5
        while not played and time.monotonic() < until and proc.poll() is None:
            time.sleep(0.25)
            played = {(healthz(port) or {}).get("audio", {}).get("playing", "")} - {""}
        assert played and all(Path(p).parent == baked for p in played), f"the baked scenes' sound is not what plays: {played}"
        assert last["audio"]["error"] == ""
        assert last["frames"] > 0 and last["ok"], last.get("problems")
        assert 0.0 <= last["next_scene_s"] <= 1.0
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out[-2000:]
    log = (logs / "ciel.log").read_text()
    assert "installation: patch" in log


def test_baked_image_worker_shows_each_scene_image(baked):
    """On weak hardware the render loop takes baked images from this worker instead of the GAN."""
    from engine.control.config import ScheduleConfig
    from engine.control.scheduler import Scheduler
    from engine.params import ParamStore
    from engine.scenes import BakedImageWorker

    t = [0.0]
    sched = Scheduler(ScheduleConfig(period=1.0, no_repeat=2, baked=str(baked)), ParamStore(), clock=lambda: t[0])
    worker = BakedImageWorker(sched)
    worker.start()
    assert worker.latest() is None
    shown = []
    for i in range(4):
        t[0] = float(i)
        scene = sched.tick()
        kf = worker.latest()
        assert kf is not None and worker.latest() is None  # each image once
        expected = np.asarray(Image.open(scene.image).convert("RGB"))
        assert np.array_equal(kf.image, expected)
        if shown:
            assert np.array_equal(kf.back, shown[-1])
        shown.append(kf.image)
    assert worker.count == 4 and worker.error is None
