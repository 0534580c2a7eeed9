"""Where the sound goes: N speakers in a row or a ring, and equal-power panning between neighbours.

Stereo is a row of two: pan −1 is the left speaker, +1 the right, and the gains are the
classic constant-power law cos/sin((pan + 1)·π/4). With `[audio] channels = N` (or
`--channels N`) an installation plays over N speakers:

- `layout = "ring"` (the default for N ≥ 3): speakers equally spaced on a circle around the
  listener, numbered clockwise from the front (speaker 1 at 0°, speaker 2 at 360°/N, …) as an
  octophonic ring is usually wired. A pan p is the azimuth p·180°: 0 in front, +0.5 at the
  right (90°), −0.5 at the left, ±1 behind. `audio/cloud/pan` 1 spreads the cloud over the
  whole circle.
- `layout = "line"`: speakers in a row from left to right (a wall of screens, a corridor).
  A pan p places the sound at (p + 1)/2 of the way from the first speaker to the last.

A source between two speakers sounds from those two only, at gains cos(f·π/2) and sin(f·π/2)
for its fraction f of the way from one to the next, so its power is the same wherever it is
(SuperCollider's PanAz with width 2, VBAP in one dimension).

The pair of ciel's main voice is placed at `pair` positions: the left and right speakers of a
row, the listener's left and right (−90°, +90°) on a ring. The reverb is stereo (Freeverb); each
speaker gets its own mix of the two returns, cos(φ)·L + sin(φ)·R at 1/sqrt(N/2), with φ turning
by π/N from speaker to speaker on a ring, from behind the listener (opposite speakers
uncorrelated; the half turn closes behind, never in front) and from 0 to π/2 along a row: a
diffuse wash around the room with the power of the stereo return. One speaker plays the pair
and the return at 1/sqrt(2) each.

Shapes: pans (S,) -> gains (S, N). Plain numpy, no state; called from the synth's thread.
"""

from __future__ import annotations

import math

import numpy as np

LAYOUTS = ("ring", "line")


class Speakers:
    """`n` speakers in `layout` ("ring" or "line"; two speakers are always a row)."""

    def __init__(self, n: int, layout: str = "ring") -> None:
        if n < 1:
            raise ValueError(f"speakers: need at least 1, got {n}")
        if layout not in LAYOUTS:
            raise ValueError(f"speakers: layout {layout!r} is not one of {', '.join(LAYOUTS)}")
        self.n = int(n)
        self.ring = layout == "ring" and n >= 3
        self.layout = "ring" if self.ring else "line"
        pair = (-0.5, 0.5) if self.ring else (-1.0, 1.0)
        self.pair = (self.gains(np.array(pair)) if self.n > 1
                     else np.full((2, 1), math.sqrt(0.5)))              # (2, N): the main voice's L, R
        # the reverb return (2, N): speaker k gets cos(φk)·L + sin(φk)·R at 1/sqrt(N/2); on a
        # ring φ turns by π/N from speaker to speaker starting behind the listener, so opposite
        # speakers get uncorrelated mixes (Freeverb's L and R are) and neighbours similar ones,
        # except the two on either side of the back, where the half turn closes with a flipped
        # sign; on a row φ goes from 0 (L) at the first to π/2 (R) at the last
        if self.n == 2:
            self.wash = np.eye(2)
        elif self.n == 1:
            self.wash = np.full((2, 1), math.sqrt(0.5))
        else:
            k = np.arange(self.n)
            phi = math.pi * ((k - self.n // 2) % self.n) / self.n if self.ring else 0.5 * math.pi * k / (self.n - 1)
            self.wash = np.stack((np.cos(phi), np.sin(phi))) * math.sqrt(2.0 / self.n)

    def fold(self) -> np.ndarray:
        """(N, 2): each speaker onto a stereo pair where a listener facing the front hears it (a
        row from left to right; a ring by the sine of each speaker's azimuth), each at equal
        power, so uncorrelated speakers fold with their summed power (a voice between two
        speakers folds coherently and may be up to 3 dB louder). Stereo folds to itself. For a
        video's sound; the caller keeps the fold under the ceiling."""
        if self.n == 2:
            return np.eye(2)
        if self.ring:
            pans = np.sin(2.0 * math.pi * np.arange(self.n) / self.n)
        else:
            pans = np.linspace(-1.0, 1.0, self.n) if self.n > 1 else np.zeros(1)
        return Speakers(2).gains(pans)

    @property
    def stereo(self) -> bool:
        return self.n == 2

    def position(self, pan: np.ndarray) -> np.ndarray:
        """pans (S,) in −1..1 -> continuous speaker positions (S,), 0 = the first speaker."""
        p = np.clip(np.asarray(pan, np.float64), -1.0, 1.0)
        if self.ring:
            return np.mod(p * (self.n / 2.0), self.n)
        return (p + 1.0) * (0.5 * (self.n - 1))

    def gains(self, pan: np.ndarray) -> np.ndarray:
        """pans (S,) -> gains (S, N), equal power between the two nearest speakers."""
        p = np.asarray(pan, np.float64)
        if self.n == 1:
            return np.ones((len(p), 1))
        if self.n == 2:   # the stereo law, written as it always was (the same bytes as before N)
            theta = (np.clip(p, -1.0, 1.0) + 1.0) * (math.pi / 4.0)
            return np.stack((np.cos(theta), np.sin(theta)), axis=1)
        x = self.position(p)
        i = np.minimum(np.floor(x).astype(np.int64), self.n - 1)          # (S,)
        f = x - i
        out = np.zeros((len(p), self.n))
        rows = np.arange(len(p))
        out[rows, i] = np.cos(f * (math.pi / 2.0))
        # the neighbour: the next speaker (the first again on a ring); on a row, f is 0 at the
        # last speaker, so its neighbour's share is 0 and the index is only kept in range
        nxt = (i + 1) % self.n
        out[rows, nxt] += np.sin(f * (math.pi / 2.0))
        return out
