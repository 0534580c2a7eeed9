"""The cloud and the space: voices 2..N of `audio/voices` and the reverb they share.

Voice 1 is the synth's stereo pair (engine/audio/stream.py). Each further voice is one mono
stream of the same decoder, decoded in the same batch, on its own walk around the shared place
(`audio/cloud/spread`), sounding in *grains*: a grain of about `audio/cloud/grain` seconds,
then a rest, so that each voice sounds `audio/cloud/density` of the time. At each grain's onset
the voice is given a new random pan within ±`audio/cloud/pan` (equal-power) and a new random
distance around `audio/cloud/distance`: a distant voice is quieter (up to -12 dB), darker (it
moves toward a low-passed bus) and wetter (it sends more to the reverb). Voices above
`audio/voices` finish their grain and rest.

The reverb (`Space`) is a send: everything is sent at `audio/reverb/send` and the cloud adds
its distance; its return comes back at `audio/reverb/level`. It is long and dark by default
(Freeverb from pedalboard: `audio/reverb/size`, `audio/reverb/damp`) and its tail goes on
after the voices stop. Nothing here bypasses the safety stage that follows in the synth.

Shapes: one call per latent frame of `hop` samples at the model rate. Decoded cloud voices come
in as (hop, S) for S allocated cloud voices; the mix goes out as (hop, N) for N speakers (the
reverb send as (hop, 2)). Random draws come
from the cloud's own generator, in a fixed order per frame, so a seed gives the same bytes.
Called from one thread: the audio process's decode loop, or the renderer.
"""

from __future__ import annotations

import math

import numpy as np

from ..paramview import ParamView
from .navigation import MotionBank, Voice
from .speakers import Speakers

FAR_DB = -12.0       # level of a voice at distance 1
FAR_CUTOFF_HZ = 900.0  # the far bus's low-pass (one pole)
MIN_EDGE_S = 0.02    # shortest attack or release of a grain
MAX_EDGE_S = 0.4     # longest


def _one_pole_matrix(cutoff_hz: float, rate: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A one-pole low-pass over blocks of n samples as a matrix: y = M @ x + carry * y_prev
    (M lower-triangular (n, n), carry (n,)). Exact, no per-sample loop."""
    a = math.exp(-2.0 * math.pi * cutoff_hz / rate)
    k = np.arange(n)
    lag = k[:, None] - k[None, :]
    m = np.where(lag >= 0, (1.0 - a) * a ** np.maximum(lag, 0), 0.0)
    return m, a ** (k + 1.0)


class Cloud:
    """The cloud voices' walks, grains, pans and distances, and their mix into (hop, N).

    bank, frame_rate: the synth's motion bank and latent frame rate; slots: cloud voices
    allocated (the patch's [audio] voices - 1); hop, rate: samples per frame and model rate;
    rng: the cloud's own generator; speakers: where the voices are placed (stereo by default,
    engine/audio/speakers.py). The reverb send is stereo whatever the speakers: each voice is
    sent at its pan's stereo position."""

    def __init__(self, bank: MotionBank, frame_rate: float, slots: int, hop: int, rate: int,
                 rng: np.random.Generator, speakers: Speakers | None = None) -> None:
        self.slots, self.hop, self.rate = slots, hop, rate
        self.speakers = speakers or Speakers(2)
        self._stereo = Speakers(2)
        self.dt = 1.0 / frame_rate
        self.rng = rng
        self.walks = [Voice(bank, frame_rate, rng) for _ in range(slots)]
        self.level = np.zeros(slots)          # envelope at the end of the last frame, 0..1
        self.sounding = np.zeros(slots, bool)  # in a grain (else resting)
        self.left = rng.uniform(0.0, 1.0, slots)  # seconds left in the grain or rest: staggered onsets
        self.edge = np.full(slots, 0.1)       # this grain's attack/release time, s
        self.pan = np.zeros(slots)            # -1 (left) .. 1 (right)
        self.distance = np.zeros(slots)       # 0 (near) .. 1 (far)
        self._ramp = np.arange(1, hop + 1, dtype=np.float64) / hop  # (hop,)
        self._far_m, self._far_carry = _one_pole_matrix(FAR_CUTOFF_HZ, rate, hop)
        self._far_last = np.zeros(self.speakers.n)   # the far bus's last output sample, per speaker

    def navigate(self, centre: np.ndarray, speed: float, spread: float, temp: float, hold: bool) -> np.ndarray:
        """Advance every allocated voice's walk one frame; knob coordinates (S, D)."""
        out = np.empty((self.slots, centre.shape[0]))
        for k, walk in enumerate(self.walks):
            slow, fine = walk.step(centre, speed, spread, hold, self.dt)
            out[k] = temp * slow + max(1.0, temp) * fine
        return out

    def _grains(self, p: ParamView) -> np.ndarray:
        """Advance the grain clocks one frame; the envelope targets (S,) for this frame."""
        active = np.arange(self.slots) < int(p.audio_voices) - 1
        density = min(max(p.audio_cloud_density, 0.0), 1.0)
        grain = max(p.audio_cloud_grain, 0.05)
        self.left -= self.dt
        for k in np.flatnonzero(self.left <= 0.0):
            if self.sounding[k] or not active[k] or density <= 0.0:   # a grain ends: rest
                self.sounding[k] = False
                rest = grain * (1.0 - density) / max(density, 1e-3)
                self.left[k] = self.rng.exponential(rest) if rest > 0 else 0.0
                if self.level[k] > 0.0:   # switched off mid-grain: the release must end first
                    self.left[k] = max(self.left[k], self.level[k] * self.edge[k] + self.dt)
                if not active[k] or density <= 0.0:
                    self.left[k] = max(self.left[k], 0.25)   # look again in a while
            else:                                              # a grain begins: new place in the field
                length = grain * self.rng.uniform(0.5, 1.5)
                self.sounding[k] = True
                self.left[k] = length
                self.edge[k] = min(max(0.3 * length, MIN_EDGE_S), MAX_EDGE_S)
                self.pan[k] = p.audio_cloud_pan * self.rng.uniform(-1.0, 1.0)
                self.distance[k] = min(max(p.audio_cloud_distance + 0.3 * self.rng.uniform(-1.0, 1.0), 0.0), 1.0)
        # release as the grain's end nears, and at once for a voice switched off
        target = (self.sounding & active).astype(float)
        ending = self.sounding & (self.left < self.edge)
        target[ending] = np.minimum(target[ending], np.clip(self.left[ending] / self.edge[ending], 0.0, 1.0))
        return target

    def mix(self, voices: np.ndarray, p: ParamView) -> tuple[np.ndarray, np.ndarray]:
        """voices (hop, S) decoded at the model rate -> (dry (hop, N), send (hop, 2)): the cloud
        panned over the N speakers and placed, and what it adds to the (stereo) reverb send
        (its distance)."""
        target = self._grains(p)
        step = self.dt / np.maximum(self.edge, MIN_EDGE_S)          # envelope moves per frame
        to = np.where(target > self.level, np.minimum(self.level + step, target), np.maximum(self.level - step, target))
        env = self.level[None, :] + (to - self.level)[None, :] * self._ramp[:, None]   # (hop, S)
        self.level = to
        gain = 10.0 ** (FAR_DB * self.distance / 20.0)               # (S,)
        near = (1.0 - self.distance) * gain
        far = self.distance * gain
        stereo = self._stereo.gains(self.pan).T                      # (2, S)
        pans = stereo if self.speakers.stereo else self.speakers.gains(self.pan).T   # (N, S)
        v = voices * env                                             # (hop, S)
        near_bus = v @ (pans * near).T                               # (hop, N)
        far_in = v @ (pans * far).T                                  # (hop, N)
        far_bus = self._far_m @ far_in + self._far_carry[:, None] * self._far_last[None, :]
        self._far_last = far_bus[-1].copy()
        s = min(max(p.audio_reverb_send, 0.0), 1.0)
        send = v @ (stereo * gain * (s + (1.0 - s) * self.distance)).T   # (hop, 2): the far ones send more
        return near_bus + far_bus, send


class Space:
    """The reverb on the send: stereo in, stereo out at the model rate (pedalboard's Freeverb,
    streamed: its state carries from call to call). `process(send (hop, 2), p)` -> wet (hop, 2)
    at `audio/reverb/level`. Skips the work once its input has been silent for longer than its
    tail (the output is then exactly zero)."""

    TAIL_S = 30.0   # after this long without input the tail is below -90 dB even at size 0.99

    def __init__(self, rate: int, hop: int) -> None:
        import pedalboard

        self.rate, self.hop = rate, hop
        self.reverb = pedalboard.Reverb(room_size=0.92, damping=0.75, wet_level=1.0, dry_level=0.0, width=1.0)
        self._settings = (-1.0, -1.0)
        self._quiet_s = self.TAIL_S
        self._zeros = np.zeros((hop, 2))
        self._level = 0.0                      # the return's gain at the end of the last step
        self._ramp = np.arange(1, hop + 1, dtype=np.float64) / hop

    def process(self, send: np.ndarray, p: ParamView) -> np.ndarray:
        if np.any(send):
            self._quiet_s = 0.0
        elif self._quiet_s >= self.TAIL_S and self._settings[0] < 1.0:   # a frozen tail never ends
            return self._zeros
        else:
            self._quiet_s += self.hop / self.rate
        size, damp = min(max(p.audio_reverb_size, 0.0), 1.0), min(max(p.audio_reverb_damp, 0.0), 1.0)
        if (size, damp) != self._settings:
            if self._settings[0] >= 1.0:   # leaving a frozen room: its tail rings out from here
                self._quiet_s = 0.0
            self._settings = (size, damp)
            self.reverb.room_size, self.reverb.damping = size, damp
            self.reverb.freeze_mode = 1.0 if size >= 1.0 else 0.0
        wet = self.reverb.process(np.ascontiguousarray(send.T, np.float32), self.rate, reset=False)   # (2, hop)
        level = 10.0 ** (p.audio_reverb_level / 20.0)
        gain = self._level + (level - self._level) * self._ramp                 # (hop,): no zipper noise
        self._level = level
        return wet.T.astype(np.float64) * gain[:, None]
