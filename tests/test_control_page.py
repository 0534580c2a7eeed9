"""The control page in a real headless Chromium on a phone-sized screen: it loads without console
errors, shows every group, a dragged slider changes the engine's parameter, and a MIDI CC sent over
JACK MIDI moves the slider (the OSCQuery websocket pushes the change to the page)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import mido
import pytest
from conftest import chromium

from engine.control.config import MidiConfig, MidiMapping, OscConfig, OscQueryConfig
from engine.control.midi import MidiControl
from engine.control.osc import OscServer
from engine.control.oscquery import OscQueryServer
from engine.params import ParamStore

PHONE = (390, 844)
GROUPS = ("sound", "image", "sky", "scene", "listening")


@pytest.fixture
def stage(jackd):
    """A ParamStore with OSC, OSCQuery (serving the page) and MIDI over JACK (CC 22 → sky/lat)."""
    store = ParamStore()
    name = f"ciel-page-test-{os.getpid()}"
    controller = mido.Backend("mido.backends.rtmidi/UNIX_JACK").open_output(name, virtual=True)
    midi = MidiControl(MidiConfig(api="UNIX_JACK", inputs=(name,), takeover="none",
                                  mappings=(MidiMapping(param="sky/lat", number=22),)),
                       store, client_name=f"ciel-page-{os.getpid()}").start()
    osc = OscServer(OscConfig(port=0, heartbeat=0), store).start()
    query = OscQueryServer(OscQueryConfig(port=0, zeroconf=False), store, osc,
                           status=lambda: {"name": "page test", "problems": ["audio: a test problem"], "presets": []}).start()
    stop = threading.Event()

    def poll() -> None:                                   # the engine's main loop polls MIDI once a frame
        while not stop.is_set():
            midi.poll()
            time.sleep(0.01)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        yield store, query, controller, midi
    finally:
        stop.set()
        poller.join()
        query.close()
        osc.close()
        midi.close()
        controller.close()


def test_phone_page_shows_every_group_sets_by_drag_and_follows_midi(stage, tmp_path: Path) -> None:
    store, query, controller, midi = stage
    changes: list[tuple[str, tuple[float, ...], str]] = []
    store.add_listener(lambda name, values, source: changes.append((name, values, source)))
    with chromium(*PHONE) as browser, browser.page(f"http://127.0.0.1:{query.port}/control/") as page:
        page.wait_for("window.cielPage && window.cielPage.ready", 20)
        page.wait_for("document.querySelectorAll('.problems li').length === 1", 10)
        # every group on the first screen of a phone, nothing wider than it
        for group in GROUPS:
            x, y, w, h = page.box(f"#group-{group} summary")
            assert 0 <= x and x + w <= PHONE[0] + 0.5 and 0 <= y and y + h <= PHONE[1], (group, x, y, w, h)
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE[0]
        # unfolded, every row of every group still fits the phone's width
        page.evaluate("document.querySelectorAll('details.group').forEach((d) => { d.open = true; })")
        widest = page.evaluate("Math.max(...[...document.querySelectorAll('.row > *')]"
                               ".filter((e) => e.getClientRects().length).map((e) => e.getBoundingClientRect().right))")
        assert widest <= PHONE[0] + 0.5 and page.evaluate("document.documentElement.scrollWidth") <= PHONE[0], widest
        page.evaluate("document.querySelectorAll('details.group').forEach((d) => { d.open = false; })")
        page.click("#group-sky summary")
        page.wait_for("document.getElementById('p-sky-lon').getBoundingClientRect().width > 0", 5)
        page.evaluate("document.getElementById('p-sky-lon').scrollIntoView({block: 'center'})")
        # drag the longitude slider from its middle to near its right end
        x, y, w, h = page.box("#p-sky-lon")
        page.press(x + w * 0.5, y + h / 2, to_x=x + w * 0.9)
        page.wait_for("true", 0.1)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not store.get1("sky/lon") > 90.0:
            time.sleep(0.02)
        assert store.get1("sky/lon") > 90.0, changes[-5:]
        assert any(n == "sky/lon" and s.startswith("ws:") for n, _, s in changes)   # the page is one more OSC client
        # a knob on the MIDI controller moves the page's slider
        controller.send(mido.Message("control_change", control=22, value=127))
        page.wait_for("Number(document.getElementById('p-sky-lat').value) === 90", 5)
        controller.send(mido.Message("control_change", control=22, value=0))
        page.wait_for("Number(document.getElementById('p-sky-lat').value) === -90", 5)
        # what ciel hears shows as a meter that follows (and offers nothing to drag)
        store.set("listen/level", -12.0, source="listen")
        page.wait_for("document.getElementById('p-listen-level').value === -12", 5)
        assert page.evaluate("document.getElementById('p-listen-level').tagName") == "METER"
        assert page.console_errors == []
        shot = page.screenshot()
    (tmp_path / "control-page.png").write_bytes(shot)
    if os.environ.get("CIEL_DOCS_SHOT"):
        Path(os.environ["CIEL_DOCS_SHOT"]).write_bytes(shot)
