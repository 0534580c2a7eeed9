"""Sky rendering speed: the real window loop at 1920x1080 under Xvfb (software GL) while the GAN
worker makes 256x256 keyframes and, when the audio stage is present, the audio process plays
through a JACK dummy server.

Keys: fps_1080p (frames per second of the window loop), frame_ms_p99 (99th percentile of the time
between flips), gan_keyframes_per_s (keyframes made per second), gan_ms_p50 (median generator time
per 256x256 keyframe), renderer (GL renderer string), load (cores, load average, what else ran).
Timed from the generator's first keyframe on (its process takes seconds to import torch).
`--quick`: 12 s instead of 45; `--no-audio`: without the audio process.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import machine_load, percentile
from engine import parts

ROOT = Path(__file__).resolve().parent.parent
STARTUP_LIMIT_S = 90.0  # time the generator process may take to make its first keyframe


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


def main(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench render")
    ap.add_argument("--quick", action="store_true", help="12 s instead of 45 s")
    ap.add_argument("--no-audio", action="store_true", help="do not run the audio process")
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--render-scale", type=float, default=0.0, help="sky resolution (0 = auto, as the window)")
    args = ap.parse_args(argv)
    seconds = args.seconds or (12.0 if args.quick else 45.0)
    warmup = 2.0
    audio = not args.no_audio and (ROOT / "engine" / "audio" / "output.py").is_file()

    from engine.app import Engine, RunOptions
    from engine.patch import load_patch
    from engine.visual.window import run_window
    from engine.visual.worker import GanWorker

    with contextlib.ExitStack() as stack:
        os.environ["DISPLAY"] = stack.enter_context(parts.xvfb(size="1920x1080x24"))
        if audio:
            stack.enter_context(parts.jackd(rate=48000, period=128))
        patch = load_patch()
        visual = dataclasses.replace(patch.visual, width=1920, height=1080, fullscreen=True, fps=240.0,
                                     keyframes_per_s=12.0, seed=1,
                                     render_scale=args.render_scale)
        audio_cfg = dataclasses.replace(patch.audio, output="auto" if audio else "none")
        patch = patch.replace(visual=visual, audio=audio_cfg)
        engine = Engine(patch, None, RunOptions(audio=audio, window=True, control=False))
        stack.callback(engine.close)
        flips: list[float] = []
        # (time, CPU of this process with llvmpipe's threads, CPU of Xvfb) where timing starts and ends
        marks: list[tuple[float, float, float]] = []
        xvfb = f"Xvfb {os.environ['DISPLAY']} "
        done = engine.frame_done
        # Time from the generator's first keyframe on: its process takes seconds to import torch.
        workers: list[GanWorker] = []

        def frame_done(now: float) -> None:
            t = time.monotonic()
            flips.append(t)
            done(now)
            first = workers[0].first_at if workers else None
            if first is None:
                return
            if not marks and t >= first + warmup:
                marks.append((t, time.process_time(), process_cpu_s(xvfb)))
            elif marks and engine.running and t > first + warmup + seconds:
                marks.append((t, time.process_time(), process_cpu_s(xvfb)))
                engine.running = False

        engine.frame_done = frame_done  # type: ignore[method-assign]
        report = run_window(engine, deadline=engine.clock() + seconds + STARTUP_LIMIT_S, on_worker=workers.append)
        underflows = None
        if engine.audio is not None:
            underflows = getattr(engine.audio.status(), "underflows", None)
    # measure while the generator runs: from its first keyframe (plus a warm-up) to the end
    if report.first_keyframe_at is None:
        raise RuntimeError(f"the generator made no keyframe in {seconds + STARTUP_LIMIT_S:g} s "
                           f"({report.worker_error or 'no error'})")
    times = np.asarray(flips)
    times = times[(times >= report.first_keyframe_at + warmup) & (times <= report.first_keyframe_at + warmup + seconds)]
    gaps_ms = np.diff(times) * 1000.0
    fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
    gan = list(report.gan_ms)
    if len(marks) >= 2 and len(times) > 1:
        (t0, own0, x0), (t1, own1, x1) = marks[0], marks[-1]
        n = sum(1 for t in flips if t0 < t <= t1)
        own, server = 1000 * (own1 - own0) / max(n, 1), 1000 * (x1 - x0) / max(n, 1)
        print(f"render: {own:.1f} CPU-ms per frame in the window process (all threads) + {server:.1f} in Xvfb; "
              f"two idle cores would allow about {2000 / max(own + server, 1e-3):.0f} fps", file=sys.stderr)
    other = "audio process + JACK dummy" if audio else "no audio"
    if underflows is not None:
        other += f" ({underflows} underflows)"
    return {
        "fps_1080p": round(fps, 1),
        "frame_ms_p99": percentile(gaps_ms, 99),
        "gan_keyframes_per_s": round(report.keyframes_per_s, 1),
        "gan_ms_p50": percentile(gan, 50),
        "renderer": f"{report.renderer}, sky at {report.render_scale:.2f} of 1920x1080"
                    + (" + full-res composite" if report.render_scale < 1 else ""),
        "load": f"{machine_load()}; {other}; {seconds:g} s of a 1920x1080 window under Xvfb",
    }
