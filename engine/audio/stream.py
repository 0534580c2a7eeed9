"""Streaming synthesis: parameters in, safe audio at the device rate out, stereo or over N speakers.

`AudioSynth.step(values)` runs one latent frame (hop samples at the model rate, 4 ms for the
default model) through the whole chain:

    latent navigation, two voices (knob coordinates)      place (jump/glide, walk, hold) + the
        │                                                  archive's motion (engine.audio.navigation),
        │                                                  temperature, replay, width, offsets, dissolve
    cloud voices (engine.audio.cloud)                     voices - 1 more walks around the place
    decoder weights ← audio/learning                      snapshots interpolated in place
    model.knobs_to_latent ─► numpy streaming decoder      (2 + S, D) -> (hop, 2 + S), model rate;
        a decoder conditioned by content plays audio/class in every voice
    clip player (baked scenes)                            crossfades decoder and clips, model rate
    cloud mix (grains, pan, distance) + reverb send       (hop, N), model rate: the pair and the
        voices placed on N speakers (engine.audio.speakers), the stereo reverb's return spread
    Conditioner (DC blocker, HF tamer, loudness)          engine.audio.safety, channels linked
    gain · mute · master fade · start/stop fade           per-sample ramps (no zipper noise)
    Resampler (polyphase windowed sinc, model -> device)  0.74 ms group delay at 16 -> 48 kHz
    TruePeakLimiter (ceiling, panic)                      the last stage: nothing bypasses it

The realtime audio process and the offline renderer (`ciel render`) use this same class; for a
given model, seed and sequence of calls the output is the same bytes. Random draws (walks,
grains, jumps, dissolve noise) come from one seeded generator in a fixed order per step.

`values` is always the flat parameter array of `engine.params` (`Registry.size` float64 values,
e.g. a `SharedSnapshot` copy). Triggers are counters: a trigger fires when its count changes.
Called from one thread: the audio process's decode loop, or the renderer.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import numpy as np
from torch import nn

from ..learning import WeightMorph
from ..params import REGISTRY, Registry, Smoother, check_view
from ..paramview import ParamView
from . import kernels
from .cloud import Cloud, Space
from .inference import LatentStream, NumpyStream
from .model import AudioModel
from .navigation import MotionBank, Voice
from .safety import Conditioner, TruePeakLimiter, db_to_gain
from .speakers import Speakers


def _dissolve(u: np.ndarray, d: float, noise: np.ndarray) -> np.ndarray:
    """Knob coordinates u mixed with Gaussian `noise` (same shape) along a cosine diffusion
    schedule: d = 0 is u, d = 1 pure noise."""
    alpha_bar = math.cos(0.5 * math.pi * d) ** 2
    return math.sqrt(alpha_bar) * u + math.sqrt(1.0 - alpha_bar) * noise


class Resampler:
    """Streaming polyphase resampler with a rational ratio and a Kaiser-windowed sinc, (n,) mono
    or (n, C) with `channels` C.

    Linear phase, fixed group delay `delay` (output samples) of about taps_per_phase / 2 input
    samples. Each call returns every output sample its input allows (the count varies by one
    between calls when the ratio is not an integer). Measured alternative: python-soxr's
    ResampleStream holds back 720-1500 output samples (15-30 ms at 48 kHz) at LQ..HQ and its QQ
    (cubic) leaves images at -15 dB, so ciel uses this one.
    """

    def __init__(self, in_rate: int, out_rate: int, taps_per_phase: int = 14, beta: float = 7.0,
                 rolloff: float = 0.9, channels: int = 1) -> None:
        g = math.gcd(in_rate, out_rate)
        self.L, self.M = out_rate // g, in_rate // g
        self.K = int(math.ceil(taps_per_phase * max(1.0, self.M / self.L)))
        n = self.L * self.K
        fc = rolloff * min(1.0, self.L / self.M) / (2 * self.L)   # cycles per upsampled sample
        t = np.arange(n) - (n - 1) / 2
        h = 2 * fc * np.sinc(2 * fc * t) * np.kaiser(n, beta) * self.L
        # phases[p, k] = h[p + k L]: output with phase p is sum_k phases[p, k] * x[i - k]
        self.phases = h.reshape(self.K, self.L).T.copy()
        self.delay = (n - 1) / (2 * self.M)                         # output samples
        self.channels = channels
        self._hist = np.zeros((self.K - 1, channels), np.float64)
        self._n_in = 0
        self._n_out = 0

    @property
    def ratio(self) -> float:
        return self.L / self.M

    def process(self, x: np.ndarray) -> np.ndarray:
        """x (n,) or (n, C) at the input rate -> (m,) or (m, C) float32 at the output rate."""
        x = np.asarray(x, np.float64)
        mono = x.ndim == 1
        buf = np.concatenate((self._hist, x[:, None] if mono else x))   # (K - 1 + n, C), a new C-order array
        self._n_in += len(x)
        last = (self._n_in * self.L - 1) // self.M
        count = last - self._n_out + 1
        if count <= 0:
            self._hist = buf[len(buf) - (self.K - 1):]
            return np.zeros((0,) if mono else (0, self.channels), np.float32)
        y = np.empty((count, self.channels), np.float32)
        kernels.resample(buf, self.phases, self._n_out, count, self.M, self.L, self._n_in - len(buf), y)   # (count, C)
        self._n_out += count
        self._hist = buf[len(buf) - (self.K - 1):]
        return y[:, 0] if mono else y


def _toward(value: float, target: float, step: float) -> float:
    """`value` moved towards `target` by at most `step` (a linear ramp)."""
    return min(target, value + step) if target > value else max(target, value - step)


def loop_clip(x: np.ndarray, rate: int, seam_s: float = 0.05) -> np.ndarray:
    """A mono clip made seamless for looping: its last `seam_s` crossfaded into its start.

    x: (n,) float at `rate` Hz. Returns (n - seam,) float32; playing it cyclically has no click at
    the wrap. A clip shorter than three seams is returned as it is.
    """
    x = np.asarray(x, np.float32)
    seam = int(seam_s * rate)
    if seam < 1 or len(x) < 3 * seam:
        return x.copy()
    fade = (0.5 - 0.5 * np.cos(np.pi * (np.arange(seam) + 0.5) / seam)).astype(np.float32)
    out = x[: len(x) - seam].copy()
    out[:seam] = x[:seam] * fade + x[len(x) - seam:] * (1.0 - fade)
    return out


class _Voice:
    """A clip playing in a loop: samples (n,) float32 at the model rate, its read position and its
    level (0..1), ramping to `target`."""

    def __init__(self, samples: np.ndarray) -> None:
        self.samples = samples
        self.pos = 0
        self.level = 0.0
        self.target = 1.0

    def take(self, n: int) -> np.ndarray:
        idx = np.arange(self.pos, self.pos + n) % len(self.samples)
        self.pos = (self.pos + n) % len(self.samples)
        return self.samples[idx]


class AudioSynth:
    """Latent navigation + streaming decoder + safety stage, at the device rate, in stereo (or
    over `channels` speakers in `layout`, engine/audio/speakers.py).

    model: a loaded AudioModel; out_rate: device rate (Hz); seed: the walks, grains, jumps and
    dissolve noise. `step(values)` -> (n, N) float32 for one latent frame (n about hop * out_rate /
    model rate); `process(values, frames)` -> exactly (frames, N) (the renderer's entry point).
    `play(clip, fade_s)` crossfades from what sounds now to a looping clip (a baked scene's sound),
    `play(None, fade_s)` back to the decoder; clips pass the same safety stage as decoded sound.

    `voices` (the patch's [audio] voices) decoder voices are made ready: the pair and voices - 1
    mono voices of the cloud (engine/audio/cloud.py), all decoded as one batch; `audio/voices`
    plays up to that many. The cloud draws from its own generator, so a synth with voices = 1
    plays the same bytes as before the cloud existed.

    Two voices (engine/audio/navigation.py) are decoded as one batch of 2; the right channel's
    latent is cos(θ)·left + sin(θ)·its own walk with θ = audio/width · π/2, so width 0 is the
    same sound on both channels and 1 two independent walks, with no added latency. When the
    model holds learning snapshots, the synth plays its own copy of the decoder and moves its
    weights with `audio/learning` (the stream's state is kept: no click).
    """

    MUTE_S = 0.01         # mute / unmute ramp
    SHARE_S = 0.05        # glide of each voice's share when audio/voices changes
    REPLAY_S = 0.05       # crossfade between walk and replay
    PAIR = 2              # the main voice: a stereo pair of walks

    def __init__(self, model: AudioModel, out_rate: int, seed: int, registry: Registry = REGISTRY,
                 fade_in_s: float = 0.05, voices: int = 1, channels: int = 2, layout: str = "ring") -> None:
        self.model = model
        self.speakers = Speakers(channels, layout)
        self.channels = self.speakers.n
        self.rate = int(out_rate)
        self.reg = registry
        self.D = model.latent_dim
        self.hop = model.hop
        self.dt = model.hop / model.sample_rate
        self.rng = np.random.default_rng(seed)
        self.slots = min(max(int(voices), 1), 16) - 1   # cloud voices allocated beside the pair
        self.decoder: LatentStream
        if model.script is not None:   # a RAVE / nn~ export: its own streaming state, no learning axis
            self.morph = WeightMorph(nn.Module(), ())
            self.decoder = model.script.stream(self.PAIR + self.slots, seed)
        else:
            decoder = model.own.decoder
            if len(model.snapshots) >= 2:
                decoder = copy.deepcopy(decoder)   # this synth's own weights to move
            self.morph = WeightMorph(decoder, model.snapshots)
            self.decoder = NumpyStream(decoder, self.PAIR + self.slots)
        self._learning = 1.0
        self._first_step = True
        self.smoother = Smoother(registry)
        self.cond = Conditioner(model.sample_rate, channels=self.channels)   # linked: the image stays
        self.resampler = Resampler(model.sample_rate, self.rate, channels=self.channels)
        self.limiter = TruePeakLimiter(self.rate, channels=self.channels)
        self.delay_out = 2 * self.resampler.ratio + self.resampler.delay + self.limiter.delay
        check_view(registry)   # the typed view reads the registry's layout (a mismatch names the parameter)
        self._last: np.ndarray | None = None
        # navigation state: the shared place (walk units) and one walk per channel
        frame_rate = model.sample_rate / model.hop
        self.bank = MotionBank(model.clips, frame_rate, self.D, model.clip_levels)
        # a decoder conditioned by content: every voice of the batch plays audio/class (smoothed)
        self._classes = np.zeros(self.PAIR + self.slots) if model.classes else None   # (2 + S,)
        self.voices = [Voice(self.bank, frame_rate, self.rng) for _ in range(self.PAIR)]
        self.centre = self.bank.random_place(self.rng)
        # the cloud draws from its own generator: a synth without one plays the same bytes as before
        self.cloud = (Cloud(self.bank, frame_rate, self.slots, self.hop, model.sample_rate,
                            np.random.default_rng([seed, 1]), self.speakers) if self.slots else None)
        self.space = Space(model.sample_rate, self.hop)
        self._share = -1.0       # each voice's share of the mix (1/sqrt(voices), gliding; set at the first step)
        self._live_ramp = np.ones(self.hop)
        self._from = self.centre.copy()
        self._to = self.centre.copy()
        self._glide_t = 0.0
        self._glide_T = 0.0
        self._clip_pos = 0
        self._replay = 0.0
        self.latent = np.zeros(self.D, np.float32)   # last knob coordinates of the left voice (for displays)
        self.place = np.zeros(self.D, np.float32)    # its slow part: where in the archive it is
        # gains at the model rate (linear), per-sample ramps between steps
        self._gain = 0.0
        self._mute = 1.0
        self._fade = 0.0
        self._run = 0.0
        self._run_target = 1.0
        self._run_rate = 1.0 / max(fade_in_s * model.sample_rate, 1.0)
        self._panic = False
        self._panic_saw_mute = False
        self._ramp = np.arange(1, self.hop + 1, dtype=np.float64) / self.hop
        self.model_pos = 0      # model-rate samples decoded
        self.out_pos = 0        # device-rate samples produced
        self.change_pos = -1    # output index where the newest parameter change starts
        self._fifo = np.zeros((0, self.channels), np.float32)
        # clip player: the decoder's level and the clips fading in or out
        self._voices: list[_Voice] = []
        self._live = 1.0
        self._voice_step = 1.0

    # — control from the audio process —
    def fade_out(self, seconds: float) -> None:
        """Fade everything to silence over `seconds` (before stopping the stream)."""
        self._run_target = 0.0
        self._run_rate = 1.0 / max(seconds * self.model.sample_rate, 1.0)

    @property
    def faded_out(self) -> bool:
        return self._run_target == 0.0 and self._run == 0.0

    @property
    def next_out_index(self) -> int:
        """Output sample index where the next step's first decoded sample lands (the group delays
        of tamer, resampler and limiter included): where a change read by that step starts."""
        return int(math.floor(self.model_pos * self.resampler.ratio + self.delay_out))

    def play(self, clip: np.ndarray | None, fade_s: float) -> None:
        """Crossfade over `fade_s` seconds to `clip` ((n,) float32 at the model rate, played in a
        loop from its start; see `loop_clip`), or with None back to the decoder's sound."""
        for voice in self._voices:
            voice.target = 0.0
        if clip is not None and len(clip):
            self._voices.append(_Voice(np.asarray(clip, np.float32)))
        self._voice_step = self.dt / max(fade_s, self.dt)

    @property
    def playing_clip(self) -> bool:
        """True while a clip is the sound (or fading in)."""
        return any(voice.target > 0.0 for voice in self._voices)

    def _mix_clips(self, decode: Callable[[], np.ndarray]) -> np.ndarray:
        """One hop (hop, 2) at the model rate: the decoder and the clips (mono, on both channels) at
        their (ramped) levels. The decoder is not run while a clip has the sound to itself."""
        step = self._voice_step
        live_to = _toward(self._live, 0.0 if self.playing_clip else 1.0, step)
        x = np.zeros((self.hop, self.PAIR), np.float64)  # (hop, 2)
        self._live_ramp = self._ramp_to(self._live, live_to)  # (hop,): the cloud follows the decoder's level
        if self._live > 0.0 or live_to > 0.0:
            x += decode() * self._live_ramp[:, None]
        self._live = live_to
        for voice in self._voices:
            to = _toward(voice.level, voice.target, step)
            x += (voice.take(self.hop) * self._ramp_to(voice.level, to))[:, None]
            voice.level = to
        self._voices = [v for v in self._voices if v.level > 0.0 or v.target > 0.0]
        return x

    @property
    def panicked(self) -> bool:
        return self._panic

    def panic(self) -> None:
        """Silence from the next sample out until `audio/mute` goes 1 and then 0 (also called by
        the audio process when it restarts after a panic, so a crash never unmutes)."""
        self._panic = True
        self._panic_saw_mute = False
        self._mute = 0.0
        self.limiter.panic()

    # — one latent frame —
    def _triggers(self, v: np.ndarray) -> None:
        if self._last is None:
            return
        now, last = ParamView(v), ParamView(self._last)
        if now.panic != last.panic:
            self.panic()
        if now.audio_jump != last.audio_jump or now.scene_next != last.scene_next:
            self._from = self.centre.copy()
            self._to = self.bank.random_place(self.rng)
            self._glide_t, self._glide_T = 0.0, now.audio_glide
            if self._glide_T <= 0.0:
                self.centre = self._to.copy()

    def _navigate(self, s: np.ndarray) -> np.ndarray:
        """Advance both voices by one frame; returns knob coordinates (2, D): left, right."""
        dt, D, p = self.dt, self.D, ParamView(s)
        noise_dissolve = self.rng.standard_normal((self.PAIR, D))
        hold = p.audio_hold >= 0.5
        if not hold and self._glide_T > 0.0 and self._glide_t < self._glide_T:
            self._glide_t = min(self._glide_T, self._glide_t + dt)
            a = 0.5 - 0.5 * math.cos(math.pi * self._glide_t / self._glide_T)
            self.centre = self._from + (self._to - self._from) * a
        speed, spread = p.audio_walk_speed, p.audio_walk_spread
        temp = p.audio_temperature
        u = np.empty((self.PAIR, D))
        for c, voice in enumerate(self.voices):
            slow, fine = voice.step(self.centre, speed, spread, hold, dt)
            u[c] = temp * slow + max(1.0, temp) * fine
            if c == 0:
                self.place[:] = slow
        clips = self.model.clips
        if not hold:
            want = 1.0 if (p.audio_replay >= 0.5 and clips) else 0.0
            self._replay = _toward(self._replay, want, dt / self.REPLAY_S)
            if clips:
                self._clip_pos += 1
        if self._replay > 0.0:
            clip = clips[int(p.audio_clip) % len(clips)]
            u = (1.0 - self._replay) * u + self._replay * clip[self._clip_pos % len(clip)]
        theta = 0.5 * math.pi * min(max(p.audio_width, 0.0), 1.0)
        u[1] = math.cos(theta) * u[0] + math.sin(theta) * u[1]
        off = p.audio_offset[:D]                 # the knobs: the first (most important) dimensions
        u[:, :len(off)] += off
        d = p.audio_dissolve
        if d > 0.0:
            u = _dissolve(u, d, noise_dissolve)
        return u

    def _navigate_cloud(self, cloud: Cloud, p: ParamView) -> np.ndarray:
        """The cloud voices' knob coordinates (S, D): their own walks around the shared place, with
        the knob offsets and the dissolve applied as to the pair (dissolve noise from the cloud's
        generator)."""
        u = cloud.navigate(self.centre, p.audio_walk_speed, p.audio_cloud_spread, p.audio_temperature,
                           p.audio_hold >= 0.5)
        off = p.audio_offset[:self.D]
        u[:, :len(off)] += off
        d = p.audio_dissolve
        if d > 0.0:
            u = _dissolve(u, d, cloud.rng.standard_normal(u.shape))
        return u

    def _ramp_to(self, start: float, end: float) -> np.ndarray:
        return start + (end - start) * self._ramp

    def _decode(self, u: np.ndarray) -> np.ndarray:
        """Knob coordinates (B, D) -> one hop (hop, B) at the model rate from the streaming decoder
        (B: the pair, then the cloud's voices).

        When `audio/learning` moved, the hop is decoded twice from the same left contexts, with
        the old and the new weights, and crossfaded across the hop: a weight change never lands
        as a step at the seam."""
        z = self.model.knobs_to_latent(u).reshape(len(u), self.D, 1)       # (B, D, 1)
        cls = self._classes                                                  # (B,) or None
        learn = self._learning
        if not self.morph.moves(learn):
            return self.decoder(z, cls)[:, 0, :].T                           # (hop, B)
        saved = self.decoder.save()
        old = self.decoder(z, cls)[:, 0, :].T
        self.decoder.restore(saved)
        self.morph.set(learn)
        self.decoder.weights_moved()
        new = self.decoder(z, cls)[:, 0, :].T
        return old + (new - old) * self._ramp[:, None]

    def _place(self, pair: np.ndarray) -> np.ndarray:
        """The main voice's pair (hop, 2) on the speakers (hop, N): as it is in stereo, at the
        layout's pair positions otherwise (engine/audio/speakers.py)."""
        return pair if self.speakers.stereo else pair @ self.speakers.pair

    def step(self, values: np.ndarray) -> np.ndarray:
        """One latent frame: values (Registry.size,) -> audio (n, N) float32 at the device rate
        (N = `channels`, 2 by default)."""
        v = np.asarray(values, np.float64)
        target = ParamView(v)
        if self._last is None:
            self.smoother.reset(v)
            self._last = v.copy()
            self._gain = db_to_gain(target.audio_gain)
            self._fade = target.master_fade
        elif not np.array_equal(v, self._last):
            self.change_pos = self.next_out_index
            self._triggers(v)
            self._last[:] = v
        if self._panic:  # released by audio/mute 1 then 0 ("after checking levels")
            if target.audio_mute >= 0.5:
                self._panic_saw_mute = True
            elif self._panic_saw_mute:
                self._panic = False
                self.limiter.release_panic()
        s = self.smoother.step(v, self.dt)
        now = ParamView(s)
        self._learning = now.audio_learning
        if self._first_step:   # the weights for the knob as it is, before the first hop
            self.morph.set(self._learning)
            self.decoder.weights_moved()
            self._first_step = False
        if self._classes is not None:   # every voice plays audio/class, clamped to the model's classes
            self._classes.fill(min(max(now.audio_class, 0.0), self.model.classes - 1.0))
        u = self._navigate(s)
        self.latent[:] = u[0]
        if self.cloud is not None:
            u = np.concatenate((u, self._navigate_cloud(self.cloud, now)))            # (2 + S, D)
        decoded: list[np.ndarray] = []

        def decode() -> np.ndarray:
            decoded.append(self._decode(u))                                         # (hop, 2 + S)
            return decoded[0][:, :self.PAIR]

        mixing = bool(self._voices) or self._live < 1.0
        x = self._mix_clips(decode) if mixing else decode()                           # (hop, 2)
        if self.cloud is not None:
            # the pair is one voice among the cloud's: each at 1/sqrt(voices), so that more voices
            # make a wider cloud, not a louder centre (the conditioner sets the loudness after);
            # the share glides (50 ms) so a change of audio/voices never steps
            want = 1.0 / math.sqrt(min(max(int(now.audio_voices), 1), 1 + self.slots))
            if self._share < 0.0:
                self._share = want
            share = self._share + (want - self._share) * min(1.0, self.dt / self.SHARE_S)
            ramp = self._ramp_to(self._share, share)                                  # (hop,)
            self._share = share
            x = x * ramp[:, None]
            if mixing:   # a clip crossfading with the decoder: the cloud fades with the decoder
                ramp = ramp * self._live_ramp
            voices = decoded[0][:, self.PAIR:] if decoded else np.zeros((self.hop, self.slots))
            dry, cloud_send = self.cloud.mix(voices * ramp[:, None], now)                  # (hop, N), (hop, 2)
            send = x * now.audio_reverb_send + cloud_send
            x = self._place(x) + dry
        else:
            send = x * now.audio_reverb_send
            x = self._place(x)
        wet = self.space.process(send, now)                                                  # (hop, 2)
        x = x + (wet if self.speakers.stereo else wet @ self.speakers.wash)                  # (hop, N)
        loud = now.audio_loudness
        x = self.cond.process(x, loud)                                                       # (hop, N)
        # per-sample ramps: gain, mute, master fade, start/stop fade
        g = db_to_gain(now.audio_gain)
        gain = self._ramp_to(self._gain, g)
        self._gain = g
        mute_to = 0.0 if (target.audio_mute >= 0.5 or self._panic) else 1.0
        m_new = _toward(self._mute, mute_to, self.dt / self.MUTE_S)
        gain *= self._ramp_to(self._mute, m_new)
        self._mute = m_new
        f = min(max(now.master_fade, 0.0), 1.0)
        gain *= self._ramp_to(self._fade, f)
        self._fade = f
        r_new = _toward(self._run, self._run_target, self._run_rate * self.hop)
        gain *= self._ramp_to(self._run, r_new)
        self._run = r_new
        y = self.resampler.process(x * gain[:, None])
        self.limiter.set_ceiling(now.audio_ceiling)
        y = self.limiter.process(y)
        self.model_pos += self.hop
        self.out_pos += len(y)
        return y

    def process(self, values: np.ndarray, frames: int) -> np.ndarray:
        """Exactly `frames` samples (frames, N) float32, stepping as many latent frames as needed."""
        parts = [self._fifo]
        have = len(self._fifo)
        while have < frames:
            block = self.step(values)
            parts.append(block)
            have += len(block)
        buf = np.concatenate(parts) if len(parts) > 1 else self._fifo
        self._fifo = buf[frames:].copy()
        return buf[:frames]
