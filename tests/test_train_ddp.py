"""Training runs unchanged under torchrun: two processes, DistributedDataParallel over gloo on CPU."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import torch

from engine.train.defaults import make_archive
from engine.train.ingest import IngestConfig, ingest
from engine.train.loop import list_checkpoints, read_checkpoint
from engine.visual.model import load_image_model

ROOT = Path(__file__).resolve().parents[1]


def test_torchrun_two_processes_train_and_export(tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.fail("torchrun is missing from the environment (it ships with torch)")
    make_archive(tmp_path / "archive", audio_minutes=0.1, photos=8, seed=5)
    ingest(tmp_path / "archive", tmp_path / "dataset", IngestConfig(image_size=64, audio=False), progress=False)
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "engine.cli", "train", "image",
           str(tmp_path / "dataset"), "-o", str(run), "--steps", "4", "--checkpoint-steps", "2",
           "--resolution", "64", "--batch", "4", "--threads", "1"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stdout.count("training image on cpu x2") == 1          # rank 0 speaks, rank 1 trains quietly
    card = tomllib.loads((run / "model" / "card.toml").read_text())
    assert card["device"] == "cpu x2" and card["steps"] == 4
    assert [read_checkpoint(p)[1]["step"] for p in list_checkpoints(run)] == [2, 4]
    model = load_image_model(run / "model")
    assert float(model.generate(torch.randn(2, model.latent_dim)).std()) > 0.01
