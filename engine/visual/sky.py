"""The all-sky renderer: keyframe textures drawn inside the oval map by shaders/sky.frag.

`SkyRenderer` is used by the window (pygame + moderngl) and by the offscreen renderer (EGL) alike;
it draws into whatever framebuffer is bound. Render thread only: every method here is called by
the thread that owns the GL context. Textures and the vertex array are made once and written into.

The fragment program is built from the shared files in shaders/ (see `fragment_source`): the same
text the broadcast page loads with a WebGL2 header.
"""

from __future__ import annotations

import math
from typing import Any, cast

import moderngl
import numpy as np

from ..configio import ROOT
from ..params import REGISTRY, Registry, Smoother, check_view
from ..paramview import ParamView
from .projection import Layout, layout, rotation_matrix

Uniforms = dict[str, Any]   # uniform name → value: a float, an int or a tuple of floats, as GL takes it

SHADERS = ROOT / "shaders"
DESKTOP_HEADER = "#version 330\n"
WEBGL_HEADER = "#version 300 es\nprecision highp float;\nprecision highp int;\n"


def shader_text(name: str) -> str:
    """Text of one file in shaders/."""
    return (SHADERS / name).read_text(encoding="utf-8")


def vertex_source(header: str = DESKTOP_HEADER) -> str:
    return header + shader_text("sky.vert")


# Each fragment program is the version header, optional #defines, then these shared files in order.
PROGRAM_PARTS = {
    "sky.frag": ("projection.glsl", "noise.glsl", "skymap.glsl", "sky.frag"),
    "sky_lut.frag": ("projection.glsl", "noise.glsl", "skymap.glsl", "sky_lut.frag"),
    "keyframe.frag": ("projection.glsl", "skymap.glsl", "keyframe.frag"),
    "inverse.frag": ("projection.glsl", "inverse.frag"),
    "composite.frag": ("projection.glsl", "composite.frag"),
}


def fragment_source(name: str = "sky.frag", header: str = DESKTOP_HEADER, defines: str = "") -> str:
    """The fragment program `name` (see PROGRAM_PARTS): header + defines + its shared files."""
    parts = PROGRAM_PARTS.get(name, ("projection.glsl", name))
    return header + defines + "\n".join(shader_text(p) for p in parts)


TILT_TOLERANCE = 1e-4  # radians of sky/lat or sky/roll (0.03 px at 1080p) the tilt table may be off
SKY_PX_PER_TEXEL = 1.25  # software GL: compute the sky at about the keyframes' own resolution
SOFTWARE_RENDERERS = ("llvmpipe", "softpipe", "swiftshader", "software")


def gl_renderer(ctx: moderngl.Context) -> str:
    """The GL renderer string, e.g. 'llvmpipe (LLVM 15.0.6, 256 bits)'."""
    return str(ctx.info.get("GL_RENDERER", "unknown"))


def resolve_render_scale(configured: float, ctx: moderngl.Context) -> float:
    """`configured` if > 0; on a GPU 1.0; on a software rasteriser 0.0, which SkyRenderer reads as
    "match the keyframes": see `texture_matched_scale`."""
    if configured > 0:
        return configured
    name = gl_renderer(ctx).lower()
    return 0.0 if any(s in name for s in SOFTWARE_RENDERERS) else 1.0


FULL_RES_MAX_PIXELS = 2_100_000   # auto draws the sky at full resolution up to 1920x1080


def texture_matched_scale(lay: Layout, texture_size: int, height: int) -> float:
    """Sky resolution at which the layer has about SKY_PX_PER_TEXEL pixels per keyframe texel: the
    mirrored map spans 2 x texture_size texels across the oval's width (4√2 scale pixels)."""
    oval_width = 4 * math.sqrt(2) * lay.scale
    scale = SKY_PX_PER_TEXEL * 2 * texture_size / max(oval_width, 1.0)
    return float(min(1.0, max(scale, 64.0 / max(height, 1))))


class SkyRenderer:
    """Draw the oval sky. `values` are the flat parameter targets (engine.params layout).

    The renderer smooths them with each parameter's own time constant, integrates `sky/spin`, and
    crossfades from the previous to the newest keyframe over the measured keyframe interval, so a
    slow generator only slows the change of the picture, never the frame rate.

    At `render_scale` 1 (full resolution) the inverse projection is precomputed into a float
    texture the size of the window (inverse.frag, again only when the size or the projection
    changes), the crossfaded keyframe is drawn into a small texture while it changes
    (keyframe.frag), and sky_lut.frag draws every pixel of the oval from the two with a rotation
    and two fetches. `render_scale` < 1 computes the sky per fragment (sky.frag) in a smaller
    layer that `composite.frag` upscales; 0 follows the layout and the keyframe size
    (`texture_matched_scale`).
    """

    def __init__(self, ctx: moderngl.Context, width: int, height: int, texture_size: int = 256,
                 render_scale: float = 1.0, registry: Registry = REGISTRY) -> None:
        self.ctx = ctx
        self.registry = registry
        self.auto_scale = render_scale <= 0.0  # follow the layout and the keyframe size
        self.render_scale = float(min(max(render_scale, 0.1), 1.0))
        self.prog = ctx.program(vertex_shader=vertex_source(), fragment_shader=fragment_source("sky.frag"))
        self.vao = ctx.vertex_array(self.prog, [])
        self.composite = ctx.program(vertex_shader=DESKTOP_HEADER + shader_text("composite.vert"),
                                     fragment_shader=fragment_source("composite.frag"))
        # full resolution: the inverse projection and tilt tables, the keyframe texture, the per-pixel pass
        self.inverse_prog = ctx.program(vertex_shader=vertex_source(), fragment_shader=fragment_source("inverse.frag"))
        self.inverse_vao = ctx.vertex_array(self.inverse_prog, [])
        self.key_progs = {panorama: ctx.program(vertex_shader=vertex_source(), fragment_shader=fragment_source(
            "keyframe.frag", defines="#define CIEL_PANORAMA 1\n" if panorama else "")) for panorama in (False, True)}
        self.key_vaos = {panorama: ctx.vertex_array(prog, []) for panorama, prog in self.key_progs.items()}
        self._geometry = ctx.buffer(reserve=8 * 6 * 512)
        self._n_inner = self._n_all = 0
        self.composite_vao = ctx.vertex_array(self.composite, [(self._geometry, "2f", "aPos")])
        self.tilt_prog = ctx.program(vertex_shader=vertex_source(),
                                     fragment_shader=fragment_source("inverse.frag", defines="#define CIEL_TILT 1\n"))
        self.tilt_vao = ctx.vertex_array(self.tilt_prog, [])
        # variants (tilt table, dissolve): software GL runs both sides of a branch, so each is its own program
        self.lut_progs: dict[tuple[bool, bool], moderngl.Program] = {}
        self.lut_vaos: dict[tuple[bool, bool], moderngl.VertexArray] = {}
        for tilt in (True, False):
            for dissolve in (False, True):
                defines = ("#define CIEL_TILT 1\n" if tilt else "") + ("#define CIEL_DISSOLVE 1\n" if dissolve else "")
                prog = ctx.program(vertex_shader=DESKTOP_HEADER + shader_text("composite.vert"),
                                   fragment_shader=fragment_source("sky_lut.frag", defines=defines))
                self.lut_progs[tilt, dissolve] = prog
                self.lut_vaos[tilt, dissolve] = ctx.vertex_array(prog, [(self._geometry, "2f", "aPos")])
        self._warm = False  # every variant is drawn once before the first frame (llvmpipe compiles on first use)
        self.show_note = True  # the grey circle under the oval (a window's click target; not drawn offscreen for NDI)
        self._layer: moderngl.Framebuffer | None = None
        self._inverse: moderngl.Framebuffer | None = None
        self._inverse_for: tuple[int, int, int] | None = None
        self._tilted: moderngl.Framebuffer | None = None
        self._tilt_for: tuple[int, int, int, float, float] | None = None  # size, projection, lat0, roll (rad)
        self._last_tilt: tuple[float, float] | None = None
        self._keys: dict[bool, moderngl.Framebuffer] = {}
        self._key_for: tuple | None = None
        self._version = 0  # counts uploads: the keyframe texture is redrawn when it changes
        self.smoother = Smoother(registry)
        check_view(registry)   # the typed view reads the registry's layout (a mismatch names the parameter)
        self.textures: list[moderngl.Texture] = []
        self._make_textures(texture_size)
        self.resize(width, height)
        self.frame = 0
        self._last_t: float | None = None
        self._spin = 0.0  # degrees of longitude turned by sky/spin so far
        self._key_t: float | None = None
        self._arrived = False
        self.interval = 1.0 / 12.0  # measured time between keyframes (s)

    def _make_textures(self, size: int) -> None:
        for tex in self.textures:
            tex.release()
        for fbo in self._keys.values():
            fbo.color_attachments[0].release()
            fbo.release()
        blank = np.full((size, size, 3), 24, np.uint8).tobytes()
        self.textures = []
        for _ in range(4):
            tex = self.ctx.texture((size, size), 3, blank, alignment=1)
            tex.filter = (moderngl.LINEAR, moderngl.LINEAR)  # mipmaps halve llvmpipe speed
            tex.repeat_x = tex.repeat_y = False
            self.textures.append(tex)
        self.texture_size = size
        # front pair [previous, newest], back pair [previous, newest]
        self._front = [self.textures[0], self.textures[1]]
        self._back = [self.textures[2], self.textures[3]]
        # keyframe.frag's targets: the front crossfade (R x R) and the mapping 1 panorama (2R x R);
        # both repeat in u (the panorama wraps at lon ±180°; sky_lut.frag clamps u for the other),
        # so both give llvmpipe the same sampler state and one compiled shader variant
        self._keys = {}
        for panorama in (False, True):
            tex = self.ctx.texture((2 * size if panorama else size, size), 4)  # RGBA: aligned texels
            tex.filter = (moderngl.LINEAR, moderngl.LINEAR)
            tex.repeat_x, tex.repeat_y = True, False
            self._keys[panorama] = self.ctx.framebuffer(color_attachments=[tex])
        self._key_for = None

    def resize(self, width: int, height: int) -> None:
        """New drawable size in pixels (window resize); remakes the sky layer or the inverse table."""
        self.width, self.height = int(width), int(height)
        self.layout = layout(self.width, self.height)
        if self.auto_scale:
            # the table path at full resolution costs less than the per-fragment layer up to about
            # 1080p on llvmpipe (34 against 40 CPU-ms a frame); above, the layer wins (4K: 85 vs 105)
            self.render_scale = 1.0 if self.width * self.height <= FULL_RES_MAX_PIXELS else \
                texture_matched_scale(self.layout, self.texture_size, self.height)
        for fbo in (self._layer, self._inverse, self._tilted):
            if fbo is not None:
                fbo.color_attachments[0].release()
                fbo.release()
        self._layer = self._inverse = self._tilted = None
        self._inverse_for = self._tilt_for = None
        if self.render_scale < 1.0:
            size = (max(1, round(self.width * self.render_scale)), max(1, round(self.height * self.render_scale)))
            tex = self.ctx.texture(size, 4)  # RGBA: aligned texels sample fastest in software GL
            tex.filter = (moderngl.LINEAR, moderngl.LINEAR)
            tex.repeat_x = tex.repeat_y = False
            self._layer = self.ctx.framebuffer(color_attachments=[tex])
        else:
            tex = self.ctx.texture((self.width, self.height), 4, dtype="f4")
            tex.filter = (moderngl.NEAREST, moderngl.NEAREST)
            self._inverse = self.ctx.framebuffer(color_attachments=[tex])
            tex = self.ctx.texture((self.width, self.height), 2, dtype="f4")
            tex.filter = (moderngl.NEAREST, moderngl.NEAREST)
            self._tilted = self.ctx.framebuffer(color_attachments=[tex])
        tris, self._n_inner = composite_geometry(self.layout)
        if tris.nbytes > self._geometry.size:
            self._geometry.orphan(tris.nbytes)
        self._geometry.write(tris.tobytes())
        self._n_all = len(tris)

    def upload(self, image: np.ndarray, back: np.ndarray | None = None) -> None:
        """A new keyframe (H, W, 3) uint8, top row first; `back` is the image behind (mapping 1).

        The newest keyframe becomes the crossfade target; the one before it the source.
        """
        if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] != image.shape[1]:
            raise ValueError(f"keyframe: expected a square (H, W, 3) uint8 image, got {image.shape}")
        if image.shape[0] != self.texture_size:
            self._make_textures(image.shape[0])
            if self.auto_scale:
                self.resize(self.width, self.height)
        first = self._key_t is None and not self._arrived
        for pair, img in ((self._front, image), (self._back, back if back is not None else image)):
            pair.reverse()
            data = np.ascontiguousarray(img, dtype=np.uint8)
            pair[1].write(data)
            if first:  # nothing to fade from yet
                pair[0].write(data)
        self._arrived = True
        self._version += 1

    def note_hit(self, x: float, y: float) -> bool:
        """True if window point (x right, y down from the top-left, pixels) is on the note circle."""
        lay = self.layout
        return math.hypot(x - lay.note_x, (self.height - y) - lay.note_y) <= lay.note_r * 1.5

    def render(self, values: np.ndarray, t: float) -> None:
        """Draw one frame at time `t` (seconds, the caller's clock) into the bound framebuffer."""
        if self._last_t is None:
            self.smoother.reset(values)
            dt = 0.0
        else:
            dt = min(max(t - self._last_t, 0.0), 1.0)
        self._last_t = t
        v = ParamView(self.smoother.step(values, dt))
        self._spin = (self._spin + v.sky_spin * dt) % 360.0
        if self._arrived:
            if self._key_t is not None:
                gap = min(max(t - self._key_t, 1.0 / 120.0), 2.0)
                self.interval += 0.3 * (gap - self.interval)
            self._key_t = t
            self._arrived = False
        mix = 1.0 if self._key_t is None else min(max((t - self._key_t) / self.interval, 0.0), 1.0)
        lay = self.layout
        lon0 = math.radians((v.sky_lon + self._spin + 180.0) % 360.0 - 180.0)
        tilt = (math.radians(v.sky_lat), math.radians(v.sky_roll))
        rot = rotation_matrix(lon0, *tilt)
        common = {"uGrain": v.sky_grain, "uFade": v.master_fade,
                  "uBackground": tuple(float(x) for x in v.sky_background),
                  "uNote": (lay.note_x, lay.note_y, lay.note_r if self.show_note else 0.0, float(v.note_show > 0.5)),
                  "uFrame": self.frame % (1 << 30)}
        sky = {"uProjection": int(round(v.sky_projection)), "uMapping": int(round(v.sky_mapping)),
               "uRotation": tuple(rot.T.flatten()),  # column-major
               "uMix": mix, "uGraticule": v.sky_graticule,
               "uSpacing": math.radians(max(v.sky_spacing, 1.0)),
               "uColormap": int(round(v.sky_colormap)), "uDissolve": v.sky_dissolve,
               "uBrightness": v.sky_brightness,
               "uImageA0": 0, "uImageA1": 1, "uImageB0": 2, "uImageB1": 3, "uLon0": lon0}
        for unit, tex in enumerate((self._front[0], self._front[1], self._back[0], self._back[1])):
            tex.use(unit)
        target = self.ctx.fbo
        if self._layer is None:
            self._render_full(target, common, sky, tilt)
        else:
            lw, lh = self._layer.size
            sx, sy = lw / self.width, lh / self.height
            self._layer.use()
            _set_uniforms(self.prog, common, sky, {"uCentre": (lay.cx * sx, lay.cy * sy),
                                                    "uScale": lay.scale * min(sx, sy), "uLayer": 1})
            self.vao.render(moderngl.TRIANGLES, vertices=3)
            target.use()
            self._composite(common, _texture(self._layer), self._n_all)
        self.frame += 1

    def _composite(self, common: Uniforms, sky_texture: moderngl.Texture, upto: int) -> None:
        """Clear the bound framebuffer to the background and draw composite.frag: the layer's
        interior, its edge band and the note square; `upto` = 6 draws only the note square."""
        lay = self.layout
        self.ctx.viewport = (0, 0, self.width, self.height)
        if upto == self._n_all:
            fade = common["uFade"]
            self.ctx.clear(*(c * fade for c in common["uBackground"]))  # outside the oval: a memset
        sky_texture.use(4)
        _set_uniforms(self.composite, common, {"uSky": 4, "uResolution": (float(self.width), float(self.height)),
                                               "uCentre": (lay.cx, lay.cy), "uScale": lay.scale})
        if upto == self._n_all:  # interior: texture only
            _uniform(self.composite, "uInterior").value = 1
            self.composite_vao.render(moderngl.TRIANGLES, vertices=self._n_inner, first=0)
        # edge band and note square (the last 6 vertices): the full composite shader
        _uniform(self.composite, "uInterior").value = 0
        self.composite_vao.render(moderngl.TRIANGLES, vertices=min(upto, self._n_all - self._n_inner),
                                  first=self._n_all - min(upto, self._n_all - self._n_inner))

    def _render_full(self, target: moderngl.Framebuffer, common: Uniforms, sky: Uniforms,
                     tilt: tuple[float, float]) -> None:
        """Full resolution: refresh the tables and the keyframe texture where needed, then the
        per-pixel pass over the oval's rectangles and composite.frag over the note square.

        While sky/lat and sky/roll stay put (within TILT_TOLERANCE radians) the pass reads the table
        of their tilt and adds the longitude; while they move it rotates the view vectors of the
        inverse table. The tilt table is remade once they settle."""
        assert self._inverse is not None and self._tilted is not None
        projection = int(sky["uProjection"])
        place = {"uCentre": (self.layout.cx, self.layout.cy), "uScale": self.layout.scale, "uProjection": projection}
        if self._inverse_for != (self.width, self.height, projection):
            self._inverse.use()
            self.ctx.viewport = (0, 0, self.width, self.height)
            _set_uniforms(self.inverse_prog, place)
            self.inverse_vao.render(moderngl.TRIANGLES, vertices=3)
            self._inverse_for = (self.width, self.height, projection)
        made = self._tilt_for
        fits = (made is not None and made[:3] == (self.width, self.height, projection)
                and max(abs(made[3] - tilt[0]), abs(made[4] - tilt[1])) <= TILT_TOLERANCE)
        settled = self._last_tilt is None or max(abs(self._last_tilt[0] - tilt[0]),
                                                 abs(self._last_tilt[1] - tilt[1])) <= TILT_TOLERANCE / 4
        self._last_tilt = tilt
        if not fits and settled:
            self._tilted.use()
            self.ctx.viewport = (0, 0, self.width, self.height)
            _set_uniforms(self.tilt_prog, place, {"uTilt": tuple(rotation_matrix(0.0, *tilt).T.flatten())})
            self.tilt_vao.render(moderngl.TRIANGLES, vertices=3)
            self._tilt_for = (self.width, self.height, projection, *tilt)
            fits = True
        mapping = int(sky["uMapping"])
        panorama = mapping == 1
        dissolve = float(sky["uDissolve"]) > 0.0
        colormap_here = 0 if dissolve else int(sky["uColormap"])
        state = (panorama, round(float(sky["uMix"]), 4), colormap_here, self._version)
        key = self._keys[panorama]
        if state != self._key_for:
            key.use()
            w, h = key.size
            self.ctx.viewport = (0, 0, w, h)
            _set_uniforms(self.key_progs[panorama], sky, {"uMix": state[1], "uColormap": colormap_here,
                                                          "uSize": (float(w), float(h))})
            self.key_vaos[panorama].render(moderngl.TRIANGLES, vertices=3)
            self._key_for = state
        target.use()
        self.ctx.viewport = (0, 0, self.width, self.height)
        fade = common["uFade"]
        self.ctx.clear(*(c * fade for c in common["uBackground"]))  # outside the oval: a memset
        _texture(self._inverse).use(5)
        _texture(self._tilted).use(6)
        _texture(key).use(4)
        half = 0.5 / self.texture_size
        clamp_u = (-1.0, 2.0) if panorama else (half, 1.0 - half)
        if panorama:  # lon -180°..180° across the panorama, lat 90° at its top row
            key_map = (0.5 / math.pi, -1.0 / math.pi, 0.5, 0.5)
        elif mapping == 2:  # mirrored tiles of sky/spacing
            spacing = float(sky["uSpacing"])
            key_map = (1.0 / spacing, -1.0 / spacing, 0.0, 0.5)
        else:  # mirrored equirectangular, the image spanning lon ±90°
            key_map = (1.0 / math.pi, -1.0 / math.pi, 0.5, 0.5)
        tables = {"uInverse": 5, "uTilted": 6, "uKey": 4, "uKeyClamp": (clamp_u[0], clamp_u[1], 0.0, 1.0),
                 "uKeyMap": key_map, "uSqueeze": 0.0 if panorama else 1.0,
                 "uResolution": (float(self.width), float(self.height)),
                 "uColormap": int(sky["uColormap"]) if dissolve else 0}
        n_oval = self._n_all - 6  # every rectangle but the note square
        variants = [(fits, dissolve)]
        if not self._warm:  # compile every variant now rather than at its first use in a show
            variants = [other for other in self.lut_progs if other != variants[0]] + variants
            self._warm = True
        for variant in variants:
            prog = self.lut_progs[variant]
            _set_uniforms(prog, common, sky, tables)
            self.lut_vaos[variant].render(moderngl.TRIANGLES, vertices=n_oval, first=0)
        self._composite(common, _texture(key), 6)

    def release(self) -> None:
        """Free every GL object this renderer made."""
        for fbo in (self._layer, self._inverse, self._tilted, *self._keys.values()):
            if fbo is not None:
                fbo.color_attachments[0].release()
                fbo.release()
        gl_objects: tuple[Any, ...] = (
            *self.textures, self.vao, self.prog, self.composite_vao, self.composite, self._geometry,
            self.inverse_vao, self.inverse_prog, self.tilt_vao, self.tilt_prog,
            *self.key_vaos.values(), *self.key_progs.values(), *self.lut_vaos.values(), *self.lut_progs.values())
        for obj in gl_objects:
            obj.release()


def composite_geometry(lay: Layout, band_px: int = 16, margin_px: float = 2.0) -> tuple[np.ndarray, int]:
    """Pixel-space triangles (N, 2) float32 for the composite pass and the count of interior ones.

    The oval is cut into horizontal bands of `band_px` rows. In each band an axis-aligned rectangle
    lies at least `margin_px` inside the edge (drawn with the texture-only shader); the two
    rectangles beside it reach `margin_px` beyond the edge (drawn with the edge shader), as does a
    square around the note circle. Big rectangles rasterise fast in software GL; a fan of thin
    triangles from the centre was slower than the full-window pass it replaced.
    """
    a, b = 2 * math.sqrt(2) * lay.scale, math.sqrt(2) * lay.scale  # semi-axes in pixels

    def half_width(dy: float) -> float:
        return a * math.sqrt(max(0.0, 1.0 - (dy / b) ** 2))

    inner: list[tuple[float, float, float, float]] = []
    edge: list[tuple[float, float, float, float]] = []
    y = lay.cy - b - margin_px
    top = lay.cy + b + margin_px
    while y < top:
        y1 = min(y + band_px, top)
        d_near = 0.0 if y <= lay.cy <= y1 else min(abs(y - lay.cy), abs(y1 - lay.cy))
        d_far = max(abs(y - lay.cy), abs(y1 - lay.cy))
        outer = half_width(d_near) + margin_px
        inside = half_width(d_far + margin_px) - margin_px
        if inside > 0:
            inner.append((lay.cx - inside, y, lay.cx + inside, y1))
            edge.append((lay.cx - outer, y, lay.cx - inside, y1))
            edge.append((lay.cx + inside, y, lay.cx + outer, y1))
        else:
            edge.append((lay.cx - outer, y, lay.cx + outer, y1))
        y = y1
    r = lay.note_r + margin_px
    edge.append((lay.note_x - r, lay.note_y - r, lay.note_x + r, lay.note_y + r))

    def triangles(rects: list[tuple[float, float, float, float]]) -> np.ndarray:
        out = [((x0, y0), (x1, y0), (x0, y1), (x0, y1), (x1, y0), (x1, y1)) for x0, y0, x1, y1 in rects]
        return np.asarray(out, np.float32).reshape(-1, 2)

    return np.concatenate([triangles(inner), triangles(edge)]), 6 * len(inner)


def _texture(fbo: moderngl.Framebuffer) -> moderngl.Texture:
    """The texture a framebuffer of this renderer draws into (each is made with one texture)."""
    return cast(moderngl.Texture, fbo.color_attachments[0])


def _uniform(prog: moderngl.Program, name: str) -> moderngl.Uniform:
    """A uniform of `prog` (the shaders declare each name this renderer sets)."""
    return cast(moderngl.Uniform, prog[name])


def _set_uniforms(prog: moderngl.Program, *tables: Uniforms) -> None:
    """Write uniforms; names the GLSL compiler dropped (unused in this program) are skipped."""
    for table in tables:
        for name, value in table.items():
            if name in prog:
                _uniform(prog, name).value = value
