"""What ciel hears: level, brightness, noisiness and onsets of its own sound and of an input.

The audio process (engine/audio/child.py) keeps two mono rings at the device rate: what the decode
loop hands to the output (ciel's own sound, ahead of the port by the run-ahead) and, when an input
is open (`[audio] input`, `--input`), what the PortAudio callback received. Every `hop` frames the
decode loop asks `Ear.hear` for the latest `size` frames of the signal `listen/source` chooses
(both summed, ciel alone, the input alone) and writes the four figures into the status block;
the main process publishes them as the read-only parameters `listen/*` (engine/modulate.py).

Figures (the parameters' units):
- level:    RMS of the window in dBFS, clamped to -60..0 (-60 = silence);
- centroid: the power spectrum's centroid on a log scale, 50 Hz → 0, 12 kHz → 1 (0 in silence);
- flatness: geometric over arithmetic mean of the power spectrum (Wiener entropy), 0 = a pure tone,
            1 = white noise (0 in silence);
- onset:    1 at an attack, decaying with a 0.25 s time constant. An attack is a rise of the
            half-wave rectified log-spectral flux (the spectrum floored 80 dB under full scale)
            above twice its mean over the last half second plus 0.5 (a tenfold rise of the power
            in half the bins), at least 50 ms after the previous one, above -50 dBFS.

Thread: the audio process's decode loop only. `hear` allocates its FFT's output and a few
temporaries per hop (about 5 ms of sound at 48 kHz): small, and never in the callback.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SILENCE_DB = -60.0
CENTROID_LO_HZ, CENTROID_HI_HZ = 50.0, 12000.0
ONSET_DECAY_S = 0.25
ONSET_GAP_S = 0.05
ONSET_FLOOR_DB = -50.0
FLUX_MEMORY_S = 0.5


@dataclass(frozen=True)
class Heard:
    """One analysis: level (dBFS), centroid (0..1), flatness (0..1), onset (0..1)."""

    level_db: float
    centroid: float
    flatness: float
    onset: float


class Ear:
    """Analysis of the newest `size` frames every `hop` frames at `rate` Hz.

    size: the window (default about 21 ms: 1024 frames at 48 kHz); hop: frames between analyses
    (a quarter window, about 5.3 ms). Keeps the previous spectrum and the recent flux for onsets.
    """

    def __init__(self, rate: int, window_s: float = 0.0213) -> None:
        self.rate = rate
        self.size = 1 << max(6, round(math.log2(max(window_s * rate, 64))))
        self.hop = self.size // 4
        self.window = np.hanning(self.size).astype(np.float32)                      # (size,)
        freqs = np.fft.rfftfreq(self.size, 1.0 / rate)[1:]                          # (bins,) no DC
        self.freqs = freqs.astype(np.float64)
        self._floor = (self.size / 4) ** 2 * 1e-8        # power per bin 80 dB under a full-scale sine's peak
        self._prev = np.full(len(freqs), math.log10(self._floor))                  # log power, (bins,)
        hops = max(4, int(FLUX_MEMORY_S * rate / self.hop))
        self._flux = np.zeros(hops)
        self._n = 0
        self._since_onset = 10 ** 9            # frames since the last attack
        self._gap = int(ONSET_GAP_S * rate)
        self.onset = 0.0
        self.onsets = 0   # attacks heard since start

    def hear(self, x: np.ndarray, frames: int = 0) -> Heard:
        """The figures of `x`, (size,) float32 mono, the newest `size` frames; `frames`: how many
        are new since the last call (the hop when 0; the decode loop calls about every hop, and
        the onset's decay and gap follow the frames, not the calls)."""
        frames = frames or self.hop
        x = x.astype(np.float64, copy=False)
        ms = float(np.dot(x, x)) / len(x)
        level = max(SILENCE_DB, min(0.0, 10.0 * math.log10(ms + 1e-30)))
        power = np.abs(np.fft.rfft(x * self.window))[1:] ** 2                       # (bins,)
        total = float(power.sum())
        self.onset *= math.exp(-frames / (ONSET_DECAY_S * self.rate))
        self._since_onset += frames
        # onsets: the rise of the log spectrum (floored 80 dB down, so silence reads as steady)
        logp = np.log10(power + self._floor)                                        # (bins,)
        flux = float(np.maximum(logp - self._prev, 0.0).mean())
        self._prev[:] = logp
        memory = self._flux[: min(self._n, len(self._flux))]
        threshold = 2.0 * float(memory.mean()) + 0.5 if len(memory) else math.inf
        if flux > threshold and level > ONSET_FLOOR_DB and self._since_onset >= self._gap:
            self.onset, self._since_onset = 1.0, 0
            self.onsets += 1
        self._flux[self._n % len(self._flux)] = flux
        self._n += 1
        if level <= SILENCE_DB or total <= 0.0:
            return Heard(SILENCE_DB, 0.0, 0.0, self.onset)
        centroid_hz = float(np.dot(self.freqs, power)) / total
        centroid = math.log(max(centroid_hz, CENTROID_LO_HZ) / CENTROID_LO_HZ) / math.log(CENTROID_HI_HZ / CENTROID_LO_HZ)
        flatness = float(10.0 ** np.log10(power + total * 1e-12).mean() / (total / len(power)))
        return Heard(level, min(1.0, max(0.0, centroid)), min(1.0, max(0.0, flatness)), self.onset)
