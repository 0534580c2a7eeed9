"""The streaming decoder for the audio process: the trained causal decoder, run in numpy.

At one latent frame per call (4 ms of sound, 64 samples) the decoder's arithmetic is small — the
widest layer is 128 channels × 1 frame — and per-operation cost is what decides: PyTorch's
dispatch costs about 1 ms a frame for ~90 operations, a quarter of real time. Here every layer
is one matrix product over preallocated buffers, with a handful of numpy calls around it
(`python -m bench audio`, key `stream_rtf`).

Activations are time-major, (B, T, C) C-contiguous, so that a causal convolution's input
window is a strided view of one buffer and its product lands in the layout the next layer reads,
with no transposes between layers:

    causal conv   full (B, context + T, C_in) holds the left context, then the new input (a
                  residual unit's leaky activation is written there directly); cols (B·T, C_in·K)
                  is the dilated window over it (one copy); y (B·T, C_out) = cols @ W.T + b, with W
                  (C_out, C_in·K) a *view* of the torch weight (a `WeightMorph` writing the weights
                  in place is heard at the next frame)
    residual unit x + mix(leaky(conv(leaky(x))))
    resize up     (repeat each step `stride` times, then a causal conv of kernel K = 2·stride + 1)
                  computed polyphase: output phase p of frame t reads only the J = ceil((K-1)/s) + 1
                  input frames its taps fall on, with those taps summed, so one product
                  (B·T, C_in·J) @ (C_in·J, s·C_out) gives the s phases side by side, already in time
                  order: a third of the arithmetic of the repeated signal's convolution
    transposed up leaky(x) (B·T, C_in) @ (C_in, o·s·C_out) -> overlap-add of o blocks; the
                  (o - 1) · s samples that fall past the block are kept for the next
    output        tanh(conv(leaky(x)))

The two upsamplers read *packed* copies of their weights (summed taps, reordered axes), made at
construction and again at `weights_moved()`, which the learning morph calls after every write.

A conditioned decoder (trained with `--condition folder`) adds a bias per stage from the class
embedding: `__call__(z, classes)` blends each voice's embedding (a fraction of a class blends the
two neighbours) and projects it, (B, E) @ (E, ΣC), into the biases of the four stages, only when
the class values changed or `weights_moved()` says new weights were written; otherwise a step
adds four cached biases in place.

Shapes: `__call__(z, classes=None)` with z (B, D, T) float32, classes (B,) float (class values,
None: class 0) -> (B, 1, T · hop) float32. Called from one thread (the audio process's decode
loop); not thread-safe. A returned array is the caller's (the layers' buffers never leave).
"""

from __future__ import annotations

import math
from typing import Protocol, cast

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view
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


def _leaky_into(x: np.ndarray, leak: float, out: np.ndarray) -> None:
    """out = leaky_relu(x) (0 < leak < 1), written in place; out may not alias x."""
    np.multiply(x, leak, out=out)
    np.maximum(x, out, out=out)


class _Windowed:
    """A causal window over a time-major input: `full` (B, context + T, C_in) holds the last
    `context` input steps, then the block's T; `cols` (B·T, C_in·taps) is the window of `taps`
    steps `dil` apart ending at each step (ordered c_in-major, as torch's conv weights are).
    Buffers are preallocated per block length (one length in the engine)."""

    def __init__(self, batch: int, cin: int, taps: int, dil: int) -> None:
        self.batch, self.cin, self.taps, self.dil = batch, cin, taps, dil
        self.context = (taps - 1) * dil
        self.state = np.zeros((batch, self.context, cin), np.float32)   # (B, context, C_in)
        # made for each block length by _buffers
        self.full: np.ndarray = np.zeros((batch, self.context, cin), np.float32)   # (B, context + T, C_in)
        self.win: np.ndarray = self.full                                              # view (B, T, C_in, taps)
        self.cols: np.ndarray = self.full                                             # (B, T, C_in, taps)
        self.flat: np.ndarray = self.full                                             # view (B·T, C_in·taps)
        self._T = -1

    def _buffers(self, T: int) -> None:
        if self._T >= 0:
            self.state = self.full[:, :self.context].copy()
        self._T = T
        B, ctx = self.batch, self.context
        self.full = np.zeros((B, ctx + T, self.cin), np.float32)                       # (B, ctx + T, C_in)
        self.full[:, :ctx] = self.state
        self.win = sliding_window_view(self.full, ctx + 1, axis=1)[..., ::self.dil]    # view (B, T, C_in, taps)
        self.cols = np.empty((B, T, self.cin, self.taps), np.float32)                  # (B, T, C_in, taps)
        self.flat = self.cols.reshape(B * T, self.cin * self.taps)                     # view (B·T, C_in·taps)

    def take(self, x: np.ndarray, leak: float | None) -> np.ndarray:
        """x (B, T, C_in) (leaky_relu'd on the way in when `leak` is given) -> cols (B·T, C_in·taps);
        the context moves on by T."""
        T = x.shape[1]
        if T != self._T:
            self._buffers(T)
        full, ctx = self.full, self.context
        if leak is None:
            full[:, ctx:] = x
        else:
            _leaky_into(x, leak, full[:, ctx:])
        np.copyto(self.cols, self.win)
        full[:, :ctx] = full[:, T:]   # numpy buffers overlapping copies
        return self.flat

    def saved(self) -> np.ndarray:
        return (self.full[:, :self.context] if self._T >= 0 else self.state).copy()

    def restore(self, state: np.ndarray) -> None:
        self.state = state.copy()
        self._T = -1   # the buffers are rebuilt around the restored context


class _Conv:
    """Causal conv (or pointwise when kernel 1): (B, T, C_in) -> (B, T, C_out). W view
    (C_out, C_in·K) of the torch weight, its transpose a view too; bias (C_out,) view."""

    def __init__(self, conv: nn.Conv1d, batch: int) -> None:
        self.cout, self.cin, self.k = conv.weight.shape
        self.wt = _view(conv.weight).reshape(self.cout, self.cin * self.k).T   # view (C_in·K, C_out)
        self.b = _view(conv.bias)                                               # view (C_out,)
        self.window = _Windowed(batch, self.cin, self.k, conv.dilation[0]) if self.k > 1 else None
        self._tmp = np.empty(0, np.float32)

    def __call__(self, x: np.ndarray, leak: float | None = None) -> np.ndarray:
        """A new array (B, T, C_out); reads leaky_relu(x) when `leak` is given."""
        B, T, C = x.shape
        if self.window is None:
            if leak is not None:
                if self._tmp.shape != x.shape:
                    self._tmp = np.empty(x.shape, np.float32)
                _leaky_into(x, leak, self._tmp)
                x = self._tmp
            cols = x.reshape(B * T, C)
        else:
            cols = self.window.take(x, leak)
        y = cols @ self.wt                                                      # (B·T, C_out)
        y += self.b
        return y.reshape(B, T, self.cout)


class _Res:
    def __init__(self, unit: ResUnit, batch: int) -> None:
        self.leak = unit.leak
        self.conv = _Conv(unit.conv, batch)
        self.mix = _Conv(unit.mix, batch)

    def __call__(self, x: np.ndarray) -> None:
        """x (B, T, C) += the unit's branch, in place."""
        x += self.mix(self.conv(x, self.leak), self.leak)


class _ResizePoly:
    """Resize-convolution (ResizeUp), polyphase: (B, T, C_in) -> (B, T·s, C_out). Output sample
    t·s + p of the repeated signal's causal conv reads repeated samples t·s + p - (K-1) … t·s + p,
    which are input frames t + floor((p - (K-1) + i) / s), i = 0 … K-1: J frames in all. Its weights
    are packed (C_in·J, s·C_out), the taps that fall on one frame summed, by `pack()`."""

    def __init__(self, up: ResizeUp, batch: int) -> None:
        self.conv = up.conv
        self.s = s = up.step
        self.cout, self.cin, K = up.conv.weight.shape
        if up.conv.dilation[0] != 1:
            raise ValueError("NumpyStream: a resize upsampler's conv must not be dilated")
        self.J = J = math.ceil((K - 1) / s) + 1
        onto = np.zeros((K, J, s), np.float32)   # tap i of phase p falls on window frame j
        for i in range(K):
            for p in range(s):
                onto[i, (p - (K - 1) + i) // s + J - 1, p] = 1.0
        self.onto = onto.reshape(K, J * s)                                         # (K, J·s)
        self.b = _view(up.conv.bias)                                               # view (C_out,)
        self.window = _Windowed(batch, self.cin, J, 1)
        self.wp = np.empty((self.cin * J, s * self.cout), np.float32)              # (C_in·J, s·C_out)
        self.pack()

    def pack(self) -> None:
        """Sum the taps onto frames: one product and one copy (about 0.1 ms for the default model's
        three upsamplers; it runs at every step of a learning move)."""
        w = _view(self.conv.weight)                                                # (C_out, C_in, K)
        summed = (w.reshape(self.cout * self.cin, -1) @ self.onto).reshape(self.cout, self.cin, self.J, self.s)
        np.copyto(self.wp.reshape(self.cin, self.J, self.s, self.cout), summed.transpose(1, 2, 3, 0))

    def __call__(self, x: np.ndarray, leak: float) -> np.ndarray:
        B, T, _ = x.shape
        y = self.window.take(x, leak) @ self.wp                                    # (B·T, s·C_out)
        y = y.reshape(B, T * self.s, self.cout)                                    # (B, T·s, C_out)
        y += self.b
        return y


class _Up:
    """Transposed conv (Upsample), kernel = overlap · stride, with the tail carried between
    blocks: (B, T, C_in) -> (B, T·s, C_out). Weights packed (C_in, o·s·C_out) by `pack()`."""

    def __init__(self, up: Upsample, batch: int) -> None:
        self.up = up
        self.cin, self.cout, ks = up.weight.shape
        self.s = up.step
        self.o = ks // self.s
        self.b = _view(up.bias)                                                    # view (C_out,)
        self.tail = np.zeros((batch, self.o - 1, self.s, self.cout), np.float32)  # (B, o-1, s, C_out)
        self._tmp = np.empty(0, np.float32)
        self.wp = np.empty((self.cin, self.o * self.s * self.cout), np.float32)   # (C_in, o·s·C_out)
        self.pack()

    def pack(self) -> None:
        w = _view(self.up.weight)                                                  # (C_in, C_out, o·s)
        np.copyto(self.wp.reshape(self.cin, -1, self.cout), w.transpose(0, 2, 1))

    def __call__(self, x: np.ndarray, leak: float) -> np.ndarray:
        B, T, _ = x.shape
        s, o = self.s, self.o
        if self._tmp.shape != x.shape:
            self._tmp = np.empty(x.shape, np.float32)
        _leaky_into(x, leak, self._tmp)
        p = (self._tmp.reshape(B * T, self.cin) @ self.wp).reshape(B, T, o, s, self.cout)  # (B, T, o, s, C_out)
        if o == 1:
            y = p.reshape(B, T * s, self.cout)
            y += self.b
            return y
        y = np.zeros((B, T + o - 1, s, self.cout), np.float32)                     # (B, blocks, s, C_out)
        for m in range(o):
            y[:, m:m + T] += p[:, :, m]
        y[:, :o - 1] += self.tail
        self.tail = y[:, T:].copy()
        out = y[:, :T].reshape(B, T * s, self.cout)
        out += self.b
        return out


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
        self.ups: list[_ResizePoly | _Up] = [
            _ResizePoly(u, b) if isinstance(u, ResizeUp) else _Up(cast(Upsample, u), b) for u in dec.ups]
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
        """The decoder's weights were written (the learning morph): the packed upsampler weights
        and the class biases are made again."""
        for up in self.ups:
            up.pack()
        self._bias_key = None

    def class_biases(self, classes: np.ndarray | None) -> list[np.ndarray]:
        """One bias (B, 1, C_i) per stage for class values (B,) (None: class 0); [] when the
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
        return [part[:, None, :] for part in np.split(b, self.splits, axis=1)]      # (B, 1, C_i) each

    def _windows(self) -> list[_Windowed]:
        convs = [self.inp, self.out] + [c for units in self.stages for unit in units for c in (unit.conv, unit.mix)]
        found = [c.window for c in convs if c.window is not None]
        return found + [up.window for up in self.ups if isinstance(up, _ResizePoly)]

    def save(self) -> list[tuple[np.ndarray, ...]]:
        """A copy of every left context (to decode a block twice, e.g. with two weight sets)."""
        out: list[tuple[np.ndarray, ...]] = [(w.saved(),) for w in self._windows()]
        return out + [(up.tail.copy(),) for up in self.ups if isinstance(up, _Up)]

    def restore(self, saved: list[tuple[np.ndarray, ...]]) -> None:
        """Back to the contexts of `save()`."""
        windows = self._windows()
        for w, arrays in zip(windows, saved):
            w.restore(arrays[0])
        for up, arrays in zip([u for u in self.ups if isinstance(u, _Up)], saved[len(windows):]):
            up.tail = arrays[0].copy()

    def __call__(self, z: np.ndarray, classes: np.ndarray | None = None) -> np.ndarray:
        """z (B, D, T) -> audio (B, 1, T · hop) float32; classes (B,): each voice's class value
        (a conditioned decoder only; None: class 0)."""
        bias: list[np.ndarray] = []
        if self.classes:
            key = b"" if classes is None else np.asarray(classes, np.float64).tobytes()
            if key != self._bias_key:
                self._bias, self._bias_key = self.class_biases(classes), key
            bias = self._bias
        z = np.asarray(z, np.float32)
        x = self.inp(z.transpose(0, 2, 1))                       # (B, T, C0)
        if bias:
            x += bias[0]
        for unit in self.stages[0]:
            unit(x)
        for i, (up, units) in enumerate(zip(self.ups, self.stages[1:])):
            x = up(x, self.leak)                                 # (B, T·s1…si, Ci)
            if bias:
                x += bias[i + 1]
            for unit in units:
                unit(x)
        y = self.out(x, self.leak)                               # (B, T·hop, 1)
        np.tanh(y, out=y)
        return y.transpose(0, 2, 1)                              # (B, 1, T·hop)
