"""Voices over N speakers (engine/audio/speakers.py, `[audio] channels`, `channel_offset`), as a
visitor standing among them meets it: each speaker's gains keep a voice's power wherever it is,
a cloud panned apart moves around a ring of speakers while a centred one stays in front, the
room is as loud as a stereo pair, and on a sound card ciel's speakers start at the offset with
the channels before them silent."""

from __future__ import annotations

import math
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import missing
from conftest import param_values as values

from engine.audio.model import load_audio_model
from engine.audio.speakers import Speakers
from engine.audio.stream import AudioSynth

ROOT = Path(__file__).resolve().parents[1]
RATE = 48000


@pytest.fixture(scope="module")
def model():
    return load_audio_model(ROOT / "models" / "audio-default")


@pytest.mark.parametrize(("n", "layout"), [(3, "ring"), (4, "ring"), (8, "ring"), (4, "line"), (6, "line")])
def test_a_voice_keeps_its_power_and_sounds_from_its_two_nearest_speakers(n: int, layout: str) -> None:
    pans = np.random.default_rng(0).uniform(-1, 1, 500)
    g = Speakers(n, layout).gains(pans)                                    # (500, n)
    assert g.shape == (500, n) and np.all(g >= -1e-12)
    assert np.allclose((g ** 2).sum(axis=1), 1.0), "equal power: the voice is as loud between speakers as on one"
    assert np.all((g > 1e-9).sum(axis=1) <= 2), "more than two speakers sound for one voice"


def test_pans_land_where_the_layout_says() -> None:
    ring = Speakers(8, "ring")
    # front is speaker 1, the right (pan 0.5) speaker 3, the left (-0.5) speaker 7, behind speaker 5
    for pan, speaker in ((0.0, 0), (0.5, 2), (-0.5, 6), (1.0, 4), (-1.0, 4)):
        g = ring.gains(np.array([pan]))[0]
        assert g[speaker] == pytest.approx(1.0), (pan, g.round(3))
    half = ring.gains(np.array([0.125]))[0]                                 # halfway from speaker 1 to 2
    assert half[0] == pytest.approx(math.sqrt(0.5)) and half[1] == pytest.approx(math.sqrt(0.5))
    line = Speakers(4, "line")
    for pan, speaker in ((-1.0, 0), (-1 / 3, 1), (1 / 3, 2), (1.0, 3)):
        assert line.gains(np.array([pan]))[0][speaker] == pytest.approx(1.0)
    # two speakers are stereo whatever the layout: the classic law
    theta = (np.array([-1.0, 0.0, 0.6]) + 1) * math.pi / 4
    assert np.allclose(Speakers(2, "ring").gains(np.array([-1.0, 0.0, 0.6])), np.stack((np.cos(theta), np.sin(theta)), 1))
    with pytest.raises(ValueError, match="layout"):
        Speakers(4, "dome")


def render(model, v: np.ndarray, seconds: float, channels: int, layout: str = "ring", seed: int = 3) -> np.ndarray:
    synth = AudioSynth(model, RATE, seed=seed, voices=8, channels=channels, layout=layout)
    out = np.concatenate([synth.process(v, 4800).copy() for _ in range(int(seconds * RATE / 4800))])
    assert out.shape[1] == channels
    return out[RATE:]


def where_it_sounds(sound: np.ndarray, window_s: float = 0.1) -> np.ndarray:
    """Per window, the direction (radians) of the sound's power on a ring of speakers (the
    power-weighted mean of the speakers' azimuths, as a listener at the centre would place it)."""
    n = sound.shape[1]
    w = int(window_s * RATE)
    k = len(sound) // w
    power = (sound[:k * w].astype(np.float64).reshape(k, w, n) ** 2).mean(axis=1)         # (k, n)
    az = 2 * np.pi * np.arange(n) / n
    return np.angle(power @ np.exp(1j * az))


def circular_spread(angles: np.ndarray) -> float:
    """0 when every angle is the same, 1 when they cover the circle evenly."""
    return float(1.0 - abs(np.mean(np.exp(1j * angles))))


def test_a_cloud_panned_apart_moves_around_a_ring_and_a_centred_one_stays_in_front(model) -> None:
    apart = render(model, values(audio__voices=8, audio__cloud__pan=1.0, audio__reverb__send=0.1), 8.0, 4)
    levels = 10 * np.log10((apart.astype(np.float64) ** 2).mean(axis=0) + 1e-12)
    assert np.all(levels > -45), f"a speaker is silent: {levels.round(1)} dBFS"
    moving = circular_spread(where_it_sounds(apart))
    corr = np.corrcoef(apart.T)[np.triu_indices(4, 1)]
    assert moving > 0.3, f"the sound's direction spreads by {moving:.3f}: the voices do not move around the ring"
    assert corr.max() < 0.5, f"speakers too alike: correlations {corr.round(2)}"
    # the must-fail fixture: the cloud all in front (pan 0) and the pair as one voice (width 0)
    front = render(model, values(audio__voices=8, audio__cloud__pan=0.0, audio__width=0.0, audio__reverb__send=0.1), 8.0, 4)
    still = circular_spread(where_it_sounds(front))
    assert still < 0.3, f"a cloud held in front spreads by {still:.3f} too"


def test_n_speakers_are_as_loud_together_as_a_stereo_pair(model) -> None:
    v = values(audio__voices=8, audio__cloud__pan=1.0)
    stereo = render(model, v, 6.0, 2)
    ring = render(model, v, 6.0, 8)
    total = [10 * np.log10((x.astype(np.float64) ** 2).sum(axis=1).mean()) for x in (stereo, ring)]
    assert abs(total[0] - total[1]) < 3.0, f"summed power: stereo {total[0]:.1f} dB, 8 speakers {total[1]:.1f} dB"
    assert np.abs(ring).max() <= 10 ** (-1 / 20) + 1e-4, "above the ceiling"


def test_the_audio_process_plays_from_the_channel_offset_and_keeps_the_ones_before_silent(
        jackd, tmp_path: Path) -> None:
    """A sound card with 8 outputs (the test server's), `channels = 4`, `channel_offset = 2`:
    JACK shows ciel:out_1 … out_6; out_1 and out_2 stay silent, out_3 … out_6 carry the four
    speakers, and `record` writes those four."""
    from engine.audio.config import AudioConfig
    from engine.audio.output import AudioProcess
    from engine.params import REGISTRY, ParamStore, SharedSnapshot

    if shutil.which("jack_rec") is None or shutil.which("jack_lsp") is None:
        missing("jack_rec / jack_lsp (jackd2's example clients) not installed")
    snap = SharedSnapshot(REGISTRY.size)
    store = ParamStore(snapshot=snap)
    store.set("audio/voices", 8)
    store.set("audio/cloud/pan", 1.0)
    rec = tmp_path / "rec.wav"
    cfg = AudioConfig(model=str(ROOT / "models" / "audio-default"), channels=4, channel_offset=2, voices=8,
                      ahead_ms=12.0, record=str(rec), seed=5)
    audio = AudioProcess(cfg, snap.name)
    try:
        audio.start(timeout=60)
        ports = subprocess.run(["jack_lsp"], capture_output=True, text=True, timeout=10).stdout.split()
        ours = sorted(p for p in ports if p.startswith("ciel:out_"))
        assert ours == [f"ciel:out_{i}" for i in range(1, 7)], ours
        time.sleep(1.0)
        wav = tmp_path / "ports.wav"
        subprocess.run(["jack_rec", "-f", str(wav), "-d", "4", "-b", "16", *ours], capture_output=True, timeout=30,
                       check=True)
    finally:
        audio.stop()
        snap.close()
    sound, rate = sf.read(wav)
    assert sound.shape[1] == 6 and len(sound) >= 3 * rate
    sound = sound[rate // 2:]
    assert np.abs(sound[:, :2]).max() == 0.0, "a channel before the offset is not silent"
    levels = 10 * np.log10((sound[:, 2:] ** 2).mean(axis=0) + 1e-12)
    assert np.all(levels > -50), f"a speaker is silent: {levels.round(1)} dBFS"
    recorded, _ = sf.read(rec)
    assert recorded.shape[1] == 4, "record writes ciel's speakers, not the silent channels"


def test_more_speakers_than_the_device_has_is_one_clear_error(jackd) -> None:
    from engine.audio.config import AudioConfig
    from engine.audio.output import AudioProcess
    from engine.errors import AudioDeviceError
    from engine.params import REGISTRY, SharedSnapshot

    snap = SharedSnapshot(REGISTRY.size)
    audio = AudioProcess(AudioConfig(model=str(ROOT / "models" / "audio-default"), channels=8, channel_offset=4), snap.name)
    try:
        with pytest.raises(AudioDeviceError, match=r"8 output channels.*channels = 8 from channel_offset = 4 needs 12"):
            audio.start(timeout=60)
    finally:
        audio.stop()
        snap.close()
