"""Quality measures of an image model against the photos it learned from.

`image_quality(model_folder, photos, seed=0)` samples the model and returns, beside the same
measure on the photos themselves (the scale each number is read against):

- `grid_db` / `data_grid_db`: periodic-artefact energy. The mean power spectrum of 64 grey,
  Hann-windowed images is read at the periods 2, 4, 8 and 16 px, horizontally, vertically and
  diagonally (12 peaks); each peak's power is compared with the median power of its neighbouring
  frequencies (a ring 2 to 4 bins away) in dB, and the 12 ratios are averaged. A stride lattice
  (the checkerboard of transposed convolutions) puts power at exactly these frequencies: tens of
  dB; a photo sits near 0 dB. `grid_peaks_db` holds the 12 values ("h2", "v2", "d2", "h4", ...).
- `diversity_ratio`: mean pairwise RMS distance of 64 generated images ÷ that of 64 photos, both
  at 64 px in [0, 1]: 1 = as varied as the photos, near 0 = one picture over and over.
- `colour_fd` / `data_colour_fd`: Fréchet distance between Gaussians fitted to colour statistics
  (per image: RGB mean and standard deviation, and the mean colour of each cell of a 4x4 layout:
  54 numbers in [0, 1]) of the generated images and of the photos; the scale is the same
  distance between two random halves of the photos.

Generated images come from a seeded Gaussian latent at the model's resolution; photos are
area-resized to it. Pure numpy/torch; runs on the calling thread (a few seconds at 256 px).
`write_grid(images, path)` writes a PNG contact sheet of uint8 images (N, H, W, 3).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..stats import frechet_distance
from .model import ImageModel, load_image_model

PERIODS = (2, 4, 8, 16)
SAMPLES = 64


def sample_images(model: ImageModel, count: int = SAMPLES, seed: int = 0, learning: float | None = None) -> np.ndarray:
    """uint8 (count, R, R, 3) images from seeded standard Gaussian latents (at `learning` along
    the model's training when given)."""
    before = model.learning
    if learning is not None:
        model.set_learning(learning)
    z = torch.randn(count, model.latent_dim, generator=torch.Generator().manual_seed(seed))  # (N, D)
    out = [model.generate(z[i:i + 16]) for i in range(0, count, 16)]
    if learning is not None:
        model.set_learning(before)
    imgs = torch.cat(out)  # (N, 3, R, R) in [-1, 1]
    return ((imgs.permute(0, 2, 3, 1) + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, H, W, 3) → float32 (N, size, size, 3) in [0, 1] (area resize when shrinking)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0  # (N, 3, H, W)
    if x.shape[-1] != size or x.shape[-2] != size:
        mode = "area" if x.shape[-1] > size else "bilinear"
        x = F.interpolate(x, size=(size, size), mode=mode)
    return x.permute(0, 2, 3, 1).clamp(0, 1).numpy()


def grid_peaks(images: np.ndarray) -> dict[str, float]:
    """Periodic-artefact energy of uint8 or float images (N, H, W, 3), H == W: dB of each of the
    12 peaks (period 2, 4, 8, 16 px; h = along x, v = along y, d = diagonal) over its neighbours."""
    x = np.asarray(images, np.float64)
    grey = x @ np.array([0.299, 0.587, 0.114])  # (N, H, W)
    n, h, w = grey.shape
    grey = grey - grey.mean(axis=(1, 2), keepdims=True)
    window = np.outer(np.hanning(h), np.hanning(w))
    power = (np.abs(np.fft.fft2(grey * window)) ** 2).mean(axis=0)  # (H, W), DC at [0, 0]
    dy, dx = np.mgrid[-4:5, -4:5]
    ring = (np.maximum(abs(dy), abs(dx)) >= 2)
    out: dict[str, float] = {}
    for p in PERIODS:
        ky, kx = h // p, w // p
        for name, (fy, fx) in (("h", (0, kx)), ("v", (ky, 0)), ("d", (ky, kx))):
            neighbours = power[(fy + dy[ring]) % h, (fx + dx[ring]) % w]
            out[f"{name}{p}"] = float(10 * np.log10((power[fy, fx] + 1e-12) / (np.median(neighbours) + 1e-12)))
    return out


def grid_db(images: np.ndarray) -> float:
    """The mean of `grid_peaks` (dB): about 0 for photos, tens of dB for a stride lattice."""
    return float(np.mean(list(grid_peaks(images).values())))


def mean_pairwise_distance(images: np.ndarray, size: int = 64) -> float:
    """Mean RMS distance between all pairs of images (N, H, W, 3) at `size` px in [0, 1]."""
    x = resize(images, size).reshape(len(images), -1).astype(np.float64)  # (N, size*size*3)
    sq = (x ** 2).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0) / x.shape[1]
    iu = np.triu_indices(len(x), 1)
    return float(np.sqrt(d2[iu]).mean())


def colour_features(images: np.ndarray) -> np.ndarray:
    """(N, 54) float64: RGB mean (3) and standard deviation (3), mean colour of a 4x4 layout (48)."""
    x = resize(images, 64).astype(np.float64)  # (N, 64, 64, 3)
    layout = x.reshape(len(x), 4, 16, 4, 16, 3).mean(axis=(2, 4)).reshape(len(x), -1)  # (N, 48)
    return np.concatenate([x.mean(axis=(1, 2)), x.std(axis=(1, 2)), layout], axis=1)


def compare(generated: np.ndarray, photos: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """The measures of `image_quality` for uint8 generated images and photos (N, R, R, 3), same R."""
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(photos))
    data = photos[pick[:SAMPLES]]
    gen = generated[:SAMPLES]
    half = len(photos) // 2
    feats_photos = colour_features(photos)
    return {
        "grid_db": grid_db(gen),
        "data_grid_db": grid_db(data),
        "grid_peaks_db": {k: round(v, 2) for k, v in grid_peaks(gen).items()},
        "diversity_ratio": mean_pairwise_distance(gen) / max(mean_pairwise_distance(data), 1e-9),
        # equal sample sizes on both sides of both distances (the estimate's bias grows as they shrink)
        "colour_fd": frechet_distance(colour_features(generated[:half]), feats_photos[pick[half:2 * half]]),
        "data_colour_fd": frechet_distance(feats_photos[pick[:half]], feats_photos[pick[half:2 * half]]),
    }


def image_quality(model_folder: Path | ImageModel, photos: np.ndarray, seed: int = 0, images_png: Path | None = None,
                  learning: float | None = None) -> dict[str, Any]:
    """Measures of the model in `model_folder` (or of a loaded ImageModel) against `photos`
    (uint8 (N, H, W, 3), N ≥ 4; the dataset's images.npy): grid_db, data_grid_db, grid_peaks_db,
    diversity_ratio, colour_fd, data_colour_fd, and images_png (a grid of the 64 samples) when
    `images_png` is given. Generated images for colour_fd: as many as photos (at least 64);
    `learning` (0..1) measures the model at that point of its training."""
    model = model_folder if isinstance(model_folder, ImageModel) else load_image_model(model_folder)
    r = model.resolution
    photos_r = (resize(photos, r) * 255.0).round().astype(np.uint8) if photos.shape[1] != r else np.asarray(photos)
    generated = sample_images(model, max(SAMPLES, len(photos_r)), seed, learning)
    out = compare(generated, photos_r, seed)
    if images_png is not None:
        out["images_png"] = str(write_grid(generated[:SAMPLES], Path(images_png)))
    return out


def write_grid(images: np.ndarray, path: Path, columns: int = 8, pad: int = 2) -> Path:
    """A PNG contact sheet of uint8 images (N, H, W, 3), `columns` wide, on a dark background."""
    n, h, w, _ = images.shape
    rows = -(-n // columns)
    sheet = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), 16, np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, columns)
        sheet[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = img
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(path)
    return path


__all__ = ["image_quality", "compare", "grid_db", "grid_peaks", "mean_pairwise_distance", "colour_features",
           "frechet_distance", "sample_images", "write_grid"]
