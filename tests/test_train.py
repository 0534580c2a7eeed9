"""`ciel train audio|image` with tiny budgets: the models they export load and play in the engine;
kill -9 loses nothing and --resume continues; Ctrl-C saves and exits cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from engine import cli
from engine.audio.model import load_audio_model
from engine.train.defaults import make_archive
from engine.train.ingest import IngestConfig, ingest
from engine.train.loop import list_checkpoints, read_checkpoint
from engine.visual.model import load_image_model

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("train")
    make_archive(tmp / "archive", audio_minutes=0.5, photos=8, seed=3)
    ingest(tmp / "archive", tmp / "dataset", IngestConfig(image_size=64), progress=False)
    return tmp / "dataset"


def card(folder: Path) -> dict:
    import tomllib

    return tomllib.loads((folder / "card.toml").read_text())


def all_files_whole(run: Path) -> None:
    """Every file of a run reads back: checkpoints, previews (PNG, WAV), configs; no temporaries."""
    for path in run.rglob("*"):
        if not path.is_file():
            continue
        assert not path.name.startswith("."), f"temporary file left: {path}"
        if path.suffix == ".safetensors" and path.parent.name == "checkpoints":
            read_checkpoint(path)
        elif path.suffix == ".png":
            Image.open(path).verify()
        elif path.suffix == ".wav":
            assert sf.read(path)[0].size > 0


def test_a_full_band_archive_trains_and_streams_at_44100(tmp_path: Path) -> None:
    """`ingest --samplerate 44100` then `train audio`: the model runs at 44.1 kHz with a 2.9 ms
    hop and plays through the engine's synth at 48 kHz, in stereo, with a learning axis."""
    from engine.audio.quality import render_walk

    make_archive(tmp_path / "archive", audio_minutes=0.3, photos=0, seed=4)
    ingest(tmp_path / "archive", tmp_path / "ds", IngestConfig(samplerate=44100), progress=False)
    run = tmp_path / "run"
    assert cli.main(["train", "audio", str(tmp_path / "ds"), "-o", str(run), "--steps", "6", "--batch", "2",
                     "--threads", "1"]) == 0
    model = load_audio_model(run / "model")
    assert model.sample_rate == 44100 and model.hop == 128
    assert len(model.snapshots) == 2 and model.card["learning"]["steps"] == [0, 6]
    sound = render_walk(model, 1.0, out_rate=48000)
    assert sound.shape == (48000, 2) and np.isfinite(sound).all() and np.abs(sound).max() <= 10 ** (-1 / 20) + 1e-6


def test_export_keeps_the_chosen_learning_snapshots(dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert cli.main(["train", "audio", str(dataset), "-o", str(run), "--steps", "5", "--batch", "1",
                     "--threads", "1"]) == 0
    assert cli.main(["export", str(run), str(tmp_path / "two"), "--snapshots", "2"]) == 0
    assert load_audio_model(tmp_path / "two").card["learning"]["steps"] == [0, 5]
    assert cli.main(["export", str(run), str(tmp_path / "none"), "--snapshots", "0"]) == 0
    assert load_audio_model(tmp_path / "none").snapshots == ()


def test_audio_budget_gives_a_model_that_plays(dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert cli.main(["train", "audio", str(dataset), "-o", str(run), "--steps", "8", "--checkpoint-steps", "4",
                     "--batch", "2", "--threads", "1"]) == 0
    model = load_audio_model(run / "model")
    info = card(run / "model")
    assert info["trained"] is True and info["steps"] == 8 and info["stopped"] == "budget reached"
    assert info["latent_dim"] == model.latent_dim and info["dataset"]["clips"] >= 1 and "stft" in info["losses"]
    # the card names the dataset by its folder and content, never by the artist's absolute path
    assert info["dataset"]["name"] == dataset.name and len(info["dataset"]["sha256"]) == 64
    assert str(dataset.parent) not in (run / "model" / "card.toml").read_text(encoding="utf-8")
    z = model.knobs_to_latent(np.random.default_rng(0).standard_normal((250, model.latent_dim)) * 0.5).T
    audio = model.decode(z)
    assert audio.shape == (250 * model.hop,) and np.isfinite(audio).all()
    assert np.sqrt(np.mean(audio ** 2)) > 1e-3, "trained model decodes silence"
    stream = model.streaming_decoder()
    blocks = np.concatenate([stream(torch.from_numpy(z[None, :, i:i + 4].copy()))[0, 0].numpy() for i in range(0, 40, 4)])
    assert np.allclose(blocks, audio[: blocks.size], atol=1e-4)  # the engine's streaming decoder plays it
    assert len(model.clips) >= 1
    previews = run / "previews"
    for name in ("loss.png", "audio-00000004.png", "audio-00000008-recon.wav", "audio-00000008-walk.wav"):
        assert (previews / name).is_file(), name
    assert np.abs(sf.read(previews / "audio-00000008-walk.wav")[0]).max() > 1e-3
    assert [p.name for p in list_checkpoints(run)] == ["step-00000004.safetensors", "step-00000008.safetensors"]
    all_files_whole(run)

    patch = tmp_path / "patch.toml"
    patch.write_text(f'[audio]\nmodel = "{run / "model"}"\n')
    out = tmp_path / "render"
    assert cli.main(["render", str(out), str(patch), "--seconds", "1", "--no-frames"]) == 0
    played, rate = sf.read(out / "audio.wav")
    assert played.size >= rate * 0.9 and np.sqrt(np.mean(played ** 2)) > 1e-4


def test_image_budget_gives_a_model_that_draws(dataset: Path, tmp_path: Path, gl_context: object) -> None:
    run = tmp_path / "run"
    assert cli.main(["train", "image", str(dataset), "-o", str(run), "--minutes", "0.05", "--checkpoint-steps", "3",
                     "--resolution", "64", "--batch", "4", "--threads", "1"]) == 0
    model = load_image_model(run / "model")
    info = card(run / "model")
    assert info["trained"] is True and info["steps"] >= 1 and info["resolution"] == 64
    assert info["training_minutes"] >= 0.05
    img = model.generate(torch.randn(4, model.latent_dim))
    assert img.shape == (4, 3, 64, 64) and torch.isfinite(img).all()
    assert float(img.std()) > 0.01, "generator draws a flat picture"
    # the model carries its learning axis (from step 0 to the last) and its knob directions
    assert model.has_learning and info["learning"]["steps"][0] == 0 and info["learning"]["steps"][-1] == info["steps"]
    assert model.directions is not None and model.directions.shape == (8, model.latent_dim)
    z = torch.randn(4, model.latent_dim)
    final = model.generate(z)
    model.set_learning(0.0)
    untrained = model.generate(z)
    model.set_learning(1.0)
    assert torch.allclose(model.generate(z), final, atol=1e-5)
    assert not torch.allclose(untrained, final, atol=1e-3), "learning 0 draws like the trained model"
    grids = sorted((run / "previews").glob("image-*.png"))
    assert grids and Image.open(grids[-1]).size[0] > 64 * 3
    assert (run / "previews" / "dataset.png").is_file()
    all_files_whole(run)
    # `ciel render` draws the sky with it (the offscreen renderer of the engine, EGL)
    patch = tmp_path / "patch.toml"
    patch.write_text(f'[visual]\nmodel = "{run / "model"}"\n')
    out = tmp_path / "render"
    assert cli.main(["render", str(out), str(patch), "--seconds", "0.4", "--fps", "5", "--size", "160x90"]) == 0
    frames = sorted((out / "frames").glob("*.png"))
    assert len(frames) == 2 and np.asarray(Image.open(frames[-1])).std() > 1.0
    # a second run into the same folder without --resume is refused, naming the folder
    assert cli.main(["train", "image", str(dataset), "-o", str(run), "--steps", "1"]) == 2


def _start(dataset: Path, run: Path, steps: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "engine.cli", "train", "audio", str(dataset), "-o", str(run), "--steps", str(steps),
           "--checkpoint-steps", "3", "--batch", "2", "--threads", "1", "--minutes", "0"]
    return subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_checkpoints(run: Path, count: int, proc: subprocess.Popen, timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while len(list_checkpoints(run)) < count:
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "no checkpoint written in time"
        time.sleep(0.05)


def test_kill_9_then_resume_continues_from_the_last_checkpoint(dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = _start(dataset, run, steps=100_000)
    try:
        _wait_for_checkpoints(run, 2, proc)
        time.sleep(0.3)  # land anywhere: in a step, a checkpoint or a preview
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    last = read_checkpoint(list_checkpoints(run)[-1])[1]["step"]
    assert last >= 6
    target = last + 3
    assert cli.main(["train", "audio", str(dataset), "-o", str(run), "--resume", "--steps", str(target)]) == 0
    tensors, meta = read_checkpoint(list_checkpoints(run)[-1])
    assert meta["step"] == target
    assert [p["step"] for p in meta["history"]] == sorted(p["step"] for p in meta["history"])  # one continuous history
    assert "optim/vae/0/exp_avg" in tensors                         # optimiser state travels with the weights
    assert card(run / "model")["steps"] == target
    load_audio_model(run / "model")
    all_files_whole(run)


def test_ctrl_c_saves_and_exits_cleanly(dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = _start(dataset, run, steps=100_000)
    try:
        _wait_for_checkpoints(run, 1, proc)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=40)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "stopped by SIGINT" in card(run / "model")["stopped"]
    meta = read_checkpoint(list_checkpoints(run)[-1])[1]
    assert meta["step"] == card(run / "model")["steps"] and meta["step"] >= 3
    load_audio_model(run / "model")
    all_files_whole(run)
    # `ciel export` writes the same checkpoint again as a model folder
    assert cli.main(["export", str(run), str(tmp_path / "exported")]) == 0
    assert card(tmp_path / "exported")["steps"] == meta["step"]
    assert json.dumps(card(tmp_path / "exported")["losses"])
