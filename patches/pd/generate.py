"""Writes patches/pd/ciel.pd (Pure Data vanilla) from the parameter registry, so its addresses and
ranges never drift from the engine's: `python patches/pd/generate.py`.

The patch has a slider per main parameter, toggles for switches, bangs for triggers, eight
sliders for the first audio latent offsets (sent with /ciel/audio/offset/at), and a feedback
receiver ([netreceive -u -b] → [oscparse] → [route …]) that moves the sliders without sending.
Every slider also listens on `ciel-<name>` (moves and sends) and every feedback value is sent to
`ciel-fb-<name>`, so other patches (and tests) can drive and watch it. `ciel-connect HOST PORT`,
`ciel-listen PORT` and `ciel-subscribe` change where it sends and listens; it subscribes again
every two seconds, so it finds an engine started after it.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from engine.params import REGISTRY  # noqa: E402

HERE = Path(__file__).resolve().parent
SLIDERS = ("audio/gain", "audio/temperature", "audio/walk/speed", "audio/walk/spread", "audio/dissolve",
           "audio/glide", "image/temperature", "image/walk/speed", "image/glide", "sky/lon", "sky/lat",
           "sky/roll", "sky/spin", "sky/graticule", "sky/grain", "sky/dissolve", "sky/brightness", "master/fade")
TOGGLES = ("audio/mute", "audio/hold", "image/hold", "audio/replay", "note/show")
BANGS = ("audio/jump", "image/jump", "scene/next", "panic")
OFFSETS = 8
OSC_PORT, FEEDBACK_PORT = 9000, 9001


class Patch:
    """Pd objects and connections, numbered in the order they are added."""

    def __init__(self) -> None:
        self.lines = ["#N canvas 40 40 1060 760 10;"]
        self.count = 0

    def add(self, kind: str, x: int, y: int, text: str) -> int:
        self.lines.append(f"#X {kind} {x} {y} {text};")
        self.count += 1
        return self.count - 1

    def obj(self, x: int, y: int, text: str) -> int:
        return self.add("obj", x, y, text)

    def msg(self, x: int, y: int, text: str) -> int:
        return self.add("msg", x, y, text)

    def text(self, x: int, y: int, text: str) -> int:
        return self.add("text", x, y, text.replace(",", " \\,").replace(";", " \\;"))

    def wire(self, a: int, b: int, outlet: int = 0, inlet: int = 0) -> None:
        self.lines.append(f"#X connect {a} {outlet} {b} {inlet};")


def dashed(name: str) -> str:
    return name.replace("/", "-")


def osc_args(name: str) -> str:
    return "ciel " + name.replace("/", " ")


def sender(pd: Patch, x: int, y: int, name: str, suffix: str = "") -> int:
    """[oscformat ciel a b] → [s ciel-osc]; returns the oscformat object."""
    fmt = pd.obj(x, y, f"oscformat {osc_args(name)}{suffix}")
    pd.wire(fmt, pd.obj(x, y + 22, "s ciel-osc"))
    return fmt


def build() -> str:
    pd = Patch()
    pd.text(20, 10, "ciel: OSC remote for Pure Data vanilla. Addresses: docs/osc.md. "
            "Sends to 127.0.0.1:9000 and listens for feedback on 9001.")
    # — network: connect, listen, subscribe —
    lb = pd.obj(20, 40, "loadbang")
    init = pd.msg(20, 62, f"\\; ciel-listen {FEEDBACK_PORT} \\; ciel-connect 127.0.0.1 {OSC_PORT} \\; ciel-subscribe bang")
    pd.wire(lb, init)
    rc = pd.obj(330, 40, "r ciel-connect")
    tc = pd.obj(330, 62, "t a b")
    disc = pd.msg(400, 84, "disconnect")
    conn = pd.obj(330, 84, "list prepend connect")
    trim_c = pd.obj(330, 106, "list trim")
    rosc = pd.obj(520, 40, "r ciel-osc")
    prep = pd.obj(520, 62, "list prepend send")
    trim_s = pd.obj(520, 84, "list trim")
    net = pd.obj(450, 130, "netsend -u -b")
    pd.wire(rc, tc)
    pd.wire(tc, disc, 1)
    pd.wire(tc, conn, 0)
    pd.wire(conn, trim_c)
    pd.wire(disc, net)
    pd.wire(trim_c, net)
    pd.wire(rosc, prep)
    pd.wire(prep, trim_s)
    pd.wire(trim_s, net)
    rl = pd.obj(700, 40, "r ciel-listen")
    tl = pd.obj(700, 62, "t f f")
    listen = pd.msg(760, 84, "listen \\$1")
    rs = pd.obj(860, 40, "r ciel-subscribe")
    port = pd.obj(860, 84, f"f {FEEDBACK_PORT}")
    sub = sender(pd, 860, 106, "subscribe")
    pd.wire(rl, tl)
    pd.wire(tl, listen, 1)
    pd.wire(tl, port, 0, 1)
    pd.wire(rs, port)
    pd.wire(port, sub)
    renew = pd.obj(960, 40, "metro 2000")   # subscribe again every 2 s: the engine may start later
    pd.wire(lb, renew)
    pd.wire(renew, port)

    # — controls —
    pd.text(20, 170, "sliders: drag to send / feedback moves them without sending")
    for i, name in enumerate(SLIDERS):
        p = REGISTRY.get(name)
        x, y = 20 + (i % 3) * 340, 200 + (i // 3) * 60
        label = f"{name}_{p.unit}" if p.unit else name
        hsl = pd.obj(x, y, f"hsl 180 15 {p.minimum:g} {p.maximum:g} 0 0 empty ciel-{dashed(name)} {label} "
                           f"-2 -8 0 10 -262144 -1 -1 0 1")
        pd.wire(hsl, sender(pd, x, y + 18, name))
    y0 = 200 + ((len(SLIDERS) + 2) // 3) * 60
    pd.text(20, y0, "audio latent offsets 1-8 (sigma)")
    p = REGISTRY.get("audio/offset")
    for i in range(OFFSETS):
        x = 20 + i * 70
        vsl = pd.obj(x, y0 + 20, f"vsl 15 100 {p.minimum:g} {p.maximum:g} 0 0 empty ciel-audio-offset-{i} "
                                 f"empty 0 -9 0 10 -262144 -1 -1 0 1")
        idx = pd.obj(x, y0 + 130, f"list prepend {i}")
        pd.wire(vsl, idx)
        pd.wire(idx, sender(pd, x, y0 + 152, "audio/offset", " at"))
    y1 = y0 + 210
    pd.text(20, y1, "switches and triggers")
    for i, name in enumerate(TOGGLES):
        x = 20 + i * 130
        tgl = pd.obj(x, y1 + 20, f"tgl 20 0 empty ciel-{dashed(name)} {name} 24 10 0 10 -262144 -1 -1 0 1")
        pd.wire(tgl, sender(pd, x, y1 + 45, name))
    for i, name in enumerate(BANGS + ("ping",)):
        x = 20 + i * 130
        bng = pd.obj(x, y1 + 100, f"bng 25 250 50 0 empty ciel-{dashed(name)} {name} 28 12 0 10 -262144 -1 -1")
        one = pd.msg(x, y1 + 130, "1")
        pd.wire(bng, one)
        pd.wire(one, sender(pd, x, y1 + 152, name if name != "ping" else "ping"))

    # — feedback receiver —
    y2 = y1 + 210
    pd.text(20, y2, "feedback: values changed elsewhere (MIDI \\, other patches \\, the scheduler)")
    recv = pd.obj(20, y2 + 20, "netreceive -u -b")
    pd.wire(listen, recv)
    parse = pd.obj(20, y2 + 42, "oscparse")
    trim = pd.obj(20, y2 + 64, "list trim")
    root = pd.obj(20, y2 + 86, "route ciel")
    pd.wire(recv, parse)
    pd.wire(parse, trim)
    pd.wire(trim, root)
    tree: dict = {}
    for name in SLIDERS + TOGGLES + ("audio/offset",):
        node = tree
        for part in name.split("/"):
            node = node.setdefault(part, {})
    tree["pong"], tree["heartbeat"] = {}, {}
    col = [20]

    def route(node: dict, parent: int, outlet: int, path: list[str], x: int, y: int) -> None:
        keys = list(node)
        r = pd.obj(x, y, "route " + " ".join(keys))
        pd.wire(parent, r, outlet)
        for k, key in enumerate(keys):
            full = path + [key]
            if node[key]:
                route(node[key], r, k, full, col[0], y + 26)
                continue
            name = "/".join(full)
            cx = col[0]
            col[0] += 105
            if name == "pong":
                word = pd.msg(cx, y + 26, "pong")
                pd.wire(r, word, k)
                pd.wire(word, pd.obj(cx, y + 48, "print ciel"))
            elif name == "audio/offset":
                unpack = pd.obj(cx, y + 26, "unpack " + " ".join(["0"] * OFFSETS))
                pd.wire(r, unpack, k)
                for i in range(OFFSETS):
                    pd.wire(unpack, pd.obj(cx + i * 12, y + 48 + 22 * i, f"s ciel-fb-audio-offset-{i}"), i)
                col[0] += 80
            else:
                pd.wire(r, pd.obj(cx, y + 26, f"s ciel-fb-{dashed(name)}"), k)

    route(tree, root, 0, [], 120, y2 + 86)
    y3 = y2 + 330
    pd.text(20, y3, "feedback moves the controls without sending back")
    names = SLIDERS + TOGGLES + tuple(f"audio/offset/{i}" for i in range(OFFSETS))
    for i, name in enumerate(names):
        x, y = 20 + (i % 8) * 130, y3 + 20 + (i // 8) * 70
        fb = pd.obj(x, y, f"r ciel-fb-{dashed(name)}")
        st = pd.msg(x, y + 22, "set \\$1")
        pd.wire(fb, st)
        pd.wire(st, pd.obj(x, y + 44, f"s ciel-{dashed(name)}"))
    return "\n".join(pd.lines) + "\n"


if __name__ == "__main__":
    (HERE / "ciel.pd").write_text(build())
    print(HERE / "ciel.pd")
