"""Writes into a performer's patch file (MIDI learn, unlearn, preset store): whatever is written, the
file loads again as the engine loads it at start, keeps its comments, layout, mode and symlink, and
the previous text stays as NAME.bak. Real files in tmp_path throughout."""

from __future__ import annotations

import difflib
import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.configio import atomic_write
from engine.control.config import PRESET_NAME_MAX, Control, MidiConfig, MidiMapping, preset_name
from engine.control.midi import MidiControl
from engine.errors import PatchError
from engine.params import ParamStore
from engine.patch import PATCHES, load_patch, patch_from_text
from engine.patchwrite import PatchWriter

COMMENTED = """\
# my show — comments must survive every write
name = "show"   # the name

[params]
"audio/gain" = -6.0   # not too loud

[midi]
inputs = ["nanoKONTROL2"]

# the first fader
[[midi.mappings]]
param = "audio/gain"
number = 0

# presets of the second half
[presets.dark]
"sky/brightness" = 0.2   # nearly black

# the window
[visual]
width = 1280
"""


def comments(text: str) -> list[str]:
    return [line[line.index("#"):] for line in text.splitlines() if "#" in line]


def patch_file(tmp_path: Path, text: str = COMMENTED, mode: int = 0o644) -> Path:
    path = tmp_path / "show.toml"
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def leftovers(folder: Path) -> list[str]:
    """Temporary files a write left behind."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("name", ["été", '"quoted"', "a.b", "日本", "a\tb", "x" * 10_000, "  spaced out  ", "", "\n"])
def test_any_preset_name_is_stored_and_found_after_a_restart_or_refused_with_the_rule(tmp_path, name):
    path = patch_file(tmp_path)
    before = path.read_bytes()
    try:
        stored = PatchWriter(path).store_preset(name, {"audio/gain": -12.0, "sky/background": (0.1, 0.2, 0.3)})
    except ValueError as exc:
        assert name.strip() in ("", "a\tb", "x" * 10_000)
        assert f"1 to {PRESET_NAME_MAX} characters" in str(exc) and "no control characters" in str(exc)
        assert len(str(exc)) < 300                   # a 10,000-character name is not echoed whole
        assert path.read_bytes() == before
    else:
        assert stored == name.strip()
        restarted = load_patch(path, check_models=False)
        assert dict(restarted.presets[stored]) == {"audio/gain": -12.0, "sky/background": (0.1, 0.2, 0.3)}
        assert dict(restarted.presets["dark"]) == {"sky/brightness": 0.2}
    load_patch(path, check_models=False)
    assert comments(path.read_text(encoding="utf-8")) == comments(COMMENTED)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(max_size=PRESET_NAME_MAX + 4))
def test_preset_names_round_trip_through_the_file(tmp_path, name):
    path = patch_file(tmp_path)
    try:
        expected = preset_name(name)
    except ValueError:
        with pytest.raises(ValueError):
            PatchWriter(path).store_preset(name, {"audio/gain": -1.0})
        return
    assert PatchWriter(path).store_preset(name, {"audio/gain": -1.0}) == expected
    assert load_patch(path, check_models=False).presets[expected] == {"audio/gain": -1.0}


def test_comments_layout_and_mode_survive_store_replace_learn_and_unlearn(tmp_path):
    path = patch_file(tmp_path, mode=0o644)
    writer = PatchWriter(path)
    store = ParamStore()
    midi = MidiControl(MidiConfig(thread=False), store, writer=writer)
    steps = [
        ("store", lambda: writer.store_preset("bright", {"sky/brightness": 1.8, "audio/gain": -3.0})),
        ("store again", lambda: writer.store_preset("dark", {"sky/brightness": 0.2, "audio/gain": -20.0})),
        ("learn", lambda: (midi.learn("sky/spin"), [midi.handle([0xB0, 5, v], 0.0) for v in (1, 1, 2, 1)])),
        ("learn a pad", lambda: (midi.learn("sky/lon"), midi.handle([0x90, 0, 100], 0.0))),
        ("replace a mapping", lambda: writer.add_mapping(MidiMapping(param="audio/gain", number=0, maximum=0.0))),
        ("unlearn", lambda: midi.unlearn("sky/spin")),
    ]
    for what, step in steps:
        before = path.read_text(encoding="utf-8")
        step()
        text = path.read_text(encoding="utf-8")
        assert text != before, what
        assert comments(text) == comments(COMMENTED), what
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, what
        assert (tmp_path / "show.toml.bak").read_text(encoding="utf-8") == before, what
        load_patch(path, check_models=False)
    patch = load_patch(path, check_models=False)
    assert patch.presets["dark"] == {"sky/brightness": 0.2, "audio/gain": -20.0}
    assert patch.presets["bright"] == {"sky/brightness": 1.8, "audio/gain": -3.0}
    assert [(m.param, m.type) for m in patch.midi.mappings] == [("audio/gain", "cc"), ("sky/lon", "note")]
    assert patch.midi.mappings[0].maximum == 0.0
    text = path.read_text(encoding="utf-8")
    assert text.index("# the first fader") < text.index('param = "audio/gain"') < text.index('param = "sky/lon"')
    assert '"sky/brightness" = 0.2   # nearly black' in text       # unchanged values are left as written
    assert text.index("[presets.bright]") < text.index("# the window") < text.index("[visual]")
    assert leftovers(tmp_path) == []


def test_a_new_mapping_in_a_controller_profile_only_adds_lines(tmp_path):
    original = (PATCHES / "controllers" / "midimix.toml").read_text(encoding="utf-8")
    path = patch_file(tmp_path, original)
    PatchWriter(path).add_mapping(MidiMapping(param="sky/spin", channel=2, number=100))
    diff = [line for line in difflib.unified_diff(original.splitlines(), path.read_text(encoding="utf-8").splitlines(),
                                                  lineterm="", n=0) if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert diff and all(line.startswith("+") for line in diff)
    assert load_patch(path, check_models=False).midi.mappings[-1] == MidiMapping(param="sky/spin", channel=2, number=100)


def test_a_symlinked_patch_stays_a_link_and_its_target_changes(tmp_path):
    shows = tmp_path / "shows"
    shows.mkdir()
    target = patch_file(shows, mode=0o640)
    link = tmp_path / "tonight.toml"
    link.symlink_to(target)
    writer = PatchWriter(link)
    writer.store_preset("intro", {"audio/gain": -30.0})
    assert link.is_symlink() and link.resolve() == target.resolve()
    assert load_patch(target, check_models=False).presets["intro"] == {"audio/gain": -30.0}
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert (shows / "show.toml.bak").read_text(encoding="utf-8") == COMMENTED   # beside the target
    assert not (tmp_path / "tonight.toml.bak").exists()
    before = target.read_text(encoding="utf-8")
    writer.remove_mappings(control=Control("cc", 0, 0))
    assert link.is_symlink() and (shows / "show.toml.bak").read_text(encoding="utf-8") == before
    assert load_patch(link, check_models=False).midi.mappings == ()
    assert leftovers(shows) == [] and leftovers(tmp_path) == []


@pytest.mark.parametrize("change", [
    lambda w: w.store_preset("loud", {"audio/gain": 40.0}),                  # out of range
    lambda w: w.store_preset("nowhere", {"audio/gian": 0.0}),                # no such parameter
    lambda w: w.store_preset("nan", {"audio/gain": float("nan")}),
    lambda w: w.add_mapping(MidiMapping(param="audio/gian", number=3)),    # no such parameter
    lambda w: w.add_mapping(MidiMapping(param="audio/gain", type="cc14", number=40)),
])
def test_a_change_that_would_not_load_raises_and_leaves_the_file_as_it_was(tmp_path, change):
    path = patch_file(tmp_path)
    before = path.read_bytes()
    with pytest.raises(PatchError):
        change(PatchWriter(path))
    assert path.read_bytes() == before
    assert not (tmp_path / "show.toml.bak").exists() and leftovers(tmp_path) == []


def test_a_patch_broken_by_hand_is_not_written_over(tmp_path):
    path = patch_file(tmp_path, COMMENTED.replace("width = 1280", "width = 12"))
    before = path.read_bytes()
    with pytest.raises(PatchError, match=r"visual\.width: expected a value in \[64, 8192\]"):
        PatchWriter(path).store_preset("x", {"audio/gain": -1.0})
    path.write_text("[midi\n", encoding="utf-8")
    with pytest.raises(PatchError, match="not valid TOML"):
        PatchWriter(path).add_mapping(MidiMapping(param="audio/gain", number=1))
    assert path.read_text(encoding="utf-8") == "[midi\n"
    with pytest.raises(PatchError, match="file not found"):
        PatchWriter(tmp_path / "absent.toml").store_preset("x", {"audio/gain": -1.0})
    assert before != path.read_bytes()


def test_patch_from_text_validates_as_load_patch(tmp_path):
    path = patch_file(tmp_path)
    assert patch_from_text(COMMENTED, path) == load_patch(path, check_models=False)
    with pytest.raises(PatchError, match=r"presets\.dark\.sky/brightness: expected a value"):
        patch_from_text(COMMENTED.replace("0.2   #", "9.0   #"), path)


def test_atomic_write_keeps_mode_and_writes_new_files_with_the_umask(tmp_path):
    old = tmp_path / "card.toml"
    old.write_text("a = 1\n")
    old.chmod(0o604)
    atomic_write(old, "a = 2\n")
    assert old.read_text() == "a = 2\n" and stat.S_IMODE(old.stat().st_mode) == 0o604
    assert not (tmp_path / "card.toml.bak").exists()                   # backups only when asked
    mask = os.umask(0o022)
    os.umask(mask)
    new = tmp_path / "sub" / "weights.bin"
    assert atomic_write(new, b"\x00\x01") == new.resolve()
    assert new.read_bytes() == b"\x00\x01" and stat.S_IMODE(new.stat().st_mode) == 0o666 & ~mask
    assert leftovers(tmp_path) == [] and leftovers(tmp_path / "sub") == []
