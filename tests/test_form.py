"""The form (engine/form.py) and `ciel compose` (engine/compose.py): an arc of stages played on an
injected clock, live and offline, and a composition that is mastered to its promises."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from engine.app import Engine, RunOptions
from engine.compose import RATE, compose, flatness, true_peak_db
from engine.errors import PatchError
from engine.form import Form, arc
from engine.patch import load_patch, patch_from_text, patch_table

FORM = """
[form]
enabled = true
loop = {loop}

[[form.stages]]
name = "noise"
seconds = {a}
glide = 0
params = {{ "audio/learning" = 0.0, "audio/dissolve" = 0.6, "audio/voices" = 1 }}

[[form.stages]]
name = "voice"
seconds = {b}
glide = {g}
params = {{ "audio/learning" = 1.0, "audio/dissolve" = 0.0, "audio/voices" = 4 }}
"""


def form_patch(tmp_path: Path, a: float = 10.0, b: float = 10.0, g: float = 4.0, loop: bool = False):
    text = FORM.format(a=a, b=b, g=g, loop=str(loop).lower())
    path = tmp_path / "form.toml"
    path.write_text(f'[audio]\nvoices = 4\nmodel = "{Path(__file__).resolve().parents[1] / "models" / "audio-default"}"\n' + text)
    return load_patch(path)


def test_stages_hold_and_glide_and_a_loop_glides_on(tmp_path: Path) -> None:
    form = Form(form_patch(tmp_path, loop=True).form)
    assert form.duration == 20.0
    assert form.values_at(5.0) == {"audio/dissolve": 0.6, "audio/learning": 0.0, "audio/voices": 1}
    mid = form.values_at(12.0)                        # halfway through the glide into "voice"
    assert mid["audio/learning"] == pytest.approx(0.5) and mid["audio/voices"] == 4
    assert form.values_at(11.0)["audio/voices"] == 1  # whole numbers step at the glide's middle
    assert form.values_at(17.0)["audio/learning"] == 1.0
    assert form.stage_at(25.0) == (0, 5.0)            # looping: the first stage again
    assert form.values_at(20.0)["audio/learning"] == 0.0   # "noise" has no glide: it starts at once
    assert form.values_at(20.0 * 1000 + 12.0)["audio/learning"] == pytest.approx(0.5)   # a day later, the same


def test_the_form_round_trips_through_the_patch_file(tmp_path: Path) -> None:
    patch = form_patch(tmp_path)
    again = patch_from_text("", tmp_path / "x.toml")   # defaults: no form
    assert not again.form.enabled and again.form.stages == ()
    table = patch_table(patch)
    assert table["form"]["stages"][1]["params"]["audio/voices"] == 4


@pytest.mark.parametrize(("change", "key"), [
    (('"audio/learning" = 0.0', '"audio/lerning" = 0.0'), "form.stages[0].params.audio/lerning"),
    (("glide = 4", "glide = 40"), "form.stages[1].glide"),
    (("seconds = 10", "seconds = -1"), "form.stages[0].seconds"),
])
def test_a_bad_form_names_the_key_and_the_file(tmp_path: Path, change: tuple[str, str], key: str) -> None:
    text = FORM.format(a=10, b=10, g=4, loop="false").replace(*change, 1)
    with pytest.raises(PatchError) as info:
        patch_from_text(text, tmp_path / "bad.toml")
    assert key in str(info.value) and "bad.toml" in str(info.value)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_the_engine_plays_the_form_on_its_clock(tmp_path: Path) -> None:
    """A day of the form in well under a second: the engine's injected clock drives it."""
    patch = form_patch(tmp_path, loop=True)
    clock = Clock()
    engine = Engine(patch, None, RunOptions(audio=False, window=False, control=False), clock=clock)
    try:
        seen = []
        for t in (5.0, 12.0, 17.0, 86400.0 + 5.0):
            clock.t = 1000.0 + t
            engine.tick(clock.t)
            seen.append((engine.store.get("audio/learning")[0], engine.store.get("audio/voices")[0]))
        assert seen[0] == (0.0, 1.0)
        assert seen[1][0] == pytest.approx(0.5, abs=1e-6) and seen[1][1] == 4.0
        assert seen[2] == (1.0, 4.0)
        assert seen[3] == (0.0, 1.0)
    finally:
        engine.close()


def test_the_true_peak_meter_sees_between_the_samples() -> None:
    """The must-fail fixture of the master's promise: a sine at a quarter of the rate sampled at
    45 degrees peaks 3 dB above its samples; a sample-peak meter would pass it at -3 dBFS."""
    t = np.arange(RATE) / RATE
    x = 0.99 * np.sin(2 * np.pi * (RATE / 4) * t + np.pi / 4)
    stereo = np.stack((x, x), axis=1)
    assert 20 * np.log10(np.abs(stereo).max()) < -2.9
    assert true_peak_db(stereo, RATE) > -1.0


def test_compose_keeps_its_promises(tmp_path: Path) -> None:
    patch = form_patch(tmp_path, a=10.0, b=12.0, g=2.0)
    out = tmp_path / "piece.wav"
    made = compose(patch, out, 22.0 / 60.0, seed=3, target=-18.0)
    sound, rate = sf.read(out)
    info = sf.info(out)
    assert rate == RATE and info.subtype == "PCM_24" and sound.shape == (int(22.0 * RATE), 2)
    assert made.true_peak_db <= -1.0 and true_peak_db(sound, RATE) <= -0.95   # re-measured from the file
    assert abs(made.loudness - (-18.0)) <= 1.0
    rows = json.loads(out.with_suffix(".arc.json").read_text())["per_second"]
    noise = [r["flatness"] for r in rows if r["stage"] == "noise" and 2 <= r["t"] <= 9]
    voice = [r["flatness"] for r in rows if r["stage"] == "voice" and 14 <= r["t"] <= 17]
    assert np.median(noise) > np.median(voice), (noise, voice)   # the arc is in the sound
    assert out.with_suffix(".arc.png").stat().st_size > 1000


def test_the_same_seed_composes_the_same_bytes(tmp_path: Path) -> None:
    patch = form_patch(tmp_path, a=2.0, b=3.0, g=1.0)
    a = compose(patch, tmp_path / "a.wav", 5.0 / 60.0, seed=9, target=-20.0)
    b = compose(patch, tmp_path / "b.wav", 5.0 / 60.0, seed=9, target=-20.0)
    assert (tmp_path / "a.wav").read_bytes() == (tmp_path / "b.wav").read_bytes()
    assert a.loudness == b.loudness


def test_the_built_in_arc_goes_from_noise_to_voices_and_back() -> None:
    form = arc(300.0)
    names = [s.name for s in form.stages]
    assert names[0] == names[-1] == "noise" and "conversation" in names
    assert sum(s.seconds for s in form.stages) == pytest.approx(300.0)
    first, voice = Form(form).values_at(10.0), Form(form).values_at(0.43 * 300.0)
    assert first["audio/learning"] < 0.3 < 0.9 < voice["audio/learning"]


def test_flatness_tells_noise_from_a_tone() -> None:
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(RATE)
    tone = np.sin(2 * np.pi * 220 * np.arange(RATE) / RATE) + 0.001 * noise
    assert flatness(noise) > 0.5 > 0.01 > flatness(tone)
