"""`ciel run`, `ciel render` and `ciel devices`.

`run` builds an `Engine` (engine/app.py) and drives it with the window's render loop, or with a
plain tick loop when `--headless`. `render` drives the same audio synthesis, latent paths and sky
shader with a clock instead of a sound card and a window, so the same seed gives the same bytes.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .audio.config import AudioConfig, is_scripted, trust_line
from .configio import build, to_table
from .control.config import OscConfig, OscQueryConfig
from .errors import AudioDeviceError, CielError, DisplayError, PatchError
from .patch import Patch, check_audio_model, load_patch

if TYPE_CHECKING:
    from .app import Engine
    from .visual.ndi import NdiSender

log = logging.getLogger("ciel")


def register(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="play: sound through PortAudio, the oval sky in a window, OSC and MIDI control")
    add_patch_args(run)
    add_show_args(run)
    run.add_argument("--installation", action="store_true", help="with the scheduler, /healthz and the watchdogs "
                     "(`ciel install` also loads the installation patch and a rotating log)")
    run.set_defaults(func=cmd_run)

    render = sub.add_parser("render", help="offline: write a WAV, PNG frames and a video with a clock instead of devices")
    render.add_argument("out", type=Path, help="output folder (audio.wav, frames/NNNNNN.png, render.mp4)")
    render.add_argument("patch", nargs="?", type=Path, default=None, help="patch file (default: patches/default.toml)")
    render.add_argument("--seconds", type=float, default=10.0, help="length in seconds")
    render.add_argument("--seed", type=int, default=1, help="seed of the latent walks (same seed, same bytes)")
    render.add_argument("--fps", type=float, default=25.0, help="frames per second")
    render.add_argument("--size", type=_size, default=(1280, 720), help="frame size WxH (default 1280x720)")
    render.add_argument("--samplerate", type=int, default=48000, help="WAV sample rate (Hz)")
    render.add_argument("--no-frames", action="store_true", help="no PNG frames (with --video: the pictures go into the video only; without: the sound only)")
    render.add_argument("--video", action="store_true", help="also write render.mp4 (H.264 + AAC; WebM where FFmpeg lacks H.264) with the sound in it")
    add_model_args(render)
    render.set_defaults(func=cmd_render)

    devices = sub.add_parser("devices", help="list audio outputs, MIDI ports and displays")
    devices.set_defaults(func=cmd_devices)


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    if not (16 <= w <= 8192 and 16 <= h <= 8192):
        raise argparse.ArgumentTypeError(f"size out of range: {text}")
    return w, h


def add_model_args(p: argparse.ArgumentParser) -> None:
    """--model and --trust-model: the audio model instead of the patch's."""
    p.add_argument("--model", type=Path, default=None, metavar="PATH",
                   help="audio model: a model folder, or a RAVE / nn~ TorchScript export (.ts, with --trust-model)")
    p.add_argument("--trust-model", action="store_true", default=None,
                   help="load a TorchScript audio model: it runs code from the file, so only one you trust")


def model_overrides(audio: AudioConfig, args: argparse.Namespace, source: str) -> AudioConfig:
    """`audio` with --model and --trust-model applied; PatchError when the model is a TorchScript
    file nobody trusted (one line saying why)."""
    if args.model is not None:   # another file: the patch's trust was for its own model, not this one
        audio = dataclasses.replace(audio, model=str(args.model.resolve()), trust=bool(args.trust_model))
    elif args.trust_model:
        audio = dataclasses.replace(audio, trust=True)
    if is_scripted(audio.model) and not audio.trust:
        raise PatchError("the command line" if args.model is not None else source, "audio.model", trust_line(audio.model))
    return audio


def patch_for_model(path: Path | None, args: argparse.Namespace) -> Patch:
    """An offline command's patch (`render`, `compose`, `bake`) with --model / --trust-model
    applied; PatchError when its audio model is missing or an untrusted TorchScript file."""
    patch = load_patch(path, check_models=False)
    patch = patch.replace(audio=model_overrides(patch.audio, args, patch.source))
    check_audio_model(patch.audio, patch.source)
    return patch


def add_patch_args(p: argparse.ArgumentParser) -> None:
    """Options shared by `run`, `install` and `broadcast` that override the patch."""
    p.add_argument("patch", nargs="?", type=Path, default=None, help="patch file (default: patches/default.toml)")
    add_model_args(p)
    p.add_argument("--audio", choices=("auto", "none"), default=None, help="'none': no sound device")
    p.add_argument("--device", default=None, help="audio output device (name substring)")
    p.add_argument("--samplerate", type=int, default=None, help="device sample rate (Hz)")
    p.add_argument("--blocksize", type=int, default=None, help="device block size (frames)")
    p.add_argument("--record", default=None, help="also write the output to this WAV file")
    p.add_argument("--input", default=None, metavar="PORT",
                   help="listen to this input too (listen/*): a JACK port such as system:capture_1, "
                        "or '-' to open ciel:in_1 for a patchbay")
    p.add_argument("--channels", type=int, default=None, metavar="N",
                   help="play over N speakers (default 2, stereo; see [audio] layout)")
    p.add_argument("--channel-offset", type=int, default=None, metavar="K",
                   help="leave the device's first K output channels silent (ciel starts at output K+1)")
    p.add_argument("--fullscreen", action="store_true", default=None, help="fullscreen, cursor hidden")
    p.add_argument("--display", type=int, default=None, help="display index for fullscreen")
    p.add_argument("--size", type=_size, default=None, help="window size WxH")
    p.add_argument("--osc-host", default=None, help="OSC listen address (default 127.0.0.1)")
    p.add_argument("--osc-port", type=int, default=None, help="OSC UDP port (default 9000)")
    p.add_argument("--lan", action="store_true",
                   help="open OSC, OSCQuery and the control page to the machines of --allow (or [osc] allow)")
    p.add_argument("--allow", action="append", default=None, metavar="CIDR",
                   help="a machine or network that may control ciel, e.g. 192.168.1.0/24 (repeatable)")
    p.add_argument("--no-midi", action="store_true", help="do not open MIDI ports")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))


def add_show_args(p: argparse.ArgumentParser) -> None:
    """Options of the commands that run the live engine (`run`, `install`)."""
    p.add_argument("--headless", action="store_true", help="no window: sound and control only (with --ndi the "
                   "sky is drawn offscreen for NDI)")
    p.add_argument("--ndi", default=None, metavar="NAME",
                   help="send the sky as an NDI source named NAME (Resolume, TouchDesigner, OBS… see it on the LAN)")
    p.add_argument("--seconds", type=float, default=0.0, help="quit after this many seconds of show (0 = run until stopped)")


def patch_from_args(args: argparse.Namespace) -> Patch:
    """Load the patch and apply command-line overrides (validated like the patch itself)."""
    patch = load_patch(args.patch, check_models=False)
    audio = patch.audio
    for field, value in (("output", args.audio), ("device", args.device), ("samplerate", args.samplerate),
                         ("blocksize", args.blocksize), ("record", args.record), ("input", args.input),
                         ("channels", args.channels), ("channel_offset", args.channel_offset)):
        if value is not None:
            audio = dataclasses.replace(audio, **{field: value})
    audio = build(AudioConfig, to_table(audio), "the command line", "audio", error=PatchError)   # ranges, as in a patch
    audio = model_overrides(audio, args, patch.source)
    visual = patch.visual
    if getattr(args, "ndi", None) is not None:
        visual = dataclasses.replace(visual, ndi=args.ndi)
    if args.fullscreen:
        visual = dataclasses.replace(visual, fullscreen=True)
    if args.display is not None:
        visual = dataclasses.replace(visual, display=args.display)
    if args.size is not None:
        visual = dataclasses.replace(visual, width=args.size[0], height=args.size[1])
    osc = patch.osc
    if args.osc_host is not None:
        osc = dataclasses.replace(osc, host=args.osc_host)
    if args.osc_port is not None:
        osc = dataclasses.replace(osc, port=args.osc_port)
    if args.allow:
        osc = dataclasses.replace(osc, allow=(*osc.allow, *args.allow))
    oscquery = patch.oscquery
    if args.lan:
        osc = dataclasses.replace(osc, host="0.0.0.0")
    if osc.host not in ("127.0.0.1", "localhost", "::1") and oscquery.host in ("127.0.0.1", "localhost"):
        oscquery = dataclasses.replace(oscquery, host=osc.host)   # the tree and the page follow OSC onto the LAN
    check_lan(osc, oscquery, patch.source)
    midi = dataclasses.replace(patch.midi, enabled=False) if args.no_midi else patch.midi
    return patch.replace(audio=audio, visual=visual, osc=osc, oscquery=oscquery, midi=midi)


def check_lan(osc: OscConfig, oscquery: OscQueryConfig, source: str) -> None:
    """PatchError before anything starts when OSC or OSCQuery would open to the network without an
    allow-list (or with an entry that is not an address or network)."""
    from .control.osc import Allow

    for section, host in (("[osc]", osc.host), ("[oscquery]", oscquery.host)):
        try:
            Allow(osc.allow, host, section)
        except CielError as exc:
            raise PatchError(source, "osc.allow", str(exc)) from None


def setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()), format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)


def check_display() -> None:
    """DisplayError with what to do, before anything heavy starts, if no window can open."""
    if not sys.platform.startswith("linux"):
        return
    if os.environ.get("SDL_VIDEODRIVER") == "offscreen":
        return
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise DisplayError("no display ($DISPLAY is not set): start one (Xvfb :99 & export DISPLAY=:99) "
                           "or run with --headless")


def run_engine(patch: Patch, patch_path: Path | None, *, window: bool = True, installation: bool = False,
               seconds: float = 0.0, t0: float | None = None, state_dir: Path | None = None) -> int:
    """Build an Engine and run it until quit (Esc, SIGTERM, SIGINT, or `seconds` after it is up).
    `t0` is when the command started (monotonic), for the time-to-first-sound line. Returns an exit code."""
    t0 = time.monotonic() if t0 is None else t0
    from .app import Engine, RunOptions

    if window:
        check_display()
    sink = None
    if patch.visual.ndi:
        from .visual.ndi import NdiSender

        sink = NdiSender(patch.visual.ndi, patch.visual.fps)   # CielError with what to install, before anything starts
    curtain = None
    if window and state_dir is not None:
        # an installation: its last picture on the wall before torch is imported and the models load
        from .visual.display import raise_curtain
        from .visual.memory import LAST_PICTURE

        curtain = functools.partial(raise_curtain, patch.visual, state_dir / LAST_PICTURE)
    options = RunOptions(audio=patch.audio.output != "none", window=window, installation=installation, t0=t0,
                         state_dir=state_dir, share_audio=sink is not None, offscreen=not window and sink is not None)
    try:
        return _show(Engine(patch, patch_path, options, curtain=curtain), window, seconds, sink)
    finally:
        if sink is not None:
            sink.close()


def _show(engine: Engine, window: bool, seconds: float, sink: NdiSender | None) -> int:
    """Run a built engine until quit or `seconds`, then close it. The sink (NDI) reads the audio
    process's shared memory, so it lets go of it before the engine closes."""
    from .workerproc import warm_up

    if sink is not None and engine.audio is not None:
        sink.listen(engine.audio.output_tap())   # the sound goes out with the picture
    warm_up(after_s=5.0)   # replacements of the workers start at once; after the first picture

    def stop(signum: int, frame: object) -> None:
        engine.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    deadline = engine.clock() + seconds if seconds > 0 else float("inf")
    try:
        if window:
            engine.show_window(deadline=deadline, sink=sink)
        elif sink is not None:
            engine.show_offscreen(sink, deadline)
        else:
            while engine.running and engine.clock() < deadline:
                now = engine.clock()
                engine.tick(now)
                engine.frame_done(now)
                time.sleep(1 / 60)
    finally:
        if sink is not None:
            sink.listen(None)   # waits for a sound frame in flight (NdiSender.listen)
        engine.close()
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    patch = patch_from_args(args)
    try:
        return run_engine(patch, args.patch, window=not args.headless, installation=args.installation,
                          seconds=args.seconds, t0=getattr(args, "t0", None))
    except AudioDeviceError as exc:
        hint = "" if "--audio none" in str(exc) else " (or run with --audio none)"
        raise AudioDeviceError(f"{exc}{hint}") from None


def cmd_render(args: argparse.Namespace) -> int:
    """Offline render: N seconds of sound (WAV), frames (PNG) and a video with the sound in it,
    deterministic for a seed."""
    import soundfile as sf
    from PIL import Image
    from tqdm import tqdm

    from .app import apply_patch_params
    from .audio.model import load_audio_model
    from .audio.stream import AudioSynth
    from .mediaio import VideoWriter, video_format
    from .params import ParamStore

    patch = patch_for_model(args.patch, args)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    store = ParamStore()
    apply_patch_params(store, patch)
    scheduler = None
    if patch.schedule.enabled:
        from .control.scheduler import Scheduler

        clock_now = [0.0]
        scheduler = Scheduler(patch.schedule, store, clock=lambda: clock_now[0], seed=args.seed)
    synth = AudioSynth(load_audio_model(patch.audio.model, patch.audio.trust), args.samplerate, seed=args.seed,
                       voices=patch.audio.voices, channels=patch.audio.channels, layout=patch.audio.layout)
    pngs = not args.no_frames
    frames = None
    if pngs or args.video:
        from .visual.offline import FrameRenderer

        frames = FrameRenderer(patch.visual, args.size[0], args.size[1], seed=args.seed)
    if pngs:
        (out / "frames").mkdir(exist_ok=True)
    video: VideoWriter | None = None
    if args.video:
        try:
            ext, vcodec, acodec = video_format()
        except ValueError as exc:
            raise CielError(f"--video: {exc}") from None
        video = VideoWriter(str(out / f"render.{ext}"), args.size[0], args.size[1], args.fps, args.samplerate,
                            (vcodec, acodec))
    n_frames = max(1, int(round(args.seconds * args.fps)))
    rate = args.samplerate
    chunks = []
    try:
        for i in tqdm(range(n_frames), desc="render", unit="frame", disable=None, dynamic_ncols=True):
            t = i / args.fps
            if scheduler is not None:
                clock_now[0] = t
                scheduler.tick(t)
            values = store.snapshot_values()
            start, stop = int(round(i * rate / args.fps)), int(round((i + 1) * rate / args.fps))
            chunks.append(synth.process(values, stop - start).copy())
            if frames is not None:
                image = frames.frame(values, t)   # (H, W, 3) uint8
                if pngs:
                    Image.fromarray(image).save(out / "frames" / f"{i:06d}.png", optimize=False)
                if video is not None:
                    video.frame(image)
    finally:
        if frames is not None:
            frames.close()
    audio = np.concatenate(chunks)
    sf.write(out / "audio.wav", audio, rate, subtype="PCM_24")
    if video is not None:   # a video's sound is stereo: N speakers folded where a listener hears them
        if synth.speakers.stereo:
            video.close(audio)
        else:
            folded = audio @ synth.speakers.fold()                                   # (n, 2)
            peak = float(np.max(np.abs(folded))) if folded.size else 0.0
            ceiling = 10 ** (-1 / 20)
            video.close((folded * min(1.0, ceiling / max(peak, 1e-12))).astype(np.float32))
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    peak_db = 20 * np.log10(max(peak, 1e-12))
    print(f"ciel: wrote {out / 'audio.wav'} ({len(audio) / rate:.2f} s, peak {peak_db:.1f} dBFS)"
          + (f", {n_frames} frames in {out / 'frames'}" if pngs else "")
          + (f", {video.path} ({video.count} frames with the sound)" if video is not None else ""))
    return 0


def cmd_devices(args: argparse.Namespace) -> int:
    """Print audio outputs, MIDI inputs and outputs, and displays; a missing subsystem is one line."""
    from .audio.output import list_devices

    print("audio outputs:")
    try:
        for name in list_devices():
            print(f"  {name}")
    except CielError as exc:
        print(f"  (none: {exc})")
    print("midi inputs:")
    try:
        from .control.midi import list_ports

        ins, outs = list_ports()
        for name in ins:
            print(f"  {name}")
        print("midi outputs:")
        for name in outs:
            print(f"  {name}")
    except CielError as exc:
        print(f"  (none: {exc})")
    print("displays:")
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        print("  (none: $DISPLAY is not set; use --headless or start Xvfb)")
    else:
        import pygame

        pygame.display.init()
        try:
            for i, (w, h) in enumerate(pygame.display.get_desktop_sizes()):
                print(f"  {i}: {w}x{h}")
        finally:
            pygame.display.quit()
    return 0
