"""The image generator: resize-then-convolve upsampling for 64, 128 or 256 px, fast on a laptop CPU.

Public API (imported by the training stage and the GAN worker; stable):

- `GeneratorConfig(resolution=256, latent_dim=128, channels=256, min_channels=8, norm="batch",
  sle=True)` — frozen.
- `Generator(cfg)` — `forward(z: (B, latent_dim) float32) -> (B, 3, R, R)` in [-1, 1].
  A linear layer makes a 4x4 map with `channels` channels; each step doubles the size with a
  bilinear 2x resize followed by a 3x3 convolution, halving the channels (never below
  `min_channels`), with batch norm (or pixel norm) and LeakyReLU 0.2 after each convolution; a
  last resize and 3x3 convolution make the RGB image, `tanh` at the end. Resizing before
  convolving gives every output pixel the same number of kernel taps, so the generator has no
  stride lattice (the checkerboard of transposed convolutions, Odena et al. 2016). With `sle`,
  two skip-layer excitations (Liu et al. 2021) let the 4x4 and 8x8 maps gate the channels of
  the two finest maps: the coarse layout steers the texture. The 256 px default has 1.0 M
  parameters and 0.11 G multiply-adds per image (about 8 ms eagerly on one laptop core).
- `export_image_model(generator, folder, card_extra, snapshots=(), directions=None)` — weights
  (safetensors) + `card.toml`; optional learning snapshots (engine/learning.py: float16) and
  latent knob directions.
- `load_image_model(folder, compile=False) -> ImageModel` — an eval-mode generator with its batch
  norm folded into the convolutions (so one image never depends on another), its `latent_dim`,
  `resolution`, `card`, knob `directions` and learning axis; `ImageModel.generate(z)` runs it
  without autograd, `ImageModel.set_learning(x)` moves it along its training. Any problem raises
  `engine.errors.ModelError` naming the file.
- `latent_directions(generator, count, seed)` — the generator's principal latent directions.
- `make_default_image_model(folder, seed=0)` — writes the untrained fixed-seed default model.

Latents are standard Gaussian vectors. The generator runs on whichever thread calls it (the GAN
worker process at run time); it holds no state between calls.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import learning
from ..errors import ModelError
from ..modelio import CARD, WEIGHTS, card_value, load_model, save_model

log = logging.getLogger(__name__)

RESOLUTIONS = (64, 128, 256)
NORMS = ("batch", "pixel")
ARCHITECTURE = "resize-conv-sle-v2"
LEGACY_ARCHITECTURE = "dcgan-convtranspose-v1"  # the earlier transposed-convolution generator: still plays
DIRECTIONS = "knobs.directions"   # (K, latent_dim) float32: unit latent directions, most important first
KNOB_SIGMA = "knobs.sigma"        # (K,) float32: standard deviation of the latent along each direction


@dataclass(frozen=True)
class GeneratorConfig:
    """Shape of a generator. `channels` is the width of the 4x4 map; each doubling halves it.
    `norm`: "batch" (folded away at load) or "pixel" (per-pixel feature normalisation, Karras et
    al. 2018). `sle`: skip-layer excitation from the 4x4/8x8 maps to the two finest maps."""

    resolution: int = 256
    latent_dim: int = 128
    channels: int = 256
    min_channels: int = 8
    norm: str = "batch"
    sle: bool = True

    def __post_init__(self) -> None:
        if self.resolution not in RESOLUTIONS:
            raise ValueError(f"resolution: expected one of {RESOLUTIONS}, got {self.resolution}")
        if self.latent_dim < 1 or self.channels < 1 or self.min_channels < 1:
            raise ValueError("latent_dim, channels and min_channels must be positive")
        if self.norm not in NORMS:
            raise ValueError(f"norm: expected one of {NORMS}, got {self.norm!r}")

    @property
    def steps(self) -> int:
        """Number of size doublings from 4x4 to the resolution."""
        return int(math.log2(self.resolution // 4))

    def widths(self) -> list[int]:
        """Channels of each feature map, from the 4x4 map to the last one before RGB (at R/2)."""
        return [max(self.min_channels, self.channels >> i) for i in range(self.steps)]

    def excitations(self) -> list[tuple[int, int]]:
        """(source map, target map) index pairs of the skip-layer excitations (maps as in
        `widths`): the 4x4 map gates the second-finest map, the 8x8 map the finest one."""
        n = self.steps
        if not self.sle or n < 4:
            return []
        return [(0, n - 2), (1, n - 1)]


class PixelNorm(nn.Module):
    """Each pixel's feature vector scaled to unit mean square: (B, C, H, W) → (B, C, H, W)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


def _norm(kind: str, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if kind == "batch" else PixelNorm()


class UpBlock(nn.Module):
    """(B, Cin, S, S) → (B, Cout, 2S, 2S): bilinear 2x resize, 3x3 conv, norm, LeakyReLU 0.2."""

    def __init__(self, cin: int, cout: int, norm: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, 1, 1, bias=norm != "batch", padding_mode="replicate")
        self.norm = _norm(norm, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)  # (B, Cin, 2S, 2S)
        return F.leaky_relu(self.norm(self.conv(x)), 0.2)  # (B, Cout, 2S, 2S)


class Excitation(nn.Module):
    """Skip-layer excitation (Liu et al. 2021): a coarse map (B, Cs, s, s) → channel gates
    (B, Ct, 1, 1) in (0, 1) for a fine map: pool to 4x4, 4x4 conv, SiLU, 1x1 conv, sigmoid."""

    def __init__(self, cs: int, ct: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cs, ct, 4, 1, 0)
        self.conv2 = nn.Conv2d(ct, ct, 1)

    def forward(self, coarse: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(coarse, 4)  # (B, Cs, 4, 4)
        return torch.sigmoid(self.conv2(F.silu(self.conv1(x))))  # (B, Ct, 1, 1)


class Generator(nn.Module):
    """Resize-convolution generator: (B, latent_dim) → (B, 3, R, R) in [-1, 1]."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        widths = cfg.widths()
        self.fc = nn.Linear(cfg.latent_dim, widths[0] * 16, bias=cfg.norm != "batch")
        self.norm0 = _norm(cfg.norm, widths[0])
        self.blocks = nn.ModuleList(UpBlock(cin, cout, cfg.norm) for cin, cout in zip(widths[:-1], widths[1:]))
        self.excite = nn.ModuleList(Excitation(widths[s], widths[t]) for s, t in cfg.excitations())
        self.to_rgb = nn.Conv2d(widths[-1], 3, 3, 1, 1, padding_mode="replicate")
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Weights N(0, 0.02) as in DCGAN (Kaiming for the excitations), batch norm scale N(1, 0.02)."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)
        for module in self.excite:
            e = cast(Excitation, module)
            nn.init.kaiming_normal_(e.conv1.weight, a=0.0)
            nn.init.kaiming_normal_(e.conv2.weight, a=0.0)

    def features(self, z: torch.Tensor) -> list[torch.Tensor]:
        """The feature maps (B, widths[i], 4·2^i, 4·2^i) for a latent batch (B, latent_dim)."""
        x = self.fc(z).view(z.shape[0], -1, 4, 4)  # (B, C0, 4, 4)
        x = F.leaky_relu(self.norm0(x), 0.2)
        feats = [x]
        gates = {t: (s, e) for (s, t), e in zip(self.cfg.excitations(), self.excite)}
        for i, block in enumerate(self.blocks, start=1):
            x = block(x)  # (B, Ci, 4·2^i, 4·2^i)
            if i in gates:
                s, e = gates[i]
                x = x * e(feats[s])
            feats.append(x)
        return feats

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.features(z)[-1]  # (B, C, R/2, R/2)
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)  # (B, C, R, R)
        return torch.tanh(self.to_rgb(x))  # (B, 3, R, R)


# --- batch-norm folding -------------------------------------------------------------------------

def _bn_affine(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) of an eval-mode batch norm: y = x · scale + shift per channel."""
    if not isinstance(bn, nn.BatchNorm2d) or bn.running_var is None or bn.running_mean is None:
        raise ModelError(f"cannot fold {type(bn).__name__}: a batch norm with running statistics was expected")
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


@torch.no_grad()
def folded_tensors(gen: Generator) -> dict[str, torch.Tensor]:
    """The weights of `gen` with eval-mode batch norm folded into the layer before each norm,
    keyed like the folded generator's state dict (`fold_batchnorm`). Other weights are shared."""
    state = gen.state_dict()
    if not isinstance(gen.norm0, nn.BatchNorm2d):
        return dict(state)
    out = {k: v for k, v in state.items() if not (k.startswith("norm0.") or ".norm." in k)}
    scale, shift = _bn_affine(gen.norm0)
    c = scale.numel()
    out["fc.weight"] = (gen.fc.weight.view(c, 16, -1) * scale[:, None, None]).reshape(c * 16, -1)
    out["fc.bias"] = shift.repeat_interleave(16)
    for i, module in enumerate(gen.blocks):
        block = cast(UpBlock, module)
        scale, shift = _bn_affine(block.norm)
        out[f"blocks.{i}.conv.weight"] = block.conv.weight * scale[:, None, None, None]
        out[f"blocks.{i}.conv.bias"] = shift
    return out


@torch.no_grad()
def fold_batchnorm(gen: Generator) -> Generator:
    """Fold eval-mode batch norm into the preceding layers (in place); returns the generator.

    After folding each image depends only on its own latent, and inference skips the norm.
    A generator with pixel norm is returned as it is (it has nothing to fold).
    """
    gen.eval()
    if not isinstance(gen.norm0, nn.BatchNorm2d):
        return gen
    tensors = folded_tensors(gen)
    gen.fc = nn.Linear(gen.fc.in_features, gen.fc.out_features)
    gen.norm0 = nn.Identity()
    for module in gen.blocks:
        block = cast(UpBlock, module)
        conv = block.conv
        block.conv = nn.Conv2d(conv.in_channels, conv.out_channels, 3, 1, 1, padding_mode=conv.padding_mode)
        block.norm = nn.Identity()
    gen.load_state_dict(tensors)
    return gen


# --- loaded models ------------------------------------------------------------------------------

@dataclass
class ImageModel:
    """A loaded generator ready for inference, called by the GAN worker process's one thread.

    `directions` (K, latent_dim) float32 or None: the latent knob directions (most important
    first) that `image/offset` moves along, one standard deviation per unit. `learning_steps`:
    training steps of the learning snapshots (empty: no learning axis)."""

    generator: nn.Module
    latent_dim: int
    resolution: int
    card: dict[str, Any]
    folder: Path
    compiled: bool = False
    directions: np.ndarray | None = None
    learning_steps: list[int] = field(default_factory=list)
    _morph: learning.WeightMorph | None = None

    @property
    def has_learning(self) -> bool:
        return self._morph is not None and self._morph.available

    @property
    def learning(self) -> float:
        """Where along its training the generator is (1 = the exported weights, also before any move)."""
        value = self._morph.value if self._morph is not None else 1.0
        return 1.0 if value != value else value

    def set_learning(self, value: float) -> bool:
        """Move the generator to `value` along its training (0 = untrained, 1 = the exported
        weights), in place; returns True when the weights changed. A model without learning
        snapshots ignores it. Costs one interpolation of the (batch-norm folded) weights."""
        return self._morph is not None and self._morph.set(value)

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim) float32 → (B, 3, R, R) float32 in [-1, 1]."""
        with torch.inference_mode():
            return self.generator(z)

    def to_uint8(self, z: torch.Tensor) -> torch.Tensor:
        """(latent_dim,) or (1, latent_dim) → (R, R, 3) uint8 image (HWC, for textures)."""
        img = self.generate(z.reshape(1, self.latent_dim))[0]
        return ((img.permute(1, 2, 0) + 1.0) * 127.5).clamp_(0, 255).to(torch.uint8)


def _state(gen: Generator) -> dict[str, torch.Tensor]:
    return {k: v for k, v in gen.state_dict().items() if not k.endswith("num_batches_tracked")}


def export_image_model(generator: Generator, folder: str | Path, card_extra: Mapping[str, Any] | None = None,
                       snapshots: Sequence[tuple[int, float, Mapping[str, torch.Tensor]]] = (),
                       directions: tuple[np.ndarray, np.ndarray] | None = None) -> Path:
    """Write `generator` (unfolded, with batch-norm statistics) and its card into `folder`.

    `snapshots`: the learning axis, (step, seconds, generator state dict with its standing
    batch-norm statistics) oldest first, the last one standing for `generator` itself (its weights
    are not stored again); stored as float16, batch norm folded (engine/learning.py).
    `directions`: (unit directions (K, latent_dim), their standard deviations (K,)) for the
    latent knobs. `card_extra` adds entries such as `trained`, `steps`, `dataset`, `description`;
    it cannot override the architecture keys. Written atomically (a crash leaves the old model whole).
    """
    cfg = generator.cfg
    card: dict[str, Any] = {"kind": "image", "description": "", "trained": False}
    card.update(dict(card_extra or {}))
    card.update({"architecture": ARCHITECTURE, "resolution": cfg.resolution, "latent_dim": cfg.latent_dim,
                 "channels": cfg.channels, "min_channels": cfg.min_channels, "norm": cfg.norm, "sle": cfg.sle,
                 "parameters": sum(p.numel() for p in generator.parameters())})
    tensors = _state(generator)
    if len(snapshots) >= 2:
        # the snapshots are stored with batch norm folded in: the runtime moves the folded weights,
        # whose interpolation changes the pictures evenly (raw weights and statistics do not)
        folded = []
        for _, _, state in snapshots[:-1]:
            gen = Generator(cfg)
            gen.load_state_dict(dict(state), strict=False)
            folded.append(folded_tensors(gen.eval()))
        final = folded_tensors(copy.deepcopy(generator).eval())
        tensors.update(learning.pack(folded + [final], list(final)))
        card["learning"] = {"steps": [int(s[0]) for s in snapshots], "seconds": [round(float(s[1]), 3) for s in snapshots]}
    else:
        card.pop("learning", None)
    if directions is not None:
        vecs, sigma = directions
        tensors[DIRECTIONS] = torch.as_tensor(np.asarray(vecs, np.float32))
        tensors[KNOB_SIGMA] = torch.as_tensor(np.asarray(sigma, np.float32))
    return save_model(folder, tensors, card)


def load_image_model(folder: str | Path, compile: bool = False) -> ImageModel:
    """Load a model folder into an eval-mode, batch-norm-folded generator.

    With `compile`, tries `torch.compile` and falls back to eager (logged) if compiling fails.
    Raises ModelError naming the file for any problem.
    """
    folder = Path(folder)
    tensors, card = load_model(folder, "image")
    source = str(folder / CARD)
    arch = card_value(card, "architecture", str, source)
    if arch == LEGACY_ARCHITECTURE:
        return _load_legacy(folder, tensors, card, compile)
    if arch != ARCHITECTURE:
        raise ModelError(f"{source}: architecture: expected {ARCHITECTURE!r}, got {arch!r}")
    try:
        cfg = GeneratorConfig(resolution=card_value(card, "resolution", int, source),
                              latent_dim=card_value(card, "latent_dim", int, source),
                              channels=card_value(card, "channels", int, source),
                              min_channels=card_value(card, "min_channels", int, source),
                              norm=card_value(card, "norm", str, source),
                              sle=card_value(card, "sle", bool, source))
    except ValueError as exc:
        raise ModelError(f"{source}: {exc}") from None
    gen = Generator(cfg)
    expected = set(_state(gen))
    knob_keys = {DIRECTIONS, KNOB_SIGMA} & set(tensors)
    stored = learning.stored_keys(tensors)
    weights = {k: v for k, v in tensors.items() if k not in stored and k not in knob_keys}
    if set(weights) != expected:
        missing, extra = sorted(expected - set(weights)), sorted(set(weights) - expected)
        raise ModelError(f"{folder / WEIGHTS}: tensors do not match the card (missing {missing[:3]}, unexpected {extra[:3]})")
    try:
        gen.load_state_dict(weights, strict=False)
    except RuntimeError as exc:
        raise ModelError(f"{folder / WEIGHTS}: tensor shapes do not match the card ({str(exc).splitlines()[-1].strip()})") from None
    if not all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point()):
        raise ModelError(f"{folder / WEIGHTS}: weights contain NaN or infinity")
    directions = _read_directions(tensors, knob_keys, cfg.latent_dim, str(folder / WEIGHTS))
    steps = learning.card_steps(card, source)
    fold_batchnorm(gen)
    snaps = learning.unpack(tensors, gen.state_dict(), len(steps), str(folder / WEIGHTS)) if steps else []
    model = ImageModel(gen, cfg.latent_dim, cfg.resolution, dict(card), folder, directions=directions,
                       learning_steps=steps if snaps else [])
    if snaps:
        model._morph = learning.WeightMorph(gen, snaps)
    for p in model.generator.parameters():
        p.requires_grad_(False)
    if compile:
        # weights baked in as constants would not follow the learning knob
        model.generator, model.compiled = compile_generator(model.generator, cfg.latent_dim, freeze=not snaps)
    return model


class LegacyGenerator(nn.Module):
    """The earlier DCGAN generator (4x4 stride-2 transposed convolutions, batch norm), kept so
    that models made before the resize-convolution generator still play (without a learning
    axis or knob directions). Its stride lattice shows as a regular grid of dots: retrain."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        widths = cfg.widths()
        self.fc = nn.Linear(cfg.latent_dim, widths[0] * 16, bias=False)
        self.bn0: nn.Module = nn.BatchNorm2d(widths[0])
        ups: list[nn.Module] = []
        for cin, cout in zip(widths[:-1], widths[1:]):
            ups += [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
        ups += [nn.ConvTranspose2d(widths[-1], 3, 4, 2, 1), nn.Tanh()]
        self.ups = nn.Sequential(*ups)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn0(self.fc(z).view(z.shape[0], -1, 4, 4)))  # (B, C0, 4, 4)
        return self.ups(x)  # (B, 3, R, R)


@torch.no_grad()
def _load_legacy(folder: Path, tensors: Mapping[str, torch.Tensor], card: Mapping[str, Any], compile: bool) -> ImageModel:
    source = str(folder / CARD)
    try:
        cfg = GeneratorConfig(resolution=card_value(card, "resolution", int, source),
                              latent_dim=card_value(card, "latent_dim", int, source),
                              channels=card_value(card, "channels", int, source),
                              min_channels=card_value(card, "min_channels", int, source))
    except ValueError as exc:
        raise ModelError(f"{source}: {exc}") from None
    gen = LegacyGenerator(cfg)
    try:
        gen.load_state_dict(dict(tensors), strict=False)
    except RuntimeError as exc:
        raise ModelError(f"{folder / WEIGHTS}: tensor shapes do not match the card ({str(exc).splitlines()[-1].strip()})") from None
    missing = {k for k in gen.state_dict() if not k.endswith("num_batches_tracked")} - set(tensors)
    if missing:
        raise ModelError(f"{folder / WEIGHTS}: tensors do not match the card (missing {sorted(missing)[:3]})")
    gen.eval()
    layers = list(gen.ups)
    scale, shift = _bn_affine(gen.bn0)
    c = scale.numel()
    fc = nn.Linear(cfg.latent_dim, c * 16)
    fc.weight.copy_((gen.fc.weight.view(c, 16, -1) * scale[:, None, None]).reshape(c * 16, -1))
    fc.bias.copy_(shift.repeat_interleave(16))
    gen.fc, gen.bn0 = fc, nn.Identity()
    for i, m in enumerate(layers):
        if isinstance(m, nn.BatchNorm2d):
            scale, shift = _bn_affine(m)
            conv = cast(nn.ConvTranspose2d, layers[i - 1])
            conv.weight.mul_(scale[None, :, None, None])
            conv.bias = nn.Parameter(shift.clone())
            layers[i] = nn.Identity()
    gen.ups = nn.Sequential(*layers)
    for p in gen.parameters():
        p.requires_grad_(False)
    log.warning("%s: %s is the earlier transposed-convolution generator (a grid of dots shows in its pictures); "
                "retrain it with `ciel train image`", source, LEGACY_ARCHITECTURE)
    model = ImageModel(gen, cfg.latent_dim, cfg.resolution, dict(card), folder)
    if compile:
        model.generator, model.compiled = compile_generator(gen, cfg.latent_dim)
    return model


def _read_directions(tensors: Mapping[str, torch.Tensor], keys: set[str], latent_dim: int,
                     source: str) -> np.ndarray | None:
    """(K, latent_dim) latent steps of one standard deviation along each knob direction, or None."""
    if not keys:
        return None
    if keys != {DIRECTIONS, KNOB_SIGMA}:
        raise ModelError(f"{source}: tensors {DIRECTIONS!r} and {KNOB_SIGMA!r} come together (found only {sorted(keys)})")
    vecs, sigma = tensors[DIRECTIONS].float().numpy(), tensors[KNOB_SIGMA].float().numpy()
    if vecs.ndim != 2 or vecs.shape[1] != latent_dim or sigma.shape != (vecs.shape[0],):
        raise ModelError(f"{source}: tensor {DIRECTIONS!r}: expected shape (K, {latent_dim}) with {KNOB_SIGMA!r} (K,), "
                         f"got {tuple(vecs.shape)} and {tuple(sigma.shape)}")
    if not (np.isfinite(vecs).all() and np.isfinite(sigma).all()):
        raise ModelError(f"{source}: tensor {DIRECTIONS!r} holds NaN or infinite values")
    return (vecs * sigma[:, None]).astype(np.float32)


def compile_generator(gen: nn.Module, latent_dim: int, freeze: bool = True) -> tuple[nn.Module, bool]:
    """`torch.compile` (with inductor freezing when `freeze`: faster, but the weights become
    constants, so a generator moved by the learning knob compiles without it); eager on failure."""
    try:
        compiled = torch.compile(gen, dynamic=False, options={"freezing": freeze})
        with torch.inference_mode():
            compiled(torch.zeros(1, latent_dim))
        return cast(nn.Module, compiled), True
    except Exception as exc:  # noqa: BLE001 — inductor raises many kinds (no compiler, unsupported op): eager still works
        log.warning("torch.compile failed, using the eager generator: %s", str(exc).splitlines()[0][:200])
        return gen, False


# --- knob directions ----------------------------------------------------------------------------

@torch.no_grad()
def latent_directions(gen: nn.Module, latent_dim: int, count: int, seed: int = 0, samples: int = 1024,
                      size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Principal directions of what the generator draws, as latent directions (GANSpace, Härkönen
    et al. 2020): PCA of `samples` generated images at `size` px, each component's scores
    regressed back onto the latent by least squares. Returns (unit directions (count, latent_dim),
    standard deviation of the Gaussian latent along each (count,)), most variance first; signs
    chosen so that moving along a direction brightens the picture on average.
    `gen` maps (B, latent_dim) → (B, 3, R, R) in eval mode (one image never depends on another)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(samples, latent_dim, generator=g)  # (N, D)
    imgs = torch.cat([F.interpolate(gen(z[i:i + 64]), size=(size, size), mode="area")
                      for i in range(0, samples, 64)])  # (N, 3, s, s)
    x = imgs.flatten(1).double()
    x = x - x.mean(0)
    _, _, vt = torch.linalg.svd(x, full_matrices=False)
    k = min(count, vt.shape[0], latent_dim)
    scores = x @ vt[:k].T  # (N, k) image-space principal scores
    zd = z.double()
    coef = torch.linalg.lstsq(zd, scores).solution.T  # (k, D): latent direction of each component
    coef = coef / coef.norm(dim=1, keepdim=True).clamp_min(1e-12)
    bright = (vt[:k].sum(dim=1) < 0)  # component loading mostly negative: flip so + brightens
    coef[bright] *= -1
    sigma = (zd @ coef.T).std(dim=0)
    return coef.float().numpy(), sigma.float().numpy()


# --- the untrained default ----------------------------------------------------------------------

@torch.no_grad()
def calibrate(gen: Generator, seed: int, batches: int = 8, batch_size: int = 32, contrast: float = 0.8,
              desaturate: float = 0.0) -> None:
    """Set batch-norm statistics from random latents (no data), then centre each colour channel of
    the RGB layer and scale it to a pre-tanh standard deviation of `contrast`; `desaturate` (0..1)
    mixes the colour channels towards their mean."""
    g = torch.Generator().manual_seed(seed)
    for m in gen.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
    gen.train()
    for _ in range(batches):
        gen(torch.randn(batch_size, gen.cfg.latent_dim, generator=g))
    gen.eval()
    last = gen.to_rgb
    z = torch.randn(batch_size, gen.cfg.latent_dim, generator=g)
    x = F.interpolate(gen.features(z)[-1], scale_factor=2.0, mode="bilinear", align_corners=False)
    pre = last(x)  # (B, 3, R, R) before tanh
    mean, std = pre.mean(dim=(0, 2, 3)), pre.std(dim=(0, 2, 3)).clamp_min(1e-6)
    scale = contrast / std  # each colour channel centred, with the same spread
    bias = last.bias
    if bias is None:
        raise ModelError("the generator's RGB layer has no bias to calibrate")
    last.weight.mul_(scale[:, None, None, None])
    bias.copy_((bias - mean) * scale)
    # pull the channels towards their mean: muted colours, like a photographic sky survey
    mix = (1 - desaturate) * torch.eye(3) + desaturate / 3 * torch.ones(3, 3)
    last.weight.copy_(torch.einsum("oc,cikl->oikl", mix, last.weight))
    bias.copy_(mix @ bias)


@torch.no_grad()
def smooth_init(gen: Generator, detail: float = 0.05) -> None:
    """An untrained initialisation that makes cloud-like pictures instead of pixel noise: each 3x3
    convolution becomes a random channel mix of a blur kernel (outer([1,2,1]/4)) plus `detail` of
    random kernel, so the latent sets the large scales. Uses the global torch RNG (seed it first)."""
    k1 = torch.tensor([0.25, 0.5, 0.25])
    kernel = torch.outer(k1, k1)
    for m in gen.modules():
        if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3):
            cout, cin = m.weight.shape[:2]
            mix = torch.randn(cout, cin) / cin ** 0.5
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
    card = {"description": "UNTRAINED default image generator: random initialisation (smooth 3x3 kernels, "
                           f"channel mixes from seed {seed}), batch norm calibrated on random latents. "
                           "It makes abstract colour clouds, not pictures learned from data; train one on "
                           "your photos to replace it.",
            "trained": False, "seed": seed, "steps": 0, "dataset": "none",
            "made_by": "engine.visual.model.make_default_image_model"}
    folded = fold_batchnorm(copy.deepcopy(gen))
    directions = latent_directions(folded, cfg.latent_dim, 8, seed, samples=256)
    return export_image_model(gen, folder, card, directions=directions)


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
           "make_default_image_model", "fold_batchnorm", "folded_tensors", "compile_generator",
           "latent_directions", "RESOLUTIONS", "ARCHITECTURE"]


if __name__ == "__main__":  # python -m engine.visual.model [FOLDER]: rebuild the untrained default
    import sys

    print(make_default_image_model(sys.argv[1] if len(sys.argv) > 1 else "models/image-default"))
