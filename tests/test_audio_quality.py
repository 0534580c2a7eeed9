"""What a listener would notice in the live walk: a drone at the decoder's frame rate, two
channels that are the same, a click when the learning knob moves, a net that did not learn.

The measures are engine/audio/quality.py's; `python -m bench quality` reports the same ones over
longer walks. Each check has a fixture that must fail it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine.audio import quality as q
from engine.audio.inference import NumpyStream
from engine.audio.model import AudioModelConfig, AudioVAE, export_audio_model, load_audio_model
from engine.audio.stream import AudioSynth
from engine.learning import WeightMorph
from engine.params import REGISTRY

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def default():
    return load_audio_model(ROOT / "models" / "audio-default")


@pytest.fixture(scope="module")
def buzzing(tmp_path_factory: pytest.TempPathFactory):
    """A decoder that ignores its latent and repeats one 64-sample waveform every frame: the
    frame-rate drone at its purest (what a walk too smooth for a trained decoder sounds like)."""
    torch.manual_seed(3)
    vae = AudioVAE(AudioModelConfig(overlap=2))
    with torch.no_grad():
        vae.decoder.inp.weight.zero_()
        vae.decoder.inp.bias.normal_(0.0, 1.0)
    folder = tmp_path_factory.mktemp("buzz")
    clips = [torch.randn(16, 500)]
    export_audio_model(vae, folder, {"trained": True}, None, clips=clips)
    return load_audio_model(folder)


def test_the_comb_measure_hears_a_frame_rate_drone_and_not_noise() -> None:
    rate, rng = 16000, np.random.default_rng(0)
    noise = rng.standard_normal(10 * rate)
    period = rng.standard_normal(64)
    drone = np.tile(period, 10 * rate // 64) + 0.1 * noise
    assert abs(q.comb_db(noise, rate, 250.0)) < 1.0
    assert q.comb_db(drone, rate, 250.0) > 10.0


def test_a_buzzing_decoder_fails_the_quality_check(buzzing) -> None:
    assert q.walk_comb_db(buzzing, seconds=8.0) > 6.0


def test_the_default_walk_has_no_frame_rate_drone(default) -> None:
    assert default.trained
    assert q.walk_comb_db(default, seconds=30.0) <= 3.0


@pytest.mark.parametrize("settings", [
    {"audio/walk/speed": 4.0, "audio/walk/spread": 2.0},
    {"audio/temperature": 0.5, "audio/walk/spread": 0.5},
    {"audio/temperature": 1.5, "audio/hold": 1.0},
    {"audio/learning": 0.5, "audio/walk/speed": 4.0},
])
def test_no_drone_wherever_the_knobs_go(default, settings: dict[str, float]) -> None:
    assert q.walk_comb_db(default, seconds=8.0, seed=2, settings=settings) <= 4.0


def test_the_walk_sounds_nearer_the_data_than_a_drone(default, buzzing) -> None:
    """Log-mel statistics of the walk lie nearer to replayed archive material than a drone's."""
    rate = default.sample_rate
    replay = np.concatenate([default.decode(default.knobs_to_latent(c).T) for c in default.clips[:16]])
    ref = q.logmel_stats(q.level_matched(replay), rate)
    walk = q.render_walk(default, 15.0)[:, 0]
    drone = q.render_walk(buzzing, 15.0)[:, 0]
    d_walk = q.frechet(q.logmel_stats(q.level_matched(walk), rate), ref)
    d_drone = q.frechet(q.logmel_stats(q.level_matched(drone), rate), ref)
    assert d_walk < 0.5 * d_drone


def test_width_zero_is_mono_and_width_one_two_different_voices(default) -> None:
    mono = q.render_walk(default, 4.0, settings={"audio/width": 0.0})
    wide = q.render_walk(default, 4.0, settings={"audio/width": 1.0})
    # the same sound in both channels: what differs is the float rounding of two rows of one
    # matrix product, far below hearing (-80 dBFS)
    assert np.abs(mono[:, 0] - mono[:, 1]).max() < 1e-4
    assert abs(np.corrcoef(wide[:, 0], wide[:, 1])[0, 1]) < 0.9
    # both channels are heard
    assert min(np.sqrt(np.mean(wide ** 2, axis=0))) > 0.01


def test_the_default_model_carries_its_training_from_step_zero(default) -> None:
    steps = default.card["learning"]["steps"]
    assert len(default.snapshots) == len(steps) >= 4 and steps[0] == 0 and steps == sorted(steps)


@pytest.fixture(scope="module")
def archive_sound(phone_dataset) -> np.ndarray:
    """The sound of a generated phone archive (other recordings than the default's), 16 kHz."""
    return np.asarray(phone_dataset.audio, np.float64) / 32768.0


def test_learning_moves_from_noise_to_the_archive_without_a_click(default, archive_sound) -> None:
    """Swept 0 -> 1 -> 0 over 8 s: no clicks at the decode seams; the untrained end sounds farther
    from the archive's material than the trained end."""
    x, seams, frame = q.learning_sweep(default, 8.0)
    assert q.seam_click_ratio(x, seams[250:], frame) <= 1.5
    # the detector hears a sweep whose stream loses its left contexts every third hop
    broken = AudioSynth(default, 48000, seed=4)
    v = REGISTRY.defaults()
    audio, marks = [], []
    steps = int(8.0 * default.sample_rate / default.hop)
    for k in range(steps):
        v[REGISTRY.index("audio/learning")] = 1.0 - abs(1.0 - 2.0 * k / steps)
        if k % 3 == 0:
            broken.decoder.reset()
        marks.append(broken.next_out_index)
        audio.append(broken.step(v)[:, 0])
    assert q.seam_click_ratio(np.concatenate(audio), np.array(marks[250:]), frame) > 1.5
    rate = default.sample_rate
    ref = q.logmel_stats(q.level_matched(archive_sound), rate)
    fd = {learn: q.frechet(q.logmel_stats(q.level_matched(
        q.render_walk(default, 8.0, seed=1, settings={"audio/learning": learn})[:, 0]), rate), ref)
        for learn in (0.0, 1.0)}
    assert fd[1.0] < 0.7 * fd[0.0]


def test_weight_morph_ends_on_the_exact_final_weights_and_moves_in_place(default) -> None:
    import copy

    dec = copy.deepcopy(default.vae.decoder)
    morph = WeightMorph(dec, default.snapshots)
    weight = dec.inp.weight
    morph.set(0.0)
    assert dec.inp.weight is weight and not torch.equal(weight, default.vae.decoder.inp.weight)
    morph.set(1.0)
    for a, b in zip(dec.parameters(), default.vae.decoder.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("overlap,upsample", [(1, "transposed"), (2, "transposed"), (3, "transposed"), (1, "nearest")])
def test_the_numpy_stream_equals_the_offline_decode(overlap: int, upsample: str) -> None:
    torch.manual_seed(overlap)
    vae = AudioVAE(AudioModelConfig(overlap=overlap, upsample=upsample)).eval()
    z = torch.randn(2, 16, 37)
    ref = vae.decode(z).detach().numpy()
    stream = NumpyStream(vae.decoder, 2)
    sizes, out, i = [1, 4, 2, 7, 1, 9, 13], [], 0
    for n in sizes:
        out.append(stream(z[..., i:i + n].numpy()))
        i += n
    assert i == 37
    assert np.abs(np.concatenate(out, axis=2) - ref).max() < 1e-5


@pytest.mark.parametrize("upsample,overlap", [("nearest", 1), ("transposed", 2)])
def test_the_numpy_stream_plays_new_weights_once_told(upsample: str, overlap: int) -> None:
    """The learning morph writes the decoder's weights in place and calls weights_moved(): the
    stream then decodes with the new weights, upsamplers (which read packed copies) included.
    Without the call the packed copies are stale and the sound is not the new decoder's."""
    torch.manual_seed(3)
    vae = AudioVAE(AudioModelConfig(overlap=overlap, upsample=upsample)).eval()
    told, untold = NumpyStream(vae.decoder, 2), NumpyStream(vae.decoder, 2)
    with torch.no_grad():
        for p in vae.decoder.parameters():
            p.mul_(1.3)
    told.weights_moved()
    z = torch.randn(2, 16, 12)
    ref = vae.decode(z).detach().numpy()
    assert np.abs(told(z.numpy()) - ref).max() < 1e-5
    assert np.abs(untold(z.numpy()) - ref).max() > 1e-3
