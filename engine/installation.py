"""`ciel install` and `ciel bake`: the unattended installation and its baked scenes.

`ciel install [PATCH]` runs the engine like `ciel run --installation` with the installation patch
(patches/installation.toml: fullscreen, cursor hidden, a scene every 30 s, opening hours, the
program note), a rotating log that a full disk cannot stop, /healthz on 127.0.0.1 and systemd
notifications when started by systemd (docs/installation.md has the unit).

`ciel bake --count N OUT/` renders N scenes (a short sound and a square image each, from seeds)
into a folder that the scheduler (`schedule.baked`) and the broadcast page play on weak hardware.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
from pathlib import Path

from .errors import CielError
from .patch import PATCHES, Patch

log = logging.getLogger("ciel.installation")

INSTALLATION_PATCH = PATCHES / "installation.toml"


def register(sub: argparse._SubParsersAction) -> None:
    """Add `install` and `bake` to the `ciel` parser."""
    from .commands import add_model_args, add_patch_args, add_show_args

    inst = sub.add_parser("install", help="installation mode: fullscreen, a new scene every period, opening hours, /healthz")
    add_patch_args(inst)
    for action in inst._actions:  # same options as `ciel run`; only the default patch differs
        if action.dest == "patch":
            action.help = "patch file (default: patches/installation.toml)"
    inst.add_argument("--period", type=float, default=None, help="seconds between scenes (default: the patch's, 30)")
    inst.add_argument("--baked", default=None, help="play scenes from a folder written by `ciel bake`")
    inst.add_argument("--always-open", action="store_true", help="ignore the opening hours (setting up, testing)")
    inst.add_argument("--log-dir", default=None, help="folder of the rotating log (default: $XDG_STATE_HOME/ciel)")
    inst.add_argument("--health-port", type=int, default=None, help="port of /healthz on 127.0.0.1 (default 8090)")
    add_show_args(inst)
    inst.set_defaults(func=cmd_install)

    bake = sub.add_parser("bake", help="render N scenes (sound + image) into a folder for weak hardware and the web")
    bake.add_argument("out", type=Path, help="output folder (index.json, sNNNN.ogg/.wav/.png)")
    bake.add_argument("patch", nargs="?", type=Path, default=None, help="patch file (models and parameters; default: patches/installation.toml)")
    bake.add_argument("--count", type=int, default=100, help="number of scenes (default 100)")
    bake.add_argument("--seconds", type=float, default=None, help="length of each sound (default: the schedule period)")
    bake.add_argument("--seed", type=int, default=1, help="seed of the scene seeds (same seed, same scenes)")
    bake.add_argument("--no-wav", action="store_true", help="write Ogg Opus only (no WAV beside it)")
    add_model_args(bake)
    bake.set_defaults(func=cmd_bake)


def default_log_dir() -> Path:
    """$XDG_STATE_HOME/ciel, else ~/.local/state/ciel."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "ciel"


def installation_patch(args: argparse.Namespace) -> Patch:
    """The installation patch with command-line overrides; the schedule is checked at once, so a
    bad opening time, time zone or baked folder is one clear line before anything starts."""
    from .commands import patch_from_args
    from .control.scheduler import Scheduler, baked_folder
    from .params import ParamStore

    if args.patch is None:
        args.patch = INSTALLATION_PATCH
    patch = patch_from_args(args)
    sched = dataclasses.replace(patch.schedule, enabled=True)
    if args.period is not None:
        sched = dataclasses.replace(sched, period=args.period)
    if args.baked is not None:
        sched = dataclasses.replace(sched, baked=str(Path(args.baked).resolve()))
    elif sched.baked:  # relative to the patch file, made absolute for the engine
        sched = dataclasses.replace(sched, baked=str(baked_folder(sched.baked, patch.source)))
    if args.always_open:
        sched = dataclasses.replace(sched, hours=())
    web = patch.web if args.health_port is None else dataclasses.replace(patch.web, health_port=args.health_port)
    patch = patch.replace(schedule=sched, web=web)
    Scheduler(sched, ParamStore(), source=patch.source)  # validation only: raises PatchError/ConfigError
    return patch


def cmd_install(args: argparse.Namespace) -> int:
    from .commands import run_engine, setup_logging
    from .logfiles import setup_file_logging

    t0 = time.monotonic()
    setup_logging(args.log_level)
    patch = installation_patch(args)
    folder = Path(args.log_dir or patch.schedule.log_dir or default_log_dir()).expanduser()
    try:
        handler = setup_file_logging(folder, getattr(logging, args.log_level.upper()))
        log.info("log: %s", handler.baseFilename)
    except OSError as exc:  # no log folder must not stop an installation
        print(f"ciel: cannot create the log folder {folder}: {exc} (logging to stderr only)", file=sys.stderr)
    log.info("installation: patch %s, a scene every %g s%s", patch.source, patch.schedule.period,
             f", baked scenes from {patch.schedule.baked}" if patch.schedule.baked else "")
    return run_engine(patch, Path(patch.source), window=not args.headless, installation=True, seconds=args.seconds,
                      t0=t0, state_dir=folder)   # the log folder also keeps the last picture


def cmd_bake(args: argparse.Namespace) -> int:
    """Render scenes into a folder; resumes an interrupted bake with the same seed."""
    from .app import apply_patch_params
    from .audio.model import load_audio_model
    from .commands import patch_for_model
    from .params import ParamStore
    from .scenes import bake
    from .visual.model import load_image_model

    if args.count < 1:
        raise CielError(f"--count: expected at least 1, got {args.count}")
    patch = patch_for_model(args.patch or INSTALLATION_PATCH, args)
    seconds = args.seconds if args.seconds is not None else min(patch.schedule.period, 30.0)
    if not 0.5 <= seconds <= 600:
        raise CielError(f"--seconds: expected 0.5 to 600, got {seconds:g}")
    import torch

    torch.set_num_threads(patch.audio.threads)  # small per-frame ops: more threads only contend
    store = ParamStore()
    apply_patch_params(store, patch)
    audio_model = load_audio_model(patch.audio.model, patch.audio.trust)
    image_model = load_image_model(patch.visual.model)
    t0 = time.monotonic()

    from tqdm import tqdm

    bar = tqdm(total=args.count, desc="bake", unit="scene", disable=None, dynamic_ncols=True)

    def progress(done: int, total: int) -> None:
        bar.update(done - bar.n)

    try:
        index = bake(args.out, args.count, audio_model, image_model, store.snapshot_values(), seconds=seconds,
                     seed=args.seed, wav=not args.no_wav, progress=progress, name=patch.name,
                     voices=patch.audio.voices)
    finally:
        bar.close()
    print(f"ciel: baked {args.count} scenes of {seconds:g} s into {args.out} in {time.monotonic() - t0:.1f} s "
          f"({index.name}); play them with `ciel install --baked {args.out}`", file=sys.stderr)
    return 0
