"""MIDI mappings: what a performer notices (no jump on first touch, encoders, buttons, learn),
driven message by message through MidiControl.handle (the JACK path is in test_midi_jack.py)."""

from __future__ import annotations

import dataclasses

import pytest

from engine.control.config import Control, MidiConfig, MidiMapping
from engine.control.midi import LEARN_WINDOW_S, MidiControl, curve, relative_encoding, uncurve
from engine.errors import ParamError, PatchError
from engine.params import ParamStore
from engine.patch import DEFAULT_PATCH, load_patch
from engine.patchwrite import PatchWriter


def cc(number: int, value: int, channel: int = 1) -> list[int]:
    return [0xB0 | (channel - 1), number, value]


def note(number: int, velocity: int, channel: int = 1) -> list[int]:
    return [(0x90 if velocity else 0x80) | (channel - 1), number, velocity]


def make(*mappings: MidiMapping, takeover: str = "pickup", **kw) -> tuple[MidiControl, ParamStore]:
    store = ParamStore()
    midi = MidiControl(MidiConfig(mappings=mappings, takeover=takeover, thread=False, **kw), store)
    return midi, store


def sweep(midi: MidiControl, store: ParamStore, name: str, number: int, values) -> list[float]:
    out = []
    for v in values:
        midi.handle(cc(number, v), 0.0)
        out.append(store.get1(name))
    return out


def test_cc_maps_range_curve_and_invert():
    midi, store = make(MidiMapping(param="sky/lon", number=1),
                       MidiMapping(param="audio/temperature", number=2, minimum=0.5, maximum=1.5, invert=True),
                       MidiMapping(param="sky/spin", number=3, curve="exp"), takeover="none")
    midi.handle(cc(1, 127), 0.0)
    midi.handle(cc(2, 0), 0.0)
    assert store.get1("sky/lon") == 180.0
    assert store.get1("audio/temperature") == 1.5
    midi.handle(cc(3, 64), 0.0)
    assert -30 < store.get1("sky/spin") < -15  # exp: the first half of the travel is the fine part
    assert uncurve(curve(0.3, "exp"), "exp") == pytest.approx(0.3)


def test_pickup_sweep_never_jumps_and_follows_after_passing():
    midi, store = make(MidiMapping(param="audio/temperature", number=7))
    store.set("audio/temperature", 2.0, source="osc")  # 2/3 of the range, set elsewhere
    values = sweep(midi, store, "audio/temperature", 7, range(0, 128))
    steps = [abs(b - a) for a, b in zip(values, values[1:])]
    assert max(steps) <= 3.0 / 127 + 1e-9, "the parameter jumped"
    assert values[40] == 2.0            # knob below the value: ignored
    assert values[-1] == 3.0            # after passing, it follows to the top
    values = sweep(midi, store, "audio/temperature", 7, range(127, -1, -1))
    assert values[-1] == 0.0


def test_change_from_elsewhere_re_arms_pickup():
    midi, store = make(MidiMapping(param="sky/grain", number=9))
    sweep(midi, store, "sky/grain", 9, range(0, 128))   # picked up on the way
    assert store.get1("sky/grain") == 1.0
    store.set("sky/grain", 0.2, source="osc")
    midi.handle(cc(9, 120), 0.0)
    assert store.get1("sky/grain") == 0.2              # no jump back to the knob
    sweep(midi, store, "sky/grain", 9, range(120, 20, -1))
    assert store.get1("sky/grain") == pytest.approx(21 / 127)


def test_scale_takeover_converges_without_jumps():
    midi, store = make(MidiMapping(param="sky/brightness", number=4), takeover="scale")
    store.set("sky/brightness", 1.5, source="osc")
    midi.handle(cc(4, 32), 0.0)            # first touch: only the position is learned
    assert store.get1("sky/brightness") == 1.5
    values = sweep(midi, store, "sky/brightness", 4, range(33, 128))
    assert values[-1] == pytest.approx(2.0)
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert max(b - a for a, b in zip(values, values[1:])) < 0.05


def test_none_takeover_jumps_at_once():
    midi, store = make(MidiMapping(param="sky/brightness", number=4, takeover="none"))
    midi.handle(cc(4, 0), 0.0)
    assert store.get1("sky/brightness") == 0.0


def test_14_bit_cc_and_pitch_bend_resolution():
    midi, store = make(MidiMapping(param="sky/lon", type="cc14", number=1),
                       MidiMapping(param="sky/lat", type="pitchbend"), takeover="none")
    midi.handle(cc(1, 64), 0.0)
    midi.handle(cc(33, 1), 0.0)
    assert store.get1("sky/lon") == pytest.approx(-180 + 360 * (64 * 128 + 1) / 16383)
    midi.handle([0xE0, 0x7F, 0x7F], 0.0)
    assert store.get1("sky/lat") == 90.0
    midi.handle([0xE0, 0x00, 0x40], 0.0)   # centre
    assert store.get1("sky/lat") == pytest.approx(0.0, abs=0.02)


@pytest.mark.parametrize("encoding,up,down", [("twos", 1, 127), ("offset", 65, 63), ("signbit", 1, 65)])
def test_relative_encoders(encoding, up, down):
    midi, store = make(MidiMapping(param="sky/graticule", type="relative", number=20, encoding=encoding, step=0.1))
    start = store.get1("sky/graticule")
    midi.handle(cc(20, up), 0.0)
    assert store.get1("sky/graticule") == pytest.approx(start + 0.1)
    midi.handle(cc(20, down), 0.0)
    midi.handle(cc(20, down), 0.0)
    assert store.get1("sky/graticule") == pytest.approx(start - 0.1)


def test_relative_inc_dec_pair():
    midi, store = make(MidiMapping(param="sky/spacing", type="relative", number=96, encoding="incdec", step=0.1))
    midi.handle(cc(96, 1), 0.0)
    midi.handle(cc(96, 1), 0.0)
    midi.handle(cc(97, 1), 0.0)
    assert store.get1("sky/spacing") == pytest.approx(30 + 8.5)


def test_notes_fire_triggers_toggle_switches_and_set_vector_elements():
    midi, store = make(MidiMapping(param="audio/jump", type="note", number=36),
                       MidiMapping(param="audio/hold", type="note", number=37),
                       MidiMapping(param="audio/mute", type="note", number=38, mode="momentary"),
                       MidiMapping(param="audio/offset", index=2, number=10, takeover="none"),
                       MidiMapping(param="scene/next", number=41, channel=2))
    for _ in range(3):
        midi.handle(note(36, 100), 0.0)
        midi.handle(note(36, 0), 0.0)
    assert store.get1("audio/jump") == 3.0
    midi.handle(note(37, 90), 0.0)
    midi.handle(note(37, 0), 0.0)
    assert store.get1("audio/hold") == 1.0
    midi.handle(note(37, 90), 0.0)
    assert store.get1("audio/hold") == 0.0
    midi.handle(note(38, 90), 0.0)
    assert store.get1("audio/mute") == 1.0
    midi.handle(note(38, 0), 0.0)
    assert store.get1("audio/mute") == 0.0
    midi.handle(cc(10, 127), 0.0)
    assert store.get("audio/offset")[1:4] == (0.0, 4.0, 0.0)
    midi.handle(cc(41, 127, channel=1), 0.0)    # wrong channel
    midi.handle(cc(41, 127, channel=2), 0.0)
    midi.handle(cc(41, 0, channel=2), 0.0)
    assert store.get1("scene/next") == 1.0


def turn(midi: MidiControl, number: int, values, channel: int = 1, now: float = 0.0) -> None:
    for v in values:
        midi.handle(cc(number, v, channel), now)


def learner(tmp_path, **kw) -> tuple[MidiControl, ParamStore, object]:
    patch_file = tmp_path / "live.toml"
    patch_file.write_text(DEFAULT_PATCH.read_text())
    store = ParamStore()
    midi = MidiControl(MidiConfig(thread=False, takeover="none", **kw), store, writer=PatchWriter(patch_file))
    return midi, store, patch_file


def test_learn_binds_the_control_moved_and_writes_the_patch(tmp_path):
    midi, store, patch_file = learner(tmp_path)
    assert midi.learn("audio/offset", 5) == "audio/offset"
    turn(midi, 74, [120, 122, 124], channel=3)
    assert midi.mappings == ()                       # still listening: one message decides nothing
    turn(midi, 74, [127], channel=3)                 # the fourth: bound, and applied
    assert store.get("audio/offset")[5] == 4.0
    saved = load_patch(patch_file).midi.mappings
    assert saved == (MidiMapping(param="audio/offset", index=5, type="cc", channel=3, number=74),)
    store.set("sky/roll", 10.0, source="keys")       # learn from a key: the last thing touched
    assert midi.learn() == "sky/roll"
    midi.handle(note(60, 100), 0.0)                  # a note binds at once
    assert [m.param for m in load_patch(patch_file).midi.mappings] == ["audio/offset", "sky/roll"]
    midi.learn("sky/lat")
    turn(midi, 74, [10, 8, 6, 4], channel=3)         # the same knob, learned again: replaced where it was
    assert [m.param for m in load_patch(patch_file).midi.mappings] == ["sky/lat", "sky/roll"]
    assert sorted(m.param for m in midi.mappings) == ["sky/lat", "sky/roll"]
    midi.learn("sky/spin")
    midi.cancel_learn()
    turn(midi, 75, [0, 1, 2, 3])
    assert len(midi.mappings) == 2
    with pytest.raises(ParamError):
        midi.learn("no/such")


def test_learn_decides_when_the_control_stops(tmp_path):
    midi, store, patch_file = learner(tmp_path)
    midi.learn("sky/grain")
    midi.handle(cc(20, 100), 10.0)
    midi.poll(10.1)
    assert midi.mappings == ()
    midi.poll(10.0 + LEARN_WINDOW_S)                  # quiet for the window: what was heard binds
    assert midi.mappings == (MidiMapping(param="sky/grain", type="cc", channel=1, number=20),)
    assert load_patch(patch_file).midi.mappings == midi.mappings
    midi.learn("sky/lon")
    midi.handle(cc(21, 0), 20.0)
    midi.handle(cc(21, 127), 20.5)                   # late: decides from the first, then applies
    assert midi.mappings[-1].number == 21 and store.get1("sky/lon") == 180.0


@pytest.mark.parametrize("values,encoding", [
    ([1, 1, 2, 1], "twos"), ([127, 127, 126, 127], "twos"), ([1, 1, 127, 127], "twos"),
    ([65, 65, 66, 65], "offset"), ([63, 63, 62, 63], "offset"), ([65, 63, 65, 65], "offset"),
    ([1, 2, 65, 65], "signbit"),
])
def test_learn_recognises_relative_encoders(tmp_path, values, encoding):
    midi, store, patch_file = learner(tmp_path)
    midi.learn("sky/graticule")
    turn(midi, 16, values, channel=2)
    expected = MidiMapping(param="sky/graticule", type="relative", channel=2, number=16, encoding=encoding)
    assert midi.mappings == (expected,)
    assert load_patch(patch_file).midi.mappings == (expected,)
    assert relative_encoding(values) == encoding


@pytest.mark.parametrize("values", [[10, 11, 12, 13], [1, 2, 3, 4], [127, 126, 125, 124], [62, 63, 64, 65],
                                    [66, 65, 64, 63], [127, 0, 127, 0], [40, 45, 50, 55],
                                    [62, 63, 62, 63], [66, 67, 66, 67], [3, 4, 3, 4], [125, 124, 125, 124]])
def test_learn_keeps_absolute_controls_absolute(tmp_path, values):
    midi, store, _ = learner(tmp_path)
    midi.learn("sky/graticule")
    turn(midi, 16, values)
    assert midi.mappings == (MidiMapping(param="sky/graticule", type="cc", channel=1, number=16),)
    assert relative_encoding(values[:1]) is None     # one message never reads as an encoder


def test_learn_recognises_a_14_bit_pair(tmp_path):
    midi, store, patch_file = learner(tmp_path)
    midi.learn("sky/lon")
    midi.handle(cc(7, 64, channel=4), 0.0)
    midi.handle(cc(39, 1, channel=4), 0.0)           # CC 7 + 32: its LSB
    expected = MidiMapping(param="sky/lon", type="cc14", channel=4, number=7)
    assert midi.mappings == (expected,)
    assert load_patch(patch_file).midi.mappings == (expected,)
    midi.handle(cc(7, 127, channel=4), 0.0)
    midi.handle(cc(39, 127, channel=4), 0.0)
    assert store.get1("sky/lon") == 180.0
    midi.learn("sky/lat")
    midi.handle(cc(7, 64, channel=5), 0.0)
    midi.handle(cc(38, 1, channel=5), 0.0)           # not its pair: another control, ignored
    turn(midi, 7, [65, 66, 67], channel=5)
    assert midi.mappings[-1] == MidiMapping(param="sky/lat", type="cc", channel=5, number=7)


def test_unlearn_forgets_mappings_now_and_in_the_patch(tmp_path):
    midi, store, patch_file = learner(tmp_path)
    for param, number in (("sky/lon", 1), ("sky/lat", 2), ("sky/roll", 3)):
        midi.learn(param)
        turn(midi, number, [10, 20, 30, 40])
    midi.learn("audio/offset", 2)
    midi.handle(note(36, 100), 0.0)
    assert midi.unlearn("sky/lat") == 1
    assert [m.param for m in midi.mappings] == ["sky/lon", "sky/roll", "audio/offset"]
    assert [m.param for m in load_patch(patch_file).midi.mappings] == ["sky/lon", "sky/roll", "audio/offset"]
    before = store.get1("sky/lat")
    midi.handle(cc(2, 127), 0.0)
    assert store.get1("sky/lat") == before           # the knob does nothing now
    assert midi.unlearn("audio/offset", 3) == 0      # another element
    assert midi.unlearn(control=Control("note", 1, 36)) == 1
    assert midi.unlearn("sky/lat") == 0
    with pytest.raises(ParamError):
        midi.unlearn("audio/offset", 99)
    assert midi.unlearn() == 2                       # no arguments: every mapping
    assert midi.mappings == () and load_patch(patch_file).midi.mappings == ()
    assert midi.health()["learned"] == 4


def test_program_change_recalls_through_on_program():
    calls: list[int] = []

    def recall(program: int) -> None:
        calls.append(program)
        if program == 9:
            raise ValueError("no preset there")

    store = ParamStore()
    midi = MidiControl(MidiConfig(thread=False), store, on_program=recall)
    midi.handle([0xC0, 5], 0.0)
    midi.handle([0xC3, 0], 0.0)                      # any channel
    midi.handle([0xC0, 9], 0.0)                      # a failing recall is logged, not raised
    assert calls == [5, 0, 9] and midi.health()["programs"] == 3
    off = MidiControl(MidiConfig(thread=False, program_presets=False), store, on_program=recall)
    off.handle([0xC0, 1], 0.0)
    assert calls == [5, 0, 9]


def test_clock_in_tempo_and_trigger():
    midi, store = make(clock=True, clock_trigger="scene/next", clock_beats=4)
    t = 0.0
    midi.handle([0xFA], t)
    for _ in range(24 * 8):
        t += 0.5 / 24          # 120 bpm
        midi.handle([0xF8], t)
    assert midi.health()["bpm"] == pytest.approx(120.0, rel=1e-3)
    assert store.get1("scene/next") == 2.0


def test_bad_mappings_name_the_key():
    with pytest.raises(PatchError, match=r"midi.mappings\[1\].param: unknown parameter 'audio/gian'"):
        make(MidiMapping(param="audio/gain"), MidiMapping(param="audio/gian"))
    with pytest.raises(PatchError, match=r"midi.mappings\[0\].index"):
        make(MidiMapping(param="audio/gain", index=2))
    with pytest.raises(PatchError, match=r"midi.mappings\[0\]: range 10 is outside"):
        make(MidiMapping(param="audio/gain", maximum=10.0))
    with pytest.raises(PatchError, match="midi.clock_trigger"):
        make(clock_trigger="audio/gain")


def test_malformed_bytes_are_counted_not_fatal():
    midi, store = make(MidiMapping(param="sky/grain", number=1), takeover="none")
    for data in ([0x30], [0xB0], [0xB0, 200, 5], [0xF0, 1, 2], []):
        midi.handle(data, 0.0)
    midi.handle(cc(1, 127), 0.0)
    assert store.get1("sky/grain") == 1.0


def test_controller_profiles_load_and_bind_existing_parameters():
    for path in sorted((DEFAULT_PATCH.parent / "controllers").glob("*.toml")):
        patch = load_patch(path, check_models=False)
        assert len(patch.midi.mappings) >= 16, path
        controls = [(m.type, m.channel, m.number) for m in patch.midi.mappings]
        assert len(controls) == len(set(controls)), f"{path}: a control is mapped twice"
        MidiControl(dataclasses.replace(patch.midi, thread=False), ParamStore(), source=str(path))
