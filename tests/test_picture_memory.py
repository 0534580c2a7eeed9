"""The last picture kept across restarts (engine/visual/memory.py): what a restarted installation
shows first, and that nothing about the file can stop the show."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.parts import Keyframe
from engine.visual.memory import PictureMemory


def picture(value: int, r: int = 8) -> np.ndarray:
    return np.full((r, r, 3), value, np.uint8)


def test_the_last_shown_picture_is_what_the_next_run_recalls(tmp_path: Path) -> None:
    path = tmp_path / "state" / "last-picture.npz"
    first = PictureMemory(path, 8, interval_s=0.05)
    assert first.recall() is None                           # a fresh installation: nothing to recall
    first.offer(Keyframe(picture(10), None, 1))
    first.offer(Keyframe(picture(20), picture(30), 2))      # the newest shown wins
    first.close()
    again = PictureMemory(path, 8).recall()
    assert again is not None and again.image[0, 0, 0] == 20 and again.back is not None and again.back[0, 0, 0] == 30
    assert PictureMemory(path, 16).recall() is None          # another model's size: not shown


def test_a_damaged_file_or_an_unwritable_folder_never_stops_the_show(tmp_path: Path) -> None:
    bad = tmp_path / "last-picture.npz"
    bad.write_bytes(b"PK\x03\x04 not a whole archive")
    assert PictureMemory(bad, 8).recall() is None
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    memory = PictureMemory(blocker / "last-picture.npz", 8)
    memory.offer(Keyframe(picture(1), None, 1))
    memory.close()                                          # the write fails: counted, not raised
    assert memory.write_errors == 1
