"""OSC control: a UDP server whose address space is generated from the parameter registry.

Addresses (the full table is in docs/osc.md, rendered by `address_table()`):

    /ciel/<param> v            set a scalar (float, int or T/F; clamped to the range)
    /ciel/<param> v0 v1 ...    set a vector, one message with every element (one value = all)
    /ciel/<param>/at i v       set element i of a vector
    /ciel/<trigger> [1]        fire a trigger (no argument or a non-zero number; 0 is ignored)
    /ciel/get [name ...]       reply with the current values (all of them without a name)
    /ciel/subscribe [port]     receive changed values, a heartbeat and replies on `port`
    /ciel/unsubscribe [port]
    /ciel/ping [args]          reply /ciel/pong [args]
    /ciel/preset/recall name   /ciel/preset/store name   /ciel/preset/list
    /ciel/learn name [index]   /ciel/learn/cancel          (MIDI learn)
    /ciel/quit

One thread reads the socket (enlarged receive buffer), parses datagrams with python-osc's parser
and applies them at once: bundles are unpacked and their time tags ignored, so nothing waits.
A second thread sends feedback: changes are coalesced and sent at most `feedback_rate` times a
second to each subscriber, except a change back to the client that made it (its own fader would
fight the echo), and a heartbeat. Malformed, unknown and refused packets are counted and logged
at a limited rate; nothing a client sends can stop the server.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pythonosc import osc_bundle, osc_message, osc_packet
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket
from pythonosc.parsing import osc_types

from ..errors import CielError
from ..params import Param, ParamStore, Registry
from .config import OscConfig, PatchWriter
from .lifecycle import Lifecycle

log = logging.getLogger("ciel.osc")

ROOT = "/ciel"
# Parameters a stored preset leaves out: recalling a preset never unmutes nor raises the ceiling.
PRESET_EXCLUDE = frozenset({"audio/mute", "audio/ceiling"})

Address = tuple[str, int]
PARSE_ERRORS = (osc_packet.ParseError, osc_message.ParseError, osc_bundle.ParseError, osc_types.ParseError,
                ValueError, IndexError, struct.error, UnicodeDecodeError, OverflowError, TypeError)


class Learner(Protocol):
    """What the OSC server needs from MIDI learn (engine.control.midi.MidiControl)."""

    def learn(self, param: str | None = None, index: int = -1) -> str: ...
    def cancel_learn(self) -> None: ...


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


def wire_values(p: Param, values: tuple[float, ...]) -> list[float | int]:
    """Values as sent: ints and switches as OSC ints, the rest as floats."""
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


class OscServer(Lifecycle):
    """The OSC server. Construct, then `start()`; `close()` stops both threads and the socket.

    config:   host, port (0 = any free port; `self.port` tells which), allow-list, feedback.
    store:    the ParamStore every set and trigger goes to, with source "osc:IP:PORT".
    presets:  name → {param: value} from the patch (`patch.presets`); stored presets are added.
    writer:   writes stored presets into the patch file (None = kept in memory only).
    learner:  MIDI learn (None = /ciel/learn answers that MIDI is off).
    on_quit:  called (on the server thread) for /ciel/quit.
    """

    def __init__(self, config: OscConfig, store: ParamStore,
                 presets: Mapping[str, Mapping[str, float | tuple[float, ...]]] | None = None,
                 writer: PatchWriter | None = None, learner: Learner | None = None,
                 on_quit: Callable[[], None] | None = None) -> None:
        self.config, self.store = config, store
        self.registry: Registry = store.registry
        self.presets: dict[str, dict[str, float | tuple[float, ...]]] = {
            k: dict(v) for k, v in (presets or {}).items()}
        self.writer, self.learner, self.on_quit = writer, learner, on_quit
        self.counters = dict.fromkeys(
            ("datagrams", "messages", "handled", "malformed", "unknown", "denied", "clamped",
             "sent", "send_errors", "errors"), 0)
        self._allow = [_network(a) for a in config.allow]
        self._warn = RateLimitedLog(log)
        self._subs: dict[Address, Subscriber] = {}
        self._subs_lock = threading.Lock()
        self._dirty: dict[str, tuple[tuple[float, ...], str]] = {}
        self._dirty_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._beats = 0
        self._routes = self._build_routes()
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
        log.info("OSC listening on %s:%d", self.host, self.port)
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

    # — receiving (server thread) —
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
        """Parse and apply one datagram from `addr` (server thread; tests may call it directly)."""
        if self._allow and not any(ipaddress.ip_address(addr[0]) in n for n in self._allow):
            self.counters["denied"] += 1
            self._warn("denied", f"OSC: packet from {addr[0]} refused (not in [osc] allow)")
            return
        try:
            packet = OscPacket(data)
        except PARSE_ERRORS as exc:
            self.counters["malformed"] += 1
            self._warn("malformed", f"OSC: malformed packet ({len(data)} bytes) from {addr[0]}:{addr[1]}: {exc}")
            return
        for timed in packet.messages:
            self.counters["messages"] += 1
            self._dispatch(timed.message.address, tuple(timed.message.params), addr)

    def _dispatch(self, address: str, args: tuple[Any, ...], addr: Address) -> None:
        route = self._routes.get(address.rstrip("/").lower() if address != "/" else address)
        if route is None:
            self.counters["unknown"] += 1
            self._warn("unknown", f"OSC: unknown address {address!r} from {addr[0]}:{addr[1]} (see docs/osc.md)")
            return
        try:
            route(args, addr)
        except (ValueError, TypeError, CielError) as exc:
            self.counters["malformed"] += 1
            self._warn("args", f"OSC: {address} {list(args)!r}: {exc}")
            return
        self.counters["handled"] += 1

    def _build_routes(self) -> dict[str, Callable[[tuple[Any, ...], Address], None]]:
        routes: dict[str, Callable[[tuple[Any, ...], Address], None]] = {}
        for p in self.registry:
            if p.kind == "trigger":
                routes[p.address] = self._trigger_route(p)
            else:
                routes[p.address] = self._set_route(p)
                if p.size > 1:
                    routes[p.address + "/at"] = self._at_route(p)
        commands = {"get": self._get, "subscribe": self._subscribe, "unsubscribe": self._unsubscribe,
                    "ping": self._ping, "preset/recall": self._preset_recall, "preset/store": self._preset_store,
                    "preset/list": self._preset_list, "learn": self._learn, "learn/cancel": self._learn_cancel,
                    "quit": self._quit}
        for name, fn in commands.items():
            routes[f"{ROOT}/{name}"] = fn
        return routes

    def _set_route(self, p: Param) -> Callable[[tuple[Any, ...], Address], None]:
        def set_(args: tuple[Any, ...], addr: Address) -> None:
            if len(args) not in (1, p.size):
                raise ValueError(f"expected {p.size if p.size > 1 else 1} number(s), got {len(args)}")
            vals = [_number(a) for a in args]
            self._count_clamped(p, vals)
            self.store.set(p.name, vals[0] if len(vals) == 1 else vals, source=_source(addr))
        return set_

    def _at_route(self, p: Param) -> Callable[[tuple[Any, ...], Address], None]:
        def at(args: tuple[Any, ...], addr: Address) -> None:
            if len(args) != 2:
                raise ValueError("expected an index and a value")
            i, v = _number(args[0]), _number(args[1])
            if i != int(i) or not 0 <= i < p.size:
                raise ValueError(f"index {args[0]!r} outside 0..{p.size - 1}")
            self._count_clamped(p, [v])
            self.store.set(p.name, v, source=_source(addr), index=int(i))
        return at

    def _trigger_route(self, p: Param) -> Callable[[tuple[Any, ...], Address], None]:
        def fire(args: tuple[Any, ...], addr: Address) -> None:
            if len(args) > 1:
                raise ValueError("a trigger takes no argument or one number")
            if args and args[0] is not None and args[0] != math.inf and _number(args[0]) == 0.0:
                return  # a button's release (OSCQuery clients may send N or I: they fire)
            self.store.trigger(p.name, source=_source(addr))
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

    def _get(self, args: tuple[Any, ...], addr: Address) -> None:
        to = self._reply_target(addr)
        for name in self._names(args):
            p = self.registry.get(name)
            self._send(message(p.address, wire_values(p, self.store.get(name))), to)

    def _subscribe(self, args: tuple[Any, ...], addr: Address) -> None:
        port = int(_number(args[0])) if args else self.config.feedback_port
        if not 0 < port < 65536:
            raise ValueError(f"port {port} outside 1..65535")
        sub = Subscriber(addr, (addr[0], port))
        with self._subs_lock:
            if addr not in self._subs and len(self._subs) >= self.config.max_subscribers:
                raise ValueError(f"too many subscribers ({self.config.max_subscribers}, see [osc] max_subscribers)")
            renewed = self._subs.get(addr) == sub
            self._subs[addr] = sub
        if not renewed:  # a new subscriber starts in sync; a renewal (patches repeat it) changes nothing
            log.info("OSC: %s:%d subscribed, feedback to port %d", addr[0], addr[1], port)
            self._get((), addr)

    def _unsubscribe(self, args: tuple[Any, ...], addr: Address) -> None:
        port = int(_number(args[0])) if args else None
        with self._subs_lock:
            for key, sub in list(self._subs.items()):
                if key == addr or (sub.target[0] == addr[0] and sub.target[1] == port):
                    del self._subs[key]

    def _ping(self, args: tuple[Any, ...], addr: Address) -> None:
        self._send(message(f"{ROOT}/pong", args), self._reply_target(addr))

    def _preset_recall(self, args: tuple[Any, ...], addr: Address) -> None:
        name = _preset_name(args)
        if name not in self.presets:
            raise ValueError(f"no preset {name!r} (known: {', '.join(sorted(self.presets)) or 'none'})")
        for pname, value in self.presets[name].items():
            self.store.set(pname, value, source="preset")

    def _preset_store(self, args: tuple[Any, ...], addr: Address) -> None:
        name = _preset_name(args)
        values = {p.name: (self.store.get(p.name) if p.size > 1 else self.store.get1(p.name))
                  for p in self.registry if p.kind != "trigger" and p.name not in PRESET_EXCLUDE}
        self.presets[name] = values
        if self.writer is not None:
            self.writer.store_preset(name, values)
        log.info("OSC: preset %r stored", name)

    def _preset_list(self, args: tuple[Any, ...], addr: Address) -> None:
        self._send(message(f"{ROOT}/preset/names", sorted(self.presets)), self._reply_target(addr))

    def _learn(self, args: tuple[Any, ...], addr: Address) -> None:
        learner = self.learner
        if learner is None:
            raise ValueError("MIDI is off: nothing to learn")
        name = _name_of(args[0]) if args else None
        index = int(_number(args[1])) if len(args) > 1 else -1
        if name is not None:
            p = self.registry.get(name)
            if not -1 <= index < p.size:
                raise ValueError(f"index {index} outside 0..{p.size - 1}")
        learner.learn(name, index)

    def _learn_cancel(self, args: tuple[Any, ...], addr: Address) -> None:
        learner = self.learner
        if learner is not None:
            learner.cancel_learn()

    def _quit(self, args: tuple[Any, ...], addr: Address) -> None:
        log.info("OSC: quit asked by %s:%d", *addr)
        if self.on_quit is not None:
            self.on_quit()

    # — sending —
    def _reply_target(self, addr: Address) -> Address:
        with self._subs_lock:
            sub = self._subs.get(addr)
        return sub.target if sub is not None else addr

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

    def _flush(self) -> None:
        with self._dirty_lock:
            dirty, self._dirty = self._dirty, {}
        if not dirty:
            return
        with self._subs_lock:
            subs = list(self._subs.values())
        if not subs:
            return
        for name, (values, source) in dirty.items():
            p = self.registry.get(name)
            data = message(p.address, () if p.kind == "trigger" else wire_values(p, values))
            for sub in subs:
                if source != _source(sub.sender):
                    self._send(data, sub.target)

    def _broadcast(self, data: bytes) -> None:
        with self._subs_lock:
            subs = list(self._subs.values())
        for sub in subs:
            self._send(data, sub.target)


def _raise_priority(nice: int = -5) -> str:
    """Give the calling thread a little more CPU than the render loop when the machine is busy
    (Linux, where allowed): it is light, and control that lags is felt at once."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        return f"nice {nice}"
    except (OSError, AttributeError):
        return "normal"


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise CielError(f"[osc] allow: {text!r} is not an IP address or network (e.g. '192.168.1.0/24')") from None


def _source(addr: Address) -> str:
    return f"osc:{addr[0]}:{addr[1]}"


def _preset_name(args: tuple[Any, ...]) -> str:
    if len(args) != 1:
        raise ValueError("expected one preset name")
    a = args[0]
    name = str(int(a)) if isinstance(a, (int, float)) and not isinstance(a, bool) and float(a).is_integer() else str(a)
    if not name or not all(c.isalnum() or c in "-_ " for c in name):
        raise ValueError(f"preset name {name!r}: use letters, digits, '-', '_' or spaces")
    return name


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
