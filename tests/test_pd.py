"""Real Pure Data (`pd -nogui`) with the shipped patch patches/pd/ciel.pd as the OSC client.

The test opens the shipped patch as an abstraction inside a small wrapper that also listens for
FUDI on a UDP port, so the test can move the patch's sliders (`ciel-<name> value`) while Pd runs,
and watch its feedback receiver (`ciel-fb-<name>` printed to stderr).
"""

from __future__ import annotations

import re
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from engine.control.config import OscConfig
from engine.control.osc import OscServer
from engine.params import REGISTRY, ParamStore

ROOT = Path(__file__).resolve().parent.parent
PD_DIR = ROOT / "patches" / "pd"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


WRAPPER = """#N canvas 0 0 400 300 10;
#X obj 10 10 ciel;
#X obj 10 40 netreceive -u {control};
#X msg 10 70 \\; \\$1 \\$2;
#X obj 10 100 r ciel-fb-audio-temperature;
#X obj 10 130 print fb-temperature;
#X connect 1 0 2 0;
#X connect 3 0 4 0;
"""


class PdRun:
    """Pd running the wrapper; `drive(name, value)` moves a control; stderr collected in `lines`."""

    def __init__(self, pd_bin: str, tmp: Path, osc_port: int) -> None:
        self.control, self.feedback = free_udp_port(), free_udp_port()
        wrapper = tmp / "wrapper.pd"
        wrapper.write_text(WRAPPER.format(control=self.control))
        sends = f"ciel-listen {self.feedback}; ciel-connect 127.0.0.1 {osc_port}; ciel-subscribe bang"
        self.proc = subprocess.Popen([pd_bin, "-nogui", "-noaudio", "-nomidi", "-stderr", "-path", str(PD_DIR),
                                      "-send", sends, str(wrapper)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.lines.append(line.rstrip())

    def drive(self, receiver: str, value: str) -> None:
        self.sock.sendto(f"list {receiver} {value};\n".encode(), ("127.0.0.1", self.control))

    def close(self) -> None:
        self.sock.close()
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def wait_until(cond, timeout: float) -> float | None:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if cond():
            return time.perf_counter() - t0
        time.sleep(0.0005)
    return None


@pytest.fixture
def pd_engine(pd_bin, tmp_path):
    store = ParamStore()
    server = OscServer(OscConfig(port=0, heartbeat=0.5), store).start()
    pd = PdRun(pd_bin, tmp_path, server.port)
    try:
        ok = wait_until(lambda: f"127.0.0.1:{pd.feedback}" in server.health()["subscribers"], 10.0)
        assert ok is not None, "Pd never subscribed:\n" + "\n".join(pd.lines)
        yield store, server, pd
    finally:
        pd.close()
        server.close()


def test_parameters_follow_the_pd_patch_within_50ms(pd_engine):
    store, server, pd = pd_engine
    p = REGISTRY.get("audio/gain")
    resolution = (p.maximum - p.minimum) / (180 * 100) * 2   # hsl keeps 1/100 pixel
    latencies = []
    for i in range(30):
        target = -50.0 + i * 1.5
        t0 = time.perf_counter()
        pd.drive("ciel-audio-gain", f"{target}")
        took = wait_until(lambda target=target: abs(store.get1("audio/gain") - target) <= resolution, 2.0)
        assert took is not None, f"audio/gain did not follow Pd to {target}; Pd said:\n" + "\n".join(pd.lines)
        latencies.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.01)
    latencies.sort()
    print(f"Pd → parameter: p50 {latencies[15]:.2f} ms, max {latencies[-1]:.2f} ms")
    assert latencies[int(0.9 * len(latencies))] <= 50.0, f"90% within {latencies[27]:.1f} ms, not 50 ms"
    assert server.counters["malformed"] == 0 and server.counters["unknown"] == 0


def test_pd_offsets_switches_triggers_and_ping(pd_engine):
    store, server, pd = pd_engine
    pd.drive("ciel-audio-offset-3", "2.5")
    pd.drive("ciel-audio-hold", "1")
    pd.drive("ciel-sky-lon", "1000")        # beyond the slider: Pd clips, the engine clamps anyway
    pd.drive("ciel-image-jump", "bang")
    pd.drive("ciel-image-jump", "bang")
    pd.drive("ciel-ping", "bang")
    assert wait_until(lambda: abs(store.get("audio/offset")[3] - 2.5) < 0.01, 2.0) is not None
    assert wait_until(lambda: store.get1("image/jump") == 2.0, 2.0) is not None
    assert wait_until(lambda: store.get1("audio/hold") == 1.0, 2.0) is not None
    assert wait_until(lambda: store.get1("sky/lon") == 180.0, 2.0) is not None
    assert wait_until(lambda: any("ciel: pong" in ln for ln in pd.lines), 2.0) is not None, "\n".join(pd.lines)
    assert server.counters["unknown"] == 0 and server.counters["malformed"] == 0


def test_pd_feedback_receiver_sees_changes_from_other_sources(pd_engine):
    store, server, pd = pd_engine
    store.set("audio/temperature", 2.25, source="midi")
    assert wait_until(lambda: any(re.search(r"fb-temperature: 2\.25\b", ln) for ln in pd.lines), 3.0) is not None, \
        "\n".join(pd.lines)


def test_shipped_patch_is_current_and_uses_only_known_addresses():
    import importlib.util

    spec = importlib.util.spec_from_file_location("pd_generate", PD_DIR / "generate.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)  # type: ignore[union-attr]
    assert (PD_DIR / "ciel.pd").read_text() == gen.build(), "run python patches/pd/generate.py"
    known = {p.address for p in REGISTRY} | {p.address + "/at" for p in REGISTRY if p.size > 1} | {
        "/ciel/ping", "/ciel/subscribe"}
    used = {"/" + m.group(1).replace(" ", "/") for m in re.finditer(r"oscformat ([a-z ]+);", (PD_DIR / "ciel.pd").read_text())}
    assert used and used <= known, used - known
    assert not any(part.isdigit() for a in used for part in a.split("/"))


def test_max_patch_uses_only_known_addresses():
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("max_generate", ROOT / "patches" / "max" / "generate.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)  # type: ignore[union-attr]
    text = (ROOT / "patches" / "max" / "ciel.maxpat").read_text()
    assert text == gen.build(), "run python patches/max/generate.py"
    patch = json.loads(text)
    texts = [b["box"].get("text", "") for b in patch["patcher"]["boxes"]]
    known = {p.address for p in REGISTRY} | {p.address + "/at" for p in REGISTRY if p.size > 1} | {
        "/ciel/ping", "/ciel/pong", "/ciel/subscribe", "/ciel/get", "/ciel/preset/recall", "/ciel/preset/store"}
    used = {w for t in texts for w in t.split() if w.startswith("/ciel")}
    assert len(used) >= 10 and used <= known, used - known
    assert any(t.startswith("udpsend 127.0.0.1 9000") for t in texts)
    assert any(t.startswith("udpreceive 9001") for t in texts)
