"""Writes patches/max/ciel.maxpat (Max 8) from the parameter registry: `python patches/max/generate.py`.

The same controls as the Pd patch (patches/pd/generate.py lists them): a slider per main
parameter, toggles for switches, buttons for triggers, preset recall/store; every control goes
through [prepend /ciel/…] to [udpsend 127.0.0.1 9000]. [udpreceive 9001] → [route /ciel/…] →
[prepend set] moves the controls with feedback without sending it back; /ciel/subscribe 9001 is
sent when the patch opens and every two seconds after, so it finds an engine started later.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from engine.params import REGISTRY  # noqa: E402

_spec = importlib.util.spec_from_file_location("pd_generate", HERE.parent / "pd" / "generate.py")
pd = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pd)  # type: ignore[union-attr]


class MaxPatch:
    def __init__(self) -> None:
        self.boxes: list[dict[str, Any]] = []
        self.lines: list[dict[str, Any]] = []

    def box(self, maxclass: str, x: float, y: float, w: float = 120, h: float = 22, **attrs: Any) -> str:
        ident = f"obj-{len(self.boxes) + 1}"
        self.boxes.append({"box": {"id": ident, "maxclass": maxclass, "patching_rect": [x, y, w, h], **attrs}})
        return ident

    def obj(self, x: float, y: float, text: str, inlets: int = 1, outlets: int = 1, w: float = 150) -> str:
        return self.box("newobj", x, y, w, 22, text=text, numinlets=inlets, numoutlets=outlets,
                        outlettype=[""] * outlets)

    def msg(self, x: float, y: float, text: str, w: float = 150) -> str:
        return self.box("message", x, y, w, 22, text=text, numinlets=2, numoutlets=1, outlettype=[""])

    def comment(self, x: float, y: float, text: str, w: float = 400) -> str:
        return self.box("comment", x, y, w, 20, text=text, numinlets=1, numoutlets=0)

    def wire(self, a: str, b: str, outlet: int = 0, inlet: int = 0) -> None:
        self.lines.append({"patchline": {"source": [a, outlet], "destination": [b, inlet]}})

    def dump(self) -> str:
        patcher = {"fileversion": 1, "appversion": {"major": 8, "minor": 5, "revision": 0, "architecture": "x64",
                                                    "modernui": 1},
                   "classnamespace": "box", "rect": [60.0, 60.0, 1100.0, 820.0], "openinpresentation": 0,
                   "default_fontsize": 12.0, "gridsize": [15.0, 15.0], "boxes": self.boxes, "lines": self.lines}
        return json.dumps({"patcher": patcher}, indent=1) + "\n"


def build() -> str:
    mx = MaxPatch()
    mx.comment(20, 10, "ciel: OSC remote for Max. Addresses: docs/osc.md. Sends to 127.0.0.1:9000, "
                       "feedback on 9001.", 700)
    send = mx.obj(900, 40, "udpsend 127.0.0.1 9000", 1, 0)
    lb = mx.obj(20, 40, "loadbang", 1, 1, 70)
    renew = mx.obj(100, 40, "metro 2000", 2, 1, 80)   # subscribe again every 2 s: the engine may start later
    sub = mx.msg(20, 70, "/ciel/subscribe 9001")
    mx.wire(lb, renew)
    mx.wire(renew, sub)
    mx.wire(sub, send)
    for i, text in enumerate(("/ciel/ping", "/ciel/get", "/ciel/preset/recall 1", "/ciel/preset/store 1")):
        m = mx.msg(200 + i * 170, 70, text)
        mx.wire(m, send)
    targets: dict[str, str] = {}
    for i, name in enumerate(pd.SLIDERS):
        p = REGISTRY.get(name)
        x, y = 20 + (i % 3) * 360, 120 + (i // 3) * 60
        mx.comment(x, y, f"{name} {p.unit}".strip(), 200)
        sl = mx.box("slider", x, y + 20, 160, 20, floatoutput=1, min=p.minimum, size=p.maximum - p.minimum,
                    orientation=1, numinlets=1, numoutlets=1, outlettype=[""], parameter_enable=0)
        pre = mx.obj(x + 170, y + 20, f"prepend {p.address}", 1, 1, 170)
        mx.wire(sl, pre)
        mx.wire(pre, send)
        targets[p.address] = sl
    y0 = 120 + ((len(pd.SLIDERS) + 2) // 3) * 60
    for i, name in enumerate(pd.TOGGLES):
        p = REGISTRY.get(name)
        x = 20 + i * 170
        mx.comment(x, y0, name, 150)
        tg = mx.box("toggle", x, y0 + 20, 24, 24, numinlets=1, numoutlets=1, outlettype=["int"], parameter_enable=0)
        pre = mx.obj(x, y0 + 50, f"prepend {p.address}", 1, 1, 160)
        mx.wire(tg, pre)
        mx.wire(pre, send)
        targets[p.address] = tg
    for i, name in enumerate(pd.BANGS):
        p = REGISTRY.get(name)
        x = 20 + i * 170
        bt = mx.box("button", x, y0 + 90, 24, 24, numinlets=1, numoutlets=1, outlettype=["bang"], parameter_enable=0)
        m = mx.msg(x, y0 + 120, p.address, 150)
        mx.wire(bt, m)
        mx.wire(m, send)
    mx.comment(20, y0 + 160, "feedback: values changed elsewhere move the controls without sending", 600)
    recv = mx.obj(20, y0 + 185, "udpreceive 9001", 1, 1, 120)
    addresses = list(targets) + ["/ciel/pong"]
    route = mx.obj(20, y0 + 215, "route " + " ".join(addresses), 1, len(addresses) + 1, 1000)
    mx.wire(recv, route)
    for k, address in enumerate(addresses):
        x = 20 + (k % 8) * 130
        y = y0 + 250 + (k // 8) * 60
        if address == "/ciel/pong":
            pr = mx.obj(x, y, "print ciel-pong", 1, 0, 110)
            mx.wire(route, pr, k)
            continue
        st = mx.obj(x, y, "prepend set", 1, 1, 90)
        mx.wire(route, st, k)
        mx.wire(st, targets[address])
    return mx.dump()


if __name__ == "__main__":
    (HERE / "ciel.maxpat").write_text(build())
    print(HERE / "ciel.maxpat")
