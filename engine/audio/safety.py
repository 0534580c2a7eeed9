"""The safety stage: what keeps neural noise from hurting ears. Always on; nothing bypasses it.

Two parts, both block-based numpy with state carried between blocks (any block length works and
the result does not depend on how a signal is cut into blocks):

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

MAX_CEILING_DB = -1.0


def db_to_gain(db: float) -> float:
    return 10.0 ** (db / 20.0)


def gain_to_db(g: float) -> float:
    return 20.0 * math.log10(max(g, 1e-12))


class _History:
    """The last `n` samples of a stream, prepended to each new block (FIR context); (n,) for
    one channel, (n, C) for C."""

    def __init__(self, n: int, channels: int = 0) -> None:
        self.tail = np.zeros((n, channels) if channels else n, np.float64)

    def extend(self, x: np.ndarray) -> np.ndarray:
        """Return tail + x (float64) and keep the new tail."""
        full = np.concatenate((self.tail, x))
        if len(self.tail):
            self.tail = full[-len(self.tail):].copy()
        return full


class Conditioner:
    """DC blocker -> high-frequency tamer -> loudness normalisation, at the model rate.

    rate: Hz. `process(x, target_db)` returns the conditioned block (same shape, float32): x is
    (n,) mono, or (n, C) with `channels` C. Channels are linked: one tamer setting and one
    loudness gain from the energy of all of them, so the stereo image never moves; over more than
    two speakers the loudness is their summed power over two (as loud as a stereo pair). The tamer
    delays the signal by 2 samples (0.125 ms at 16 kHz).
    """

    HF_TAPS = np.array([1.0, -4.0, 6.0, -4.0, 1.0]) / 16.0  # |H| = sin^4(w/2): 0 at DC, 1 at Nyquist

    def __init__(self, rate: int, dc_hz: float = 5.0, hf_share: float = 0.08, hf_min: float = 0.2,
                 loudness_s: float = 0.4, gate_db: float = -70.0, max_boost_db: float = 36.0,
                 max_cut_db: float = -40.0, channels: int = 0) -> None:
        self.rate = rate
        self.channels = channels
        self.dc_a = math.exp(-2.0 * math.pi * dc_hz / rate)
        self.dc_state = np.zeros(channels) if channels else 0.0
        self.hf_share, self.hf_min = hf_share, hf_min
        self.hf_c = hf_min
        self.hist = _History(len(self.HF_TAPS) - 1, channels)
        self.loud_tau = loudness_s
        self.gate = db_to_gain(gate_db) ** 2
        self.gain_range = (db_to_gain(max_cut_db), db_to_gain(max_boost_db))
        self.ms: float | None = None
        self.elapsed = 0.0
        self.gain = 1.0

    def _dc_block(self, x: np.ndarray) -> np.ndarray:
        """x minus its one-pole low-pass (closed form per block, float64)."""
        a, n = self.dc_a, len(x)
        k = np.arange(n, dtype=np.float64)
        w = a ** (-k)  # blocks are short (a hop), so this stays well inside float64
        if x.ndim == 2:
            k, w = k[:, None], w[:, None]
        low = a ** (k + 1) * self.dc_state + (1 - a) * a ** k * np.cumsum(x * w, axis=0)
        self.dc_state = low[-1].copy() if x.ndim == 2 else float(low[-1])
        return x - low

    def _tame(self, x: np.ndarray, dt: float) -> np.ndarray:
        full = self.hist.extend(x)
        n = len(x)
        if full.ndim == 1:
            high = np.convolve(full, self.HF_TAPS, mode="valid")  # aligned with full[2:-2]
        else:  # the same 5 taps (symmetric), per channel: (n, C)
            high = sum(t * full[j:j + n] for j, t in enumerate(self.HF_TAPS))
        dry = full[2:len(full) - 2]
        e_all = float(np.sum(dry * dry)) + 1e-12
        e_high = float(np.sum(high * high))
        need = 1.0 - math.sqrt(self.hf_share * e_all / e_high) if e_high > self.hf_share * e_all else 0.0
        want = max(self.hf_min, min(1.0, need))
        tau = 0.005 if want > self.hf_c else 0.3  # fast attack, slow release
        c_new = self.hf_c + (1 - math.exp(-dt / tau)) * (want - self.hf_c)
        ramp = np.linspace(self.hf_c, c_new, len(x) + 1)[1:]
        self.hf_c = c_new
        return dry - (ramp[:, None] if dry.ndim == 2 else ramp) * high

    def _normalise(self, x: np.ndarray, target_db: float, dt: float) -> np.ndarray:
        ms = float(np.mean(x * x)) if len(x) else 0.0
        if self.channels > 2:   # N speakers as loud together as a stereo pair: their power summed, halved
            ms *= self.channels / 2.0
        self.elapsed += dt
        warm = self.elapsed < self.loud_tau  # warm-up: plain running mean, gain follows at once
        if self.ms is None:
            self.ms = ms
        else:
            a = dt / self.elapsed if warm else 1 - math.exp(-dt / self.loud_tau)
            self.ms += a * (ms - self.ms)
        g_old = self.gain
        if self.ms > self.gate:
            lo, hi = self.gain_range
            want = min(hi, max(lo, db_to_gain(target_db) / math.sqrt(self.ms)))
            tau = 0.08 if want < g_old else 0.6  # turn down fast, up slowly
            self.gain = want if warm else g_old * (want / g_old) ** (1 - math.exp(-dt / tau))
        g = np.linspace(g_old, self.gain, len(x) + 1)[1:]
        return x * (g[:, None] if x.ndim == 2 else g)

    def process(self, x: np.ndarray, target_db: float) -> np.ndarray:
        """One block (n,) or (n, C) at the model rate -> conditioned block of the same shape,
        float32; NaN/inf become 0."""
        x = np.nan_to_num(np.asarray(x, np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        if len(x) == 0:
            return x.astype(np.float32)
        dt = len(x) / self.rate
        y = self._normalise(self._tame(self._dc_block(x), dt), target_db, dt)
        return y.astype(np.float32)


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

    def __init__(self, rate: int, segment: int = 8, lookahead: int = 4, release_s: float = 0.15,
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
        # once segment k+1 is in. Boundary gains need W+1 further segments.
        self.delay = (self.W + 3) * self.S
        self._pending = np.zeros((0, C), np.float64)    # input not yet in a complete segment
        self._ctx = np.zeros((self.taps, C), np.float64)  # samples before the unprocessed ones
        self._req = np.ones(0)                          # required gains of segments not yet output
        self._seg_x = np.zeros((0, C), np.float64)      # samples of those segments
        self._hmin = np.ones(self.W)                     # last W-1 req2 values (running min context)
        self._prev_req = 1.0
        self._att = 0.0                                  # release state (attenuation, nepers)
        self._b_last: float | None = None               # last boundary gain output
        self._out = np.zeros((self.delay, C), np.float32)  # output waiting to leave
        self.gain_reduction_db = 0.0

    def set_ceiling(self, ceiling_db: float) -> None:
        """Ceiling in dBFS, clamped to at most -1 dBFS."""
        self.ceiling_db = min(float(ceiling_db), MAX_CEILING_DB)

    def panic(self) -> None:
        """Mute from the next sample out, including what is already in the lookahead."""
        self.muted = True
        self._out[:] = 0.0

    def release_panic(self) -> None:
        self.muted = False

    def _true_peaks(self, block: np.ndarray, after: np.ndarray) -> np.ndarray:
        """Max per segment over channels of |block| and of its 4x interpolation; `after` holds >=
        taps/2 samples that follow the block, `self._ctx` the taps samples before it. (n, C) -> (n / S,)"""
        half = self.taps // 2
        full = np.concatenate((self._ctx, block, after[:half]))
        peak = np.abs(block).max(axis=1)
        start = len(self._ctx) - half + 1
        for c in range(self.channels):
            for ph in self.phases:
                # v[j] is the value between full[j + half - 1] and full[j + half]
                v = np.convolve(full[:, c], ph, mode="valid")[start:start + len(block)]
                np.maximum(peak, np.abs(v), out=peak)
        return peak.reshape(-1, self.S).max(axis=1)

    def process(self, x: np.ndarray) -> np.ndarray:
        """One block (n,) or (n, C) -> limited block of the same shape, float32, delayed by
        `self.delay` samples."""
        x = np.nan_to_num(np.asarray(x, np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        mono = x.ndim == 1
        if mono:
            x = x[:, None]
        if x.shape[1] != self.channels:
            raise ValueError(f"limiter: expected {self.channels} channels, got {x.shape[1]}")
        S = self.S
        pending = np.concatenate((self._pending, x))
        nseg = len(pending) // S
        # Keep one complete segment back: its true peak needs the interpolator's lookahead.
        ready = max(0, nseg - 1)
        if ready:
            block = pending[:ready * S]
            nxt = pending[ready * S:]
            peaks = self._true_peaks(block, nxt)
            self._ctx = np.concatenate((self._ctx, block))[-self.taps:]
            self._pending = nxt
            ceiling = db_to_gain(self.ceiling_db) * self.margin
            req = np.minimum(1.0, ceiling / np.maximum(peaks, 1e-12))
            # a ramp between boundary gains b_k, b_k+1 must stay below req[k]: b_k <= req[k-1], req[k]
            req2 = np.minimum(req, np.concatenate(([self._prev_req], req[:-1])))
            self._prev_req = float(req[-1])
            self._req = np.concatenate((self._req, req2))
            self._seg_x = np.concatenate((self._seg_x, block))
        else:
            self._pending = pending
        out = self._emit()
        self._out = np.concatenate((self._out, out))
        y = self._out[:len(x)]
        self._out = self._out[len(x):]
        return y[:, 0] if mono else y

    def _emit(self) -> np.ndarray:
        """Output every segment whose boundary gains are known (needs W more req values)."""
        S, W = self.S, self.W
        n_out = len(self._req) - W
        if n_out <= 0:
            return np.zeros((0, self.channels), np.float32)
        # h[k] = min(req2[k-W+1..k]); g[k] = mean(h[k..k+W-1]) <= req2[k]
        hr = np.concatenate((self._hmin[1:], self._req))           # W-1 context values first
        h = np.min(np.lib.stride_tricks.sliding_window_view(hr, W), axis=1)  # aligned to req
        g = np.mean(np.lib.stride_tricks.sliding_window_view(h, W), axis=1)[: n_out + 1]
        # release: att[k] = max(A[k], att[k-1] * decay), vectorised as a running max
        a = -np.log(np.maximum(g, 1e-9))
        k = np.arange(len(a), dtype=np.float64)
        scale = self.decay ** (-k)
        att = np.maximum.accumulate(np.maximum(a * scale, self._att * self.decay)) / scale
        b = np.exp(-att)                                              # n_out + 1 boundary gains
        self._att = float(att[n_out - 1])
        ramp = np.arange(S) / S
        gain = (b[:-1, None] + (b[1:] - b[:-1])[:, None] * ramp[None, :]).reshape(-1)
        seg_x = self._seg_x[: n_out * S]
        ceiling = db_to_gain(self.ceiling_db)
        y = np.clip(seg_x * gain[:, None], -ceiling, ceiling)
        if self.muted:
            y[:] = 0.0
        self.gain_reduction_db = -20.0 * float(att[n_out - 1]) / math.log(10)
        self._hmin = np.concatenate((self._hmin, self._req[:n_out]))[-W:]
        self._req = self._req[n_out:]
        self._seg_x = self._seg_x[n_out * S:]
        return y.astype(np.float32)
