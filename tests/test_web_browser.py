"""The broadcast page in a real headless Chromium (Debian's `chromium`, driven over the DevTools
pipe by engine/web/chromium.py): it loads without console errors, draws the oval where the
projection puts it, plays sound after start (never louder than the file), changes scene after one
period, shows every visitor the same scene, opens the program note and reconnects by itself."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
from conftest import chromium
from PIL import Image
from test_web import make_baked

from engine.broadcast.commands import page_settings
from engine.broadcast.source import BakedScenes
from engine.patch import load_patch
from engine.visual.projection import SQRT2, layout
from engine.web.config import WebConfig
from engine.web.live import serve
from engine.web.server import Broadcast, SceneClock

PERIOD = 5.0
W, H = 640, 400
NOTE = "A programme note for the test.\n\nSecond paragraph."


def start_site(baked, port: int = 0, broadcast: Broadcast | None = None):
    """A broadcast on the real clock (started if new) and its server thread on 127.0.0.1."""
    if broadcast is None:
        broadcast = Broadcast(BakedScenes(baked), SceneClock(PERIOD), ahead=2)
        broadcast.start()
    settings = page_settings(load_patch(check_models=False), WebConfig(period=PERIOD))
    server = serve(broadcast, "127.0.0.1", port, note=NOTE, settings=settings)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server, broadcast


def stop_site(server) -> None:
    """Stop serving (once) and close every open connection, as a stopped `ciel broadcast` would."""
    if not getattr(server, "stopped", False):
        server.stopped = True
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def baked(tmp_path_factory):
    return make_baked(tmp_path_factory.mktemp("baked"), count=3, seconds=3.0)


@pytest.fixture(scope="module")
def browser():
    with chromium(W, H) as b:
        yield b


@pytest.fixture(scope="module")
def site(baked):
    server, broadcast = start_site(baked)
    try:
        yield server
    finally:
        stop_site(server)
        broadcast.stop()


@pytest.fixture()
def pages(browser):
    """Open pages through this; they are closed after the test (an open tab keeps drawing)."""
    opened = []

    def open_page(url):
        page = browser.page(url)
        opened.append(page)
        page.wait_for("window.ciel && window.ciel.skyReady && window.ciel.sceneId !== null && window.ciel.frames > 2",
                      timeout=60)
        return page

    yield open_page
    for page in opened:
        page.close()


def pixels(page) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB")).astype(int)


def at(img: np.ndarray, x: float, y: float, r: int = 0) -> np.ndarray:
    """Mean colour around plane point (x, y) of the oval (y up), r pixels either side."""
    lay = layout(W, H)
    px, py = int(lay.cx + lay.scale * x), int(H - (lay.cy + lay.scale * y))
    return img[py - r:py + r + 1, px - r:px + r + 1].reshape(-1, 3).mean(axis=0)


def test_page_draws_the_oval_and_plays_after_start(pages, site):
    page = pages(site.url)
    assert page.evaluate("window.ciel.audio") is None  # nothing plays before start
    assert page.evaluate("getComputedStyle(document.getElementById('intro')).display") != "none"
    assert page.evaluate("getComputedStyle(document.getElementById('controls')).display") == "none"
    # Start from the keyboard: focus the button and press Enter.
    page.evaluate("document.getElementById('start').focus()")
    page.key("Enter", "Enter", 13, "\r")
    page.wait_for("window.ciel.started && document.getElementById('intro').hidden")
    page.wait_for("(a => a && a.state === 'running' && a.time > 0.5 && a.rms > 0.01)(window.ciel.audio)", timeout=30)
    assert page.evaluate("document.activeElement.id") == "volume"

    img = pixels(page)
    a, b = 2 * SQRT2, SQRT2  # semi-axes of the oval in plane units
    background = np.array([0, 0, 0])
    inside = [(0, 0), (0.9 * a, 0), (-0.9 * a, 0), (0, 0.9 * b), (0, -0.9 * b), (0.5 * a, 0.5 * b)]
    outside = [(1.04 * a, 0), (-1.04 * a, 0), (0, 1.06 * b), (0.8 * a, 0.75 * b), (-0.8 * a, 0.75 * b)]
    for x, y in inside:
        assert np.abs(at(img, x, y) - background).sum() > 60, f"inside ({x:.2f}, {y:.2f}) looks like background"
    for x, y in outside:
        assert np.array_equal(at(img, x, y), background), f"outside ({x:.2f}, {y:.2f}) is {at(img, x, y)}"
    assert np.array_equal(img[2, 2], background) and np.array_equal(img[2, W - 3], background)
    lay = layout(W, H)
    grey = img[int(H - lay.note_y), int(lay.note_x)]
    assert np.all(np.abs(grey - 128) < 20), f"grey circle missing: {grey}"

    # Never louder than the file: at full volume the output peak is the file's (the limiter's
    # makeup gain is trimmed away), whatever the volume was during the start fade.
    page.evaluate("(v => { v.value = '1'; v.dispatchEvent(new Event('input')); })(document.getElementById('volume'))")
    time.sleep(3.5)  # the start fade-in
    peaks = []
    for _ in range(10):
        level = page.evaluate("window.ciel.audio")
        peaks.append((level["peak"], level["filePeak"]))
        time.sleep(0.1)
    out, file_peak = max(p for p, _ in peaks), min(f for _, f in peaks)
    assert 0.9 * file_peak < out <= 1.01 * file_peak, peaks
    assert page.console_errors == []


def test_scene_changes_after_one_period_and_visitors_agree(pages, site):
    first = pages(site.url)
    second = pages(site.url)  # a new browser context: no shared cache or state
    first.click("#start")
    scene = first.evaluate("window.ciel.sceneId")
    before = at(pixels(first), 0.5, 0.0, r=4)
    changed = first.wait_for(f"window.ciel.sceneId > {scene} && window.ciel.sceneId", timeout=PERIOD + 20)
    assert changed == scene + 1
    time.sleep(min(4.0, PERIOD / 2) + 0.5)  # the image crossfade
    after = at(pixels(first), 0.5, 0.0, r=4)
    assert np.abs(after - before).sum() > 40, (before, after)  # a different image on screen
    agreed = 0
    deadline = time.monotonic() + 3 * PERIOD
    while agreed < 3 and time.monotonic() < deadline:
        ttn = first.evaluate("window.ciel.timeToNext")
        if 1.0 < ttn < PERIOD - 1.5:  # away from a change (each page switches when its files are in)
            assert first.evaluate("window.ciel.sceneId") == second.evaluate("window.ciel.sceneId")
            agreed += 1
        time.sleep(0.7)
    assert agreed == 3
    assert first.console_errors == [] and second.console_errors == []


def test_grey_circle_opens_the_program_note(pages, site):
    page = pages(site.url)
    page.click("#circle")
    page.wait_for("document.getElementById('note').open")
    text = page.evaluate("document.getElementById('note').innerText")
    assert "A programme note for the test." in text and "Second paragraph." in text
    assert page.evaluate("document.getElementById('circle').getAttribute('aria-expanded')") == "true"
    page.key("Escape", "Escape", 27)
    # The dialog's "close" event is queued after `open` turns false: wait for what it does.
    page.wait_for("!document.getElementById('note').open"
                  " && document.getElementById('circle').getAttribute('aria-expanded') === 'false'")
    assert page.evaluate("document.activeElement.id") == "circle"
    assert page.console_errors == []


def test_page_reconnects_after_the_server_restarts(pages, baked):
    server, broadcast = start_site(baked)
    port = server.server_address[1]
    try:
        page = pages(server.url)
        page.wait_for("window.ciel.connected")
        stop_site(server)
        page.wait_for("!window.ciel.connected", timeout=30)
        scene = page.evaluate("window.ciel.sceneId")
        time.sleep(1.0)
        server, _ = start_site(baked, port=port, broadcast=broadcast)
        page.wait_for("window.ciel.connected", timeout=30)
        page.wait_for(f"window.ciel.sceneId > {scene}", timeout=PERIOD + 20)
    finally:
        stop_site(server)
        broadcast.stop()


def test_a_late_scene_is_held_then_shown_when_ready(pages, baked):
    class Slow:
        """Baked scenes, but every scene after the first waits for `ready` (a slow generator)."""

        def __init__(self) -> None:
            self.inner, self.ready, self.first = BakedScenes(baked), threading.Event(), None

        def prepare(self, scene_id: int):
            if self.first is None:
                self.first = scene_id
            elif scene_id > self.first:
                self.ready.wait(timeout=60)
            return self.inner.prepare(scene_id)

    source = Slow()
    broadcast = Broadcast(source, SceneClock(PERIOD), ahead=1)
    broadcast.start(with_next=False)
    server, _ = start_site(baked, broadcast=broadcast)
    try:
        page = pages(server.url)
        held = page.wait_for("window.ciel.scene.held && window.ciel.scene", timeout=PERIOD + 20)
        # The late scene's time has come: the page shows its id with the previous scene's files.
        assert held["id"] == source.first + 1 and held["image"] == source.inner.prepare(source.first).image.url
        source.ready.set()
        real = page.wait_for("!window.ciel.scene.held && window.ciel.scene", timeout=PERIOD + 20)
        assert real["id"] >= source.first + 1 and real["image"] != held["image"]
        assert page.console_errors == []
    finally:
        source.ready.set()
        stop_site(server)
        broadcast.stop()
