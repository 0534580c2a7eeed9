"""RAVE models in (engine/audio/scripted.py): an export made by the `acids-rave` package itself
(the `rave_export` fixture: RAVE v2 small, streaming, untrained, 8 latent dimensions at 44.1 kHz)
plays through ciel's latent navigation, safety stage and audio process; a TorchScript file loads
only when trusted, and what is refused or broken is said in one line naming the file."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import missing
from test_audio_output import level_db, start_error, wait_for
from test_cli import ciel, one_line_error

from engine.audio.config import AudioConfig
from engine.audio.model import load_audio_model
from engine.audio.output import AudioProcess
from engine.audio.stream import AudioSynth
from engine.errors import ModelError, PatchError
from engine.params import REGISTRY, ParamStore, SharedSnapshot
from engine.patch import patch_from_text
from harness import parts

RATE = 48000
CEILING = 10 ** (-1 / 20) + 1e-4     # the limiter's default ceiling, -1 dBFS


@pytest.fixture
def store() -> Iterator[ParamStore]:
    snap = SharedSnapshot(REGISTRY.size)
    yield ParamStore(snapshot=snap)
    snap.close()


class DeafDecoder(torch.nn.Module):
    """The must-fail fixture: an nn~-style export whose sound ignores the latent (noise shaped by
    nothing ciel sends). The walk and the jump cannot be heard through it."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("decode_params", torch.tensor([8, 512, 1, 1]))
        self.sr = 44100

    @torch.jit.export
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return 0.1 * torch.randn(z.shape[0], 1, z.shape[2] * 512)


def deaf_export(folder: Path) -> Path:
    path = folder / "deaf.ts"
    torch.jit.script(DeafDecoder()).save(str(path))
    return path


def values(**named: float) -> np.ndarray:
    v = REGISTRY.defaults()
    v[REGISTRY.slot("audio/glide")] = 0.0
    for name, x in named.items():
        v[REGISTRY.slot(name.replace("__", "/"))] = x
    return v


def jump_and_walk(path: Path) -> tuple[bool, float, float]:
    """(the second before a jump is the same with and without it, what the jump changes in the
    second after it in dB of the sound, what a fast walk changes against a held latent in dB).
    Each pair of renders has one seed, so anything that differs is what the control did."""
    model = load_audio_model(path, trust=True)

    def render(jump: bool, hold: float) -> tuple[np.ndarray, np.ndarray]:
        synth = AudioSynth(model, RATE, seed=3)
        v = values(audio__hold=hold, audio__walk__speed=1.0)
        before = synth.process(v, RATE)
        if jump:
            v = v.copy()
            v[REGISTRY.slot("audio/jump")] += 1
        return before, synth.process(v, RATE)

    def change_db(a: np.ndarray, b: np.ndarray) -> float:
        return 10 * np.log10(max(float(np.mean((a - b) ** 2)), 1e-30) / float(np.mean(b ** 2)))

    (a0, b0), (a1, b1) = render(False, 0.0), render(True, 0.0)
    _, held = render(False, 1.0)
    return bool(np.array_equal(a0, a1)), change_db(b1, b0), change_db(b0, held)


def test_a_rave_export_is_refused_without_trust_in_one_line(rave_export: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError) as info:
        load_audio_model(rave_export)
    assert str(rave_export) in str(info.value) and "trust" in str(info.value) and "\n" not in str(info.value)
    patch = tmp_path / "rave.toml"
    patch.write_text(f'[audio]\nmodel = "{rave_export}"\n')
    with pytest.raises(PatchError) as perr:
        patch_from_text(patch.read_text(), patch, check_models=True)
    assert "audio.model" in str(perr.value) and "--trust-model" in str(perr.value)
    line = one_line_error(ciel("render", str(tmp_path / "out"), "--seconds", "0.5", "--no-frames",
                               "--model", str(rave_export)))
    assert "--trust-model" in line and str(rave_export) in line


def test_a_rave_export_plays_audible_under_the_ceiling_and_the_walk_and_jump_reach_it(rave_export: Path,
                                                                                       tmp_path: Path) -> None:
    model = load_audio_model(rave_export, trust=True)
    assert (model.sample_rate, model.hop, model.latent_dim) == (44100, 512, 8)
    sound = AudioSynth(model, RATE, seed=1).process(values(), 4 * RATE)                 # (4 s, 2)
    assert np.isfinite(sound).all() and np.abs(sound).max() <= CEILING
    assert level_db(sound[RATE:, 0]) > -40 and level_db(sound[RATE:, 1]) > -40
    again = AudioSynth(model, RATE, seed=1).process(values(), 4 * RATE)
    assert np.array_equal(sound, again)                                                  # same seed, same sound
    same_before, jump_db, walk_db = jump_and_walk(rave_export)
    assert same_before
    assert jump_db > -20.0, jump_db        # measured -9.7 dB: a jump is heard at once
    assert walk_db > -40.0, walk_db        # measured -24.7 dB against a held latent, after 2 s
    # the must-fail fixture: a decoder deaf to the latent passes neither check
    _, deaf_jump, deaf_walk = jump_and_walk(deaf_export(tmp_path))
    assert deaf_jump <= -20.0 and deaf_walk <= -40.0


def test_a_rave_export_renders_from_the_command_line(rave_export: Path, tmp_path: Path) -> None:
    proc = ciel("render", str(tmp_path / "out"), "--seconds", "2", "--no-frames", "--model", str(rave_export),
                "--trust-model")
    assert proc.returncode == 0, proc.stderr
    assert "trusted, it runs code from the file" in proc.stderr
    sound, rate = sf.read(tmp_path / "out" / "audio.wav")
    assert rate == RATE and sound.shape == (2 * RATE, 2)
    assert level_db(sound[RATE // 2:, 0]) > -40 and np.abs(sound).max() <= CEILING


def test_a_rave_export_plays_through_jack(jackd: parts.JackServer, store: ParamStore, rave_export: Path,
                                          tmp_path: Path) -> None:
    """At the JACK ports, as a patchbay hears it: audible, under the ceiling, and a jump sent to
    the store reaches the output."""
    if shutil.which("jack_rec") is None:
        missing("jack_rec (jackd2's example clients) not installed")
    rec = tmp_path / "record.wav"
    audio = AudioProcess(AudioConfig(model=str(rave_export), trust=True, record=str(rec), seed=2), store.snapshot.name)
    try:
        audio.start()
        assert wait_for(lambda: audio.status().callbacks > 100, 60), audio.status()
        assert wait_for(lambda: audio.status().peak_db > -60, 10)
        store.set("audio/glide", 0.0)
        seq = store.snapshot.sequence
        store.trigger("audio/jump")
        assert wait_for(lambda: audio.marker()[0] >= seq and audio.marker()[2] > 0, 10), "jump never reached the output"
        port = tmp_path / "port.wav"
        subprocess.run(["jack_rec", "-f", str(port), "-d", "3", "-b", "24", "ciel:out_1", "ciel:out_2"],
                       capture_output=True, timeout=30, check=True)
        time.sleep(0.2)
    finally:
        audio.stop()
    heard, rate = sf.read(port)
    assert rate == RATE and len(heard) >= 2 * RATE
    assert level_db(heard[:, 0]) > -40 and level_db(heard[:, 1]) > -40
    assert np.abs(heard).max() <= CEILING
    recorded, _ = sf.read(rec)
    assert level_db(recorded[RATE // 2:, 0]) > -40


def test_an_untrusted_or_broken_torchscript_file_is_one_line_naming_it(jackd: parts.JackServer,
                                                                       store: ParamStore, tmp_path: Path,
                                                                       rave_export: Path) -> None:
    line = start_error(store, ModelError, model=str(rave_export))
    assert str(rave_export) in line and "trust" in line
    broken = tmp_path / "broken.ts"
    broken.write_bytes(b"not a zip archive at all")
    with pytest.raises(ModelError) as info:
        load_audio_model(broken, trust=True)
    assert str(broken) in str(info.value) and "\n" not in str(info.value)
    # a TorchScript module without the methods of an export
    plain = tmp_path / "plain.ts"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(plain))
    with pytest.raises(ModelError, match="decode"):
        load_audio_model(plain, trust=True)
    # a file that is neither a model folder nor TorchScript (the weights file instead of its folder)
    weights = Path(__file__).resolve().parents[1] / "models" / "audio-default" / "model.safetensors"
    with pytest.raises(ModelError, match="expected a model folder") as wrong:
        load_audio_model(weights)
    assert str(weights) in str(wrong.value) and "trust" not in str(wrong.value)


def test_ciels_own_nn_tilde_export_plays_as_its_model_does(tmp_path: Path) -> None:
    """`ciel export --nn-tilde` out, the same file back in as a TorchScript model: its decode is
    ciel's decoder (knob coordinates in, the PCA inside the export)."""
    from engine import cli

    folder = Path(__file__).resolve().parents[1] / "models" / "audio-default"
    out = tmp_path / "ciel.ts"
    assert cli.main(["export", "--nn-tilde", str(folder), str(out)]) == 0
    own, scripted = load_audio_model(folder), load_audio_model(out, trust=True)
    assert scripted.script is not None and scripted.script.kind == "nn~"
    assert (scripted.sample_rate, scripted.hop, scripted.latent_dim) == (own.sample_rate, own.hop, own.latent_dim)
    knobs = np.random.default_rng(2).standard_normal((40, own.latent_dim)).astype(np.float32)   # (T, D)
    ours = own.decode(own.knobs_to_latent(knobs).T)                                             # (T·hop,)
    theirs = scripted.decode(knobs.T)
    assert np.abs(ours - theirs).max() < 1e-4 and np.abs(ours).max() > 1e-3
