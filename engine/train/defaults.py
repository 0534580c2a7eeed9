"""`make models`: rebuild models/audio-default and models/image-default from generated material.

Nothing is downloaded. The material is made from Debian packages (espeak-ng voices, photographic
wallpapers; `make setup` installs them), written as a fake phone archive, ingested with
`ciel ingest` and trained with `ciel train audio|image` — the commands an artist uses:

- sound: voice notes of 5-60 s — people talking to the phone or to each other in ten languages
  (espeak-ng), kitchens, streets, ringing phones, in reverberant rooms, recorded through a phone's
  band-limited microphone and gain control; saved as WAV, AAC in .m4a and, like old phones,
  AMR-NB in .amr (8 kHz codec);
- photos: crops of photographic wallpapers (meadows, flowers, leaves, lakes, mountains, a forest
  path, rooms) made to look like a 2012 phone camera: 640x480, soft, noisy, vignetted, shifted in
  colour and exposure, some dark; JPEG at phone qualities, some with an EXIF orientation.

engine/train/archive.py makes the archive; the procedural *babble* and night *skies* below are the
fallback when those packages are missing (`make_archive(..., fallback=True)`) and quick test material.

    python -m engine.train.defaults [--minutes 15] [--audio-minutes 30] [--photos 100] [--out models]

Both trainings run side by side, one thread each, so the wall time is about `--minutes`. The
new models replace the folders in `--out` only after they load with the engine's own loaders.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from .. import PACKAGE
from ..mediaio import encode_audio

SR = 16000
# Formants (F1, F2, F3) in Hz of a few vowels, roughly an adult voice.
VOWELS = np.array([[730, 1090, 2440], [530, 1840, 2480], [270, 2290, 3010], [570, 840, 2410],
                   [300, 870, 2240], [660, 1720, 2410], [490, 1350, 1690], [440, 1020, 2240]], dtype=np.float64)


# --- sound ------------------------------------------------------------------------------------

def _smooth_steps(values: np.ndarray, lengths: np.ndarray, glide: int) -> np.ndarray:
    """Piecewise-constant `values` held for `lengths` samples each, smoothed by a `glide`-sample ramp."""
    x = np.repeat(values, lengths, axis=0)
    if glide > 1:
        kernel = np.ones(glide) / glide
        pad = np.concatenate([np.repeat(x[:1], glide, axis=0), x, np.repeat(x[-1:], glide, axis=0)])
        if x.ndim == 1:
            x = np.convolve(pad, kernel, mode="same")[glide:-glide]
        else:
            x = np.stack([np.convolve(pad[:, i], kernel, mode="same")[glide:-glide] for i in range(x.shape[1])], 1)
    return x


def babble(seconds: float, rng: np.random.Generator, sr: int = SR) -> np.ndarray:
    """Speech-like babble as float32 mono at `sr`: phrases of syllables with pauses (see module doc)."""
    n = int(seconds * sr)
    hop, nfft = 128, 1024
    frames = n // hop + 2
    # phrase structure: syllables of 120-300 ms, phrases of 4-14 syllables, pauses of 0.2-1.2 s
    syl_v, syl_len, voiced, loud = [], [], [], []
    total = 0
    while total < frames:
        for _ in range(rng.integers(4, 15)):
            length = int(rng.uniform(0.12, 0.3) * sr / hop)
            syl_v.append(VOWELS[rng.integers(len(VOWELS))] * rng.uniform(0.9, 1.12))
            syl_len.append(length)
            voiced.append(1.0)
            loud.append(rng.uniform(0.5, 1.0))
            total += length
        pause = int(rng.uniform(0.2, 1.2) * sr / hop)
        syl_v.append(VOWELS[rng.integers(len(VOWELS))])
        syl_len.append(pause)
        voiced.append(0.0)
        loud.append(0.0)
        total += pause
    lengths = np.array(syl_len)
    formants = _smooth_steps(np.array(syl_v), lengths, 6)[:frames]          # (frames, 3) Hz
    gate = _smooth_steps(np.array(voiced), lengths, 3)[:frames]
    # syllable envelope: rise and fall inside each syllable
    env = np.concatenate([np.sin(np.linspace(0, np.pi, L)) ** 0.6 * a for L, a in zip(lengths, loud)])[:frames]
    env = env * gate
    # pitch: speaker base, phrase declination, slow wobble
    base = rng.uniform(95, 230)
    t = np.arange(n) / sr
    wobble = np.interp(t, np.linspace(0, seconds, max(2, int(seconds * 3))), rng.normal(0, 0.08, max(2, int(seconds * 3))))
    f0 = base * np.exp(wobble) * (1.0 - 0.15 * ((t * 0.4) % 1.0))
    phase = np.cumsum(f0 / sr)
    pulses = np.diff(np.floor(phase), prepend=0.0)                           # one impulse per period
    excitation = np.convolve(pulses, np.exp(-np.arange(40) / 6.0), mode="same")  # soft glottal pulse
    excitation += 0.02 * rng.standard_normal(n)                              # breath
    # consonants: short noise bursts at some syllable starts
    bursts = np.zeros(frames)
    starts = np.cumsum(np.concatenate([[0], lengths[:-1]]))
    for s, v in zip(starts, voiced):
        if v and s < frames and rng.random() < 0.5:
            bursts[s: s + rng.integers(2, 8)] = rng.uniform(0.3, 1.0)
    # STFT filtering: formant envelope per frame, applied to the excitation
    win = np.hanning(nfft).astype(np.float64)
    padded = np.concatenate([np.zeros(nfft), excitation, np.zeros(nfft + hop * 4)])
    idx = np.arange(nfft)[None, :] + hop * np.arange(frames)[:, None]
    spec = np.fft.rfft(padded[idx] * win, axis=1)
    freqs = np.fft.rfftfreq(nfft, 1 / sr)[None, :]
    shape = np.zeros((frames, freqs.shape[1]))
    for k, bw in enumerate((90.0, 110.0, 160.0)):
        shape += (1.0 / (k + 1)) / (1.0 + ((freqs - formants[:, k:k + 1]) / bw) ** 2)
    voiced_spec = spec * shape * env[:, None]
    noise = np.fft.rfft(rng.standard_normal((frames, nfft)) * win, axis=1)
    hiss = noise * (bursts[:, None] * np.clip((freqs - 1800) / 2500, 0, 1)) * 0.15
    out = np.zeros(padded.size)
    frames_time = np.fft.irfft(voiced_spec + hiss, n=nfft, axis=1) * win
    np.add.at(out, idx.ravel(), frames_time.ravel())
    y = out[nfft: nfft + n]
    # small room: exponentially decaying noise reverb, mixed in
    rt = rng.uniform(0.15, 0.5)
    ir_len = int(rt * sr)
    ir = rng.standard_normal(ir_len) * np.exp(-6.9 * np.arange(ir_len) / ir_len)
    ir[0] = 0.0
    y = y + rng.uniform(0.05, 0.2) * _fftconvolve(y, ir / np.sqrt(np.sum(ir ** 2)))[:n]
    y /= np.max(np.abs(y)) + 1e-9
    # room noise (pinkish) and mains hum, then the phone band
    pink = _fftconvolve(rng.standard_normal(n), np.exp(-np.arange(200) / 40.0))[:n]
    y = y + rng.uniform(0.003, 0.02) * pink / (np.std(pink) + 1e-9)
    y = y + rng.uniform(0.0, 0.01) * np.sin(2 * np.pi * rng.choice([50.0, 60.0]) * t)
    y = _bandpass(y, 300.0, 3400.0, sr)
    y = np.tanh(2.0 * y / (np.max(np.abs(y)) + 1e-9)) * rng.uniform(0.2, 0.8)  # phone AGC, a little clipped
    return y.astype(np.float32)


def _fftconvolve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    n = a.size + b.size - 1
    size = 1 << (n - 1).bit_length()
    return np.fft.irfft(np.fft.rfft(a, size) * np.fft.rfft(b, size), size)[:n]


def _bandpass(x: np.ndarray, lo: float, hi: float, sr: int) -> np.ndarray:
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(x.size, 1 / sr)
    gain = 1.0 / (1.0 + (lo / np.maximum(f, 1.0)) ** 4) / (1.0 + (f / hi) ** 8)
    return np.fft.irfft(spec * gain, x.size)


def write_sound(path: Path, audio: np.ndarray, sr: int = SR) -> Path:
    """Write mono float audio as WAV (16-bit), .m4a (AAC) or .amr (AMR-NB at 8 kHz), by suffix."""
    suffix = path.suffix.lower()
    if suffix == ".wav":
        import soundfile as sf

        sf.write(str(path), audio, sr, subtype="PCM_16")
        return path
    codec, rate, fmt, bit_rate = {".m4a": ("aac", sr, "mp4", None),
                                  ".amr": ("libopencore_amrnb", 8000, "amr", 12200)}[suffix]
    path.write_bytes(encode_audio(np.asarray(audio)[None], sr, fmt, codec, out_rate=rate, bit_rate=bit_rate))  # (1, N)
    return path


# --- photos -----------------------------------------------------------------------------------

def _fractal(h: int, w: int, rng: np.random.Generator, octaves: int = 7, persistence: float = 0.55) -> np.ndarray:
    """Fractal value noise in [0, 1], (h, w): octaves of bicubically enlarged random grids."""
    acc = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        cells = 2 ** (o + 1)
        grid = rng.random((cells + 1, int(cells * w / h) + 2)).astype(np.float32)
        layer = np.asarray(Image.fromarray(grid, mode="F").resize((w, h), Image.Resampling.BICUBIC), np.float32)
        acc += amp * layer
        total += amp
        amp *= persistence
    acc /= total
    return (acc - acc.min()) / (acc.max() - acc.min() + 1e-9)


def _blur(a: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of a 2-D array (edges wrap; fine for sparse stars)."""
    r = max(1, int(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    for axis in (0, 1):
        a = sum(w * np.roll(a, off, axis=axis) for off, w in zip(range(-r, r + 1), k))
    return a


def sky_photo(rng: np.random.Generator, width: int = 640, height: int = 480) -> Image.Image:
    """One procedural night-sky photo (RGB) as an old phone camera would take it."""
    h, w = height, width
    hue = rng.random(3)
    palette = np.stack([np.array([0.02, 0.02, 0.05]),
                        0.3 + 0.7 * np.array([hue[0], 0.3 * hue[1], 1 - hue[0]]),
                        0.4 + 0.6 * np.array([1 - hue[2], hue[1], 0.5 * hue[2]]),
                        np.array([1.0, 0.95, 0.9])])
    cloud = _fractal(h, w, rng) ** rng.uniform(1.5, 3.0)
    wisps = _fractal(h, w, rng, octaves=8, persistence=0.7)
    density = np.clip(cloud * rng.uniform(0.8, 1.6) * (0.6 + 0.6 * wisps), 0, 1)
    pos = density * (len(palette) - 1)
    lo = np.clip(pos.astype(int), 0, len(palette) - 2)
    frac = (pos - lo)[..., None]
    img = palette[lo] * (1 - frac) + palette[lo + 1] * frac
    # stars: power-law brightness, a few with glow
    stars = np.zeros((h, w), np.float32)
    count = int(rng.uniform(150, 1500))
    ys, xs = rng.integers(0, h, count), rng.integers(0, w, count)
    stars[ys, xs] = rng.pareto(2.5, count).astype(np.float32) * 0.4 + 0.2
    glow = _blur(stars, rng.uniform(0.6, 1.6))
    img = img + (stars + 3.0 * glow)[..., None] * np.array([1.0, 0.97, 0.92])
    # a dark horizon sometimes: roofs or trees as a random-walk silhouette
    if rng.random() < 0.5:
        level = h * rng.uniform(0.7, 0.92)
        line = level + np.cumsum(rng.normal(0, rng.uniform(0.5, 3.0), w))
        mask = np.arange(h)[:, None] > line[None, :]
        img = np.where(mask[..., None], img * 0.05 + 0.01, img)
    # vignette, sensor grain and a colour cast
    yy, xx = np.mgrid[0:h, 0:w]
    vignette = 1.0 - 0.5 * (((yy - h / 2) / h) ** 2 + ((xx - w / 2) / w) ** 2)
    img = img * vignette[..., None] * rng.uniform(0.8, 1.2, 3)
    img = img + rng.normal(0, rng.uniform(0.02, 0.06), img.shape)
    return Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8))


def write_photo(path: Path, img: Image.Image, rng: np.random.Generator) -> Path:
    """Save as a JPEG at a phone quality; a quarter are stored sideways with an EXIF orientation."""
    exif = Image.Exif()
    if rng.random() < 0.25:
        img = img.transpose(Image.Transpose.ROTATE_90)   # stored sideways...
        exif[0x0112] = 6                                  # ...and tagged "rotate 90° clockwise to view"
    img.save(path, format="JPEG", quality=int(rng.integers(55, 90)), exif=exif.tobytes())
    return path


def make_archive(folder: Path, audio_minutes: float, photos: int, seed: int = 0, fallback: bool = False) -> Path:
    """A fake phone archive in `folder`: voice notes (.wav/.m4a/.amr) and photos (.jpg) in nested folders.

    Made from espeak-ng and Debian wallpaper packages by engine/train/archive.py (see there);
    without those packages it raises MissingPackages naming them, unless `fallback`, where the
    notes are babble and the photos procedural skies."""
    from .archive import make_archive as _make_archive

    return _make_archive(Path(folder), audio_minutes, photos, seed, fallback=fallback)


# --- the rebuild ------------------------------------------------------------------------------

def _train_cmd(kind: str, dataset: Path, run: Path, minutes: float, steps: int, threads: int,
               extra: list[str]) -> list[str]:
    budget = ["--steps", str(steps), "--minutes", "0"] if steps else ["--minutes", str(minutes)]
    return [sys.executable, "-m", f"{PACKAGE}.cli", "train", kind, str(dataset), "-o", str(run), *budget,
            "--threads", str(threads), *extra]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engine.train.defaults", description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=15.0, help="training budget of each model (they run side by side)")
    ap.add_argument("--steps", type=int, default=0,
                    help="a step budget instead of minutes (the same model on any machine, however busy)")
    ap.add_argument("--audio-minutes", type=float, default=30.0, help="minutes of voice notes to generate")
    ap.add_argument("--photos", type=int, default=100, help="photos to generate")
    ap.add_argument("--out", type=Path, default=Path("models"), help="where audio-default/ and image-default/ go")
    ap.add_argument("--work", type=Path, help="keep the archive, dataset and runs here (default: a temporary folder)")
    ap.add_argument("--previews", type=Path, help="also copy the final previews here (e.g. docs/)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", choices=("audio", "image"), help="rebuild only this model")
    args = ap.parse_args(argv)

    from ..audio.model import load_audio_model
    from ..visual.model import load_image_model

    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="ciel-models-")
    work = args.work or Path(tmp.name)  # type: ignore[union-attr]
    try:
        t0 = time.monotonic()
        archive, dataset = work / "archive", work / "dataset"
        print(f"generating {args.audio_minutes:g} min of voice notes and {args.photos} photos in {archive}", flush=True)
        if not (work / "archive.complete").exists():   # a kept --work folder is reused
            shutil.rmtree(archive, ignore_errors=True)
            make_archive(archive, args.audio_minutes, args.photos, args.seed)
            (work / "archive.complete").touch()
        print(f"  {time.monotonic() - t0:.0f} s", flush=True)
        subprocess.run([sys.executable, "-m", f"{PACKAGE}.cli", "ingest", str(archive), "-o", str(dataset), "-q"], check=True)
        runs = {kind: work / f"run-{kind}" for kind in ("audio", "image") if args.only in (None, kind)}
        threads = max(1, (os.cpu_count() or 2) // len(runs))   # the cores shared by the runs side by side
        for run in runs.values():
            shutil.rmtree(run, ignore_errors=True)
        procs = {kind: subprocess.Popen(_train_cmd(kind, dataset, runs[kind], args.minutes, args.steps, threads,
                                                   ["--seed", str(args.seed)]))
                 for kind in runs}
        failed = [kind for kind, p in procs.items() if p.wait() != 0]
        if failed:
            print(f"training failed: {failed}", file=sys.stderr)
            return 1
        if "audio" in runs:
            annotate_card(runs["audio"] / "model", AUDIO_MATERIAL.format(minutes=args.audio_minutes))
            load_audio_model(runs["audio"] / "model")   # raises ModelError if the export is unusable
        if "image" in runs:
            annotate_card(runs["image"] / "model", IMAGE_MATERIAL.format(photos=args.photos))
            load_image_model(runs["image"] / "model")
        for kind, name in (("audio", "audio-default"), ("image", "image-default")):
            if kind not in runs:
                continue
            dest = args.out / name
            staged = args.out / f".{name}.new"
            shutil.rmtree(staged, ignore_errors=True)
            shutil.copytree(runs[kind] / "model", staged)
            shutil.rmtree(dest, ignore_errors=True)
            os.replace(staged, dest)
            print(f"{dest} written", flush=True)
        if args.previews:
            copy_previews(runs, args.previews)
        print(f"done in {(time.monotonic() - t0) / 60:.1f} min", flush=True)
        return 0
    finally:
        if tmp is not None:
            tmp.cleanup()


AUDIO_MATERIAL = ("{minutes:g} minutes of voice notes generated by engine/train/archive.py from espeak-ng speech "
                  "(ten languages, many voices, pitches and speeds, short everyday sentences): monologues and "
                  "two-person conversations in reverberant rooms, kitchens (clinks, running water, kettles), "
                  "streets (traffic, passing cars, footsteps, horns, wind), ringtones, all through a phone's "
                  "handling noise, band-limiting and gain control, saved as WAV, AAC and AMR-NB; nothing downloaded")
IMAGE_MATERIAL = ("{photos} photos generated by engine/train/archive.py from photographic wallpapers of the Debian "
                  "packages mate-backgrounds, lomiri-wallpapers-16.04 and plasma-workspace-wallpapers (meadows, "
                  "flowers, leaves, lakes, mountains, a forest path, rooms): random crops, zooms, flips and tilts, "
                  "colour and exposure shifts, some dark, made to look like a 2012 phone camera (640x480, blur, "
                  "noise, vignetting, over-sharpening, phone-quality JPEG); nothing downloaded")


def annotate_card(folder: Path, material: str) -> None:
    """Add what the model was trained on, and how to rebuild it, to a model card."""
    from ..configio import atomic_write, dumps_toml, read_toml

    card = read_toml(folder / "card.toml")
    card["material"] = material
    if isinstance(card.get("dataset"), dict):
        card["dataset"]["name"] = "the generated archive of make models"
    card["rebuild"] = "make models (python -m engine.train.defaults)"
    atomic_write(folder / "card.toml", dumps_toml(card))


def copy_previews(runs: dict[str, Path], dest: Path) -> None:
    """The newest previews of each run as docs/training-*.png (and the sound previews as WAV beside them)."""
    dest.mkdir(parents=True, exist_ok=True)
    pv = {k: r / "previews" for k, r in runs.items()}
    newest = lambda folder, pattern: sorted(folder.glob(pattern))[-1]  # noqa: E731
    if "audio" in pv:
        shutil.copyfile(newest(pv["audio"], "audio-*[0-9].png"), dest / "training-audio-spectrograms.png")
        shutil.copyfile(pv["audio"] / "loss.png", dest / "training-audio-loss.png")
    if "image" not in pv:
        return
    for src, name in ((newest(pv["image"], "image-*.png"), "training-image-grid.png"),
                      (pv["image"] / "dataset.png", "training-image-dataset.png")):
        with Image.open(src) as img:  # half size: the docs stay light
            img.resize((img.width // 2, img.height // 2), Image.Resampling.LANCZOS).save(dest / name, optimize=True)
    shutil.copyfile(pv["image"] / "loss.png", dest / "training-image-loss.png")


if __name__ == "__main__":
    sys.exit(main())
