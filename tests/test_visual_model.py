"""The image generator: shapes, folded batch norm, model files and the errors they give."""

from __future__ import annotations

import copy
import hashlib

import numpy as np
import pytest
import torch

from engine.errors import ModelError
from engine.visual.model import Generator, GeneratorConfig, export_image_model, load_image_model, make_default_image_model


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


# --- the resize-convolution generator, knob directions and the learning axis ---------------------

def calibrated(gen: torch.nn.Module, latent_dim: int) -> torch.nn.Module:
    """Batch-norm statistics measured on random latents (as the export does): a generator at its
    start of training, drawing at full contrast."""
    for m in gen.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    gen.train()
    with torch.no_grad():
        for _ in range(4):
            gen(torch.randn(16, latent_dim))
    return gen.eval()


def test_generator_has_no_stride_lattice():
    """An untrained transposed-convolution generator already draws a lattice of dots; this one must not."""
    from engine.visual.model import LegacyGenerator
    from engine.visual.quality import grid_peaks

    def peaks(gen: torch.nn.Module) -> dict[str, float]:
        with torch.no_grad():
            return grid_peaks(((gen(torch.randn(16, 32)).permute(0, 2, 3, 1) + 1) * 127.5).numpy())

    cfg = GeneratorConfig(resolution=128, latent_dim=32, channels=64)
    torch.manual_seed(1)
    ours = peaks(calibrated(Generator(cfg), 32))
    torch.manual_seed(1)
    lattice = peaks(calibrated(LegacyGenerator(cfg), 32))
    assert max(ours.values()) < 6, ours
    assert np.mean(list(lattice.values())) > np.mean(list(ours.values())) + 10, lattice  # the measure sees it


def test_earlier_transposed_convolution_models_still_play(tmp_path):
    from engine.modelio import save_model
    from engine.visual.model import LegacyGenerator

    cfg = GeneratorConfig(resolution=64, latent_dim=16, channels=32, min_channels=16)
    gen = LegacyGenerator(cfg).eval()
    tensors = {k: v for k, v in gen.state_dict().items() if not k.endswith("num_batches_tracked")}
    save_model(tmp_path, tensors, {"kind": "image", "architecture": "dcgan-convtranspose-v1", "resolution": 64,
                                   "latent_dim": 16, "channels": 32, "min_channels": 16})
    model = load_image_model(tmp_path)
    z = torch.randn(2, 16)
    with torch.no_grad():
        want = gen(z)
    assert torch.allclose(model.generate(z), want, atol=1e-4)
    assert not model.has_learning and model.directions is None


def test_unknown_architecture_names_the_card_and_key(small_model):
    card = small_model / "card.toml"
    card.write_text(card.read_text().replace('architecture = "resize-conv-sle-v2"', 'architecture = "stylegan9"'))
    with pytest.raises(ModelError, match=r"card\.toml: architecture: expected 'resize-conv-sle-v2', got 'stylegan9'"):
        load_image_model(small_model)


def images_at(model, z, learning):
    model.set_learning(learning)
    return model.generate(z)


@pytest.mark.parametrize("norm", ["batch", "pixel"])
def test_learning_knob_moves_the_pictures_along_training(tmp_path, norm):
    """0 = the untrained generator, 1 = the exported one; in between the pictures change smoothly
    and lie between the two. Batch norm is folded after each move."""
    cfg = GeneratorConfig(resolution=64, latent_dim=16, channels=32, norm=norm)
    torch.manual_seed(0)
    untrained = calibrated(Generator(cfg), 16)
    trained = copy.deepcopy(untrained)
    with torch.no_grad():  # stand in for training: every weight moved by about its own size
        for p in trained.parameters():
            p.add_(p.std() * torch.randn_like(p) if p.numel() > 1 else 0.1)
    trained = calibrated(trained, 16)
    z = torch.randn(4, 16)
    with torch.no_grad():
        want0, want1 = untrained(z), trained(z)
    snaps = [(0, 0.0, untrained.state_dict()), (100, 60.0, trained.state_dict())]
    export_image_model(trained, tmp_path, {"trained": True}, snapshots=snaps)
    model = load_image_model(tmp_path)
    assert model.has_learning and model.learning_steps == [0, 100]
    assert model.card["learning"]["seconds"] == [0.0, 60.0]
    at1 = images_at(model, z, 1.0)
    at0 = images_at(model, z, 0.0)
    assert torch.allclose(at1, want1, atol=1e-4)               # the final weights, exactly
    assert torch.allclose(at0, want0, atol=2e-2)               # the untrained net (float16 storage)
    span = float((at1 - at0).abs().mean())
    assert span > 0.05, "learning 0 and 1 look alike"
    mid = images_at(model, z, 0.5)
    assert float((mid - at0).abs().mean()) < span and float((mid - at1).abs().mean()) < span
    path = [images_at(model, z, x) for x in np.linspace(0, 1, 21)]
    steps = [float((b - a).abs().mean()) for a, b in zip(path, path[1:])]
    assert max(steps) < 0.25 * span, f"the pictures jump as the knob moves: {np.round(steps, 3)}"


def test_model_without_snapshots_ignores_the_learning_knob(small_model):
    model = load_image_model(small_model)
    z = torch.randn(2, 16)
    before = model.generate(z)
    assert not model.has_learning and model.set_learning(0.0) is False
    assert torch.equal(model.generate(z), before)


def test_learning_snapshots_are_stored_in_float16(tmp_path):
    from safetensors.torch import load_file

    cfg = GeneratorConfig(resolution=64, latent_dim=16, channels=32)
    gen = trained_like(cfg)
    export_image_model(gen, tmp_path, snapshots=[(0, 0.0, Generator(cfg).state_dict()), (1, 1.0, gen.state_dict()),
                                                 (2, 2.0, gen.state_dict())])
    tensors = load_file(str(tmp_path / "model.safetensors"))
    stored = {k: v for k, v in tensors.items() if k.startswith("learning.")}
    assert stored and all(v.dtype == torch.float16 for v in stored.values())
    assert {k.split(".")[1] for k in stored} == {"0", "1"}  # the final weights are not stored twice


def test_knob_directions_are_ordered_by_how_much_the_picture_changes(tmp_path):
    """Direction 0 changes the pictures most; each direction is one standard deviation per unit."""
    from engine.visual.model import latent_directions

    cfg = GeneratorConfig(resolution=64, latent_dim=32, channels=64)
    gen = trained_like(cfg)
    folded = load_image_model(export_image_model(gen, tmp_path / "plain")).generator
    vecs, sigma = latent_directions(folded, 32, 8, seed=0, samples=512)
    assert vecs.shape == (8, 32) and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)
    assert np.allclose(sigma, 1, atol=0.15)  # a Gaussian latent: one sigma along any unit direction
    export_image_model(gen, tmp_path / "knobs", directions=(vecs, sigma))
    model = load_image_model(tmp_path / "knobs")
    assert model.directions.shape == (8, 32)
    z = torch.randn(64, 32, generator=torch.Generator().manual_seed(5))
    base = model.generate(z)
    change = [float((model.generate(z + 2 * torch.from_numpy(d)) - base).abs().mean()) for d in model.directions]
    assert change[0] > change[-1] and change[0] >= 0.9 * max(change), np.round(change, 4)


def test_knob_directions_with_a_wrong_shape_name_the_file(tmp_path):
    cfg = GeneratorConfig(resolution=64, latent_dim=16, channels=32)
    export_image_model(trained_like(cfg), tmp_path, directions=(np.ones((8, 12)), np.ones(8)))
    with pytest.raises(ModelError, match=r"model\.safetensors: tensor 'knobs\.directions': expected shape \(K, 16\)"):
        load_image_model(tmp_path)
