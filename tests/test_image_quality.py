"""Image quality measures: a generator with a stride lattice fails the grid check, a collapsed one
fails the diversity and colour checks, a generator that draws like the photos passes them all, and
the shipped default draws without a lattice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from engine.visual.model import ARCHITECTURE, Generator, GeneratorConfig, ImageModel, export_image_model, load_image_model
from engine.visual.quality import image_quality, write_grid

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def photos(phone_dataset) -> np.ndarray:
    """64 phone-style photos at 256 px, uint8 (64, 256, 256, 3)."""
    return np.asarray(phone_dataset.images)


class PhotoGenerator(nn.Module):
    """Fixture: draws one of the photos (picked by the latent), optionally times a stride lattice
    (the dots of 4x4 stride-2 transposed convolutions: periods 2 and 4 px), or always the same one."""

    def __init__(self, photos: np.ndarray, lattice: float = 0.0, collapsed: bool = False) -> None:
        super().__init__()
        self.photos = torch.from_numpy(photos).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (N, 3, R, R)
        self.lattice, self.collapsed = lattice, collapsed

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        idx = torch.zeros(len(z), dtype=torch.long) if self.collapsed else \
            (z[:, 0].abs() * 1000).long() % len(self.photos)
        x = self.photos[idx]  # (B, 3, R, R)
        if self.lattice:
            r = x.shape[-1]
            i = torch.arange(r)
            pattern = ((i[:, None] % 2 == 0) & (i[None, :] % 2 == 0)).float() + \
                0.5 * ((i[:, None] % 4 < 2) & (i[None, :] % 4 < 2)).float()  # (R, R)
            x = (x + 1) * (1 - self.lattice + self.lattice * pattern) - 1
        if self.collapsed:
            x = x + 0.01 * z[:, :1, None, None]
        return x.clamp(-1, 1)


def fixture_model(gen: nn.Module, resolution: int = 256) -> ImageModel:
    return ImageModel(gen, 16, resolution, {}, Path("fixture"))


def test_generator_drawing_like_the_photos_passes_every_check(photos):
    q = image_quality(fixture_model(PhotoGenerator(photos)), photos)
    assert q["grid_db"] <= q["data_grid_db"] + 3
    assert abs(q["data_grid_db"]) < 6, "photos have no strong periodic pattern"
    assert q["diversity_ratio"] >= 0.7   # (its colours: `bench quality` reports colour_fd against the scale)


def test_checkerboard_generator_fails_the_grid_check(photos):
    q = image_quality(fixture_model(PhotoGenerator(photos, lattice=0.3)), photos)
    assert q["grid_db"] > q["data_grid_db"] + 10, q["grid_peaks_db"]
    assert q["grid_peaks_db"]["d2"] > 20 and q["grid_peaks_db"]["d4"] > 20  # the dots sit on the diagonals too


def test_collapsed_generator_fails_the_diversity_and_colour_checks(photos):
    q = image_quality(fixture_model(PhotoGenerator(photos, collapsed=True)), photos)
    assert q["diversity_ratio"] < 0.2
    assert q["colour_fd"] > 3 * q["data_colour_fd"]


def test_a_model_folder_is_measured_and_its_samples_written(photos, tmp_path):
    torch.manual_seed(0)
    export_image_model(Generator(GeneratorConfig(resolution=64, latent_dim=16, channels=32)), tmp_path / "m")
    png = tmp_path / "grid.png"
    q = image_quality(tmp_path / "m", photos[:16], images_png=png)
    assert {"grid_db", "data_grid_db", "diversity_ratio", "colour_fd", "data_colour_fd"} <= set(q)
    assert all(np.isfinite(q[k]) for k in ("grid_db", "data_grid_db", "diversity_ratio", "colour_fd"))
    assert q["images_png"] == str(png)
    assert Image.open(png).size == (8 * 66 + 2, 8 * 66 + 2)  # 64 samples of 64 px, 8 a row


def test_write_grid_lays_out_the_images(tmp_path):
    images = np.stack([np.full((8, 8, 3), 10 * i, np.uint8) for i in range(10)])
    sheet = np.asarray(Image.open(write_grid(images, tmp_path / "g.png", columns=4, pad=1)))
    assert sheet.shape == (3 * 9 + 1, 4 * 9 + 1, 3)
    assert (sheet[1:9, 1:9] == 0).all() and (sheet[10:18, 1:9] == 40).all()


def test_shipped_default_draws_without_a_lattice_and_varies_like_the_photos(photos):
    folder = ROOT / "models" / "image-default"
    model = load_image_model(folder)
    assert model.card.get("architecture") == ARCHITECTURE, f"{folder} is not a resize-convolution model"
    assert model.has_learning and model.directions is not None
    q = image_quality(model, photos)
    assert q["grid_db"] <= q["data_grid_db"] + 3, q["grid_peaks_db"]
    assert q["diversity_ratio"] >= 0.7   # (its colours: `bench quality` reports colour_fd against the scale)
