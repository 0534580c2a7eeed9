"""The cloud of voices and the reverb (engine/audio/cloud.py) as a listener meets them: voices
placed across the stereo field and moving, a tail that outlives the sound, the same bytes for a
seed, and nothing changed for a patch without a cloud."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import param_values as values

from engine.audio.cloud import Space
from engine.audio.model import load_audio_model
from engine.audio.stream import AudioSynth
from engine.paramview import ParamView

ROOT = Path(__file__).resolve().parents[1]
RATE = 48000


@pytest.fixture(scope="module")
def model():
    return load_audio_model(ROOT / "models" / "audio-default")


def render(model, v: np.ndarray, seconds: float, voices: int, seed: int = 3) -> np.ndarray:
    synth = AudioSynth(model, RATE, seed=seed, voices=voices)
    return np.concatenate([synth.process(v, 4800).copy() for _ in range(int(seconds * RATE / 4800))])


def ild_db(sound: np.ndarray, window_s: float = 0.1) -> np.ndarray:
    """Interaural level difference (dB, left over right) per window."""
    w = int(window_s * RATE)
    n = len(sound) // w
    power = (sound[:n * w].astype(np.float64).reshape(n, w, 2) ** 2).mean(axis=1) + 1e-12   # (n, 2)
    return 10 * np.log10(power[:, 0] / power[:, 1])


def spread_out(sound: np.ndarray) -> tuple[float, float]:
    """(left/right correlation, spread of the ILD over time in dB) after the first second."""
    body = sound[RATE:]
    return float(np.corrcoef(body[:, 0], body[:, 1])[0, 1]), float(ild_db(body).std())


def test_eight_voices_panned_apart_fill_the_field_and_move(model) -> None:
    cloud = render(model, values(audio__voices=8, audio__cloud__pan=1.0), 8.0, voices=8)
    corr, moving = spread_out(cloud)
    assert corr < 0.5, f"left/right correlation {corr:.2f}: the voices are not spread"
    assert moving > 1.5, f"ILD varies by {moving:.2f} dB: the voices do not move in the field"
    # the must-fail fixtures: the pair alone, as ciel played before the cloud (its channels are
    # too alike), and the cloud with its voices all in the middle and a mono pair (fails both)
    alone = render(model, values(), 8.0, voices=1)
    assert spread_out(alone)[0] > 0.5
    centred = render(model, values(audio__voices=8, audio__cloud__pan=0.0, audio__width=0.0), 8.0, voices=8)
    corr0, moving0 = spread_out(centred)
    assert corr0 > 0.5 and moving0 < 1.5, (corr0, moving0)


def test_a_patch_without_a_cloud_sounds_as_before(model) -> None:
    """Voices made ready but not asked for cost CPU, not sound: the pair alone, as with none."""
    alone = render(model, values(), 2.0, voices=1)
    ready = render(model, values(audio__voices=1), 2.0, voices=8)
    assert np.abs(alone - ready).max() < 1e-4


def test_the_same_seed_gives_the_same_cloud(model) -> None:
    v = values(audio__voices=6, audio__reverb__send=0.4)
    a = render(model, v, 2.0, voices=6, seed=11)
    b = render(model, v, 2.0, voices=6, seed=11)
    c = render(model, v, 2.0, voices=6, seed=12)
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


def test_the_reverb_tail_outlives_its_input_and_then_costs_nothing() -> None:
    rate, hop = 16000, 64
    space = Space(rate, hop)
    p = ParamView(values(audio__reverb__size=0.92, audio__reverb__damp=0.75, audio__reverb__level=0.0))
    burst = np.random.default_rng(0).standard_normal((hop, 2)) * 0.5
    out = [space.process(burst, p) for _ in range(int(0.2 * rate / hop))]   # 0.2 s of noise in
    silence = np.zeros((hop, 2))
    out += [space.process(silence, p) for _ in range(int(3.0 * rate / hop))]
    tail = np.concatenate(out)
    level = 20 * np.log10(np.sqrt((tail.reshape(-1, rate // 10, 2) ** 2).mean(axis=(1, 2))) + 1e-12)  # per 0.1 s
    assert level[2] > -30, "no wet sound"
    assert level[2 + 10] > level[2] - 40, "the tail died within a second"          # still there 1 s after
    assert np.all(np.diff(level[4:]) < 3.0), "the tail grows after its input stopped"
    # the must-fail fixture: a dry room (size 0, all damped) has no second-long tail
    dry = Space(rate, hop)
    q = ParamView(values(audio__reverb__size=0.0, audio__reverb__damp=1.0, audio__reverb__level=0.0))
    d = [dry.process(burst, q) for _ in range(int(0.2 * rate / hop))] + \
        [dry.process(silence, q) for _ in range(int(3.0 * rate / hop))]
    dl = 20 * np.log10(np.sqrt((np.concatenate(d).reshape(-1, rate // 10, 2) ** 2).mean(axis=(1, 2))) + 1e-12)
    assert dl[2 + 10] < level[2 + 10] - 20
    # long after, the room is quiet and costs nothing: exact zeros
    for _ in range(int((Space.TAIL_S + 1) * rate / hop)):
        last = space.process(silence, p)
    assert not np.any(last)


def test_the_far_bus_filter_carries_its_state_from_step_to_step() -> None:
    """The one-pole low-pass as a matrix per step equals the same filter run sample by sample
    across step boundaries (a filter restarted each step would click at 250 Hz)."""
    from engine.audio.cloud import FAR_CUTOFF_HZ, _one_pole_matrix

    rate, hop = 16000, 64
    m, carry = _one_pole_matrix(FAR_CUTOFF_HZ, rate, hop)
    x = np.random.default_rng(1).standard_normal((hop * 5, 2))
    blocks, last = [], np.zeros(2)
    for i in range(5):
        y = m @ x[i * hop:(i + 1) * hop] + carry[:, None] * last[None, :]
        last = y[-1]
        blocks.append(y)
    a = np.exp(-2 * np.pi * FAR_CUTOFF_HZ / rate)
    ref, state = np.zeros_like(x), np.zeros(2)
    for n in range(len(x)):
        state = a * state + (1 - a) * x[n]
        ref[n] = state
    assert np.abs(np.concatenate(blocks) - ref).max() < 1e-9
