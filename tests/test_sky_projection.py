"""The oval map through a real OpenGL context (EGL, llvmpipe without a GPU): where the projection
puts the oval, what the centre shows, where a marker lands, and that outside is background."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.params import REGISTRY
from engine.visual.projection import HAMMER, MOLLWEIDE, forward, inverse, layout, project, texture_uv

W, H = 1920, 1080
BLUE = (0.0, 0.0, 1.0)


def sky_values(projection: int = MOLLWEIDE, lon: float = 0.0, lat: float = 0.0, roll: float = 0.0) -> np.ndarray:
    v = REGISTRY.defaults()
    for name, value in (("sky/projection", projection), ("sky/lon", lon), ("sky/lat", lat), ("sky/roll", roll),
                        ("sky/spin", 0.0), ("sky/graticule", 0.0), ("sky/grain", 0.0), ("note/show", 0.0)):
        v[REGISTRY.index(name)] = value
    v[REGISTRY.slot("sky/background")] = BLUE
    return v


@pytest.fixture(scope="module")
def target(gl_context):
    fbo = gl_context.framebuffer(color_attachments=[gl_context.texture((W, H), 3)])
    yield fbo
    fbo.color_attachments[0].release()
    fbo.release()


def draw(ctx, fbo, image: np.ndarray, values: np.ndarray, render_scale: float = 1.0) -> np.ndarray:
    """Render one frame; returns (H, W, 3) uint8, top row first."""
    from engine.visual.sky import SkyRenderer

    fbo.use()
    sky = SkyRenderer(ctx, W, H, image.shape[0], render_scale)
    try:
        sky.upload(image)
        sky.render(values, 0.0)
        raw = fbo.read(components=3, alignment=1)
    finally:
        sky.release()
    return np.frombuffer(raw, np.uint8).reshape(H, W, 3)[::-1]


def gradient_image() -> np.ndarray:
    """Red = column, green = row, blue = 0: every texel says where it is; never the background."""
    cols, rows = np.meshgrid(np.arange(256), np.arange(256))
    return np.stack([cols, rows, np.zeros_like(cols)], -1).astype(np.uint8)


def edge_distance_px(width: int, height: int) -> np.ndarray:
    """Signed distance (pixels) of each pixel centre to the oval x²/8 + y²/2 = 1 (negative inside)."""
    lay = layout(width, height)
    xs = (np.arange(width) + 0.5 - lay.cx) / lay.scale
    ys = ((height - 1 - np.arange(height)) + 0.5 - lay.cy) / lay.scale  # image rows top-down
    x, y = np.meshgrid(xs, ys)
    f = x * x / 8 + y * y / 2 - 1
    grad = np.hypot(x / 4, y) / lay.scale  # |∇f| per pixel
    return f / np.maximum(grad, 1e-9)


@pytest.mark.parametrize("projection", [MOLLWEIDE, HAMMER])
@pytest.mark.parametrize("render_scale", [1.0, 0.5])
def test_oval_boundary_is_where_the_ellipse_puts_it(gl_context, target, projection, render_scale):
    img = draw(gl_context, target, gradient_image(), sky_values(projection), render_scale)
    d = edge_distance_px(W, H)
    lay = layout(W, H)
    rows = np.arange(H)[:, None]
    note = np.hypot(np.arange(W)[None, :] + 0.5 - lay.note_x, (H - rows - 0.5) - lay.note_y) < lay.note_r + 3
    is_background = np.all(img == (0, 0, 255), axis=-1)
    inside_sky = img[..., 2] <= 2
    outside = (d > 1.0) & ~note
    inside = d < -1.0
    assert is_background[outside].all(), f"{(~is_background[outside]).sum()} pixels beyond the edge are not background"
    assert inside_sky[inside].all(), f"{(~inside_sky[inside]).sum()} pixels inside the edge show background"
    # the oval spans exactly 4√2·scale by 2√2·scale pixels
    cols = np.where(inside_sky.any(axis=0))[0]
    assert abs((cols[-1] - cols[0] + 1) - 4 * math.sqrt(2) * lay.scale) <= 2


@pytest.mark.parametrize("lon0,lat0", [(0.0, 0.0), (40.0, 20.0), (-120.0, -35.0), (170.0, 60.0)])
def test_centre_shows_the_rotation_target(gl_context, target, lon0, lat0):
    img = draw(gl_context, target, gradient_image(), sky_values(MOLLWEIDE, lon0, lat0))
    lay = layout(W, H)
    px, py = int(lay.cx), int(H - lay.cy)
    u, v = texture_uv(math.radians(lon0), math.radians(lat0))
    expected = np.array([u * 256 - 0.5, v * 256 - 0.5])
    got = img[py, px, :2].astype(float)
    assert np.all(np.abs(got - expected) <= 3.0), f"centre shows texel {got}, expected {expected}"


def marker_image(lon: float, lat: float) -> np.ndarray:
    """Black image with one bright texel at the texture point of (lon, lat) (front hemisphere)."""
    img = np.zeros((256, 256, 3), np.uint8)
    u, v = texture_uv(lon, lat)
    img[int(v * 256), int(u * 256)] = (255, 255, 0)
    return img


def texel_centre(lon: float, lat: float) -> tuple[float, float]:
    """The (lon, lat) of the centre of the texel that holds (lon, lat)."""
    u, v = texture_uv(lon, lat)
    uc, vc = (math.floor(u * 256) + 0.5) / 256, (math.floor(v * 256) + 0.5) / 256
    return (uc - 0.5) * math.pi, (0.5 - vc) * math.pi


@pytest.mark.parametrize("projection", [MOLLWEIDE, HAMMER])
@pytest.mark.parametrize("lon,lat,rot", [(30.0, 20.0, (0, 0, 0)), (-60.0, -40.0, (0, 0, 0)),
                                         (10.0, 45.0, (-20, 10, 15)), (-45.0, 5.0, (30, -25, -40))])
def test_marker_lands_at_its_forward_projected_pixel(gl_context, target, projection, lon, lat, rot):
    lon_c, lat_c = texel_centre(math.radians(lon), math.radians(lat))
    img = draw(gl_context, target, marker_image(lon_c, lat_c), sky_values(projection, *rot))
    x, y = project(np.array(lon_c), np.array(lat_c), projection, W, H, tuple(math.radians(a) for a in rot))
    x, y = float(x), float(y)
    r = 14
    x0, y0 = int(x) - r, int(y) - r
    window = img[y0:y0 + 2 * r + 1, x0:x0 + 2 * r + 1, 0].astype(float)
    assert window.max() > 100, "marker not found near its projected pixel"
    window = np.where(window > 0.1 * window.max(), window, 0.0)
    ys, xs = np.mgrid[0:window.shape[0], 0:window.shape[1]]
    cx = x0 + (xs * window).sum() / window.sum() + 0.5
    cy = y0 + (ys * window).sum() / window.sum() + 0.5
    assert math.hypot(cx - x, cy - y) <= 1.0, f"marker at ({cx:.2f}, {cy:.2f}), projected ({x:.2f}, {y:.2f})"


@pytest.mark.parametrize("projection", [MOLLWEIDE, HAMMER])
def test_numpy_projection_round_trip_and_edge(projection):
    rng = np.random.default_rng(0)
    lon = rng.uniform(-math.pi * 0.999, math.pi * 0.999, 2000)
    lat = rng.uniform(-math.pi / 2 * 0.999, math.pi / 2 * 0.999, 2000)
    x, y = forward(lon, lat, projection)
    assert np.all(x * x / 8 + y * y / 2 <= 1 + 1e-9)
    lon2, lat2 = inverse(x, y, projection)
    assert np.allclose(lon2, lon, atol=1e-6) and np.allclose(lat2, lat, atol=1e-6)
    xe, ye = forward(np.full(50, math.pi), np.linspace(-1.5, 1.5, 50), projection)
    assert np.allclose(xe * xe / 8 + ye * ye / 2, 1.0, atol=1e-9)


def render_with(ctx, fbo, image: np.ndarray, values: np.ndarray, render_scale: float = 1.0,
                moving_tilt: bool = False) -> np.ndarray:
    """One frame; `moving_tilt` makes the full-resolution path rotate the view vectors per pixel
    as it does while sky/lat or sky/roll glide, instead of reading the table of a steady tilt."""
    from engine.visual.sky import SkyRenderer

    fbo.use()
    sky = SkyRenderer(ctx, W, H, image.shape[0], render_scale)
    try:
        sky.upload(image)
        if moving_tilt:
            sky._last_tilt = (10.0, 10.0)  # as if the tilt had just moved: no table is made
        sky.render(values, 0.0)
        raw = fbo.read(components=3, alignment=1)
    finally:
        sky.release()
    return np.frombuffer(raw, np.uint8).reshape(H, W, 3)[::-1].astype(int)


@pytest.mark.parametrize("mapping", [0, 1, 2])
def test_steady_and_moving_tilt_draw_the_same_picture(gl_context, target, mapping):
    v = sky_values(HAMMER, 30.0, 25.0, 15.0)
    v[REGISTRY.index("sky/mapping")] = mapping
    v[REGISTRY.index("sky/graticule")] = 0.6
    steady = render_with(gl_context, target, gradient_image(), v)
    moving = render_with(gl_context, target, gradient_image(), v, moving_tilt=True)
    diff = np.abs(steady - moving).max(-1)
    assert np.mean(diff <= 2) > 0.999 and diff.max() <= 40, (diff.max(), np.mean(diff > 2))


@pytest.mark.parametrize("mapping", [0, 1, 2])
def test_full_resolution_path_matches_the_per_fragment_shader(gl_context, target, mapping):
    """sky_lut.frag (tables, keyframe texture) against sky.frag computing everything per fragment
    (the sky layer at nearly full resolution, as the broadcast page does)."""
    v = sky_values(MOLLWEIDE, -50.0, 35.0, 0.0)
    v[REGISTRY.index("sky/mapping")] = mapping
    full = render_with(gl_context, target, gradient_image(), v)
    layer = render_with(gl_context, target, gradient_image(), v, render_scale=0.999)
    inside = edge_distance_px(W, H) < -3
    diff = np.abs(full - layer).max(-1)[inside]
    assert np.median(diff) <= 2 and np.mean(diff > 12) < 0.01, (np.median(diff), np.mean(diff > 12))


def test_dissolve_variant_draws_noise_over_the_image(gl_context, target):
    v = sky_values()
    clean = render_with(gl_context, target, gradient_image(), v)
    v[REGISTRY.index("sky/dissolve")] = 0.6
    v[REGISTRY.index("sky/colormap")] = 2
    noisy = render_with(gl_context, target, gradient_image(), v)
    inside = edge_distance_px(W, H) < -3
    assert np.abs(noisy - clean).max(-1)[inside].mean() > 20
    outside = edge_distance_px(W, H) > 1.0
    assert np.all(noisy[outside & (np.arange(H)[:, None] < H // 2)] == (0, 0, 255))
