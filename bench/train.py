"""Training speed on this machine: `python -m bench train [--quick]`.

Keys:
- audio_steps_per_s, audio_batch_seconds: `ciel train audio` steps (default config: 8 windows of
  16384 samples at 16 kHz) per second, and seconds of audio per step;
- image_steps_per_s, image_batch: `ciel train image` steps at the default config (256 px);
- image64_steps_per_s: our image training configured at 64 px, batch 64 (generator, spectral-norm
  discriminator, DiffAugment and EMA included);
- reference_dcgan64_steps_per_s: a DCGAN built like PyTorch-GAN's dcgan.py at 64x64x3, batch 64
  (upsample + 3x3 conv generator with 128 channels, 4-block discriminator with dropout and batch
  norm, BCE loss, Adam 2e-4 / (0.5, 0.999)), timed in the same run, alternating with ours;
- ingest_files_per_s: files per second through `ingest` on a generated archive (voice notes as
  WAV / AAC / AMR, 640x480 JPEG photos);
- *_gmacs_per_step: the multiply-adds of one whole training step of that network (forward and
  backward of every network the step runs, counted by torch.utils.flop_counter over one step;
  convolutions and matrix products, which are nearly all of it), in 10^9;
- *_gmacs_per_s: steps/s × gmacs_per_step: the compute each recipe gets through on this machine.
  Our 64 px image step and the reference's differ in compute, so compare their speed per
  multiply-add, and their quality per minute with `python -m bench quality`, not steps/s.

All on random or generated data, with torch's default threads. The machine load is printed to stderr.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench.common import machine_load
from engine.train.audio import AudioTask, AudioTrainConfig
from engine.train.defaults import babble, make_archive
from engine.train.image import ImageTask, ImageTrainConfig
from engine.train.ingest import IngestConfig, ingest
from engine.train.loop import Env


class RefGenerator(nn.Module):
    """PyTorch-GAN dcgan.py's generator: linear to 128 x (S/4)², two upsample + 3x3 conv stages."""

    def __init__(self, size: int = 64, latent: int = 100, channels: int = 3) -> None:
        super().__init__()
        self.init = size // 4
        self.fc = nn.Linear(latent, 128 * self.init ** 2)
        self.body = nn.Sequential(
            nn.BatchNorm2d(128), nn.Upsample(scale_factor=2), nn.Conv2d(128, 128, 3, 1, 1), nn.BatchNorm2d(128, 0.8),
            nn.LeakyReLU(0.2, inplace=True), nn.Upsample(scale_factor=2), nn.Conv2d(128, 64, 3, 1, 1),
            nn.BatchNorm2d(64, 0.8), nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(64, channels, 3, 1, 1), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(self.fc(z).view(z.shape[0], 128, self.init, self.init))


class RefDiscriminator(nn.Module):
    """PyTorch-GAN dcgan.py's discriminator: four stride-2 3x3 conv blocks (16-128 channels,
    LeakyReLU, Dropout2d 0.25, batch norm after the first), then linear + sigmoid."""

    def __init__(self, size: int = 64, channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate(((channels, 16), (16, 32), (32, 64), (64, 128))):
            layers += [nn.Conv2d(cin, cout, 3, 2, 1), nn.LeakyReLU(0.2, inplace=True), nn.Dropout2d(0.25)]
            if i:
                layers.append(nn.BatchNorm2d(cout, 0.8))
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(128 * (size // 16) ** 2, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).flatten(1))


class ReferenceDCGAN:
    """One training iteration as dcgan.py runs it: generator step, then discriminator on real and
    the detached fake batch (BCE, Adam lr 2e-4, betas (0.5, 0.999)), on random 'real' images."""

    def __init__(self, size: int = 64, batch: int = 64, latent: int = 100) -> None:
        torch.manual_seed(0)
        self.gen, self.disc = RefGenerator(size, latent), RefDiscriminator(size)
        for m in list(self.gen.modules()) + list(self.disc.modules()):
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)
        self.opt_g = torch.optim.Adam(self.gen.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.real = torch.rand(batch, 3, size, size) * 2 - 1
        self.batch, self.latent = batch, latent
        self.bce = nn.BCELoss()

    def train_step(self, step: int) -> None:
        valid, fake = torch.ones(self.batch, 1), torch.zeros(self.batch, 1)
        self.opt_g.zero_grad()
        imgs = self.gen(torch.randn(self.batch, self.latent))
        g_loss = self.bce(self.disc(imgs), valid)
        g_loss.backward()
        self.opt_g.step()
        self.opt_d.zero_grad()
        d_loss = (self.bce(self.disc(self.real), valid) + self.bce(self.disc(imgs.detach()), fake)) / 2
        d_loss.backward()
        self.opt_d.step()


def gmacs_per_step(task, step: int = 0) -> float:
    """Multiply-adds (10^9) of one `task.train_step`, forward and backward (FLOPs / 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        task.train_step(step)
    return counter.get_total_flops() / 2e9


def steps_per_s(task, steps: int, warmup: int = 1) -> float:
    for s in range(warmup):
        task.train_step(s)
    t0 = time.perf_counter()
    for s in range(steps):
        task.train_step(warmup + s)
    return steps / (time.perf_counter() - t0)


def alternating(a, b, rounds: int, steps: int) -> tuple[float, float]:
    """Steps/s of `a` and `b` timed in alternating rounds (so both see the same machine load)."""
    a.train_step(0)
    b.train_step(0)
    ta = tb = 0.0
    for r in range(rounds):
        t0 = time.perf_counter()
        for s in range(steps):
            a.train_step(1 + r * steps + s)
        t1 = time.perf_counter()
        for s in range(steps):
            b.train_step(1 + r * steps + s)
        ta, tb = ta + t1 - t0, tb + time.perf_counter() - t1
    return rounds * steps / ta, rounds * steps / tb


def main(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench train")
    ap.add_argument("--quick", action="store_true", help="fewer steps (under a minute)")
    args = ap.parse_args(argv)
    q = args.quick
    print(f"bench train: {machine_load()}, torch threads {torch.get_num_threads()}", file=sys.stderr)
    env = Env(device=torch.device("cpu"))
    rng = np.random.default_rng(0)

    audio = torch.from_numpy(np.round(babble(20.0, rng) * 32767).astype(np.int16))
    acfg = AudioTrainConfig()
    atask = AudioTask(acfg, None, env, audio=audio, index=np.array([[0, audio.numel()]]), samplerate=16000)
    audio_rate = steps_per_s(atask, 2 if q else 20)

    photos = torch.randint(0, 256, (64, 3, 256, 256), dtype=torch.uint8)
    icfg = ImageTrainConfig()
    itask = ImageTask(icfg, None, env, photos=photos)
    image_rate = steps_per_s(itask, 2 if q else 15)

    cfg64 = ImageTrainConfig(resolution=64, batch=64)
    ours64 = ImageTask(cfg64, None, env, photos=torch.nn.functional.interpolate(photos.float(), size=64).byte())
    ours_rate, ref_rate = alternating(ours64, ReferenceDCGAN(64, 64), rounds=2 if q else 5, steps=1 if q else 4)

    with tempfile.TemporaryDirectory(prefix="ciel-bench-") as tmp:
        archive = make_archive(Path(tmp) / "archive", audio_minutes=0.5 if q else 3.0, photos=8 if q else 40)
        files = sum(1 for p in archive.rglob("*") if p.is_file())
        t0 = time.perf_counter()
        ingest(archive, Path(tmp) / "dataset", IngestConfig(), progress=False)
        ingest_rate = files / (time.perf_counter() - t0)
    macs = {"audio": gmacs_per_step(atask), "image": gmacs_per_step(itask), "image64": gmacs_per_step(ours64),
            "reference_dcgan64": gmacs_per_step(ReferenceDCGAN(64, 64))}
    rates = {"audio": audio_rate, "image": image_rate, "image64": ours_rate, "reference_dcgan64": ref_rate}
    print(f"bench train: image64 / reference_dcgan64 = {ours_rate / ref_rate:.2f} in steps/s, "
          f"{macs['image64'] / macs['reference_dcgan64']:.3f} in multiply-adds per step; {machine_load()}", file=sys.stderr)
    return {
        "audio_steps_per_s": round(audio_rate, 3),
        "audio_batch_seconds": round(acfg.batch * acfg.window / 16000, 3),
        "image_steps_per_s": round(image_rate, 3),
        "image_batch": icfg.batch,
        "image64_steps_per_s": round(ours_rate, 3),
        "reference_dcgan64_steps_per_s": round(ref_rate, 3),
        "ingest_files_per_s": round(ingest_rate, 2),
        **{f"{k}_gmacs_per_step": round(v, 3) for k, v in macs.items()},
        **{f"{k}_gmacs_per_s": round(rates[k] * macs[k], 2) for k in macs},
    }
