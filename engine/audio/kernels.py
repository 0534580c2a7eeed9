"""Compiled inner loops of the real-time path: the safety stage and the resampler, per sample.

At one latent frame per step (64 samples at 16 kHz, about 192 at 48 kHz) these stages are a few
thousand multiply-adds; written as numpy expressions they were some fifty numpy calls a step,
and the calls, not the arithmetic, cost a quarter of a millisecond. Here each stage is one call
into a loop compiled by numba (LLVM) on first use and cached on disk beside this file (or in
numba's user cache where that is read-only), so the audio process pays the compilation once per
machine, before its stream opens (its warm-up steps).

Every kernel works on state arrays its caller owns (engine/audio/safety.py, engine/audio/stream.py
keep the meaning of each field beside the array); nothing here keeps state of its own. Inputs are
float64 (n, C) blocks; NaN and infinities count as 0. Called from the audio process's decode loop
or an offline renderer: one thread per state.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# Conditioner state `st`, float64: the tamer's setting, the mean square (NaN until the first
# block), seconds elapsed, the loudness gain
C_HF, C_MS, C_ELAPSED, C_GAIN = range(4)


@njit(cache=True, nogil=True)
def condition(x: np.ndarray, out: np.ndarray, dc: np.ndarray, hist: np.ndarray, st: np.ndarray, rate: float,
              dc_a: float, taps: np.ndarray, hf_share: float, hf_min: float, loud_tau: float, gate: float,
              gain_lo: float, gain_hi: float, target: float, channel_scale: float) -> None:
    """One block through the Conditioner: DC blocker, high-frequency tamer, loudness gain.

    x (n, C) float64 -> out (n, C) float32. dc (C,): the DC blocker's low-pass; hist (4, C): the
    last 4 DC-blocked samples (the tamer's FIR context, so it delays by 2 samples); st: see
    C_HF … C_GAIN; taps (5,): the symmetric high-band FIR; target: the loudness target, linear;
    channel_scale: the mean square's weight (N speakers summed, over two)."""
    n, C = x.shape
    dt = n / rate
    full = np.empty((n + 4, C))
    full[:4] = hist
    for c in range(C):
        low = dc[c]
        for i in range(n):
            v = x[i, c]
            if not math.isfinite(v):
                v = 0.0
            low = dc_a * low + (1.0 - dc_a) * v
            full[i + 4, c] = v - low
        dc[c] = low
    hist[:] = full[n:]
    e_all = 1e-12
    e_high = 0.0
    high = np.empty((n, C))
    for i in range(n):
        for c in range(C):
            h = 0.0
            for j in range(5):
                h += taps[j] * full[i + j, c]
            high[i, c] = h
            d = full[i + 2, c]
            e_all += d * d
            e_high += h * h
    need = 1.0 - math.sqrt(hf_share * e_all / e_high) if e_high > hf_share * e_all else 0.0
    want = max(hf_min, min(1.0, need))
    hf = st[C_HF]
    tau = 0.005 if want > hf else 0.3   # fast attack, slow release
    hf_new = hf + (1.0 - math.exp(-dt / tau)) * (want - hf)
    st[C_HF] = hf_new
    ms = 0.0
    for i in range(n):
        c_i = hf + (hf_new - hf) * (i + 1) / n
        for c in range(C):
            v = full[i + 2, c] - c_i * high[i, c]
            high[i, c] = v          # the tamed block, in place
            ms += v * v
    ms = ms / (n * C) * channel_scale
    st[C_ELAPSED] += dt
    warm = st[C_ELAPSED] < loud_tau   # warm-up: a plain running mean, the gain follows at once
    if math.isnan(st[C_MS]):
        st[C_MS] = ms
    else:
        a = dt / st[C_ELAPSED] if warm else 1.0 - math.exp(-dt / loud_tau)
        st[C_MS] += a * (ms - st[C_MS])
    g_old = st[C_GAIN]
    g_new = g_old
    if st[C_MS] > gate:
        want_g = min(gain_hi, max(gain_lo, target / math.sqrt(st[C_MS])))
        tau = 0.08 if want_g < g_old else 0.6   # turn down fast, up slowly
        g_new = want_g if warm else g_old * (want_g / g_old) ** (1.0 - math.exp(-dt / tau))
    st[C_GAIN] = g_new
    for i in range(n):
        g = g_old + (g_new - g_old) * (i + 1) / n
        for c in range(C):
            out[i, c] = high[i, c] * g


# TruePeakLimiter state `st`, float64: samples in, the last segment's required gain, the
# attenuation (nepers) at the next segment's start and its gain, the gain reduction of the
# segment last emitted (dB, <= 0)
L_IN, L_PREV_REQ, L_ATT, L_GAIN, L_REDUCTION = range(5)


@njit(cache=True, nogil=True)
def limit(x: np.ndarray, y: np.ndarray, xr: np.ndarray, rq: np.ndarray, out_ring: np.ndarray, phases: np.ndarray,
          st: np.ndarray, S: int, W: int, delay: int, ceiling: float, margin: float, decay: float, muted: bool) -> None:
    """One block through the TruePeakLimiter, sample by sample (block-invariant by construction).

    x (n, C) float64 -> y (n, C) float32, the input `delay` samples later, limited. xr (R, C): the
    input ring (R a power of two covering the lookahead and the interpolator's taps); rq (Q,): the
    ring of required segment gains (ones at first; Q a power of two >= 4 W); out_ring (O, C)
    float32: limited samples waiting to leave (zeros at first; O a power of two > 2 delay);
    phases (P, taps): the 4x interpolator's in-between phases; st: see L_IN … L_REDUCTION.

    Segment k (S samples) is known once segment k + 1 is in: its true peak (the samples and their
    interpolations, every channel) gives its required gain ceiling · margin / peak (at most 1),
    min'ed with the previous segment's so a ramp between boundaries stays below both. The gain at
    boundary k is the mean over the next W of the running min over W of those, released
    exponentially (`decay` per segment, in nepers); segment k leaves on a linear ramp between its
    two boundary gains, clipped at `ceiling` (zeros when `muted`), once segment k + W + 1 is in."""
    n, C = x.shape
    R, Q, N_OUT = xr.shape[0], rq.shape[0], out_ring.shape[0]
    P, taps = phases.shape
    half = taps // 2
    limit_gain = ceiling * margin
    t = int(st[L_IN])
    for i in range(n):
        for c in range(C):
            v = x[i, c]
            xr[t & (R - 1), c] = v if math.isfinite(v) else 0.0
        t += 1
        if t % S == 0:
            q = t // S - 1               # the segment just completed
            k = q - 1                    # the segment whose true peak is now known
            if k >= 0:
                peak = 0.0
                for a in range(k * S, k * S + S):
                    for c in range(C):
                        peak = max(peak, abs(xr[a & (R - 1), c]))
                        for p in range(P):
                            v = 0.0      # the value between samples a and a + 1 at phase p + 1
                            for m in range(taps):
                                b = a - half + 1 + m
                                if b >= 0:
                                    v += phases[p, taps - 1 - m] * xr[b & (R - 1), c]
                            peak = max(peak, abs(v))
                req = min(1.0, limit_gain / max(peak, 1e-12))
                rq[k & (Q - 1)] = min(req, st[L_PREV_REQ])
                st[L_PREV_REQ] = req
                e = k - W                # the segment whose two boundary gains are now known
                if e >= 0:
                    if e == 0:
                        st[L_ATT] = _attenuation(rq, 0, W)
                        st[L_GAIN] = math.exp(-st[L_ATT])
                    att0, b0 = st[L_ATT], st[L_GAIN]
                    att1 = max(_attenuation(rq, e + 1, W), att0 * decay)
                    b1 = math.exp(-att1)
                    st[L_ATT], st[L_GAIN] = att1, b1
                    st[L_REDUCTION] = -20.0 * att0 / math.log(10.0)
                    for j in range(S):
                        g = b0 + (b1 - b0) * j / S
                        a = e * S + j
                        for c in range(C):
                            v = min(ceiling, max(-ceiling, xr[a & (R - 1), c] * g))
                            out_ring[(a + delay) & (N_OUT - 1), c] = 0.0 if muted else v
        src = (t - 1) & (N_OUT - 1)
        for c in range(C):
            y[i, c] = out_ring[src, c]
            out_ring[src, c] = 0.0
    st[L_IN] = t


@njit(cache=True, nogil=True)
def _attenuation(rq: np.ndarray, k: int, W: int) -> float:
    """-ln of boundary k's gain before release: the mean over rq[k … k+W-1] of each one's running
    min over the W values ending there (segments before the first count as gain 1)."""
    Q = rq.shape[0]
    g = 0.0
    for j in range(k, k + W):
        h = 1.0
        for m in range(j - W + 1, j + 1):
            if m >= 0:
                h = min(h, rq[m & (Q - 1)])
        g += h
    return -math.log(max(g / W, 1e-9))


@njit(cache=True, nogil=True)
def resample(buf: np.ndarray, phases: np.ndarray, first_out: int, count: int, M: int, L: int, first_in: int,
             out: np.ndarray) -> None:
    """Polyphase resampling: out[i] (count, C) = sum_k phases[pos % L, k] · buf[pos // L - first_in - k]
    with pos = (first_out + i) · M; buf (K - 1 + n, C) float64 holds the history, then the block."""
    K = phases.shape[1]
    C = buf.shape[1]
    for i in range(count):
        pos = (first_out + i) * M
        base = pos // L - first_in
        ph = pos % L
        for c in range(C):
            acc = 0.0
            for k in range(K):
                acc += phases[ph, k] * buf[base - k, c]
            out[i, c] = acc
