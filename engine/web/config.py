"""The `[web]` section of a patch: the broadcast page."""

from __future__ import annotations

from dataclasses import dataclass

from ..configio import field


@dataclass(frozen=True)
class WebConfig:
    host: str = field("127.0.0.1", doc="Listen address of the broadcast page.")
    port: int = field(8080, minimum=0, maximum=65535)
    period: float = field(30.0, minimum=1.0, maximum=86400.0, doc="Seconds between scenes.")
    baked: str = field("", doc="Serve scenes from a baked folder (empty = generate).")
    health_port: int = field(8090, minimum=0, maximum=65535, doc="Port of /healthz on localhost.")
    epoch: float = field(0.0, minimum=0.0, doc="Unix time of scene 0; scene id = floor((now - epoch) / period).")
    ahead: int = field(2, minimum=1, maximum=16, doc="Scenes generated (or read) ahead of the clock.")
    seed: int = field(0, minimum=0, doc="Added to the scene id to make the seed of a generated scene.")
    max_listeners: int = field(2000, minimum=1, maximum=100000, doc="Open /events streams allowed at once.")
    volume: float = field(0.7, minimum=0.0, maximum=1.0, doc="Initial volume of the page (1 = the file's own level).")
