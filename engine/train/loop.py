"""The training loop shared by `ciel train audio` and `ciel train image`.

A *task* (engine/train/audio.py, engine/train/image.py) owns the networks, optimisers, the batch
sampling and one optimisation step; this module owns everything around it:

- the budget: `--steps` (total steps) and `--minutes` (total training time, summed over resumed
  sessions). Training stops at the budget whatever the loss — the "cracking";
- Ctrl-C (SIGINT) and SIGTERM: the step in progress finishes, then a checkpoint, previews and the
  model are written and the command exits 0 (a second Ctrl-C aborts at once; the last checkpoint
  stays whole);
- checkpoints: `RUN/checkpoints/step-NNNNNNNN.safetensors` holding every module's state, the
  optimiser state (tensors as tensors, the rest as JSON metadata), the step, the training time,
  the loss history and the resolved config; written atomically, the newest `keep_checkpoints`
  kept. `--resume` continues from the newest readable one;
- previews at every checkpoint: `RUN/previews/` (the task's WAV/PNG files and `loss.png`);
- learning snapshots: `RUN/snapshots/step-NNNNNNNN.safetensors`, the networks' weights (no
  optimiser) at step 0 and at doubling training times (`snapshot_seconds`, twice that, four
  times…) and at the end, all kept; the export puts `export_snapshots` of them, spread evenly,
  into the model for the live learning axis (engine/learning.py);
- export at the end into `RUN/model/` (and `--export-to`), via the task (safetensors + card.toml);
- torchrun: with WORLD_SIZE > 1 the process group is set up (gloo on CPU, NCCL on CUDA), the task
  wraps its networks in DistributedDataParallel, ranks agree on stopping with one all-reduce per
  step, and only rank 0 writes files.

Everything here runs on the training process's main thread.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save
from torch import nn

from .. import learning
from ..configio import atomic_write, build, dumps_toml, field, read_toml, to_table
from ..errors import ConfigError, DatasetError, ModelError, TrainError
from . import previews

CHECKPOINTS = "checkpoints"
SNAPSHOTS = "snapshots"
PREVIEWS = "previews"
TRAIN_TOML = "train.toml"
MODEL = "model"


@dataclass(frozen=True)
class RunConfig:
    """Budget, checkpoints and devices; shared by both kinds of training."""

    minutes: float = field(15.0, minimum=0.0, doc="Stop after this many minutes of training in total (0 = no limit).")
    steps: int = field(0, minimum=0, doc="Stop at this step (0 = no limit).")
    checkpoint_minutes: float = field(2.0, minimum=0.0, doc="Checkpoint and previews every this many minutes (0 = off).")
    checkpoint_steps: int = field(0, minimum=0, doc="...and/or every this many steps (0 = off).")
    keep_checkpoints: int = field(3, minimum=1, maximum=1000, doc="How many of the newest checkpoints to keep.")
    snapshot_seconds: float = field(5.0, minimum=0.0, doc="First learning snapshot after this many seconds of training, then at doubling "
                                           "times (0 = only the first and last step).")
    export_snapshots: int = field(8, minimum=0, maximum=64, doc="Learning snapshots the exported model keeps, spread evenly from step 0 "
                                       "to the last (0 = none).")
    history_every: int = field(10, minimum=1, doc="Steps averaged into one point of the loss history.")
    log_seconds: float = field(10.0, minimum=0.5, doc="Seconds between progress lines.")
    seed: int = field(0, minimum=0, doc="Seed of initialisation and batch sampling.")
    device: str = field("cpu", choices=("cpu", "cuda", "auto"), doc="Where to train ('auto': CUDA when there is one).")
    threads: int = field(0, minimum=0, maximum=1024, doc="Torch threads per process (0 = cores / processes).")


@dataclass(frozen=True)
class Env:
    """Where this process trains: device, torchrun rank and world size."""

    device: torch.device
    rank: int = 0
    world: int = 1
    seed: int = 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def generator(self, step: int, salt: int = 0) -> torch.Generator:
        """A CPU random generator for the batch of `step` on this rank: the same after a resume."""
        return torch.Generator().manual_seed((self.seed * 1_000_003 + step * 7919 + self.rank * 104_729 + salt) % (2**63))


@dataclass(frozen=True)
class Snapshot:
    """A network's weights at one point of its training: step, seconds trained, and the state
    dict of every module of the task (module name -> state dict, CPU tensors)."""

    step: int
    seconds: float
    states: dict[str, dict[str, torch.Tensor]]


class Task(Protocol):
    """What a kind of training provides to the loop. `export` gets the learning snapshots (oldest
    first, the last one the weights being exported) to store beside the final weights."""

    kind: str

    def modules(self) -> dict[str, nn.Module]: ...
    def optimizers(self) -> dict[str, torch.optim.Optimizer]: ...
    def train_step(self, step: int) -> dict[str, float]: ...
    def write_previews(self, folder: Path, step: int) -> list[Path]: ...
    def export(self, folder: Path, card_extra: dict[str, Any], snapshots: list[Snapshot]) -> Path: ...
    def describe(self) -> dict[str, Any]: ...


TaskFactory = Callable[[Any, Any, Env], Task]  # (config, dataset, env) -> Task


# --- processes and devices ----------------------------------------------------------------------

def setup_env(cfg: RunConfig) -> Env:
    """Pick the device, set threads, and join the torchrun process group when there is one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    want = cfg.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda":
        if not torch.cuda.is_available():
            raise TrainError("--device cuda: no CUDA device is available to this torch build (use --device cpu)")
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // max(1, local_world)))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    torch.manual_seed(cfg.seed)
    return Env(device=device, rank=rank, world=world, seed=cfg.seed)


def wrap_ddp(module: nn.Module, env: Env) -> nn.Module:
    """`module` wrapped in DistributedDataParallel under torchrun, unchanged otherwise."""
    if not env.distributed:
        return module
    ids = [env.device.index] if env.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids)


class StopSignal:
    """SIGINT/SIGTERM set a flag the loop reads after each step; a second SIGINT aborts at once."""

    def __init__(self) -> None:
        self.requested = ""
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopSignal:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        print(f"\n{self.requested}: finishing this step, then saving a checkpoint and the model "
              "(Ctrl-C again to abort; the last checkpoint stays whole)", file=sys.stderr, flush=True)


# --- checkpoints --------------------------------------------------------------------------------

def checkpoint_path(run: Path, step: int) -> Path:
    return run / CHECKPOINTS / f"step-{step:08d}.safetensors"


def save_checkpoint(path: Path, modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
                    meta: dict[str, Any]) -> None:
    """Modules and optimisers → one safetensors file (atomic); non-tensor state goes into metadata."""
    tensors: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            tensors[f"module/{name}/{key}"] = value.detach().to("cpu").clone().contiguous()
    optim_meta: dict[str, Any] = {}
    for name, opt in optimizers.items():
        sd = opt.state_dict()
        plain: dict[str, dict[str, Any]] = {}
        for pid, state in sd["state"].items():
            for key, value in state.items():
                if torch.is_tensor(value):
                    tensors[f"optim/{name}/{pid}/{key}"] = value.detach().to("cpu").clone().contiguous()
                else:
                    plain.setdefault(str(pid), {})[key] = value
        optim_meta[name] = {"param_groups": sd["param_groups"], "state": plain}
    metadata = {"ciel": json.dumps({**meta, "optimizers": optim_meta})}
    atomic_write(path, st_save(tensors, metadata=metadata))


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, meta) of a checkpoint file; TrainError naming the file when it is unreadable."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = json.loads((fh.metadata() or {})["ciel"])
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, KeyError, ValueError) as exc:
        raise TrainError(f"{path}: not a readable checkpoint ({exc})") from None
    return tensors, meta


def apply_checkpoint(tensors: dict[str, torch.Tensor], meta: dict[str, Any], modules: dict[str, nn.Module],
                     optimizers: dict[str, torch.optim.Optimizer], source: Path) -> None:
    """Load module and optimiser state from a checkpoint read by `read_checkpoint`."""
    for name, module in modules.items():
        prefix = f"module/{name}/"
        sd = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            module.load_state_dict(sd)
        except RuntimeError as exc:
            raise TrainError(f"{source}: {name} does not match this configuration "
                             f"({str(exc).splitlines()[0]})") from None
    for name, opt in optimizers.items():
        saved = meta.get("optimizers", {}).get(name)
        if saved is None:
            raise TrainError(f"{source}: optimizer state {name!r} missing")
        state: dict[int, dict[str, Any]] = {int(pid): dict(v) for pid, v in saved["state"].items()}
        prefix = f"optim/{name}/"
        for key, value in tensors.items():
            if key.startswith(prefix):
                pid, sub = key[len(prefix):].split("/", 1)
                state.setdefault(int(pid), {})[sub] = value
        opt.load_state_dict({"state": state, "param_groups": saved["param_groups"]})


def snapshot_path(run: Path, step: int) -> Path:
    return run / SNAPSHOTS / f"step-{step:08d}.safetensors"


def save_snapshot(run: Path, modules: dict[str, nn.Module], step: int, seconds: float) -> None:
    """The modules' weights (no optimiser) at `step` into RUN/snapshots/ (atomic)."""
    save_checkpoint(snapshot_path(run, step), modules, {}, {"kind": "snapshot", "step": step, "seconds": seconds})


def current_snapshot(modules: dict[str, nn.Module], step: int, seconds: float) -> Snapshot:
    return Snapshot(step, seconds, {name: {k: v.detach().to("cpu").clone() for k, v in m.state_dict().items()}
                                    for name, m in modules.items()})


def read_snapshots(run: Path, final: Snapshot, count: int) -> list[Snapshot]:
    """`count` snapshots of `run` spread evenly from step 0 to `final` (which is always the last
    one); snapshot files after `final.step` or unreadable are left out (with a warning)."""
    if count <= 0:
        return []
    found: list[Snapshot] = []
    for path in sorted((run / SNAPSHOTS).glob("step-*.safetensors")):
        try:
            tensors, meta = read_checkpoint(path)
        except TrainError as exc:
            print(f"warning: {exc}; left out of the learning axis", file=sys.stderr)
            continue
        step = int(meta.get("step", -1))
        if 0 <= step < final.step:
            states: dict[str, dict[str, torch.Tensor]] = {}
            for key, value in tensors.items():
                if key.startswith("module/"):
                    name, sub = key[len("module/"):].split("/", 1)
                    states.setdefault(name, {})[sub] = value
            found.append(Snapshot(step, float(meta.get("seconds", 0.0)), states))
    found.append(final)
    return [found[i] for i in learning.pick(len(found), count)]


def list_checkpoints(run: Path) -> list[Path]:
    """Checkpoint files of a run, oldest first."""
    return sorted((run / CHECKPOINTS).glob("step-*.safetensors"))


def latest_checkpoint(run: Path, step: int | None = None) -> tuple[Path, dict[str, torch.Tensor], dict[str, Any]]:
    """The newest readable checkpoint (or the one at `step`); TrainError when there is none."""
    found = list_checkpoints(run)
    if step is not None:
        found = [p for p in found if p == checkpoint_path(run, step)]
        if not found:
            raise TrainError(f"{checkpoint_path(run, step)}: no checkpoint at step {step}")
    problems = []
    for path in reversed(found):
        try:
            tensors, meta = read_checkpoint(path)
            return path, tensors, meta
        except TrainError as exc:
            problems.append(str(exc))
    raise TrainError(f"{run / CHECKPOINTS}: no readable checkpoint" + (f" ({'; '.join(problems)})" if problems else ""))


def remove_stale_temporaries(run: Path) -> None:
    """Delete half-written temporary files a killed process left (atomic_write's `.NAME.xxxx`)."""
    for folder in (run, run / CHECKPOINTS, run / SNAPSHOTS, run / PREVIEWS, run / MODEL):
        if folder.is_dir():
            for p in folder.glob(".*.*"):
                if p.is_file():
                    p.unlink(missing_ok=True)


# --- run folders --------------------------------------------------------------------------------

def write_run_config(run: Path, kind: str, dataset: Path, cfg: Any) -> None:
    """RUN/train.toml: the kind, the dataset and the resolved config (read back by --resume and export)."""
    table = {"kind": kind, "dataset": str(dataset.resolve()), "config": to_table(cfg)}
    atomic_write(run / TRAIN_TOML, dumps_toml(table))


def read_run_config(run: Path, config_types: dict[str, type]) -> tuple[str, Path, Any]:
    """(kind, dataset, config) from RUN/train.toml; TrainError/ConfigError naming the file."""
    path = run / TRAIN_TOML
    if not path.is_file():
        raise TrainError(f"{path}: not a training run (no {TRAIN_TOML}; start one with `ciel train audio|image DATASET -o {run}`)")
    table = read_toml(path)
    kind = table.get("kind")
    if kind not in config_types:
        raise ConfigError(str(path), "kind", f"expected one of {sorted(config_types)}, got {kind!r}")
    if not isinstance(table.get("dataset"), str):
        raise ConfigError(str(path), "dataset", "expected the dataset folder as a string")
    return kind, Path(table["dataset"]), build(config_types[kind], table.get("config", {}), str(path), prefix="config")


# --- the loop -----------------------------------------------------------------------------------

@dataclass
class Progress:
    """What the loop knows about the run so far (saved in every checkpoint)."""

    step: int = 0
    seconds: float = 0.0
    history: list[dict[str, float]] = dataclasses.field(default_factory=list)
    stopped: str = ""

    def last_losses(self) -> dict[str, float]:
        if not self.history:
            return {}
        return {k: round(v, 6) for k, v in self.history[-1].items() if k not in ("step", "time")}


def train(task: Task, cfg: Any, run_cfg: RunConfig, env: Env, run: Path, dataset: Path, resume: bool,
          export_to: Path | None = None) -> Progress:
    """Train `task` until the budget or a stop signal; checkpoint, preview and export on the way.

    `cfg` is the task's whole resolved config (saved with every checkpoint and model)."""
    modules, optimizers = task.modules(), task.optimizers()
    progress = Progress()
    if resume:
        if env.main:
            remove_stale_temporaries(run)
        path, tensors, meta = latest_checkpoint(run)
        if meta.get("kind") != task.kind:
            raise TrainError(f"{path}: a {meta.get('kind')} checkpoint, not {task.kind}")
        apply_checkpoint(tensors, meta, modules, optimizers, path)
        progress = Progress(step=int(meta["step"]), seconds=float(meta["seconds"]), history=list(meta["history"]))
        if env.main:
            print(f"resuming {task.kind} training from {path} (step {progress.step}, "
                  f"{progress.seconds / 60:.1f} min trained)", flush=True)
    elif env.main:
        if list_checkpoints(run):
            raise TrainError(f"{run}: already holds checkpoints; add --resume to continue, or pick a new -o folder")
        write_run_config(run, task.kind, dataset, cfg)
    if env.main:
        info = ", ".join(f"{k} {v}" for k, v in task.describe().items())
        budget = " and ".join(b for b in (f"{run_cfg.minutes:g} min" if run_cfg.minutes else "",
                                          f"step {run_cfg.steps}" if run_cfg.steps else "") if b) or "no limit (Ctrl-C stops)"
        print(f"training {task.kind} on {env.device} x{env.world} ({torch.get_num_threads()} threads): {info}; "
              f"budget {budget}; run folder {run}", flush=True)

    sums: dict[str, float] = {}
    count = 0

    def flush() -> None:
        """Average the losses since the last point into one point of the history."""
        nonlocal sums, count
        if not count:
            return
        point = {"step": float(progress.step), "time": round(progress.seconds, 3)}
        point.update({k: v / count for k, v in sums.items()})
        if not all(math.isfinite(v) for v in point.values()):
            raise TrainError(f"{task.kind} training diverged at step {progress.step} (loss is not finite); "
                             f"resume from the last checkpoint with a lower learning rate")
        progress.history.append(point)
        sums, count = {}, 0

    def save() -> None:
        flush()
        if not env.main:
            return
        meta = {"kind": task.kind, "step": progress.step, "seconds": progress.seconds, "history": progress.history,
                "config": to_table(cfg), "dataset": str(dataset)}
        save_checkpoint(checkpoint_path(run, progress.step), modules, optimizers, meta)
        for old in list_checkpoints(run)[:-run_cfg.keep_checkpoints]:
            old.unlink(missing_ok=True)
        task.write_previews(run / PREVIEWS, progress.step)
        previews.save_png(run / PREVIEWS / "loss.png",
                          previews.loss_plot(progress.history, f"ciel {task.kind} - step {progress.step}, "
                                                               f"{progress.seconds / 60:.1f} min"))

    def next_snapshot_after(seconds: float) -> float:
        first = run_cfg.snapshot_seconds
        if not first:
            return math.inf
        t = first
        while t <= seconds:
            t *= 2.0
        return t

    if env.main and progress.step == 0:
        save_snapshot(run, modules, 0, 0.0)
    snapshot_due = next_snapshot_after(progress.seconds)
    session_start = time.monotonic()
    seconds_before = progress.seconds
    last_ckpt_time, last_ckpt_step, last_log = session_start, progress.step, session_start
    last_log_step = progress.step
    flags = torch.zeros(3, device=env.device if env.device.type == "cuda" else "cpu")
    with StopSignal() as stop:
        while True:
            now = time.monotonic()
            progress.seconds = seconds_before + (now - session_start)
            over = (run_cfg.steps and progress.step >= run_cfg.steps) or \
                   (run_cfg.minutes and progress.seconds >= run_cfg.minutes * 60)
            due = (run_cfg.checkpoint_minutes and now - last_ckpt_time >= run_cfg.checkpoint_minutes * 60) or \
                  (run_cfg.checkpoint_steps and progress.step - last_ckpt_step >= run_cfg.checkpoint_steps)
            flags[0], flags[1], flags[2] = float(bool(stop.requested)), float(bool(over)), float(bool(due))
            if env.distributed:
                torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
            if flags[0] or flags[1]:
                progress.stopped = (f"stopped by {stop.requested or 'another process'}" if flags[0] and not flags[1]
                                    else "budget reached")
                break
            if env.main and progress.seconds >= snapshot_due and progress.step > 0:
                save_snapshot(run, modules, progress.step, progress.seconds)
                snapshot_due = next_snapshot_after(progress.seconds)
            if flags[2] and progress.step > last_ckpt_step:
                save()
                last_ckpt_time, last_ckpt_step = time.monotonic(), progress.step
            losses = task.train_step(progress.step)
            progress.step += 1
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            count += 1
            if count >= run_cfg.history_every:
                flush()
            if env.main and now - last_log >= run_cfg.log_seconds:
                rate = (progress.step - last_log_step) / max(1e-9, now - last_log)
                shown = " ".join(f"{k} {v:.4g}" for k, v in (progress.history[-1].items() if progress.history else ())
                                 if k not in ("step", "time"))
                print(f"{task.kind} step {progress.step} | {progress.seconds / 60:.1f} min | {shown} | "
                      f"{rate:.2f} steps/s", flush=True)
                last_log, last_log_step = now, progress.step
        if env.main:
            print(f"{task.kind}: {progress.stopped} at step {progress.step} after {progress.seconds / 60:.1f} min; "
                  "saving", flush=True)
        save()
        if env.main:
            save_snapshot(run, modules, progress.step, progress.seconds)
            snaps = read_snapshots(run, current_snapshot(modules, progress.step, progress.seconds),
                                   run_cfg.export_snapshots)
            for folder in [run / MODEL] + ([export_to] if export_to else []):
                out = task.export(folder, card_extra(task, cfg, progress, dataset, env), snaps)
                print(f"model written to {out}", flush=True)
                for line in card_lines(out):
                    print(line, flush=True)
    if env.distributed:
        torch.distributed.barrier()
    return progress


def dataset_identity(folder: Path) -> dict[str, str | int]:
    """What a model card says of its dataset: the folder's name and a SHA-256 over every file's
    relative path and bytes (sorted), never the artist's absolute path, which would leave the
    machine with every shared model."""
    digest = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
    for path in files:
        digest.update(path.relative_to(folder).as_posix().encode("utf-8") + b"\0")
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    return {"name": folder.resolve().name, "sha256": digest.hexdigest(), "files": len(files)}


def card_extra(task: Task, cfg: Any, progress: Progress, dataset: Path, env: Env) -> dict[str, Any]:
    """Model-card entries: data summary, steps, time, last losses, training config."""
    summary = {}
    report = dataset / "report.json"
    try:
        summary = json.loads(report.read_text("utf-8")).get("summary", {})
    except (OSError, ValueError):
        pass
    return {
        "trained": True,
        "made_by": f"ciel train {task.kind}",
        "steps": progress.step,
        "training_minutes": round(progress.seconds / 60, 2),
        "stopped": progress.stopped or "exported from a checkpoint",
        "losses": progress.last_losses(),
        "device": f"{env.device.type} x{env.world}",
        "dataset": {**dataset_identity(dataset), **{k: v for k, v in summary.items() if isinstance(v, (int, float, str))}},
        "training": to_table(cfg),
        **{k: v for k, v in task.describe().items() if isinstance(v, (int, float, str))},
    }


def card_lines(model: Path) -> list[str]:
    """What `ciel` prints of a model folder's card after writing it: the classes a conditioned
    audio decoder plays (`audio/class N: name (clips, minutes)`), or nothing."""
    from ..audio.model import class_lines
    from ..modelio import CARD

    try:
        card = read_toml(model / CARD)
    except ConfigError:
        return []
    lines = class_lines(card)
    return ["classes (audio/class):", *lines] if lines else []


def export_checkpoint(task: Task, cfg: Any, run: Path, dataset: Path, out: Path, env: Env,
                      step: int | None = None, snapshots: int | None = None) -> Path:
    """Export the newest (or the `step`) checkpoint of `run` into the model folder `out`, with
    `snapshots` learning snapshots (default: the run's `export_snapshots`) up to that step."""
    path, tensors, meta = latest_checkpoint(run, step)
    if meta.get("kind") != task.kind:
        raise TrainError(f"{path}: a {meta.get('kind')} checkpoint, not {task.kind}")
    apply_checkpoint(tensors, meta, task.modules(), task.optimizers(), path)
    progress = Progress(step=int(meta["step"]), seconds=float(meta["seconds"]), history=list(meta["history"]),
                        stopped=f"exported from {path.name}")
    count = cfg.run.export_snapshots if snapshots is None else snapshots
    snaps = read_snapshots(run, current_snapshot(task.modules(), progress.step, progress.seconds), count)
    try:
        return task.export(out, card_extra(task, cfg, progress, dataset, env), snaps)
    except OSError as exc:
        raise ModelError(f"{out}: cannot write the model ({exc.strerror or exc})") from None


__all__ = ["RunConfig", "Env", "Task", "Snapshot", "TrainError", "setup_env", "wrap_ddp", "train", "export_checkpoint",
           "read_run_config", "latest_checkpoint", "list_checkpoints", "DatasetError"]
