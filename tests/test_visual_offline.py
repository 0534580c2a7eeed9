"""Offscreen frames (EGL) as `ciel render` makes them: same seed, same bytes; the oval is there."""

from __future__ import annotations

import hashlib

import numpy as np

from engine.params import REGISTRY
from engine.visual.config import VisualConfig
from engine.visual.offline import FrameRenderer
from engine.visual.projection import layout


def render(seed: int, frames: int = 12) -> tuple[str, np.ndarray]:
    v = REGISTRY.defaults()
    v[REGISTRY.index("image/walk/speed")] = 1.0
    digest = hashlib.sha1()
    with FrameRenderer(VisualConfig(), 320, 180, seed=seed) as fr:
        for i in range(frames):
            if i == 6:
                v[REGISTRY.index("image/jump")] += 1
            frame = fr.frame(v, i / 25)
            digest.update(frame.tobytes())
    return digest.hexdigest(), frame


def test_same_seed_same_bytes_other_seed_other_frames():
    a, frame = render(1)
    b, _ = render(1)
    c, _ = render(2)
    assert a == b
    assert a != c
    lay = layout(320, 180)
    centre = frame[int(180 - lay.cy), int(lay.cx)]
    assert frame.shape == (180, 320, 3)
    assert np.array_equal(frame[2, 2], [0, 0, 0])  # background (default black) outside the oval
    assert centre.max() > 20  # the sky inside


def test_frames_change_as_the_sky_moves():
    v = REGISTRY.defaults()
    v[REGISTRY.index("sky/spin")] = 30.0
    with FrameRenderer(VisualConfig(), 320, 180, seed=3) as fr:
        first = fr.frame(v, 0.0).astype(int)
        later = fr.frame(v, 1.0).astype(int)
    assert np.abs(first - later).mean() > 1.0
