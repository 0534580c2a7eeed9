"""`ciel broadcast`: serve the oval map, one scene per period, to every visitor at once."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from ..configio import build, resolve_path, to_table
from ..errors import ConfigError
from ..params import REGISTRY
from ..paramview import ParamView
from ..patch import Patch, load_patch
from ..web.config import WebConfig
from ..web.live import serve
from ..web.server import Broadcast, SceneClock, SceneSource
from .source import BakedScenes, LiveScenes, patch_values

log = logging.getLogger("ciel.web")
MAX_LIVE_SECONDS = 60.0  # a live scene's sound is one period long, at most this (the page loops it)


def register(sub: argparse._SubParsersAction) -> None:
    """Add `ciel broadcast` to the `ciel` parser."""
    p = sub.add_parser("broadcast", help="serve the oval map on a web page: a new sound and image every period")
    p.add_argument("patch", nargs="?", type=Path, default=None, help="patch file (default: patches/default.toml)")
    p.add_argument("--host", default=None, help="listen address (default 127.0.0.1: this computer only)")
    p.add_argument("--port", type=int, default=None, help="TCP port (default 8080; 0 = any free port)")
    p.add_argument("--period", type=float, default=None, help="seconds per scene (default 30)")
    p.add_argument("--baked", type=Path, default=None, help="serve a folder made by `ciel bake` instead of generating")
    p.add_argument("--seed", type=int, default=None, help="seed offset of generated scenes")
    p.add_argument("--epoch", type=float, default=None, help="Unix time of scene 0 (default: the patch's [web] epoch)")
    p.add_argument("--export", type=Path, default=None, metavar="DIR",
                   help="write a static site (page, media, manifest.json) for any web server or CDN, then exit")
    p.add_argument("--scenes", type=int, default=24, help="scenes in a static export (they cycle; default 24)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.set_defaults(func=cmd_broadcast)


def web_config(patch: Patch, args: argparse.Namespace) -> WebConfig:
    """The patch's [web] section with the command-line options applied, validated like a patch."""
    table = to_table(patch.web)
    for key in ("host", "port", "period", "seed", "epoch"):
        value = getattr(args, key)
        if value is not None:
            table[key] = value
    if args.baked is not None:
        table["baked"] = str(args.baked.resolve())
    return build(WebConfig, table, "command line")


def make_source(patch: Patch, web: WebConfig) -> SceneSource:
    """A baked folder when web.baked is set (relative to the patch's folder), else live generation."""
    if web.baked:
        base = Path(patch.source).resolve().parent if patch.source != "<defaults>" else Path.cwd()
        return BakedScenes(resolve_path(web.baked, base))
    return LiveScenes(patch, seconds=min(web.period, MAX_LIVE_SECONDS), seed=web.seed)


SKY_KEYS = ("projection", "mapping", "lon", "lat", "roll", "spin", "graticule", "spacing", "colormap", "grain",
            "dissolve", "brightness", "background")


def page_settings(patch: Patch, web: WebConfig) -> dict[str, object]:
    """What the page needs to look like the installation: the patch's sky parameters (their own
    units: degrees, 0..1), the image crossfade time and the initial volume."""
    values = patch_values(patch)
    sky = {k: [float(v) for v in values[REGISTRY.slot(f"sky/{k}")]] if REGISTRY.get(f"sky/{k}").size > 1
           else float(values[REGISTRY.index(f"sky/{k}")]) for k in SKY_KEYS}
    glide = min(ParamView(values).image_glide, web.period / 2)
    return {"volume": web.volume, "glide": glide, "sky": sky}


def cmd_broadcast(args: argparse.Namespace) -> int:
    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    patch = load_patch(args.patch, check_models=False)
    web = web_config(patch, args)
    if not web.baked:
        patch = load_patch(args.patch, check_models=True)  # names a missing model file now, not later
    source = make_source(patch, web)
    if args.export is not None:
        return export(args, patch, web, source)
    broadcast = Broadcast(source, SceneClock(web.period, web.epoch), ahead=web.ahead)
    try:
        server = serve(broadcast, web.host, web.port, note=patch.note, settings=page_settings(patch, web),
                       max_listeners=web.max_listeners)
    except OSError as exc:
        raise ConfigError("command line", "web.port", f"cannot listen on {web.host}:{web.port}: "
                          f"{exc.strerror or exc}") from None
    stopping = threading.Event()

    def stop(signum: int, frame: object) -> None:
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        log.info("preparing the first scene (%s)", f"baked: {web.baked}" if web.baked else "generated live")
        broadcast.start(with_next=bool(web.baked))  # a live scene takes seconds: serve as soon as one is ready
        print(f"ciel: broadcasting on {server.url} (scene every {web.period:g} s)", flush=True)
        server.serve_forever(poll_interval=0.5)
    finally:
        broadcast.stop()
        server.server_close()
        close = getattr(source, "close", None)
        if close is not None:
            close()
    return 0



def export(args: argparse.Namespace, patch: Patch, web: WebConfig, source: SceneSource) -> int:
    """`ciel broadcast --export DIR`: the static site (engine/broadcast/export.py), then exit."""
    from .export import export_static

    if args.scenes < 1:
        raise ConfigError("command line", "--scenes", f"expected at least 1 scene, got {args.scenes}")
    try:
        count = export_static(args.export, source, args.scenes, web.period, web.epoch, patch.note,
                                 page_settings(patch, web))
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()
    print(f"ciel: static broadcast of {count} scenes (every {web.period:g} s) in {args.export}/ "
          "- serve the folder with any web server", flush=True)
    return 0
