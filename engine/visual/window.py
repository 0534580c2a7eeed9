"""The performance window: pygame + moderngl, the oval sky, the note and an overlay line.

`run_window(...)` owns the main thread until quit; the show's wiring (engine/app.py) hands it the
patch's visual settings, the model, the parameter store, a keyframe source and `WindowHooks`. The
render loop is one function, `_loop`: tick → drain control (window events) → update (parameters,
newest keyframe) → render → flip → frame_done. Keyframes come from a `KeyframeSource` (the
generator process, or baked images); the loop never waits for it, and the source reads the
parameters from the engine's shared snapshot itself.

`run_offscreen(...)` is the same loop without a window (`ciel run --headless --ndi NAME`): the sky
drawn into an offscreen framebuffer (EGL), every frame handed to a `FrameSink`. With a window, a
sink gets the sky as drawn, before the overlay.

Keys: Esc quits · F11 fullscreen · S or F12 screenshot · N program note · Space next scene · L MIDI learn (the parameter touched last).
A click on the grey circle at the bottom opens or closes the note.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import moderngl
import numpy as np

from ..params import ParamStore
from ..paramview import ParamView
from ..parts import Keyframe, KeyframeSource
from .config import VisualConfig
from .display import Opened, open_window
from .model import ImageModel
from .sky import DESKTOP_HEADER, SkyRenderer, gl_renderer, resolve_render_scale, shader_text
from .worker import make_paths, render_keyframe

log = logging.getLogger(__name__)


class FrameSink(Protocol):
    """Where each drawn frame goes besides the screen (an NDI source, engine/visual/ndi.py).

    `send(frame)`: (H, W, 4) uint8 RGBA, top row first, owned by the caller (copy what is kept);
    called on the render thread once per frame, so it must not wait (newest frame wins).
    `close()` at the end of the show. `error`: the sink's last failure, '' while it works."""

    error: str

    def send(self, frame: np.ndarray) -> None: ...

    def close(self) -> None: ...


class _Reader:
    """Reads a framebuffer into one preallocated buffer; `read` returns an (H, W, 4) view of it,
    top row first (rows flipped by the view: the sink's own copy is the only one)."""

    def __init__(self, width: int, height: int) -> None:
        self.resize(width, height)

    def resize(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.raw = bytearray(width * height * 4)

    def read(self, fb: moderngl.Framebuffer) -> np.ndarray:
        fb.read_into(self.raw, components=4, alignment=1)
        return np.frombuffer(self.raw, np.uint8).reshape(self.height, self.width, 4)[::-1]


class _Tap:
    """The window's sky for a sink: drawn into an RGBA framebuffer of the window's size (a window's
    own framebuffer has no alpha to keep the oval's coverage in), read for the sink, then copied
    to the screen for the overlay to be drawn over."""

    def __init__(self, ctx: moderngl.Context, width: int, height: int) -> None:
        self.ctx = ctx
        self.fbo: moderngl.Framebuffer | None = None
        self.reader = _Reader(width, height)
        self._make(width, height)

    def _make(self, width: int, height: int) -> None:
        self.release()
        self.fbo = self.ctx.framebuffer(color_attachments=[self.ctx.texture((width, height), 4)])
        self.reader.resize(width, height)

    def use(self, width: int, height: int) -> None:
        """Bind the tap's framebuffer (remade at a new window size)."""
        if (width, height) != (self.reader.width, self.reader.height) or self.fbo is None:
            self._make(width, height)
        if self.fbo is not None:
            self.fbo.use()

    def take(self) -> np.ndarray:
        """The frame for the sink; the sky copied onto the screen, which is bound afterwards."""
        if self.fbo is None:
            raise RuntimeError("_Tap.take before use")
        frame = self.reader.read(self.fbo)
        self.ctx.copy_framebuffer(self.ctx.screen, self.fbo)
        self.ctx.screen.use()
        return frame

    def release(self) -> None:
        if self.fbo is not None:
            self.fbo.color_attachments[0].release()
            self.fbo.release()
            self.fbo = None


class Overlay:
    """Text drawn over the sky (the note, problem messages): one RGBA texture the size of the
    window, made once and written into when the text changes. Render thread only."""

    def __init__(self, ctx: moderngl.Context, pygame: Any, width: int, height: int) -> None:
        self.ctx, self.pg = ctx, pygame
        pygame.font.init()
        self.prog = ctx.program(vertex_shader=DESKTOP_HEADER + shader_text("sky.vert"),
                                fragment_shader=DESKTOP_HEADER + shader_text("overlay.frag"))
        self.vao = ctx.vertex_array(self.prog, [])
        self.width, self.height = width, height
        self.tex: moderngl.Texture = self._texture()
        self._key: tuple[str | None, tuple[str, ...], str] | None = None
        self._rects: list[tuple[int, int, int, int]] = []  # GL scissor boxes (x, y from the bottom, w, h)
        self.resize(width, height)

    def _texture(self) -> moderngl.Texture:
        tex = self.ctx.texture((self.width, self.height), 4)
        tex.filter = (moderngl.NEAREST, moderngl.NEAREST)
        return tex

    def resize(self, width: int, height: int) -> None:
        if (width, height) != (self.width, self.height):
            self.tex.release()
            self.width, self.height = width, height
            self.tex = self._texture()
        self._key = None
        self._rects = []
        self.font = self.pg.font.Font(None, max(14, height // 40))
        self.small = self.pg.font.Font(None, max(12, height // 60))

    def draw(self, note: str | None, messages: list[str], status: str) -> None:
        key = (note, tuple(messages), status)
        if key != self._key:
            self._key = key
            self._paint(note, messages, status)
        if not self._rects:
            return
        self.ctx.enable(moderngl.BLEND)
        self.ctx.blend_func = moderngl.SRC_ALPHA, moderngl.ONE_MINUS_SRC_ALPHA
        self.tex.use(0)
        self.prog["uText"].value = 0  # type: ignore[union-attr]  # a Uniform: the shader declares it
        for rect in self._rects:  # blend only where there is text: a full-window blend costs ms on a CPU
            self.ctx.scissor = rect
            self.vao.render(moderngl.TRIANGLES, vertices=3)
        self.ctx.scissor = None
        self.ctx.disable(moderngl.BLEND)

    def _paint(self, note: str | None, messages: list[str], status: str) -> None:
        pg = self.pg
        canvas = pg.Surface((self.width, self.height), pg.SRCALPHA)
        self._rects = []
        if note:
            lines = [ln for para in note.splitlines() for ln in _wrap(self.font, para, int(self.width * 0.6))]
            lh = self.font.get_linesize()
            h = lh * len(lines) + 2 * lh
            w = int(self.width * 0.6) + 2 * lh
            x0, y0 = (self.width - w) // 2, (self.height - h) // 2
            canvas.fill((10, 10, 14, 215), pg.Rect(x0, y0, w, h))
            self._rects.append((x0, self.height - y0 - h, w, h))
            for i, line in enumerate(lines):
                canvas.blit(self.font.render(line, True, (225, 225, 225)), (x0 + lh, y0 + lh + i * lh))
        y = self.height - self.small.get_linesize() - 4
        for text, colour in ([(status, (150, 150, 150))] if status else []) + [(m, (255, 120, 100)) for m in messages]:
            line = self.small.render(text[:200], True, colour)
            canvas.blit(line, (8, y))
            self._rects.append((8, self.height - y - line.get_height(), line.get_width(), line.get_height()))
            y -= self.small.get_linesize()
        rgba = pg.image.tobytes(canvas, "RGBA", True)  # flipped: GL rows start at the bottom
        self.tex.write(rgba)

    def release(self) -> None:
        self.tex.release()
        self.vao.release()
        self.prog.release()


def _wrap(font: Any, text: str, width: int) -> list[str]:
    words, lines, line = text.split(), [], ""
    for word in words:
        trial = f"{line} {word}".strip()
        if font.size(trial)[0] > width and line:
            lines.append(line)
            line = word
        else:
            line = trial
    return lines + [line] if line or not lines else lines


def screenshot(ctx: moderngl.Context, width: int, height: int, folder: Path) -> Path:
    """Save the current back buffer as PNG in `folder`; returns the file."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    raw = ctx.screen.read(viewport=(0, 0, width, height), components=3, alignment=1)
    img = np.frombuffer(raw, np.uint8).reshape(height, width, 3)[::-1]
    path = folder / time.strftime("ciel-%Y%m%d-%H%M%S.png")
    n = 1
    while path.exists():
        path = folder / time.strftime(f"ciel-%Y%m%d-%H%M%S-{n}.png")
        n += 1
    Image.fromarray(img).save(path)
    return path


@dataclass(frozen=True)
class WindowReport:
    """What a window session did: GL renderer, keyframes made and their rate, generator times (ms),
    the sky's render scale, the worker's error and when its first keyframe came."""

    renderer: str
    keyframes: int
    keyframes_per_s: float
    gan_ms: tuple[float, ...]
    render_scale: float
    worker_error: str | None
    first_keyframe_at: float | None  # time.monotonic() of the worker's first keyframe


@dataclass(frozen=True)
class WindowHooks:
    """What the render loop calls outside the window, built by the show's wiring (engine/app.py).
    All are called on the main (render) thread.

    clock: monotonic seconds · running: False ends the loop · quit: Esc or closing the window ·
    tick(now): once per frame before drawing (MIDI, scheduler, audio supervision) ·
    frame_done(now): after each flip · report(source, message): a failure as data · clear(source):
    that failure is over · remembered(): the picture a previous run showed last, to start with ·
    shown(keyframe): each keyframe put on the sky (an installation keeps the last across restarts) ·
    messages(): the overlay's lines · learn(): MIDI learn from the L key, the overlay's line ·
    note: the patch's programme note (the N key, the grey circle).
    """

    clock: Callable[[], float]
    running: Callable[[], bool]
    quit: Callable[[], None]
    tick: Callable[[float], None]
    frame_done: Callable[[float], None]
    report: Callable[[str, str], None]
    messages: Callable[[], list[str]]
    learn: Callable[[], str]
    note: str = ""
    clear: Callable[[str], None] = lambda source: None   # a failure reported by `source` is over
    remembered: Callable[[], Keyframe | None] = lambda: None   # the picture a previous run showed last
    shown: Callable[[Keyframe], None] = lambda keyframe: None  # a keyframe is on the sky now


def run_window(cfg: VisualConfig, model: ImageModel, seed: int, store: ParamStore, keyframes: KeyframeSource,
               hooks: WindowHooks, deadline: float = math.inf,
               on_worker: Callable[[KeyframeSource], None] | None = None, opened: Opened | None = None,
               sink: FrameSink | None = None) -> WindowReport:
    """Open the window (or take the one `opened` by engine.visual.display.raise_curtain), start
    `keyframes` and run the render loop until quit or `deadline` (hooks' clock seconds);
    `keyframes` is stopped on the way out. Main thread. Raises DisplayError when no window can be
    opened. `store`: the engine's parameter targets (read each frame; the N key and Space write to
    it). `on_worker` is called once with the started source (benchmarks watch it). `sink` gets
    every frame's sky before the overlay is drawn over it (NDI out)."""
    pygame, ctx = opened if opened is not None else open_window(cfg)
    renderer = gl_renderer(ctx)
    keyframes.start()
    if on_worker is not None:
        on_worker(keyframes)
    sky: SkyRenderer | None = None
    overlay: Overlay | None = None
    tap: _Tap | None = None
    try:
        width, height = pygame.display.get_window_size()
        sky = SkyRenderer(ctx, width, height, model.resolution, resolve_render_scale(cfg.render_scale, ctx))
        overlay = Overlay(ctx, pygame, width, height)
        log.info("window %dx%d on %s, sky at %.2f of the resolution", width, height, renderer, sky.render_scale)
        _first_picture(sky, model, seed, store, hooks)
        tap = _Tap(ctx, width, height) if sink is not None else None
        _loop(hooks, pygame, ctx, sky, overlay, keyframes, store, cfg, deadline, sink, tap)
    finally:
        keyframes.stop()
        for part in (tap, overlay, sky):
            if part is not None:
                part.release()
        pygame.display.quit()
    return WindowReport(renderer, keyframes.count, float(getattr(keyframes, "rate", 0.0)),
                        tuple(keyframes.times_ms), sky.render_scale if sky is not None else 0.0,
                        keyframes.error, getattr(keyframes, "first_at", None))


def _take_keyframe(keyframes: KeyframeSource, sky: SkyRenderer, hooks: WindowHooks) -> None:
    """The newest keyframe onto the sky, if one came; a failure becomes a line on the overlay."""
    shown = False
    try:
        keyframe = keyframes.latest()
        if keyframe is not None:
            sky.upload(keyframe.image, keyframe.back)
            hooks.shown(keyframe)
            shown = True
    except Exception as exc:  # noqa: BLE001 — a bad picture (a baked file, a generator bug) never ends the show
        hooks.report("image", f"{type(exc).__name__}: {exc}")
    if keyframes.error:
        hooks.report("image", keyframes.error)
    elif shown:   # a good picture again: the line about the bad one goes
        hooks.clear("image")


def _send(sink: FrameSink, frame: np.ndarray, hooks: WindowHooks) -> None:
    """A frame to the sink; its failure is a line on the overlay (and gone once it works again)."""
    try:
        sink.send(frame)
    except Exception as exc:  # noqa: BLE001 — a sink that fails never ends the show
        hooks.report("video out", f"{type(exc).__name__}: {exc}")
        return
    if sink.error:
        hooks.report("video out", sink.error)
    else:
        hooks.clear("video out")


def _pace(next_frame: float, period: float, clock: Callable[[], float]) -> float:
    """Sleep until the next frame is due; returns when the one after it is."""
    next_frame = max(next_frame + period, clock() - period)
    wait = next_frame - clock()
    if wait > 0:
        time.sleep(wait)
    return next_frame


def _first_picture(sky: SkyRenderer, model: ImageModel, seed: int, store: ParamStore, hooks: WindowHooks) -> None:
    """The picture a previous run showed last (an installation that restarted), else one made here
    while the generator process starts."""
    first = hooks.remembered()
    if first is not None:
        sky.upload(first.image, first.back)
    else:
        sky.upload(*render_keyframe(model, make_paths(model, seed), store.snapshot_values(), 0.0, True))


def run_offscreen(cfg: VisualConfig, model: ImageModel, seed: int, store: ParamStore, keyframes: KeyframeSource,
                  hooks: WindowHooks, sink: FrameSink, deadline: float = math.inf) -> WindowReport:
    """The render loop without a window: the sky at cfg.width x cfg.height in an offscreen
    framebuffer (EGL), each frame to `sink`, at most cfg.fps frames per second, until
    `hooks.running()` is False or `deadline`. Main thread. Raises DisplayError without EGL."""
    from .offline import offscreen_context

    ctx = offscreen_context()
    renderer = gl_renderer(ctx)
    width, height = cfg.width, cfg.height
    fbo = ctx.framebuffer(color_attachments=[ctx.texture((width, height), 4)])
    keyframes.start()
    sky: SkyRenderer | None = None
    try:
        sky = SkyRenderer(ctx, width, height, model.resolution, resolve_render_scale(cfg.render_scale, ctx))
        sky.show_note = False   # nobody clicks an NDI picture
        log.info("offscreen %dx%d on %s, sky at %.2f of the resolution", width, height, renderer, sky.render_scale)
        _first_picture(sky, model, seed, store, hooks)
        reader = _Reader(width, height)
        values = store.snapshot_values()
        period, clock = 1.0 / cfg.fps, hooks.clock
        next_frame = clock()
        while hooks.running():
            now = clock()
            if now >= deadline:
                break
            hooks.tick(now)
            store.snapshot_values(values)
            _take_keyframe(keyframes, sky, hooks)
            fbo.use()
            sky.render(values, now)
            _send(sink, reader.read(fbo), hooks)
            hooks.frame_done(clock())
            next_frame = _pace(next_frame, period, clock)
    finally:
        keyframes.stop()
        if sky is not None:
            sky.release()
        fbo.color_attachments[0].release()
        fbo.release()
        ctx.release()
    return WindowReport(renderer, keyframes.count, float(getattr(keyframes, "rate", 0.0)),
                        tuple(keyframes.times_ms), sky.render_scale if sky is not None else 0.0,
                        keyframes.error, getattr(keyframes, "first_at", None))


def _loop(hooks: WindowHooks, pygame: Any, ctx: moderngl.Context, sky: SkyRenderer, overlay: Overlay,
          keyframes: KeyframeSource, store: ParamStore, cfg: VisualConfig, deadline: float,
          sink: FrameSink | None = None, tap: _Tap | None = None) -> None:
    period = 1.0 / cfg.fps
    fullscreen = cfg.fullscreen
    status = ""
    status_until = 0.0
    clock = hooks.clock
    next_frame = clock()
    values = store.snapshot_values()
    view = ParamView(values)
    shot = False
    while hooks.running():
        now = clock()
        if now >= deadline:
            break
        # tick
        hooks.tick(now)
        # drain control: window events
        for event in pygame.event.get():
            if event.type == pygame.QUIT:
                hooks.quit()
            elif event.type == pygame.KEYDOWN:
                if event.key == pygame.K_ESCAPE:
                    hooks.quit()
                elif event.key == pygame.K_F11:
                    fullscreen = not fullscreen
                    pygame.display.toggle_fullscreen()
                    pygame.mouse.set_visible(not fullscreen)
                elif event.key in (pygame.K_s, pygame.K_F12):
                    shot = True
                elif event.key == pygame.K_n:
                    store.set("note/show", 0.0 if store.get1("note/show") > 0.5 else 1.0, "window")
                elif event.key == pygame.K_SPACE:
                    store.trigger("scene/next", "window")
                elif event.key == pygame.K_l:
                    status, status_until = hooks.learn(), now + 5.0
            elif event.type == pygame.MOUSEBUTTONDOWN and event.button == 1:
                if sky.note_hit(*event.pos):
                    store.set("note/show", 0.0 if store.get1("note/show") > 0.5 else 1.0, "window")
            elif event.type in (pygame.VIDEORESIZE, pygame.WINDOWSIZECHANGED):
                w, h = pygame.display.get_window_size()
                if (w, h) != (sky.width, sky.height):
                    sky.resize(w, h)
                    overlay.resize(w, h)
        # update (a part that fails becomes a line on the overlay; the frame is still drawn)
        store.snapshot_values(values)
        _take_keyframe(keyframes, sky, hooks)
        # render
        if sink is not None and tap is not None:
            tap.use(sky.width, sky.height)
            sky.render(values, now)
            _send(sink, tap.take(), hooks)
        else:
            ctx.screen.use()
            sky.render(values, now)
        if shot:  # the sky without the overlay, before the flip
            try:
                status = f"screenshot {screenshot(ctx, sky.width, sky.height, Path(cfg.screenshots))}"
            except (OSError, ValueError) as exc:   # a full disk or a read-only folder: said, never fatal
                status = f"screenshot failed: {exc}"
                hooks.report("screenshot", status)
            status_until, shot = now + 3.0, False
        if now > status_until:
            status = ""
        note = None
        if view.note_show > 0.5:
            note = hooks.note or "This patch has no program note."
        try:
            overlay.draw(note, hooks.messages(), status)
        except Exception as exc:  # noqa: BLE001 — text that cannot be drawn is logged; the sky still shows
            hooks.report("overlay", f"{type(exc).__name__}: {exc}")
        # flip
        pygame.display.flip()
        hooks.frame_done(clock())
        next_frame = _pace(next_frame, period, clock)
