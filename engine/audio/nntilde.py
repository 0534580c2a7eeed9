"""ciel's audio model out to nn~ (Max / Pure Data): a TorchScript file with the methods nn~ calls.

`export_nn_tilde(model, path)` writes `path` (`.ts`), a scripted module with

    forward(x)  (B, 1, N)            -> (B, 1, N)           encode then decode
    encode(x)   (B, 1, N)            -> (B, D, N / hop)     knob coordinates (sigma along the PCs)
    decode(u)   (B, D, T)            -> (B, 1, T · hop)     streaming: consecutive calls continue
    get_methods() -> ["forward", "encode", "decode"];  get_attributes() -> [] (nothing settable)
    forward_params, encode_params, decode_params: [in channels, in ratio, out channels, out ratio]
    sampling_rate: the model's rate (nn~ plays it at the host's rate; set the host to it)

as nn~'s backend reads them (it calls `get_methods`, reads `<method>_params`, and calls the method
on (batch, channels, samples / ratio) blocks). Latents are the knob coordinates ciel's OSC and
MIDI move (`AudioModel.knobs_to_latent`), as a RAVE export's are PCA coordinates.

A decoder conditioned by content (`ciel train audio --condition folder`) takes its class as one
more input signal of `decode`, after the knobs: (B, D + 1, T), the class value per latent frame
as `audio/class` reads it (an index of the card's classes; a fraction blends two neighbours).
`forward` plays class 0. An unconditioned model's methods are unchanged.

The decoder is rebuilt from `engine.audio.model.Decoder`'s weights with its streaming state as
buffers (each causal conv's left context, each overlapping upsampler's tail), so decoding blocks
one after another equals decoding them at once; a batch of another size starts from silence. The
encoder is non-causal (each block encoded alone) and is traced. No resampler, limiter or learning
axis: those are ciel's live path, not the network.
"""

# no `from __future__ import annotations`: TorchScript reads the class annotations as objects
import warnings
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .model import AudioModel, CausalConv1d, Decoder, ResizeUp, ResUnit, Upsample


class _Conv(nn.Module):
    """A conv with its left context as a buffer (context 0: a plain conv)."""

    cache: Tensor   # (B, C_in, context)

    def __init__(self, conv: nn.Conv1d, context: int) -> None:
        super().__init__()
        if conv.bias is None:
            raise ValueError("the decoder's convolutions all have a bias")
        self.weight = nn.Parameter(conv.weight.detach().clone(), requires_grad=False)
        self.bias = nn.Parameter(conv.bias.detach().clone(), requires_grad=False)
        self.dilation = int(conv.dilation[0])
        self.context = int(context)
        self.register_buffer("cache", torch.zeros(1, conv.in_channels, self.context))

    def forward(self, x: Tensor) -> Tensor:
        if self.context > 0:
            if self.cache.shape[0] != x.shape[0]:
                self.cache = torch.zeros(x.shape[0], x.shape[1], self.context)
            x = torch.cat((self.cache, x), dim=-1)                          # (B, C_in, context + T)
            self.cache = x[:, :, x.shape[2] - self.context:].clone()
        return F.conv1d(x, self.weight, self.bias, dilation=self.dilation)  # (B, C_out, T)


class _Res(nn.Module):
    def __init__(self, unit: ResUnit) -> None:
        super().__init__()
        self.leak = float(unit.leak)
        self.conv = _Conv(unit.conv, cast(CausalConv1d, unit.conv).context)
        self.mix = _Conv(unit.mix, 0)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.mix(F.leaky_relu(self.conv(F.leaky_relu(x, self.leak)), self.leak))


class _Up(nn.Module):
    """Transposed conv with the overlap that falls past the block kept for the next one."""

    cache: Tensor   # (B, C_out, tail)

    def __init__(self, up: Upsample) -> None:
        super().__init__()
        if up.bias is None:
            raise ValueError("the decoder's upsamplers all have a bias")
        self.weight = nn.Parameter(up.weight.detach().clone(), requires_grad=False)
        self.bias = nn.Parameter(up.bias.detach().clone(), requires_grad=False)
        self.step = int(up.step)
        self.tail = int(up.tail)
        self.register_buffer("cache", torch.zeros(1, up.out_channels, self.tail))

    def forward(self, x: Tensor) -> Tensor:
        y = F.conv_transpose1d(x, self.weight, None, stride=self.step)     # (B, C_out, T·step + tail)
        n = x.shape[2] * self.step
        main = y[:, :, :n]
        if self.tail > 0:
            prev = self.cache if self.cache.shape[0] == x.shape[0] else torch.zeros(x.shape[0], y.shape[1], self.tail)
            k = min(self.tail, n)
            main = torch.cat((main[:, :, :k] + prev[:, :, :k], main[:, :, k:]), dim=-1)
            rest = y[:, :, n:].clone()
            carry = prev[:, :, k:]
            if carry.shape[2] > 0:
                rest[:, :, :carry.shape[2]] += carry
            self.cache = rest
        return main + self.bias[None, :, None]                             # (B, C_out, T·step)


class _Resize(nn.Module):
    def __init__(self, up: ResizeUp) -> None:
        super().__init__()
        self.step = int(up.step)
        self.conv = _Conv(up.conv, up.conv.context)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(torch.repeat_interleave(x, self.step, dim=-1))


class _Stage(nn.Module):
    """One upsampling stage: leaky → upsample → the class bias (B, C, T·…) → residual units."""

    def __init__(self, up: nn.Module, units: nn.ModuleList, leak: float) -> None:
        super().__init__()
        self.leak = leak
        self.up = _Resize(up) if isinstance(up, ResizeUp) else _Up(cast(Upsample, up))
        self.units = nn.ModuleList(_Res(cast(ResUnit, u)) for u in units)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        x = self.up(F.leaky_relu(x, self.leak)) + bias
        for unit in self.units:
            x = unit(x)
        return x


class StreamingDecoder(nn.Module):
    """`Decoder` with its streaming state as buffers: z (B, D, T) and the class per frame
    c (B, T) -> (B, 1, T · hop), block by block (c is ignored by an unconditioned decoder)."""

    def __init__(self, decoder: Decoder) -> None:
        super().__init__()
        cfg = decoder.cfg
        self.leak = float(cfg.leak)
        self.classes = int(cfg.classes)
        self.widths = [int(c) for c in cfg.channels]
        rates = [1]
        for s in cfg.strides:
            rates.append(rates[-1] * int(s))
        self.rates = rates                                     # each stage's samples per latent frame
        self.inp = _Conv(decoder.inp, decoder.inp.context)
        self.first = nn.ModuleList(_Res(cast(ResUnit, u)) for u in cast(nn.ModuleList, decoder.res[0]))
        self.stages = nn.ModuleList(_Stage(up, cast(nn.ModuleList, units), self.leak)
                                    for up, units in zip(decoder.ups, decoder.res[1:]))
        self.out = _Conv(decoder.out, decoder.out.context)
        embed: Tensor
        w: Tensor
        b: Tensor
        if cfg.classes:
            embed, w, b = decoder.embed.weight, decoder.cond.weight, decoder.cond.bias
        else:   # placeholders: TorchScript compiles the conditioned path either way
            embed, w, b = torch.zeros(1, 1), torch.zeros(sum(self.widths), 1), torch.zeros(sum(self.widths))
        self.embed = nn.Parameter(embed.detach().clone(), requires_grad=False)   # (classes, E)
        self.cond_w = nn.Parameter(w.detach().clone(), requires_grad=False)      # (ΣC, E)
        self.cond_b = nn.Parameter(b.detach().clone(), requires_grad=False)      # (ΣC,)

    def biases(self, c: Tensor) -> list[Tensor]:
        """The class bias of each stage, (B, C_i, T · rate_i), for class values c (B, T)."""
        top = float(self.classes - 1)
        c = c.clamp(0.0, top)
        lo = c.floor()
        hi = (lo + 1.0).clamp(0.0, top)
        frac = (c - lo).unsqueeze(-1)                                             # (B, T, 1)
        e = self.embed[lo.long()] * (1.0 - frac) + self.embed[hi.long()] * frac  # (B, T, E)
        b = (e @ self.cond_w.t() + self.cond_b).transpose(1, 2)                  # (B, ΣC, T)
        out: list[Tensor] = []
        start = 0
        for i, width in enumerate(self.widths):
            out.append(torch.repeat_interleave(b[:, start:start + width, :], self.rates[i], dim=2))
            start += width
        return out

    def forward(self, z: Tensor, c: Tensor) -> Tensor:
        x = self.inp(z)                                        # (B, C0, T)
        bias: list[Tensor] = []
        if self.classes > 0:
            bias = self.biases(c)
            x = x + bias[0]
        for unit in self.first:
            x = unit(x)
        for i, stage in enumerate(self.stages):
            if self.classes > 0:
                x = stage(x, bias[i + 1])                      # (B, Ci, T·s1…si)
            else:
                x = stage(x, torch.zeros(1, 1, 1))
        return torch.tanh(self.out(F.leaky_relu(x, self.leak)))  # (B, 1, T·hop)


class NNTildeModel(nn.Module):
    """The module `export_nn_tilde` scripts (see the module docstring)."""

    pca_mean: Tensor         # (D,)
    pca_components: Tensor   # (D, D), row i the i-th principal direction
    pca_scale: torch.Tensor        # (D,)

    def __init__(self, model: AudioModel) -> None:
        super().__init__()
        vae = model.own.eval()
        self.hop = int(model.hop)
        self.latent_dim = int(model.latent_dim)
        self.sampling_rate = int(model.sample_rate)
        self.classes = int(model.classes)
        self.decoder = StreamingDecoder(vae.decoder)
        self.encoder: nn.Module = torch.jit.trace(vae.encoder, torch.zeros(1, 1, 64 * self.hop))
        self.register_buffer("pca_mean", torch.as_tensor(model.pca_mean, dtype=torch.float32))          # (D,)
        self.register_buffer("pca_components", torch.as_tensor(model.pca_components, dtype=torch.float32))  # (D, D)
        self.register_buffer("pca_scale", torch.as_tensor(model.pca_scale, dtype=torch.float32))        # (D,)
        d, h = self.latent_dim, self.hop
        self.register_buffer("forward_params", torch.tensor([1, 1, 1, 1]))
        self.register_buffer("encode_params", torch.tensor([1, 1, d, h]))
        inputs = d + (1 if self.classes else 0)
        self.register_buffer("decode_params", torch.tensor([inputs, h, 1, 1]))
        self.forward_input_labels = ["(signal) audio in"]
        self.forward_output_labels = ["(signal) audio out"]
        self.encode_input_labels = ["(signal) audio in"]
        self.encode_output_labels = [f"(signal) knob {i + 1}" for i in range(d)]
        self.decode_input_labels = [f"(signal) knob {i + 1}" for i in range(d)] + (
            [f"(signal) class (0 to {self.classes - 1}; fractions blend)"] if self.classes else [])
        self.decode_output_labels = ["(signal) audio out"]

    @torch.jit.export
    def encode(self, x: Tensor) -> Tensor:
        n = x.shape[2] - x.shape[2] % self.hop
        mu = self.encoder(x[:, :, :n])[0]                                   # (B, D, N / hop)
        centred = mu.transpose(1, 2) - self.pca_mean                        # (B, T, D)
        return (centred @ self.pca_components.t() / self.pca_scale).transpose(1, 2)

    def play(self, u: Tensor, c: Tensor) -> Tensor:
        """Knobs u (B, D, T) and class values c (B, T) -> (B, 1, T·hop)."""
        z = self.pca_mean + (u.transpose(1, 2) * self.pca_scale) @ self.pca_components  # (B, T, D)
        return self.decoder(z.transpose(1, 2), c)                           # (B, 1, T·hop)

    @torch.jit.export
    def decode(self, u: Tensor) -> Tensor:
        """(B, D, T) knobs, or (B, D + 1, T) knobs and the class for a conditioned model."""
        if self.classes > 0:
            return self.play(u[:, :self.latent_dim, :], u[:, self.latent_dim, :])
        return self.play(u, torch.zeros(u.shape[0], u.shape[2]))

    def forward(self, x: Tensor) -> Tensor:
        u = self.encode(x)                                                  # (B, D, T)
        return self.play(u, torch.zeros(u.shape[0], u.shape[2]))            # class 0

    @torch.jit.export
    def get_methods(self) -> list[str]:
        return ["forward", "encode", "decode"]

    @torch.jit.export
    def get_attributes(self) -> list[str]:
        return []


def export_nn_tilde(model: AudioModel, path: Path) -> Path:
    """Script `model` for nn~ and save it to `path` (a `.ts` file). Returns the path."""
    with torch.no_grad(), warnings.catch_warnings():
        # TorchScript is deprecated in favour of torch.export, but it is what nn~ (libtorch) loads
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*torch\.jit")
        scripted = torch.jit.script(NNTildeModel(model))
    path.parent.mkdir(parents=True, exist_ok=True)
    scripted.save(str(path))
    return path
