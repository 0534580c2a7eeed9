"""`ciel train image`: the image generator of the visual engine, trained for small data on a CPU.

- Generator: `engine.visual.model.Generator` (bilinear resize then 3x3 convolution at each
  doubling, batch norm, skip-layer excitation).
- Discriminator: its mirror — 4x4 stride-2 convolutions from the resolution down to 4x4, widths
  doubling from `d_channels` up to `d_max_channels`, LeakyReLU 0.2, spectral norm on every layer.
- Loss: hinge. One generator forward per step feeds both updates (as PyTorch-GAN's dcgan.py does):
  the generator step through a frozen discriminator, then the discriminator on the real and the
  detached fake batch in one call.
- DiffAugment (Zhao et al. 2020: colour, translation, cutout) on every image the discriminator
  sees, real or fake, so a hundred photos are enough not to be memorised at once; real photos are
  also mirrored left-right.
- A colour term: the generated batch's colour statistics (RGB mean and spread, 4x4 layout of
  mean colours) pulled towards the archive's. Without it a 15-minute run on a CPU paints in a few
  saturated colour modes (yellow, red, black) that the colour-jittered discriminator lets pass.
- EMA of the generator weights (batch-norm statistics copied), with a warm-up so short runs
  benefit; the EMA generator is what previews show and what is exported.
- Export: the EMA generator with standing batch-norm statistics, its learning snapshots (each
  with its own standing statistics; at most `IMAGE_SNAPSHOTS`) and the latent knob directions
  (`engine.visual.model.latent_directions`).

Shapes: the dataset's uint8 photos [N, S, S, 3] are resized once to the model resolution R and
kept as uint8 on the device; batches are float [B, 3, R, R] in [-1, 1]. Called on the training
process's main thread by `engine.train.loop.train`.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from .. import learning
from ..configio import field
from ..errors import DatasetError
from ..params import IMAGE_LATENT_KNOBS
from ..visual.model import Generator, GeneratorConfig, export_image_model, fold_batchnorm, latent_directions
from . import previews
from .ingest import Dataset
from .loop import Env, RunConfig, Snapshot, wrap_ddp

AUGMENTS = ("color", "translation", "cutout")
IMAGE_SNAPSHOTS = 6   # learning snapshots an image model keeps at most: each float16 copy of the
                      # 1 M-parameter generator adds 2 MB (6 → a 14 MB model file, 8 would be 18 MB)
KNOBS = IMAGE_LATENT_KNOBS   # latent knob directions stored in the model


@dataclass(frozen=True)
class ImageTrainConfig:
    """`ciel train image` settings (saved as RUN/train.toml and in the model card)."""

    run: RunConfig = RunConfig()
    resolution: int = field(256, choices=(64, 128, 256), doc="Side of the generated images (pixels).")
    latent_dim: int = field(128, minimum=1, maximum=1024, doc="Size of the generator's latent vector.")
    channels: int = field(256, minimum=8, maximum=2048, doc="Generator width at 4x4 (halves at each doubling).")
    min_channels: int = field(8, minimum=4, maximum=1024, doc="Narrowest generator layer.")
    norm: str = field("batch", choices=("batch", "pixel"), doc="Generator normalisation: batch norm (folded away at export) or pixel norm.")
    sle: bool = field(True, doc="Skip-layer excitation in the generator (coarse maps gate the finest ones).")
    d_channels: int = field(8, minimum=4, maximum=1024, doc="Discriminator width at full resolution (doubles as it shrinks).")
    d_max_channels: int = field(256, minimum=8, maximum=2048, doc="Widest discriminator layer.")
    batch: int = field(8, minimum=1, maximum=4096, doc="Photos per step (per process under torchrun).")
    lr_g: float = field(1e-3, minimum=0.0, maximum=1.0, doc="Generator learning rate (Adam).")
    lr_d: float = field(1e-3, minimum=0.0, maximum=1.0, doc="Discriminator learning rate (Adam).")
    beta1: float = field(0.0, minimum=0.0, maximum=0.9999, doc="Adam beta1.")
    beta2: float = field(0.99, minimum=0.0, maximum=0.99999, doc="Adam beta2.")
    ema: float = field(0.999, minimum=0.0, maximum=0.999999, doc="EMA decay of the generator weights.")
    loss: str = field("hinge", choices=("hinge", "logistic"), doc="GAN loss: hinge, or the non-saturating logistic loss.")
    mbstd_group: int = field(4, minimum=0, maximum=64, doc="Minibatch-stddev group size in the discriminator (0 = off; must divide the batch).")
    augment: str = field("color,translation,cutout", doc="DiffAugment policy: comma-separated from color, translation, cutout ('' = none).")
    flip: bool = field(True, doc="Mirror real photos left-right at random.")
    colour_weight: float = field(1.0, minimum=0.0, maximum=100.0,
                                 doc="Weight of the colour term: the generated batch's colour statistics (each "
                                     "image's RGB mean and spread, and its 4x4 layout of mean colours) pulled "
                                     "towards the archive's, mean and spread over images (0 = off).")
    preview_images: int = field(16, minimum=1, maximum=256, doc="Images in the preview grid.")

    def generator_config(self) -> GeneratorConfig:
        return GeneratorConfig(resolution=self.resolution, latent_dim=self.latent_dim, channels=self.channels,
                               min_channels=self.min_channels, norm=self.norm, sle=self.sle)


class Discriminator(nn.Module):
    """(B, 3, R, R) → (B,) logits. Spectral-normalised 4x4 stride-2 convolutions down to 4x4, then
    (with `mbstd_group`) the minibatch standard deviation over groups of consecutive images as one
    more channel (Karras et al.): a batch of look-alike fakes is easy to tell, so the generator
    is pushed to use its latent instead of collapsing to one picture."""

    def __init__(self, resolution: int, channels: int = 16, max_channels: int = 256, mbstd_group: int = 4) -> None:
        super().__init__()
        steps = int(math.log2(resolution // 4))
        widths = [min(max_channels, channels << i) for i in range(steps)]
        layers: list[nn.Module] = []
        cin = 3
        for cout in widths:
            layers += [spectral_norm(nn.Conv2d(cin, cout, 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.group = mbstd_group
        self.head = spectral_norm(nn.Conv2d(cin + (1 if mbstd_group > 1 else 0), 1, 4, 1, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        if self.group > 1:
            b, c, hh, ww = h.shape
            g = self.group if b % self.group == 0 else 1
            std = h.view(b // g, g, c, hh, ww).std(dim=1, unbiased=False).mean(dim=(1, 2, 3)) if g > 1 \
                else h.new_zeros(b)
            h = torch.cat([h, std.repeat_interleave(g).view(b, 1, 1, 1).expand(b, 1, hh, ww)], dim=1)
        return self.head(h).flatten()


def diff_augment(x: torch.Tensor, policy: tuple[str, ...], g: torch.Generator) -> torch.Tensor:
    """DiffAugment: differentiable colour, translation (1/8 of the side) and cutout (half the side)
    on a batch (B, 3, H, W) in [-1, 1]; random draws come from `g` (CPU) so runs are repeatable."""
    b, _, h, w = x.shape

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=g).to(x.device)

    if "color" in policy:
        x = x + (rand(b, 1, 1, 1) - 0.5)
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (rand(b, 1, 1, 1) * 2) + mean
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * (rand(b, 1, 1, 1) + 0.5) + mean
    if "translation" in policy:
        shift = (rand(b, 2) - 0.5) * 0.25 * 2  # ±1/8 of the side, in grid units ([-1, 1] spans the image)
        theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0
        theta[:, :, 2] = shift
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    if "cutout" in policy:
        ch, cw = h // 2, w // 2
        cy = (rand(b, 1, 1) * (h + 1 - ch % 2)).long() - ch // 2
        cx = (rand(b, 1, 1) * (w + 1 - cw % 2)).long() - cw // 2
        ys = torch.arange(h, device=x.device).view(1, h, 1)
        xs = torch.arange(w, device=x.device).view(1, 1, w)
        hole = (ys >= cy) & (ys < cy + ch) & (xs >= cx) & (xs < cx + cw)
        x = x * (~hole).unsqueeze(1).to(x.dtype)
    return x


def colour_statistics(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, R, R) in [-1, 1] → (B, 54): each image's RGB mean (3) and standard deviation (3) and
    the mean colour of each cell of a 4x4 layout (48) — the statistics `bench quality`'s colour_fd
    compares (engine/visual/quality.py), differentiable."""
    mean = x.mean(dim=(2, 3))  # (B, 3)
    std = (x - mean[:, :, None, None]).pow(2).mean(dim=(2, 3)).add(1e-8).sqrt()  # (B, 3)
    layout = F.adaptive_avg_pool2d(x, 4).permute(0, 2, 3, 1).flatten(1)  # (B, 48): rows, columns, RGB
    return torch.cat([mean, std, layout], dim=1)  # (B, 54)


def colour_loss(fake: torch.Tensor, data_mean: torch.Tensor, data_std: torch.Tensor) -> torch.Tensor:
    """Feature matching on colour (Salimans et al. 2016, on fixed features): the squared distance
    between the batch's mean and spread of `colour_statistics` and the archive's (`data_mean`,
    `data_std`, (54,) each), in units of the archive's spread, averaged over the 54 statistics."""
    f = colour_statistics(fake)  # (B, 54)
    scale = data_std.clamp_min(1e-3)
    d_mean = (f.mean(dim=0) - data_mean) / scale
    d_std = (f.std(dim=0) - data_std) / scale if f.shape[0] > 1 else torch.zeros_like(d_mean)
    return (d_mean.pow(2) + d_std.pow(2)).mean()


def parse_policy(text: str) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in text.split(",") if p.strip())
    unknown = [p for p in parts if p not in AUGMENTS]
    if unknown:
        raise ValueError(f"augment: unknown {unknown}; expected some of {list(AUGMENTS)}")
    return parts


def photos_at(images: np.ndarray, resolution: int, device: torch.device) -> torch.Tensor:
    """uint8 [N, S, S, 3] → uint8 [N, 3, R, R] on `device` (area-resized in chunks when S != R)."""
    out = torch.empty(images.shape[0], 3, resolution, resolution, dtype=torch.uint8)
    for i in range(0, images.shape[0], 64):
        chunk = torch.from_numpy(np.array(images[i:i + 64])).permute(0, 3, 1, 2)
        if chunk.shape[-1] != resolution:
            mode = "area" if chunk.shape[-1] > resolution else "bilinear"
            chunk = F.interpolate(chunk.float(), size=(resolution, resolution), mode=mode).round().clamp(0, 255).byte()
        out[i:i + 64] = chunk
    return out.to(device)


class ImageTask:
    """The GAN, its optimisers, the EMA generator and one training step."""

    kind = "image"

    def __init__(self, cfg: ImageTrainConfig, data: Dataset | None, env: Env, photos: torch.Tensor | None = None) -> None:
        self.cfg, self.env = cfg, env
        self.policy = parse_policy(cfg.augment)
        if photos is None:
            if data is None or data.images.shape[0] == 0:
                raise DatasetError(f"{data.folder if data else 'dataset'}: no photos to train on "
                                   "(the ingest report lists what was skipped)")
            photos = photos_at(data.images, cfg.resolution, env.device)
        self.photos = photos
        self.summary = dict(data.summary) if data else {}
        with torch.no_grad():   # the archive's colour statistics, once (54 numbers each)
            feats = torch.cat([colour_statistics(photos[i:i + 64].float().div(127.5).sub(1.0))
                               for i in range(0, photos.shape[0], 64)])  # (N, 54)
            self.colour_mean = feats.mean(dim=0)
            self.colour_std = feats.std(dim=0) if feats.shape[0] > 1 else torch.ones_like(self.colour_mean)
        torch.manual_seed(cfg.run.seed)
        self.gen = Generator(cfg.generator_config()).to(env.device)
        self.disc = Discriminator(cfg.resolution, cfg.d_channels, cfg.d_max_channels, cfg.mbstd_group).to(env.device)
        self.ema = copy.deepcopy(self.gen).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.gen_ddp = wrap_ddp(self.gen, env)
        self.disc_ddp = wrap_ddp(self.disc, env)
        betas = (cfg.beta1, cfg.beta2)
        self.opt_g = torch.optim.Adam(self.gen.parameters(), lr=cfg.lr_g, betas=betas)
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=cfg.lr_d, betas=betas)
        self.preview_z = torch.randn(cfg.preview_images, cfg.latent_dim,
                                     generator=torch.Generator().manual_seed(1234)).to(env.device)

    def modules(self) -> dict[str, nn.Module]:
        return {"generator": self.gen, "discriminator": self.disc, "ema": self.ema}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"generator": self.opt_g, "discriminator": self.opt_d}

    def describe(self) -> dict[str, Any]:
        return {"resolution": self.cfg.resolution, "latent_dim": self.cfg.latent_dim, "batch": self.cfg.batch,
                "photos": int(self.photos.shape[0]),
                "generator_parameters": sum(p.numel() for p in self.gen.parameters()),
                "discriminator_parameters": sum(p.numel() for p in self.disc.parameters())}

    def real_batch(self, g: torch.Generator) -> torch.Tensor:
        idx = torch.randint(0, self.photos.shape[0], (self.cfg.batch,), generator=g).to(self.photos.device)
        x = self.photos[idx].float().div_(127.5).sub_(1.0)
        if self.cfg.flip:
            flip = (torch.rand(self.cfg.batch, generator=g) < 0.5).to(x.device)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return x

    def train_step(self, step: int) -> dict[str, float]:
        """One generator and one discriminator update (hinge loss, DiffAugment); returns the losses."""
        cfg = self.cfg
        g = self.env.generator(step)
        real = self.real_batch(g)
        z = torch.randn(cfg.batch, cfg.latent_dim, generator=g).to(self.env.device)
        self.gen.train()
        fake = self.gen_ddp(z)
        # generator update through a frozen discriminator (its plain module: no DDP gradient sync)
        self.disc.requires_grad_(False)
        logits_g = self.disc(diff_augment(fake, self.policy, g))
        loss_g = F.softplus(-logits_g).mean() if cfg.loss == "logistic" else -logits_g.mean()
        loss_c = colour_loss(fake, self.colour_mean, self.colour_std) if cfg.colour_weight > 0 else fake.new_zeros(())
        self.opt_g.zero_grad(set_to_none=True)
        (loss_g + cfg.colour_weight * loss_c).backward()
        self.opt_g.step()
        self.disc.requires_grad_(True)
        # discriminator update on real and detached fake photos in one call
        logits = self.disc_ddp(diff_augment(torch.cat([real, fake.detach()]), self.policy, g))
        d_real, d_fake = logits[: cfg.batch], logits[cfg.batch:]
        if cfg.loss == "logistic":
            loss_d = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        else:
            loss_d = F.relu(1.0 - d_real).mean() + F.relu(1.0 + d_fake).mean()
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        self.update_ema(step)
        return {"d_loss": loss_d.item(), "g_loss": loss_g.item(), "colour_loss": loss_c.item(),
                "d_real": d_real.mean().item(), "d_fake": d_fake.mean().item()}

    @torch.no_grad()
    def update_ema(self, step: int) -> None:
        decay = min(self.cfg.ema, (1.0 + step) / (10.0 + step))
        for e, p in zip(self.ema.parameters(), self.gen.parameters()):
            e.lerp_(p, 1.0 - decay)
        for eb, b in zip(self.ema.buffers(), self.gen.buffers()):
            eb.copy_(b)

    def standing_generator(self, state: dict[str, torch.Tensor] | None = None) -> Generator:
        """A copy of the EMA generator (or of `state`, a generator state dict) with batch-norm
        statistics measured for its own weights ("standing statistics"), in eval mode: what the
        exported model makes."""
        gen = copy.deepcopy(self.ema)
        if state is not None:
            gen.load_state_dict(state)
        norms = [m for m in gen.modules() if isinstance(m, nn.BatchNorm2d)]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches below
        if norms:
            g = torch.Generator().manual_seed(self.cfg.run.seed + 17)
            gen.train()
            with torch.no_grad():
                for _ in range(4):
                    gen(torch.randn(32, self.cfg.latent_dim, generator=g).to(self.env.device))
        return gen.eval()

    @torch.no_grad()
    def sample(self, z: torch.Tensor, gen: Generator | None = None) -> np.ndarray:
        """uint8 [N, R, R, 3] from the standing EMA generator."""
        gen = gen or self.standing_generator()
        return previews.to_uint8_images(gen(z).float().cpu().numpy())

    def write_previews(self, folder: Path, step: int) -> list[Path]:
        """RUN/previews/image-STEP.png (grid from fixed latents) and, once, dataset.png (real photos)."""
        cols = int(math.ceil(math.sqrt(self.cfg.preview_images)))
        out = [previews.save_png(folder / f"image-{step:08d}.png", previews.image_grid(self.sample(self.preview_z), cols))]
        real = folder / "dataset.png"
        if not real.exists():
            n = min(self.cfg.preview_images, self.photos.shape[0])
            pick = self.photos[torch.linspace(0, self.photos.shape[0] - 1, n).long()].permute(0, 2, 3, 1).cpu().numpy()
            out.append(previews.save_png(real, previews.image_grid(pick, cols)))
        return out

    def export(self, folder: Path, card_extra: dict[str, Any], snapshots: list[Snapshot]) -> Path:
        """The standing EMA generator, up to IMAGE_SNAPSHOTS learning snapshots of the EMA generator
        (oldest first, the last one the exported weights) and the latent knob directions."""
        extra = dict(card_extra)
        extra.setdefault("description",
                         f"Resize-convolution generator trained by `ciel train image` for {extra.get('steps', 0)} "
                         f"steps on {self.photos.shape[0]} photos at {self.cfg.resolution} px (hinge loss, "
                         "DiffAugment, spectral-norm discriminator, EMA weights, skip-layer excitation).")
        final = self.standing_generator().cpu()
        usable = [s for s in snapshots if "ema" in s.states]
        usable = [usable[i] for i in learning.pick(len(usable), IMAGE_SNAPSHOTS)]
        snaps = [(s.step, s.seconds, {k: v for k, v in self.standing_generator(s.states["ema"]).cpu().state_dict().items()
                                      if not k.endswith("num_batches_tracked")}) for s in usable[:-1]]
        if usable:
            last = usable[-1]
            snaps.append((last.step, last.seconds, final.state_dict()))
        folded = fold_batchnorm(copy.deepcopy(final))
        directions = latent_directions(folded, self.cfg.latent_dim, KNOBS, seed=self.cfg.run.seed, samples=512)
        return export_image_model(final, folder, extra, snaps if len(snaps) >= 2 else (), directions)
