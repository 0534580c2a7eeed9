"""Soak: the real installation for M minutes at a scene every P seconds, with full rendering.

`python -m bench soak --minutes 60 --period 1` starts a JACK dummy server and Xvfb (1920x1080),
builds the engine from patches/installation.toml (fullscreen, always open, a scene every P s),
drives it with the window's render loop, and samples once a second: /healthz (frames, audio
callbacks, underflows, restarts, scene) and the memory and open files of ciel's processes (the
main process and its children: the audio process). `--quick` runs one minute. `--real` uses the
current $DISPLAY and the default sound device instead of starting Xvfb and JACK; `--no-control`
leaves out OSC, OSCQuery and MIDI.

Keys: minutes, scenes, cadence_error_ms_max, rss_mb_start, rss_mb_end, fds_start, fds_end,
underflows, restarts, fps_p5. The start values are taken after a warm-up (10 % of the run, 15 s
to 5 min) so that caches filled at start are not counted as growth; underflows and restarts count
from the same moment.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import sys
import tempfile
import threading
from pathlib import Path

from bench.common import machine_load, percentile
from harness import parts

log = logging.getLogger("ciel.soak")


def descendants(pid: int) -> list[int]:
    """`pid` and all its live descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def usage(pid: int) -> tuple[float, int]:
    """(resident MB, open file descriptors) of `pid` and its descendants."""
    rss_kb, fds = 0, 0
    for p in descendants(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss_kb += int(line.split()[1])
            fds += len(os.listdir(f"/proc/{p}/fd"))
        except OSError:
            continue
    return rss_kb / 1024.0, fds


def soak_patch(period: float, log_dir: str):
    """The installation patch for a soak: always open, free ports, no MIDI."""
    from engine.installation import INSTALLATION_PATCH
    from engine.patch import load_patch

    patch = load_patch(INSTALLATION_PATCH)
    return patch.replace(
        schedule=dataclasses.replace(patch.schedule, enabled=True, period=period, hours=(), log_dir=log_dir),
        osc=dataclasses.replace(patch.osc, port=0),
        oscquery=dataclasses.replace(patch.oscquery, port=0, zeroconf=False),
        midi=dataclasses.replace(patch.midi, enabled=False),
        web=dataclasses.replace(patch.web, health_port=0),
    )


class Sampler:
    """Samples health and process usage once a second on its own thread."""

    def __init__(self, engine, supervision, warmup_s: float) -> None:
        self.engine = engine
        self.sup = supervision
        self.warmup_s = warmup_s
        self.fps: list[float] = []
        self.start: dict | None = None
        self.last: dict = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-sampler", daemon=True)

    def _sample(self) -> dict:
        doc = self.sup.health.document()  # sampled by the supervisor thread once a second
        rss, fds = usage(os.getpid())
        audio = doc.get("audio") or {}
        gan = self.sup.gan_watch.restarts if self.sup.gan_watch else 0
        return {"t": self.engine.clock() - self.engine.started, "rss": rss, "fds": fds,
                "underflows": int(audio.get("underflows") or 0), "restarts": int(audio.get("restarts") or 0) + gan,
                "fps": doc.get("fps") or 0.0, "scenes": (doc.get("scheduler") or {}).get("scene_number", 0)}

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            s = self._sample()
            self.last = s
            if s["t"] >= self.warmup_s:
                if self.start is None:
                    self.start = s
                self.fps.append(s["fps"])

    def begin(self) -> None:
        self._thread.start()

    def end(self) -> dict:
        """Stop sampling; the last sample taken while the window still ran (not after it closed)."""
        self._stop.set()
        self._thread.join(timeout=5)
        return self.last or self._sample()


def run(minutes: float, period: float, real: bool, control: bool = True) -> dict:
    from engine.app import Engine, RunOptions
    from engine.commands import check_display
    from engine.installation import INSTALLATION_PATCH
    from engine.logfiles import setup_file_logging
    from engine.supervise import Supervision

    seconds = minutes * 60.0
    warmup = min(300.0, max(15.0, 0.1 * seconds))
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="ciel-soak-"))
        jack = None
        if not real:
            jack = stack.enter_context(parts.JackServer(parts.free_server_name("ciel-soak"), period=64))
            os.environ["DISPLAY"] = stack.enter_context(parts.xvfb(size="1920x1080x24"))
        check_display()
        handler = setup_file_logging(tmp, logging.INFO)
        stack.callback(lambda: (logging.getLogger().removeHandler(handler), handler.close()))
        patch = soak_patch(period, tmp)
        engine = Engine(patch, INSTALLATION_PATCH, RunOptions(installation=True, control=control))
        stack.callback(engine.close)
        sup = engine.healthz if isinstance(engine.healthz, Supervision) else None
        if sup is None:
            sup = engine.supervision(port=0)
            sup.start()
            stack.callback(sup.stop)
        sampler = Sampler(engine, sup, warmup)
        sampler.begin()
        engine.show_window(deadline=engine.started + seconds)
        end = sampler.end()
        start = sampler.start or end
        sched = engine.scheduler.status() if engine.scheduler is not None else {}
        server = ""
        if jack is not None:
            x = jack.xruns()
            server = (f"; {jack.describe()}, whose log has {x.client_late} cycles where ciel was late and "
                      f"{x.driver_late} where its own clock thread was late (whole run)")
        print(f"soak: {machine_load()}; {sched.get('scene_number', 0)} scenes; warm-up {warmup:.0f} s; "
              f"log {handler.baseFilename} ({handler.write_errors} write errors){server}", file=sys.stderr)
        return {
            "minutes": round(minutes, 3),
            "scenes": int(sched.get("scene_number", 0)),
            "cadence_error_ms_max": sched.get("cadence_error_ms_max"),
            "rss_mb_start": round(start["rss"], 1),
            "rss_mb_end": round(end["rss"], 1),
            "fds_start": start["fds"],
            "fds_end": end["fds"],
            "underflows": end["underflows"] - start["underflows"],
            "restarts": end["restarts"],
            "fps_p5": percentile(sampler.fps, 5),
        }


def main(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench soak", description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60.0, help="length of the run (default 60)")
    ap.add_argument("--period", type=float, default=1.0, help="seconds between scenes (default 1)")
    ap.add_argument("--quick", action="store_true", help="one minute")
    ap.add_argument("--real", action="store_true", help="use $DISPLAY and the default sound device")
    ap.add_argument("--no-control", action="store_true", help="without OSC, OSCQuery and MIDI")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return run(1.0 if args.quick else args.minutes, args.period, args.real, control=not args.no_control)
