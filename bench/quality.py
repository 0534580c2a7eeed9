"""What the models play, as a listener hears it and a viewer sees it: `python -m bench quality`.

    python -m bench quality [--model DIR] [--image-model DIR] [--dataset DIR] [--seconds 30]
                            [--out DIR] [--quick] [--no-image]

Sound keys (engine/audio/quality.py defines the measures; every walk runs through AudioSynth,
the navigation, decoder and safety stage `ciel run` plays, at the model's rate, both channels):
  walk_comb_db      energy on the harmonics of the latent frame rate (±3 Hz, up to 8 kHz) relative
                    to a flat spectrum, dB, 30 s of the default walk (the worse channel)
  walk_comb_db_max  the worst over walk speed {0.3, 4} × spread {0.5, 1, 2} × temperature
                    {0.5, 1, 1.5} × hold {off, on} × audio/learning {0.5, 1} (72 walks of 8 s)
  walk_comb_db_worst_settings   the settings of that worst walk
  recon_comb_db     the same measure on up to 8 dataset stretches of 10–30 s, encoded and decoded
                    offline (the decoder alone, mean)
  data_comb_db      on those same stretches of the dataset (mean), with data_comb_db_range [min, max]
  walk_fd, recon_fd, data_fd    Fréchet distance of log-mel frame statistics to the dataset
                    (walk, left channel; reconstructions: the recon_comb_db stretches encoded and
                    decoded offline; two halves of the dataset: the scale), level-matched
  walk_fd_by_learning   walk_fd at audio/learning 0, 0.5 and 1 (falls as the net learned)
  seam_click_ratio  click detector at the decode seams while audio/learning sweeps 0 → 1 → 0
                    over 20 s (about 1 = no click)
  stereo_correlation    correlation of the two channels of the default walk (audio/width 0.6)
  stream_rtf        time of one stereo frame through the numpy streaming decoder / its length
                    (one core), over 2,000 frames: p50 and p99 (stream_rtf_p99)
  synth_rtf         the same for a whole AudioSynth step (navigation, decoder, safety stage,
                    resampler to 48 kHz): what the audio process spends
Image keys come from engine/visual/quality.py (grid_db, data_grid_db, diversity_ratio,
colour_fd, data_colour_fd) on 64 generated images and 64 dataset photos.

Without --dataset the bench generates a small phone archive (engine/train/archive.py, seed 1:
other recordings and photos than the default models were trained on) and ingests it. --out DIR
writes walk.wav (10 s of the default walk), walk-spectrogram.png and images.png to look at.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.audio import realtime_rtf
from bench.common import machine_load, percentile

ROOT = Path(__file__).resolve().parents[1]


def dataset_audio(ds, seconds: float, rate: int) -> list[np.ndarray]:
    """Stretches of up to `seconds` of the dataset's sound (float64 in [-1, 1]), one per clip."""
    out = []
    for start, n in np.asarray(ds.index):
        take = min(int(n), int(seconds * rate))
        if take >= rate:
            out.append(np.asarray(ds.audio[start:start + take], np.float64) / 32768.0)
    return out


def make_dataset(folder: Path) -> Path:
    from engine.train.defaults import make_archive
    from engine.train.ingest import ingest

    archive = folder / "archive"
    make_archive(archive, 4.0, 64, seed=1)
    ingest(archive, folder / "dataset")
    return folder / "dataset"


def sound_keys(model_dir: Path, ds, seconds: float, quick: bool, out: Path | None) -> dict:
    from engine.audio import quality as q
    from engine.audio.inference import NumpyStream
    from engine.audio.model import load_audio_model
    model = load_audio_model(model_dir)
    rate, frame_rate = model.sample_rate, model.sample_rate / model.hop
    if ds.config.samplerate != rate:
        raise SystemExit(f"bench quality: the dataset is at {ds.config.samplerate} Hz, the model at {rate} Hz")
    res: dict = {"model": str(model_dir), "trained": model.trained}
    comb = lambda x: q.comb_db(x, rate, frame_rate)  # noqa: E731
    stats = lambda x: q.logmel_stats(q.level_matched(x), rate)  # noqa: E731

    clips = dataset_audio(ds, 30.0, rate)
    data = np.concatenate(clips)
    data_stats = stats(data)
    long = ([c for c in clips if len(c) >= 10 * rate] or clips)[:8]   # the same stretches for data and recon
    data_combs = [comb(c) for c in long]
    res["data_comb_db"] = round(float(np.mean(data_combs)), 2)
    res["data_comb_db_range"] = [round(min(data_combs), 2), round(max(data_combs), 2)]
    half = len(clips) // 2
    res["data_fd"] = round(q.frechet(stats(np.concatenate(clips[:half])), stats(np.concatenate(clips[half:]))), 2)

    walk = q.render_walk(model, seconds, seed=0)
    res["walk_comb_db"] = round(max(comb(walk[:, c]) for c in range(2)), 2)
    res["walk_fd"] = round(q.frechet(stats(walk[:, 0]), data_stats), 2)
    res["stereo_correlation"] = round(float(np.corrcoef(walk[:, 0], walk[:, 1])[0, 1]), 3)

    # reconstructions: the same stretches encoded and decoded offline (the decoder alone)
    with torch.inference_mode():
        recon = []
        for c in long:
            x = torch.from_numpy(c.astype(np.float32))[None, None]            # (1, 1, L)
            mu, _ = model.vae.encode(x)                                        # (1, D, T)
            recon.append(model.vae.decode(mu)[0, 0].numpy())
    res["recon_comb_db"] = round(float(np.mean([comb(r) for r in recon])), 2)
    res["recon_fd"] = round(q.frechet(stats(np.concatenate(recon)), data_stats), 2)

    # the grid: the worst comb anywhere the knobs go
    grid = list(itertools.product((0.3, 4.0), (0.5, 1.0, 2.0), (0.5, 1.0, 1.5), (0.0, 1.0), (0.5, 1.0)))
    if quick:
        grid = grid[::7]   # coprime with the grid's shape: every knob takes each of its values
    worst, worst_at = -np.inf, {}
    for i, (speed, spread, temp, hold, learn) in enumerate(grid):
        settings = {"audio/walk/speed": speed, "audio/walk/spread": spread, "audio/temperature": temp,
                    "audio/hold": hold, "audio/learning": learn}
        x = q.render_walk(model, 8.0, seed=i + 1, settings=settings, skip_s=2.0)
        c = max(comb(x[:, 0]), comb(x[:, 1]))
        if c > worst:
            worst, worst_at = c, settings
    res["walk_comb_db_max"] = round(float(worst), 2)
    res["walk_comb_db_worst_settings"] = worst_at
    res["walk_comb_db_max_walks"] = len(grid)

    if len(model.snapshots) >= 2:
        by_learning = {}
        for learn in (0.0, 0.5, 1.0):
            x = q.render_walk(model, min(seconds, 15.0), seed=3, settings={"audio/learning": learn})
            by_learning[str(learn)] = round(q.frechet(stats(x[:, 0]), data_stats), 2)
        res["walk_fd_by_learning"] = by_learning
    else:
        res["walk_fd_by_learning"] = None
        res["walk_fd_by_learning_reason"] = "the model holds no learning snapshots"

    # learning swept 0 -> 1 -> 0 over 20 s: clicks at the decode seams?
    if len(model.snapshots) >= 2:
        x, seams, frame = q.learning_sweep(model, 20.0)
        res["seam_click_ratio"] = round(q.seam_click_ratio(x, seams[int(frame_rate):], frame), 3)
    else:
        res["seam_click_ratio"] = None
        res["seam_click_ratio_reason"] = "the model holds no learning snapshots"

    # speed of the real-time path on one core
    torch.set_num_threads(1)
    stream = NumpyStream(model.vae.decoder, 2)
    z = np.random.default_rng(0).standard_normal((2, model.latent_dim, 1)).astype(np.float32)
    times = []
    for _ in range(2100):
        t0 = time.perf_counter()
        stream(z)
        times.append(time.perf_counter() - t0)
    rtf = np.array(times[100:]) * frame_rate
    res["stream_rtf"], res["stream_rtf_p99"] = percentile(rtf, 50), percentile(rtf, 99)
    synth_rtf, synth_rtf_p99 = realtime_rtf(model, 2000, 48000)
    res["synth_rtf"], res["synth_rtf_p99"] = round(synth_rtf, 4), round(synth_rtf_p99, 4)

    if out is not None:
        from engine.train import previews

        ten = walk[: 10 * rate]
        previews.save_wav(out / "walk.wav", ten[:, 0], rate)
        sheet = previews.spectrogram_sheet([ten[:, 0], ten[:, 1]], ["live walk, left (10 s)", "right"], rate)
        previews.save_png(out / "walk-spectrogram.png", sheet)
    return res


def image_keys(model_dir: Path, ds, out: Path | None) -> dict:
    from engine.visual.quality import image_quality

    photos = np.asarray(ds.images)
    if len(photos) < 8:
        return {"image": None, "image_reason": f"the dataset holds {len(photos)} photos; at least 8 are needed"}
    res = dict(image_quality(model_dir, photos, seed=0, images_png=out / "images.png" if out else None))
    if "images_png" in res:
        res["images_png"] = str(res["images_png"])
    return res


def main(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench quality")
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "audio-default")
    ap.add_argument("--image-model", type=Path, default=ROOT / "models" / "image-default")
    ap.add_argument("--dataset", type=Path, help="an ingested dataset (default: a generated phone archive)")
    ap.add_argument("--seconds", type=float, default=30.0, help="length of the default walk")
    ap.add_argument("--out", type=Path, help="write walk.wav, walk-spectrogram.png and images.png here")
    ap.add_argument("--quick", action="store_true", help="12 grid walks instead of 72")
    ap.add_argument("--no-image", action="store_true")
    ap.add_argument("--no-sound", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from engine.train.ingest import load_dataset

    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ciel-quality-") as tmp:
        ds = load_dataset(args.dataset or make_dataset(Path(tmp)))
        res: dict = {"dataset": str(args.dataset) if args.dataset else "generated phone archive (seed 1)"}
        if not args.no_sound:
            res.update(sound_keys(args.model, ds, args.seconds, args.quick, args.out))
        if not args.no_image:
            res.update(image_keys(args.image_model, ds, args.out))
    res["load"] = machine_load()
    print(res["load"], file=sys.stderr)
    return res
