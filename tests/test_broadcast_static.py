"""The static broadcast (`ciel broadcast --export DIR`) hosted by plain web servers, as on any host
or CDN: nginx from Debian and Python's http.server serve the folder; pages opened 10 s apart in
headless Chromium show the same scene and picture, and change together at the period boundary."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import chromium, missing
from test_web import make_baked

from engine import cli

PERIOD = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")


def export(baked: Path, site: Path, epoch: float) -> None:
    assert cli.main(["broadcast", "--baked", str(baked), "--export", str(site), "--scenes", "3",
                     "--period", str(PERIOD), "--epoch", f"{epoch:.3f}"]) == 0


def nginx(site: Path, tmp: Path, port: int) -> subprocess.Popen:
    exe = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if exe is None:
        missing("nginx not installed (Debian package nginx-light; scripts/setup-system.sh with CIEL_WITH_BROWSER=1)")
    conf = tmp / "nginx.conf"
    conf.write_text(f"""
user root;
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 256; }}
http {{
    include /etc/nginx/mime.types;
    access_log off;
    client_body_temp_path {tmp}/body;
    server {{ listen 127.0.0.1:{port}; root {site}; }}
}}
""", encoding="utf-8")
    proc = subprocess.Popen([exe, "-c", str(conf), "-p", str(tmp)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_port(port)
    return proc


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
    server = nginx(site, tmp_path, port)
    url = f"http://127.0.0.1:{port}/"
    state = "[window.ciel.sceneId, window.ciel.scene.image]"
    try:
        first = browser.page(url)
        first.wait_for(SHOWN, timeout=60)
        opened = time.monotonic()
        time.sleep(max(0.0, 10.0 - (time.monotonic() - opened)))
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
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_python_http_server_hosts_it_too(browser, tmp_path: Path) -> None:
    site = tmp_path / "site"
    export(make_baked(tmp_path / "baked"), site, 0.0)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                               "--directory", str(site)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        page = browser.page(f"http://127.0.0.1:{port}/")
        page.wait_for(SHOWN, timeout=60)
        expected = int((time.time() - 0.0) // PERIOD)
        assert page.evaluate("window.ciel.sceneId") in (expected, expected + 1)
        assert page.console_errors == []
        page.close()
    finally:
        server.terminate()
        server.wait(timeout=10)
