"""The audio VAE: streaming equals offline across block boundaries, model files load safely.

The click detector on a latent sweep runs on what a listener hears: tests/test_audio_stream.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.audio.model import AudioModelConfig, AudioVAE, export_audio_model, load_audio_model, make_default_audio_model
from engine.errors import ModelError

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "models" / "audio-default"


def sweep_latent(d: int, frames: int, seed: int = 0) -> torch.Tensor:
    """A smooth latent path (1, D, T): every dimension sweeps -3..3 sigma at its own rate."""
    t = torch.linspace(0, 1, frames)
    phase = torch.rand(d, 1, generator=torch.Generator().manual_seed(seed)) * 6.28
    rates = torch.arange(1, d + 1).float()[:, None]
    return (3 * torch.sin(6.28 * rates * t[None] * 0.5 + phase))[None]


def stream_decode(vae: AudioVAE, z: torch.Tensor, blocks: list[int]) -> torch.Tensor:
    dec = vae.streaming()
    out, i, k = [], 0, 0
    while i < z.shape[-1]:
        n = blocks[k % len(blocks)]
        out.append(dec(z[..., i:i + n]))
        i, k = i + n, k + 1
    return torch.cat(out, -1)


@pytest.fixture(scope="module")
def vae() -> AudioVAE:
    torch.manual_seed(1)
    return AudioVAE(AudioModelConfig()).eval()


def test_streaming_equals_offline_across_block_boundaries(vae: AudioVAE) -> None:
    z = sweep_latent(16, 300) + 0.5 * torch.randn(1, 16, 300, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        offline = vae.decode(z)
    for blocks in ([1], [3, 1, 7], [64], [300]):
        streamed = stream_decode(vae, z, blocks)
        assert streamed.shape == offline.shape == (1, 1, 300 * vae.cfg.hop)
        assert (streamed - offline).abs().max().item() < 1e-4, blocks


def test_export_orders_latents_by_pca_and_roundtrips(tmp_path: Path, vae: AudioVAE) -> None:
    gen = torch.Generator().manual_seed(3)
    basis = torch.linalg.qr(torch.randn(16, 16, generator=gen))[0]
    scales = torch.linspace(3.0, 0.1, 16)
    latents = (torch.randn(4000, 16, generator=gen) * scales) @ basis.T + 0.7
    clip = torch.randn(16, 40, generator=gen)
    export_audio_model(vae, tmp_path / "m", {"trained": True, "steps": 12}, latents, clips=[clip])
    m = load_audio_model(tmp_path / "m")
    assert m.trained and m.card["steps"] == 12 and m.hop == 64 and m.sample_rate == 16000
    assert np.all(np.diff(m.pca_scale) <= 0)                       # most important first
    assert abs(m.pca_scale[0] - 3.0) < 0.2 and abs(m.pca_scale[-1] - 0.1) < 0.02
    assert abs(float(np.dot(m.pca_components[0], basis[:, 0].numpy()))) > 0.99
    u = np.random.default_rng(0).standard_normal((5, 16))
    assert np.allclose(m.latent_to_knobs(m.knobs_to_latent(u)), u, atol=1e-4)
    assert len(m.clips) == 1 and m.clips[0].shape == (40, 16)
    assert np.allclose(m.knobs_to_latent(m.clips[0]), clip.T.numpy(), atol=1e-4)
    z = torch.randn(1, 16, 20)
    with torch.inference_mode():
        assert torch.allclose(m.vae.decode(z), vae.decode(z), atol=1e-6)


def test_vae_shapes_and_training_step() -> None:
    vae = AudioVAE(AudioModelConfig(channels=(32, 16, 8, 8)))
    x = torch.randn(2, 1, 1000) * 0.1
    recon, mu, logvar = vae(x)
    assert mu.shape == logvar.shape == (2, 16, 16) and recon.shape == (2, 1, 1024)
    loss = (recon[..., :1000] - x).pow(2).mean() + 1e-3 * (mu.pow(2) + logvar.exp() - logvar).mean()
    loss.backward()
    assert all(p.grad is not None for p in vae.parameters())


def test_bundled_default_loads_and_says_how_it_was_made() -> None:
    m = load_audio_model(DEFAULT)
    assert m.card["trained"] is True
    assert "nothing downloaded" in m.card["material"] and "make models" in m.card["rebuild"]


def test_untrained_fallback_is_reproducible_and_says_so(tmp_path: Path) -> None:
    make_default_audio_model(tmp_path / "a", seed=0)
    make_default_audio_model(tmp_path / "b", seed=0)
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    m = load_audio_model(tmp_path / "a")
    assert m.card["trained"] is False and "UNTRAINED" in m.card["description"]


@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing", "card", "shape", "nan"])
def test_bad_model_files_raise_model_error_naming_the_file(tmp_path: Path, damage: str) -> None:
    folder = tmp_path / "bad"
    shutil.copytree(DEFAULT, folder)
    weights, card = folder / "model.safetensors", folder / "card.toml"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:1000])
        name = weights
    elif damage == "garbage":
        weights.write_bytes(b"\x00\x01not a model" * 100)
        name = weights
    elif damage == "missing":
        weights.unlink()
        name = weights
    elif damage == "card":
        card.write_text(card.read_text().replace("hop = 64", "hop = 128"))
        name = card
    elif damage == "shape":
        card.write_text(card.read_text().replace("channels = [128, 64, 32, 8]", "channels = [96, 64, 32, 8]"))
        name = weights
    else:
        from safetensors.torch import load_file, save_file
        t = load_file(str(weights))
        t["decoder.inp.weight"][0, 0, 0] = float("nan")
        save_file(t, str(weights))
        name = weights
    with pytest.raises(ModelError) as info:
        load_audio_model(folder)
    assert str(name) in str(info.value)


@pytest.mark.parametrize("overlap", [1, 2, 3])
def test_streaming_equals_offline_with_overlapping_upsampling(overlap: int) -> None:
    torch.manual_seed(overlap)
    vae = AudioVAE(AudioModelConfig(overlap=overlap)).eval()
    z = torch.randn(1, 16, 47) * 3
    with torch.no_grad():
        offline = vae.decode(z)
        stream = vae.streaming()
        sizes, i, parts = [1, 3, 1, 7, 2, 5, 28], 0, []
        for n in sizes:
            parts.append(stream(z[..., i:i + n]))
            i += n
    streamed = torch.cat(parts, dim=-1)
    assert streamed.shape == offline.shape
    assert (streamed - offline).abs().max().item() < 1e-4
