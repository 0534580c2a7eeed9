"""Modulation: what ciel hears (the read-only `listen/*` parameters) moves any parameter.

A route, from a patch's `[[mod]]` tables or `/ciel/mod/set source target depth [smooth]`:

    [[mod]]
    source = "listen/level"   # a measured parameter (listen/level, centroid, flatness, onset)
    target = "sky/grain"      # any settable scalar parameter, or one element: "image/offset/2"
    depth = 0.5               # -1..1: at 1, the source going from its minimum to its maximum moves
                              # the target across its whole range
    smooth = 0.05             # s: a one-pole glide of the source before it moves the target

The target moves around its *base*: the value a performer, a preset, the scheduler or the form
set last (every change from any source other than modulation becomes the base). What the target
takes is clamp(base + Σ depth × normalised source × (maximum − minimum)) over the routes that
reach it, so a silent room leaves every target where it was set. A removed route puts its target
back to its base. Routes set over OSC last until the engine stops; the patch's are read at start.

`Modulation` holds the routes and bases (any thread; one lock). `ListenPump` is the thread that
carries what the audio process heard (engine/audio/listen.py, through its status block) into
the store as `listen/*` (source "listen", the only one allowed to write them) and then moves the
routes' targets (source "mod"): polled `rate` times a second, newest analysis wins.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .audio.listen import Heard
from .configio import array_of_tables, build, field
from .errors import ParamError, PatchError
from .params import LISTEN_SOURCE, REGISTRY, ParamStore, Registry

log = logging.getLogger("ciel.mod")

MOD_SOURCE = "mod"
HEARD = ("listen/level", "listen/centroid", "listen/flatness", "listen/onset")   # Heard's fields, in order


@dataclass(frozen=True)
class Route:
    """One `[[mod]]` route (see the module docstring)."""

    source: str = field("listen/level", doc="A measured parameter: listen/level, listen/centroid, listen/flatness, listen/onset.")
    target: str = field("sky/grain", doc="A settable scalar parameter, or one element of a vector (image/offset/2).")
    depth: float = field(0.5, minimum=-1.0, maximum=1.0, doc="How far the source moves the target, in the target's range.")
    smooth: float = field(0.05, minimum=0.0, maximum=10.0, doc="Glide of the source before it moves the target (s).")


def split_target(target: str, registry: Registry = REGISTRY) -> tuple[str, int | None]:
    """("image/offset", 2) for "image/offset/2", ("sky/grain", None) for a scalar. ParamError
    naming the target when it is not a settable scalar or an element of a vector."""
    name, index = target, None
    head, _, tail = target.rpartition("/")
    if tail.isdigit() and head in registry:
        name, index = head, int(tail)
    p = registry.get(name)
    if p.kind == "trigger" or p.readonly:
        raise ParamError(f"{target}: a modulation target must be a settable parameter, not a "
                         f"{'trigger' if p.kind == 'trigger' else 'measured one'}")
    if index is None and p.size > 1:
        raise ParamError(f"{target}: a vector of {p.size}; name one element ({target}/0 … {target}/{p.size - 1})")
    if index is not None and not 0 <= index < p.size:
        raise ParamError(f"{target}: element {index} outside 0..{p.size - 1}")
    return name, index


def canonical(target: str, registry: Registry = REGISTRY) -> str:
    """One spelling per target: "image/offset/02" → "image/offset/2" (ParamError as split_target)."""
    name, index = split_target(target, registry)
    return name if index is None else f"{name}/{index}"


def check_route(route: Route, registry: Registry = REGISTRY) -> Route:
    """The route if its source is measured and its target settable; ParamError naming them if not."""
    if route.source not in registry or not registry.get(route.source).readonly:
        measured = ", ".join(p.name for p in registry if p.readonly)
        raise ParamError(f"{route.source}: a modulation source must be measured ({measured})")
    split_target(route.target, registry)
    if not (-1.0 <= route.depth <= 1.0 and math.isfinite(route.depth)):
        raise ParamError(f"depth {route.depth!r}: expected -1..1")
    if not (0.0 <= route.smooth <= 10.0):
        raise ParamError(f"smooth {route.smooth!r}: expected 0..10 s")
    return route


def parse_mods(raw: Any, source: str, registry: Registry = REGISTRY) -> tuple[Route, ...]:
    """The `[[mod]]` array of a patch; errors name `mod[i].key` and the file."""
    routes = []
    for key, table in array_of_tables(raw, source, "mod", "source, target, depth", PatchError):
        route = build(Route, table, source, prefix=key, error=PatchError)
        try:
            check_route(route, registry)
        except ParamError as exc:
            raise PatchError(source, key, str(exc)) from None
        routes.append(route)
    return tuple(routes)


def mods_table(routes: Sequence[Route]) -> list[dict[str, Any]]:
    """The routes as plain TOML-writable data."""
    return [{"source": r.source, "target": r.target, "depth": r.depth, "smooth": r.smooth} for r in routes]


class Modulation:
    """The routes and their targets' bases (any thread). `step(now)` glides each route's source
    and writes the targets (called by `ListenPump` after each analysis)."""

    def __init__(self, store: ParamStore, routes: Sequence[Route] = (),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store, self.clock = store, clock
        self.registry = store.registry
        self._lock = threading.Lock()
        self._routes: dict[tuple[str, str], Route] = {}
        self._glided: dict[tuple[str, str], float] = {}    # each route's smoothed, normalised source
        self._bases: dict[str, float] = {}                 # target → base value
        self._where: dict[str, tuple[str, int | None]] = {}  # target → (parameter, element), parsed once
        self._last: float | None = None
        for r in routes:
            self.set_route(r)
        store.add_listener(self._on_change)

    def routes(self) -> list[Route]:
        with self._lock:
            return list(self._routes.values())

    def add(self, source: str, target: str, depth: float, smooth: float = 0.05) -> None:
        """`set_route` from plain values (the OSC server's `/ciel/mod/set`)."""
        self.set_route(Route(source, target, depth, smooth))

    def table(self) -> list[tuple[str, str, float, float]]:
        """(source, target, depth, smooth) of every route (the OSC server's `/ciel/mod/list`)."""
        return [(r.source, r.target, r.depth, r.smooth) for r in self.routes()]

    def set_route(self, route: Route) -> None:
        """Add a route, or change the depth and glide of the one between the same source and target."""
        check_route(route, self.registry)
        name, index = split_target(route.target, self.registry)
        route = dataclasses.replace(route, target=name if index is None else f"{name}/{index}")
        with self._lock:
            if route.target not in self._bases:
                self._bases[route.target] = self.store.get(name)[index or 0]
                self._where[route.target] = (name, index)
            self._routes[(route.source, route.target)] = route
        log.info("modulation: %s → %s, depth %g", route.source, route.target, route.depth)

    def clear(self, target: str | None = None) -> int:
        """Remove the routes to `target` (all routes without one); their targets go back to their
        bases. Returns how many were removed; ParamError when `target` has none."""
        key = canonical(target, self.registry) if target is not None else None
        with self._lock:
            gone = [k for k in self._routes if key is None or k[1] == key]
            if key is not None and not gone:
                raise ParamError(f"{target}: no modulation route reaches it")
            for k in gone:
                del self._routes[k]
                self._glided.pop(k, None)
            left = {k[1] for k in self._routes}
            restore = {t: b for t, b in self._bases.items() if t not in left}
            for t, base in restore.items():   # written under the lock: a step cannot move it again after
                del self._bases[t]
                self._write(self._where.pop(t), base)
        return len(gone)

    def _on_change(self, name: str, values: tuple[float, ...], source: str) -> None:
        """Store listener: a change from anyone but modulation is the target's new base."""
        if source == MOD_SOURCE or source == LISTEN_SOURCE:
            return
        with self._lock:
            for t, (n, index) in self._where.items():
                if n == name:
                    self._bases[t] = values[index or 0]

    def step(self, now: float | None = None) -> None:
        """Glide each source towards its value now and write every target that moved."""
        now = self.clock() if now is None else now
        dt = 0.0 if self._last is None else max(0.0, now - self._last)
        self._last = now
        offsets: dict[str, float] = {}
        with self._lock:
            for key, r in self._routes.items():
                p = self.registry.get(r.source)
                raw = (self.store.get1(r.source) - p.minimum) / (p.maximum - p.minimum)
                a = 1.0 if r.smooth <= 0 else 1.0 - math.exp(-dt / r.smooth)
                g = self._glided.get(key, raw)
                g += a * (raw - g)
                self._glided[key] = g
                t = self.registry.get(self._where[r.target][0])
                offsets[r.target] = offsets.get(r.target, 0.0) + r.depth * g * (t.maximum - t.minimum)
            # written under the lock, so a clear or a performer's new base cannot fall between the
            # sum and the write (the store calls listeners outside its own lock, and this class's
            # listener ignores its own source, so nothing waits on this lock from inside)
            for target, off in offsets.items():
                self._write(self._where[target], self._bases[target] + off, only_if_moved=True)

    def _write(self, where: tuple[str, int | None], value: float, only_if_moved: bool = False) -> None:
        name, index = where
        p = self.registry.get(name)
        value = p.clamp(value)
        if only_if_moved and abs(self.store.get(name)[index or 0] - value) < 1e-4 * (p.maximum - p.minimum):
            return
        self.store.set(name, value, source=MOD_SOURCE, index=index)


class Hearing(Protocol):
    """What the pump reads (engine.audio.output.AudioProcess)."""

    def heard(self) -> tuple[int, Heard]: ...


class ListenPump:
    """Thread "ciel-listen": the newest analysis of `hearing` into `listen/*`, then `modulation.step`.

    rate: polls per second (200: the audio process analyses every 5.3 ms at 48 kHz). A listen/*
    value is written when it moved by more than a thousandth of its range (OSC and the control
    page are told of those only)."""

    def __init__(self, hearing: Hearing, store: ParamStore, modulation: Modulation, rate: float = 200.0) -> None:
        self.hearing, self.store, self.modulation = hearing, store, modulation
        self.period = 1.0 / rate
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ciel-listen", daemon=True)
        self._seen = 0        # analyses seen; 0 = none yet (the status block's slots are zeros until the first)
        self.published = 0    # analyses carried into the store
        self.error = ""

    def start(self) -> ListenPump:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(1.0)

    def pump(self) -> bool:
        """One poll (the thread's body; tests call it directly): a new analysis into listen/*,
        then every route glides on (each poll, so glides end while no analysis comes). True when
        a new analysis came."""
        seq, heard = self.hearing.heard()
        fresh = seq != self._seen
        if fresh:
            self._seen = seq
            self.publish(dict(zip(HEARD, dataclasses.astuple(heard))))
        self.modulation.step()
        return fresh

    def publish(self, values: Mapping[str, float]) -> None:
        for name, value in values.items():
            p = self.store.registry.get(name)
            if abs(self.store.get1(name) - value) > 1e-3 * (p.maximum - p.minimum):
                self.store.set(name, value, source=LISTEN_SOURCE)
        self.published += 1

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                self.pump()
                self.error = ""
            except (ParamError, OSError, ValueError) as exc:   # a stopped audio process, a bad value: said, and go on
                if str(exc) != self.error:
                    log.warning("listening: %s", exc)
                self.error = str(exc)
