"""The streaming decoder for the audio process: the trained causal decoder, run in numpy.

At one latent frame per call (4 ms of sound, 64 samples) the decoder's arithmetic is tiny — the
widest layer is 128 channels × 1 frame — and PyTorch's per-operation dispatch is what costs:
about 1 ms a frame for ~90 operations, a quarter of real time. The same network as numpy matrix
products on preallocated state costs a fraction of that (measured by `python -m bench audio`,
key `stream_rtf`). `NumpyStream` reads the decoder's weights *as views* of the torch parameters
(no copy), so a `WeightMorph` moving them in place is heard at the next frame.

Layers, as `engine.audio.model.Decoder` defines them (the reference; a test holds the two equal):
    causal conv   state (B, C_in, context) + x (B, C_in, T) -> im2col (B, C_in·K, T) -> W @ cols
    residual unit x + mix(leaky(conv(leaky(x))))
    upsample      leaky(x) (B, T, C_in) @ W (C_in, C_out·stride·overlap) -> overlap-add; the
                  (overlap - 1) · stride samples that fall past the block are kept for the next
    output        tanh(conv(leaky(x)))

A conditioned decoder (trained with `--condition folder`) adds a bias per stage from the class
embedding: `__call__(z, classes)` blends each voice's embedding (a fraction of a class blends the
two neighbours) and projects it, (B, E) @ (E, ΣC), into the biases of the four stages, only when
the class values changed or `weights_moved()` says the learning morph wrote new weights (the
biases are read from the weights' views like everything else); otherwise a step adds four
cached biases in place.

Shapes: `__call__(z, classes=None)` with z (B, D, T) float32, classes (B,) float (class values,
None: class 0) -> (B, 1, T · hop) float32. Called from one thread (the audio process's decode
loop); not thread-safe.
"""

from __future__ import annotations

from typing import Protocol, cast

import numpy as np
import torch
from torch import nn

from .model import Decoder, ResizeUp, ResUnit, Upsample


class LatentStream(Protocol):
    """What the synth decodes with: NumpyStream (ciel's models) or ScriptedStream (a RAVE / nn~
    export, engine/audio/scripted.py). z (B, D, T) float32, classes (B,) or None -> (B, 1, T · hop).
    `save`/`restore` keep and bring back the left contexts around a learning-axis move."""

    hop: int

    def __call__(self, z: np.ndarray, classes: np.ndarray | None = None) -> np.ndarray: ...

    def weights_moved(self) -> None: ...

    def save(self) -> list[tuple[np.ndarray, ...]]: ...

    def restore(self, saved: list[tuple[np.ndarray, ...]]) -> None: ...


def _view(t: torch.Tensor | None) -> np.ndarray:
    """A numpy view of a CPU float32 torch tensor (shares memory; in-place torch edits show).
    The decoder's layers all have weights and biases: a missing one is a ValueError."""
    if t is None:
        raise ValueError("NumpyStream needs every decoder layer to have its weight and bias")
    return t.detach().numpy()


class _Conv:
    """Causal conv with its left context. W (C_out, C_in·K) view, bias (C_out, 1) view. The left
    context and the column buffer are preallocated per block length (one length in the engine)."""

    def __init__(self, conv: nn.Conv1d, batch: int, causal: bool = True) -> None:
        self.cout, self.cin, self.k = conv.weight.shape
        self.dil = conv.dilation[0]
        self.w = _view(conv.weight).reshape(self.cout, self.cin * self.k)   # view (contiguous)
        self.b = _view(conv.bias)[:, None]
        self.batch = batch
        self.context = (self.k - 1) * self.dil if causal else 0
        self.state = np.zeros((batch, self.cin, self.context), np.float32)
        self._T = -1

    def _buffers(self, T: int) -> None:
        self._T = T
        self.full = np.zeros((self.batch, self.cin, self.context + T), np.float32)   # (B, C_in, ctx + T)
        self.full[:, :, :self.context] = self.state
        # the columns of every stream side by side: one matrix product for the whole batch (a
        # product per stream costs a BLAS call each, which is most of the time at these sizes)
        self.cols = np.zeros((self.cin, self.k, self.batch, T), np.float32)          # (C_in, K, B, T)
        self.flat = self.cols.reshape(self.cin * self.k, self.batch * T)             # view (C_in·K, B·T)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.k == 1:
            B, C, T = x.shape
            y = self.w @ x.transpose(1, 0, 2).reshape(C, B * T) + self.b                # (C_out, B·T)
            return y.reshape(self.cout, B, T).transpose(1, 0, 2)                       # (B, C_out, T)
        T = x.shape[2]
        if T != self._T:
            if self._T >= 0:
                self.state = self.full[:, :, :self.context].copy()
            self._buffers(T)
        full, ctx, d = self.full, self.context, self.dil
        full[:, :, ctx:] = x
        for j in range(self.k):
            self.cols[:, j] = full[:, :, j * d: j * d + T].transpose(1, 0, 2)           # (C_in, B, T)
        y = (self.w @ self.flat + self.b).reshape(self.cout, self.batch, T).transpose(1, 0, 2)  # (B, C_out, T)
        if T >= ctx:
            full[:, :, :ctx] = full[:, :, T:]
        else:
            full[:, :, :ctx] = full[:, :, T:T + ctx].copy()
        return y


def _leaky(x: np.ndarray, leak: float) -> np.ndarray:
    return np.maximum(x, leak * x)


class _Res:
    def __init__(self, unit: ResUnit, batch: int) -> None:
        self.leak = unit.leak
        self.conv = _Conv(unit.conv, batch)
        self.mix = _Conv(unit.mix, batch, causal=False)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return x + self.mix(_leaky(self.conv(_leaky(x, self.leak)), self.leak))


class _Up:
    """Transposed conv, kernel = overlap · stride, with the tail carried between blocks."""

    def __init__(self, up: Upsample, batch: int) -> None:
        cin, cout, ks = up.weight.shape
        self.cout, self.s = cout, up.step
        self.o = ks // self.s
        self.w = _view(up.weight).reshape(cin, cout * ks)                  # view (C_in, C_out·o·s)
        self.b = _view(up.bias)[:, None]
        self.tail = np.zeros((batch, cout, self.o - 1, self.s), np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        B, _, T = x.shape
        s, o = self.s, self.o
        p = (x.transpose(0, 2, 1).reshape(B * T, -1) @ self.w).reshape(B, T, self.cout, o, s)  # (B, T, C_out, o, s)
        y = np.zeros((B, self.cout, T + o - 1, s), np.float32)                       # (B, C_out, blocks, s)
        for m in range(o):
            y[:, :, m:m + T] += p[:, :, :, m].transpose(0, 2, 1, 3)
        if o > 1:
            y[:, :, :o - 1] += self.tail
            self.tail = y[:, :, T:].copy()
        return y[:, :, :T].reshape(B, self.cout, T * s) + self.b


class _Resize:
    """Each step repeated `stride` times, then the causal conv."""

    def __init__(self, up: ResizeUp, batch: int) -> None:
        self.s = up.step
        self.conv = _Conv(up.conv, batch)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.conv(np.repeat(x, self.s, axis=2))


class NumpyStream:
    """Stateful block decoding of `decoder` in numpy: successive calls equal one offline decode.

    batch: streams decoded together (2 for stereo). `reset()` forgets the left contexts.
    """

    def __init__(self, decoder: Decoder, batch: int = 1) -> None:
        self.decoder = decoder
        self.batch = batch
        self.hop = decoder.cfg.hop
        self.leak = decoder.cfg.leak
        self.reset()

    def reset(self) -> None:
        dec, b = self.decoder, self.batch
        for p in dec.parameters():
            if p.dtype != torch.float32 or p.device.type != "cpu":
                raise ValueError("NumpyStream needs a float32 CPU decoder")
        self.inp = _Conv(dec.inp, b)
        self.stages = [[_Res(cast(ResUnit, u), b) for u in cast(nn.ModuleList, units)] for units in dec.res]
        self.ups = [_Resize(u, b) if isinstance(u, ResizeUp) else _Up(cast(Upsample, u), b) for u in dec.ups]
        self.out = _Conv(dec.out, b)
        self.classes = dec.cfg.classes
        if self.classes:
            self.embed = _view(dec.embed.weight)                     # view (classes, E)
            self.cond_w = _view(dec.cond.weight).T                   # view (E, ΣC)
            self.cond_b = _view(dec.cond.bias)                       # view (ΣC,)
            self.splits = np.cumsum(dec.cfg.channels)[:-1]
        self._bias_key: bytes | None = None     # the class values the cached biases are for
        self._bias: list[np.ndarray] = []

    def weights_moved(self) -> None:
        """The decoder's weights were written (the learning morph): the class biases are made again."""
        self._bias_key = None

    def class_biases(self, classes: np.ndarray | None) -> list[np.ndarray]:
        """One bias (B, C_i, 1) per stage for class values (B,) (None: class 0); [] when the
        decoder is unconditioned. A fraction blends the neighbouring classes' embeddings."""
        if not self.classes:
            return []
        top = self.classes - 1
        c = np.zeros(self.batch) if classes is None else np.clip(np.asarray(classes, np.float64), 0.0, top)  # (B,)
        lo = np.floor(c).astype(np.int64)
        hi = np.minimum(lo + 1, top)
        frac = (c - lo)[:, None]                                                    # (B, 1)
        e = self.embed[lo] * (1.0 - frac) + self.embed[hi] * frac                   # (B, E)
        b = (e @ self.cond_w + self.cond_b).astype(np.float32)                      # (B, ΣC)
        return [part[:, :, None] for part in np.split(b, self.splits, axis=1)]      # (B, C_i, 1) each

    def _stateful(self) -> list:
        convs: list = [self.inp, self.out]
        for units in self.stages:
            for unit in units:
                convs += [unit.conv, unit.mix]
        ups = []
        for up in self.ups:
            (convs.append(up.conv) if isinstance(up, _Resize) else ups.append(up))
        return convs + ups

    def save(self) -> list[tuple[np.ndarray, ...]]:
        """A copy of every left context (to decode a block twice, e.g. with two weight sets)."""
        out: list[tuple[np.ndarray, ...]] = []
        for part in self._stateful():
            if isinstance(part, _Up):
                out.append((part.tail.copy(),))
            elif part._T >= 0:   # the context lives in the head of the preallocated buffer
                out.append((part.full[:, :, :part.context].copy(),))
            else:
                out.append((part.state.copy(),))
        return out

    def restore(self, saved: list[tuple[np.ndarray, ...]]) -> None:
        """Back to the contexts of `save()`."""
        for part, arrays in zip(self._stateful(), saved):
            if isinstance(part, _Up):
                part.tail = arrays[0].copy()
            else:
                part.state = arrays[0].copy()
                part._T = -1   # the buffers are rebuilt around the restored context

    def __call__(self, z: np.ndarray, classes: np.ndarray | None = None) -> np.ndarray:
        """z (B, D, T) -> audio (B, 1, T · hop) float32; classes (B,): each voice's class value
        (a conditioned decoder only; None: class 0)."""
        bias: list[np.ndarray] = []
        if self.classes:
            key = b"" if classes is None else np.asarray(classes, np.float64).tobytes()
            if key != self._bias_key:
                self._bias, self._bias_key = self.class_biases(classes), key
            bias = self._bias
        x = self.inp(np.asarray(z, np.float32))                  # (B, C0, T)
        if bias:
            x += bias[0]
        for unit in self.stages[0]:
            x = unit(x)
        for i, (up, units) in enumerate(zip(self.ups, self.stages[1:])):
            x = up(_leaky(x, self.leak))                         # (B, Ci, T·s1…si)
            if bias:
                x += bias[i + 1]
            for unit in units:
                x = unit(x)
        return np.tanh(self.out(_leaky(x, self.leak)))           # (B, 1, T·hop)

