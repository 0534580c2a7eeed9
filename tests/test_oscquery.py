"""OSCQuery: a zeroconf browser finds the service, and its JSON has every parameter with its range."""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request

import pytest
from zeroconf import IPVersion, ServiceBrowser, ServiceListener, Zeroconf

from engine.control.config import OscConfig, OscQueryConfig
from engine.control.osc import OscServer
from engine.control.oscquery import OscQueryServer, find
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
    query = OscQueryServer(OscQueryConfig(port=0, name=name), store, osc_port=osc.port).start()
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
        assert node["ACCESS"] == 3
        assert len(node["TYPE"]) == p.size
        assert node["RANGE"] == [{"MIN": pytest.approx(p.minimum), "MAX": pytest.approx(p.maximum)}] * p.size
        assert node["VALUE"] == pytest.approx(list(store.get(p.name)))
        assert node["DESCRIPTION"] == p.description
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
    OscQueryServer(OscQueryConfig(port=0, name=f"ciel-quick-{os.getpid()}"), store, osc_port=9000).start().close()
    assert time.monotonic() - t0 < 10
