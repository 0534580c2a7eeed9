"""Patch files: every mistake a user can make gives an error naming the file, key and expectation."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import PatchError
from engine.patch import PATCHES, Patch, load_patch, save_patch


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(text)
    return path


def test_shipped_patches_load() -> None:
    for path in sorted(PATCHES.glob("*.toml")) + sorted(PATCHES.glob("controllers/*.toml")):
        patch = load_patch(path, check_models=False)
        assert patch.source == str(path)


def test_unknown_key_names_file_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, "[audio]\nsamplerat = 48000\n")
    with pytest.raises(PatchError) as err:
        load_patch(path, check_models=False)
    assert str(path) in str(err.value) and "audio.samplerat" in str(err.value) and "unknown key" in str(err.value)


def test_unknown_parameter(tmp_path: Path) -> None:
    path = write(tmp_path, '[params]\n"audio/gian" = -3\n')
    with pytest.raises(PatchError, match=r"params\.audio/gian: unknown parameter"):
        load_patch(path, check_models=False)


def test_value_out_of_range_says_the_range(tmp_path: Path) -> None:
    path = write(tmp_path, '[params]\naudio = { gain = 40 }\n')
    with pytest.raises(PatchError, match=r"params\.audio/gain: expected a value in \[-60, 6\] dB, got 40"):
        load_patch(path, check_models=False)
    path = write(tmp_path, "[audio]\nsamplerate = 10\n")
    with pytest.raises(PatchError, match=r"audio\.samplerate: expected a value in \[8000, 192000\]"):
        load_patch(path, check_models=False)


def test_wrong_type(tmp_path: Path) -> None:
    path = write(tmp_path, '[visual]\nfullscreen = "yes"\n')
    with pytest.raises(PatchError, match=r"visual\.fullscreen: expected true or false, got str 'yes'"):
        load_patch(path, check_models=False)
    path = write(tmp_path, '[params]\n"sky/lon" = "east"\n')
    with pytest.raises(PatchError, match=r"params\.sky/lon: expected a number"):
        load_patch(path, check_models=False)
    path = write(tmp_path, '[params]\n"audio/offset" = [1, 2]\n')
    with pytest.raises(PatchError, match=r"params\.audio/offset: expected 16 value\(s\), got 2"):
        load_patch(path, check_models=False)


def test_missing_model_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[audio]\nmodel = "no/such/model"\n')
    with pytest.raises(PatchError) as err:
        load_patch(path)
    assert "audio.model" in str(err.value) and "model file not found" in str(err.value)


def test_not_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "[audio\n")
    with pytest.raises(PatchError, match="not valid TOML"):
        load_patch(path, check_models=False)
    with pytest.raises(PatchError, match="file not found"):
        load_patch(tmp_path / "absent.toml")


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    patch = Patch(name="round", note='a "quoted"\nnote', params={"audio/gain": -3.0, "sky/background": (0.1, 0.2, 0.3)})
    path = tmp_path / "saved.toml"
    save_patch(patch, path)
    back = load_patch(path, check_models=False)
    assert back.name == "round" and back.note == patch.note
    assert back.params["sky/background"] == (0.1, 0.2, 0.3)
    assert back.audio.samplerate == patch.audio.samplerate
