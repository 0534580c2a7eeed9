"""A real pygame window under Xvfb: it opens, draws the oval, answers keys; without a display the
error is one clear line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from engine.visual.projection import layout

ROOT = Path(__file__).resolve().parent.parent


# The window runs in a child process, as under `ciel run`: Xlib ends a process whose thread had an
# EGL context (the other tests' gl_context) before it makes a GLX context current.
WINDOW_SCRIPT = """
import json, sys, time
import pygame
from engine.app import Engine, RunOptions
from engine.patch import Patch
from engine.visual.config import VisualConfig

KEYS = {5: pygame.K_n, 8: pygame.K_s, 12: pygame.K_ESCAPE}
count = {"ticks": 0, "frames": 0}


def tick(now):  # presses keys as the frames go by
    count["ticks"] += 1
    if count["ticks"] in KEYS:
        pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=KEYS[count["ticks"]], mod=0, unicode=""))


def frame_done(now):
    count["frames"] += 1


visual = VisualConfig(model=sys.argv[1], width=480, height=270, seed=5, screenshots=sys.argv[2])
engine = Engine(Patch(note="a note", visual=visual), None, RunOptions(audio=False, window=True, control=False))
engine.tick, engine.frame_done = tick, frame_done
engine.report("test", "overlay line")
if len(sys.argv) > 3:   # faults: one bad picture from the generator side, a screenshot folder that cannot exist
    real_latest, calls = engine.keyframes.latest, {"n": 0}

    def latest():
        calls["n"] += 1
        if calls["n"] == 4:
            raise ValueError("a picture that cannot be read")
        return real_latest()

    engine.keyframes.latest = latest
try:
    report = engine.show_window(deadline=time.monotonic() + 60)
    running = engine.running   # Esc ends the loop by clearing it
finally:
    engine.close()
print(json.dumps({"running": running, "frames": count["frames"], "note": engine.store.get1("note/show"),
                  "renderer": report.renderer, "messages": engine.messages()}))
"""


def test_window_opens_draws_the_oval_and_answers_keys(xdisplay, tmp_path):
    env = dict(os.environ, DISPLAY=xdisplay)
    env.pop("SDL_VIDEODRIVER", None)
    out = subprocess.run([sys.executable, "-c", WINDOW_SCRIPT, str(ROOT / "models/image-default"), str(tmp_path)],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert not result["running"] and result["frames"] >= 11  # Esc ended it
    assert result["note"] == 1.0  # N opened the note
    assert result["renderer"]
    shots = list(tmp_path.glob("ciel-*.png"))
    assert len(shots) == 1  # S saved one screenshot
    img = np.asarray(Image.open(shots[0]))
    assert img.shape == (270, 480, 3)
    lay = layout(480, 270)
    assert img[int(270 - lay.cy), int(lay.cx)].max() > 20  # sky at the centre
    assert np.array_equal(img[3, 3], [0, 0, 0])  # background in the corner
    note = img[int(270 - lay.note_y), int(lay.note_x)]
    assert 100 < note.mean() < 220 and np.ptp(note) < 10  # the grey circle


def test_no_display_is_one_clear_line():
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER")}
    code = ("from engine.errors import DisplayError\n"
            "from engine.visual.window import open_window\n"
            "from engine.visual.config import VisualConfig\n"
            "try:\n    open_window(VisualConfig())\n"
            "except DisplayError as exc:\n    print('DisplayError:', exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert "DisplayError: no display: start Xvfb" in out.stdout
    assert "--headless" in out.stdout and "Traceback" not in out.stderr


def test_a_bad_picture_and_an_unwritable_screenshot_folder_are_reported_and_the_show_goes_on(xdisplay, tmp_path):
    env = dict(os.environ, DISPLAY=xdisplay)
    env.pop("SDL_VIDEODRIVER", None)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = subprocess.run([sys.executable, "-c", WINDOW_SCRIPT, str(ROOT / "models/image-default"),
                          str(blocker / "shots"), "faults"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert not result["running"] and result["frames"] >= 11       # every frame after the faults was drawn, Esc ended it
    messages = "\n".join(result["messages"])
    # the bad picture was a line on the overlay (logged as it came; it goes once a good one follows)
    assert "image: ValueError: a picture that cannot be read" in out.stderr
    assert "screenshot: screenshot failed" in messages
