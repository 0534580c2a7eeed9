"""OSC control: a UDP server whose address space is generated from the parameter registry.

Addresses (the full table is in docs/osc.md, rendered by `address_table()`):

    /ciel/<param> v            set a scalar (float, int or T/F; clamped to the range)
    /ciel/<param> v0 v1 ...    set a vector, one message with every element (one value = all)
    /ciel/<param>/<i> v        set element i of a vector (TouchDesigner's one address per channel)
    /ciel/<param>/at i v       the same, with the index as an argument
    /ciel/norm/<param>[/<i>] x the same in 0–1 of the range (TouchOSC, Open Stage Control, Resolume faders)
    /ciel/<trigger> [1]        fire a trigger (no argument or a non-zero number; 0 is ignored)
    /ciel/sky/*, /ciel/{a,b}   OSC 1.0 address patterns reach every parameter they match (never a command)
    /ciel/get [name ...]       reply with the current values (all of them without a name)
    /ciel/subscribe [port]     receive changed values, a heartbeat and replies on `port` (renew within
                               [osc] subscription_ttl seconds)
    /ciel/unsubscribe [port]
    /ciel/ping [args]          reply /ciel/pong [args]
    /ciel/preset/recall name   /ciel/preset/store name   /ciel/preset/list
    /ciel/learn name [index]   /ciel/learn/cancel   /ciel/unlearn name [index]   (MIDI learn)
    /ciel/mod/set source target depth [smooth]   /ciel/mod/clear [target]   /ciel/mod/list
                               what ciel hears (listen/*) moves a parameter (engine/modulate.py)
    /ciel/quit
    /ciel/error address reason  (sent back) a command that was refused, and why

Who may do what: packets from outside `[osc] allow` are dropped (loopback is always allowed); the
admin addresses (quit, preset store, learn, unlearn, subscribe) are taken only from this machine
unless `[osc] remote_admin = true`. Answers to another machine are limited to 1.8 times the bytes it
sent (QUIC's anti-amplification rule, RFC 9000 §8), so a forged source cannot turn ciel into a
reflector; remote tools read the whole tree over OSCQuery (TCP) instead.

Packets arrive over UDP (`handle_datagram`) or over the OSCQuery websocket (`handle_packet` with a
`Peer` that answers on its own connection): one path for both. One thread reads the socket
(enlarged receive buffer), parses datagrams with python-osc's parser and applies them at once:
bundles are unpacked and their time tags ignored, so nothing waits. A second thread sends
feedback: changes are coalesced and sent at most `feedback_rate` times a second to each subscriber,
except a change back to the client that made it (its own fader would fight the echo), and a
heartbeat. Malformed, unknown and refused packets are counted and logged at a limited rate;
nothing a client sends can stop the server.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import math
import os
import re
import socket
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pythonosc import osc_bundle, osc_message, osc_packet
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket
from pythonosc.parsing import osc_types

from ..errors import CielError
from ..params import Param, ParamStore, Registry
from .config import OscConfig, preset_name
from .lifecycle import Lifecycle

log = logging.getLogger("ciel.osc")

ROOT = "/ciel"
NORM = ROOT + "/norm"
# Commands only this machine may send, unless [osc] remote_admin = true.
ADMIN = frozenset({"quit", "preset/store", "learn", "learn/cancel", "unlearn", "subscribe"})
PATTERN_CHARS = frozenset("*?[]{}")
# Parameters a stored preset leaves out: recalling a preset never unmutes nor raises the ceiling.
PRESET_EXCLUDE = frozenset({"audio/mute", "audio/ceiling"})

Address = tuple[str, int]
PARSE_ERRORS = (osc_packet.ParseError, osc_message.ParseError, osc_bundle.ParseError, osc_types.ParseError,
                ValueError, IndexError, struct.error, UnicodeDecodeError, OverflowError, TypeError)


class Learner(Protocol):
    """What the OSC server needs from MIDI learn (engine.control.midi.MidiControl)."""

    def learn(self, param: str | None = None, index: int = -1) -> str: ...
    def cancel_learn(self) -> None: ...
    def unlearn(self, param: str | None = None, index: int = -1) -> int: ...


class Modulator(Protocol):
    """What the OSC server needs from modulation (engine.modulate.Modulation); ParamError names
    a source or target it refuses."""

    def add(self, source: str, target: str, depth: float, smooth: float = 0.05) -> None: ...
    def clear(self, target: str | None = None) -> int: ...
    def table(self) -> list[tuple[str, str, float, float]]: ...


class PresetWriter(Protocol):
    """Where stored presets are kept (engine.patchwrite.PatchWriter: the patch file). Called on the
    receiving thread; may block on the disk; raises PatchError when it cannot write (the preset is
    then not stored) and returns the name it stored."""

    def store_preset(self, name: str, values: Mapping[str, float | tuple[float, ...]]) -> str: ...


@dataclass(frozen=True)
class Peer:
    """Who sent a packet, and how to answer it.

    address:   (IP, port) as the transport saw it.
    transport: "osc" for UDP, "ws" for the OSCQuery websocket (the source tag of its changes).
    reply:     sends one OSC packet back on the peer's own connection (websocket); None = UDP to
               `address` (or to its subscription's port), under the reply budget.
    """

    address: Address
    transport: str = "osc"
    reply: Callable[[bytes], None] | None = field(default=None, compare=False)

    @property
    def source(self) -> str:
        """The source tag of the changes this peer makes ("osc:IP:PORT")."""
        return f"{self.transport}:{self.address[0]}:{self.address[1]}"

    @property
    def local(self) -> bool:
        """True for this machine (loopback)."""
        return is_loopback(self.address[0])


def is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


class ReplyBudget:
    """Bytes ciel may still send to each remote IP: `ratio` × what it received from it, at most `cap`.

    A forged source address gets at most `ratio` times its own traffic back (RFC 9000 §8's
    anti-amplification limit, 3 there). Loopback is not limited. Keeps the `entries` most recent
    addresses. Server thread only (the feedback thread never answers requests).
    """

    def __init__(self, ratio: float = 1.8, cap: int = 65536, entries: int = 4096) -> None:
        self.ratio, self.cap, self.entries = ratio, cap, entries
        self._credit: OrderedDict[str, float] = OrderedDict()

    def earn(self, ip: str, nbytes: int) -> None:
        if is_loopback(ip):
            return
        credit = min(self.cap, self._credit.pop(ip, 0.0) + self.ratio * nbytes)
        self._credit[ip] = credit
        if len(self._credit) > self.entries:
            self._credit.popitem(last=False)

    def spend(self, ip: str, nbytes: int) -> bool:
        """True (and charged) if `nbytes` may go to `ip` now."""
        if is_loopback(ip):
            return True
        credit = self._credit.get(ip, 0.0)
        if credit < nbytes:
            return False
        self._credit[ip] = credit - nbytes
        return True


def _quiet_parser(record: logging.LogRecord) -> bool:
    """Root-logger filter: python-osc's parser logs odd content (unknown type tags, bundle parts)
    on the root logger, once per packet; a flood of them would flood the log. The server counts
    and reports such packets itself, at a limited rate."""
    return not (record.name == "root" and "pythonosc" in record.pathname)


class RateLimitedLog:
    """Logs at most one line per `interval` seconds per kind, saying how many were held back."""

    def __init__(self, logger: logging.Logger, interval: float = 2.0) -> None:
        self.logger, self.interval = logger, interval
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def __call__(self, kind: str, message: str) -> None:
        now = time.monotonic()
        if now - self._last.get(kind, -math.inf) < self.interval:
            self._held[kind] = self._held.get(kind, 0) + 1
            return
        held = self._held.pop(kind, 0)
        self._last[kind] = now
        self.logger.warning("%s%s", message, f" ({held} more since the last report)" if held else "")


@dataclass
class Subscriber:
    sender: Address      # where its messages come from (the echo rule compares this)
    target: Address      # where feedback goes
    expires: float       # monotonic seconds; the subscription ends unless renewed before


def message(address: str, args: tuple[Any, ...] | list[Any] = ()) -> bytes:
    """Encode one OSC message: floats as 'f' ('d' beyond float32), ints as 'i' ('h' beyond 32 bits),
    bools as T/F, None as N, bytes as a blob, anything else as a string."""
    b = OscMessageBuilder(address)
    for a in args:
        if isinstance(a, bool) or a is None:
            b.add_arg(a, None if a is not None else "N")
        elif isinstance(a, int):
            b.add_arg(a, "i" if -2**31 <= a < 2**31 else "h")
        elif isinstance(a, float):
            b.add_arg(a, "f" if not math.isfinite(a) or abs(a) <= 3.4e38 else "d")
        elif isinstance(a, bytes) and a:
            b.add_arg(a, "b")
        else:
            b.add_arg(str(a), "s")
    return b.build().dgram


def wire_values(p: Param, values: tuple[float, ...], booleans: bool = False) -> list[bool | float | int]:
    """Values as sent: ints and switches as OSC ints (switches as T/F with `booleans`, as the
    OSCQuery tree types them), the rest as floats."""
    if booleans and p.kind == "bool":
        return [v >= 0.5 for v in values]
    if p.kind in ("int", "bool"):
        return [int(round(v)) for v in values]
    return [float(v) for v in values]


def _number(a: Any) -> float:
    """An OSC argument as a finite number, or ValueError."""
    if isinstance(a, bool):
        return 1.0 if a else 0.0
    if isinstance(a, (int, float)):
        f = float(a)
        if math.isfinite(f):
            return f
        raise ValueError(f"not a finite number: {a!r}")
    raise ValueError(f"expected a number, got {type(a).__name__} {a!r}")


def _name_of(arg: Any) -> str:
    """'audio/gain', '/ciel/audio/gain' and 'ciel/audio/gain' all name audio/gain."""
    s = str(arg).strip("/")
    return s[len("ciel/"):] if s.startswith("ciel/") else s


Route = Callable[[tuple[Any, ...], Peer], None]


class OscServer(Lifecycle):
    """The OSC server. Construct, then `start()`; `close()` stops both threads and the socket.

    config:   host, port (0 = any free port; `self.port` tells which), allow-list, feedback.
    store:    the ParamStore every set and trigger goes to, with source "osc:IP:PORT" ("ws:…" from
              the OSCQuery websocket).
    presets:  name → {param: value} from the patch (`patch.presets`); stored presets are added.
    writer:   writes stored presets into the patch file (None = kept in memory only).
    learner:  MIDI learn (None = /ciel/learn answers that MIDI is off).
    on_quit:  called (on the server thread) for /ciel/quit.
    clock:    monotonic seconds (subscription expiry).
    modulator: the routes of /ciel/mod/* (None = they answer that modulation is off).
    """

    def __init__(self, config: OscConfig, store: ParamStore,
                 presets: Mapping[str, Mapping[str, float | tuple[float, ...]]] | None = None,
                 writer: PresetWriter | None = None, learner: Learner | None = None,
                 on_quit: Callable[[], None] | None = None, clock: Callable[[], float] = time.monotonic,
                 modulator: Modulator | None = None) -> None:
        self.config, self.store, self.clock = config, store, clock
        self.registry: Registry = store.registry
        self.presets: dict[str, dict[str, float | tuple[float, ...]]] = {
            k: dict(v) for k, v in (presets or {}).items()}
        self.writer, self.learner, self.on_quit, self.modulator = writer, learner, on_quit, modulator
        self.counters = dict.fromkeys(
            ("datagrams", "messages", "handled", "malformed", "unknown", "denied", "admin_refused", "clamped",
             "sent", "send_errors", "replies_limited", "subscriptions_expired", "errors"), 0)
        self.allow = Allow(config.allow, config.host, "[osc]")
        self.budget = ReplyBudget()
        self._warn = RateLimitedLog(log)
        self._subs: dict[Address, Subscriber] = {}
        self._subs_lock = threading.Lock()
        self._dirty: dict[str, tuple[tuple[float, ...], str]] = {}
        self._dirty_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._beats = 0
        self._routes, self._commands = self._build_routes()
        self._readonly = frozenset(a for p in self.registry if p.readonly for a in (p.address, NORM + p.address[len(ROOT):]))
        self._pattern_routes = [(tuple(a.split("/")), r) for a, r in self._routes.items()
                                if not a.endswith("/at") and a not in self._readonly]
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, config.receive_buffer)
            self.sock.bind((config.host, config.port))
        except OSError as exc:
            self.sock.close()
            raise CielError(f"OSC: cannot listen on {config.host}:{config.port} ({exc.strerror}); "
                            "choose another port with --osc-port or [osc] port") from None
        self.sock.settimeout(0.2)
        self.host, self.port = self.sock.getsockname()[:2]
        self._threads: list[threading.Thread] = []
        self.priority = "normal"
        store.add_listener(self._on_change)
        logging.getLogger().addFilter(_quiet_parser)

    # — lifecycle —
    def start(self) -> OscServer:
        for target, name in ((self._serve, "ciel-osc"), (self._feedback_loop, "ciel-osc-feedback")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        log.info("OSC listening on %s:%d%s", self.host, self.port, self.allow.describe())
        return self

    def close(self) -> None:
        self.store.remove_listener(self._on_change)
        logging.getLogger().removeFilter(_quiet_parser)
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout=2.0)
        self.sock.close()

    def status(self) -> dict[str, Any]:
        return self.health()

    def health(self) -> dict[str, Any]:
        """Counters, subscribers and the kernel's drop count for this socket (JSON-able)."""
        with self._subs_lock:
            subs = [f"{s.target[0]}:{s.target[1]}" for s in self._subs.values()]
        return {"host": self.host, "port": self.port, "subscribers": subs, "priority": self.priority,
                "kernel_drops": udp_drops(self.port), **self.counters}

    # — receiving (server thread; the websocket's threads for `handle_packet` with a ws peer) —
    def _serve(self) -> None:
        self.priority = _raise_priority()
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError as exc:
                if self._stop.is_set():
                    return
                self._warn("socket", f"OSC socket error: {exc}")
                continue
            self.counters["datagrams"] += 1
            try:
                self.handle_datagram(data, addr)
            except Exception as exc:  # noqa: BLE001 — the last net: a handler bug must not end the server
                self.counters["errors"] += 1
                self._warn("error", f"OSC: internal error on a packet from {addr[0]}:{addr[1]}: {exc!r}")

    def handle_datagram(self, data: bytes, addr: Address) -> None:
        """Parse and apply one UDP datagram from `addr` (server thread; tests may call it directly)."""
        self.handle_packet(data, Peer((str(addr[0]), int(addr[1]))))

    def handle_packet(self, data: bytes, peer: Peer) -> None:
        """Parse and apply one OSC packet (message or bundle) from `peer`, on the caller's thread."""
        if not self.allow(peer.address[0]):
            self.counters["denied"] += 1
            self._warn("denied", f"OSC: packet from {peer.address[0]} refused (not in [osc] allow)")
            return
        if peer.reply is None:
            self.budget.earn(peer.address[0], len(data))
        try:
            packet = OscPacket(data)
        except PARSE_ERRORS as exc:
            self.counters["malformed"] += 1
            self._warn("malformed", f"OSC: malformed packet ({len(data)} bytes) from {peer.address[0]}:"
                                    f"{peer.address[1]}: {exc}")
            return
        for timed in packet.messages:
            self.counters["messages"] += 1
            self._dispatch(timed.message.address, tuple(timed.message.params), peer)

    def _dispatch(self, address: str, args: tuple[Any, ...], peer: Peer) -> None:
        key = address.rstrip("/").lower() if address != "/" else address
        routes = [r for r in (self._routes.get(key) or self._command(key, peer),) if r is not None]
        if not routes and PATTERN_CHARS.intersection(key):
            try:
                regex = pattern_regex(key)
            except ValueError as exc:
                self.counters["malformed"] += 1
                self._warn("pattern", f"OSC: address pattern {address!r}: {exc}")
                return
            routes = [r for a, r in self._pattern_routes if pattern_matches(regex, a)]
        if not routes:
            if key[len(ROOT) + 1:] not in ADMIN:
                self.counters["unknown"] += 1
                self._warn("unknown", f"OSC: unknown address {address!r} from {peer.address[0]}:{peer.address[1]} "
                                      "(see docs/osc.md)")
            return
        try:
            for route in routes:
                route(args, peer)
        except (ValueError, TypeError, CielError) as exc:
            self.counters["malformed"] += 1
            self._warn("args", f"OSC: {address} {list(args)!r:.200}: {exc}")
            if key[len(ROOT) + 1:] in self._commands or key in self._readonly:   # refused: say why to the sender
                self._answer(message(f"{ROOT}/error", [key, str(exc)[:400]]), peer)
            return
        self.counters["handled"] += 1

    def _command(self, key: str, peer: Peer) -> Route | None:
        """The route of a command address; None (counted, logged) for an admin command from another
        machine without `remote_admin`."""
        name = key[len(ROOT) + 1:] if key.startswith(ROOT + "/") else ""
        route = self._commands.get(name)
        if route is not None and name in ADMIN and not (peer.local or self.config.remote_admin):
            self.counters["admin_refused"] += 1
            self._warn("admin", f"OSC: {key} from {peer.address[0]} refused: only this machine may send it "
                                "(set [osc] remote_admin = true to allow the allow-list)")
            self._answer(message(f"{ROOT}/error", [key, "only the ciel machine may send this "
                                                        "([osc] remote_admin = true allows the allow-list)"]), peer)
            return None
        return route

    def _build_routes(self) -> tuple[dict[str, Route], dict[str, Route]]:
        routes: dict[str, Route] = {}
        for p in self.registry:
            norm = NORM + p.address[len(ROOT):]
            if p.kind == "trigger":
                routes[p.address] = routes[norm] = self._trigger_route(p)
                continue
            if p.readonly:
                routes[p.address] = routes[norm] = self._readonly_route(p)
                continue
            routes[p.address] = self._set_route(p, False)
            routes[norm] = self._set_route(p, True)
            if p.size > 1:
                routes[p.address + "/at"] = self._at_route(p)
                for i in range(p.size):
                    routes[f"{p.address}/{i}"] = self._element_route(p, i, False)
                    routes[f"{norm}/{i}"] = self._element_route(p, i, True)
        commands: dict[str, Route] = {
            "get": self._get, "subscribe": self._subscribe, "unsubscribe": self._unsubscribe,
            "ping": self._ping, "preset/recall": self._preset_recall, "preset/store": self._preset_store,
            "preset/list": self._preset_list, "learn": self._learn, "learn/cancel": self._learn_cancel,
            "unlearn": self._unlearn, "quit": self._quit,
            "mod/set": self._mod_set, "mod/clear": self._mod_clear, "mod/list": self._mod_list}
        return routes, commands

    def _set_route(self, p: Param, normalised: bool) -> Route:
        def set_(args: tuple[Any, ...], peer: Peer) -> None:
            if len(args) not in (1, p.size):
                raise ValueError(f"expected {p.size if p.size > 1 else 1} number(s), got {len(args)}")
            vals = [_denormalise(p, _number(a)) if normalised else _number(a) for a in args]
            self._count_clamped(p, vals)
            self.store.set(p.name, vals[0] if len(vals) == 1 else vals, source=peer.source)
        return set_

    def _readonly_route(self, p: Param) -> Route:
        def refuse(args: tuple[Any, ...], peer: Peer) -> None:
            raise ValueError(f"{p.name} is read-only: it is measured from the sound (read it with /ciel/get, "
                             "map it with /ciel/mod/set)")
        return refuse

    def _element_route(self, p: Param, index: int, normalised: bool) -> Route:
        def element(args: tuple[Any, ...], peer: Peer) -> None:
            if len(args) != 1:
                raise ValueError("expected one number")
            v = _denormalise(p, _number(args[0])) if normalised else _number(args[0])
            self._count_clamped(p, [v])
            self.store.set(p.name, v, source=peer.source, index=index)
        return element

    def _at_route(self, p: Param) -> Route:
        def at(args: tuple[Any, ...], peer: Peer) -> None:
            if len(args) != 2:
                raise ValueError("expected an index and a value")
            i, v = _number(args[0]), _number(args[1])
            if i != int(i) or not 0 <= i < p.size:
                raise ValueError(f"index {args[0]!r} outside 0..{p.size - 1}")
            self._count_clamped(p, [v])
            self.store.set(p.name, v, source=peer.source, index=int(i))
        return at

    def _trigger_route(self, p: Param) -> Route:
        def fire(args: tuple[Any, ...], peer: Peer) -> None:
            if len(args) > 1:
                raise ValueError("a trigger takes no argument or one number")
            if args and args[0] is not None and args[0] != math.inf and _number(args[0]) == 0.0:
                return  # a button's release (OSCQuery clients may send N or I: they fire)
            self.store.trigger(p.name, source=peer.source)
        return fire

    def _count_clamped(self, p: Param, vals: list[float]) -> None:
        if any(not p.minimum <= v <= p.maximum for v in vals):
            self.counters["clamped"] += 1

    # — commands —
    def _names(self, args: tuple[Any, ...]) -> list[str]:
        if not args:
            return [p.name for p in self.registry]
        names = [_name_of(a) for a in args]
        for n in names:
            self.registry.get(n)
        return names

    def _get(self, args: tuple[Any, ...], peer: Peer) -> None:
        for name in self._names(args):
            p = self.registry.get(name)
            self._answer(message(p.address, wire_values(p, self.store.get(name), booleans=peer.reply is not None)), peer)

    def _subscribe(self, args: tuple[Any, ...], peer: Peer) -> None:
        if peer.reply is not None:
            raise ValueError("a websocket listens with LISTEN, not /ciel/subscribe")
        addr = peer.address
        port = int(_number(args[0])) if args else self.config.feedback_port
        if not 0 < port < 65536:
            raise ValueError(f"port {port} outside 1..65535")
        ttl = self.config.subscription_ttl
        sub = Subscriber(addr, (addr[0], port), self.clock() + ttl if ttl > 0 else math.inf)
        with self._subs_lock:
            self._expire()
            if addr not in self._subs and len(self._subs) >= self.config.max_subscribers:
                raise ValueError(f"too many subscribers ({self.config.max_subscribers}, see [osc] max_subscribers)")
            old = self._subs.get(addr)
            renewed = old is not None and old.target == sub.target
            self._subs[addr] = sub
        if not renewed:  # a new subscriber starts in sync; a renewal (patches repeat it) changes nothing
            log.info("OSC: %s:%d subscribed, feedback to port %d", addr[0], addr[1], port)
            self._get((), peer)

    def _expire(self) -> None:
        """Drop subscriptions not renewed in time (caller holds _subs_lock)."""
        now = self.clock()
        for key in [k for k, s in self._subs.items() if s.expires <= now]:
            del self._subs[key]
            self.counters["subscriptions_expired"] += 1

    def _unsubscribe(self, args: tuple[Any, ...], peer: Peer) -> None:
        addr = peer.address
        port = int(_number(args[0])) if args else None
        with self._subs_lock:
            for key, sub in list(self._subs.items()):
                if key == addr or (sub.target[0] == addr[0] and sub.target[1] == port):
                    del self._subs[key]

    def _ping(self, args: tuple[Any, ...], peer: Peer) -> None:
        self._answer(message(f"{ROOT}/pong", args), peer)

    def recall_preset(self, name: str, source: str = "preset") -> None:
        """Set every value of preset `name` (ValueError naming the known presets if there is none)."""
        if name not in self.presets:
            raise ValueError(f"no preset {name!r} (known: {', '.join(sorted(self.presets)) or 'none'})")
        for pname, value in self.presets[name].items():
            self.store.set(pname, value, source=source)

    def recall_program(self, program: int) -> None:
        """MIDI program change (MIDI thread): recall the preset at that place in the patch's order,
        counting from 0; a program with no preset is logged and ignored."""
        names = list(self.presets)
        if not 0 <= program < len(names):
            self._warn("program", f"MIDI program change {program}: no preset there ({len(names)} in the patch)")
            return
        self.recall_preset(names[program], source="midi:program")

    def _preset_recall(self, args: tuple[Any, ...], peer: Peer) -> None:
        self.recall_preset(_preset_name(args))

    def _preset_store(self, args: tuple[Any, ...], peer: Peer) -> None:
        name = _preset_name(args)
        values = {p.name: (self.store.get(p.name) if p.size > 1 else self.store.get1(p.name))
                  for p in self.registry
                  if p.kind != "trigger" and not p.readonly and p.name not in PRESET_EXCLUDE}
        if self.writer is not None:
            name = self.writer.store_preset(name, values)   # PatchError when it could not: the preset is not kept
        self.presets[name] = values
        log.info("OSC: preset %r stored", name)
        self._answer(message(f"{ROOT}/preset/stored", [name]), peer)

    def _preset_list(self, args: tuple[Any, ...], peer: Peer) -> None:
        self._answer(message(f"{ROOT}/preset/names", list(self.presets)), peer)

    def _learn(self, args: tuple[Any, ...], peer: Peer) -> None:
        learner = self.learner
        if learner is None:
            raise ValueError("MIDI is off: nothing to learn")
        name, index = self._param_and_index(args)
        learner.learn(name, index)

    def _unlearn(self, args: tuple[Any, ...], peer: Peer) -> None:
        learner = self.learner
        if learner is None:
            raise ValueError("MIDI is off: nothing to unlearn")
        name, index = self._param_and_index(args)
        removed = learner.unlearn(name, index)
        log.info("OSC: %d MIDI mapping(s) of %s removed", removed, name or "every parameter")

    def _param_and_index(self, args: tuple[Any, ...]) -> tuple[str | None, int]:
        name = _name_of(args[0]) if args else None
        index = int(_number(args[1])) if len(args) > 1 else -1
        if name is not None:
            p = self.registry.get(name)
            if not -1 <= index < p.size:
                raise ValueError(f"index {index} outside 0..{p.size - 1}")
        return name, index

    def _learn_cancel(self, args: tuple[Any, ...], peer: Peer) -> None:
        learner = self.learner
        if learner is not None:
            learner.cancel_learn()

    def _modulator(self) -> Modulator:
        if self.modulator is None:
            raise ValueError("modulation is off in this engine")
        return self.modulator

    def _mod_set(self, args: tuple[Any, ...], peer: Peer) -> None:
        if len(args) not in (3, 4):
            raise ValueError("expected source, target, depth and an optional smooth (s)")
        source, target = _name_of(args[0]), _name_of(args[1])
        smooth = _number(args[3]) if len(args) == 4 else 0.05
        self._modulator().add(source, target, _number(args[2]), smooth)

    def _mod_clear(self, args: tuple[Any, ...], peer: Peer) -> None:
        if len(args) > 1:
            raise ValueError("expected a target or nothing (all routes)")
        self._modulator().clear(_name_of(args[0]) if args else None)

    def _mod_list(self, args: tuple[Any, ...], peer: Peer) -> None:
        flat: list[str | float] = []
        for source, target, depth, smooth in self._modulator().table():
            flat += [source, target, depth, smooth]
        self._answer(message(f"{ROOT}/mod/routes", flat), peer)

    def _quit(self, args: tuple[Any, ...], peer: Peer) -> None:
        log.info("OSC: quit asked by %s:%d", *peer.address)
        if self.on_quit is not None:
            self.on_quit()

    # — sending —
    def _answer(self, data: bytes, peer: Peer) -> None:
        """Send a reply to `peer`: on its websocket, or over UDP to its subscription's port (else the
        port it sent from) while its reply budget lasts."""
        if peer.reply is not None:
            try:
                peer.reply(data)
                self.counters["sent"] += 1
            except (OSError, RuntimeError) as exc:   # the websocket closed under us
                self.counters["send_errors"] += 1
                self._warn("send", f"OSC: cannot answer {peer.source}: {exc}")
            return
        with self._subs_lock:
            sub = self._subs.get(peer.address)
        to = sub.target if sub is not None else peer.address
        if not self.budget.spend(to[0], len(data)):
            self.counters["replies_limited"] += 1
            return
        self._send(data, to)

    def _send(self, data: bytes, to: Address) -> None:
        try:
            self.sock.sendto(data, to)
            self.counters["sent"] += 1
        except OSError as exc:
            self.counters["send_errors"] += 1
            self._warn("send", f"OSC: cannot send to {to[0]}:{to[1]}: {exc}")

    def _on_change(self, name: str, values: tuple[float, ...], source: str) -> None:
        """Store listener (any thread): remember the newest value; the feedback thread sends it."""
        with self._dirty_lock:
            self._dirty[name] = (values, source)
        self._wake.set()

    def _feedback_loop(self) -> None:
        gap = 1.0 / self.config.feedback_rate
        beat = self.config.heartbeat
        next_beat = time.monotonic() + beat
        while not self._stop.is_set():
            timeout = max(0.0, next_beat - time.monotonic()) if beat > 0 else None
            self._wake.wait(timeout)
            if self._stop.is_set():
                return
            self._wake.clear()
            self._flush()
            if beat > 0 and time.monotonic() >= next_beat:
                next_beat = time.monotonic() + beat
                self._beats += 1
                self._broadcast(message(f"{ROOT}/heartbeat", [round(time.monotonic() - self._started, 3), self._beats]))
            time.sleep(gap)

    def _subscribers(self) -> list[Subscriber]:
        with self._subs_lock:
            self._expire()
            return list(self._subs.values())

    def _flush(self) -> None:
        with self._dirty_lock:
            dirty, self._dirty = self._dirty, {}
        if not dirty:
            return
        subs = self._subscribers()
        if not subs:
            return
        for name, (values, source) in dirty.items():
            p = self.registry.get(name)
            data = message(p.address, () if p.kind == "trigger" else wire_values(p, values))
            for sub in subs:
                if source != Peer(sub.sender).source:
                    self._send(data, sub.target)

    def _broadcast(self, data: bytes) -> None:
        for sub in self._subscribers():
            self._send(data, sub.target)


class Allow:
    """The allow-list of a listening surface: loopback always, else the networks of `allow`.

    An empty list on a non-loopback listen address is refused (CielError): opening the show to the
    whole network is a decision the performer writes down, not a default. Any thread.
    """

    def __init__(self, allow: tuple[str, ...], host: str, section: str) -> None:
        self.networks = [_network(a, section) for a in allow]
        if not self.networks and not is_loopback(host) and host != "localhost":
            raise CielError(f"{section}: listening on {host} needs an allow-list of the machines that may "
                            f"control ciel, e.g. --allow 192.168.1.0/24 or {section} allow = [\"192.168.1.0/24\"]")

    def __call__(self, ip: str) -> bool:
        if is_loopback(ip):
            return True
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(address in n for n in self.networks)

    def describe(self) -> str:
        return f" (allowed: loopback, {', '.join(map(str, self.networks))})" if self.networks else ""


MAX_PATTERN = 256   # characters of an address pattern


@functools.lru_cache(maxsize=256)
def pattern_regex(pattern: str) -> tuple[re.Pattern[str], ...]:
    """An OSC 1.0 address pattern as one compiled regex per address part: `?` one character, `*`
    any run (never '/'), `[a-z]` / `[!a-z]` one of (not one of), `{foo,bar}` one of the words.
    ValueError if malformed, longer than MAX_PATTERN or with over four `*` in a part. Runs of `*` are one `*`, and each part is
    matched on its own against one short part of an address, so no pattern can make the matcher
    backtrack for long (a packet must never stall the server)."""
    if len(pattern) > MAX_PATTERN:
        raise ValueError(f"longer than {MAX_PATTERN} characters")
    parts = [re.sub(r"\*+", "*", part) for part in pattern.split("/")]
    if any(part.count("*") > 4 for part in parts):
        raise ValueError("at most four '*' in one part of an address")
    return tuple(_part_regex(part) for part in parts)


def pattern_matches(parts: tuple[re.Pattern[str], ...], address: tuple[str, ...]) -> bool:
    """True if every part of `address` (split at '/') matches its part of the pattern."""
    return len(parts) == len(address) and all(p.fullmatch(a) for p, a in zip(parts, address))


def _part_regex(part: str) -> re.Pattern[str]:
    out, i = [], 0
    while i < len(part):
        c = part[i]
        if c == "?":
            out.append(".")
        elif c == "*":
            out.append(".*")
        elif c == "[":
            end = part.find("]", i + 1)
            if end < 0:
                raise ValueError("'[' without ']'")
            body = part[i + 1:end]
            negate = body.startswith("!")
            body = body[1:] if negate else body
            if not body:
                raise ValueError(f"bad character class [{part[i + 1:end]}]")
            cls = "".join("-" if ch == "-" and 0 < k < len(body) - 1 else re.escape(ch) for k, ch in enumerate(body))
            out.append(f"[{'^' if negate else ''}{cls}]")
            i = end
        elif c == "{":
            end = part.find("}", i + 1)
            if end < 0:
                raise ValueError("'{' without '}'")
            words = part[i + 1:end].split(",")
            out.append("(?:" + "|".join(re.escape(w) for w in words) + ")")
            i = end
        elif c in "]}":
            raise ValueError(f"unmatched {c!r}")
        else:
            out.append(re.escape(c))
        i += 1
    try:
        return re.compile("".join(out))
    except re.error as exc:
        raise ValueError(str(exc)) from None


def _denormalise(p: Param, x: float) -> float:
    """0–1 → the parameter's range (out-of-range x is clamped by the store)."""
    return p.minimum + x * (p.maximum - p.minimum)


def _raise_priority(nice: int = -5) -> str:
    """Give the calling thread a little more CPU than the render loop when the machine is busy
    (Linux, where allowed): it is light, and control that lags is felt at once."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        return f"nice {nice}"
    except (OSError, AttributeError):
        return "normal"


def _network(text: str, section: str = "[osc]") -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise CielError(f"{section} allow: {text!r} is not an IP address or network (e.g. '192.168.1.0/24')") from None


def _preset_name(args: tuple[Any, ...]) -> str:
    """A preset name from OSC arguments (Pd sends a number as a float: 3.0 names preset "3")."""
    if len(args) != 1:
        raise ValueError("expected one preset name")
    a = args[0]
    name = str(int(a)) if isinstance(a, (int, float)) and not isinstance(a, bool) and float(a).is_integer() else str(a)
    return preset_name(name)


def udp_drops(port: int) -> int | None:
    """Datagrams the kernel dropped on the UDP socket bound to `port` (Linux), None if unknown."""
    try:
        with open("/proc/net/udp", encoding="ascii") as fh:
            next(fh)
            for line in fh:
                cols = line.split()
                if int(cols[1].split(":")[1], 16) == port:
                    return int(cols[-1])
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return None
