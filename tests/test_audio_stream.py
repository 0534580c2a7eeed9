"""Streaming synthesis and the safety stage: what a listener would notice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import param_values as values
from conftest import tone_share

from engine.audio.model import AudioModelConfig, AudioVAE, export_audio_model, load_audio_model, make_default_audio_model
from engine.audio.safety import Conditioner, TruePeakLimiter, db_to_gain
from engine.audio.stream import AudioSynth, Resampler, loop_clip
from engine.params import REGISTRY

ROOT = Path(__file__).resolve().parents[1]
RATE = 48000


def true_peak(x: np.ndarray, factor: int = 8, tail: int = 200) -> float:
    """Peak of the band-limited reconstruction (FFT upsampling of the signal padded with as much
    silence), linear. The FFT takes the padded signal as periodic: its silent start follows the
    padding smoothly, so the onset is measured, but the jump from the signal's end into the
    padding rings (Gibbs) in the measurement, not in the sound: the last `tail` samples are left out."""
    n = len(x)
    spec = np.fft.rfft(x, 2 * n)
    up = np.zeros(2 * n * factor // 2 + 1, complex)
    up[:len(spec)] = spec
    y = np.fft.irfft(up, 2 * n * factor) * factor
    return float(np.abs(y[: (n - tail) * factor]).max())


@pytest.fixture(scope="module")
def model():
    return load_audio_model(ROOT / "models" / "audio-default")


def render(synth: AudioSynth, v: np.ndarray, seconds: float, block: int = 1000) -> np.ndarray:
    return np.concatenate([synth.process(v, block).copy() for _ in range(int(seconds * RATE / block))])


def test_same_seed_same_bytes_and_sound_is_stereo_and_audible(model) -> None:
    v = values()
    a = render(AudioSynth(model, RATE, seed=7), v, 3.0, block=1600)
    b = render(AudioSynth(model, RATE, seed=7), v, 3.0, block=1600)
    c = render(AudioSynth(model, RATE, seed=8), v, 1.0, block=1600)
    assert a.dtype == np.float32 and a.shape == (3 * RATE, 2)
    assert a.tobytes() == b.tobytes()
    assert not np.array_equal(a[:RATE], c)
    rms_db = 20 * np.log10(np.sqrt(np.mean(a[RATE:, 0] ** 2)))
    assert -40 < rms_db < -15   # loudness target -20 dBFS with the default gain of -6 dB


def test_block_size_does_not_change_the_sound(model) -> None:
    v = values()
    a = render(AudioSynth(model, RATE, seed=3), v, 0.5, block=480)
    b = np.concatenate([AudioSynth(model, RATE, seed=3).process(v, RATE // 2)])
    assert np.array_equal(a, b)


@pytest.mark.parametrize("seed", [0, 1, 5, 10])
def test_extreme_latents_on_a_random_decoder_stay_under_the_ceiling_without_dc(tmp_path: Path, seed: int) -> None:
    torch.manual_seed(seed)
    vae = AudioVAE(AudioModelConfig())
    with torch.no_grad():
        for p in vae.decoder.parameters():
            p.mul_(3.0)  # a wild, badly initialised decoder
    export_audio_model(vae, tmp_path / "wild", {}, None)
    wild = load_audio_model(tmp_path / "wild")
    for sign in (10.0, -10.0):
        for ceiling in (-1.0, -6.0):
            synth = AudioSynth(wild, RATE, seed=seed)
            v = values(audio__gain=6.0, audio__loudness=-10.0, audio__temperature=3.0, audio__ceiling=ceiling)
            v[REGISTRY.slot("audio/offset")] = sign * np.sign(np.random.default_rng(seed).standard_normal(16))
            out = render(synth, v, 1.5)[:, 0].astype(np.float64)
            assert true_peak(out) <= db_to_gain(ceiling) + 1e-6, (sign, ceiling)
            steady = out[RATE // 2:]
            assert abs(steady.mean()) < 1e-3, "DC in the output"


def test_a_ceiling_above_minus_one_dbfs_is_not_honoured(model) -> None:
    synth = AudioSynth(model, RATE, seed=1)
    out = render(synth, values(audio__gain=6.0, audio__loudness=-10.0, audio__ceiling=0.0), 1.0)
    assert np.abs(out).max() <= db_to_gain(-1.0) + 1e-6


def sweep_steps(synth: AudioSynth, steps: int, reset_every: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Step the synth through a sweep of every latent offset (-3..3 sigma); returns the left
    channel and the output index where each step's first decoded sample lands."""
    v = values(audio__walk__speed=0.0)
    sl = REGISTRY.slot("audio/offset")
    out, seams = [], []
    for k in range(steps):
        v[sl] = 3 * np.sin(2 * np.pi * 0.5 * (k / 250) * np.arange(1, 17) / 4)
        if reset_every and k % reset_every == 0:
            synth.decoder.reset()  # a broken stream that forgets its left context
        seams.append(synth.next_out_index)
        out.append(synth.step(v)[:, 0])
    return np.concatenate(out).astype(np.float64), np.array(seams[50:])


def click_ratio(audio: np.ndarray, seams: np.ndarray, frame: int) -> float:
    """Click detector: mean second difference at the seams between decode steps over that in the
    middle of the steps (about 1 when nothing happens at the seams)."""
    d2 = np.abs(np.diff(audio, 2))
    seams = seams[seams + frame < len(d2)]
    at = np.array([d2[b - 3:b + 1].max() for b in seams])
    mid = np.array([d2[b + frame // 2 - 3:b + frame // 2 + 1].max() for b in seams])
    return float(at.mean() / mid.mean())


@pytest.fixture(scope="module")
def plain_model(tmp_path_factory: pytest.TempPathFactory):
    """The untrained fixed-seed decoder: no learned texture at the frame rate, so what the click
    detector hears at the seams is what the synth's stepping adds (latent steps, smoothing,
    resampler, safety stage), not the character of a trained model."""
    folder = tmp_path_factory.mktemp("plain")
    make_default_audio_model(folder, seed=0)
    return load_audio_model(folder)


@pytest.mark.parametrize("seed", [3, 5, 8])
def test_no_clicks_at_decode_seams_on_a_latent_sweep(plain_model, seed: int) -> None:
    frame = plain_model.hop * RATE // plain_model.sample_rate
    audio, seams = sweep_steps(AudioSynth(plain_model, RATE, seed=seed), 500)
    assert click_ratio(audio, seams, frame) < 1.2
    # the detector hears the clicks of a stream that loses its state every third step
    broken, seams = sweep_steps(AudioSynth(plain_model, RATE, seed=seed), 500, reset_every=3)
    assert click_ratio(broken, seams, frame) > 1.4


def test_panic_mutes_at_once_and_mute_zero_brings_sound_back_with_a_fade(model) -> None:
    synth = AudioSynth(model, RATE, seed=2)
    v = values()
    render(synth, v, 0.5)
    v[REGISTRY.index("panic")] += 1
    after = synth.process(v, 4800)
    assert np.all(after == 0.0)
    assert np.all(synth.process(v, 4800) == 0.0)       # stays muted
    v[REGISTRY.index("audio/mute")] = 1
    assert np.all(synth.process(v, 4800) == 0.0)
    v[REGISTRY.index("audio/mute")] = 0
    back = synth.process(v, 9600)[:, 0]
    assert np.abs(back).max() > 1e-3
    envelope = np.abs(back[:480]).max(), np.abs(back[4800:]).max()
    assert envelope[0] < envelope[1]                   # fades in, no jump to full level


def test_a_panic_outlives_a_restart_of_the_synth(model) -> None:
    v = values(audio__mute=1.0)
    synth = AudioSynth(model, RATE, seed=2)   # a new audio process after a crash, told of the panic
    synth.panic()
    assert np.all(synth.process(v, 9600) == 0.0)
    v[REGISTRY.index("audio/mute")] = 0
    assert np.abs(synth.process(v, 9600)).max() > 1e-3


def test_gain_change_ramps_per_sample_without_a_click(model) -> None:
    synth = AudioSynth(model, RATE, seed=4)
    v = values(audio__gain=-60.0)
    render(synth, v, 0.5)
    v[REGISTRY.index("audio/gain")] = 0.0
    out = synth.process(v, 2400)[:, 0]
    env = np.maximum.accumulate(np.abs(out))
    # the level rises over several milliseconds, not in one sample
    assert np.argmax(env > 0.5 * env[-1]) > 48


def test_jump_with_glide_zero_moves_the_place_at_once_and_hold_freezes_it(model) -> None:
    synth = AudioSynth(model, RATE, seed=5)
    v = values(audio__glide=0.0, audio__walk__speed=0.0)
    synth.process(v, 4800)
    before = synth.place.copy()
    v[REGISTRY.index("audio/jump")] += 1
    synth.step(v)
    assert np.linalg.norm(synth.place - before) > 1.0
    v[REGISTRY.index("audio/hold")] = 1
    v[REGISTRY.index("audio/walk/speed")] = 4.0
    synth.step(v)
    held = synth.place.copy()
    synth.process(v, 9600)
    assert np.allclose(synth.place, held)
    assert not np.allclose(synth.latent, held), "held, the material keeps moving frame to frame"
    v[REGISTRY.index("audio/hold")] = 0
    synth.process(v, 9600)
    assert not np.allclose(synth.place, held)


def test_glide_takes_its_time(model) -> None:
    synth = AudioSynth(model, RATE, seed=6)
    v = values(audio__glide=1.0, audio__walk__speed=0.0, audio__walk__spread=0.0)
    synth.process(v, 480)
    start = synth.place.copy()
    v[REGISTRY.index("audio/jump")] += 1
    synth.process(v, RATE // 2)
    half = synth.place.copy()
    synth.process(v, RATE)
    end = synth.place.copy()
    assert 0.3 < np.linalg.norm(half - start) / np.linalg.norm(end - start) < 0.7


def test_dissolve_one_is_gaussian_noise_in_the_latent(model) -> None:
    synth = AudioSynth(model, RATE, seed=9)
    v = values(audio__dissolve=1.0, audio__temperature=0.0)
    synth.process(v, RATE)  # the dissolve glides in (smoothing 0.1 s)
    lat = []
    for _ in range(200):
        synth.step(v)
        lat.append(synth.latent.copy())
    lat = np.array(lat)
    assert abs(lat.std() - 1.0) < 0.1 and abs(lat.mean()) < 0.1


def test_replay_follows_an_encoded_clip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    vae = AudioVAE(AudioModelConfig())
    clip = torch.randn(16, 30)
    export_audio_model(vae, tmp_path / "clips", {}, None, clips=[clip])
    m = load_audio_model(tmp_path / "clips")
    synth = AudioSynth(m, RATE, seed=0)
    v = values(audio__replay=1.0, audio__walk__speed=0.0)
    synth.process(v, RATE // 2)   # crossfade in
    seen = []
    for _ in range(30):
        synth.step(v)
        seen.append(synth.latent.copy())
    frames = clip.T.numpy()
    hits = sum(any(np.allclose(s, f, atol=1e-3) for f in frames) for s in seen)
    assert hits == 30


@pytest.mark.parametrize("out_rate", [44100, 48000, 96000])
def test_resampler_keeps_count_and_delay_and_rejects_images(out_rate: int) -> None:
    r = Resampler(16000, out_rate)
    t = np.arange(16000) / 16000
    x = np.sin(2 * np.pi * 1000 * t)
    chunks = [r.process(x[i:i + 64]) for i in range(0, 16000, 64)]
    y = np.concatenate(chunks)
    assert len(y) == out_rate
    spec = np.abs(np.fft.rfft(y[out_rate // 4:] * np.hanning(len(y) - out_rate // 4))) ** 2
    f = np.fft.rfftfreq(len(y) - out_rate // 4, 1 / out_rate)
    images = spec[f > 9000].sum() / spec[(f > 900) & (f < 1100)].sum()
    assert 10 * np.log10(images) < -60
    assert r.delay * 1000 / out_rate < 1.0   # under a millisecond


def test_limiter_is_block_invariant_with_fixed_delay() -> None:
    rng = np.random.default_rng(0)
    x = np.repeat(rng.normal(0, 2, 4000), 3)  # loud, needs limiting
    outs = []
    for blocks in ([192], [7, 500, 1]):
        lim = TruePeakLimiter(RATE)
        y, i, k = [], 0, 0
        while i < len(x):
            n = blocks[k % len(blocks)]
            y.append(lim.process(x[i:i + n]))
            i, k = i + n, k + 1
        outs.append(np.concatenate(y))
    assert np.array_equal(outs[0], outs[1]) and len(outs[0]) == len(x)
    quiet = TruePeakLimiter(RATE)
    imp = np.zeros(500)
    imp[100] = 0.1
    assert np.argmax(np.abs(quiet.process(imp))) == 100 + quiet.delay


def test_a_transposed_block_does_not_compile_the_safety_stage_again() -> None:
    """numba compiles a kernel per memory layout and argument type; a block in Fortran order (the
    pair plus a transposed reverb) must reuse the compiled one, or the first reverb send of a
    show would stall the decode loop for the length of a compilation."""
    from engine.audio import kernels

    rng = np.random.default_rng(2)
    cond, lim = Conditioner(16000, channels=2), TruePeakLimiter(RATE, channels=2)
    c_order = rng.normal(0, 0.1, (64, 2))
    cond.process(c_order, -20.0)
    lim.process(c_order)
    compiled = len(kernels.condition.signatures), len(kernels.limit.signatures)
    f_order = np.asfortranarray(rng.normal(0, 0.1, (64, 2)))
    assert not f_order.flags.c_contiguous
    cond.process(f_order, -20.0)
    lim.process(f_order)
    cond.process(rng.normal(0, 0.1, 64)[:, None].repeat(2, axis=1)[::-1], -20.0)   # a negative stride
    assert (len(kernels.condition.signatures), len(kernels.limit.signatures)) == compiled


def test_conditioner_removes_dc_and_tames_harsh_highs() -> None:
    rng = np.random.default_rng(1)
    n = 16000 * 2
    hiss = np.convolve(rng.normal(0, 0.3, n), [1, -1], "same")  # all highs
    x = 0.4 + hiss
    c = Conditioner(16000)
    y = np.concatenate([c.process(x[i:i + 64], -20.0) for i in range(0, n, 64)]).astype(np.float64)
    tail = y[n // 2:]
    assert abs(tail.mean()) < 1e-3
    spec = np.abs(np.fft.rfft(tail)) ** 2
    f = np.fft.rfftfreq(len(tail), 1 / 16000)
    ref = np.abs(np.fft.rfft(hiss[n // 2:])) ** 2
    tilt_in = ref[f > 6000].sum() / ref[(f > 500) & (f < 3000)].sum()
    tilt_out = spec[f > 6000].sum() / spec[(f > 500) & (f < 3000)].sum()
    assert tilt_out < 0.3 * tilt_in
    assert abs(20 * np.log10(np.sqrt(np.mean(tail ** 2))) + 20.0) < 2.0


def test_a_baked_clip_crossfades_in_loops_without_a_click_and_crossfades_out(model) -> None:
    """A baked scene's sound (here a 440 Hz tone at the model rate) replaces the decoder's over the
    glide, loops seamlessly past its end, and gives the sound back to the decoder on None."""
    sr = model.sample_rate
    t = np.arange(int(0.8 * sr)) / sr
    clip = loop_clip(0.3 * np.sin(2 * np.pi * 440.0 * t), sr)
    synth = AudioSynth(model, RATE, seed=6)
    v = values()
    before = render(synth, v, 1.0)[:, 0]
    own = tone_share(before, 440.0, RATE)              # what the decoder itself puts near 440 Hz
    assert own < 0.1
    synth.play(clip, fade_s=0.2)
    fading = render(synth, v, 0.2)[:, 0]
    playing = render(synth, v, 2.0)[:, 0]             # 2.5 loops of the 0.8 s clip
    assert synth.playing_clip and tone_share(playing, 440.0, RATE) > 0.95
    # the level moves in per-sample steps: no sample jumps more than a 440 Hz sine at the ceiling can
    ceiling = db_to_gain(-1.0)
    step = np.abs(np.diff(np.concatenate([before[-100:], fading, playing]))).max()
    assert step < 1.3 * ceiling * 2 * np.pi * 440.0 / RATE
    synth.play(None, fade_s=0.2)
    render(synth, v, 0.3)
    after = render(synth, v, 1.0)[:, 0]
    assert not synth.playing_clip and tone_share(after, 440.0, RATE) < max(0.1, 2 * own) and np.abs(after).max() > 1e-3


def test_a_clip_too_loud_is_held_at_the_ceiling_like_decoded_sound(model) -> None:
    """Nothing bypasses the safety stage: a full-scale square clip at +20 dB comes out under the
    -1 dBFS true-peak ceiling with no DC."""
    sr = model.sample_rate
    square = 10.0 * np.sign(np.sin(2 * np.pi * 200.0 * np.arange(sr) / sr)) + 3.0
    synth = AudioSynth(model, RATE, seed=7)
    synth.play(square.astype(np.float32), fade_s=0.01)
    out = render(synth, values(audio__gain=12.0), 3.0)[:, 0]
    assert true_peak(out[RATE:]) <= db_to_gain(-1.0) * 1.0001
    assert abs(float(out[RATE:].mean())) < 1e-3
