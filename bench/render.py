"""Sky rendering speed: the real window loop at 1920x1080 under Xvfb (software GL) while the GAN
worker makes 256x256 keyframes and, when the audio stage is present, the audio process plays
through a JACK dummy server. The window runs twice, one run after the other, each with its own
generator process and audio process:

- full: `render_scale` 1, the sky computed at every pixel of 1920x1080 (the default path);
- auto: `render_scale` 0, the automatic scale (full resolution up to 1920x1080; above, on a
  software renderer, a smaller sky layer upscaled). At 1080p the two runs draw the same way.

Keys: fps_1080p_full, fps_1080p_auto (frames per second of each window loop), frame_ms_p99 (99th
percentile of the time between flips, over every frame of the full-resolution run),
cpu_ms_per_frame_full / _auto (CPU of the window process, all threads, per frame),
gan_keyframes_per_s (keyframes the generator made per second in the full run, capped by the
configured `keyframes_per_s`, 12), gan_keyframes_per_s_max (the same generator uncapped on one
core, after the window runs: how many 256x256 keyframes per second it can make), gan_ms_p50
(median generator time per keyframe in the full run), renderer (GL renderer string, the scales),
load (cores, load average before and after, what else ran). A key that could not be measured is
null, with `KEY_reason` saying why. Each run is timed from the generator's first keyframe on (its
process takes seconds to import torch). `--quick`: 12 s per run instead of 45; `--no-audio`:
without the audio process; `--only full|auto`: one of the two runs.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import machine_load, percentile
from harness import parts

ROOT = Path(__file__).resolve().parent.parent
STARTUP_LIMIT_S = 90.0  # time the generator process may take to make its first keyframe
WARMUP_S = 2.0
GAN_MAX_S = 4.0  # seconds of uncapped generation for gan_keyframes_per_s_max


def process_cpu_s(match: str) -> float:
    """CPU seconds (user + system) of the processes whose command line contains `match`."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if match in cmdline:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            continue
    return total


def window_run(render_scale: float, seconds: float, audio: bool) -> dict[str, Any]:
    """One window session at `render_scale` under the current $DISPLAY (and JACK server).
    Returns fps, the gaps between flips (ms), CPU per frame and the window's report."""
    from engine.app import Engine, RunOptions
    from engine.patch import load_patch

    patch = load_patch()
    visual = dataclasses.replace(patch.visual, width=1920, height=1080, fullscreen=True, fps=240.0,
                                 keyframes_per_s=12.0, seed=1, render_scale=render_scale)
    audio_cfg = dataclasses.replace(patch.audio, output="auto" if audio else "none")
    patch = patch.replace(visual=visual, audio=audio_cfg)
    engine = Engine(patch, None, RunOptions(audio=audio, window=True, control=False))
    try:
        flips: list[float] = []
        # (time, CPU of this process with llvmpipe's threads, CPU of Xvfb) where timing starts and ends
        marks: list[tuple[float, float, float]] = []
        xvfb = f"Xvfb {os.environ['DISPLAY']} "
        done = engine.frame_done
        workers: list[Any] = []   # the started keyframe source (its first_at)

        def frame_done(now: float) -> None:
            t = time.monotonic()
            flips.append(t)
            done(now)
            first = workers[0].first_at if workers else None
            if first is None:
                return
            if not marks and t >= first + WARMUP_S:
                marks.append((t, time.process_time(), process_cpu_s(xvfb)))
            elif marks and engine.running and t > first + WARMUP_S + seconds:
                marks.append((t, time.process_time(), process_cpu_s(xvfb)))
                engine.running = False

        engine.frame_done = frame_done  # type: ignore[method-assign]
        report = engine.show_window(deadline=engine.clock() + seconds + STARTUP_LIMIT_S, on_worker=workers.append)
        underflows = None
        if engine.audio is not None:
            underflows = getattr(engine.audio.status(), "underflows", None)
    finally:
        engine.close()
    if report.first_keyframe_at is None:
        raise RuntimeError(f"the generator made no keyframe in {seconds + STARTUP_LIMIT_S:g} s "
                           f"({report.worker_error or 'no error'})")
    times = np.asarray(flips)
    start = report.first_keyframe_at + WARMUP_S
    times = times[(times >= start) & (times <= start + seconds)]
    if len(times) < 2:
        raise RuntimeError("fewer than two frames in the timed window")
    own = server = None
    if len(marks) >= 2:
        (t0, own0, x0), (t1, own1, x1) = marks[0], marks[-1]
        n = max(sum(1 for t in flips if t0 < t <= t1), 1)
        own, server = 1000 * (own1 - own0) / n, 1000 * (x1 - x0) / n
    return {"fps": (len(times) - 1) / (times[-1] - times[0]), "gaps_ms": np.diff(times) * 1000.0,
            "cpu_ms": own, "xvfb_ms": server, "report": report, "underflows": underflows}


def gan_max_rate(seconds: float = GAN_MAX_S) -> float:
    """Keyframes per second of the default generator at its resolution, uncapped, on one core
    (this thread pinned to one CPU, one torch thread), through the same call as the offline
    renderer (`render_keyframe`, front image only)."""
    import torch

    from engine.params import REGISTRY
    from engine.patch import load_patch
    from engine.visual.model import load_image_model
    from engine.visual.worker import make_paths, render_keyframe

    model = load_image_model(load_patch().visual.model)
    paths = make_paths(model, 1)
    values = REGISTRY.defaults()
    affinity = os.sched_getaffinity(0)
    threads = torch.get_num_threads()
    try:
        os.sched_setaffinity(0, {min(affinity)})
        torch.set_num_threads(1)
        for i in range(5):  # warm-up
            render_keyframe(model, paths, values, i / 12.0, False)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            render_keyframe(model, paths, values, (n + 5) / 12.0, False)
            n += 1
        return n / (time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
        os.sched_setaffinity(0, affinity)


def main(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench render")
    ap.add_argument("--quick", action="store_true", help="12 s per run instead of 45 s")
    ap.add_argument("--no-audio", action="store_true", help="do not run the audio process")
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--only", choices=("full", "auto"), default=None, help="run only one of the two windows")
    args = ap.parse_args(argv)
    seconds = args.seconds or (12.0 if args.quick else 45.0)
    audio = not args.no_audio and (ROOT / "engine" / "audio" / "output.py").is_file()
    load_before = machine_load()
    out: dict[str, Any] = {}
    runs: dict[str, dict[str, Any]] = {}
    reasons: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        try:
            os.environ["DISPLAY"] = stack.enter_context(parts.xvfb(size="1920x1080x24"))
        except (FileNotFoundError, RuntimeError) as exc:
            reasons["full"] = reasons["auto"] = f"no display: {exc}"
        for name, scale in (("full", 1.0), ("auto", 0.0)):
            if name in reasons or (args.only and args.only != name):
                reasons.setdefault(name, f"not run (--only {args.only})")
                continue
            try:
                with contextlib.ExitStack() as run_stack:  # a fresh JACK server for each run
                    if audio:
                        run_stack.enter_context(parts.jackd(rate=48000, period=64))
                    runs[name] = window_run(scale, seconds, audio)
            except Exception as exc:  # no JACK, a window that cannot open, a generator that never starts
                reasons[name] = f"{type(exc).__name__}: {exc}"
    for name in ("full", "auto"):
        run = runs.get(name)
        out[f"fps_1080p_{name}"] = round(run["fps"], 1) if run else None
        if run is None:
            out[f"fps_1080p_{name}_reason"] = reasons[name]
    full = runs.get("full")
    out["frame_ms_p99"] = percentile(full["gaps_ms"], 99) if full else None
    if full is None:
        out["frame_ms_p99_reason"] = "no full-resolution run: " + reasons["full"]
    for name in ("full", "auto"):
        run = runs.get(name)
        cpu = run["cpu_ms"] if run else None
        out[f"cpu_ms_per_frame_{name}"] = round(cpu, 1) if cpu is not None else None
        if cpu is None:
            out[f"cpu_ms_per_frame_{name}_reason"] = reasons.get(name, "timing marks missing")
        elif run["xvfb_ms"] is not None:
            print(f"render {name}: {cpu:.1f} CPU-ms per frame in the window process (all threads) + "
                  f"{run['xvfb_ms']:.1f} in Xvfb", file=sys.stderr)
    source = full or runs.get("auto")
    out["gan_keyframes_per_s"] = round(source["report"].keyframes_per_s, 1) if source else None
    if source is None:
        out["gan_keyframes_per_s_reason"] = "no window run"
    try:
        out["gan_keyframes_per_s_max"] = round(gan_max_rate(), 1)
    except Exception as exc:  # no model, no torch
        out["gan_keyframes_per_s_max"] = None
        out["gan_keyframes_per_s_max_reason"] = f"{type(exc).__name__}: {exc}"
    gan = list(source["report"].gan_ms) if source else []
    out["gan_ms_p50"] = percentile(gan, 50) if gan else None
    if not gan:
        out["gan_ms_p50_reason"] = "no generator times reported"
    scales = ", ".join(f"{name} at {run['report'].render_scale:.2f}" for name, run in runs.items())
    out["renderer"] = (f"{source['report'].renderer}; sky {scales} of 1920x1080" if source
                       else "no window run")
    other = "audio process + JACK dummy" if audio else "no audio"
    underflows = [str(run["underflows"]) for run in runs.values() if run["underflows"] is not None]
    if underflows:
        other += f" ({'/'.join(underflows)} underflows)"
    out["load"] = (f"before: {load_before}; after: {machine_load()}; {other}; "
                   f"{seconds:g} s per run of a 1920x1080 window under Xvfb")
    return out
