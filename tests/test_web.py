"""The broadcast server over real HTTP on 127.0.0.1: the scene clock, /scene.json, /events (SSE),
the scenes' files and their caching headers, the page, bad input. Browser tests: test_web_browser.py."""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine import scenes
from engine.baked import write_index
from engine.broadcast.source import BakedScenes
from engine.errors import ConfigError
from engine.web.live import serve
from engine.web.media import decode
from engine.web.server import Broadcast, SceneClock, SceneMedia

ROOT = Path(__file__).resolve().parent.parent


def make_baked(folder: Path, count: int = 3, seconds: float = 2.0, size: int = 32) -> Path:
    """A small baked folder in the format engine/scenes.py writes: a sine of peak 0.5 (a different
    pitch per scene; below the page limiter's threshold) and a bright image (a different colour per
    scene)."""
    folder.mkdir(parents=True, exist_ok=True)
    rate = 48000
    t = np.arange(int(seconds * rate)) / rate
    entries = []
    for i in range(count):
        tone = (0.5 * np.sin(2 * np.pi * (220.0 * (i + 1)) * t)).astype(np.float32)
        sound = np.stack([tone, tone], axis=1)
        img = np.zeros((size, size, 3), np.uint8)
        img[...] = (80 + 60 * (i % 3), 200 - 50 * (i % 3), 120 + 40 * ((i + 1) % 3))
        img[: size // 2, : size // 2] = 230  # a bright quadrant, so the image has structure
        sid = f"s{i + 1:04d}"
        entries.append({"id": sid, "seed": 100 + i, "seconds": seconds,
                        **scenes.write_scene_files(folder, sid, sound, img, rate, wav=False)})
    write_index(folder, entries, "test", rate, size)
    return folder


class FakeClock:
    """A clock the test moves by hand (seconds since the epoch)."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def baked(tmp_path_factory) -> Path:
    return make_baked(tmp_path_factory.mktemp("baked"))


@pytest.fixture()
def site(baked):
    """A started broadcast (period 10 s, hand-moved clock at 1000.5 s) served on a free port."""
    clock = FakeClock(1000.5)
    broadcast = Broadcast(BakedScenes(baked), SceneClock(10.0, 0.0, now=clock), ahead=2)
    broadcast.start()
    server = serve(broadcast, "127.0.0.1", 0, note="First line <b>bold?</b>\n\nSecond paragraph.",
                   settings={"volume": 0.5, "sky": {"background": [0, 0, 0]}})
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server, broadcast, clock
    finally:
        server.shutdown()
        broadcast.stop()
        server.server_close()


def get(server, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    conn.request("GET", path, headers=headers or {})
    res = conn.getresponse()
    body = res.read()
    conn.close()
    return res.status, {k.lower(): v for k, v in res.getheaders()}, body


def test_scene_json_follows_the_server_clock(site):
    server, broadcast, clock = site
    status, headers, body = get(server, "/scene.json")
    assert status == 200 and headers["content-type"] == "application/json"
    scene = json.loads(body)
    assert scene["id"] == 100  # floor(1000.5 / 10)
    assert scene["starts_at"] == 1000.0 and scene["ends_at"] == 1010.0
    assert scene["time_to_next"] == pytest.approx(9.5, abs=1e-3)
    assert scene["next"]["id"] == 101 and scene["next"]["image"] != scene["image"]
    assert scene["name"].startswith("s0002")  # 100 mod 3 scenes = the second baked scene
    # Unchanged scene: the ETag answers 304 with no body; the time to the next scene rides in a header.
    status, headers304, body = get(server, "/scene.json", {"If-None-Match": headers["etag"]})
    assert status == 304 and body == b"" and float(headers304["x-time-to-next"]) == pytest.approx(9.5, abs=1e-3)
    clock.t = 1010.2
    broadcast.publish()
    status, headers2, body = get(server, "/scene.json", {"If-None-Match": headers["etag"]})
    assert status == 200 and json.loads(body)["id"] == 101 and headers2["etag"] != headers["etag"]


def test_scene_files_are_served_with_caching_headers(site, baked):
    server, broadcast, clock = site
    scene = json.loads(get(server, "/scene.json")[2])
    status, headers, data = get(server, scene["sound"])
    assert status == 200 and headers["content-type"] == "audio/ogg"
    assert "immutable" in headers["cache-control"] and "max-age=31536000" in headers["cache-control"]
    assert data == (baked / "s0002.ogg").read_bytes()
    assert get(server, scene["sound"], {"If-None-Match": headers["etag"]})[0] == 304
    samples, rate, channels = decode(data)
    assert rate == 48000 and channels == 2 and 0.45 < np.abs(samples).max() < 0.6  # the sine, not silence
    # The MP3 copy for browsers without Opus: same sound, same length within a frame or two.
    status, headers, mp3 = get(server, scene["sound_fallback"])
    assert status == 200 and headers["content-type"] == "audio/mpeg"
    m, mrate, _ = decode(mp3)
    assert abs(m.shape[1] / mrate - samples.shape[1] / rate) < 0.1 and np.abs(m).max() > 0.45
    status, headers, png = get(server, scene["image"])
    assert status == 200 and headers["content-type"] == "image/png"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), np.asarray(Image.open(baked / "s0002.png")))


def test_events_push_every_scene_change(site):
    server, broadcast, clock = site
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    conn.request("GET", "/events")
    res = conn.getresponse()
    assert res.status == 200 and res.getheader("Content-Type") == "text/event-stream"

    def next_event() -> dict:
        lines = []
        while True:
            line = res.readline().decode()
            if line == "\n" and lines:
                break
            lines.append(line)
        data = [ln[6:] for ln in lines if ln.startswith("data: ")]
        return json.loads(data[0]) if data else {"retry": lines}

    assert "retry: 2000\n" in next_event()["retry"]
    assert next_event()["id"] == 100  # the current scene at once
    clock.t = 1010.01
    broadcast.publish()
    pushed = next_event()
    assert pushed["id"] == 101 and pushed["time_to_next"] == pytest.approx(9.99, abs=1e-3)
    conn.close()


def test_a_scene_that_cannot_be_prepared_holds_the_last_one(baked):
    class Flaky:
        def __init__(self) -> None:
            self.inner = BakedScenes(baked)

        def prepare(self, scene_id: int) -> SceneMedia:
            if scene_id == 6:
                raise OSError("disk went away")
            return self.inner.prepare(scene_id)

    clock = FakeClock(55.0)
    broadcast = Broadcast(Flaky(), SceneClock(10.0, now=clock), ahead=1)
    broadcast.start()
    try:
        etag, body, _ = broadcast.scene_json()
        assert json.loads(body)["next"] is None  # scene 6 failed: nothing announced
        clock.t = 61.0
        broadcast.publish()
        scene = json.loads(broadcast.scene_json()[1])
        assert scene["id"] == 6 and scene["held"] is True and scene["name"].startswith("s0003")  # scene 5's files
        assert broadcast.prepare_errors >= 1
    finally:
        broadcast.stop()


def test_a_broadcast_whose_first_scene_fails_says_why():
    class Broken:
        def prepare(self, scene_id: int) -> SceneMedia:
            raise OSError("s0001.ogg: permission denied")

    broadcast = Broadcast(Broken(), SceneClock(10.0), ahead=1)
    with pytest.raises(ConfigError, match="first scene could not be prepared: s0001.ogg: permission denied"):
        broadcast.start(wait_first=0.2)
    assert broadcast.prepare_errors >= 1


def test_page_has_the_note_escaped_and_no_third_party_requests(site):
    server, broadcast, clock = site
    status, headers, page = get(server, "/")
    text = page.decode()
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert "<p>First line &lt;b&gt;bold?&lt;/b&gt;</p><p>Second paragraph.</p>" in text
    assert "set your volume with care" in text.lower()
    settings = json.loads(re.search(r'id="ciel-settings" type="application/json">(.*?)</script>', text).group(1))
    assert settings["volume"] == 0.5
    assert "default-src 'self'" in headers["content-security-policy"]
    # Every file the page loads is ours: no absolute URL to any host in the page or its scripts.
    for name in ["/"] + [f"/static/{p.name}" for p in (ROOT / "engine/web/static").iterdir() if p.name != "index.html"]:
        status, _, body = get(server, name)
        assert status == 200, name
        assert not re.search(rb"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", body), f"{name} names another host"
    for name in ("sky.vert", "sky.frag"):
        status, _, src = get(server, f"/shaders/webgl/{name}")
        assert status == 200 and src.startswith(b"#version 300 es\n")
    assert b"ciel_inverse" in get(server, "/shaders/webgl/sky.frag")[2]  # the shared projection file


def test_bad_requests_get_clear_answers(site):
    server, broadcast, clock = site
    assert get(server, "/nope")[0] == 404
    assert get(server, "/static/../server.py")[0] == 404
    assert get(server, "/media/0123456789abcdef01234567.ogg")[0] == 404
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    conn.request("POST", "/scene.json", body=b"x")
    assert conn.getresponse().status == 405
    conn.close()


@contextmanager
def limited_site(baked, **limits):
    """A started broadcast (period 10 s, real clock) served on a free port with `limits` (serve's)."""
    broadcast = Broadcast(BakedScenes(baked), SceneClock(10.0), ahead=1)
    broadcast.start()
    server = serve(broadcast, "127.0.0.1", 0, **limits)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        broadcast.stop()
        server.server_close()


def test_listeners_beyond_the_limit_are_told_to_come_back(baked):
    with limited_site(baked, max_listeners=1) as server:
        first = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
        first.request("GET", "/events")
        stream = first.getresponse()  # kept: dropping the response would close the stream
        assert stream.status == 200 and stream.readline() == b"retry: 2000\n"
        status, headers, _ = get(server, "/events")
        assert status == 503 and headers["retry-after"] == "10"
        first.close()


def test_bad_baked_folder_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match="index.json"):
        BakedScenes(tmp_path)
    folder = make_baked(tmp_path / "b", count=1)
    (folder / "s0001.png").unlink()
    with pytest.raises(ConfigError, match=r"scenes\[0\]\.image"):
        BakedScenes(folder)


def test_ciel_broadcast_command_serves_and_stops_on_sigterm(baked, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    bad = subprocess.run([sys.executable, "-m", "engine.cli", "broadcast", "--baked", str(tmp_path / "none")],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and "index.json" in bad.stderr and "Traceback" not in bad.stderr
    bad = subprocess.run([sys.executable, "-m", "engine.cli", "broadcast", "--period", "0.1", "--baked", str(baked)],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and "period" in bad.stderr
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "broadcast", "--baked", str(baked), "--port", "0",
                             "--period", "5"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert url, line + proc.stderr.read()
        conn = http.client.HTTPConnection("127.0.0.1", int(url.group(1)), timeout=10)
        conn.request("GET", "/scene.json")
        scene = json.loads(conn.getresponse().read())
        assert scene["id"] == int(time.time() // 5) or scene["id"] == int(time.time() // 5) - 1
        conn.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0


def test_live_scenes_come_from_the_models_and_repeat_for_the_same_id():
    from engine.broadcast.source import LiveScenes
    from engine.patch import load_patch

    live = LiveScenes(load_patch(), seconds=1.0, seed=7)
    try:
        a, b, a_again = live.prepare(10), live.prepare(11), live.prepare(10)
    finally:
        live.close()
    assert a.name == "live10 (seed 17)" and a.sound.ctype == "audio/ogg" and a.image.ctype == "image/png"
    samples, rate, channels = decode(a.sound.data)
    assert rate == 48000 and abs(samples.shape[1] / rate - 1.0) < 0.05
    assert np.sqrt(np.mean(samples ** 2)) > 1e-4 and np.abs(samples).max() <= 1.0  # sound, not silence or clipping
    img = np.asarray(Image.open(io.BytesIO(a.image.data)))
    assert img.ndim == 3 and img.shape[0] == img.shape[1] >= 64 and img.std() > 1.0
    assert a_again.image.data == a.image.data  # same scene id, same seed, same picture for every visitor
    assert b.image.data != a.image.data


def raw(server, data: bytes, wait: float = 5.0) -> bytes:
    """Send raw bytes on one connection and read until the server closes it (or `wait` s of quiet)."""
    import socket as sk

    with sk.create_connection(server.server_address[:2], timeout=wait) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except TimeoutError:
            pass
    return out


def test_a_request_body_is_never_answered_as_a_second_request(site):
    """Behind a keep-alive proxy, bytes of a body taken as a request would send one visitor's answer
    to another: a POST with a body, or a GET with one, gets exactly one answer and the connection ends."""
    server, _, _ = site
    smuggled = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    post = (b"POST /scene.json HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(smuggled)) + smuggled
    answer = raw(server, post)
    assert answer.count(b"HTTP/1.1 ") == 1 and answer.startswith(b"HTTP/1.1 405") and b"connection: close" in answer.lower()
    get_with_body = (b"GET /scene.json HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(smuggled)) + smuggled
    answer = raw(server, get_with_body)
    assert answer.count(b"HTTP/1.1 ") == 1 and answer.startswith(b"HTTP/1.1 200") and b"connection: close" in answer.lower()


def test_a_slow_loris_is_closed_after_the_header_timeout(baked):
    import socket as sk

    with limited_site(baked, header_timeout=1.0) as server:
        with sk.create_connection(server.server_address[:2], timeout=30) as s:
            s.sendall(b"GET / HTTP/1.1\r\n")
            t0 = time.monotonic()
            closed = False
            while time.monotonic() - t0 < 30 and not closed:   # one header byte every 0.3 s: never a whole request
                try:
                    s.sendall(b"X")
                    s.settimeout(0.3)
                    closed = s.recv(100) == b""
                except TimeoutError:
                    continue
                except OSError:
                    closed = True
            assert closed, "a connection that never finished its headers was kept"
        assert server.timed_out >= 1
        assert get(server, "/healthz")[0] == 200            # everyone else is still served


def test_one_address_cannot_take_every_event_stream(baked):
    streams = []
    with limited_site(baked, max_listeners=100, max_streams_per_address=2) as server:
        try:
            for _ in range(2):
                conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
                conn.request("GET", "/events")
                res = conn.getresponse()   # the response owns the socket (Connection: close): kept
                assert res.status == 200 and res.readline() == b"retry: 2000\n"
                streams.append(res)
            third = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
            third.request("GET", "/events")
            answer = third.getresponse()                        # its status only: a stream never ends
            third.close()
            assert answer.status == 503, (answer.status, server.limits.streams)   # the third from the same address
            streams.pop().close()
            deadline = time.monotonic() + 10
            while server.listeners > 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
            conn.request("GET", "/events")
            res = conn.getresponse()
            assert res.status == 200                            # a slot freed is a slot again
            streams.append(res)
        finally:
            for conn in streams:
                conn.close()


def test_connections_beyond_the_cap_are_closed_at_once_and_a_freed_one_is_usable(baked):
    """`max_connections` holds: one more is closed as it arrives (counted), the held ones still
    get answers, and once one closes a new visitor is served again."""
    import socket as sk

    with limited_site(baked, max_connections=3) as server:
        held = [sk.create_connection(server.server_address[:2], timeout=10) for _ in range(3)]
        try:
            time.sleep(0.3)
            with sk.create_connection(server.server_address[:2], timeout=10) as extra:
                extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                try:
                    assert extra.recv(100) == b""                   # closed, not answered
                except ConnectionResetError:
                    pass
            assert server.refused >= 1
            held[0].sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert held[0].recv(100).startswith(b"HTTP/1.1 200")   # the ones inside are served
            held.pop().close()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    status = get(server, "/healthz")[0]
                    break
                except (ConnectionError, http.client.HTTPException):
                    time.sleep(0.1)
            assert status == 200                                   # a freed slot is a slot again
        finally:
            for s in held:
                s.close()


def test_head_answers_headers_only(site):
    server, _, _ = site
    answer = raw(server, b"HEAD /scene.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"content-length:" in head.lower() and body == b""


def test_an_idle_keep_alive_connection_is_closed_after_the_header_timeout(baked):
    """After an answer, the next request's headers must come within the deadline too (uvicorn's own
    keep-alive timer is reset by any byte, so this is ciel's)."""
    import socket as sk

    with limited_site(baked, header_timeout=1.0) as server:
        with sk.create_connection(server.server_address[:2], timeout=10) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(1000).startswith(b"HTTP/1.1 200")
            s.sendall(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
            for _ in range(200):                                # a next request, one header byte every 0.3 s
                try:
                    s.sendall(b"a")
                    s.settimeout(0.3)
                    if s.recv(100) == b"":
                        break
                except TimeoutError:
                    pass
                except OSError:
                    break
            else:
                raise AssertionError("an idle keep-alive connection was kept for 200 header bytes")
        assert server.timed_out >= 1


def test_a_request_pipelined_behind_an_event_stream_ends_the_connection_and_frees_its_slot(baked):
    import socket as sk

    with limited_site(baked, max_listeners=100, max_streams_per_address=2) as server:
        with sk.create_connection(server.server_address[:2], timeout=10) as s:
            s.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(1000).startswith(b"HTTP/1.1 200")
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            s.settimeout(5)
            with contextlib.suppress(OSError):
                while s.recv(1000):
                    pass
        deadline = time.monotonic() + 10
        while server.listeners and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.listeners == 0


def test_a_websocket_upgrade_is_answered_as_http_and_holds_no_slot(baked):
    import socket as sk

    with limited_site(baked, max_connections=2) as server:
        for _ in range(5):                                      # more than the cap, one after another
            answer = raw(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, close\r\n"
                                 b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 200")
        with sk.create_connection(server.server_address[:2], timeout=10):
            assert get(server, "/healthz")[0] == 200           # the slots were given back
