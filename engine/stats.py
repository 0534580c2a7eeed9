"""Gaussian fits of feature sets and the Fréchet distance between them (the measure behind FID),
shared by the sound and image quality measures (engine/audio/quality.py, engine/visual/quality.py).

Pure numpy; any thread. Features are rows: (N, F) float.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Gaussian:
    """Mean (F,) and covariance (F, F) of a set of feature vectors."""

    mean: np.ndarray
    cov: np.ndarray


def fit(features: np.ndarray) -> Gaussian:
    """Gaussian fit of features (N, F)."""
    f = np.asarray(features, np.float64)
    return Gaussian(f.mean(0), np.cov(f, rowvar=False))


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (negative eigenvalues clipped)."""
    w, v = np.linalg.eigh((a + a.T) / 2)
    root: np.ndarray = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    return root


def frechet(a: Gaussian, b: Gaussian) -> float:
    """Fréchet distance ‖μa − μb‖² + tr(Ca + Cb − 2 (Ca^½ Cb Ca^½)^½)."""
    root = _sqrtm_psd(a.cov)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root @ b.cov @ root), 0.0, None)).sum()
    return float(np.sum((a.mean - b.mean) ** 2) + np.trace(a.cov) + np.trace(b.cov) - 2.0 * cross)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature rows a (N, F) and b (M, F)."""
    return frechet(fit(a), fit(b))
