"""The image generator: shapes, folded batch norm, model files and the errors they give."""

from __future__ import annotations

import hashlib

import pytest
import torch

from engine.errors import ModelError
from engine.visual.model import (Generator, GeneratorConfig, export_image_model, load_image_model,
                                 make_default_image_model)


def trained_like(cfg: GeneratorConfig) -> Generator:
    """A generator with non-trivial batch-norm statistics, as after training."""
    torch.manual_seed(0)
    gen = Generator(cfg)
    gen.train()
    with torch.no_grad():
        for _ in range(3):
            gen(torch.randn(8, cfg.latent_dim) * 2 + 0.5)
    return gen.eval()


@pytest.mark.parametrize("resolution", [64, 128, 256])
def test_export_load_round_trip_gives_the_same_pictures(tmp_path, resolution):
    cfg = GeneratorConfig(resolution=resolution, latent_dim=32, channels=64, min_channels=8)
    gen = trained_like(cfg)
    export_image_model(gen, tmp_path, {"description": "test", "trained": True, "steps": 3})
    model = load_image_model(tmp_path)
    z = torch.randn(4, 32)
    with torch.no_grad():
        want = gen(z)
    got = model.generate(z)
    assert got.shape == (4, 3, resolution, resolution)
    assert float(got.min()) >= -1.0 and float(got.max()) <= 1.0
    assert torch.allclose(got, want, atol=1e-4)
    assert model.card["trained"] is True and model.card["steps"] == 3
    assert (model.latent_dim, model.resolution) == (32, resolution)


def test_one_image_never_depends_on_another(tmp_path):
    export_image_model(trained_like(GeneratorConfig(resolution=64, latent_dim=16, channels=32)), tmp_path)
    model = load_image_model(tmp_path)
    z = torch.randn(5, 16)
    alone = model.generate(z[2:3])
    batched = model.generate(z)[2:3]
    assert torch.allclose(alone, batched, atol=1e-5)
    assert not torch.allclose(model.generate(z[:1]), model.generate(z[1:2]))


def test_default_model_is_untrained_deterministic_and_says_so(tmp_path):
    a = make_default_image_model(tmp_path / "a", seed=3)
    b = make_default_image_model(tmp_path / "b", seed=3)
    for name in ("model.safetensors", "card.toml"):
        assert hashlib.sha1((a / name).read_bytes()).digest() == hashlib.sha1((b / name).read_bytes()).digest()
    model = load_image_model(a)
    assert model.card["trained"] is False and "UNTRAINED" in model.card["description"]
    img = model.to_uint8(torch.randn(model.latent_dim))
    assert img.shape == (256, 256, 3) and float(img.float().std()) > 20  # a picture, not a flat field


def test_bundled_default_loads():
    model = load_image_model("models/image-default")
    assert model.resolution == 256 and model.card["trained"] in (True, False)


@pytest.fixture
def small_model(tmp_path):
    export_image_model(Generator(GeneratorConfig(resolution=64, latent_dim=16, channels=32)), tmp_path)
    return tmp_path


def test_missing_weights_name_the_file(small_model):
    (small_model / "model.safetensors").unlink()
    with pytest.raises(ModelError, match=r"model\.safetensors: model file not found"):
        load_image_model(small_model)


def test_corrupt_weights_name_the_file(small_model):
    (small_model / "model.safetensors").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ModelError, match=r"model\.safetensors"):
        load_image_model(small_model)


def test_card_that_does_not_match_the_weights_names_the_file(small_model):
    card = small_model / "card.toml"
    card.write_text(card.read_text().replace("channels = 32", "channels = 48"))
    with pytest.raises(ModelError, match=r"model\.safetensors: tensor shapes do not match the card"):
        load_image_model(small_model)


@pytest.mark.parametrize("old,new,message", [
    ("resolution = 64", "resolution = 100", r"card\.toml: resolution: expected one of"),
    ('kind = "image"', 'kind = "audio"', r"card\.toml: kind: expected 'image'"),
    ("latent_dim = 16\n", 'latent_dim = "sixteen"\n', r"card\.toml: latent_dim: expected int"),
])
def test_bad_card_entries_name_the_card_and_key(small_model, old, new, message):
    card = small_model / "card.toml"
    text = card.read_text()
    assert old in text
    card.write_text(text.replace(old, new))
    with pytest.raises(ModelError, match=message):
        load_image_model(small_model)
