"""The safety stage: what keeps neural noise from hurting ears. Always on; nothing bypasses it.

Two parts, each with its state carried between blocks and its per-sample work in one compiled
call (engine/audio/kernels.py); any block length works, and the limiter's result does not depend
on how a signal is cut into blocks:

- `Conditioner` at the model rate (mono): a DC blocker (one-pole high-pass, 5 Hz), a dynamic
  high-frequency tamer (a 4th-order binomial high band is pulled down when it carries more than
  a set share of the energy, as the cracked decoders' hiss does) and loudness normalisation of
  the short-term RMS to a target in dBFS (`audio/loudness`), gated so silence is not pumped up.
- `TruePeakLimiter` at the device rate: 4x oversampled peak detection (polyphase windowed sinc),
  a lookahead of `lookahead` segments with a smooth attack ramp, exponential release in dB, a
  ceiling (`audio/ceiling`, never above -1 dBFS) and a hard clip at the ceiling as the last net.
  `panic()` mutes at once (the next sample out is zero) until `release_panic()`.

All methods are called from the audio process's decode loop (or the offline renderer), never from
the sound callback. The Conditioner works on one channel (a stereo stream has one per channel);
the limiter takes (n,) mono or (n, C) and links its channels (one gain for all, so the stereo
image never moves). Gains are linear unless named *_db.
"""

from __future__ import annotations

import math

import numpy as np

from . import kernels

MAX_CEILING_DB = -1.0


def db_to_gain(db: float) -> float:
    return 10.0 ** (db / 20.0)


def gain_to_db(g: float) -> float:
    return 20.0 * math.log10(max(g, 1e-12))


class Conditioner:
    """DC blocker -> high-frequency tamer -> loudness normalisation, at the model rate.

    rate: Hz. `process(x, target_db)` returns the conditioned block (same shape, float32): x is
    (n,) mono, or (n, C) with `channels` C. Channels are linked: one tamer setting and one
    loudness gain from the energy of all of them, so the stereo image never moves; over more than
    two speakers the loudness is their summed power over two (as loud as a stereo pair). The tamer
    delays the signal by 2 samples (0.125 ms at 16 kHz). The per-sample work is one compiled call
    (engine/audio/kernels.py `condition`); the state lives here, in `dc`, `hist` and `st`.
    """

    HF_TAPS = np.array([1.0, -4.0, 6.0, -4.0, 1.0]) / 16.0  # |H| = sin^4(w/2): 0 at DC, 1 at Nyquist

    def __init__(self, rate: int, dc_hz: float = 5.0, hf_share: float = 0.08, hf_min: float = 0.2,
                 loudness_s: float = 0.4, gate_db: float = -70.0, max_boost_db: float = 36.0,
                 max_cut_db: float = -40.0, channels: int = 0) -> None:
        self.rate = rate
        self.channels = channels
        width = max(channels, 1)
        self.dc_a = math.exp(-2.0 * math.pi * dc_hz / rate)
        self.dc = np.zeros(width)                             # the DC blocker's low-pass, per channel
        self.hist = np.zeros((len(self.HF_TAPS) - 1, width))  # the tamer's FIR context (4, C)
        self.gate = db_to_gain(gate_db) ** 2
        self.gain_range = (db_to_gain(max_cut_db), db_to_gain(max_boost_db))
        scale = channels / 2.0 if channels > 2 else 1.0     # N speakers as loud together as a stereo pair
        lo, hi = self.gain_range
        # the kernel's constant arguments, as floats once: a kernel is compiled per argument type
        self._before_target = (float(rate), self.dc_a, self.HF_TAPS, float(hf_share), float(hf_min),
                               float(loudness_s), self.gate, lo, hi)
        self._scale = float(scale)
        self.st = np.zeros(4)                                 # kernels.C_HF … C_GAIN
        self.st[kernels.C_HF], self.st[kernels.C_MS], self.st[kernels.C_GAIN] = hf_min, np.nan, 1.0

    @property
    def gain(self) -> float:
        """The loudness gain now (linear)."""
        return float(self.st[kernels.C_GAIN])

    def process(self, x: np.ndarray, target_db: float) -> np.ndarray:
        """One block (n,) or (n, C) at the model rate -> conditioned block of the same shape,
        float32; NaN/inf become 0."""
        x = np.asarray(x, np.float64)
        if len(x) == 0:
            return x.astype(np.float32)
        mono = x.ndim == 1
        # C order always: a kernel is compiled per layout, and a second compilation in the decode
        # loop (a sum with a transposed reverb) would be a dropout
        x2 = np.ascontiguousarray(x[:, None] if mono else x)                           # (n, C)
        out = np.empty(x2.shape, np.float32)
        kernels.condition(x2, out, self.dc, self.hist, self.st, *self._before_target, db_to_gain(target_db),
                          self._scale)
        return out[:, 0] if mono else out


def _pow2(n: int) -> int:
    """The least power of two >= n (ring sizes: the kernels index them with a mask)."""
    return 1 << max(0, math.ceil(math.log2(n)))


def _interp_filter(factor: int = 4, taps_per_phase: int = 12) -> np.ndarray:
    """Polyphase windowed-sinc interpolator: (factor - 1, taps_per_phase) rows for the in-between
    phases (phase 0 is the sample itself)."""
    n = factor * taps_per_phase
    t = (np.arange(n) - n / 2) / factor
    h = np.sinc(t) * np.kaiser(n, 8.0)
    phases = np.stack([h[p::factor] for p in range(factor)])
    phases /= phases.sum(axis=1, keepdims=True)
    return phases[1:].copy()


class TruePeakLimiter:
    """Lookahead true-peak limiter with a ceiling, at the device rate, `channels` linked channels.

    Works in segments of `segment` samples: a segment's required gain is ceiling / its 4x
    oversampled peak; the gain at segment boundaries is the min over the next `lookahead`
    segments, box-averaged (a smooth attack ramp that is always low enough), then released
    exponentially in dB (`release_s`); samples in between get a linear ramp between boundaries.
    Output = input delayed by `delay` samples (fixed), same length and shape per call: (n,) for
    one channel, (n, C) for C. A segment's peak is the highest of all its channels.
    """

    def __init__(self, rate: int, segment: int = 7, lookahead: int = 3, release_s: float = 0.15,
                 margin_db: float = 0.2, channels: int = 1) -> None:
        self.rate, self.S, self.W = rate, segment, lookahead
        self.channels = C = channels
        self.phases = _interp_filter()
        self.taps = self.phases.shape[1]
        self.decay = math.exp(-segment / (release_s * rate))
        self.margin = db_to_gain(-margin_db)
        self.ceiling_db = MAX_CEILING_DB
        self.muted = False
        # The interpolator needs taps/2 samples after a segment: true peaks of segment k are known
        # once segment k+1 is in (so a segment is at least taps/2 long). Boundary gains need W+1
        # further segments: segment k leaves once segment k+W+1 is in, (W+2)·S samples after it
        # began (35 samples, 0.73 ms at 48 kHz).
        if segment < self.taps // 2:
            raise ValueError(f"limiter: a segment needs at least {self.taps // 2} samples, got {segment}")
        self.delay = (self.W + 2) * self.S
        ring = _pow2(self.delay + self.taps + 2 * segment)
        self._in = np.zeros((ring, C))                        # input ring: lookahead and taps
        self._req = np.ones(_pow2(4 * lookahead))             # required gains, by segment
        self._ring_out = np.zeros((2 * ring, C), np.float32)  # limited samples waiting to leave
        self.st = np.zeros(5)                                 # kernels.L_IN … L_REDUCTION
        self.st[kernels.L_PREV_REQ] = 1.0

    @property
    def gain_reduction_db(self) -> float:
        """The gain reduction of the segment last out (dB, <= 0)."""
        return float(self.st[kernels.L_REDUCTION])

    def set_ceiling(self, ceiling_db: float) -> None:
        """Ceiling in dBFS, clamped to at most -1 dBFS."""
        self.ceiling_db = min(float(ceiling_db), MAX_CEILING_DB)

    def panic(self) -> None:
        """Mute from the next sample out, including what is already in the lookahead."""
        self.muted = True
        self._ring_out[:] = 0.0

    def release_panic(self) -> None:
        self.muted = False

    def process(self, x: np.ndarray) -> np.ndarray:
        """One block (n,) or (n, C) -> limited block of the same shape, float32, delayed by
        `self.delay` samples (one compiled call: engine/audio/kernels.py `limit`)."""
        x = np.asarray(x, np.float64)
        mono = x.ndim == 1
        x2 = np.ascontiguousarray(x[:, None] if mono else x)                           # (n, C), C order
        if x2.shape[1] != self.channels:
            raise ValueError(f"limiter: expected {self.channels} channels, got {x2.shape[1]}")
        y = np.empty(x2.shape, np.float32)
        kernels.limit(x2, y, self._in, self._req, self._ring_out, self.phases, self.st, self.S, self.W, self.delay,
                      db_to_gain(self.ceiling_db), self.margin, self.decay, self.muted)
        return y[:, 0] if mono else y
