"""`ciel ingest`, `ciel train audio|image` and `ciel export`.

    ciel ingest ARCHIVE/ -o DATASET/            a phone archive → dataset + report.txt (each sound
                                                clip's class: its top-level folder, or --labels FILE)
    ciel train audio DATASET/ -o RUN/ --minutes 15
    ciel train audio DATASET/ -o RUN/ --condition folder   a decoder conditioned on those classes
    ciel train image DATASET/ -o RUN/ --steps 2000
    ciel train image DATASET/ -o RUN/ --resume  continue from RUN's newest checkpoint
    ciel export RUN/ models/NAME/ [--step N] [--snapshots K]
                                                a checkpoint → model folder (weights + card, and K
                                                learning snapshots from step 0 up to it)
    torchrun --nproc_per_node 4 -m engine.cli train image DATASET/ -o RUN/   (DDP; gloo on CPU)

Settings come from the defaults, then `--config FILE.toml` (the same keys as RUN/train.toml's
[config] table), then the flags. On `--resume` the run's saved config is used and only the budget
and device flags apply.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

from ..configio import build, read_toml, to_table
from ..errors import ConfigError
from .ingest import IngestConfig, ingest, load_config, load_dataset

KINDS = ("audio", "image")


def register(sub: argparse._SubParsersAction) -> None:
    """Add `ingest`, `train` and `export` to the `ciel` parser."""
    p = sub.add_parser("ingest", help="turn a phone archive (voice notes, videos, photos) into a training dataset")
    p.add_argument("archive", type=Path, help="folder to walk (nested folders, any file names)")
    p.add_argument("-o", "--out", type=Path, required=True, help="dataset folder to write")
    p.add_argument("--config", type=Path, help="TOML file with ingest settings (keys of IngestConfig)")
    p.add_argument("--samplerate", type=int, help="audio sample rate in Hz (default 16000)")
    p.add_argument("--image-size", type=int, help="photo side in pixels (default 256)")
    p.add_argument("--no-audio", action="store_true", help="skip sound")
    p.add_argument("--no-images", action="store_true", help="skip photos")
    p.add_argument("--labels", type=Path, help="CSV of `path,label` rows giving each sound file its class "
                                               "(default: its top-level folder in the archive)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_ingest)

    t = sub.add_parser("train", help="train a small model on a dataset; stops at the budget whatever the loss")
    kinds = t.add_subparsers(dest="kind", metavar="KIND", required=True)
    for kind in KINDS:
        k = kinds.add_parser(kind, help=f"train the {kind} model")
        k.add_argument("dataset", type=Path, help="dataset folder made by `ciel ingest`")
        k.add_argument("-o", "--out", type=Path, help=f"run folder (default runs/{kind}-DATE-TIME)")
        k.add_argument("--config", type=Path, help="TOML file with training settings")
        k.add_argument("--minutes", type=float, help="time budget in minutes of training, in total (default 15)")
        k.add_argument("--steps", type=int, help="step budget, in total (0 = none)")
        k.add_argument("--checkpoint-minutes", type=float, help="minutes between checkpoints (default 2)")
        k.add_argument("--checkpoint-steps", type=int, help="steps between checkpoints (0 = by time only)")
        k.add_argument("--batch", type=int, help="batch size per process")
        k.add_argument("--device", choices=("cpu", "cuda", "auto"), help="where to train (default cpu)")
        k.add_argument("--threads", type=int, help="torch threads per process (0 = cores / processes)")
        k.add_argument("--seed", type=int, help="seed (default 0)")
        if kind == "image":
            k.add_argument("--resolution", type=int, choices=(64, 128, 256), help="image side (default 256)")
        else:
            k.add_argument("--condition", choices=("none", "folder"),
                           help="folder: condition the decoder on each clip's class (its folder or label at "
                                "ingest), played live by audio/class (default none)")
        k.add_argument("--resume", action="store_true", help="continue the run in -o from its newest checkpoint")
        k.add_argument("--export-to", type=Path, help="also export the final model to this folder (e.g. models/mine)")
        k.set_defaults(func=cmd_train)

    e = sub.add_parser("export", help="write a run's checkpoint as a model folder (weights + card), or an audio "
                                      "model as a TorchScript file for nn~ (--nn-tilde)")
    e.add_argument("run", type=Path, help="run folder of `ciel train` (with --nn-tilde also an audio model folder)")
    e.add_argument("out", type=Path, help="model folder to write, e.g. models/mine (with --nn-tilde: a .ts file)")
    e.add_argument("--nn-tilde", action="store_true", help="write the audio model for nn~ in Max / Pure Data: "
                   "forward, encode and a streaming decode (docs/training.md)")
    e.add_argument("--step", type=int, help="checkpoint step (default: the newest)")
    e.add_argument("--snapshots", type=int, help="learning snapshots to keep in the model, spread evenly from "
                                                 "step 0 to the exported step (default: the run's export_snapshots; 0 = none)")
    e.set_defaults(func=cmd_export)


def export_nn_tilde_file(args: argparse.Namespace) -> int:
    """`ciel export --nn-tilde SOURCE OUT.ts`: SOURCE is an audio model folder, or a run folder whose
    checkpoint is exported to a model first (in a temporary folder)."""
    import tempfile

    from ..audio.model import load_audio_model
    from ..audio.nntilde import export_nn_tilde
    from ..modelio import CARD
    from .loop import card_lines

    if args.out.suffix != ".ts":
        raise ConfigError("command line", "out", f"--nn-tilde writes a TorchScript file: expected a name ending in .ts, got {args.out}")
    with tempfile.TemporaryDirectory(prefix="ciel-nn-tilde-") as tmp:
        folder = args.run
        if not (args.run / CARD).exists():   # a run folder: its checkpoint as a model first
            folder = Path(tmp) / "model"
            cmd_export(argparse.Namespace(run=args.run, out=folder, step=args.step, snapshots=0, nn_tilde=False))
        model = load_audio_model(folder)
        out = export_nn_tilde(model, args.out)
    extra = " and its class as the last input signal" if model.classes else ""
    print(f"nn~ model written to {out}: methods forward, encode, decode; {model.latent_dim} knobs{extra}, "
          f"{model.hop} samples per frame at {model.sample_rate} Hz (set the host to this rate)")
    for line in card_lines(folder):
        print(line)
    return 0


# --- ingest -------------------------------------------------------------------------------------

def cmd_ingest(args: argparse.Namespace) -> int:
    cfg = load_config(args.config) if args.config else IngestConfig()
    overrides: dict[str, Any] = {}
    if args.samplerate is not None:
        overrides["samplerate"] = args.samplerate
    if args.image_size is not None:
        overrides["image_size"] = args.image_size
    if args.no_audio:
        overrides["audio"] = False
    if args.no_images:
        overrides["images"] = False
    cfg = build(IngestConfig, {**to_table(cfg), **overrides}, "command line")
    report = ingest(args.archive, args.out, cfg, progress=not args.quiet, labels=args.labels)
    s = report.summary(cfg.samplerate)
    print(f"{s['clips']} sound clips ({s['audio_seconds'] / 60:.1f} min), {s['photos']} photos, "
          f"{s['skipped']} files skipped, {s['warnings']} kept with a note; see {args.out / 'report.txt'}")
    for line in report.class_lines(cfg.samplerate)[1:]:
        print(line)
    return 0


# --- train and export ---------------------------------------------------------------------------

def config_types() -> dict[str, type]:
    from .audio import AudioTrainConfig
    from .image import ImageTrainConfig

    return {"audio": AudioTrainConfig, "image": ImageTrainConfig}


def make_task(kind: str, cfg: Any, dataset: Path, env: Any) -> Any:
    """Build the audio or image task on `env` from a dataset folder."""
    data = load_dataset(dataset)
    try:
        if kind == "audio":
            from .audio import AudioTask

            return AudioTask(cfg, data, env)
        from .image import ImageTask

        return ImageTask(cfg, data, env)
    except ValueError as exc:
        raise ConfigError("training config", "", str(exc)) from None


def resolve_config(kind: str, args: argparse.Namespace, base: Any | None) -> Any:
    """Defaults → --config file → flags (budget/device flags only when `base` comes from a resumed run)."""
    cls = config_types()[kind]
    table = to_table(base) if base is not None else {}
    if base is None and args.config:
        table = read_toml(args.config)
    run = dict(table.get("run", {}))
    for flag, key in (("minutes", "minutes"), ("steps", "steps"), ("checkpoint_minutes", "checkpoint_minutes"),
                      ("checkpoint_steps", "checkpoint_steps"), ("device", "device"), ("threads", "threads")):
        if getattr(args, flag, None) is not None:
            run[key] = getattr(args, flag)
    if base is None:
        if args.seed is not None:
            run["seed"] = args.seed
        if args.batch is not None:
            table["batch"] = args.batch
        if getattr(args, "resolution", None) is not None:
            table["resolution"] = args.resolution
        if getattr(args, "condition", None) is not None:
            table["condition"] = args.condition
    table["run"] = run
    source = str(args.config) if args.config and base is None else "command line"
    try:
        return build(cls, table, source)
    except ValueError as exc:  # a model config's own checks
        raise ConfigError(source, "model", str(exc)) from None


def cmd_train(args: argparse.Namespace) -> int:
    from .loop import read_run_config, setup_env, train

    kind = args.kind
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if args.out is None:
        if world > 1:
            raise ConfigError("command line", "--out", "give the run folder with -o under torchrun (every process needs the same one)")
        args.out = Path("runs") / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    base = None
    if args.resume:
        saved_kind, _saved_dataset, base = read_run_config(args.out, config_types())
        if saved_kind != kind:
            raise ConfigError(str(args.out / "train.toml"), "kind", f"this run trains {saved_kind}, not {kind}")
    cfg = resolve_config(kind, args, base)
    env = setup_env(cfg.run)
    task = make_task(kind, cfg, args.dataset, env)
    train(task, task.cfg, cfg.run, env, args.out, args.dataset, args.resume, args.export_to)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import torch

    from .loop import Env, card_lines, export_checkpoint, read_run_config

    if args.nn_tilde:
        return export_nn_tilde_file(args)

    kind, dataset, cfg = read_run_config(args.run, config_types())
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, device="cpu"))
    env = Env(device=torch.device("cpu"), seed=cfg.run.seed)
    task = make_task(kind, cfg, dataset, env)
    if args.snapshots is not None and not 0 <= args.snapshots <= 64:
        raise ConfigError("command line", "--snapshots", f"expected 0 to 64, got {args.snapshots}")
    out = export_checkpoint(task, task.cfg, args.run, dataset, args.out, env, args.step, args.snapshots)
    print(f"model written to {out}")
    for line in card_lines(out):
        print(line)
    return 0
