"""NDI out: what a receiver on the same machine gets from `ciel run --headless --ndi NAME`.

    python -m bench ndi [--quick] [--seconds S] [--size 1280x720] [--window] [--no-audio]

ciel runs as a performer starts it (the generator process, OSC, the sky offscreen at the size
named, or in a window under Xvfb with `--window`; the audio process on a JACK dummy server of the
bench's own unless `--no-audio`), and an NDI receiver in this process (NDI's own runtime,
harness/ndirecv.py) takes its video and sound over loopback.

Keys:
  size             the frame size received (WxH)
  received_fps     video frames the receiver got per second, from its first frame to its last,
                   over `seconds` (every frame counted)
  frames           frames received in that time
  first_frame_s    from starting `ciel run` to the first frame at the receiver (imports, models,
                   the first picture, NDI discovery)
  oval_inside_opaque / oval_outside_opaque  share of the pixels inside / outside the projection's
                   oval that are opaque in the last frame (1 and 0: the sky with a transparent surround)
  sound_rate       the sample rate of the sound received (null with --no-audio)
  sound_per_second seconds of sound received per second of video received (1: nothing lost)
  ciel_cpu_percent CPU of the ciel process tree (main, generator, audio) over the receiving time, in % of
                   one core
  load             cores and load average, what ran beside
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.common import machine_load

ROOT = Path(__file__).resolve().parents[1]


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its children (alive ones), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{p}/task").iterdir():     # children of every thread
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, IndexError, ValueError):
            continue
    return total


def main(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench ndi", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10 s of receiving instead of 30")
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--window", action="store_true", help="the window under Xvfb instead of offscreen")
    ap.add_argument("--no-audio", action="store_true", help="without the audio process (no sound over NDI)")
    args = ap.parse_args(argv)
    seconds = args.seconds or (10.0 if args.quick else 30.0)

    from harness import parts
    from harness.ndirecv import Received, oval_fit, receive

    name = f"bench-ndi-{os.getpid()}"
    cmd = [sys.executable, "-m", "engine.cli", "run", "--no-midi", "--osc-port", "0",
           "--ndi", name, "--size", args.size, "--seconds", str(seconds + 120)] + (["--audio", "none"] if args.no_audio else [])
    if not args.window:
        cmd.insert(cmd.index("run") + 1, "--headless")
    with contextlib.ExitStack() as stack:
        env = dict(os.environ)
        if args.window:
            env["DISPLAY"] = stack.enter_context(parts.xvfb())
        if not args.no_audio:
            server = stack.enter_context(parts.jackd(name="ciel-bench-ndi"))
            env["JACK_DEFAULT_SERVER"] = server.name
        start = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        first_cpu: list[float] = []
        try:
            try:
                got = receive(name, seconds=seconds, find_timeout=120.0,
                              on_first=lambda: first_cpu.append(tree_cpu_seconds(proc.pid)))
            except LookupError:
                got = Received()
            cpu = tree_cpu_seconds(proc.pid) - (first_cpu[0] if first_cpu else 0.0)
            load = machine_load()
        finally:
            proc.terminate()
            try:
                _, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
    if got.first_at is None:
        return {"size": args.size, "received_fps": None,
                "received_fps_reason": f"no frame arrived; ciel said: {err.strip()[-300:]}", "load": load}
    inside, outside = oval_fit(got.kept[-1])
    return {
        "size": f"{got.size[0]}x{got.size[1]}",
        "received_fps": round(got.fps, 2),
        "frames": got.frames,
        "first_frame_s": round(got.first_at - start, 2),
        "oval_inside_opaque": round(inside, 4),
        "oval_outside_opaque": round(outside, 4),
        "sound_rate": got.sound_rate or None,
        "sound_per_second": round(got.sound_samples / got.sound_rate / got.seconds, 3) if got.sound_rate else None,
        "ciel_cpu_percent": round(100.0 * cpu / max(got.seconds, 1e-9), 1),
        "load": f"{load}; beside: {'the window under Xvfb' if args.window else 'nothing (offscreen)'}",
    }
