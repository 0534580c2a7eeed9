"""The image generator: a small DCGAN-style network for 64, 128 or 256 px, fast on a laptop CPU.

Public API (imported by the training stage; stable):

- `GeneratorConfig(resolution=256, latent_dim=128, channels=256, min_channels=16)` — frozen.
- `Generator(cfg)` — `forward(z: (B, latent_dim) float32) -> (B, 3, R, R)` in [-1, 1].
  A linear layer makes a 4x4 map with `channels` channels; each step doubles the size with a
  4x4 transposed convolution (stride 2) and halves the channels (never below `min_channels`),
  batch norm and ReLU between; `tanh` at the end. This is the DCGAN generator of Radford et al.
  with fewer channels: the 256 px default has about 1.2 M parameters and 63 M multiply-adds.
- `export_image_model(generator, folder, card_extra)` — weights (safetensors) + `card.toml`.
- `load_image_model(folder, compile=False) -> ImageModel` — an eval-mode generator with its batch
  norm folded into the convolutions (so one image never depends on another), its `latent_dim`,
  `resolution` and `card`; `ImageModel.generate(z)` runs it without autograd. Any problem raises
  `engine.errors.ModelError` naming the file.
- `make_default_image_model(folder, seed=0)` — writes the untrained fixed-seed default model.

Latents are standard Gaussian vectors. The generator runs on whichever thread calls it (the GAN
worker thread at run time); it holds no state between calls.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..errors import ModelError
from ..modelio import CARD, WEIGHTS, card_value, load_model, save_model

log = logging.getLogger(__name__)

RESOLUTIONS = (64, 128, 256)
ARCHITECTURE = "dcgan-convtranspose-v1"


@dataclass(frozen=True)
class GeneratorConfig:
    """Shape of a generator. `channels` is the width of the 4x4 map; each doubling halves it."""

    resolution: int = 256
    latent_dim: int = 128
    channels: int = 256
    min_channels: int = 16

    def __post_init__(self) -> None:
        if self.resolution not in RESOLUTIONS:
            raise ValueError(f"resolution: expected one of {RESOLUTIONS}, got {self.resolution}")
        if self.latent_dim < 1 or self.channels < 1 or self.min_channels < 1:
            raise ValueError("latent_dim, channels and min_channels must be positive")

    @property
    def steps(self) -> int:
        """Number of size doublings from 4x4 to the resolution."""
        return int(math.log2(self.resolution // 4))

    def widths(self) -> list[int]:
        """Channels of each feature map, from the 4x4 map to the last one before RGB."""
        return [max(self.min_channels, self.channels >> i) for i in range(self.steps)]


class Generator(nn.Module):
    """DCGAN-style generator: (B, latent_dim) → (B, 3, R, R) in [-1, 1]."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        widths = cfg.widths()
        self.fc = nn.Linear(cfg.latent_dim, widths[0] * 16, bias=False)
        self.bn0 = nn.BatchNorm2d(widths[0])
        ups: list[nn.Module] = []
        for cin, cout in zip(widths[:-1], widths[1:]):
            ups += [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        ups += [nn.ConvTranspose2d(widths[-1], 3, 4, 2, 1), nn.Tanh()]
        self.ups = nn.Sequential(*ups)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """DCGAN initialisation: weights N(0, 0.02), batch norm scale N(1, 0.02)."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.ConvTranspose2d)):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.fc(z).view(z.shape[0], -1, 4, 4)
        x = torch.relu(self.bn0(x))
        return self.ups(x)


def fold_batchnorm(gen: Generator) -> Generator:
    """Fold eval-mode batch norm into the preceding layers (in place); returns the generator.

    After folding each image depends only on its own latent, and inference skips the norm.
    """
    gen.eval()
    with torch.no_grad():
        if isinstance(gen.bn0, nn.BatchNorm2d):
            scale, shift = _bn_affine(gen.bn0)
            c = scale.numel()
            w = gen.fc.weight.view(c, 16, -1) * scale[:, None, None]
            gen.fc = _linear(w.reshape(c * 16, -1), shift.repeat_interleave(16))
            gen.bn0 = nn.Identity()
        layers = list(gen.ups)
        for i, m in enumerate(layers):
            if isinstance(m, nn.BatchNorm2d):
                conv = layers[i - 1]
                scale, shift = _bn_affine(m)
                conv.weight.mul_(scale[None, :, None, None])
                bias = shift if conv.bias is None else conv.bias * scale + shift
                conv.bias = nn.Parameter(bias.clone())
                layers[i] = nn.Identity()
        gen.ups = nn.Sequential(*layers)
    return gen


def _bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


def _linear(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    lin = nn.Linear(weight.shape[1], weight.shape[0])
    lin.weight = nn.Parameter(weight.clone())
    lin.bias = nn.Parameter(bias.clone())
    return lin


@dataclass
class ImageModel:
    """A loaded generator ready for inference. `generate` is called by the GAN worker thread."""

    generator: nn.Module
    latent_dim: int
    resolution: int
    card: dict[str, Any]
    folder: Path
    compiled: bool = False

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim) float32 → (B, 3, R, R) float32 in [-1, 1]."""
        with torch.inference_mode():
            return self.generator(z)

    def to_uint8(self, z: torch.Tensor) -> "torch.Tensor":
        """(latent_dim,) or (1, latent_dim) → (R, R, 3) uint8 image (HWC, for textures)."""
        img = self.generate(z.reshape(1, self.latent_dim))[0]
        return ((img.permute(1, 2, 0) + 1.0) * 127.5).clamp_(0, 255).to(torch.uint8)


def export_image_model(generator: Generator, folder: str | Path, card_extra: Mapping[str, Any] | None = None) -> Path:
    """Write `generator` (unfolded, with batch-norm statistics) and its card into `folder`.

    `card_extra` adds entries such as `trained`, `steps`, `dataset`, `description`; it cannot
    override the architecture keys. Written atomically (a crash leaves the old model whole).
    """
    cfg = generator.cfg
    card: dict[str, Any] = {"kind": "image", "description": "", "trained": False}
    card.update(dict(card_extra or {}))
    card.update({"architecture": ARCHITECTURE, "resolution": cfg.resolution, "latent_dim": cfg.latent_dim,
                 "channels": cfg.channels, "min_channels": cfg.min_channels,
                 "parameters": sum(p.numel() for p in generator.parameters())})
    tensors = {k: v for k, v in generator.state_dict().items() if not k.endswith("num_batches_tracked")}
    return save_model(folder, tensors, card)


def load_image_model(folder: str | Path, compile: bool = False) -> ImageModel:
    """Load a model folder into an eval-mode, batch-norm-folded generator.

    With `compile`, tries `torch.compile` with inductor freezing and falls back to eager (logged)
    if compiling fails. Raises ModelError naming the file for any problem.
    """
    folder = Path(folder)
    tensors, card = load_model(folder, "image")
    source = str(folder / CARD)
    arch = card_value(card, "architecture", str, source)
    if arch != ARCHITECTURE:
        raise ModelError(f"{source}: architecture: expected {ARCHITECTURE!r}, got {arch!r}")
    try:
        cfg = GeneratorConfig(resolution=card_value(card, "resolution", int, source),
                              latent_dim=card_value(card, "latent_dim", int, source),
                              channels=card_value(card, "channels", int, source),
                              min_channels=card_value(card, "min_channels", int, source))
    except ValueError as exc:
        raise ModelError(f"{source}: {exc}") from None
    gen = Generator(cfg)
    expected = {k for k in gen.state_dict() if not k.endswith("num_batches_tracked")}
    if set(tensors) != expected:
        missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        raise ModelError(f"{folder / WEIGHTS}: tensors do not match the card (missing {missing[:3]}, unexpected {extra[:3]})")
    try:
        gen.load_state_dict(tensors, strict=False)
    except RuntimeError as exc:
        raise ModelError(f"{folder / WEIGHTS}: tensor shapes do not match the card ({str(exc).splitlines()[-1].strip()})") from None
    if not all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point()):
        raise ModelError(f"{folder / WEIGHTS}: weights contain NaN or infinity")
    fold_batchnorm(gen)
    for p in gen.parameters():
        p.requires_grad_(False)
    model = ImageModel(gen, cfg.latent_dim, cfg.resolution, dict(card), folder)
    if compile:
        model.generator, model.compiled = compile_generator(gen, cfg.latent_dim)
    return model


def compile_generator(gen: nn.Module, latent_dim: int) -> tuple[nn.Module, bool]:
    """`torch.compile` with inductor freezing (about 3x faster than eager on a CPU); eager on failure."""
    try:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
        compiled = torch.compile(gen, dynamic=False)
        with torch.inference_mode():
            compiled(torch.zeros(1, latent_dim))
        return compiled, True
    except Exception as exc:  # inductor raises many kinds (no compiler, unsupported op): eager still works
        log.warning("torch.compile failed, using the eager generator: %s", str(exc).splitlines()[0][:200])
        return gen, False


def calibrate(gen: Generator, seed: int, batches: int = 8, batch_size: int = 32, contrast: float = 0.8,
              desaturate: float = 0.0) -> None:
    """Set batch-norm statistics from random latents (no data), then centre each colour channel of
    the last layer and scale it to a pre-tanh standard deviation of `contrast`; `desaturate` (0..1)
    mixes the colour channels towards their mean."""
    g = torch.Generator().manual_seed(seed)
    for m in gen.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
    gen.train()
    with torch.no_grad():
        for _ in range(batches):
            gen(torch.randn(batch_size, gen.cfg.latent_dim, generator=g))
    gen.eval()
    last = gen.ups[-2]
    with torch.no_grad():
        z = torch.randn(batch_size, gen.cfg.latent_dim, generator=g)
        pre = last(gen.ups[:-2](torch.relu(gen.bn0(gen.fc(z).view(batch_size, -1, 4, 4)))))
        mean, std = pre.mean(dim=(0, 2, 3)), pre.std(dim=(0, 2, 3)).clamp_min(1e-6)
        scale = contrast / std  # each colour channel centred, with the same spread
        last.weight.mul_(scale[None, :, None, None])
        last.bias.copy_((last.bias - mean) * scale)
        # pull the channels towards their mean: muted colours, like a photographic sky survey
        mix = (1 - desaturate) * torch.eye(3) + desaturate / 3 * torch.ones(3, 3)
        last.weight.copy_(torch.einsum("oc,ickl->iokl", mix, last.weight))
        last.bias.copy_(mix @ last.bias)


def smooth_init(gen: Generator, detail: float = 0.03) -> None:
    """An untrained initialisation that makes cloud-like pictures instead of pixel noise.

    Each transposed convolution becomes a bilinear 2x upsampling (kernel outer([1,3,3,1]/4))
    times a random channel mix, plus `detail` of random kernel: structure at every scale, the
    large scales set by the latent. Uses the global torch RNG (seed it first).
    """
    k1 = torch.tensor([0.25, 0.75, 0.75, 0.25])
    kernel = torch.outer(k1, k1)
    with torch.no_grad():
        for m in gen.modules():
            if isinstance(m, nn.ConvTranspose2d):
                cin, cout = m.weight.shape[:2]
                mix = torch.randn(cin, cout) / cin ** 0.5
                m.weight.copy_(mix[:, :, None, None] * kernel + detail * torch.randn_like(m.weight) / cin ** 0.5)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, m.weight.shape[1] ** -0.5)


def make_default_image_model(folder: str | Path, seed: int = 0, cfg: GeneratorConfig | None = None) -> Path:
    """Write the UNTRAINED default: fixed-seed smooth initialisation, batch norm calibrated on noise.

    Same seed → same bytes. Trained defaults (from `make models`) replace it.
    """
    cfg = cfg or GeneratorConfig()
    torch.manual_seed(seed)
    gen = Generator(cfg)
    smooth_init(gen)
    calibrate(gen, seed, contrast=0.8, desaturate=0.8)
    card = {"description": "UNTRAINED default image generator: random initialisation (smooth upsampling "
                           f"kernels, channel mixes from seed {seed}), batch norm calibrated on random latents. "
                           "It makes abstract colour clouds, not pictures learned from data; train one on "
                           "your photos to replace it.",
            "trained": False, "seed": seed, "steps": 0, "dataset": "none",
            "made_by": "engine.visual.model.make_default_image_model"}
    return export_image_model(gen, folder, card)


def benchmark(model: ImageModel, n: int = 30) -> float:
    """Median milliseconds per 1-image forward pass on the calling thread."""
    z = torch.randn(1, model.latent_dim)
    model.generate(z)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        model.generate(z)
        times.append(time.perf_counter() - t0)
    times.sort()
    return 1000.0 * times[len(times) // 2]


__all__ = ["GeneratorConfig", "Generator", "ImageModel", "export_image_model", "load_image_model",
           "make_default_image_model", "fold_batchnorm", "compile_generator", "RESOLUTIONS"]


if __name__ == "__main__":  # python -m engine.visual.model [FOLDER]: rebuild the untrained default
    import sys

    print(make_default_image_model(sys.argv[1] if len(sys.argv) > 1 else "models/image-default"))
