"""OSCQuery: the parameter tree as JSON over HTTP, advertised over zeroconf.

Follows the OSCQuery proposal (Vidvox): `GET /` returns the whole tree, `GET /ciel/audio/gain`
one node, `GET /ciel/audio/gain?VALUE` one attribute, `GET /?HOST_INFO` the server's description.
Nodes carry FULL_PATH, CONTENTS (containers), TYPE, RANGE, VALUE, DESCRIPTION, UNIT, CLIPMODE and
ACCESS. The service is advertised as `_oscjson._tcp` (and the OSC port as `_osc._udp`), so ossia
score, Chataigne or TouchDesigner list every parameter with its range.

The HTTP server runs on threads of its own; values are read from the ParamStore at request time.
Zeroconf registration runs on a background thread (it takes a second or two of probing).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from ..errors import CielError
from ..params import Param, ParamStore, Registry
from .config import OscQueryConfig
from .lifecycle import Lifecycle

log = logging.getLogger("ciel.oscquery")

ACCESS_READ_WRITE, ACCESS_WRITE = 3, 2
ATTRIBUTES = ("FULL_PATH", "CONTENTS", "TYPE", "RANGE", "VALUE", "DESCRIPTION", "ACCESS", "UNIT",
              "CLIPMODE", "HOST_INFO")


def type_tag(p: Param) -> str:
    """OSC type tag string of a parameter: 'f', 'i', 'fff…' for vectors, 'N' for triggers."""
    if p.kind == "trigger":
        return "N"
    return ("i" if p.kind in ("int", "bool") else "f") * p.size


def param_node(p: Param, values: tuple[float, ...]) -> dict[str, Any]:
    """The OSCQuery node of one parameter with its current values."""
    node: dict[str, Any] = {"FULL_PATH": p.address, "TYPE": type_tag(p), "DESCRIPTION": p.description}
    if p.kind == "trigger":
        node["ACCESS"] = ACCESS_WRITE
        return node
    cast = int if p.kind in ("int", "bool") else float
    node["ACCESS"] = ACCESS_READ_WRITE
    node["RANGE"] = [{"MIN": cast(p.minimum), "MAX": cast(p.maximum)} for _ in range(p.size)]
    node["VALUE"] = [cast(round(v)) if cast is int else float(v) for v in values]
    node["CLIPMODE"] = ["both"] * p.size
    if p.unit:
        node["UNIT"] = [p.unit] * p.size
    return node


def tree(registry: Registry, store: ParamStore) -> dict[str, Any]:
    """The whole namespace: containers for each address part, parameter nodes at the leaves."""
    root: dict[str, Any] = {"FULL_PATH": "/", "ACCESS": 0, "DESCRIPTION": "ciel", "CONTENTS": {}}
    for p in registry:
        parts = p.address.strip("/").split("/")
        node = root
        for depth, part in enumerate(parts[:-1]):
            node = node["CONTENTS"].setdefault(part, {
                "FULL_PATH": "/" + "/".join(parts[: depth + 1]), "ACCESS": 0, "CONTENTS": {}})
        leaf = param_node(p, store.get(p.name))
        existing = node["CONTENTS"].get(parts[-1])
        if existing is not None:  # a parameter that is also a container ("audio/walk" is not, but be safe)
            leaf["CONTENTS"] = existing.get("CONTENTS", {})
        node["CONTENTS"][parts[-1]] = leaf
    return root


def find(node: dict[str, Any], path: str) -> dict[str, Any] | None:
    """The node at `path` ('/' = root), or None."""
    for part in [s for s in path.split("/") if s]:
        node = node.get("CONTENTS", {}).get(part)
        if node is None:
            return None
    return node


class OscQueryServer(Lifecycle):
    """HTTP JSON tree + zeroconf advertisement. `start()`, then `close()`.

    config:    host/port of the HTTP server (port 0 = any free port; `self.port` tells which).
    osc_port:  the UDP port of the OSC server, given in HOST_INFO and the `_osc._udp` record.
    """

    def __init__(self, config: OscQueryConfig, store: ParamStore, osc_port: int, osc_host: str = "127.0.0.1") -> None:
        self.config, self.store, self.osc_port, self.osc_host = config, store, osc_port, osc_host
        self.registry: Registry = store.registry
        self.requests = 0
        handler = _handler(self)
        try:
            self.httpd = ThreadingHTTPServer((config.host, config.port), handler)
        except OSError as exc:
            raise CielError(f"OSCQuery: cannot listen on {config.host}:{config.port} ({exc.strerror}); "
                            "choose another [oscquery] port") from None
        self.httpd.daemon_threads = True
        self.host, self.port = self.httpd.server_address[:2]
        self._zc: Any = None
        self._infos: list[Any] = []
        self._threads: list[threading.Thread] = []
        self._zc_lock = threading.Lock()
        self._closing = False

    def host_info(self) -> dict[str, Any]:
        return {"NAME": self.config.name, "OSC_IP": self.osc_host, "OSC_PORT": self.osc_port, "OSC_TRANSPORT": "UDP",
                "EXTENSIONS": {"ACCESS": True, "VALUE": True, "RANGE": True, "DESCRIPTION": True, "TAGS": False,
                               "UNIT": True, "CLIPMODE": True, "CRITICAL": False, "LISTEN": False,
                               "PATH_CHANGED": False}}

    def start(self) -> OscQueryServer:
        t = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                             name="ciel-oscquery", daemon=True)
        t.start()
        self._threads.append(t)
        if self.config.zeroconf:
            z = threading.Thread(target=self._advertise, name="ciel-zeroconf", daemon=True)
            z.start()
            self._threads.append(z)
        log.info("OSCQuery on http://%s:%d/", self.host, self.port)
        return self

    def _advertise(self) -> None:
        """Register `_oscjson._tcp` and `_osc._udp` (background thread; probing takes seconds)."""
        from zeroconf import IPVersion, ServiceInfo, Zeroconf

        host_name = str(self.host)
        loopback = host_name in ("127.0.0.1", "localhost")
        address = "127.0.0.1" if loopback or host_name == "0.0.0.0" else host_name
        name, host = self.config.name, socket.gethostname().split(".")[0] or "ciel"
        try:
            with self._zc_lock:
                if self._closing:
                    return
                self._zc = (Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only) if loopback
                            else Zeroconf(ip_version=IPVersion.V4Only))
            for stype, port in (("_oscjson._tcp.local.", self.port), ("_osc._udp.local.", self.osc_port)):
                info = ServiceInfo(stype, f"{name}.{stype}", port=port, addresses=[socket.inet_aton(address)],
                                   properties={"txtvers": "1"}, server=f"{host}-{name}.local.")
                self._zc.register_service(info, allow_name_change=True)
                self._infos.append(info)
            log.info("OSCQuery advertised over zeroconf as %r", name)
        except Exception as exc:  # noqa: BLE001 — zeroconf raises many kinds (network, name conflicts): discovery is optional
            if not self._closing:
                log.warning("OSCQuery: zeroconf advertisement failed (%s); the tree is still at http://%s:%d/",
                            exc, self.host, self.port)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        with self._zc_lock:
            self._closing = True
            zc = self._zc
        if zc is not None:
            if self._threads[-1].name == "ciel-zeroconf":
                self._threads[-1].join(timeout=4.0)   # a registration under way (right after start)
            zc.close()  # says goodbye for the registered services


    def status(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "requests": self.requests, "advertised": bool(self._infos)}



    def answer(self, raw_path: str) -> tuple[int, dict[str, Any] | None]:
        """HTTP status and JSON for a request path such as '/ciel/audio/gain?VALUE'."""
        self.requests += 1
        url = urlsplit(raw_path)
        query = url.query.split("&")[0].upper() if url.query else ""
        if query == "HOST_INFO":
            return 200, self.host_info()
        node = find(tree(self.registry, self.store), unquote(url.path))
        if node is None:
            return 404, None
        if not query:
            return 200, node
        if query not in ATTRIBUTES:
            return 400, None
        if query not in node:
            return 204, None
        return 200, {query: node[query]}


def _handler(server: OscQueryServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "ciel-oscquery"

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            status, body = server.answer(self.path)
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            if body is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Access-Control-Allow-Origin", "*")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # requests are not worth a log line
            return

    return Handler
