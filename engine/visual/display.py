"""The performance window and its first picture, without the generator's imports.

`open_window(cfg)` opens the pygame OpenGL window (engine/visual/window.py runs the show in it).
`raise_curtain(cfg, picture)` opens it at once and draws the picture an installation showed last
(engine/visual/memory.py), before the engine imports torch and loads its models: after a restart
(a display that came back, a crash) the wall shows a picture about a second and a half sooner
than a window opened after the engine is built. Main thread only; imports pygame, moderngl and
numpy, never torch.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import moderngl

from ..errors import DisplayError
from .config import VisualConfig

log = logging.getLogger(__name__)

Opened = tuple[Any, moderngl.Context]   # (the pygame module, the window's GL context)

NO_DISPLAY = "no display: start Xvfb (Xvfb :99 & export DISPLAY=:99) or run with --headless"


def open_window(cfg: VisualConfig) -> tuple[Any, moderngl.Context]:
    """Open the pygame OpenGL window described by `cfg`; DisplayError (one line) if impossible."""
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    import pygame

    try:
        pygame.display.init()
    except pygame.error as exc:
        raise DisplayError(f"{NO_DISPLAY} ({exc})") from None
    driver = pygame.display.get_driver()
    if driver in ("offscreen", "dummy") and os.environ.get("SDL_VIDEODRIVER") != driver:
        # SDL falls back to an invisible surface when there is no display: say so instead
        pygame.display.quit()
        raise DisplayError(NO_DISPLAY)
    pygame.display.gl_set_attribute(pygame.GL_CONTEXT_MAJOR_VERSION, 3)
    pygame.display.gl_set_attribute(pygame.GL_CONTEXT_MINOR_VERSION, 3)
    pygame.display.gl_set_attribute(pygame.GL_CONTEXT_PROFILE_MASK, pygame.GL_CONTEXT_PROFILE_CORE)
    pygame.display.set_caption("ciel")
    displays = pygame.display.get_num_displays()
    display = cfg.display if cfg.display < displays else 0
    if cfg.display >= displays:
        log.warning("display %d not found (%d displays): using display 0", cfg.display, displays)
    flags = pygame.OPENGL | pygame.DOUBLEBUF
    size = (cfg.width, cfg.height)
    if cfg.fullscreen:
        flags |= pygame.FULLSCREEN
        size = (0, 0)
    else:
        flags |= pygame.RESIZABLE
    surface, last = None, None
    for vsync in ((1, 0) if cfg.vsync else (0,)):
        try:
            with warnings.catch_warnings():  # "vsync not available" (Xvfb) is expected, not a problem
                warnings.simplefilter("ignore")
                surface = pygame.display.set_mode(size, flags, display=display, vsync=vsync)
            break
        except pygame.error as exc:
            last = exc
    if surface is None:
        pygame.display.quit()
        raise DisplayError(f"{NO_DISPLAY} (could not open an OpenGL window: {last})")
    pygame.mouse.set_visible(not cfg.fullscreen)
    try:
        ctx = moderngl.create_context(require=330)
    except Exception as exc:  # noqa: BLE001 — moderngl raises plain Exception without a usable GL
        pygame.display.quit()
        raise DisplayError(f"no OpenGL 3.3 in the window: {exc}") from None
    return pygame, ctx


def raise_curtain(cfg: VisualConfig, picture: Path) -> Opened:
    """Open the window described by `cfg` and draw the picture saved at `picture` (an
    installation's last picture: engine.visual.memory) on the sky with the registry's defaults;
    without a readable picture the window is black. Returns the open window for `run_window`.
    DisplayError (one line) when no window opens."""
    from ..params import REGISTRY
    from .memory import recall_picture
    from .sky import SkyRenderer, resolve_render_scale

    pygame, ctx = open_window(cfg)
    ctx.screen.use()
    ctx.clear(0.0, 0.0, 0.0)
    shown = recall_picture(picture)
    if shown is not None:
        try:
            width, height = pygame.display.get_window_size()
            sky = SkyRenderer(ctx, width, height, shown.image.shape[0], resolve_render_scale(cfg.render_scale, ctx))
            try:
                sky.upload(shown.image, shown.back)
                sky.render(REGISTRY.defaults(), 0.0)
            finally:
                sky.release()
        except (moderngl.Error, ValueError) as exc:   # the curtain is a courtesy: a black window, and the show goes on
            log.warning("last picture %s not drawn early: %s", picture, exc)
            ctx.clear(0.0, 0.0, 0.0)
    pygame.display.flip()
    return pygame, ctx
