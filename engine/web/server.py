"""The broadcast server: one scene clock for every visitor, the page, and the scenes' files.

    GET /              the page (program note from the patch filled in)
    GET /static/NAME   page JavaScript and CSS
    GET /shaders/NAME  the GLSL files of shaders/, the same the window and offscreen render use
    GET /shaders/webgl/sky.vert|sky.frag  the same files put together for WebGL2 by engine/visual/sky.py
    GET /scene.json    the current scene and the next one (cheap: built once per scene, ETag)
    GET /events        Server-Sent Events: one `scene` event at connect and at every change
    GET /media/HASH.EXT  sound and image files, content-addressed (cached for a year)
    GET /healthz       "ok" and the scene id

The clock lives here: scene id = floor((now - epoch) / period). Every answer carries the server
time and the time to the next scene, so pages switch together and prefetch the next scene. The
server is stdlib `ThreadingHTTPServer` (one thread per connection; SSE streams wait on one
condition). It makes no requests itself and the page makes none to other hosts (CSP 'self').

Public-facing, so bounded: at most `max_connections` connections (more are closed at once); a
request's line and headers must arrive within `header_timeout` seconds, an idle keep-alive
connection is closed after as long (a reaper thread ends slow connections: one byte a minute no
longer holds a thread); at most `max_streams_per_address` event streams per visitor address; a
request with a body (POST, or a GET with Content-Length or Transfer-Encoding) is answered and its
connection closed, so a body is never read as a second request behind a keep-alive proxy.
"""

from __future__ import annotations

import html
import json
import logging
import math
import mimetypes
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Protocol

from ..errors import CielError, ConfigError
from .media import Media, MediaStore

log = logging.getLogger("ciel.web")

STATIC = Path(__file__).resolve().parent / "static"
SHADERS = Path(__file__).resolve().parents[2] / "shaders"
SHADER_SUFFIXES = (".glsl", ".vert", ".frag")
HEARTBEAT_S = 15.0
RETRY_MS = 2000
SECURITY_HEADERS = (
    ("Content-Security-Policy", "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
                                "style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
)


@dataclass(frozen=True)
class SceneMedia:
    """The files of one scene. `name` says where it came from (baked file stem or seed)."""

    name: str
    sound: Media
    image: Media
    sound_fallback: Media | None = None  # MP3 for browsers without Ogg Opus (Safari before 17)

    def table(self) -> dict:
        out = {"name": self.name, "sound": self.sound.url, "sound_type": self.sound.ctype,
               "image": self.image.url}
        if self.sound_fallback is not None:
            out["sound_fallback"] = self.sound_fallback.url
        return out


class SceneSource(Protocol):
    """Where scenes come from (a baked folder or live generation)."""

    def prepare(self, scene_id: int) -> SceneMedia:
        """Make (or read) scene `scene_id`; may take seconds. Called from the preparer thread."""
        ...


@dataclass(frozen=True)
class SceneClock:
    """Scene ids from wall-clock time: id = floor((now - epoch) / period). `now` is injected."""

    period: float
    epoch: float = 0.0
    now: Callable[[], float] = time.time

    def id_at(self, t: float) -> int:
        return math.floor((t - self.epoch) / self.period)

    def start_of(self, scene_id: int) -> float:
        return self.epoch + scene_id * self.period


class Broadcast:
    """The shared state: prepared scenes, the current scene's JSON, and the SSE condition.

    Two threads run it: the ticker publishes the current scene at every boundary (and when a late
    scene becomes ready); the preparer makes the scenes `ahead` of the clock. If a scene is not
    ready at its time, the newest ready one is held (`"held": true`) rather than showing nothing.
    """

    def __init__(self, source: SceneSource, clock: SceneClock, ahead: int = 2) -> None:
        self.source, self.clock, self.ahead = source, clock, ahead
        self.store = MediaStore(max_items=6 * (ahead + 3))
        self._scenes: dict[int, SceneMedia] = {}
        self._failed: set[int] = set()
        self._last_error: BaseException | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self.current_id = -1
        self._key: tuple[int, bool, bool] = (-1, False, False)
        self._static = b'{"id":null}'
        self.etag = '""'
        self.version = 0
        self.prepare_errors = 0

    # -- threads -------------------------------------------------------------------------
    def start(self, wait_first: float = 120.0, with_next: bool = True) -> None:
        """Prepare the current scene (retrying up to `wait_first` s) and, `with_next`, the next one
        (so the first answers already announce it), then start both threads."""
        now_id = self.clock.id_at(self.clock.now())
        deadline = time.monotonic() + wait_first
        while not self._prepare(now_id, retry=True):
            if time.monotonic() > deadline:
                exc = self._last_error
                if isinstance(exc, CielError):
                    raise exc
                raise ConfigError("broadcast", "", f"the first scene could not be prepared: {exc}")
            time.sleep(0.5)
        if with_next:
            self._prepare(now_id + 1)
        self.publish()
        for target in (self._ticker, self._preparer):
            t = threading.Thread(target=target, name=f"ciel-web-{target.__name__.strip('_')}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        with self._cond:
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout=5)

    def _prepare(self, scene_id: int, retry: bool = False) -> bool:
        """Make scene `scene_id` ready; False if it failed (then, unless `retry`, it is not tried again)."""
        if scene_id in self._scenes:
            return True
        if scene_id in self._failed and not retry:
            return False
        try:
            scene = self.source.prepare(scene_id)
        except Exception as exc:  # noqa: BLE001 — a bad file or a generator failure becomes data: logged once, scene held
            self.prepare_errors += 1
            self._last_error = exc
            if scene_id not in self._failed:
                log.error("scene %d could not be prepared (the previous one is held): %s", scene_id, exc)
            self._failed.add(scene_id)
            return False
        for media in (scene.sound, scene.image, scene.sound_fallback):
            if media is not None:
                self.store.put(media)
        with self._cond:
            self._scenes[scene_id] = scene
            for old in [k for k in self._scenes if k < scene_id - self.ahead - 2]:
                del self._scenes[old]
        self._failed = {k for k in self._failed if k >= scene_id - self.ahead - 2}
        return True

    def _preparer(self) -> None:
        while not self._stop.is_set():
            now_id = self.clock.id_at(self.clock.now())
            for sid in range(now_id, now_id + self.ahead + 1):
                if self._stop.is_set():
                    return
                if self._prepare(sid):
                    self.publish()  # a late scene shows at once; a new `next` is announced
            self._wake.wait(timeout=1.0)
            self._wake.clear()

    def _ticker(self) -> None:
        while not self._stop.is_set():
            now = self.clock.now()
            nxt = self.clock.start_of(self.clock.id_at(now) + 1)
            if self._stop.wait(timeout=max(0.0, min(nxt - now, 1.0)) + 0.001):
                return
            if self.clock.id_at(self.clock.now()) != self.clock.id_at(now):
                self._wake.set()
                self.publish()

    # -- state -----------------------------------------------------------------------------
    def publish(self) -> None:
        """Rebuild the cached JSON for the current scene and wake every SSE stream."""
        now_id = self.clock.id_at(self.clock.now())
        with self._cond:
            shown = max((k for k in self._scenes if k <= now_id), default=None)
            if shown is None:
                return
            held = shown != now_id
            nxt = self._scenes.get(now_id + 1)
            key = (now_id, held, nxt is not None)
            if key == self._key:
                return
            body = {"id": now_id, "period": self.clock.period, "held": held,
                    "starts_at": round(self.clock.start_of(now_id), 3),
                    "ends_at": round(self.clock.start_of(now_id + 1), 3),
                    **self._scenes[shown].table(),
                    "next": None if nxt is None else {"id": now_id + 1, **nxt.table()}}
            self._static = json.dumps(body, separators=(",", ":")).encode()
            self.current_id, self._key = now_id, key
            self.etag = f'"s{now_id}{"h" if held else ""}{"n" if nxt else ""}"'
            self.version += 1
            self._cond.notify_all()

    def scene_json(self) -> tuple[str, bytes, float]:
        """(etag, body, time_to_next) of the current scene; the time fields are added per call."""
        now = self.clock.now()
        with self._cond:
            static, etag, sid = self._static, self.etag, self.current_id
        ttn = max(0.0, self.clock.start_of(sid + 1) - now)
        return etag, static[:-1] + b',"server_time":%.3f,"time_to_next":%.3f}' % (now, ttn), ttn

    def events(self) -> Iterator[bytes | None]:
        """Yield a scene event now and at every change; None every HEARTBEAT_S (send a comment)."""
        seen = -1
        while not self._stop.is_set():
            with self._cond:
                if self.version == seen:
                    self._cond.wait(timeout=HEARTBEAT_S)
                version = self.version
            if self._stop.is_set():
                return
            if version == seen:
                yield None
                continue
            seen = version
            yield self.scene_json()[1]


class Server(ThreadingHTTPServer):
    """ThreadingHTTPServer holding the broadcast, the page and the static files in memory."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], broadcast: Broadcast, note: str = "",
                 settings: Mapping[str, object] | None = None, max_listeners: int = 2000,
                 max_connections: int = 4000, header_timeout: float = 10.0, max_streams_per_address: int = 16) -> None:
        super().__init__(address, Handler)
        self.broadcast, self.max_listeners = broadcast, max_listeners
        self.max_connections, self.header_timeout = max_connections, header_timeout
        self.max_streams_per_address = max_streams_per_address
        self.listeners = 0
        self.refused = 0          # connections closed at once because max_connections were open
        self.timed_out = 0        # connections ended by the reaper (slow headers, idle keep-alive)
        self._streams: dict[str, int] = {}
        self._connections: set[socket.socket] = set()
        self._reading: dict[socket.socket, float] = {}   # connection → deadline for its request's headers
        self._closing = False
        self._lock = threading.Lock()
        self.files = load_files(note, settings or {})
        self._reaper = threading.Thread(target=self._reap, name="ciel-web-reaper", daemon=True)
        self._reaper.start()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/"

    def process_request(self, request: socket.socket | tuple[bytes, socket.socket],
                        client_address: tuple[str, int]) -> None:
        """Accept thread: over `max_connections`, close at once instead of starting a thread."""
        with self._lock:
            full = len(self._connections) >= self.max_connections
        if full:
            self.refused += 1
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def track(self, sock: socket.socket, opened: bool) -> None:
        """Remember open connections, so that server_close can end them (keep-alive and SSE alike)."""
        with self._lock:
            if opened:
                self._connections.add(sock)
            else:
                self._connections.discard(sock)
                self._reading.pop(sock, None)

    def reading(self, sock: socket.socket, waiting: bool) -> None:
        """A connection starts (True) or has finished (False) reading a request's line and headers."""
        with self._lock:
            if waiting:
                self._reading[sock] = time.monotonic() + self.header_timeout
            else:
                self._reading.pop(sock, None)

    def _reap(self) -> None:
        """End connections whose request has not arrived in time (reaper thread, every 0.5 s)."""
        while not self._closing:
            time.sleep(0.5)
            now = time.monotonic()
            with self._lock:
                late = [sock for sock, deadline in self._reading.items() if deadline < now]
                for sock in late:
                    del self._reading[sock]
            for sock in late:
                self.timed_out += 1
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def add_listener(self, joined: bool, address: str = "") -> bool:
        """Count an /events stream in (False when full, when `address` has its share, or when
        closing) or out."""
        with self._lock:
            if not joined:
                self.listeners -= 1
                left = self._streams.get(address, 1) - 1
                if left > 0:
                    self._streams[address] = left
                else:
                    self._streams.pop(address, None)
                return True
            if self.listeners >= self.max_listeners or self._closing:
                return False
            if self._streams.get(address, 0) >= self.max_streams_per_address:
                return False
            self.listeners += 1
            self._streams[address] = self._streams.get(address, 0) + 1
            return True

    def handle_error(self, request: object, client_address: tuple) -> None:
        """A visitor's connection that broke is routine (debug log); anything else is logged with its traceback."""
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            log.debug("connection from %s ended: %s", client_address, exc)
        else:
            log.exception("error answering %s", client_address)

    def server_close(self) -> None:
        """Stop listening and end every open connection (visitors' pages reconnect by themselves)."""
        super().server_close()
        with self._lock:
            self._closing = True   # the reaper ends too
            connections = list(self._connections)
        for sock in connections:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def load_files(note: str, settings: Mapping[str, object]) -> dict[str, Media]:
    """The page, its static files and the shaders, read once: {url path: Media}.

    index.html gets the program note (paragraphs, HTML-escaped) at `<!--NOTE-->` and the page
    settings (volume, sky look) as a JSON data block at `<!--SETTINGS-->`.
    """
    blob = json.dumps(dict(settings), separators=(",", ":")).replace("</", "<\\/")
    settings_tag = f'<script id="ciel-settings" type="application/json">{blob}</script>'.encode()
    files: dict[str, Media] = {}
    for p in sorted(STATIC.iterdir()) if STATIC.is_dir() else []:
        if p.is_file() and not p.name.startswith("."):
            data = p.read_bytes()
            if p.name == "index.html":
                paras = "".join(f"<p>{html.escape(s)}</p>" for s in re.split(r"\n\s*\n", note.strip()) if s)
                data = data.replace(b"<!--NOTE-->", paras.encode()).replace(b"<!--SETTINGS-->", settings_tag)
                files["/"] = Media.of(data, "text/html; charset=utf-8", "html")
            else:
                ctype = mimetypes.guess_type(p.name)[0] or "application/octet-stream"
                is_text = ctype.startswith("text/") or "javascript" in ctype
                files[f"/static/{p.name}"] = Media.of(data, ctype + ("; charset=utf-8" if is_text else ""), p.suffix[1:])
    for p in sorted(SHADERS.iterdir()) if SHADERS.is_dir() else []:
        if p.suffix in SHADER_SUFFIXES and p.is_file():
            files[f"/shaders/{p.name}"] = Media.of(p.read_bytes(), "text/plain; charset=utf-8", p.suffix[1:])
    # The programs as WebGL2 compiles them, put together by the same code as the window's.
    from ..visual.sky import WEBGL_HEADER, fragment_source, vertex_source

    try:
        programs = {"sky.vert": vertex_source(WEBGL_HEADER), "sky.frag": fragment_source("sky.frag", WEBGL_HEADER)}
    except OSError as exc:
        log.error("the page cannot draw the sky: %s", exc)
        programs = {}
    for name, text in programs.items():
        files[f"/shaders/webgl/{name}"] = Media.of(text.encode(), "text/plain; charset=utf-8", "glsl")
    return files


class Handler(BaseHTTPRequestHandler):
    """One request. Keep-alive (HTTP/1.1); errors are short plain-text answers."""

    protocol_version = "HTTP/1.1"
    timeout = 60  # seconds a quiet connection is kept (SSE streams send a comment every 15 s)
    server: Server
    server_version = "ciel"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def handle_one_request(self) -> None:
        """Read one request under the header deadline (the reaper ends it if it is late)."""
        self.server.reading(self.connection, True)
        super().handle_one_request()

    def parse_request(self) -> bool:
        ok = super().parse_request()
        self.server.reading(self.connection, False)
        if ok and (self.headers.get("Content-Length", "0").strip() not in ("", "0")
                   or "Transfer-Encoding" in self.headers):
            # a body this server never reads: answer, then close, so it is never taken as a request
            self.close_connection = True
        return ok

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib name)
        log.debug("%s %s", self.address_string(), format % args)

    def do_HEAD(self) -> None:
        self.do_GET(head=True)

    def do_GET(self, head: bool = False) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/scene.json":
            etag, body, ttn = self.server.broadcast.scene_json()
            extra = (("X-Time-To-Next", f"{ttn:.3f}"),)
            if self.headers.get("If-None-Match") == etag:
                return self._send(HTTPStatus.NOT_MODIFIED, b"", "application/json", etag, "no-cache", extra, head)
            return self._send(HTTPStatus.OK, body, "application/json", etag, "no-cache", extra, head)
        if path == "/events":
            return self._events(head)
        if path == "/healthz":
            body = b"ok %d\n" % self.server.broadcast.current_id
            return self._send(HTTPStatus.OK, body, "text/plain", None, "no-store", (), head)
        if path.startswith("/media/"):
            media = self.server.broadcast.store.get(path[len("/media/"):].split(".", 1)[0])
            if media is None or path != media.url:
                return self._error(HTTPStatus.NOT_FOUND, "no such file (scenes older than a few periods are gone)")
            return self._file(media, "public, max-age=31536000, immutable", head)
        media = self.server.files.get(path)
        if media is None:
            return self._error(HTTPStatus.NOT_FOUND, f"not found: {path}")
        return self._file(media, "no-cache", head)

    def do_POST(self) -> None:
        self.close_connection = True   # the body is not read: the connection must not carry on
        self._error(HTTPStatus.METHOD_NOT_ALLOWED, "the broadcast is read-only")

    do_PUT = do_DELETE = do_PATCH = do_POST

    def _file(self, media: Media, cache: str, head: bool) -> None:
        if self.headers.get("If-None-Match") == media.etag_header:
            return self._send(HTTPStatus.NOT_MODIFIED, b"", media.ctype, media.etag_header, cache, (), head)
        self._send(HTTPStatus.OK, media.data, media.ctype, media.etag_header, cache, (), head)

    def _send(self, status: HTTPStatus, body: bytes, ctype: str, etag: str | None, cache: str,
              extra: tuple[tuple[str, str], ...], head: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if status != HTTPStatus.NOT_MODIFIED:
            self.send_header("Content-Length", str(len(body)))
        if etag:
            self.send_header("ETag", etag)
        self.send_header("Cache-Control", cache)
        for k, v in SECURITY_HEADERS + extra:
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if body and not head and status != HTTPStatus.NOT_MODIFIED:
            self.wfile.write(body)

    def _error(self, status: HTTPStatus, message: str) -> None:
        self._send(status, (message + "\n").encode(), "text/plain; charset=utf-8", None, "no-store", (), False)

    def _events(self, head: bool) -> None:
        address = self.client_address[0]
        if not self.server.add_listener(True, address):
            self.send_response(HTTPStatus.SERVICE_UNAVAILABLE)
            self.send_header("Retry-After", "10")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        try:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Accel-Buffering", "no")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            if head:
                return
            self.wfile.write(b"retry: %d\n\n" % RETRY_MS)
            for data in self.server.broadcast.events():
                if data is None:
                    self.wfile.write(b": ping\n\n")
                else:
                    self.wfile.write(b"event: scene\ndata: " + data + b"\n\n")
                self.wfile.flush()
        except OSError:
            pass  # the visitor left, or the server is closing
        finally:
            self.server.add_listener(False, address)


def serve(broadcast: Broadcast, host: str = "127.0.0.1", port: int = 8080, note: str = "",
          settings: Mapping[str, object] | None = None, max_listeners: int = 2000, max_connections: int = 4000,
          header_timeout: float = 10.0, max_streams_per_address: int = 16) -> Server:
    """Bind the server (port 0 = any free port). Call `serve_forever()` on it; `broadcast` must be
    started. The limits are the Server's."""
    return Server((host, port), broadcast, note=note, settings=settings, max_listeners=max_listeners,
                  max_connections=max_connections, header_timeout=header_timeout,
                  max_streams_per_address=max_streams_per_address)
