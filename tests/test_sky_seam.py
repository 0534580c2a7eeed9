"""The square keyframe on the sphere: no visible seam where the texture's edges meet, no pinched
pole, under each `sky/mapping`. Real frames from the EGL renderer with smooth test textures; the
pixel discontinuity across each line where texture edges meet (and within a disc around each
pole) is compared with the discontinuity everywhere else in the oval. Fixture shaders with a plain
repeat (hard edges) and an unsqueezed pole must fail the same check."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.params import REGISTRY
from engine.visual import sky as sky_module
from engine.visual.projection import HAMMER, MOLLWEIDE, inverse, layout, project, rotation_matrix, unit

W, H = 960, 540
SPACING = 30.0  # degrees: the tiles of mapping 2
POLE_PX = 10.0  # radius of the disc checked around a pole
# A seam or a pinch shows as steps many times the largest step elsewhere in the oval; the smooth
# textures step by a few levels per pixel at most, also where the poles' squeeze stretches them.
RATIO = 2.0
SLACK = 4.0  # 8-bit levels


def smooth_image(seed: int) -> np.ndarray:
    """Smooth, asymmetric picture: every edge differs from the opposite edge and the top row
    varies along it, so a plain repeat shows a hard edge and a plain equirectangular map pinches."""
    v, u = np.mgrid[0:256, 0:256] / 255.0
    rng = np.random.default_rng(seed)
    a, b = rng.uniform(0.5, 1.5, 2)
    img = np.stack([u, v, 0.5 + 0.35 * np.sin(2.2 * a * u + 1.3 * b * v + seed)], -1)
    return np.round(255 * np.clip(img, 0, 1)).astype(np.uint8)


def values(mapping: int, lon0: float, lat0: float, projection: int = MOLLWEIDE) -> np.ndarray:
    v = REGISTRY.defaults()
    for name, value in (("sky/mapping", mapping), ("sky/projection", projection), ("sky/lon", lon0),
                        ("sky/lat", lat0), ("sky/roll", 0.0), ("sky/spin", 0.0), ("sky/graticule", 0.0),
                        ("sky/grain", 0.0), ("sky/spacing", SPACING), ("note/show", 0.0)):
        v[REGISTRY.index(name)] = value
    return v


@pytest.fixture(scope="module")
def target(gl_context):
    fbo = gl_context.framebuffer(color_attachments=[gl_context.texture((W, H), 3)])
    yield fbo
    fbo.color_attachments[0].release()
    fbo.release()


def render(ctx, fbo, v: np.ndarray, render_scale: float = 1.0) -> np.ndarray:
    fbo.use()
    sky = sky_module.SkyRenderer(ctx, W, H, 256, render_scale)
    try:
        sky.upload(smooth_image(1), smooth_image(2))
        sky.render(v, 0.0)
        raw = fbo.read(components=3, alignment=1)
    finally:
        sky.release()
    return np.frombuffer(raw, np.uint8).reshape(H, W, 3)[::-1].astype(float)


def sky_lonlat(projection: int, lon0: float, lat0: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sky (lon, lat) in radians at every pixel centre (top row first) and the distance to the
    oval edge in pixels (positive inside)."""
    lay = layout(W, H)
    xs = (np.arange(W) + 0.5 - lay.cx) / lay.scale
    ys = ((H - 1 - np.arange(H)) + 0.5 - lay.cy) / lay.scale
    x, y = np.meshgrid(xs, ys)
    f = x * x / 8 + y * y / 2
    inside = -(f - 1) / np.maximum(np.hypot(x / 4, y) / lay.scale, 1e-9)
    vlon, vlat = inverse(np.clip(x, -2.8, 2.8), y, projection)
    s = unit(vlon, vlat) @ rotation_matrix(math.radians(lon0), math.radians(lat0), 0.0).T
    return np.arctan2(s[..., 1], s[..., 0]), np.arcsin(np.clip(s[..., 2], -1, 1)), inside


def crossing(a: np.ndarray, period: float, offset: float) -> tuple[np.ndarray, np.ndarray]:
    """Masks of pixels whose right / lower neighbour lies across a line a = offset + k·period."""
    k = np.floor((a - offset) / period)
    right = (k[:, :-1] != k[:, 1:]) & (np.abs(a[:, :-1] - a[:, 1:]) < period / 2)
    down = (k[:-1, :] != k[1:, :]) & (np.abs(a[:-1, :] - a[1:, :]) < period / 2)
    return right, down


def discontinuity(img: np.ndarray, mapping: int, projection: int, lon0: float, lat0: float) -> dict[str, float]:
    """Largest step (8-bit levels, any channel) between neighbouring pixels across the lines where
    texture edges meet, within POLE_PX of a visible pole, and the largest step elsewhere."""
    lon, lat, inside = sky_lonlat(projection, lon0, lat0)
    dx = np.abs(np.diff(img, axis=1)).max(-1)
    dy = np.abs(np.diff(img, axis=0)).max(-1)
    ok_x = (inside[:, :-1] > 3) & (inside[:, 1:] > 3)
    ok_y = (inside[:-1, :] > 3) & (inside[1:, :] > 3)
    # where the texture's edges meet: mappings 0 and 1 every 90° of longitude; mapping 2 every
    # tile edge in longitude and latitude (tiles start at lat ±spacing/2)
    step = math.radians(SPACING if mapping == 2 else 90.0)
    seam_x = np.zeros_like(dx, bool)
    seam_y = np.zeros_like(dy, bool)
    lines = [(lon, step, 0.0)] + ([(lat, step, step / 2)] if mapping == 2 else [])
    for a, period, offset in lines:
        r, d = crossing(a, period, offset)
        seam_x |= r
        seam_y |= d
    # pixels near a pole: longitude is meaningless there, so they are not seam pixels
    lay = layout(W, H)
    rows, cols = np.mgrid[0:H, 0:W] + 0.5
    pole = np.zeros((H, W), bool)
    for pole_lat in (math.pi / 2, -math.pi / 2):
        px, py = project(np.array(0.0), np.array(pole_lat), projection, W, H,
                         (math.radians(lon0), math.radians(lat0), 0.0))
        near = np.hypot(cols - float(px), rows - float(py)) < POLE_PX
        if near.any() and np.all(inside[near] > 3):
            pole |= near
    polar = np.abs(lat) > math.pi / 2 - 4 * POLE_PX / lay.scale
    seam_x &= ~polar[:, :-1]
    seam_y &= ~polar[:-1, :]
    pole_x, pole_y = pole[:, :-1] | pole[:, 1:], pole[:-1, :] | pole[1:, :]
    rest = np.concatenate([dx[ok_x & ~seam_x & ~pole_x], dy[ok_y & ~seam_y & ~pole_y]])
    seam = np.concatenate([dx[ok_x & seam_x], dy[ok_y & seam_y]])
    at_pole = np.concatenate([dx[ok_x & pole_x], dy[ok_y & pole_y]])
    return {"seam": float(np.percentile(seam, 90)) if seam.size else 0.0, "seam_n": float(seam.size),
            "pole": float(np.percentile(at_pole, 99)) if at_pole.size else 0.0, "pole_n": float(at_pole.size),
            "rest": float(np.percentile(rest, 99))}


VIEWS = [(135.0, 50.0), (-45.0, -50.0)]  # each shows a pole and the meridians 90° and 180° inside the oval


@pytest.mark.parametrize("projection", [MOLLWEIDE, HAMMER])
@pytest.mark.parametrize("mapping", [0, 1, 2])
@pytest.mark.parametrize("lon0,lat0", VIEWS)
def test_no_seam_and_no_pinched_pole(gl_context, target, mapping, projection, lon0, lat0):
    img = render(gl_context, target, values(mapping, lon0, lat0, projection))
    d = discontinuity(img, mapping, projection, lon0, lat0)
    assert d["seam_n"] > 200 and d["pole_n"] > 100, d  # the lines and a pole are in view
    limit = RATIO * d["rest"] + SLACK
    assert d["seam"] <= limit, f"seam: steps of {d['seam']:.0f} levels across texture edges, {d['rest']:.0f} elsewhere"
    assert d["pole"] <= limit, f"pole: steps of {d['pole']:.0f} levels around the pole, {d['rest']:.0f} elsewhere"


def test_per_fragment_path_has_no_seam_either(gl_context, target):
    """The sky layer (render_scale < 1, and the broadcast page) uses the same mapping functions."""
    for mapping in (0, 1, 2):
        img = render(gl_context, target, values(mapping, *VIEWS[0]), render_scale=0.999)
        d = discontinuity(img, mapping, MOLLWEIDE, *VIEWS[0])
        limit = RATIO * d["rest"] + SLACK
        assert d["seam"] <= limit and d["pole"] <= limit, (mapping, d)


def broken(monkeypatch, old: str, new: str) -> None:
    """Make skymap.glsl's text replace `old` by `new` for the renderers made from now on."""
    text = sky_module.shader_text

    def patched(name: str) -> str:
        source = text(name)
        if name == "skymap.glsl":
            assert old in source
            source = source.replace(old, new)
        return source

    monkeypatch.setattr(sky_module, "shader_text", patched)


@pytest.mark.parametrize("mapping", [0, 2])
def test_the_check_sees_a_plain_repeat(gl_context, target, monkeypatch, mapping):
    # fixture: plain repeat instead of the mirrored one, so each texture edge meets the opposite edge
    broken(monkeypatch, "return 1.0 - abs(mod(u, 2.0) - 1.0);", "return fract(u);")
    img = render(gl_context, target, values(mapping, *VIEWS[0]))
    d = discontinuity(img, mapping, MOLLWEIDE, *VIEWS[0])
    assert d["seam"] > RATIO * d["rest"] + SLACK, d


def test_the_check_sees_a_pinched_pole(gl_context, target, monkeypatch):
    # fixture: no squeeze, so the whole top row of the image converges on the pole
    broken(monkeypatch, "return x * (2.0 - x);", "return 1.0;")
    img = render(gl_context, target, values(0, *VIEWS[0]))
    d = discontinuity(img, 0, MOLLWEIDE, *VIEWS[0])
    assert d["pole"] > RATIO * d["rest"] + SLACK, d


def test_the_check_sees_a_hard_hemisphere_edge(gl_context, target, monkeypatch):
    # fixture: mapping 1 switching from the front image to the one behind without the fade
    broken(monkeypatch, "return smoothstep(-sin(CIEL_BLEND), sin(CIEL_BLEND), cos(ll.y) * cos(ll.x));",
           "return step(0.0, cos(ll.y) * cos(ll.x));")
    img = render(gl_context, target, values(1, *VIEWS[0]))
    d = discontinuity(img, 1, MOLLWEIDE, *VIEWS[0])
    assert d["seam"] > RATIO * d["rest"] + SLACK, d
