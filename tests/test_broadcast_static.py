"""The static broadcast (`ciel broadcast --export DIR`) hosted by plain web servers, as on any host
or CDN: nginx from Debian and Python's http.server serve the folder; pages opened 10 s apart in
headless Chromium show the same scene and picture, and change together at the period boundary."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import chromium, missing
from test_web import make_baked

from engine import cli
from harness import parts

PERIOD = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def export(baked: Path, site: Path, epoch: float) -> None:
    assert cli.main(["broadcast", "--baked", str(baked), "--export", str(site), "--scenes", "3",
                     "--period", str(PERIOD), "--epoch", f"{epoch:.3f}"]) == 0


@pytest.fixture(scope="module")
def browser():
    with chromium(960, 540) as b:
        yield b


SHOWN = "window.ciel && window.ciel.skyReady && window.ciel.sceneId !== null && window.ciel.frames > 2"


def test_export_writes_a_self_contained_site(tmp_path: Path) -> None:
    site = tmp_path / "site"
    export(make_baked(tmp_path / "baked"), site, 0.0)
    manifest = json.loads((site / "manifest.json").read_text())
    assert manifest["period"] == PERIOD and len(manifest["scenes"]) == 3
    for scene in manifest["scenes"]:
        for key in ("sound", "image"):
            assert not scene[key].startswith("/") and (site / scene[key]).is_file()
    page = (site / "index.html").read_text()
    assert '"static":true' in page and 'src="static/app.js"' in page
    assert (site / "shaders" / "webgl" / "sky.frag").is_file()


def test_two_visitors_of_nginx_see_the_same_scene_and_it_changes_at_the_boundary(browser, tmp_path: Path) -> None:
    site = tmp_path / "site"
    epoch = time.time() - 0.5                                     # scene 0 has just begun
    export(make_baked(tmp_path / "baked"), site, epoch)
    port = free_port()
    try:
        parts.nginx_binary()
    except FileNotFoundError as exc:
        missing(str(exc))
    url = f"http://127.0.0.1:{port}/"
    state = "[window.ciel.sceneId, window.ciel.scene.image]"
    with parts.nginx(site, port):
        first = browser.page(url)
        first.wait_for(SHOWN, timeout=60)
        opened = time.monotonic()
        time.sleep(max(0.0, 4.0 - (time.monotonic() - opened)))    # the second visitor comes later
        second = browser.page(url)                               # a new browser context: its own clock and cache
        second.wait_for(SHOWN, timeout=60)
        for _ in range(3):                                       # read both at one moment (not across a boundary)
            now_id = int((time.time() - epoch) // PERIOD)
            a, b = first.evaluate(state), second.evaluate(state)
            if a[0] == b[0] == now_id == int((time.time() - epoch) // PERIOD):
                break
            time.sleep(1.5)
        assert a == b and a[0] == now_id, (a, b, now_id)
        for page in (first, second):                             # at the next boundary both move on together
            page.wait_for(f"window.ciel.sceneId === {now_id + 1}", timeout=PERIOD + 30)
        assert first.evaluate("window.ciel.scene.image") == second.evaluate("window.ciel.scene.image") != a[1]
        assert first.console_errors == [] and second.console_errors == []
        first.close()
        second.close()


def test_python_http_server_hosts_it_too(browser, tmp_path: Path) -> None:
    site = tmp_path / "site"
    export(make_baked(tmp_path / "baked"), site, 0.0)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                               "--directory", str(site)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        parts.wait_port(port)
        page = browser.page(f"http://127.0.0.1:{port}/")
        page.wait_for(SHOWN, timeout=60)
        expected = int((time.time() - 0.0) // PERIOD)
        assert page.evaluate("window.ciel.sceneId") in (expected, expected + 1)
        assert page.console_errors == []
        page.close()
    finally:
        server.terminate()
        server.wait(timeout=10)
