"""OSCQuery: the parameter tree as JSON over HTTP, values streamed over a websocket on the same port,
the control page, and a zeroconf advertisement.

Follows the OSCQuery proposal (Vidvox, github.com/Vidvox/OSCQueryProposal):

    GET /                      the whole tree          GET /ciel/audio/gain   one node
    GET /ciel/audio/gain?VALUE one attribute           GET /?HOST_INFO        the server's description
    websocket, text            {"COMMAND": "LISTEN", "DATA": "/ciel/audio/gain"}   (and "IGNORE")
    websocket, binary in       OSC packets, applied exactly as if they came over UDP (same routes)
    websocket, binary out      each listened value as an OSC message when it changes, whoever changed it
                               (a MIDI knob, the scheduler, another client), except the client's own changes

LISTEN on a container (e.g. "/ciel/sky") listens to every parameter under it. Nodes carry FULL_PATH,
CONTENTS, TYPE (`T` for switches, `N` for triggers), RANGE (with `VALS` for enumerations and
presets), VALUE, DESCRIPTION, UNIT (the spec's names: gain.db, time.second, angle.degree,
color.rgb), EXTENDED_TYPE, CLIPMODE and ACCESS; the preset and learn commands are nodes too.

`GET /control/` serves the control page (engine/control/page/): another client of the same tree
and websocket, with the same security headers as the broadcast page.

Threads: the websockets library runs one thread per connection (HTTP requests are answered in its
handshake hook); each websocket has a sender thread of its own, so a slow phone never delays
another client; zeroconf registers on a background thread (probing takes a second or two). Values
are read from the ParamStore at request time. Every connection from outside the allow-list is
answered 403.
"""

from __future__ import annotations

import json
import logging
import socket
import struct
import threading
from collections.abc import Callable, Mapping
from http import HTTPStatus
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from pythonosc.osc_message_builder import OscMessageBuilder
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.sync.server import Server, ServerConnection, serve

from ..errors import CielError
from ..params import Param, ParamStore, Registry
from .config import OscQueryConfig
from .lifecycle import Lifecycle
from .osc import ROOT, Allow, Peer, is_loopback

log = logging.getLogger("ciel.oscquery")

ACCESS_NONE, ACCESS_READ, ACCESS_WRITE, ACCESS_READ_WRITE = 0, 1, 2, 3
ATTRIBUTES = ("FULL_PATH", "CONTENTS", "TYPE", "RANGE", "VALUE", "DESCRIPTION", "ACCESS", "UNIT",
              "CLIPMODE", "EXTENDED_TYPE", "HOST_INFO")
# ciel's units in the OSCQuery proposal's (ossia's) unit names; others are said in DESCRIPTION only.
UNITS = {"dB": "gain.db", "dBFS": "gain.db", "s": "time.second", "deg": "angle.degree"}
PAGE = Path(__file__).resolve().parent / "page"
PAGE_FILES = {"index.html": "text/html; charset=utf-8", "page.js": "text/javascript; charset=utf-8",
              "page.css": "text/css; charset=utf-8"}
SECURITY_HEADERS = (
    ("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                                "connect-src 'self'; frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)
MAX_LISTENERS = 32
MAX_PATHS = 512      # LISTENed paths per client (every parameter and container is about 120)
SEND_TIMEOUT_S = 5   # a client that takes no data for this long (a phone gone) is dropped


class OscEndpoint(Protocol):
    """What the tree needs from the OSC server (engine.control.osc.OscServer)."""

    host: str
    port: int

    @property
    def presets(self) -> Mapping[str, Mapping[str, float | tuple[float, ...]]]: ...

    def handle_packet(self, data: bytes, peer: Peer) -> None: ...


def type_tag(p: Param) -> str:
    """OSC type tag string of a parameter: 'f', 'i', 'T' for switches, 'fff…' for vectors, 'N' for triggers."""
    if p.kind == "trigger":
        return "N"
    if p.kind == "bool":
        return "T" * p.size
    return ("i" if p.kind == "int" else "f") * p.size


def typed_values(p: Param, values: tuple[float, ...]) -> list[bool | int | float]:
    """Values as the tree and the websocket give them: switches as booleans, ints as ints."""
    if p.kind == "bool":
        return [v >= 0.5 for v in values]
    if p.kind == "int":
        return [int(round(v)) for v in values]
    return [float(v) for v in values]


def value_message(p: Param, values: tuple[float, ...]) -> bytes:
    """One OSC message with the parameter's values (a trigger: no argument)."""
    b = OscMessageBuilder(p.address)
    if p.kind != "trigger":
        for v in typed_values(p, values):
            b.add_arg(v, None if isinstance(v, bool) else ("i" if isinstance(v, int) else "f"))
    return b.build().dgram


def param_node(p: Param, values: tuple[float, ...]) -> dict[str, Any]:
    """The OSCQuery node of one parameter with its current values."""
    node: dict[str, Any] = {"FULL_PATH": p.address, "TYPE": type_tag(p), "DESCRIPTION": p.description}
    if p.kind == "trigger":
        node["ACCESS"] = ACCESS_WRITE
        return node
    node["ACCESS"] = ACCESS_READ if p.readonly else ACCESS_READ_WRITE
    node["VALUE"] = typed_values(p, values)
    if p.kind == "bool":
        node["RANGE"] = [{"VALS": [False, True]}] * p.size
    elif p.labels:
        node["RANGE"] = [{"MIN": int(p.minimum), "MAX": int(p.maximum), "VALS": list(range(len(p.labels)))}]
    else:
        cast = int if p.kind == "int" else float
        node["RANGE"] = [{"MIN": cast(p.minimum), "MAX": cast(p.maximum)} for _ in range(p.size)]
    node["CLIPMODE"] = ["both"] * p.size
    unit = "color.rgb" if p.extended == "color.rgb" else UNITS.get(p.unit)
    if unit:
        node["UNIT"] = [unit] * p.size
    if p.extended:
        node["EXTENDED_TYPE"] = [p.extended] * p.size
    if p.labels:
        node["DESCRIPTION"] = f"{p.description} ({', '.join(f'{i} = {v}' for i, v in enumerate(p.labels))})"
    return node


def command_nodes(presets: list[str]) -> dict[str, dict[str, Any]]:
    """The preset, learn and modulation commands as write-only nodes (FULL_PATH → node)."""
    def node(path: str, tag: str, doc: str, **extra: Any) -> dict[str, Any]:
        return {"FULL_PATH": f"{ROOT}/{path}", "TYPE": tag, "ACCESS": ACCESS_WRITE, "DESCRIPTION": doc, **extra}

    names = {"VALS": presets} if presets else {}
    return {n["FULL_PATH"]: n for n in (
        node("preset/recall", "s", "Recall a preset by name.", RANGE=[names] if names else [{}]),
        node("preset/store", "s", "Store every value under a name, in the patch file (this machine only, "
                                  "unless [osc] remote_admin)."),
        node("learn", "si", "MIDI learn: the next controller moved controls this parameter (and element)."),
        node("learn/cancel", "N", "Stop learning."),
        node("unlearn", "si", "Remove the MIDI mappings of a parameter (and element)."),
        node("mod/set", "ssff", "Modulation: a measured parameter (listen/*) moves a target by a depth "
                                "(-1..1 of its range), glided over smooth seconds."),
        node("mod/clear", "s", "Remove the modulation routes to a target (all of them without one)."),
        node("mod/list", "N", "Reply /ciel/mod/routes with source, target, depth and smooth of every route."),
        node("panic", "N", "Mute all sound at once."),
    )}


def tree(registry: Registry, store: ParamStore, presets: list[str] | None = None) -> dict[str, Any]:
    """The whole namespace: containers for each address part, parameter and command nodes at the leaves."""
    root: dict[str, Any] = {"FULL_PATH": "/", "ACCESS": ACCESS_NONE, "DESCRIPTION": "ciel", "CONTENTS": {}}
    leaves = {p.address: param_node(p, store.get(p.name)) for p in registry}
    for path, node in command_nodes(presets or []).items():
        leaves.setdefault(path, node)
    for path, leaf in leaves.items():
        parts = path.strip("/").split("/")
        node = root
        for depth, part in enumerate(parts[:-1]):
            node = node["CONTENTS"].setdefault(part, {
                "FULL_PATH": "/" + "/".join(parts[: depth + 1]), "ACCESS": ACCESS_NONE, "CONTENTS": {}})
            node.setdefault("CONTENTS", {})
        existing = node["CONTENTS"].get(parts[-1])
        if existing is not None and "CONTENTS" in existing:  # "learn" is a command and a container
            leaf = dict(leaf, CONTENTS=existing["CONTENTS"])
        node["CONTENTS"][parts[-1]] = leaf
    return root


def find(node: dict[str, Any], path: str) -> dict[str, Any] | None:
    """The node at `path` ('/' = root), or None."""
    for part in [s for s in path.split("/") if s]:
        node = node.get("CONTENTS", {}).get(part)
        if node is None:
            return None
    return node


class Listener:
    """One websocket client: the paths it listens to, and its sender thread.

    Changes are coalesced per parameter (the newest value wins) and sent by this client's own
    thread, so a client on a slow network delays only itself.
    """

    def __init__(self, ws: ServerConnection, registry: Registry) -> None:
        self.ws, self.registry = ws, registry
        address = ws.remote_address
        self.peer = Peer((str(address[0]), int(address[1])), "ws", reply=self.send)
        self.paths: frozenset[str] = frozenset()   # replaced whole (connection thread), read by any thread
        self._send_lock = threading.Lock()
        self._dirty: dict[str, tuple[float, ...]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self.closed = False
        self._thread = threading.Thread(target=self._run, name="ciel-oscquery-push", daemon=True)
        self._thread.start()

    def listens(self, address: str) -> bool:
        paths = self.paths
        return any(address == p or address.startswith(p.rstrip("/") + "/") for p in paths)

    def changed(self, p: Param, values: tuple[float, ...], source: str) -> None:
        """Store listener (any thread): queue the change if this client listens to it and did not make it."""
        if source == self.peer.source or not self.listens(p.address):
            return
        with self._lock:
            self._dirty[p.name] = values
        self._wake.set()

    def send(self, data: bytes) -> None:
        """One binary frame (any thread: the push thread and the connection's reply path share it)."""
        with self._send_lock:
            self.ws.send(data)

    def _run(self) -> None:
        while not self.closed:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                dirty, self._dirty = self._dirty, {}
            try:
                for name, values in dirty.items():
                    self.send(value_message(self.registry.get(name), values))
            except (ConnectionClosed, OSError, RuntimeError):
                return

    def close(self) -> None:
        self.closed = True
        self._wake.set()


class OscQueryServer(Lifecycle):
    """The tree over HTTP, LISTEN over a websocket on the same port, the control page, zeroconf.
    `start()`, then `close()`.

    config:  host/port of the server (port 0 = any free port; `self.port` tells which), name, zeroconf.
    store:   the parameters; changes from any source are pushed to listening clients.
    osc:     the OSC server: its port and host go in HOST_INFO, binary websocket packets go to its
             routes, its presets fill the tree.
    allow:   the machines besides this one that may connect ([osc] allow).
    status:  the page's status (problems on the overlay, MIDI learn), JSON-able; None = none.
    """

    def __init__(self, config: OscQueryConfig, store: ParamStore, osc: OscEndpoint, allow: tuple[str, ...] = (),
                 status: Callable[[], Mapping[str, object]] | None = None) -> None:
        self.config, self.store, self.osc, self.page_status = config, store, osc, status
        self.registry: Registry = store.registry
        self.allow = Allow(allow, config.host, "[osc]")
        self.counters = dict.fromkeys(("requests", "denied", "websockets", "listeners_refused"), 0)
        self._listeners: set[Listener] = set()
        # every parameter address and every container above one: what LISTEN accepts
        self._listenable = frozenset(
            "/" + "/".join(p.address.strip("/").split("/")[:n]) for p in self.registry
            for n in range(1, p.address.count("/") + 1)) | {"/"}
        self._listeners_lock = threading.Lock()
        try:
            self.server: Server = serve(self._session, config.host, config.port, process_request=self._http,
                                        server_header="ciel-oscquery", compression=None, max_size=65536,
                                        open_timeout=5, close_timeout=1, ping_interval=20, ping_timeout=20)
        except OSError as exc:
            raise CielError(f"OSCQuery: cannot listen on {config.host}:{config.port} ({exc.strerror}); "
                            "choose another [oscquery] port") from None
        self.host, self.port = self.server.socket.getsockname()[:2]
        self._zc: Any = None  # zeroconf.Zeroconf, imported on its thread
        self._infos: list[Any] = []
        self._threads: list[threading.Thread] = []
        self._zc_lock = threading.Lock()
        self._closing = False
        store.add_listener(self._on_change)

    # — lifecycle —
    def start(self) -> OscQueryServer:
        t = threading.Thread(target=self.server.serve_forever, name="ciel-oscquery", daemon=True)
        t.start()
        self._threads.append(t)
        if self.config.zeroconf:
            z = threading.Thread(target=self._advertise, name="ciel-zeroconf", daemon=True)
            z.start()
            self._threads.append(z)
        log.info("OSCQuery on http://%s:%d/ (control page: /control/)%s", self.host, self.port, self.allow.describe())
        return self

    def close(self) -> None:
        self.store.remove_listener(self._on_change)
        self.server.shutdown()
        with self._listeners_lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener.close()
        with self._zc_lock:
            self._closing = True
            zc = self._zc
        if zc is not None:
            if self._threads[-1].name == "ciel-zeroconf":
                self._threads[-1].join(timeout=4.0)   # a registration under way (right after start)
            zc.close()  # says goodbye for the registered services

    def status(self) -> dict[str, Any]:
        with self._listeners_lock:
            listening = len(self._listeners)
        return {"host": self.host, "port": self.port, "advertised": bool(self._infos), "listeners": listening,
                **self.counters}

    # — zeroconf —
    def addresses(self) -> list[str]:
        """The IPv4 addresses other machines reach this server at (loopback when it listens only there)."""
        host = str(self.host)
        if is_loopback(host):
            return ["127.0.0.1"]
        if host != "0.0.0.0":
            return [host]
        from zeroconf import get_all_addresses

        found = [a for a in get_all_addresses() if not is_loopback(a)]
        return found or ["127.0.0.1"]

    def _advertise(self) -> None:
        """Register `_oscjson._tcp` and `_osc._udp` (background thread; probing takes seconds)."""
        from zeroconf import InterfaceChoice, IPVersion, ServiceInfo, Zeroconf

        addresses = self.addresses()
        loopback = addresses == ["127.0.0.1"]
        name, host = self.config.name, socket.gethostname().split(".")[0] or "ciel"
        try:
            with self._zc_lock:
                if self._closing:
                    return
                self._zc = Zeroconf(interfaces=["127.0.0.1"] if loopback else InterfaceChoice.All,
                                    ip_version=IPVersion.V4Only)
            for stype, port in (("_oscjson._tcp.local.", self.port), ("_osc._udp.local.", self.osc.port)):
                info = ServiceInfo(stype, f"{name}.{stype}", port=port,
                                   addresses=[socket.inet_aton(a) for a in addresses],
                                   properties={"txtvers": "1"}, server=f"{host}-{name}.local.")
                self._zc.register_service(info, allow_name_change=True)
                self._infos.append(info)
            log.info("OSCQuery advertised over zeroconf as %r at %s", name, ", ".join(addresses))
        except Exception as exc:  # noqa: BLE001 — zeroconf raises many kinds (network, name conflicts): discovery is optional
            if not self._closing:
                log.warning("OSCQuery: zeroconf advertisement failed (%s); the tree is still at http://%s:%d/",
                            exc, self.host, self.port)

    # — HTTP (the connection's thread) —
    def host_info(self, local_ip: str = "") -> dict[str, Any]:
        """HOST_INFO; OSC_IP is the address the asking client reached us at when OSC listens on all."""
        osc_ip = str(self.osc.host)
        if osc_ip == "0.0.0.0":
            osc_ip = local_ip if local_ip and not local_ip.startswith("0.") else (self.addresses() or ["127.0.0.1"])[0]
        return {"NAME": self.config.name, "OSC_IP": osc_ip, "OSC_PORT": self.osc.port, "OSC_TRANSPORT": "UDP",
                "EXTENSIONS": {"ACCESS": True, "VALUE": True, "RANGE": True, "DESCRIPTION": True, "TAGS": False,
                               "UNIT": True, "CLIPMODE": True, "CRITICAL": False, "EXTENDED_TYPE": True,
                               "LISTEN": True, "PATH_CHANGED": False, "PATH_ADDED": False, "PATH_REMOVED": False,
                               "PATH_RENAMED": False}}

    def answer(self, raw_path: str, local_ip: str = "") -> tuple[int, dict[str, Any] | None]:
        """HTTP status and JSON for a request path such as '/ciel/audio/gain?VALUE'."""
        self.counters["requests"] += 1
        url = urlsplit(raw_path)
        query = url.query.split("&")[0].upper() if url.query else ""
        if query == "HOST_INFO":
            return 200, self.host_info(local_ip)
        node = find(tree(self.registry, self.store, list(self.osc.presets)), unquote(url.path))
        if node is None:
            return 404, None
        if not query:
            return 200, node
        if query not in ATTRIBUTES:
            return 400, None
        if query not in node:
            return 204, None
        return 200, {query: node[query]}

    def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        """websockets' handshake hook: refuse outsiders, let websocket upgrades through, answer the rest."""
        peer_ip = str(connection.remote_address[0])
        if not self.allow(peer_ip):
            self.counters["denied"] += 1
            return _response(HTTPStatus.FORBIDDEN, b"not in [osc] allow\n", "text/plain")
        if request.headers.get("Upgrade", "").lower() == "websocket":
            origin = request.headers.get("Origin")
            if origin is not None and origin != f"http://{request.headers.get('Host', '')}":
                # a page from another site open in a browser on an allowed machine (or on this one,
                # which may quit the show): only the control page itself and non-browser tools
                # (which send no Origin) may open the websocket
                self.counters["denied"] += 1
                return _response(HTTPStatus.FORBIDDEN, b"websocket from another origin refused\n", "text/plain")
            return None
        path = urlsplit(request.path).path
        if path == "/control":
            return _response(HTTPStatus.MOVED_PERMANENTLY, b"", "text/plain", (("Location", "/control/"),))
        if path.startswith("/control/"):
            return self._page(path[len("/control/"):])
        status, body = self.answer(request.path, str(connection.local_address[0]))
        data = json.dumps(body).encode() if body is not None else b""
        return _response(HTTPStatus(status), data, "application/json" if body is not None else "",
                         (("Access-Control-Allow-Origin", "*"),))

    def _page(self, name: str) -> Response:
        """The control page's files and its status JSON."""
        if name == "status":
            body = dict(self.page_status()) if self.page_status is not None else {}
            return _response(HTTPStatus.OK, json.dumps(body).encode(), "application/json", SECURITY_HEADERS)
        name = name or "index.html"
        if name not in PAGE_FILES:
            return _response(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain", SECURITY_HEADERS)
        return _response(HTTPStatus.OK, (PAGE / name).read_bytes(), PAGE_FILES[name], SECURITY_HEADERS)

    # — websocket (the connection's thread) —
    def _session(self, ws: ServerConnection) -> None:
        with self._listeners_lock:
            if len(self._listeners) >= MAX_LISTENERS:
                self.counters["listeners_refused"] += 1
                ws.close(1013, f"too many clients ({MAX_LISTENERS})")
                return
            listener = Listener(ws, self.registry)
            self._listeners.add(listener)
        # a vanished phone must not hold its push thread (and a slot) until TCP gives up
        ws.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", SEND_TIMEOUT_S, 0))
        self.counters["websockets"] += 1
        try:
            for frame in ws:
                if isinstance(frame, bytes):
                    self.osc.handle_packet(frame, listener.peer)
                else:
                    self._command(listener, frame)
        except ConnectionClosed:
            pass
        finally:
            listener.close()
            with self._listeners_lock:
                self._listeners.discard(listener)

    def _command(self, listener: Listener, text: str) -> None:
        """LISTEN / IGNORE a path (a container covers everything under it); anything else is ignored."""
        try:
            command = json.loads(text)
            verb, path = str(command["COMMAND"]).upper(), "/" + str(command["DATA"]).strip("/")
        except (ValueError, KeyError, TypeError):
            log.debug("OSCQuery: ignored websocket text %r", text[:80])
            return
        if verb == "LISTEN" and path in self._listenable and len(listener.paths) < MAX_PATHS:
            listener.paths = listener.paths | {path}
        elif verb == "IGNORE":
            listener.paths = listener.paths - {path}

    def _on_change(self, name: str, values: tuple[float, ...], source: str) -> None:
        """Store listener (any thread)."""
        p = self.registry.get(name)
        with self._listeners_lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener.changed(p, values, source)   # never raises: a set under a lock, a frozenset read


def _response(status: HTTPStatus, body: bytes, content_type: str,
              extra: tuple[tuple[str, str], ...] = ()) -> Response:
    headers = Headers([("Content-Length", str(len(body))), ("Connection", "close"), *extra])
    if content_type:
        headers["Content-Type"] = content_type
    return Response(status.value, status.phrase, headers, body)
