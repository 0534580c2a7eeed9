"""Preview files written at every checkpoint: a loss plot, an image grid, spectrograms and WAV snippets.

Drawn with Pillow only (no plotting library). All functions run on the training process's main
thread (rank 0 under torchrun) and write atomically, so a preview is never half a file.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image, ImageDraw, ImageFont

from ..configio import atomic_write

COLOURS = ((230, 85, 60), (60, 140, 230), (90, 190, 90), (200, 160, 40), (170, 90, 200), (60, 190, 190),
           (220, 110, 170), (130, 130, 130))


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's built-in font at `size` px (its bitmap font where FreeType is missing)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):
        return ImageFont.load_default()


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def save_png(path: Path, img: Image.Image) -> Path:
    atomic_write(path, _png_bytes(img))
    return path


def save_wav(path: Path, audio: np.ndarray, samplerate: int) -> Path:
    """float32 mono [-1, 1] → 16-bit WAV, written atomically."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(audio, -1.0, 1.0), samplerate, subtype="PCM_16", format="WAV")
    atomic_write(path, buf.getvalue())
    return path


def image_grid(images: np.ndarray, columns: int = 8, pad: int = 2) -> Image.Image:
    """uint8 [N, H, W, 3] → one grid image, `columns` wide, on a dark background."""
    n, h, w, _ = images.shape
    cols = min(columns, n)
    rows = -(-n // cols)
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 16, np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        grid[y:y + h, x:x + w] = images[i]
    return Image.fromarray(grid)


def to_uint8_images(batch: np.ndarray) -> np.ndarray:
    """float [N, 3, H, W] in [-1, 1] → uint8 [N, H, W, 3]."""
    x = np.clip((np.asarray(batch, dtype=np.float32) + 1.0) * 127.5, 0, 255)
    return x.round().astype(np.uint8).transpose(0, 2, 3, 1)


def spectrogram(audio: np.ndarray, samplerate: int, height: int = 160, n_fft: int = 512,
                hop: int = 128, floor_db: float = -80.0) -> Image.Image:
    """A log-magnitude spectrogram (time → right, frequency ↑) coloured dark blue → yellow."""
    x = np.asarray(audio, dtype=np.float32)
    if x.size < n_fft:
        x = np.pad(x, (0, n_fft - x.size))
    frames = 1 + (x.size - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    spec = np.abs(np.fft.rfft(x[idx] * np.hanning(n_fft).astype(np.float32), axis=1))
    db = 20 * np.log10(spec + 1e-9)
    db = np.clip((db - db.max() - floor_db) / -floor_db, 0.0, 1.0).T[::-1]  # [freq, time], low freq at bottom
    rgb = np.stack([np.clip(1.6 * db - 0.3, 0, 1), np.clip(1.3 * db - 0.1, 0, 1) ** 1.5,
                    np.clip(0.5 + 0.8 * db - 1.2 * db ** 2, 0, 1)], axis=-1)
    img = Image.fromarray((rgb * 255).astype(np.uint8))
    return img.resize((max(1, img.width), height), Image.Resampling.BILINEAR)


def spectrogram_sheet(clips: Sequence[np.ndarray], labels: Sequence[str], samplerate: int) -> Image.Image:
    """Spectrograms stacked vertically, each with its label; all clips drawn to one time scale."""
    tiles = [spectrogram(c, samplerate) for c in clips]
    width = max(t.width for t in tiles) + 8
    font = _font(13)
    sheet = Image.new("RGB", (width, sum(t.height + 20 for t in tiles) + 4), (16, 16, 16))
    draw = ImageDraw.Draw(sheet)
    y = 4
    for tile, label in zip(tiles, labels):
        draw.text((4, y), label, fill=(220, 220, 220), font=font)
        sheet.paste(tile, (4, y + 16))
        y += tile.height + 20
    return sheet


def loss_plot(history: Sequence[dict[str, float]], title: str, size: tuple[int, int] = (720, 360)) -> Image.Image:
    """Loss curves against the step, one colour per loss; each loss scaled to its own range
    (log scale when it spans more than a decade), with its first and last value in the legend."""
    w, h = size
    img = Image.new("RGB", size, (250, 250, 248))
    draw = ImageDraw.Draw(img)
    font = _font(13)
    left, right, top, bottom = 56, w - 12, 28, h - 40
    draw.text((left, 8), title, fill=(20, 20, 20), font=font)
    draw.rectangle((left, top, right, bottom), outline=(120, 120, 120))
    keys = [k for k in (history[0].keys() if history else []) if k not in ("step", "time")]
    if len(history) < 2 or not keys:
        draw.text((left + 10, top + 10), "not enough steps yet", fill=(90, 90, 90), font=font)
        return img
    steps = np.array([p["step"] for p in history], dtype=np.float64)
    s0, s1 = steps[0], max(steps[-1], steps[0] + 1)
    for t in range(5):
        s = s0 + (s1 - s0) * t / 4
        x = left + (right - left) * t / 4
        draw.line((x, bottom, x, bottom + 4), fill=(120, 120, 120))
        draw.text((x - 12, bottom + 6), f"{int(s)}", fill=(60, 60, 60), font=font)
    draw.text((right - 30, bottom + 22), "step", fill=(60, 60, 60), font=font)
    legend: list[tuple[str, tuple[int, int, int]]] = []
    for i, key in enumerate(keys):
        colour = COLOURS[i % len(COLOURS)]
        v = np.array([p.get(key, math.nan) for p in history], dtype=np.float64)
        ok = np.isfinite(v)
        if ok.sum() < 2:
            continue
        lo, hi = float(v[ok].min()), float(v[ok].max())
        log = lo > 0 and hi / lo > 10
        y = np.log10(v) if log else v
        ylo, yhi = (math.log10(lo), math.log10(hi)) if log else (lo, hi)
        span = (yhi - ylo) or 1.0
        xs = left + (right - left) * (steps - s0) / (s1 - s0)
        ys = bottom - (bottom - top - 8) * (y - ylo) / span - 4
        pts = [(float(a), float(b)) for a, b, k in zip(xs, ys, ok) if k]
        draw.line(pts, fill=colour, width=2)
        first, last = v[ok][0], v[ok][-1]
        legend.append((f"{key}: {first:.4g} -> {last:.4g}" + (" (log scale)" if log else ""), colour))
    if legend:
        box_w = max(int(draw.textlength(t, font=font)) for t, _ in legend) + 12
        draw.rectangle((left + 4, top + 4, left + 4 + box_w, top + 8 + 16 * len(legend)), fill=(255, 255, 255),
                       outline=(200, 200, 200))
        for i, (text, colour) in enumerate(legend):
            draw.text((left + 10, top + 6 + 16 * i), text, fill=colour, font=font)
    return img
