"""Latent navigation: where in the archive the sound is, and how it moves from frame to frame.

A trained decoder only sounds like its archive when its latent moves the way the archive's own
latents move. Encoded speech, kitchens and streets change almost completely from one 4 ms frame
to the next (frame-to-frame correlation about 0.1 along every direction); a smooth random walk
changes by a hundredth of that, the decoder is fed nearly the same frame again and again and
repeats its 64-sample output: a drone at the frame rate and its harmonics (250, 500, 750 Hz…),
the same whatever the archive was. So the latent is built from two parts:

    u(t) = T·slow(t) + max(1, T)·fine(t)  (+ offsets, dissolve: engine/audio/stream.py)

- **slow**: where in the archive — a point that jumps, glides, walks and holds under the
  performer's knobs, in the data's own coordinates: the walk's spread is measured in the spread
  of the archive's slow movement (1 = as far as the archive goes), its speed in that spread per
  second, and a jump lands on a real place of the archive.
- **fine**: how it moves — the frame-to-frame motion of encoded archive material (the latents
  minus their 0.1 s moving average), read in real time from a bank of encoded clips stored in the
  model. Grains of 0.3–1.2 s start where the bank's own slow position is nearest the walk's
  (the best of 16 random candidates), so the material fits the place, and cross into each other
  over 32 ms with equal-power weights (the motion keeps its strength through a crossfade).
  A model without encoded clips (untrained) uses white Gaussian motion, its prior's.
- **temperature T** pulls the slow point towards the archive's centre below 1 (more typical
  material; the fine motion stays the archive's) and scales everything above 1 (the sound leaves
  the archive: cracking, gradually).

Each `Voice` is one walk with its own grain reader; stereo is two voices (engine/audio/stream.py
mixes their latents by `audio/width`). Units: knob coordinates (the model's PCA, in sigma of the
training latents). All state is numpy; one thread (the decode loop or the renderer) per voice.
Random draws come from the generator passed in, in a fixed order per step (same seed, same path).
"""

from __future__ import annotations

import math

import numpy as np

SLOW_S = 0.1            # moving-average window that splits slow from fine motion (s)
GRAIN_S = (0.3, 1.2)    # grain lengths (s), uniform
XFADE_S = 0.032         # crossfade between grains (s)
CANDIDATES = 16         # random grain starts compared with the walk's position
STILL_SHARE = 0.4       # the stillest share of the bank's frames never starts a grain
QUIET_SHARE = 0.3       # nor the quietest share of its source sound (pauses between words)
QUIET_DB = -50.0        # nor anything quieter than this (dBFS, source sound)
PRIOR_SLOW = 0.35       # without a bank: share of the prior's spread that moves slowly...
PRIOR_FINE = 0.94       # ...and frame to frame (0.35² + 0.94² ≈ 1)


def moving_average(x: np.ndarray, n: int) -> np.ndarray:
    """Centred moving average of x (T, D) over n frames along T (edges averaged over what exists)."""
    if n <= 1:
        return x.copy()
    c = np.cumsum(np.pad(x, ((1, 0), (0, 0))), axis=0)            # (T + 1, D)
    t = np.arange(len(x))
    lo = np.clip(t - n // 2, 0, len(x))
    hi = np.clip(t + (n - n // 2), 0, len(x))
    return (c[hi] - c[lo]) / (hi - lo)[:, None]


class MotionBank:
    """Encoded archive material split into slow position and fine motion.

    clips: encoded clips in knob coordinates, each (T_i, D); frame_rate: latent frames per second;
    levels: the source sound's level per frame (T_i,) in dBFS for each clip, or () if unknown.
    `slow` and `fine` are (N, D) over all clips' frames (clips concatenated; a grain never
    crosses a clip's end); `slow_std` (D,) is the spread of the slow part (the walk's unit).
    """

    def __init__(self, clips: tuple[np.ndarray, ...], frame_rate: float, dim: int,
                 levels: tuple[np.ndarray, ...] = ()) -> None:
        self.dim = dim
        n = max(1, int(round(SLOW_S * frame_rate)))
        keep = [i for i, c in enumerate(clips) if len(c) >= 4 * n]
        usable = [np.asarray(clips[i], np.float64) for i in keep]
        usable_levels = [np.asarray(levels[i], np.float64) for i in keep] if len(levels) == len(clips) else []
        self.empty = not usable
        if self.empty:
            self.slow = np.zeros((0, dim))
            self.fine = np.zeros((0, dim))
            self.slow_std = np.full(dim, PRIOR_SLOW)
            self.slow_rms = PRIOR_SLOW * math.sqrt(dim)
            self.ends = np.zeros(0, np.int64)
            return
        slows = [moving_average(c, n) for c in usable]
        self.slow = np.concatenate(slows)                                  # (N, D)
        self.fine = np.concatenate([c - s for c, s in zip(usable, slows)])  # (N, D)
        self.slow_std = np.maximum(self.slow.std(0), 1e-3)                  # (D,)
        # typical size of the slow position around the bank's own centre (knob units)
        self.slow_rms = float(np.sqrt(np.mean(np.sum(self.slow ** 2, axis=1))))
        bounds = np.cumsum([0] + [len(c) for c in usable])
        # end of the clip each frame belongs to (a grain stops there)
        self.ends = np.repeat(bounds[1:], np.diff(bounds))
        # how much the material moves around each frame (RMS of the fine motion over 0.25 s)
        self.motion = np.sqrt(moving_average(np.mean(self.fine ** 2, axis=1, keepdims=True),
                                             max(1, int(0.25 * frame_rate))))[:, 0]
        self.lively = self.motion >= np.quantile(self.motion, STILL_SHARE)
        if usable_levels:
            # the source sound's level around each frame: pauses and silences start no grain
            level = moving_average(np.concatenate(usable_levels)[:, None], max(1, int(0.25 * frame_rate)))[:, 0]
            loud = level >= max(QUIET_DB, float(np.quantile(level, QUIET_SHARE)))
            if np.any(self.lively & loud):
                self.lively &= loud

    def __len__(self) -> int:
        return len(self.slow)

    def random_place(self, rng: np.random.Generator) -> np.ndarray:
        """A real slow position of the archive (D,), in walk units (slow_std), or the prior's."""
        if self.empty:
            return rng.standard_normal(self.dim)
        return self.slow[rng.integers(len(self.slow))] / self.slow_std

    def grain_start(self, place: np.ndarray, min_frames: int, rng: np.random.Generator) -> int:
        """Of CANDIDATES random frames with room for `min_frames`, the one whose slow position is
        nearest `place` (D,) in walk units."""
        room = np.nonzero((self.ends - np.arange(len(self.ends)) >= min_frames) & self.lively)[0]
        pool = room if len(room) else np.arange(len(self.slow))
        cand = pool[rng.integers(len(pool), size=CANDIDATES)]
        d = np.sum((self.slow[cand] / self.slow_std - place) ** 2, axis=1)
        return int(cand[int(np.argmin(d))])


class Voice:
    """One walk through the archive with its own grain reader.

    `step(centre, speed, spread, hold, dt)` advances one latent frame and returns (slow (D,) in
    knob coordinates, fine (D,) in knob coordinates). centre: (D,) in walk units; speed in walk
    units per second; spread: stationary spread of the walk in walk units.
    """

    WALK_TAU_S = 0.5  # correlation time of the walk's velocity

    def __init__(self, bank: MotionBank, frame_rate: float, rng: np.random.Generator) -> None:
        self.bank = bank
        self.rng = rng
        self.dim = bank.dim
        self.walk = np.zeros(self.dim)
        self._vel = np.zeros(self.dim)
        self._grain = (max(2, int(GRAIN_S[0] * frame_rate)), max(3, int(GRAIN_S[1] * frame_rate)))
        self._xfade = max(1, int(round(XFADE_S * frame_rate)))
        self._pos = -1          # current grain's read head (bank frame)
        self._left = 0          # frames left in the current grain
        self._old = -1          # previous grain's head while crossfading
        self._fade = 0          # crossfade frames done (0 = none running)

    def _fine(self, place: np.ndarray) -> np.ndarray:
        bank = self.bank
        if bank.empty:
            return PRIOR_FINE * self.rng.standard_normal(self.dim)
        if self._left <= 0:
            length = int(self.rng.integers(self._grain[0], self._grain[1] + 1))
            self._old, self._fade = self._pos, (1 if self._pos >= 0 else 0)
            self._pos = bank.grain_start(place, length + self._xfade, self.rng)
            self._left = length
        new = bank.fine[self._pos]
        if self._fade:
            a = 0.5 * math.pi * self._fade / (self._xfade + 1)
            out = math.sin(a) * new + math.cos(a) * bank.fine[self._old]
            self._old = min(self._old + 1, int(bank.ends[self._old]) - 1)
            self._fade = self._fade + 1 if self._fade < self._xfade else 0
        else:
            out = new
        self._pos += 1
        self._left -= 1
        if self._pos >= bank.ends[self._pos - 1]:   # the clip ends: the next frame starts a new grain
            self._pos -= 1
            self._left = 0
        return out

    def step(self, centre: np.ndarray, speed: float, spread: float, hold: bool, dt: float) -> tuple[np.ndarray, np.ndarray]:
        noise = self.rng.standard_normal(self.dim)
        if not hold:
            tau = self.WALK_TAU_S
            self._vel += -self._vel * (dt / tau) + speed * math.sqrt(2 * dt / tau) * noise
            if spread > 1e-6:
                # restoring rate k so that the walk's stationary spread is `spread`
                c = speed * speed * tau / (spread * spread)
                k = (-1.0 + math.sqrt(1.0 + 4.0 * tau * c)) / (2.0 * tau)
                self.walk += (self._vel - k * self.walk) * dt
            else:
                self.walk[:] = 0.0
        place = centre + self.walk                              # walk units
        slow = place * self.bank.slow_std                       # knob units
        # beyond the archive's range the motion grows with the distance, keeping the archive's
        # balance of place and motion (a still latent far out is the decoder's own buzz)
        reach = math.sqrt(float(np.dot(slow, slow))) / self.bank.slow_rms
        return slow, max(1.0, reach) * self._fine(place)
