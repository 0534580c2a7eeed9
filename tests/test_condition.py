"""Conditioning by content: `ciel ingest` keeps each sound file's folder (or its label) as its
class, `ciel train audio --condition folder` trains a decoder on them, and `audio/class` selects
one live through the real synth.

The archive is generated here: `speech/` (glottal pulses through moving formants, in syllables)
and `kitchen/` (clanks: noise bursts with fast decays, ringing inharmonic partials, hiss). The
check listens the way the issue asks: the long-term log-mel spectrum of a render with
`audio/class` k is closer to the spectrum of its own folder than to the other folder's. The same
model with its class embedding switched off plays the same sound for both classes and must fail
the same check.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import tomllib
import torch

from engine import cli
from engine.audio.inference import NumpyStream
from engine.audio.model import AudioModel, load_audio_model
from engine.audio.quality import level_matched, mel_filterbank
from engine.audio.stream import AudioSynth
from engine.errors import ConfigError
from engine.learning import WeightMorph
from engine.train.ingest import IngestConfig, ingest, load_dataset, read_labels

SR = 16000
STEPS = 150          # training steps of the conditioned model (one thread; about 15 s)
FILES = 6            # files per folder
SECONDS = 4.0        # per file
ROOT = Path(__file__).resolve().parents[1]


# --- the generated archive ------------------------------------------------------------------------

VOWELS = np.array([[730, 1090, 2440], [530, 1840, 2480], [270, 2290, 3010], [570, 840, 2410],
                   [300, 870, 2240], [660, 1720, 2410]], dtype=np.float64)   # F1, F2, F3 (Hz)


def speech(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A voice: a glottal pulse train (f0 100-220 Hz, -12 dB per octave, vibrato and declination)
    through three formant resonances that glide between vowels, in syllables of 150-300 ms with
    short pauses between phrases. (n,) float32 at SR."""
    n = int(seconds * SR)
    t = np.arange(n) / SR
    f0 = rng.uniform(100, 220) * (1 + 0.03 * np.sin(2 * np.pi * 5.5 * t)) * (1 - 0.1 * (t % 1.5) / 1.5)   # (n,)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    # syllables: a vowel and a loudness each, a raised-sine envelope, a pause after some
    bounds, vowels, gains = [0], [], []
    while bounds[-1] < n:
        length = int(rng.uniform(0.15, 0.3) * SR)
        vowels.append(VOWELS[rng.integers(len(VOWELS))] * rng.uniform(0.92, 1.08))
        gains.append(rng.uniform(0.5, 1.0) if rng.random() > 0.15 else 0.0)
        bounds.append(bounds[-1] + length)
    idx = np.minimum(np.searchsorted(bounds, np.arange(n), side="right") - 1, len(vowels) - 1)          # (n,)
    frac = (np.arange(n) - np.asarray(bounds)[idx]) / (np.diff(bounds)[idx])
    env = np.asarray(gains)[idx] * np.sin(np.pi * frac) ** 0.7                                        # (n,)
    kernel = np.ones(400) / 400   # 25 ms: the formants glide from one vowel to the next
    formants = np.stack([np.convolve(np.asarray(vowels)[idx, k], kernel, mode="same") for k in range(3)])  # (3, n)
    out = np.zeros(n)
    for h in range(1, 40):
        f = h * f0
        shape = sum((1.0 / (k + 1)) / (1.0 + ((f - formants[k]) / (60.0 + 40.0 * k)) ** 2) for k in range(3))
        out += np.where(f < 0.45 * SR, shape / h, 0.0) * np.sin(h * phase)
    out = out * env + 0.003 * rng.standard_normal(n) * env           # a little breath
    return (0.3 * out / np.abs(out).max()).astype(np.float32)


def kitchen(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A kitchen: clanks 2-5 a second (a broadband noise burst decaying in 3-30 ms and
    metal ringing at inharmonic partials for 0.1-0.6 s) over hiss. (n,) float32 at SR."""
    n = int(seconds * SR)
    t = np.arange(n) / SR
    noise = rng.standard_normal(n)
    out = 0.02 * np.diff(noise, prepend=0.0)                            # hiss: first-difference high-pass
    at = 0.0
    while True:
        at += rng.exponential(1 / 3.5)
        start = int(at * SR)
        if start >= n:
            break
        dt = t[: n - start]
        burst = rng.standard_normal(n - start) * np.exp(-dt / rng.uniform(0.003, 0.03))
        base = rng.uniform(600, 2200)
        ring = sum(rng.uniform(0.2, 1.0) * np.sin(2 * np.pi * min(base * r, 7500) * dt + rng.uniform(0, 6.3))
                   * np.exp(-dt / rng.uniform(0.1, 0.6)) for r in (1.0, 2.76, 5.40, 8.93))
        out[start:] += rng.uniform(0.3, 1.0) * (burst + 0.4 * ring)
    return (0.3 * out / np.abs(out).max()).astype(np.float32)


def make_archive(folder: Path, seed: int = 5) -> Path:
    """ARCHIVE/speech/*.wav and ARCHIVE/kitchen/*.wav, FILES of SECONDS each."""
    rng = np.random.default_rng(seed)
    for name, make in (("speech", speech), ("kitchen", kitchen)):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(FILES):
            sf.write(folder / name / f"{name}-{i}.wav", make(SECONDS, rng), SR)
    return folder


# --- the check ------------------------------------------------------------------------------------

def spectrum(x: np.ndarray, rate: int, bands: int = 40) -> np.ndarray:
    """The long-term log-mel spectrum of x (n,): log of the mean mel power over 64 ms frames
    (16 ms hop), in dB, less its mean over the bands, so two sounds compare by the shape of their
    spectrum, not their level. (bands,)."""
    x = level_matched(x)
    n, hop = int(0.064 * rate), int(0.016 * rate)
    n_fft = 1 << (n - 1).bit_length()
    count = 1 + (len(x) - n) // hop
    idx = np.arange(n)[None, :] + hop * np.arange(count)[:, None]
    power = np.abs(np.fft.rfft(x[idx] * np.hanning(n), n_fft)) ** 2                  # (frames, n_fft/2+1)
    mel = (power @ mel_filterbank(rate, n_fft, bands).T).mean(axis=0)                  # (bands,)
    db = 10 * np.log10(mel + 1e-12)
    return db - db.mean()


def distance(a: np.ndarray, b: np.ndarray) -> float:
    """RMS difference of two spectra (dB)."""
    return float(np.sqrt(np.mean((a - b) ** 2)))


def folder_spectra(dataset: Path) -> dict[str, np.ndarray]:
    """Each class's spectrum, from the dataset's own clips of it (after ingest)."""
    data = load_dataset(dataset)
    assert data.clip_class is not None
    out = {}
    for k, name in enumerate(data.classes):
        clips = [np.asarray(data.audio[s:s + n], np.float64) / 32768 for (s, n), c in zip(data.index, data.clip_class)
                 if c == k]
        out[name] = spectrum(np.concatenate(clips), data.config.samplerate)
    return out


def render(model: AudioModel, audio_class: float, seconds: float = 4.0, voices: int = 3, seed: int = 2) -> np.ndarray:
    """The live walk with `audio/class` set, through AudioSynth with a cloud of `voices` (the pair
    and voices - 1 cloud voices, decoded as one batch), as ciel plays it: mono (n,) at the model
    rate, the first second (fade-in, loudness warm-up) left out. numpy's BLAS on one thread, as in
    the audio process (at these sizes a second thread only waits)."""
    from threadpoolctl import threadpool_limits

    from engine.params import REGISTRY

    v = REGISTRY.defaults()
    v[REGISTRY.slot("audio/class")] = audio_class
    v[REGISTRY.slot("audio/voices")] = voices
    with threadpool_limits(limits=1, user_api="blas"):
        synth = AudioSynth(model, model.sample_rate, seed=seed, voices=voices)
        synth.process(v, model.sample_rate)
        return synth.process(v, int(seconds * model.sample_rate)).mean(axis=1).astype(np.float64)


def class_distances(model: AudioModel, spectra: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """{class rendered: {folder: distance (dB)}} for every class of the model."""
    return {name: {folder: round(distance(spectrum(render(model, k), model.sample_rate), s), 2)
                   for folder, s in spectra.items()}
            for k, name in enumerate(model.class_names)}


def each_closer_to_its_own(dist: dict[str, dict[str, float]]) -> bool:
    """Is each class's render closer to its own folder than to every other folder?"""
    return all(row[own] < min(d for folder, d in row.items() if folder != own) for own, row in dist.items())


def without_classes(model: AudioModel) -> AudioModel:
    """The same model with its classes switched off: the class embedding's projection zeroed in
    the weights and in every learning snapshot, so `audio/class` changes nothing."""
    vae = type(model.vae)(model.cfg)
    vae.load_state_dict(model.vae.state_dict())
    vae.eval()
    snaps = tuple({k: v.clone() for k, v in s.items()} for s in model.snapshots)
    for state in [dict(vae.decoder.named_parameters())] + list(snaps):
        for key in ("cond.weight", "cond.bias"):
            with torch.no_grad():
                state[key].zero_()
    return dataclasses.replace(model, vae=vae, snapshots=snaps)


# --- the tests ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str, float]:
    """(dataset, model folder, what `ciel train` printed, training seconds) of a conditioned
    model trained on the generated two-folder archive."""
    tmp = tmp_path_factory.mktemp("condition")
    make_archive(tmp / "archive")
    report = ingest(tmp / "archive", tmp / "dataset", IngestConfig(images=False), progress=False)
    assert len(report.clips) == 2 * FILES, report.skipped
    config = tmp / "train.toml"
    config.write_text("window = 4096\nexport_clips = 16\npreview_seconds = 0.5\n\n"
                      "[run]\ncheckpoint_minutes = 0\nsnapshot_seconds = 0\nlog_seconds = 600\n")
    run = tmp / "run"
    t0 = time.monotonic()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = cli.main(["train", "audio", str(tmp / "dataset"), "-o", str(run), "--config", str(config),
                         "--condition", "folder", "--steps", str(STEPS), "--minutes", "0", "--batch", "4",
                         "--threads", "1", "--seed", "1"])
    assert code == 0, printed.getvalue()
    return tmp / "dataset", run / "model", printed.getvalue(), time.monotonic() - t0


def test_ingest_keeps_each_files_folder_as_its_class(trained: tuple[Path, Path, str, float]) -> None:
    data = load_dataset(trained[0])
    assert data.classes == ("kitchen", "speech")
    assert data.clip_class is not None and sorted(data.clip_class.tolist()) == [0] * FILES + [1] * FILES
    text = (trained[0] / "report.txt").read_text(encoding="utf-8")
    assert f"0 kitchen: {FILES} clips" in text and f"1 speech: {FILES} clips" in text


def test_the_card_lists_the_classes_and_ciel_prints_them(trained: tuple[Path, Path, str, float]) -> None:
    _, folder, printed, _ = trained
    card = tomllib.loads((folder / "card.toml").read_text(encoding="utf-8"))
    assert [(c["index"], c["name"], c["clips"]) for c in card["classes"]] == [(0, "kitchen", FILES), (1, "speech", FILES)]
    assert card["config"]["classes"] == 2 and card["training"]["condition"] == "folder"
    assert "audio/class 0: kitchen (6 clips" in printed and "audio/class 1: speech (6 clips" in printed
    model = load_audio_model(folder)
    assert model.class_names == ("kitchen", "speech") and model.classes == 2


def test_audio_class_plays_each_folder(trained: tuple[Path, Path, str, float]) -> None:
    """The must-show: a render with audio/class k is closer (log-mel spectrum) to folder k than
    to the other folder; with the classes switched off both classes sound the same and fail."""
    dataset, folder, _, seconds = trained
    spectra = folder_spectra(dataset)
    model = load_audio_model(folder)
    dist = class_distances(model, spectra)
    off = class_distances(without_classes(model), spectra)
    print(f"\ntrained {STEPS} steps in {seconds:.1f} s; distances (dB) rendered class -> folder: {dist}; "
          f"classes switched off: {off}; the folders apart: {distance(*spectra.values()):.2f}")
    assert each_closer_to_its_own(dist), dist
    assert not each_closer_to_its_own(off), off


def test_a_blend_and_the_learning_axis_move_the_classes(trained: tuple[Path, Path, str, float]) -> None:
    """A fraction of a class blends the embeddings (numpy stream = torch decoder); the learning
    axis moves the class weights with the rest (at 0 the untrained decoder: no class at all)."""
    model = load_audio_model(trained[1])
    dec = model.vae.decoder
    one = np.random.default_rng(0).standard_normal((1, model.latent_dim, 12)).astype(np.float32)
    z = torch.from_numpy(np.repeat(one, 3, axis=0))                                    # (3, D, 12): one latent
    classes = np.array([0.0, 0.3, 1.0])
    with torch.no_grad():
        ref = dec(z, None, torch.from_numpy(classes)).numpy()                        # (3, 1, 12·hop)
    got = NumpyStream(dec, 3)(z.numpy(), classes)
    assert np.abs(got - ref).max() < 1e-4
    assert not np.allclose(ref[0], ref[1], atol=1e-3) and not np.allclose(ref[1], ref[2], atol=1e-3)
    morph = WeightMorph(dec, model.snapshots)
    assert {"embed.weight", "cond.weight", "cond.bias"} <= set(morph.keys)
    morph.set(0.0)
    with torch.no_grad():
        untrained = dec(z, None, torch.from_numpy(classes)).numpy()
    assert np.allclose(untrained[0], untrained[2], atol=1e-6)    # the projection starts at zero
    morph.set(1.0)
    from engine.params import REGISTRY

    v = REGISTRY.defaults()
    v[REGISTRY.slot("audio/class")] = 0.5
    v[REGISTRY.slot("audio/learning")] = 0.5
    sound = AudioSynth(model, 48000, seed=1).process(v, 48000)
    assert np.isfinite(sound).all() and np.sqrt(np.mean(sound ** 2)) > 1e-3


def test_nn_tilde_takes_the_class_as_one_more_signal(trained: tuple[Path, Path, str, float], tmp_path: Path) -> None:
    model = load_audio_model(trained[1])
    out = tmp_path / "conditioned.ts"
    assert cli.main(["export", "--nn-tilde", str(trained[1]), str(out)]) == 0
    d, hop = model.latent_dim, model.hop
    assert torch.jit.load(str(out)).decode_params.tolist() == [d + 1, hop, 1, 1]
    frames = 64
    knobs = np.random.default_rng(2).standard_normal((1, d, frames)).astype(np.float32)
    for value in (0.0, 0.6):
        ts = torch.jit.load(str(out))   # a fresh stream for each class
        u = np.concatenate([knobs, np.full((1, 1, frames), value, np.float32)], axis=1)      # (1, D + 1, T)
        with torch.inference_mode():
            streamed = torch.cat([ts.decode(torch.from_numpy(u[..., i:i + 32])) for i in range(0, frames, 32)], -1)
        z = model.knobs_to_latent(knobs[0].T).T                                               # (D, T)
        assert np.abs(streamed[0, 0].numpy() - model.decode(z, value)).max() < 1e-4


def test_condition_folder_needs_classes_and_labels_give_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    archive = tmp_path / "loose"
    archive.mkdir()
    rng = np.random.default_rng(3)
    sf.write(archive / "a.wav", speech(1.5, rng), SR)
    sf.write(archive / "b.wav", kitchen(1.5, rng), SR)
    ingest(archive, tmp_path / "plain", IngestConfig(images=False), progress=False)
    plain = load_dataset(tmp_path / "plain")
    assert plain.classes == () and plain.clip_class is None and not (tmp_path / "plain" / "classes.json").exists()
    assert cli.main(["train", "audio", str(tmp_path / "plain"), "-o", str(tmp_path / "run"), "--condition", "folder",
                     "--steps", "1", "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "plain") in err and str(archive) in err and "--condition folder needs classes" in err
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\n# what each file is\na.wav,voice\nb.wav,dishes\nmissing.wav,voice\n")
    report = ingest(archive, tmp_path / "labelled", IngestConfig(images=False), progress=False, labels=labels)
    data = load_dataset(tmp_path / "labelled")
    assert data.classes == ("dishes", "voice") and data.clip_class is not None
    assert data.clip_class.tolist() == [1, 0]
    assert any("missing.wav" in w["note"] for w in report.warnings)
    labels.write_text("a.wav\n")
    with pytest.raises(ConfigError, match="line 1"):
        read_labels(labels)


def test_an_unconditioned_model_ignores_audio_class(tmp_path: Path) -> None:
    """Models without classes (the bundled default, whose card predates them) load and play the
    same bytes whatever audio/class says."""
    model = load_audio_model(ROOT / "models" / "audio-default")
    assert model.classes == 0 and model.class_names == () and "classes" not in model.card
    a, b = render(model, 0.0, seconds=1.0, voices=1), render(model, 1.0, seconds=1.0, voices=1)
    assert np.array_equal(a, b) and math.isfinite(float(a.sum()))
