"""ciel's audio model out to nn~ (engine/audio/nntilde.py): the TorchScript file loaded with
`torch.jit.load` and called the way nn~'s backend calls it (its methods, their `_params`, blocks
of 2048 and 4096 samples one after another), the streamed sound equal to ciel's own decoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine import cli
from engine.audio.model import AudioModelConfig, AudioVAE, export_audio_model, load_audio_model

ROOT = Path(__file__).resolve().parent.parent


def model_folder(tmp_path: Path, **cfg) -> Path:
    """A model with random weights and a PCA that is not the identity (knobs ≠ latents)."""
    torch.manual_seed(3)
    vae = AudioVAE(AudioModelConfig(**cfg))
    latents = torch.randn(400, vae.cfg.latent_dim) * torch.linspace(0.5, 2.0, vae.cfg.latent_dim) + 0.3
    return export_audio_model(vae, tmp_path / "model", {"trained": False}, latents)


def nn_tilde_perform(ts: torch.jit.ScriptModule, method: str, signal: np.ndarray, n_vec: int) -> np.ndarray:
    """What nn~ does for one method: (channels, samples) at the host rate in blocks of `n_vec`,
    each block decimated by the input ratio, the method called, the output held for its ratio."""
    in_dim, in_ratio, out_dim, out_ratio = (int(v) for v in getattr(ts, f"{method}_params"))
    assert signal.shape[0] == in_dim and signal.shape[1] % n_vec == 0
    out = []
    for start in range(0, signal.shape[1], n_vec):
        block = torch.from_numpy(signal[:, start:start + n_vec].astype(np.float32))
        x = block.reshape(1, in_dim, -1, in_ratio)[..., -1]               # (1, in_dim, n_vec / in_ratio)
        with torch.inference_mode():
            y = getattr(ts, method)(x)
        y = y.repeat_interleave(out_ratio, dim=-1).reshape(1, out_dim, -1)  # (1, out_dim, n_vec)
        assert y.shape == (1, out_dim, n_vec), (method, y.shape)
        out.append(y[0].numpy())
    return np.concatenate(out, axis=1)


@pytest.mark.parametrize("cfg", [{}, {"overlap": 2}, {"upsample": "nearest"}], ids=["transposed", "overlap-2", "nearest"])
@pytest.mark.parametrize("n_vec", [2048, 4096])
def test_nn_tilde_streams_what_ciel_decodes(tmp_path: Path, cfg: dict, n_vec: int) -> None:
    folder = model_folder(tmp_path, **cfg)
    out = tmp_path / "ciel.ts"
    assert cli.main(["export", "--nn-tilde", str(folder), str(out)]) == 0
    ts = torch.jit.load(str(out))
    model = load_audio_model(folder)
    d, hop = model.latent_dim, model.hop
    assert ts.get_methods() == ["forward", "encode", "decode"] and ts.get_attributes() == []
    assert ts.decode_params.tolist() == [d, hop, 1, 1] and ts.encode_params.tolist() == [1, 1, d, hop]
    assert ts.forward_params.tolist() == [1, 1, 1, 1] and ts.sampling_rate == model.sample_rate
    # decode: knob signals held for each latent frame (nn~ takes the last sample of each hop)
    frames = 3 * n_vec // hop
    knobs = np.random.default_rng(1).standard_normal((d, frames)).astype(np.float32)   # (D, T)
    streamed = nn_tilde_perform(ts, "decode", np.repeat(knobs, hop, axis=1), n_vec)    # (1, T·hop)
    with torch.no_grad():
        z = torch.from_numpy(model.knobs_to_latent(knobs.T).T[None])                 # (1, D, T)
        ours = model.vae.decoder(z)[0].numpy()                                        # (1, T·hop)
    assert np.abs(streamed - ours).max() < 1e-4
    assert np.abs(ours).max() > 1e-3                                                  # a sound, not silence
    # encode gives the knobs ciel would (the PCA applied), forward gives a block of sound
    sound = (0.3 * np.sin(np.arange(n_vec) * 0.05))[None].astype(np.float32)
    coded = nn_tilde_perform(ts, "encode", sound, n_vec)[:, ::hop]                    # (D, n_vec / hop)
    with torch.no_grad():
        mu = model.vae.encoder(torch.from_numpy(sound[None]))[0][0].numpy().T          # (T, D)
    expected = ((mu - model.pca_mean) @ model.pca_components.T / model.pca_scale).T
    assert np.abs(coded - expected).max() < 1e-4
    assert nn_tilde_perform(ts, "forward", sound, n_vec).shape == (1, n_vec)


def test_nn_tilde_export_needs_a_ts_name(tmp_path: Path, capsys) -> None:
    assert cli.main(["export", "--nn-tilde", str(ROOT / "models/audio-default"), str(tmp_path / "x.pt")]) == 2
    assert "expected a name ending in .ts" in capsys.readouterr().err
