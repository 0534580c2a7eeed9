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
