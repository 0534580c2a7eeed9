"""Offscreen rendering of the sky (EGL): `ciel render`, tests and documentation screenshots.

`FrameRenderer` runs the same SkyRenderer, image paths and generator as the window, with a clock
instead of a display: keyframes are generated synchronously at `keyframes_per_s` of render time,
so the same seed and the same parameter values give the same bytes. One thread only.
"""

from __future__ import annotations

import math

import moderngl
import numpy as np

from ..errors import DisplayError
from ..params import REGISTRY, Registry
from ..paramview import ParamView
from .config import VisualConfig
from .model import ImageModel, load_image_model
from .sky import SkyRenderer
from .worker import make_paths, render_keyframe


def offscreen_context() -> moderngl.Context:
    """A standalone OpenGL 3.3+ context on EGL (Mesa llvmpipe without a GPU)."""
    try:
        return moderngl.create_context(standalone=True, backend="egl", require=330)  # type: ignore[arg-type]  # stub: a str
    except Exception as exc:  # noqa: BLE001 — moderngl raises plain Exception for a missing libEGL or driver
        raise DisplayError(f"no offscreen OpenGL (EGL) context: {exc} "
                           "(install libegl1 libegl-mesa0 libgl1-mesa-dri libgbm1)") from None


class FrameRenderer:
    """Deterministic offscreen frames: `frame(values, t) -> (height, width, 3) uint8`, top row first."""

    def __init__(self, visual: VisualConfig, width: int, height: int, seed: int,
                 model: ImageModel | None = None, registry: Registry = REGISTRY) -> None:
        self.ctx = offscreen_context()
        self.width, self.height = int(width), int(height)
        self.model = model or load_image_model(visual.model)
        self.period = 1.0 / visual.keyframes_per_s
        self.paths = make_paths(self.model, seed, registry)
        self.fbo = self.ctx.framebuffer(color_attachments=[self.ctx.texture((self.width, self.height), 3)])
        self.fbo.use()
        # offline there is no frame budget: full resolution unless the patch asks for less
        self.sky = SkyRenderer(self.ctx, self.width, self.height, self.model.resolution,
                               visual.render_scale or 1.0, registry)
        self._next_key: int = 0  # index of the next keyframe on the render-time grid
        self._out = np.empty((self.height, self.width, 3), np.uint8)

    def frame(self, values: np.ndarray, t: float) -> np.ndarray:
        """Render time `t` (seconds, non-decreasing); returns a new (H, W, 3) uint8 array."""
        due = int(math.floor(t / self.period + 1e-9))
        if due >= self._next_key:
            # one keyframe per grid step passed since the last frame; only the newest is drawn
            key_t = due * self.period
            mapping = ParamView(values).sky_mapping
            front, back = render_keyframe(self.model, self.paths, values, key_t, 0.5 <= mapping < 1.5)
            self.sky.upload(front, back)
            self._next_key = due + 1
        self.fbo.use()
        self.sky.render(values, t)
        raw = self.fbo.read(components=3, alignment=1)
        self._out[:] = np.frombuffer(raw, np.uint8).reshape(self.height, self.width, 3)[::-1]
        return self._out.copy()

    def close(self) -> None:
        self.sky.release()
        self.fbo.color_attachments[0].release()
        self.fbo.release()
        self.ctx.release()

    def __enter__(self) -> FrameRenderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
