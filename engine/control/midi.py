"""MIDI control: controllers mapped to parameters, with takeover, learn, clock and feedback.

Inputs are opened by name substring (`[midi] inputs`; empty = every source) through python-rtmidi
with the API chosen in `[midi] api` (auto, UNIX_JACK, LINUX_ALSA, MACOSX_CORE, WINDOWS_MM). Ports
are *polled*: rtmidi queues incoming bytes on its own thread and ciel reads the queue, so no
Python runs on the MIDI driver's (JACK's real-time) thread. Reading happens on a 1 ms reader
thread (`[midi] thread`, default) or in `poll()`, which the engine calls once a frame on the main
thread; `poll()` also rescans the port names every `[midi] rescan` seconds, because unplugged
ports vanish without an error: a port that vanished is closed and is reopened, with its mappings,
when a port of that name returns. mido parses the bytes.

Mappings (`[[midi.mappings]]` in the patch) bind CC, 14-bit CC, notes, pitch bend and relative
encoders (two's complement, binary offset, sign bit, inc/dec) to a parameter or one element of a
vector, through a range, a curve and an optional inversion. Absolute controls take over a value
set elsewhere in one of three ways: none (jump), pick-up (ignored until the control passes the
current value) or scale (the value moves proportionally so both meet at the end of the travel);
a mapping is re-armed whenever its parameter changes from another source (OSC, the scheduler, a
preset, another controller). Such changes are also sent back to the controller (`[midi] output`)
so LEDs and motor faders follow.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import mido

from ..errors import CielError, ConfigError, MidiUnavailable, ParamError, PatchError
from ..params import Param, ParamStore
from .config import Control, MidiConfig, MidiMapping, check_mapping, controls, selects
from .lifecycle import Lifecycle

log = logging.getLogger("ciel.midi")

APIS = ("auto", "UNIX_JACK", "LINUX_ALSA", "MACOSX_CORE", "WINDOWS_MM")
SOURCE = "midi"
# Sources whose changes are not "the parameter the performer touched last" (for learn from a key).
NOT_TOUCHED = frozenset({SOURCE, "midi-clock", "schedule", "patch", "preset", "form", "listen", "mod"})   # not a hand
MOVED_BY_SOUND = frozenset({"listen", "mod"})   # engine/modulate.py: moves around the value a hand set
CURVE_K = 4.0  # steepness of the exp/log curves: exp(4x) spans 1..55
LEARN_MESSAGES = 4     # learn decides after this many messages of one control…
LEARN_WINDOW_S = 0.3   # …or this long (seconds) after the first of them
Encoding = Literal["twos", "offset", "signbit"]


def open_client(api: str, kind: str = "in", name: str = "ciel") -> Any:
    """An rtmidi MidiIn/MidiOut on the named API. 'auto' takes the platform's default and, on Linux
    without an ALSA sequencer, JACK if a JACK server runs. Raises MidiUnavailable saying why."""
    import rtmidi

    cls = rtmidi.MidiIn if kind == "in" else rtmidi.MidiOut
    if api not in APIS:
        raise MidiUnavailable(f"[midi] api: unknown API {api!r}; choose one of {', '.join(APIS)}")
    tries = [getattr(rtmidi, f"API_{api}")] if api != "auto" else [rtmidi.API_UNSPECIFIED]
    if api == "auto" and sys.platform.startswith("linux"):
        tries.append(rtmidi.API_UNIX_JACK)
    problems = []
    for a in tries:
        if a not in rtmidi.get_compiled_api() and a != rtmidi.API_UNSPECIFIED:
            problems.append(f"{rtmidi.get_api_name(a)} not compiled into python-rtmidi")
            continue
        try:
            return cls(a, name)
        except (rtmidi.SystemError, rtmidi.RtMidiError, RuntimeError) as exc:
            problems.append(f"{rtmidi.get_api_display_name(a) if a else 'default API'}: {exc}")
    raise MidiUnavailable("MIDI unavailable (" + "; ".join(problems) + "); on Linux start a JACK server "
                          "or load snd-seq, or set [midi] enabled = false")


def list_ports(api: str = "auto") -> tuple[list[str], list[str]]:
    """(input port names, output port names) as `[midi] inputs` / `output` match them (`ciel devices`).
    Raises MidiUnavailable when no MIDI API opens."""
    ins = open_client(api, "in", "ciel-devices")
    try:
        outs = open_client(_api_name(ins), "out", "ciel-devices")
        try:
            return list(ins.get_ports()), list(outs.get_ports())
        finally:
            outs.delete()
    finally:
        ins.delete()


def curve(x: float, kind: str) -> float:
    """Controller position 0..1 → 0..1 along the curve ('exp' slow at first, 'log' fast at first)."""
    if kind == "exp":
        return math.expm1(CURVE_K * x) / math.expm1(CURVE_K)
    if kind == "log":
        return math.log1p(x * math.expm1(CURVE_K)) / CURVE_K
    return x


def uncurve(y: float, kind: str) -> float:
    """Inverse of `curve`."""
    return curve(y, {"exp": "log", "log": "exp"}.get(kind, kind))


def relative_delta(value: int, number: int, mapping: MidiMapping) -> int:
    """Encoder ticks in one CC value, in the mapping's encoding."""
    enc = mapping.encoding
    if enc == "twos":       # 1..63 up, 127..64 down (127 = -1)
        return value - 128 if value >= 64 else value
    if enc == "offset":     # 64 = still, 65 = +1, 63 = -1
        return value - 64
    if enc == "signbit":    # 1..63 up, 65..127 down (65 = -1)
        return -(value & 63) if value & 64 else value
    return 1 if number == mapping.number else -1   # incdec: CC n steps up, CC n+1 down (as CC 96/97)


def relative_encoding(values: Sequence[int]) -> Encoding | None:
    """The relative-encoder encoding that successive CC values of one control show, or None when
    they look like an absolute control (a fader, a knob, a button).

    An encoder sends small steps around its "no motion" value, which it never sends itself, and
    repeats a value while it turns at an even speed; an absolute control sends on change, so it
    never sends one value twice in a row and its values run one way. Hence: fewer than two values,
    a value of 0 or 64, a value far from both, or values that only rise or only fall, mean absolute.
    Otherwise the values must show an encoder: a value repeated, or both directions of one encoding
    (63 and 65; 1 and 127; 1 and 65), so a knob wiggled near its middle (62, 63, 62) stays absolute.
    Values around 64 (63 = -1, 65 = +1) mean "offset"; around 0 and 127 (1 = +1, 127 = -1), "twos";
    small values with values just above 64 (1 = +1, 65 = -1), "signbit". An encoder turned one way
    only and faster each time (65, 66, 67) cannot be told from a knob: learn by turning slowly.
    """
    if len(values) < 2:
        return None
    steps = [b - a for a, b in zip(values, values[1:])]
    if all(d > 0 for d in steps) or all(d < 0 for d in steps):
        return None
    bands = set()
    for v in values:
        if 1 <= v <= 15:
            bands.add("low")
        elif 113 <= v <= 127:
            bands.add("high")
        elif 49 <= v <= 63:
            bands.add("below")
        elif 65 <= v <= 79:
            bands.add("above")
        else:
            return None
    repeated = any(d == 0 for d in steps)
    if bands <= {"below", "above"} and (repeated or len(bands) == 2):
        return "offset"
    if bands <= {"low", "high"} and (repeated or len(bands) == 2):
        return "twos"
    if bands == {"low", "above"}:
        return "signbit"
    return None


class MappingWriter(Protocol):
    """Where MIDI learn keeps mappings (engine.patchwrite.PatchWriter: the patch file). Called on
    the thread that reads MIDI; may block on the disk; raises PatchError when it cannot write."""

    def add_mapping(self, mapping: MidiMapping) -> None: ...
    def remove_mappings(self, param: str | None = None, index: int = -1, control: Control | None = None) -> int: ...


@dataclass
class Binding:
    """One mapping with its state. `last` is the controller position last seen (0..1)."""

    m: MidiMapping
    p: Param
    lo: float
    hi: float
    takeover: str
    armed: bool = True
    last: float | None = None
    msb: int | None = None
    lsb_seen: bool = False
    pressed: bool = False

    @property
    def element(self) -> int | None:
        return self.m.index if self.m.index >= 0 else None

    def to_value(self, x: float) -> float:
        """Controller position 0..1 → parameter value."""
        x = min(1.0, max(0.0, x))
        y = curve(1.0 - x if self.m.invert else x, self.m.curve)
        return self.lo + y * (self.hi - self.lo)

    def to_position(self, v: float) -> float:
        """Parameter value → controller position 0..1 (for takeover and feedback)."""
        span = self.hi - self.lo
        y = min(1.0, max(0.0, (v - self.lo) / span)) if span else 0.0
        x = uncurve(y, self.m.curve)
        return 1.0 - x if self.m.invert else x


@dataclass
class Heard:
    """What MIDI learn has heard of one CC so far: its channel (1-16), number and values since
    `since` (monotonic seconds)."""

    channel: int
    number: int
    values: list[int]
    since: float


@dataclass
class Port:
    name: str
    client: Any
    messages: int = 0


@dataclass
class Clock:
    """MIDI clock in: tempo from the tick intervals, a beat count, an optional trigger."""

    ticks: int = 0
    beats: int = 0
    last: float | None = None
    interval: float | None = None
    running: bool = False

    @property
    def bpm(self) -> float | None:
        return round(60.0 / (24 * self.interval), 2) if self.interval else None


@dataclass
class Counters:
    messages: int = 0
    applied: int = 0
    unmapped: int = 0
    malformed: int = 0
    opened: int = 0
    vanished: int = 0
    feedback: int = 0
    learned: int = 0
    programs: int = 0
    extra: dict[str, str] = field(default_factory=dict)


class MidiControl(Lifecycle):
    """MIDI inputs, mappings and feedback. `start()`, then `poll()` once a frame, `close()` at the end.

    config:  the patch's `[midi]` section.
    store:   every change goes to `store.set/trigger(..., source="midi")`.
    writer:  where MIDI learn writes new mappings (the patch file); None keeps them in memory.
    source:  the patch file's name, for errors about its mappings.
    clock:   monotonic seconds (injected).
    on_program: called with the program number (0-127) of a program change, on the thread that
             reads MIDI (the reader thread, or the main thread in `poll()`), unless `[midi]
             program_presets` is off; the engine recalls the preset at that place in the patch.
    """

    def __init__(self, config: MidiConfig, store: ParamStore, writer: MappingWriter | None = None,
                 source: str = "<patch>", clock: Callable[[], float] = time.monotonic,
                 client_name: str = "ciel", on_program: Callable[[int], None] | None = None) -> None:
        self.config, self.store, self.writer, self.source = config, store, writer, source
        self.clock, self.client_name, self.on_program = clock, client_name, on_program
        self.counters = Counters()
        self.midi_clock = Clock()
        self.ports: dict[str, Port] = {}
        self.output: Any = None
        self.output_name = ""
        self.error = ""
        self.api = config.api
        self._scanner: Any = None
        self._out_scanner: Any = None
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_scan = 0.0
        self._sync_at: float | None = None
        self._bindings: list[Binding] = []
        self._cc: dict[tuple[int, int], list[Binding]] = {}
        self._note: dict[tuple[int, int], list[Binding]] = {}
        self._bend: dict[int, list[Binding]] = {}
        self._by_param: dict[str, list[Binding]] = {}
        self._applying: Binding | None = None
        self._dirty: set[str] = set()
        self._learning: tuple[str, int] | None = None
        self._heard: Heard | None = None
        self._learn_lock = threading.Lock()
        self._last_touched: tuple[str, int] | None = None
        self._parser = mido.Parser()
        if config.clock_trigger:
            if config.clock_trigger not in store.registry or store.registry.get(config.clock_trigger).kind != "trigger":
                raise PatchError(source, "midi.clock_trigger", f"{config.clock_trigger!r} is not a trigger parameter")
        for i, m in enumerate(config.mappings):
            self._check(m, f"midi.mappings[{i}]")
        self._bindings = [self._bind(m) for m in config.mappings]
        self._index()
        store.add_listener(self._on_change)

    # — mappings —
    def _check(self, m: MidiMapping, key: str) -> None:
        check_mapping(m, self.store.registry, self.source, key)

    def _bind(self, m: MidiMapping) -> Binding:
        p = self.store.registry.get(m.param)
        lo = p.minimum if m.minimum is None else m.minimum
        hi = p.maximum if m.maximum is None else m.maximum
        mode = self.config.takeover if m.takeover == "default" else m.takeover
        return Binding(m, p, lo, hi, mode)

    def _index(self) -> None:
        cc: dict[tuple[int, int], list[Binding]] = {}
        note: dict[tuple[int, int], list[Binding]] = {}
        bend: dict[int, list[Binding]] = {}
        by_param: dict[str, list[Binding]] = {}
        for b in self._bindings:
            ch, n = b.m.channel, b.m.number
            if b.m.type == "note":
                note.setdefault((ch, n), []).append(b)
            elif b.m.type == "pitchbend":
                bend.setdefault(ch, []).append(b)
            else:
                numbers = {"cc14": (n, n + 32), "relative": (n, n + 1) if b.m.encoding == "incdec" else (n,)}
                for k in numbers.get(b.m.type, (n,)):
                    cc.setdefault((ch, k), []).append(b)
            by_param.setdefault(b.p.name, []).append(b)
        with self._lock:
            self._cc, self._note, self._bend, self._by_param = cc, note, bend, by_param

    @property
    def mappings(self) -> tuple[MidiMapping, ...]:
        return tuple(b.m for b in self._bindings)

    # — lifecycle —
    def start(self) -> MidiControl:
        """Open the ports there are now and start the reader thread. Never raises for a missing
        MIDI system: the problem shows in `health()` and the ports are looked for again later."""
        self._scan(self.clock())
        if self.config.thread:
            self._thread = threading.Thread(target=self._reader, name="ciel-midi", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        self.store.remove_listener(self._on_change)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        with self._lock:
            for port in self.ports.values():
                _close(port.client)
            self.ports.clear()
            for c in (self.output, self._scanner, self._out_scanner):
                if c is not None:
                    _close(c)
            self.output = self._scanner = self._out_scanner = None


    def status(self) -> dict[str, Any]:
        return self.health()



    def poll(self, now: float | None = None) -> None:
        """Main thread, once a frame: rescan ports when due, read them (without the reader thread),
        send feedback for values changed elsewhere."""
        now = self.clock() if now is None else now
        if now >= self._next_scan:
            self._scan(now)
        if self._thread is None:
            self._drain()
            self._learn_timeout(now)
        if self._sync_at is not None and now >= self._sync_at:
            self._sync_at = None
            with self._lock:
                self._dirty.update(self._by_param)
        self._send_feedback()

    def health(self) -> dict[str, Any]:
        c = self.counters
        return {"ports": sorted(self.ports), "output": self.output_name or None, "error": self.error or None,
                "api": self.api, "learning": _label(*self._learning) if self._learning else None,
                "bpm": self.midi_clock.bpm, "messages": c.messages, "applied": c.applied, "unmapped": c.unmapped,
                "malformed": c.malformed, "opened": c.opened, "vanished": c.vanished, "feedback": c.feedback,
                "learned": c.learned, "programs": c.programs, "mappings": len(self._bindings)}

    # — ports —
    def _wanted(self, name: str) -> bool:
        if name.startswith(self.client_name + ":") or "Midi Through" in name:
            return False
        return not self.config.inputs or any(s.lower() in name.lower() for s in self.config.inputs)

    def _scan(self, now: float) -> None:
        self._next_scan = now + self.config.rescan
        try:
            if self._scanner is None:
                self._scanner = open_client(self.config.api, "in", f"{self.client_name}-scan")
                self.api = _api_name(self._scanner)   # 'auto' resolved once: ports open on the same API
            names = self._scanner.get_ports()
        except MidiUnavailable as exc:
            if self.error != str(exc):
                log.warning("%s", exc)
            self.error = str(exc)
            self._next_scan = now + max(30.0, self.config.rescan)   # the C libraries print each failed try
            return
        self.error = ""
        present = set(names)
        with self._lock:
            for name in [n for n in self.ports if n not in present]:
                log.warning("MIDI input %r vanished; it will be reopened when it returns", name)
                _close(self.ports.pop(name).client)
                self.counters.vanished += 1
        for i, name in enumerate(names):
            if name in self.ports or not self._wanted(name):
                continue
            try:
                client = open_client(self.api, "in", self.client_name)
                client.ignore_types(sysex=True, timing=not self.config.clock, active_sense=True)
                client.open_port(i, "in")
            except Exception as exc:  # noqa: BLE001 — rtmidi raises several kinds when a port goes as it is opened
                log.warning("MIDI input %r could not be opened: %s", name, exc)
                continue
            with self._lock:
                self.ports[name] = Port(name, client)
            self.counters.opened += 1
            log.info("MIDI input %r opened", name)
        if self.config.output and self.config.feedback:
            self._scan_output()

    def _scan_output(self) -> None:
        try:
            if self._out_scanner is None:
                self._out_scanner = open_client(self.api, "out", f"{self.client_name}-scan-out")
            names = self._out_scanner.get_ports()
        except MidiUnavailable:
            return
        match = [i for i, n in enumerate(names) if self.config.output.lower() in n.lower()
                 and not n.startswith(self.client_name)]
        if self.output is not None and self.output_name in names:
            return
        if self.output is not None:
            log.warning("MIDI output %r vanished", self.output_name)
            _close(self.output)
            self.output, self.output_name = None, ""
        if match:
            try:
                out = open_client(self.api, "out", self.client_name)
                out.open_port(match[0], "feedback")
            except Exception as exc:  # noqa: BLE001 — as for inputs
                log.warning("MIDI output %r could not be opened: %s", names[match[0]], exc)
                return
            self.output, self.output_name = out, names[match[0]]
            self._sync_at = self.clock() + 0.25   # then bring LEDs and faders in line (JACK connects late)
            log.info("MIDI output %r opened for feedback", self.output_name)

    def _reader(self) -> None:
        while not self._stop.is_set():
            got = self._drain()
            self._learn_timeout(self.clock())
            if not got:
                time.sleep(0.001)

    def _drain(self) -> bool:
        """Read every queued message of every port, then handle them (outside the lock, so that a
        mapping learned and written to the patch never holds up the main thread); True if any."""
        data: list[list[int]] = []
        with self._lock:   # a rescan never closes a port while it is read
            for port in list(self.ports.values()):
                while (item := port.client.get_message()) is not None:
                    port.messages += 1
                    data.append(item[0])
        for message in data:
            self.handle(message, self.clock())
        return bool(data)

    # — messages —
    def handle(self, data: list[int], now: float) -> None:
        """Apply one raw MIDI message (reader thread or main thread; tests may call it)."""
        self.counters.messages += 1
        if data and data[0] >= 0xF8:
            self._realtime(data[0], now)
            return
        self._parser.feed(data)
        msg = self._parser.get_message()
        if msg is None:
            self.counters.malformed += 1
            return
        if self._learning is not None:
            learned = self._try_learn(msg, now)
            if learned is not None:
                self._bind_learned(learned)
        if msg.type == "program_change":
            self._program(msg.program)
            return
        with self._lock:
            if msg.type == "control_change":
                hits = self._cc.get((msg.channel + 1, msg.control), []) + self._cc.get((0, msg.control), [])
            elif msg.type in ("note_on", "note_off"):
                hits = self._note.get((msg.channel + 1, msg.note), []) + self._note.get((0, msg.note), [])
            elif msg.type == "pitchwheel":
                hits = self._bend.get(msg.channel + 1, []) + self._bend.get(0, [])
            else:
                hits = []
        if not hits:
            self.counters.unmapped += 1
            return
        for b in hits:
            self._apply(b, msg)

    def _apply(self, b: Binding, msg: mido.Message) -> None:
        t = b.m.type
        if t == "note" or (t == "cc" and (b.p.kind in ("trigger", "bool") or b.m.mode != "auto")):
            on = (msg.type == "note_on" and msg.velocity > 0) if t == "note" else msg.value >= 64
            self._button(b, on, (msg.velocity if t == "note" else msg.value) / 127.0)
            return
        if t == "relative":
            ticks = relative_delta(msg.value, msg.control, b.m)
            x = b.to_position(self._current(b)) + ticks * b.m.step
            self._set(b, b.to_value(x))
            return
        if t == "cc14":
            if msg.control == b.m.number:
                b.msb = msg.value
                if b.lsb_seen:
                    return          # wait for the LSB that follows
                x = msg.value / 127.0
            else:
                if b.msb is None:
                    return
                b.lsb_seen = True
                x = (b.msb * 128 + msg.value) / 16383.0
        elif t == "pitchbend":
            x = (msg.pitch + 8192) / 16383.0
        else:
            x = msg.value / 127.0
        self._absolute(b, x)

    def _absolute(self, b: Binding, x: float) -> None:
        """Takeover for absolute controls (x = controller position 0..1)."""
        if b.takeover == "none" or not b.armed:
            b.last = x
            self._set(b, b.to_value(x))
            return
        cur = b.to_position(self._current(b))
        tol = 1.0 / 127.0
        crossed = b.last is not None and (b.last - cur) * (x - cur) <= 0
        if abs(x - cur) <= tol or (b.takeover == "pickup" and crossed):
            b.armed = False
            if b.last is None or (x - cur) * (x - b.last) >= 0:   # never a step against the motion
                self._set(b, b.to_value(x))
        elif b.takeover == "scale" and b.last is not None and x != b.last:
            end = 1.0 if x > b.last else 0.0
            self._set(b, b.to_value(cur + (x - b.last) * (end - cur) / (end - b.last)))
        b.last = x

    def _button(self, b: Binding, on: bool, velocity: float) -> None:
        mode: str = b.m.mode
        if mode == "auto":
            mode = {"trigger": "trigger", "bool": "toggle"}.get(b.p.kind, "velocity")
        edge = on and not b.pressed
        b.pressed = on
        if mode == "trigger" or b.p.kind == "trigger":
            if edge:
                self.store.trigger(b.p.name, source=SOURCE)
                self.counters.applied += 1
        elif mode == "toggle":
            if edge:
                self._set(b, b.lo if self._current(b) > (b.lo + b.hi) / 2 else b.hi)
        elif mode == "momentary":
            self._set(b, b.hi if on else b.lo)
        elif on:  # velocity
            self._set(b, b.to_value(velocity))

    def _current(self, b: Binding) -> float:
        return self.store.get(b.p.name)[max(b.m.index, 0)]

    def _set(self, b: Binding, value: float) -> None:
        self._applying = b
        try:
            self.store.set(b.p.name, value, source=SOURCE, index=b.element)
        finally:
            self._applying = None
        self.counters.applied += 1

    def _realtime(self, status: int, now: float) -> None:
        c = self.midi_clock
        if status == 0xFA:      # start
            c.ticks = c.beats = 0
            c.running = True
        elif status == 0xFB:    # continue
            c.running = True
        elif status == 0xFC:    # stop
            c.running = False
        elif status == 0xF8:    # clock, 24 per quarter note
            if c.last is not None:
                dt = now - c.last
                if 0 < dt < 0.25:
                    c.interval = dt if c.interval is None else 0.9 * c.interval + 0.1 * dt
            c.last = now
            c.ticks += 1
            if c.ticks % 24 == 0:
                c.beats += 1
                if self.config.clock_trigger and c.beats % self.config.clock_beats == 0:
                    self.store.trigger(self.config.clock_trigger, source="midi-clock")

    # — store changes from other sources: re-arm takeover, queue feedback —
    def _on_change(self, name: str, values: tuple[float, ...], source: str) -> None:
        bindings = self._by_param.get(name)
        if source not in NOT_TOUCHED:
            self._last_touched = (name, -1)
        if not bindings:
            return
        if source not in MOVED_BY_SOUND:   # a target that only breathes with the sound keeps its pickup
            for b in bindings:
                if b is not self._applying:
                    b.armed = True
        if source != SOURCE:
            with self._lock:
                self._dirty.add(name)

    def _send_feedback(self) -> None:
        with self._lock:
            dirty, self._dirty = self._dirty, set()
        if self.output is None or not dirty:
            return
        for name in dirty:
            for b in self._by_param.get(name, ()):
                if b.p.kind == "trigger":
                    continue
                for data in _feedback_bytes(b, b.to_position(self._current(b))):
                    try:
                        self.output.send_message(data)
                        self.counters.feedback += 1
                    except Exception as exc:  # noqa: BLE001 — the output went away; the next scan notices
                        log.warning("MIDI feedback to %r failed: %s", self.output_name, exc)
                        return

    def _program(self, program: int) -> None:
        self.counters.programs += 1
        if self.on_program is None or not self.config.program_presets:
            return
        try:
            self.on_program(program)
        except (CielError, ValueError) as exc:   # no such preset, a value it cannot set: the show goes on
            log.warning("MIDI program change %d: %s", program, exc)

    # — learn —
    def learn(self, param: str | None = None, index: int = -1) -> str:
        """Arm MIDI learn for `param` (element `index`); with no name, for the parameter last
        changed from another source (keyboard, OSC, a preset). Returns the parameter's name. Any thread.

        What binds is decided from the messages that follow: a note-on or a pitch bend at once; a
        CC after LEARN_MESSAGES messages of it or LEARN_WINDOW_S seconds after the first, as a
        relative encoder when its values show one (`relative_encoding`), else as an absolute CC;
        CC n (0-31) with CC n + 32 on the same channel at once, as a 14-bit CC."""
        if param is None:
            if self._last_touched is None:
                raise ParamError("MIDI learn: move a parameter first (or name one)")
            param, index = self._last_touched
        p = self.store.registry.get(param)
        if p.readonly:
            raise ParamError(f"MIDI learn: {param} is read-only (measured from the sound)")
        if not -1 <= index < p.size:
            raise ParamError(f"MIDI learn: {param} has no element {index}")
        with self._learn_lock:
            self._learning, self._heard = (param, index), None
        log.info("MIDI learn: move a control for %s", _label(param, index))
        return param

    def cancel_learn(self) -> None:
        with self._learn_lock:
            self._learning, self._heard = None, None

    def _try_learn(self, msg: mido.Message, now: float) -> MidiMapping | None:
        """Hear one message while learning (the thread that reads MIDI); the mapping to bind once
        it is decided, else None. A message that arrives after the window first decides from what
        was heard before it, then applies to the new mapping as any message does."""
        with self._learn_lock:
            target, heard = self._learning, self._heard
            if target is None:
                return None
            if heard is not None and now - heard.since >= LEARN_WINDOW_S:
                return self._decided(_heard_mapping(target, heard))
            ch = msg.channel + 1 if hasattr(msg, "channel") else 0
            if msg.type == "note_on" and msg.velocity > 0:
                return self._decided(MidiMapping(param=target[0], index=target[1], type="note", channel=ch, number=msg.note))
            if msg.type == "pitchwheel":
                return self._decided(MidiMapping(param=target[0], index=target[1], type="pitchbend", channel=ch))
            if msg.type != "control_change":
                return None
            if heard is None:
                self._heard = heard = Heard(ch, msg.control, [], now)
            if ch == heard.channel and abs(msg.control - heard.number) == 32 and min(msg.control, heard.number) < 32:
                return self._decided(MidiMapping(param=target[0], index=target[1], type="cc14", channel=ch,
                                                 number=min(msg.control, heard.number)))   # MSB n, LSB n + 32
            if (ch, msg.control) == (heard.channel, heard.number):
                heard.values.append(msg.value)
                if len(heard.values) >= LEARN_MESSAGES:
                    return self._decided(_heard_mapping(target, heard))
            return None   # another control while one is heard: not the one being moved

    def _learn_timeout(self, now: float) -> None:
        """Bind what learn has heard once its window has passed with no further message (the
        reader thread, or the main thread in `poll()`)."""
        with self._learn_lock:
            heard, target = self._heard, self._learning
            if heard is None or target is None or now - heard.since < LEARN_WINDOW_S:
                return
            mapping = self._decided(_heard_mapping(target, heard))
        self._bind_learned(mapping)

    def _decided(self, mapping: MidiMapping) -> MidiMapping:
        self._learning, self._heard = None, None   # under _learn_lock
        return mapping

    def _bind_learned(self, mapping: MidiMapping) -> None:
        """Bind a learned mapping now and write it into the patch (a failure to write is logged
        and shown in health(): the mapping works until the engine stops)."""
        self.add_mapping(mapping)
        detail = f" ({mapping.encoding})" if mapping.type == "relative" else ""
        log.info("MIDI learn: %s%s %d on channel %d → %s", mapping.type, detail, mapping.number, mapping.channel,
                 _label(mapping.param, mapping.index))
        if self.writer is not None:
            try:
                self.writer.add_mapping(mapping)
            except (ConfigError, OSError) as exc:
                self.counters.extra["learn_error"] = str(exc)
                log.error("MIDI learn: the mapping works now but could not be written to the patch: %s", exc)
        self.counters.learned += 1

    def add_mapping(self, mapping: MidiMapping) -> None:
        """Bind a mapping now, replacing any mapping of the same control (`config.controls` meet)."""
        self._check(mapping, "midi.mappings[new]")
        mine = controls(mapping)
        with self._lock:
            kept = [b for b in self._bindings if not controls(b.m) & mine]
            self._bindings = kept + [self._bind(mapping)]
        self._index()

    def unlearn(self, param: str | None = None, index: int = -1, control: Control | None = None) -> int:
        """Forget mappings, now and in the patch file: those of `param` (None = every parameter),
        of its element `index` (-1 = every element), of `control` (None = any control, e.g.
        Control("cc", 1, 7)). No arguments at all forget every mapping. Returns how many went (from
        the file when it held more than the running show). A failure to write the file is logged
        and shown in health(), as for learn. Any thread."""
        if param is not None:
            p = self.store.registry.get(param)
            if not -1 <= index < p.size:
                raise ParamError(f"MIDI unlearn: {param} has no element {index}")
        with self._lock:
            kept = [b for b in self._bindings if not selects(b.m, param, index, control)]
            removed = len(self._bindings) - len(kept)
            self._bindings = kept
        self._index()
        written = 0
        if self.writer is not None:
            try:
                written = self.writer.remove_mappings(param, index, control)
            except (ConfigError, OSError) as exc:
                self.counters.extra["learn_error"] = str(exc)
                log.error("MIDI unlearn: the mappings are gone now but could not be removed from the patch: %s", exc)
        log.info("MIDI unlearn: %d mapping(s) of %s removed", max(removed, written),
                 _label(param, index) if param is not None else "every parameter")
        return max(removed, written)


def _heard_mapping(target: tuple[str, int], heard: Heard) -> MidiMapping:
    """The mapping for the CC learn heard: relative when its values show an encoder, else absolute."""
    encoding = relative_encoding(heard.values)
    if encoding is None:
        return MidiMapping(param=target[0], index=target[1], type="cc", channel=heard.channel, number=heard.number)
    return MidiMapping(param=target[0], index=target[1], type="relative", channel=heard.channel,
                       number=heard.number, encoding=encoding)


def _feedback_bytes(b: Binding, x: float) -> list[list[int]]:
    """Messages that show position x (0..1) on the control of binding b."""
    ch = max(b.m.channel, 1) - 1
    t = b.m.type
    if t == "note":
        return [[0x90 | ch, b.m.number, 127 if x >= 0.5 else 0]]
    if t == "pitchbend":
        v = round(x * 16383)
        return [[0xE0 | ch, v & 127, v >> 7]]
    if t == "cc14":
        v = round(x * 16383)
        return [[0xB0 | ch, b.m.number, v >> 7], [0xB0 | ch, b.m.number + 32, v & 127]]
    return [[0xB0 | ch, b.m.number, round(x * 127)]]


def _api_name(client: Any) -> str:
    import rtmidi

    names = {getattr(rtmidi, f"API_{a}"): a for a in APIS[1:]}
    return names.get(client.get_current_api(), "auto")


def _label(param: str, index: int) -> str:
    return f"{param}[{index}]" if index >= 0 else param


def _close(client: Any) -> None:
    try:
        client.close_port()
    except Exception:  # noqa: BLE001 — closing a port that is gone is not a problem
        pass
    client.delete()


