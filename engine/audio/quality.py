"""What a listener hears, as numbers: a frame-rate comb, distance to the data, clicks at seams.

Used by `python -m bench quality` and by the tests that must fail on a buzzing decoder.

- `comb_db(x, rate, frame_rate)`: how much of a sound's energy sits on the harmonics of the
  decoder's latent frame rate (250 Hz for the default model: a drone at 250, 500, 750 Hz…).
  Energy within ±`width_hz` of every multiple k·frame_rate (k ≥ 1) up to `fmax`, as a share of
  all the energy below `fmax`, divided by the share those bins would hold in a flat spectrum, in
  dB. 0 dB: no more than white noise puts there; a phone archive's own 30 s stretches measure
  about −1.4 … 2 dB; a decoder repeating its frame output measures 15 dB and more.
- `logmel_stats(x, rate)` and `frechet(a, b)`: Fréchet distance between Gaussian fits of log-mel
  frames (40 bands, 64 ms windows, 16 ms hop), the audio analogue of FID on a small scale:
  0 for the same statistics; two halves of one archive give the scale of "the same material".
- `seam_click_ratio(x, seams, frame)`: mean |second difference| at the output indices where
  decode steps meet, over the same measure in the middle of the steps (about 1 without clicks).

Shapes and units: x (n,) float at `rate` Hz, mono. Pure numpy; called from any thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..stats import Gaussian, fit, frechet

__all__ = ["comb_db", "logmel", "logmel_stats", "frechet", "Gaussian", "fit", "seam_click_ratio", "level_matched",
           "render_walk", "walk_comb_db", "learning_sweep"]

if TYPE_CHECKING:
    from .model import AudioModel


def _welch(x: np.ndarray, rate: int, resolution_hz: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(freqs, power) by Welch's method with Hann windows of 1/resolution_hz s, half overlap."""
    x = np.asarray(x, np.float64)
    n = int(round(rate / resolution_hz))
    if len(x) < n:
        x = np.pad(x, (0, n - len(x)))
    win = np.hanning(n)
    hop = n // 2
    starts = range(0, len(x) - n + 1, hop)
    power = np.zeros(n // 2 + 1)
    for s in starts:
        seg = x[s:s + n]
        power += np.abs(np.fft.rfft((seg - seg.mean()) * win)) ** 2
    return np.fft.rfftfreq(n, 1.0 / rate), power


def comb_db(x: np.ndarray, rate: int, frame_rate: float, fmax: float = 8000.0, width_hz: float = 3.0) -> float:
    """Energy on the harmonics of `frame_rate` relative to a flat spectrum, in dB (see module doc)."""
    freqs, power = _welch(x, rate)
    band = (freqs > 0) & (freqs < min(fmax, rate / 2))
    k = np.round(freqs / frame_rate)
    near = band & (k >= 1) & (np.abs(freqs - k * frame_rate) <= width_hz)
    total = power[band].sum()
    if total <= 0 or not near.any():
        return 0.0
    share = power[near].sum() / total
    flat = near.sum() / band.sum()
    return float(10.0 * np.log10(max(share, 1e-12) / flat))


def mel_filterbank(rate: int, n_fft: int, bands: int, fmin: float = 40.0, fmax: float | None = None) -> np.ndarray:
    """Triangular mel filters (bands, n_fft // 2 + 1) on the HTK mel scale."""
    fmax = fmax or rate / 2
    mel = lambda f: 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)  # noqa: E731
    hz = lambda m: 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)  # noqa: E731
    edges = hz(np.linspace(mel(fmin), mel(fmax), bands + 2))
    freqs = np.fft.rfftfreq(n_fft, 1.0 / rate)
    fb = np.zeros((bands, len(freqs)))
    for b in range(bands):
        lo, mid, hi = edges[b], edges[b + 1], edges[b + 2]
        fb[b] = np.clip(np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)), 0.0, None)
    return fb


def logmel(x: np.ndarray, rate: int, bands: int = 40, window_s: float = 0.064, hop_s: float = 0.016) -> np.ndarray:
    """Log-mel frames (frames, bands), natural log of power + 1e-8."""
    x = np.asarray(x, np.float64)
    n = int(round(window_s * rate))
    n_fft = 1 << (n - 1).bit_length()
    hop = int(round(hop_s * rate))
    if len(x) < n:
        x = np.pad(x, (0, n - len(x)))
    count = 1 + (len(x) - n) // hop
    idx = np.arange(n)[None, :] + hop * np.arange(count)[:, None]
    spec = np.abs(np.fft.rfft(x[idx] * np.hanning(n), n_fft)) ** 2   # (frames, n_fft/2+1)
    return np.log(spec @ mel_filterbank(rate, n_fft, bands).T + 1e-8)


def logmel_stats(x: np.ndarray, rate: int) -> Gaussian:
    """Gaussian fit of the log-mel frames of `x`."""
    return fit(logmel(x, rate))


def seam_click_ratio(x: np.ndarray, seams: np.ndarray, frame: int) -> float:
    """Click detector: mean of the largest |second difference| in the 4 samples before each seam
    over the same in the middle of the steps; about 1 when nothing happens at the seams.

    seams: output indices where a decode step's first sample lands; frame: output samples a step."""
    d2 = np.abs(np.diff(np.asarray(x, np.float64), 2))
    seams = np.asarray(seams)
    seams = seams[(seams >= 3) & (seams + frame < len(d2))]
    if not len(seams):
        return float("nan")
    at = np.array([d2[b - 3:b + 1].max() for b in seams])
    mid = np.array([d2[b + frame // 2 - 3:b + frame // 2 + 1].max() for b in seams])
    return float(at.mean() / max(mid.mean(), 1e-30))


# --- the walk as a listener hears it --------------------------------------------------------------

def level_matched(x: np.ndarray, rms_db: float = -20.0) -> np.ndarray:
    """x scaled to an overall RMS of `rms_db` dBFS (so distances compare material, not level)."""
    x = np.asarray(x, np.float64)
    rms = float(np.sqrt(np.mean(x * x))) if len(x) else 0.0
    return x * (10.0 ** (rms_db / 20.0) / rms) if rms > 1e-9 else x


def render_walk(model: AudioModel, seconds: float, seed: int = 0, out_rate: int | None = None,
                settings: dict[str, float] | None = None, skip_s: float = 1.0) -> np.ndarray:
    """The live walk through `AudioSynth` (navigation, decoder, safety stage), as `ciel run` plays
    it: (n, 2) float32 at `out_rate` (default: the model's rate), the first `skip_s` (fade-in,
    loudness warm-up) left out. settings: parameter name -> value (e.g. "audio/walk/speed": 4)."""
    from ..params import REGISTRY
    from .stream import AudioSynth

    rate = out_rate or model.sample_rate
    v = REGISTRY.defaults()
    for name, value in (settings or {}).items():
        v[REGISTRY.slot(name)] = value
    synth = AudioSynth(model, rate, seed=seed)
    synth.process(v, int(skip_s * rate))
    return synth.process(v, int(seconds * rate)).copy()


def walk_comb_db(model: AudioModel, seconds: float = 30.0, seed: int = 0,
                 settings: dict[str, float] | None = None) -> float:
    """`comb_db` of the live walk (the worse of its two channels) at the model's rate."""
    x = render_walk(model, seconds, seed, settings=settings)
    rate = model.sample_rate
    return max(comb_db(x[:, c], rate, rate / model.hop) for c in range(x.shape[1]))



def learning_sweep(model: AudioModel, seconds: float, out_rate: int = 48000, seed: int = 4) -> tuple[np.ndarray, np.ndarray, int]:
    """The live walk while `audio/learning` sweeps 0 -> 1 -> 0 over `seconds`, one decode step at a
    time: (left channel (n,) at `out_rate`, output index of each step's first sample (steps,),
    output samples a step). Feed them to `seam_click_ratio` (leave out the first second)."""
    from ..params import REGISTRY
    from .stream import AudioSynth

    frame_rate = model.sample_rate / model.hop
    synth = AudioSynth(model, out_rate, seed=seed)
    v = REGISTRY.defaults()
    li = REGISTRY.index("audio/learning")
    steps = int(seconds * frame_rate)
    audio, seams = [], []
    for k in range(steps):
        v[li] = 1.0 - abs(1.0 - 2.0 * k / steps)
        seams.append(synth.next_out_index)
        audio.append(synth.step(v)[:, 0])
    return np.concatenate(audio), np.array(seams), int(round(out_rate / frame_rate))
