"""OSCQuery: a zeroconf browser finds the service, and its JSON has every parameter with its range."""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request

import pytest
from pythonosc.osc_message import OscMessage
from websockets.sync.client import connect
from zeroconf import IPVersion, ServiceBrowser, ServiceListener, Zeroconf

from engine.control.config import OscConfig, OscQueryConfig
from engine.control.osc import OscServer, message
from engine.control.oscquery import OscQueryServer, find
from engine.errors import CielError
from engine.params import REGISTRY, ParamStore
from harness.osc import OscClient


def get(url: str):
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status, json.loads(resp.read() or b"null")


@pytest.fixture
def served():
    store = ParamStore()
    name = f"ciel-test-{os.getpid()}"
    osc = OscServer(OscConfig(port=0), store).start()
    query = OscQueryServer(OscQueryConfig(port=0, name=name), store, osc).start()
    try:
        yield store, osc, query, name
    finally:
        query.close()
        osc.close()


class Found(ServiceListener):
    def __init__(self, wanted: str) -> None:
        self.wanted, self.info, self.event = wanted, None, threading.Event()

    def add_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        if name.startswith(self.wanted):
            self.info = zc.get_service_info(type_, name, timeout=3000)
            self.event.set()

    def update_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        self.add_service(zc, type_, name)

    def remove_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        pass


def test_zeroconf_browser_finds_the_tree_with_every_parameter_and_range(served):
    store, osc, query, name = served
    zc = Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    found = Found(name)
    browser = ServiceBrowser(zc, "_oscjson._tcp.local.", found)
    try:
        assert found.event.wait(15), "no _oscjson._tcp service seen within 15 s"
        info = found.info
        assert info is not None and info.port == query.port
        host = info.parsed_addresses()[0]
    finally:
        browser.cancel()
        zc.close()
    status, root = get(f"http://{host}:{info.port}/")
    assert status == 200
    for p in REGISTRY:
        node = find(root, p.address)
        assert node is not None, f"{p.address} missing from the OSCQuery tree"
        assert node["FULL_PATH"] == p.address
        if p.kind == "trigger":
            assert node["ACCESS"] == 2
            continue
        assert node["ACCESS"] == (1 if p.readonly else 3)   # measured (listen/*): read-only
        assert len(node["TYPE"]) == p.size
        if p.kind == "bool":
            assert node["RANGE"] == [{"VALS": [False, True]}] * p.size and node["TYPE"] == "T" * p.size
        else:
            rng = node["RANGE"][0]
            assert len(node["RANGE"]) == p.size
            assert (rng["MIN"], rng["MAX"]) == (pytest.approx(p.minimum), pytest.approx(p.maximum))
        assert node["VALUE"] == pytest.approx(list(store.get(p.name)))
        assert node["DESCRIPTION"].startswith(p.description)
    status, hi = get(f"http://{host}:{info.port}/?HOST_INFO")
    assert hi["OSC_PORT"] == osc.port and hi["OSC_TRANSPORT"] == "UDP"
    assert hi["EXTENSIONS"]["RANGE"] is True


def test_values_follow_osc_and_bad_paths_answer_404(served):
    store, osc, query, _ = served
    base = f"http://127.0.0.1:{query.port}"
    c = OscClient(port=osc.port)
    try:
        c.send("/ciel/sky/spin", -12.0)
        c.send("/ciel/ping")
        assert c.wait_for("/ciel/pong") == ()
    finally:
        c.close()
    assert get(base + "/ciel/sky/spin?VALUE") == (200, {"VALUE": [-12.0]})
    status, node = get(base + "/ciel/sky")
    assert "spin" in node["CONTENTS"] and node["FULL_PATH"] == "/ciel/sky"
    assert get(base + "/ciel/sky/colormap?TYPE") == (200, {"TYPE": "i"})
    with pytest.raises(urllib.error.HTTPError) as err:
        get(base + "/ciel/no/such")
    assert err.value.code == 404


def test_closing_right_after_start_does_not_hang():
    store = ParamStore()
    t0 = time.monotonic()
    with OscServer(OscConfig(port=0), store) as osc:
        OscQueryServer(OscQueryConfig(port=0, name=f"ciel-quick-{os.getpid()}"), store, osc).start().close()
    assert time.monotonic() - t0 < 10


def test_listen_pushes_changes_from_other_sources_as_osc_over_the_websocket(served):
    store, osc, query, _ = served
    url = f"ws://127.0.0.1:{query.port}/"
    with connect(url) as ws, connect(url) as other:
        ws.send(json.dumps({"COMMAND": "LISTEN", "DATA": "/ciel/sky"}))      # a container: all of the sky
        ws.send(json.dumps({"COMMAND": "LISTEN", "DATA": "/ciel/audio/mute"}))
        ws.send(message("/ciel/ping", [1]))                                   # answered after the LISTENs are in
        assert ws.recv(timeout=5).startswith(b"/ciel/pong")
        store.set("sky/lon", 30.0, source="midi:knob")
        store.set("audio/gain", -3.0, source="midi:knob")                     # not listened to: never pushed
        store.set("audio/mute", 1.0, source="scheduler")
        got = [OscMessage(ws.recv(timeout=5)) for _ in range(2)]
        assert {(m.address, tuple(m.params)) for m in got} == {("/ciel/sky/lon", (30.0,)), ("/ciel/audio/mute", (True,))}
        other.send(message("/ciel/norm/sky/lat", [0.25]))                     # another client's change reaches us
        pushed = OscMessage(ws.recv(timeout=5))
        assert (pushed.address, pushed.params) == ("/ciel/sky/lat", [-45.0])
        ws.send(message("/ciel/sky/roll", [12.0]))                            # our own change is not echoed
        ws.send(json.dumps({"COMMAND": "IGNORE", "DATA": "/ciel/sky"}))
        ws.send(message("/ciel/ping", [2]))
        assert ws.recv(timeout=5).startswith(b"/ciel/pong")                   # the roll and the IGNORE are in
        store.set("sky/spin", 2.0, source="midi:knob")
        time.sleep(0.3)                                                        # a push would have come by now
        ws.send(message("/ciel/ping", [3]))
        assert ws.recv(timeout=5).startswith(b"/ciel/pong")
        assert store.get1("sky/roll") == 12.0


def test_tree_speaks_the_spec_switches_enumerations_units_colour_and_commands(served):
    store, osc, query, _ = served
    osc.presets["dawn"] = {"sky/lon": 10.0}
    base = f"http://127.0.0.1:{query.port}"
    mute = get(base + "/ciel/audio/mute")[1]
    assert mute["TYPE"] == "T" and mute["VALUE"] == [False] and mute["RANGE"] == [{"VALS": [False, True]}]
    proj = get(base + "/ciel/sky/projection")[1]
    assert proj["RANGE"][0]["VALS"] == [0, 1] and "Hammer-Aitoff" in proj["DESCRIPTION"]
    assert get(base + "/ciel/audio/gain?UNIT") == (200, {"UNIT": ["gain.db"]})
    bg = get(base + "/ciel/sky/background")[1]
    assert bg["EXTENDED_TYPE"] == ["color.rgb"] * 3 and bg["UNIT"] == ["color.rgb"] * 3
    recall = get(base + "/ciel/preset/recall")[1]
    assert recall["TYPE"] == "s" and recall["RANGE"] == [{"VALS": ["dawn"]}] and recall["ACCESS"] == 2
    assert get(base + "/ciel/learn?TYPE") == (200, {"TYPE": "si"})
    assert get(base + "/?HOST_INFO")[1]["EXTENSIONS"]["LISTEN"] is True


def test_control_page_is_served_with_the_broadcast_pages_headers(served):
    _, _, query, _ = served
    with urllib.request.urlopen(f"http://127.0.0.1:{query.port}/control/", timeout=5) as resp:
        csp = resp.headers["Content-Security-Policy"]
        assert resp.status == 200 and b"page.js" in resp.read()
    assert "connect-src 'self'" in csp and "default-src 'self'" in csp
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://127.0.0.1:{query.port}/control/../../etc/passwd", timeout=5)
    assert err.value.code == 404


def test_no_allow_list_refuses_to_open_to_the_network():
    store = ParamStore()
    with pytest.raises(CielError, match="allow-list"):
        OscServer(OscConfig(host="0.0.0.0", port=0), store)


def test_a_page_from_another_site_cannot_open_the_websocket(served):
    """A browser on this machine counts as this machine (it may quit the show): only the control
    page's own origin, and tools that send no Origin, may open the websocket."""
    from websockets.exceptions import InvalidStatus

    _, _, query, _ = served
    url = f"ws://127.0.0.1:{query.port}/"
    with pytest.raises(InvalidStatus) as err:
        connect(url, origin="http://evil.example").close()
    assert err.value.response.status_code == 403
    with connect(url, origin=f"http://127.0.0.1:{query.port}"):     # the control page itself
        pass
    with connect(url):                                              # ossia score, Chataigne: no Origin
        pass


def test_listen_commands_racing_value_changes_never_break_the_setter(served):
    """LISTEN/IGNORE arrive on the connection's thread while a MIDI or scheduler thread sets values:
    the setter never sees an error, and paths that are not in the tree are not kept."""
    store, osc, query, _ = served
    errors: list[BaseException] = []
    with connect(f"ws://127.0.0.1:{query.port}/") as ws:
        def churn() -> None:
            for i in range(400):
                verb = "LISTEN" if i % 2 == 0 else "IGNORE"
                ws.send(json.dumps({"COMMAND": verb, "DATA": f"/ciel/sky/{'lon' if i % 4 < 2 else 'lat'}"}))
                ws.send(json.dumps({"COMMAND": "LISTEN", "DATA": f"/no/such/{i}"}))
        t = threading.Thread(target=churn)
        t.start()
        try:
            for i in range(3000):
                store.set("sky/lon", float(i % 180), source="midi")
        except Exception as exc:  # what a MIDI reader thread would die of
            errors.append(exc)
        t.join()
        ws.send(message("/ciel/ping", [1]))
        while not ws.recv(timeout=5).startswith(b"/ciel/pong"):
            pass
    assert errors == []
    assert query.status()["listeners"] <= 1


def test_a_pathological_address_pattern_does_not_stall_the_server(served):
    store, osc, _, _ = served
    from harness.osc import OscClient

    c = OscClient(port=osc.port)
    try:
        c.send("/ciel/*/****************#", 1.0)
        c.send("/ciel/a*a*a*a*a*a*a*a*b", 1.0)        # refused: over four '*' in one part
        c.send("/ciel/ping", 5)
        assert c.wait_for("/ciel/pong", 10.0) == (5,)
    finally:
        c.close()
    assert osc.counters["malformed"] == 1 and osc.counters["unknown"] == 1
