"""The live broadcast on a real server: an ASGI app over `Broadcast`, served by uvicorn.

    GET /              the page (program note from the patch filled in)
    GET /static/NAME   page JavaScript and CSS
    GET /shaders/NAME  the GLSL files of shaders/ (and /shaders/webgl/sky.vert|sky.frag for WebGL2)
    GET /scene.json    the current scene and the next one (built once per scene, ETag)
    GET /events        Server-Sent Events: one `scene` event at connect and at every change
    GET /media/HASH.EXT  sound and image files, content-addressed (cached for a year)
    GET /healthz       "ok" and the scene id

One event loop (uvloop and the httptools parser when installed) holds every connection: an event
stream costs a coroutine, not a thread. The scene clock and the files are `Broadcast`'s
(engine/web/server.py), prepared on its own threads; `publish` wakes the streams through the loop.

Public-facing, so bounded, and each bound is counted:
- at most `max_connections` open connections: more are closed as they arrive (`refused`);
- a request's line and headers must be complete within `header_timeout` seconds of the
  connection opening or of the previous answer (this also ends idle keep-alive connections): one
  byte a minute holds nothing (`timed_out`);
- at most `max_listeners` event streams, `max_streams_per_address` from one address: more get 503
  with Retry-After;
- a request with a body is parsed as a body (never as a second request); a POST is answered 405
  and its connection closed; a GET with a body is answered and its connection closed.

Threads: `serve_forever` runs the loop on the calling thread (the command's main thread, or a
test's); `shutdown` may be called from any thread.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from .media import Media
from .server import HEARTBEAT_S, RETRY_MS, SECURITY_HEADERS, Broadcast, load_files

log = logging.getLogger("ciel.web")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
_SECURITY = [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS]


class Limits:
    """The server's bounds and what they turned away (read by /healthz-style reports and tests)."""

    def __init__(self, max_connections: int, header_timeout: float, max_listeners: int, max_streams_per_address: int) -> None:
        self.max_connections, self.header_timeout = max_connections, header_timeout
        self.max_listeners, self.max_streams_per_address = max_listeners, max_streams_per_address
        self.connections = 0
        self.refused = 0
        self.timed_out = 0
        self.listeners = 0
        self.streams: dict[str, int] = {}

    def join(self, address: str) -> bool:
        """Count an event stream in; False when the server or the address has its share (loop thread)."""
        if self.listeners >= self.max_listeners or self.streams.get(address, 0) >= self.max_streams_per_address:
            return False
        self.listeners += 1
        self.streams[address] = self.streams.get(address, 0) + 1
        return True

    def leave(self, address: str) -> None:
        self.listeners -= 1
        left = self.streams.get(address, 1) - 1
        if left > 0:
            self.streams[address] = left
        else:
            self.streams.pop(address, None)


def deadline_protocol(limits: Limits) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol with the connection cap and the header deadline (see the module)."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class DeadlineProtocol(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None
        _counted = False
        _pending: int | None = None   # bytes of an answer not yet sent when the deadline last came

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if limits.connections >= limits.max_connections:
                limits.refused += 1
                transport.abort()
                return
            limits.connections += 1
            self._counted = True
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._counted:
                limits.connections -= 1
                self._counted = False
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(limits.header_timeout, self._too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            pending = self.transport.get_write_buffer_size()
            if pending and (self._pending is None or pending < self._pending):
                self._pending = pending   # an answer still going out, and moving: a slow link, not idle
                self._arm()
                return
            limits.timed_out += 1      # no request in time, or a visitor that stopped reading
            self.transport.abort()

        def on_headers_complete(self) -> None:
            self._disarm()
            if self.cycle is not None and not self.cycle.response_complete:
                # a second request while an answer is under way (pipelining: no browser does it,
                # and an event stream never completes): the connection ends
                self.transport.abort()
                return
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            self._pending = None
            super().on_response_complete()
            idle = self.cycle is None or self.cycle.response_complete   # not a pipelined request under way
            if idle and not self.transport.is_closing():
                self._arm()   # the next request's headers (or an idle keep-alive) within the deadline

    return DeadlineProtocol


class BroadcastApp:
    """The ASGI application: routes of the module docstring over `broadcast` and `files`
    ({url path: Media}, from `load_files`). Runs on the server's loop; `broadcast.publish` (its
    own threads) wakes the event streams with `loop.call_soon_threadsafe`."""

    def __init__(self, broadcast: Broadcast, files: Mapping[str, Media], limits: Limits) -> None:
        self.broadcast, self.files, self.limits = broadcast, files, limits
        self._changed: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watcher: Callable[[], None] | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Called once on the loop: scene changes set `_changed` there."""
        self._loop = loop
        self._changed = asyncio.Event()

        def changed() -> None:   # on the thread that published
            try:
                loop.call_soon_threadsafe(self._wake)
            except RuntimeError:     # the loop has closed: the server has stopped
                pass

        self._watcher = changed
        self.broadcast.add_watcher(changed)

    def unbind(self) -> None:
        """The server has stopped: no more wake-ups to its loop."""
        if self._watcher is not None:
            self.broadcast.remove_watcher(self._watcher)
            self._watcher = None

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        if changed is not None:
            changed.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if self._loop is None:
            self.bind(asyncio.get_running_loop())
        method, path = scope["method"], scope["path"]
        headers = dict(scope["headers"])
        head = method == "HEAD"
        if method not in ("GET", "HEAD"):   # the body is not read: the connection must not carry on
            return await self._send(send, 405, b"the broadcast is read-only\n", "text/plain; charset=utf-8",
                                    None, "no-store", close=True)
        close = headers.get(b"content-length", b"0").strip() not in (b"", b"0") or b"transfer-encoding" in headers
        match = headers.get(b"if-none-match")
        if path == "/scene.json":
            etag, body, ttn = self.broadcast.scene_json()
            extra = [(b"X-Time-To-Next", b"%.3f" % ttn)]
            if match == etag.encode():
                return await self._send(send, 304, b"", "application/json", etag, "no-cache", extra, close, head)
            return await self._send(send, 200, body, "application/json", etag, "no-cache", extra, close, head)
        if path == "/events":
            return await self._events(scope, receive, send, head)
        if path == "/healthz":
            body = b"ok %d\n" % self.broadcast.current_id
            return await self._send(send, 200, body, "text/plain", None, "no-store", close=close, head=head)
        if path.startswith("/media/"):
            media = self.broadcast.store.get(path[len("/media/"):].split(".", 1)[0])
            if media is None or path != media.url:
                return await self._send(send, 404, b"no such file (scenes older than a few periods are gone)\n",
                                        "text/plain; charset=utf-8", None, "no-store", close=close)
            return await self._file(send, media, "public, max-age=31536000, immutable", match, close, head)
        media = self.files.get(path)
        if media is None:
            return await self._send(send, 404, f"not found: {path}\n".encode(), "text/plain; charset=utf-8",
                                    None, "no-store", close=close)
        return await self._file(send, media, "no-cache", match, close, head)

    async def _file(self, send: Send, media: Media, cache: str, match: bytes | None, close: bool, head: bool) -> None:
        if match == media.etag_header.encode():
            return await self._send(send, 304, b"", media.ctype, media.etag_header, cache, close=close, head=head)
        await self._send(send, 200, media.data, media.ctype, media.etag_header, cache, close=close, head=head)

    @staticmethod
    async def _send(send: Send, status: int, body: bytes, ctype: str, etag: str | None, cache: str,
                    extra: list[tuple[bytes, bytes]] | None = None, close: bool = False, head: bool = False) -> None:
        headers = [(b"Content-Type", ctype.encode()), (b"Cache-Control", cache.encode()), *_SECURITY, *(extra or [])]
        if status != 304:
            headers.append((b"Content-Length", str(len(body)).encode()))
        if etag:
            headers.append((b"ETag", etag.encode()))
        if close:
            headers.append((b"Connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if head or status == 304 else body})

    async def _events(self, scope: Scope, receive: Receive, send: Send, head: bool) -> None:
        address = (scope.get("client") or ("", 0))[0]
        if not self.limits.join(address):
            await send({"type": "http.response.start", "status": 503,
                        "headers": [(b"Retry-After", b"10"), (b"Content-Length", b"0"), *_SECURITY]})
            await send({"type": "http.response.body", "body": b""})
            return
        try:
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"Content-Type", b"text/event-stream"), (b"Cache-Control", b"no-store"),
                (b"X-Accel-Buffering", b"no"), (b"Connection", b"close"), *_SECURITY]})
            if head:
                await send({"type": "http.response.body", "body": b""})
                return
            gone = asyncio.ensure_future(self._disconnected(receive))
            waiter: asyncio.Future | None = None
            try:
                await send({"type": "http.response.body", "body": b"retry: %d\n\n" % RETRY_MS, "more_body": True})
                seen = -1
                while not gone.done() and self._changed is not None:
                    changed = self._changed
                    if self.broadcast.version != seen:
                        seen = self.broadcast.version
                        data = b"event: scene\ndata: " + self.broadcast.scene_json()[1] + b"\n\n"
                    else:
                        data = b": ping\n\n"
                    await send({"type": "http.response.body", "body": data, "more_body": True})
                    waiter = asyncio.ensure_future(changed.wait())
                    await asyncio.wait({gone, waiter}, timeout=HEARTBEAT_S, return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
            except asyncio.CancelledError:   # the server is shutting down: the page reconnects by itself
                pass
            finally:
                gone.cancel()
                if waiter is not None:
                    waiter.cancel()
        finally:
            self.limits.leave(address)

    @staticmethod
    async def _disconnected(receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass


class LiveServer:
    """uvicorn serving a `BroadcastApp` on a socket bound at construction (port 0 = any free port).

    `serve_forever()` blocks (the caller's thread runs the loop); `shutdown()` from any thread ends
    it (open event streams are closed after a second); `server_close()` releases the socket."""

    def __init__(self, address: tuple[str, int], broadcast: Broadcast, note: str = "",
                 settings: Mapping[str, object] | None = None, max_listeners: int = 2000,
                 max_connections: int = 4000, header_timeout: float = 10.0, max_streams_per_address: int = 16) -> None:
        import uvicorn

        self.limits = Limits(max_connections, header_timeout, max_listeners, max_streams_per_address)
        self.app = BroadcastApp(broadcast, load_files(note, settings or {}), self.limits)
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(address)
        self.socket.listen(1024)
        self.server_address = self.socket.getsockname()
        # no websockets here (an upgraded connection would leave the counted protocol); uvicorn's
        # own warnings (bad requests) would let any visitor fill the log: errors only
        config = uvicorn.Config(self.app, http=deadline_protocol(self.limits), ws="none", loop="auto", lifespan="off",
                                log_level="error", access_log=False, server_header=False,
                                timeout_keep_alive=int(max(1, header_timeout)), timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self._lock = threading.Lock()
        self._state = "new"               # new → serving → closed, or new → closed
        self._done = threading.Event()    # serve_forever has returned

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/"

    @property
    def listeners(self) -> int:
        return self.limits.listeners

    @property
    def timed_out(self) -> int:
        return self.limits.timed_out

    @property
    def refused(self) -> int:
        return self.limits.refused

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Run until `shutdown` (uvicorn checks every 0.1 s; `poll_interval` is accepted for the
        callers of the previous server)."""
        with self._lock:
            if self._state == "closed":   # closed before it ever served: its socket may be another's now
                return
            self._state = "serving"
        try:
            self.server.run(sockets=[self.socket])
        finally:
            self.app.unbind()
            self._done.set()

    def shutdown(self) -> None:
        self.server.should_exit = True

    def server_close(self) -> None:
        """Stop serving and release the socket, after the loop has let go of it (a socket closed
        under a running or starting loop would leave its number to the next socket opened)."""
        self.server.should_exit = True
        with self._lock:
            serving, self._state = self._state == "serving", "closed"
        if serving:
            self._done.wait(10.0)
        self.socket.close()


def serve(broadcast: Broadcast, host: str = "127.0.0.1", port: int = 8080, note: str = "",
          settings: Mapping[str, object] | None = None, max_listeners: int = 2000, max_connections: int = 4000,
          header_timeout: float = 10.0, max_streams_per_address: int = 16) -> LiveServer:
    """Bind the server (port 0 = any free port). Call `serve_forever()` on it; `broadcast` must be
    started. The limits are `Limits`'."""
    return LiveServer((host, port), broadcast, note=note, settings=settings, max_listeners=max_listeners,
                      max_connections=max_connections, header_timeout=header_timeout,
                      max_streams_per_address=max_streams_per_address)
