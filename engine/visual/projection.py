"""All-sky projections in numpy: the same math as shaders/projection.glsl, for tests and layout.

Conventions (shared with the shaders and the broadcast page):
- Longitude λ in [-π, π] grows to the right, latitude φ in [-π/2, π/2] grows upwards.
- Projection plane units: both Mollweide and Hammer-Aitoff fill the ellipse x²/8 + y²/2 ≤ 1
  (x in [-2√2, 2√2], y in [-√2, √2]).
- Layout: `layout(width, height)` gives the pixel centre (cx, cy) of the oval (origin bottom-left,
  as gl_FragCoord) and `scale`, pixels per plane unit; the grey note circle sits in the bottom
  margin. A fragment at plane (x, y) is at gl_FragCoord = (cx + scale·x, cy + scale·y).
- Rotation: the centre of the map shows the sky point (lon0, lat0); `roll` turns the sky around
  the view axis. `rotation_matrix` maps view vectors to sky vectors (column-major in GLSL).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MOLLWEIDE, HAMMER = 0, 1
SQRT2 = float(np.sqrt(2.0))

# Margins as fractions of the window: the oval leaves room for the note circle below it.
MARGIN_SIDE = 0.04
MARGIN_TOP = 0.04
MARGIN_BOTTOM = 0.10
NOTE_RADIUS = 0.018  # of the height


@dataclass(frozen=True)
class Layout:
    """Where the oval and the note circle are, in pixels (origin bottom-left, like gl_FragCoord)."""

    cx: float
    cy: float
    scale: float
    note_x: float
    note_y: float
    note_r: float


def layout(width: int, height: int) -> Layout:
    """Largest oval that fits inside the margins, centred horizontally; note circle under it."""
    avail_w = width * (1.0 - 2.0 * MARGIN_SIDE)
    avail_h = height * (1.0 - MARGIN_TOP - MARGIN_BOTTOM)
    scale = min(avail_w / (4.0 * SQRT2), avail_h / (2.0 * SQRT2))
    cy = height * MARGIN_BOTTOM + avail_h / 2.0
    return Layout(width / 2.0, cy, scale, width / 2.0, height * MARGIN_BOTTOM / 2.0, height * NOTE_RADIUS)


def forward(lon: np.ndarray, lat: np.ndarray, projection: int) -> tuple[np.ndarray, np.ndarray]:
    """(λ, φ) radians → plane (x, y) for MOLLWEIDE (0) or HAMMER (1)."""
    lon = np.asarray(lon, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    if projection == MOLLWEIDE:
        theta = lat.copy()
        target = np.pi * np.sin(lat)
        for _ in range(50):  # Newton on 2θ + sin 2θ = π sin φ
            f = 2 * theta + np.sin(2 * theta) - target
            d = 2 + 2 * np.cos(2 * theta)
            theta = theta - np.where(d > 1e-12, f / np.maximum(d, 1e-12), 0.0)
        return 2 * SQRT2 / np.pi * lon * np.cos(theta), SQRT2 * np.sin(theta)
    if projection == HAMMER:
        den = np.sqrt(1 + np.cos(lat) * np.cos(lon / 2))
        return 2 * SQRT2 * np.cos(lat) * np.sin(lon / 2) / den, SQRT2 * np.sin(lat) / den
    raise ValueError(f"projection: expected 0 (Mollweide) or 1 (Hammer), got {projection}")


def inverse(x: np.ndarray, y: np.ndarray, projection: int) -> tuple[np.ndarray, np.ndarray]:
    """Plane (x, y) inside the ellipse → (λ, φ) radians."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if projection == MOLLWEIDE:
        theta = np.arcsin(np.clip(y / SQRT2, -1, 1))
        lat = np.arcsin(np.clip((2 * theta + np.sin(2 * theta)) / np.pi, -1, 1))
        return np.pi * x / (2 * SQRT2 * np.maximum(np.cos(theta), 1e-9)), lat
    if projection == HAMMER:
        z = np.sqrt(np.maximum(1 - (x / 4) ** 2 - (y / 2) ** 2, 0))
        return 2 * np.arctan2(z * x, 2 * (2 * z * z - 1)), np.arcsin(np.clip(z * y, -1, 1))
    raise ValueError(f"projection: expected 0 (Mollweide) or 1 (Hammer), got {projection}")


def rotation_matrix(lon0: float, lat0: float, roll: float) -> np.ndarray:
    """3x3 matrix R (radians in) with sky = R @ view; view (1,0,0) is the map centre → (lon0, lat0)."""
    cl, sl = np.cos(lon0), np.sin(lon0)
    cb, sb = np.cos(lat0), np.sin(lat0)
    cr, sr = np.cos(roll), np.sin(roll)
    rz = np.array([[cl, -sl, 0], [sl, cl, 0], [0, 0, 1]])
    ry = np.array([[cb, 0, -sb], [0, 1, 0], [sb, 0, cb]])  # Ry(-lat0)
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    return rz @ ry @ rx


def unit(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """(…,) angles → (…, 3) unit vectors (x towards lon 0, z to the north pole)."""
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=-1)


def project(lon: np.ndarray, lat: np.ndarray, projection: int, width: int, height: int,
            rotation: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """Sky (lon, lat) in radians → image pixel coordinates (x right, y down from the top-left).

    `rotation` is (lon0, lat0, roll) in radians. The pixel holding the point is (floor(x), floor(y))
    of a top-down image (a framebuffer read flipped upside down).
    """
    sky = unit(np.asarray(lon, float), np.asarray(lat, float))
    view = sky @ rotation_matrix(*rotation)  # R^T applied to row vectors
    vlon = np.arctan2(view[..., 1], view[..., 0])
    vlat = np.arcsin(np.clip(view[..., 2], -1, 1))
    x, y = forward(vlon, vlat, projection)
    lay = layout(width, height)
    return lay.cx + lay.scale * x, height - (lay.cy + lay.scale * y)


def texture_uv(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mapping 0 (mirrored equirectangular): sky (lon, lat) → texture (u, v), v = 0 at the image's
    top row. Longitudes -90°..90° show the image as is, the far side shows it mirrored."""
    t = np.mod(np.asarray(lon, float) / np.pi + 0.5, 2.0)
    return 1.0 - np.abs(t - 1.0), 0.5 - np.asarray(lat, float) / np.pi
