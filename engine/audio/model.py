"""The audio model: a small waveform VAE at 16 kHz with a causal, stateful decoder.

Public API (stable; the trainer and the runtime build on it):

    AudioModelConfig                         frozen dataclass: rates, widths, strides
    AudioVAE(cfg)                            torch module
        .encode(x)  -> (mu, logvar)          x (B, 1, L) audio in [-1, 1]; L is padded to a multiple
                                             of cfg.hop; mu, logvar (B, D, L // hop). Non-causal,
                                             offline only.
        .decode(z, classes=None) -> audio    z (B, D, T) -> (B, 1, T * hop), causal.
        .forward(x, classes=None) -> (recon, mu, logvar)   sampled z in training mode, z = mu in eval mode.
        .streaming(batch=1) -> StreamingDecoder
    StreamingDecoder(decoder, batch)         call with z (B, D, T) blocks (and classes (B,)); returns
                                             (B, 1, T * hop) equal to the offline decode of the
                                             concatenated blocks (each causal conv keeps its left context).
    export_audio_model(vae, folder, card_extra, latents_for_pca, clips=None, snapshots=None,
                       clip_levels=None, classes=None) -> Path
    load_audio_model(path, trust=False) -> AudioModel   a model folder, or a TorchScript file (RAVE /
                                             nn~ export, engine/audio/scripted.py) when trusted;
                                             raises engine.errors.ModelError naming the file
    class_lines(card) -> list[str]           a card's classes as a person reads them
    make_default_audio_model(folder, seed=0) -> Path   untrained, fixed-seed default

Shapes and units: audio is float32 in [-1, 1] at `sample_rate` Hz (16 kHz by default); the latent
runs at sample_rate / hop frames per second (hop 64: 250 Hz, a 4 ms decode granularity).

Conditioning by content: with `AudioModelConfig.classes` > 0 the decoder holds a class embedding
(classes, class_dim) and a projection of it into one bias per stage (the input of the residual
units at each width). `classes` (B,) are integer class indices (training) or float class values
(`audio/class`: a fraction blends the two neighbouring embeddings); None plays class 0. The
card lists the classes (`[[classes]]`: index, name, clips, minutes). Cards without `classes`
load as unconditioned models.

Knob coordinates: performers move latents in "sigma" units along principal components of the
training latents, most important first. `export_audio_model` stores the PCA (mean, components,
scale) in the model file; `AudioModel.knobs_to_latent(u)` maps knob coordinates u (..., D) to the
decoder's latent z = mean + (u * scale) @ components. Without latents (an untrained model) the map
is the identity and the knobs are the prior N(0, I).

Cost: the decoder is causal convolutions at falling widths as the rate rises (128 channels at the
latent rate, 8 at the audio rate) with kernel = stride transposed convolutions for upsampling
(no overlap, so upsampling needs no state). About 0.22 M decoder parameters (0.45 M with the
encoder); 1 s decodes in about 10 ms on one core. Which thread calls what: training calls
everything on its own thread; the audio process calls only the streaming decoder, from its decode
loop (never from the sound callback).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import learning
from ..configio import build, to_table
from ..errors import ConfigError, ModelError
from ..modelio import CARD, WEIGHTS, card_value, load_model, save_model
from ..params import AUDIO_LATENT_DIMS
from .config import not_a_model_line
from .scripted import ScriptedModel, is_scripted, load_scripted

ARCH = "ciel-wavevae-1"
MAX_CLASSES = 16   # audio/class reaches classes 0 … 15


@dataclass(frozen=True)
class AudioModelConfig:
    """Architecture of an AudioVAE. `channels[0]` is the width at the latent rate, `channels[-1]`
    at the audio rate; `strides` are the upsampling factors between them (hop = their product)."""

    sample_rate: int = 16000
    latent_dim: int = AUDIO_LATENT_DIMS
    channels: tuple[int, ...] = (128, 64, 32, 8)
    strides: tuple[int, ...] = (4, 4, 4)
    kernel: int = 3
    dilations: tuple[int, ...] = (1, 3)
    leak: float = 0.2
    # Upsampling kernels span `overlap` strides, so latent frames cross-fade. 1 = kernel == stride
    # (no state, hard frame edges: fine untrained, a buzz at the frame rate once trained);
    # `ciel train audio` uses 2.
    overlap: int = 1
    # "transposed": kernel = overlap · stride transposed convolutions (every frame stamps a learned
    # pattern: a drone at the frame rate until training wears it down); "nearest": repeat each
    # step `stride` times, then a causal conv of kernel 2·stride + 1 (resize-convolution: nothing
    # repeats per frame by construction).
    upsample: str = "transposed"
    # Global conditioning by content: `classes` learned embeddings of `class_dim` values, projected
    # into a bias at the input of every stage of the decoder (0 = an unconditioned decoder).
    classes: int = 0
    class_dim: int = 8

    def __post_init__(self) -> None:
        if len(self.channels) != len(self.strides) + 1:
            raise ValueError(f"channels needs {len(self.strides) + 1} widths for {len(self.strides)} strides")
        if any(s < 1 for s in self.strides) or any(c < 1 for c in self.channels):
            raise ValueError("strides and channels must be positive")
        if self.kernel < 1 or any(d < 1 for d in self.dilations):
            raise ValueError("kernel and dilations must be positive")
        if self.overlap < 1:
            raise ValueError("overlap must be at least 1")
        if self.upsample not in ("transposed", "nearest"):
            raise ValueError(f"upsample must be 'transposed' or 'nearest', got {self.upsample!r}")
        if not 0 <= self.classes <= MAX_CLASSES:
            raise ValueError(f"classes must be 0 (unconditioned) to {MAX_CLASSES}, got {self.classes}")
        if self.class_dim < 1:
            raise ValueError("class_dim must be positive")

    @property
    def hop(self) -> int:
        """Audio samples per latent frame."""
        return math.prod(self.strides)

    @property
    def frame_rate(self) -> float:
        """Latent frames per second."""
        return self.sample_rate / self.hop


# --- building blocks -------------------------------------------------------------------------

class StreamState:
    """Left contexts of every causal conv of one decoder, keyed by module (one per stream)."""

    def __init__(self) -> None:
        self.cache: dict[nn.Module, Tensor] = {}


class CausalConv1d(nn.Conv1d):
    """Conv1d padded on the left only: output t depends on inputs <= t. With a StreamState the
    left padding is the previous block's tail instead of zeros, so blocks equal the offline run."""

    def __init__(self, cin: int, cout: int, kernel: int, dilation: int = 1) -> None:
        super().__init__(cin, cout, kernel, dilation=dilation)
        self.context = (kernel - 1) * dilation

    def forward(self, x: Tensor, state: StreamState | None = None) -> Tensor:
        if self.context == 0:
            return super().forward(x)
        if state is None:
            return super().forward(F.pad(x, (self.context, 0)))
        prev = state.cache.get(self)
        if prev is None:
            prev = x.new_zeros(x.shape[0], x.shape[1], self.context)   # (B, C_in, context)
        x = torch.cat((prev, x), dim=-1)                                 # (B, C_in, context + T)
        state.cache[self] = x[..., -self.context:]
        return super().forward(x)                                        # (B, C_out, T)


class Upsample(nn.ConvTranspose1d):
    """Transposed conv with kernel = overlap * stride: each input step writes `overlap * stride`
    outputs, so neighbouring latent frames cross-fade instead of meeting at a hard edge (a
    kernel = stride upsampler leaves a buzz at the frame rate once trained).

    Causal: output sample p depends on input steps <= p // stride only. The part of the last
    step's stamp that falls beyond the block (`(overlap - 1) * stride` samples) is kept in the
    StreamState and added to the next block, so blocks equal the offline run; offline, it is
    dropped (the decode ends there). (B, C_in, T) -> (B, C_out, T * stride).
    """

    def __init__(self, cin: int, cout: int, stride: int, overlap: int) -> None:
        super().__init__(cin, cout, stride * overlap, stride=stride)
        self.step = stride
        self.tail = (overlap - 1) * stride

    def forward(self, x: Tensor, state: StreamState | None = None) -> Tensor:  # type: ignore[override]
        y = F.conv_transpose1d(x, self.weight, None, stride=self.step)  # (B, C_out, T·step + tail)
        n = x.shape[-1] * self.step
        main = y[..., :n]                                                  # (B, C_out, T·step)
        if self.tail and state is not None:
            prev = state.cache.get(self)
            if prev is not None:
                k = min(self.tail, n)
                main = torch.cat((main[..., :k] + prev[..., :k], main[..., k:]), dim=-1)
                carry = prev[..., k:]
            else:
                carry = None
            rest = y[..., n:]
            if carry is not None and carry.shape[-1]:
                rest = rest.clone()
                rest[..., :carry.shape[-1]] += carry
            state.cache[self] = rest
        assert self.bias is not None  # built with bias=True
        return main + self.bias[None, :, None]


class ResizeUp(nn.Module):
    """Resize-convolution: each step repeated `stride` times, then a causal conv of kernel
    2·stride + 1. Causal and stateless apart from the conv's left context.
    (B, C_in, T) -> (B, C_out, T * stride)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.step = stride
        self.conv = CausalConv1d(cin, cout, 2 * stride + 1)

    def forward(self, x: Tensor, state: StreamState | None = None) -> Tensor:
        return self.conv(torch.repeat_interleave(x, self.step, dim=-1), state)  # (B, C, T) → (B, C_out, T·step)


class ResUnit(nn.Module):
    """x + 1x1(act(dilated conv(act(x)))); causal when `causal`, centred otherwise."""

    def __init__(self, ch: int, kernel: int, dilation: int, leak: float, causal: bool) -> None:
        super().__init__()
        self.leak = leak
        if causal:
            self.conv: nn.Conv1d = CausalConv1d(ch, ch, kernel, dilation)
        else:
            self.conv = nn.Conv1d(ch, ch, kernel, dilation=dilation, padding=(kernel - 1) * dilation // 2)
        self.mix = nn.Conv1d(ch, ch, 1)

    def forward(self, x: Tensor, state: StreamState | None = None) -> Tensor:
        h = F.leaky_relu(x, self.leak)                                                     # (B, C, T)
        h = self.conv(h, state) if isinstance(self.conv, CausalConv1d) else self.conv(h)  # (B, C, T)
        return x + self.mix(F.leaky_relu(h, self.leak))                                    # (B, C, T)


class Decoder(nn.Module):
    """Causal decoder: z (B, D, T) -> audio (B, 1, T * hop) in [-1, 1] (tanh)."""

    def __init__(self, cfg: AudioModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ch = cfg.channels
        self.inp = CausalConv1d(cfg.latent_dim, ch[0], cfg.kernel)
        self.res = nn.ModuleList()
        self.ups = nn.ModuleList()
        self.res.append(nn.ModuleList(ResUnit(ch[0], cfg.kernel, d, cfg.leak, True) for d in cfg.dilations))
        for i, s in enumerate(cfg.strides):
            self.ups.append(ResizeUp(ch[i], ch[i + 1], s) if cfg.upsample == "nearest"
                            else Upsample(ch[i], ch[i + 1], s, cfg.overlap))
            self.res.append(nn.ModuleList(ResUnit(ch[i + 1], cfg.kernel, d, cfg.leak, True) for d in cfg.dilations))
        self.out = CausalConv1d(ch[-1], 1, 2 * cfg.kernel + 1)
        if cfg.classes:
            # global conditioning: a class embedding, projected into one bias per stage (the
            # input of the residual units at each width); zero at first, so training starts
            # from the unconditioned decoder and the untrained snapshot is the same for every class
            self.embed = nn.Embedding(cfg.classes, cfg.class_dim)
            self.cond = nn.Linear(cfg.class_dim, sum(ch))
            nn.init.zeros_(self.cond.weight)
            nn.init.zeros_(self.cond.bias)

    def class_vectors(self, classes: Tensor) -> Tensor:
        """Class embeddings (B, E) for classes (B,): integer indices, or float class values where a
        fraction blends the two neighbouring classes (0.5: halfway between classes 0 and 1),
        clamped to [0, classes - 1]."""
        if not classes.is_floating_point():
            return self.embed(classes.clamp(0, self.cfg.classes - 1))                # (B, E)
        c = classes.to(self.embed.weight.dtype).clamp(0.0, float(self.cfg.classes - 1))
        lo = c.floor().long()
        hi = (lo + 1).clamp_max(self.cfg.classes - 1)
        frac = (c - lo.to(c.dtype))[:, None]                                          # (B, 1)
        return self.embed.weight[lo] * (1.0 - frac) + self.embed.weight[hi] * frac    # (B, E)

    def class_biases(self, classes: Tensor | None, batch: int) -> list[Tensor]:
        """One bias (B, C_i, 1) per stage for the classes (B,) (None: class 0); [] when the
        decoder is unconditioned."""
        if not self.cfg.classes:
            return []
        if classes is None:
            classes = torch.zeros(batch, dtype=torch.long, device=self.cond.weight.device)
        b = self.cond(self.class_vectors(classes))                                   # (B, ΣC)
        return [part[:, :, None] for part in b.split(list(self.cfg.channels), dim=1)]  # (B, C_i, 1) each

    def forward(self, z: Tensor, state: StreamState | None = None, classes: Tensor | None = None) -> Tensor:
        """z (B, D, T) -> (B, 1, T·hop); classes (B,) for a conditioned decoder (see class_vectors;
        None: class 0), ignored by an unconditioned one."""
        bias = self.class_biases(classes, z.shape[0])
        x = self.inp(z, state)                                  # (B, D, T) → (B, C0, T)
        if bias:
            x = x + bias[0]                                     # (B, C0, T)
        for unit in cast(nn.ModuleList, self.res[0]):
            x = unit(x, state)
        for i, (up, units) in enumerate(zip(self.ups, self.res[1:])):
            x = up(F.leaky_relu(x, self.cfg.leak), state)       # (B, Ci, T·s1…si)
            if bias:
                x = x + bias[i + 1]                             # (B, Ci, T·s1…si)
            for unit in cast(nn.ModuleList, units):   # each stage's residual units
                x = unit(x, state)
        return torch.tanh(self.out(F.leaky_relu(x, self.cfg.leak), state))  # (B, 1, T·hop)


class Encoder(nn.Module):
    """Non-causal encoder: audio (B, 1, L) with L % hop == 0 -> (mu, logvar), each (B, D, L // hop)."""

    def __init__(self, cfg: AudioModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ch = cfg.channels
        k = 2 * cfg.kernel + 1
        self.inp = nn.Conv1d(1, ch[-1], k, padding=k // 2)
        self.res = nn.ModuleList()
        self.downs = nn.ModuleList()
        for i in reversed(range(len(cfg.strides))):
            self.res.append(nn.ModuleList(ResUnit(ch[i + 1], cfg.kernel, d, cfg.leak, False) for d in cfg.dilations))
            self.downs.append(nn.Conv1d(ch[i + 1], ch[i], cfg.strides[i], stride=cfg.strides[i]))
        self.top = nn.ModuleList(ResUnit(ch[0], cfg.kernel, d, cfg.leak, False) for d in cfg.dilations)
        self.head = nn.Conv1d(ch[0], 2 * cfg.latent_dim, cfg.kernel, padding=cfg.kernel // 2)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.inp(x)                                         # (B, 1, N) → (B, C0, N)
        for units, down in zip(self.res, self.downs):
            for unit in cast(nn.ModuleList, units):   # each stage's residual units
                h = unit(h)
            h = down(F.leaky_relu(h, self.cfg.leak))            # (B, Ci, N / (s1…si))
        for unit in self.top:
            h = unit(h)                                         # (B, C_top, N / hop)
        mu, logvar = self.head(F.leaky_relu(h, self.cfg.leak)).chunk(2, dim=1)  # (B, D, N / hop) each
        return mu, logvar.clamp(-12.0, 6.0)


class AudioVAE(nn.Module):
    """Waveform VAE: non-causal encoder, causal decoder (see the module docstring for shapes)."""

    def __init__(self, cfg: AudioModelConfig = AudioModelConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, 1, L) -> (mu, logvar), each (B, D, ceil(L / hop)); x is zero-padded at the end."""
        rest = (-x.shape[-1]) % self.cfg.hop
        if rest:
            x = F.pad(x, (0, rest))
        return self.encoder(x)

    def decode(self, z: Tensor, classes: Tensor | None = None) -> Tensor:
        """z (B, D, T) -> audio (B, 1, T * hop); classes (B,) for a conditioned decoder."""
        return self.decoder(z, None, classes)

    def forward(self, x: Tensor, classes: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, 1, L) -> (recon (B, 1, ceil(L/hop)*hop), mu, logvar); z is sampled while training.
        classes (B,): each window's class, for a conditioned decoder (the encoder never sees it)."""
        mu, logvar = self.encode(x)                             # (B, D, T) each
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu  # (B, D, T)
        return self.decode(z, classes), mu, logvar

    def streaming(self, batch: int = 1) -> StreamingDecoder:
        return StreamingDecoder(self.decoder, batch)


class StreamingDecoder:
    """Stateful block decoding: successive calls equal one offline decode of the whole latent.

    Called from the audio process's decode loop (one thread). `z` is (B, D, T) with any T >= 1.
    """

    def __init__(self, decoder: Decoder, batch: int = 1) -> None:
        self.decoder = decoder
        self.batch = batch
        self.hop = decoder.cfg.hop
        self.state = StreamState()

    def reset(self) -> None:
        """Forget the left context (the next block starts as from silence)."""
        self.state = StreamState()

    @torch.inference_mode()
    def __call__(self, z: Tensor, classes: Tensor | None = None) -> Tensor:
        """z (B, D, T) -> (B, 1, T · hop); classes (B,) for a conditioned decoder (None: class 0)."""
        return self.decoder(z, self.state, classes)


# --- model files -----------------------------------------------------------------------------

@dataclass(frozen=True)
class AudioModel:
    """A loaded audio model, ready for the runtime (eval mode, inference only).

    sample_rate (Hz), hop (samples per latent frame), latent_dim (D); pca_mean (D,), pca_components
    (D, D) with row i the i-th principal direction, pca_scale (D,) its standard deviation;
    clips: encoded clips in knob coordinates, a tuple of (T_i, D) float32 arrays (maybe empty);
    snapshots: the decoder's state dicts along its training (engine/learning.py), oldest first,
    the last one the final weights; empty when the model has no learning axis; clip_levels: the
    source level of each clip frame in dBFS, (T_i,) per clip (empty for older models);
    class_names: the classes of a conditioned decoder, by index (empty: unconditioned);
    script: a TorchScript model (RAVE / nn~ export) instead of ciel's own, with `vae` None, `cfg`
    carrying only its rate, hop (one stride) and latent size, and the identity for the PCA.
    """

    folder: Path
    cfg: AudioModelConfig
    vae: AudioVAE | None
    card: Mapping[str, Any]
    pca_mean: np.ndarray
    pca_components: np.ndarray
    pca_scale: np.ndarray
    clips: tuple[np.ndarray, ...]
    snapshots: tuple[dict[str, Tensor], ...] = ()
    clip_levels: tuple[np.ndarray, ...] = ()
    class_names: tuple[str, ...] = ()
    script: ScriptedModel | None = None

    @property
    def own(self) -> AudioVAE:
        """The VAE of a model in ciel's own format; ModelError for a TorchScript model."""
        if self.vae is None:
            raise ModelError(f"{self.folder}: a TorchScript model has no ciel VAE (this needs a model folder)")
        return self.vae

    @property
    def classes(self) -> int:
        """How many classes the decoder is conditioned on (0: unconditioned)."""
        return self.cfg.classes

    @property
    def sample_rate(self) -> int:
        return self.cfg.sample_rate

    @property
    def hop(self) -> int:
        return self.cfg.hop

    @property
    def latent_dim(self) -> int:
        return self.cfg.latent_dim

    @property
    def trained(self) -> bool:
        return bool(self.card.get("trained", False))

    def knobs_to_latent(self, u: np.ndarray) -> np.ndarray:
        """Knob coordinates (..., D) in sigma -> decoder latent (..., D)."""
        return (self.pca_mean + (u * self.pca_scale) @ self.pca_components).astype(np.float32)

    def latent_to_knobs(self, z: np.ndarray) -> np.ndarray:
        """Decoder latent (..., D) -> knob coordinates (..., D)."""
        return ((z - self.pca_mean) @ self.pca_components.T / self.pca_scale).astype(np.float32)

    def streaming_decoder(self, batch: int = 1) -> StreamingDecoder:
        """A fresh stateful decoder (one per output stream)."""
        return self.own.streaming(batch)

    @torch.inference_mode()
    def decode(self, z: np.ndarray, audio_class: float = 0.0) -> np.ndarray:
        """Offline decode: decoder latent (D, T) -> audio (T * hop,) float32; `audio_class` as
        `audio/class` (a conditioned decoder only)."""
        if self.script is not None:
            return self.script.decode(z)
        classes = torch.tensor([float(audio_class)])
        return self.own.decode(torch.from_numpy(np.ascontiguousarray(z, np.float32))[None], classes)[0, 0].numpy()


def _pca(latents: Tensor, dim: int) -> tuple[Tensor, Tensor, Tensor]:
    """Mean (D,), components (D, D) (rows, by falling variance) and scale (D,) of latents."""
    if latents.dim() == 3:  # (B, D, T) -> (B*T, D)
        latents = latents.transpose(1, 2).reshape(-1, latents.shape[1])
    if latents.dim() != 2 or latents.shape[1] != dim or latents.shape[0] < 2:
        raise ValueError(f"latents_for_pca: expected (N, {dim}) or (B, {dim}, T) with N >= 2, got {tuple(latents.shape)}")
    x = latents.detach().double().cpu()
    mean = x.mean(0)
    cov = (x - mean).T @ (x - mean) / (x.shape[0] - 1)
    evals, evecs = torch.linalg.eigh(cov)
    order = torch.argsort(evals, descending=True)
    evals, evecs = evals[order], evecs[:, order]
    # Fix signs so the largest component of each direction is positive (stable across exports).
    signs = torch.sign(evecs[evecs.abs().argmax(0), torch.arange(dim)])
    evecs = evecs * torch.where(signs == 0, 1.0, signs)
    scale = evals.clamp_min(1e-8).sqrt()
    return mean.float(), evecs.T.contiguous().float(), scale.float()


def export_audio_model(vae: AudioVAE, folder: str | Path, card_extra: Mapping[str, Any],
                       latents_for_pca: Tensor | None,
                       clips: Sequence[Tensor] | None = None,
                       snapshots: Sequence[tuple[int, float, Mapping[str, Tensor]]] | None = None,
                       clip_levels: Sequence[Tensor] | None = None,
                       classes: Sequence[Mapping[str, Any]] | None = None) -> Path:
    """Write `vae` (weights, PCA of latents, encoded clips) and its card to `folder`, atomically.

    card_extra: TOML-able entries merged into the card (e.g. trained=True, steps, seconds, data,
    description). latents_for_pca: encoder means, (N, D) or (B, D, T); None stores the identity
    (knobs = decoder latent). clips: decoder latents (D, T_i) (or (1, D, T_i)) the performer can
    replay with `audio/replay`. snapshots: (step, seconds, decoder state dict) along training,
    oldest first, the last one `vae`'s own decoder (the learning axis; see engine/learning.py).
    clip_levels: per clip, the source sound's level per latent frame (T_i,) in dBFS, so the live
    walk can tell material from the silences between. For a conditioned decoder (cfg.classes > 0):
    classes, one table per class in index order (`name`, and what the card should say of it, e.g.
    `clips`, `minutes`), written to the card as `[[classes]]` with its `index`. Returns the folder.
    """
    cfg = vae.cfg
    d = cfg.latent_dim
    if latents_for_pca is None:
        mean, comps, scale = torch.zeros(d), torch.eye(d), torch.ones(d)
    else:
        mean, comps, scale = _pca(latents_for_pca, d)
    tensors: dict[str, Tensor] = {k: v.detach().float() for k, v in vae.state_dict().items()}
    tensors.update({"pca.mean": mean, "pca.components": comps, "pca.scale": scale})
    if clips:
        frames = [c.detach().float().reshape(d, -1).T for c in clips]  # (T_i, D) each
        tensors["clips.latents"] = torch.cat(frames, 0)
        tensors["clips.starts"] = torch.tensor(np.cumsum([0] + [f.shape[0] for f in frames]), dtype=torch.int64)
        if clip_levels is not None:
            levels = [lv.detach().float().reshape(-1) for lv in clip_levels]
            if [lv.numel() for lv in levels] != [f.shape[0] for f in frames]:
                raise ValueError("clip_levels: one level per latent frame of each clip")
            tensors["clips.level"] = torch.cat(levels)
    if cfg.classes and (classes is None or len(classes) != cfg.classes):
        raise ValueError(f"classes: a conditioned decoder needs one entry per class ({cfg.classes})")
    snaps = list(snapshots or ())
    if len(snaps) >= 2:
        keys = list(vae.decoder.state_dict().keys())
        tensors.update(learning.pack([state for _, _, state in snaps], keys))
    card: dict[str, Any] = {
        "kind": "audio",
        "arch": ARCH,
        "trained": False,
        "sample_rate": cfg.sample_rate,
        "hop": cfg.hop,
        "latent_dim": d,
        "clips": len(clips or ()),
        "decoder_parameters": sum(p.numel() for p in vae.decoder.parameters()),
    }
    card.update(dict(card_extra))
    if cfg.classes and classes is not None:
        card["classes"] = [{"index": i, **dict(entry)} for i, entry in enumerate(classes)]
    if len(snaps) >= 2:
        card["learning"] = {"steps": [int(st) for st, _, _ in snaps], "seconds": [round(float(t), 2) for _, t, _ in snaps]}
    card["config"] = to_table(cfg)
    return save_model(folder, tensors, card)


def _check_tensor(tensors: Mapping[str, Tensor], key: str, shape: tuple[int, ...], source: str) -> Tensor:
    if key not in tensors:
        raise ModelError(f"{source}: tensor {key!r} missing")
    t = tensors[key]
    if tuple(t.shape) != shape:
        raise ModelError(f"{source}: tensor {key!r}: expected shape {shape}, got {tuple(t.shape)}")
    return t


def load_audio_model(folder: str | Path, trust: bool = False) -> AudioModel:
    """Read an audio model folder, or a TorchScript file (a RAVE or nn~ export) when `trust` says
    its code may run (engine/audio/scripted.py); any problem raises ModelError naming the file and
    what was expected."""
    folder = Path(folder)
    if is_scripted(folder):
        return scripted_audio_model(load_scripted(folder, trust))
    wrong = not_a_model_line(folder)
    if wrong is not None:
        raise ModelError(wrong)
    tensors, card = load_model(folder, "audio")
    card_src, w_src = str(folder / CARD), str(folder / WEIGHTS)
    if card.get("arch") != ARCH:
        raise ModelError(f"{card_src}: arch: expected {ARCH!r}, got {card.get('arch')!r}")
    table = card.get("config")
    if not isinstance(table, dict):
        raise ModelError(f"{card_src}: config: expected a table with the model architecture")
    try:
        cfg = build(AudioModelConfig, table, card_src, prefix="config")
    except ConfigError as exc:
        raise ModelError(str(exc)) from None
    except ValueError as exc:  # AudioModelConfig.__post_init__
        raise ModelError(f"{card_src}: config: {exc}") from None
    for key, want in (("sample_rate", cfg.sample_rate), ("hop", cfg.hop), ("latent_dim", cfg.latent_dim)):
        if card_value(card, key, int, card_src) != want:
            raise ModelError(f"{card_src}: {key}: expected {want} (from [config]), got {card[key]!r}")
    vae = AudioVAE(cfg)
    expected = vae.state_dict()
    for key, ref in expected.items():
        t = _check_tensor(tensors, key, tuple(ref.shape), w_src)
        if not torch.isfinite(t).all():
            raise ModelError(f"{w_src}: tensor {key!r} holds NaN or infinite values")
    d = cfg.latent_dim
    extra = (set(tensors) - set(expected) - learning.stored_keys(tensors)
             - {"pca.mean", "pca.components", "pca.scale", "clips.latents", "clips.starts", "clips.level"})
    if extra:
        raise ModelError(f"{w_src}: unexpected tensors {sorted(extra)[:5]}")
    vae.load_state_dict({k: tensors[k].float() for k in expected})
    vae.eval()
    for p in vae.parameters():
        p.requires_grad_(False)
    mean = _check_tensor(tensors, "pca.mean", (d,), w_src).double().numpy()
    comps = _check_tensor(tensors, "pca.components", (d, d), w_src).double().numpy()
    scale = _check_tensor(tensors, "pca.scale", (d,), w_src).double().numpy()
    if not (np.isfinite(mean).all() and np.isfinite(comps).all() and np.all(scale > 0)):
        raise ModelError(f"{w_src}: PCA tensors must be finite with positive scale")
    steps = learning.card_steps(card, card_src)
    snapshots = tuple(learning.unpack(tensors, {k: tensors[f"decoder.{k}"] for k in vae.decoder.state_dict()},
                                      len(steps), w_src))
    names = _class_names(card, cfg.classes, card_src)
    model = AudioModel(folder, cfg, vae, dict(card), mean, comps, scale, (), snapshots, class_names=names)
    clips: tuple[np.ndarray, ...] = ()
    levels: tuple[np.ndarray, ...] = ()
    if "clips.latents" in tensors:
        lat = tensors["clips.latents"]
        starts = tensors.get("clips.starts")
        if lat.dim() != 2 or lat.shape[1] != d or starts is None or starts.dim() != 1 or len(starts) < 2:
            raise ModelError(f"{w_src}: clips.latents must be (frames, {d}) with clips.starts (clips + 1,)")
        s = starts.tolist()
        if s[0] != 0 or s[-1] != lat.shape[0] or any(b <= a for a, b in zip(s, s[1:])):
            raise ModelError(f"{w_src}: clips.starts must rise from 0 to {lat.shape[0]}")
        knobs = model.latent_to_knobs(lat.double().numpy())
        clips = tuple(knobs[a:b] for a, b in zip(s, s[1:]))
        if "clips.level" in tensors:
            lv = _check_tensor(tensors, "clips.level", (lat.shape[0],), w_src).double().numpy()
            if not np.isfinite(lv).all():
                raise ModelError(f"{w_src}: tensor 'clips.level' holds NaN or infinite values")
            levels = tuple(lv[a:b] for a, b in zip(s, s[1:]))
    return dataclasses.replace(model, clips=clips, clip_levels=levels)


def scripted_audio_model(script: ScriptedModel) -> AudioModel:
    """An AudioModel around a TorchScript model: knobs are its latent (identity PCA), no clips, no
    learning axis, no classes."""
    d = script.latent_dim
    cfg = AudioModelConfig(sample_rate=script.sample_rate, latent_dim=d, channels=(1, 1), strides=(script.hop,))
    card = {"kind": "audio", "arch": script.kind, "trained": True, "sample_rate": script.sample_rate,
            "hop": script.hop, "latent_dim": d, "description": f"TorchScript model ({script.kind}) {script.path.name}"}
    return AudioModel(script.path, cfg, None, card, np.zeros(d), np.eye(d), np.ones(d), (), script=script)


def _class_names(card: Mapping[str, Any], count: int, source: str) -> tuple[str, ...]:
    """The class names of a conditioned model's card (`[[classes]]`, one per class in index order);
    () for an unconditioned one. ModelError naming the card when the list does not match."""
    if not count:
        return ()
    table = card.get("classes")
    if not isinstance(table, list) or len(table) != count:
        raise ModelError(f"{source}: classes: expected {count} [[classes]] tables (the decoder is conditioned "
                         f"on {count} classes), got {table!r}")
    names = []
    for i, entry in enumerate(table):
        if not isinstance(entry, dict) or entry.get("index") != i or not isinstance(entry.get("name"), str):
            raise ModelError(f"{source}: classes[{i}]: expected a table with index = {i} and a name, got {entry!r}")
        names.append(entry["name"])
    return tuple(names)


def class_lines(card: Mapping[str, Any]) -> list[str]:
    """What a person reads of a model card's classes: one line per class, `audio/class N: name
    (K clips, M min)`; [] for a model without classes."""
    table = card.get("classes")
    if not isinstance(table, list):
        return []
    lines = []
    for entry in table:
        if not isinstance(entry, dict):
            continue
        what = ", ".join(f"{entry[k]} {word}" for k, word in (("clips", "clips"), ("minutes", "min")) if k in entry)
        lines.append(f"  audio/class {entry.get('index')}: {entry.get('name')}" + (f" ({what})" if what else ""))
    return lines


def make_default_audio_model(folder: str | Path, seed: int = 0) -> Path:
    """Write an UNTRAINED audio model with fixed-seed random weights to `folder` (the shipped default
    until a trained one replaces it). Same seed, same weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AudioVAE(AudioModelConfig())
    extra = {
        "trained": False,
        "seed": seed,
        "description": ("UNTRAINED: random weights from a fixed seed, not trained on any data. It makes "
                        "filtered noise that moves with the latent. A trained model replaces it when "
                        "`make models` builds one."),
        "data": "none",
        "steps": 0,
    }
    return export_audio_model(vae, folder, extra, None)


if __name__ == "__main__":  # python -m engine.audio.model FOLDER: rebuild the untrained default
    import sys

    print(make_default_audio_model(sys.argv[1] if len(sys.argv) > 1 else "models/audio-default"))
