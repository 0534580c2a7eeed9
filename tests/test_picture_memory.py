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


CURTAIN = """
import sys, time
import numpy as np
from pathlib import Path
from PIL import ImageGrab
from engine.visual.config import VisualConfig
from engine.visual.display import raise_curtain
pygame, ctx = raise_curtain(VisualConfig(width=1920, height=1080), Path(sys.argv[1]))   # the whole screen
time.sleep(0.3)
im = ImageGrab.grab(bbox=(720, 405, 1200, 675))   # its centre, where the oval is
print(float(np.asarray(im.convert("L"), dtype=np.float32).mean()))
print("torch" in sys.modules)
pygame.display.quit()
"""


def test_a_restarted_installation_shows_its_last_picture_before_the_models_load(xdisplay: str, tmp_path: Path) -> None:
    """The curtain (engine/visual/display.py): the window opens on the picture saved last, in a
    process that has not imported torch; without a saved picture the same window is black."""
    import subprocess
    import sys

    saved = tmp_path / "last-picture.npz"
    np.savez(saved, image=np.full((64, 64, 3), 200, np.uint8))
    root = Path(__file__).resolve().parents[1]
    means = {}
    for name, path in (("saved", saved), ("none", tmp_path / "missing.npz")):
        out = subprocess.run([sys.executable, "-c", CURTAIN, str(path)], capture_output=True, text=True, timeout=120,
                             cwd=root)
        assert out.returncode == 0, out.stderr[-2000:]
        mean, torch_loaded = out.stdout.split()
        assert torch_loaded == "False"
        means[name] = float(mean)
    assert means["saved"] > 20.0, means        # the oval, lit by the last picture
    assert means["none"] <= 3.0, means         # nothing saved: black, as the dark check reads it
