"""The `[osc]`, `[oscquery]`, `[midi]` and `[schedule]` sections of a patch, and `PatchWriter`,
which writes MIDI-learned mappings and stored presets back into the patch file."""

from __future__ import annotations

import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from ..configio import atomic_write, build, dumps_toml, field, read_toml, to_table
from ..errors import PatchError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


@dataclass(frozen=True)
class OscConfig:
    enabled: bool = field(True)
    host: str = field("127.0.0.1", doc="Listen address; 0.0.0.0 (or `ciel run --lan`) to accept other machines.")
    port: int = field(9000, minimum=0, maximum=65535, doc="UDP port (0 = any free port).")
    allow: tuple[str, ...] = field((), doc="Other machines allowed to control ciel over OSC, OSCQuery and the control "
                                           "page (addresses or networks, e.g. '192.168.1.0/24'); this machine always "
                                           "may. Required when `host` is not loopback.")
    remote_admin: bool = field(False, doc="Let allowed machines also quit, store presets, learn and subscribe "
                                          "(else only this machine may).")
    subscription_ttl: float = field(10.0, minimum=0.0, maximum=86400.0,
                                    doc="Seconds a /ciel/subscribe lasts unless sent again (0 = for ever).")
    feedback_port: int = field(9001, minimum=0, maximum=65535, doc="Default port of subscribers.")
    heartbeat: float = field(1.0, minimum=0.0, maximum=60.0, doc="Seconds between /ciel/heartbeat to subscribers (0 = off).")
    feedback_rate: float = field(100.0, minimum=1.0, maximum=1000.0, doc="Most feedback bursts per second to subscribers.")
    max_subscribers: int = field(16, minimum=0, maximum=256, doc="Subscribers beyond this are refused.")
    receive_buffer: int = field(4 << 20, minimum=65536, maximum=1 << 28, doc="Socket receive buffer (bytes).")


@dataclass(frozen=True)
class OscQueryConfig:
    enabled: bool = field(True)
    port: int = field(9002, minimum=0, maximum=65535, doc="HTTP port of the OSCQuery tree.")
    zeroconf: bool = field(True, doc="Advertise as _oscjson._tcp.")
    host: str = field("127.0.0.1", doc="HTTP and websocket listen address (the tree, LISTEN and the control page); "
                                       "0.0.0.0 to answer the machines of [osc] allow.")
    name: str = field("ciel", doc="Service name shown in OSCQuery browsers.")


@dataclass(frozen=True)
class MidiMapping:
    """One controller → parameter binding."""

    param: str = field("", doc="Parameter name, e.g. 'audio/gain' or 'audio/offset' with index.")
    index: int = field(-1, minimum=-1, maximum=255, doc="Element of a vector parameter (-1 = all / scalar).")
    type: Literal["cc", "cc14", "note", "pitchbend", "relative"] = field("cc")
    channel: int = field(0, minimum=0, maximum=16, doc="MIDI channel 1-16 (0 = any).")
    number: int = field(0, minimum=0, maximum=127, doc="CC or note number.")
    minimum: float | None = field(None, doc="Mapped range low (default: the parameter's).")
    maximum: float | None = field(None, doc="Mapped range high (default: the parameter's).")
    curve: Literal["linear", "exp", "log"] = field("linear")
    invert: bool = field(False)
    encoding: Literal["twos", "offset", "signbit", "incdec"] = field("twos", doc="Relative encoder encoding.")
    takeover: Literal["default", "none", "pickup", "scale"] = field("default")
    step: float = field(1.0 / 128.0, minimum=1e-6, maximum=1.0, doc="Relative encoders: fraction of the range per tick.")
    mode: Literal["auto", "toggle", "momentary", "velocity"] = field(
        "auto", doc="Notes and buttons: auto = triggers fire, switches toggle, others follow velocity.")


@dataclass(frozen=True)
class MidiConfig:
    enabled: bool = field(True)
    inputs: tuple[str, ...] = field((), doc="Input port names (substring match); empty = all.")
    output: str = field("", doc="Output port for controller feedback (LEDs, motor faders).")
    api: str = field("auto", doc="rtmidi API: auto, UNIX_JACK, LINUX_ALSA, MACOSX_CORE, WINDOWS_MM.")
    takeover: Literal["none", "pickup", "scale"] = field("pickup")
    clock: bool = field(False, doc="Follow MIDI clock in.")
    clock_trigger: str = field("", doc="Trigger fired every `clock_beats` beats of MIDI clock (e.g. 'scene/next').")
    clock_beats: int = field(16, minimum=1, maximum=4096, doc="Beats between clock triggers.")
    thread: bool = field(True, doc="Read inputs on a thread of their own every millisecond; false = once a frame in poll().")
    rescan: float = field(0.5, minimum=0.05, maximum=60.0, doc="Seconds between scans for ports that vanished or came back.")
    feedback: bool = field(True, doc="Send values changed by other sources back to the controller (LEDs, motor faders).")
    mappings: tuple[MidiMapping, ...] = field(())


@dataclass(frozen=True)
class Hours:
    """Opening hours: days (mon..sun) and a local time range "HH:MM"; an `end` at or before `start`
    runs past midnight into the next day (`days` names the day the range starts)."""

    days: tuple[Day, ...] = field(("mon", "tue", "wed", "thu", "fri", "sat", "sun"))
    start: str = field("00:00", doc="Opening time, HH:MM local time.")
    end: str = field("24:00", doc="Closing time, HH:MM (24:00 = midnight; before start = next day).")


@dataclass(frozen=True)
class ScheduleConfig:
    enabled: bool = field(False, doc="Installation scheduler on.")
    period: float = field(30.0, minimum=0.1, maximum=86400.0, doc="Seconds between scenes.")
    audio_glide: float = field(2.0, minimum=0.0, maximum=600.0, doc="Glide to the new sound latent (s).")
    image_glide: float = field(4.0, minimum=0.0, maximum=600.0, doc="Crossfade to the new image (s).")
    no_repeat: int = field(50, minimum=0, maximum=100000, doc="No scene repeats within this many scenes.")
    baked: str = field("", doc="Play from a baked folder (ciel bake) instead of generating.")
    fade: float = field(5.0, minimum=0.0, maximum=600.0, doc="Fade at opening and closing time (s).")
    timezone: str = field("", doc="IANA time zone of the opening hours (empty = local).")
    hours: tuple[Hours, ...] = field(())
    log_dir: str = field("", doc="Folder of the rotating log in installation mode ('' = $XDG_STATE_HOME/ciel).")


_WRITE_LOCK = threading.Lock()


class PatchWriter:
    """Writes MIDI-learned mappings and stored presets into a patch file, atomically.

    A new entry is appended as text, so comments and layout survive; replacing an entry (the same
    control learned again, a preset stored again) rewrites the file from its data (comments are
    lost then). Either way the new text is parsed before it replaces the file, and a crash leaves
    the old or the new file, never half of one. Safe to call from any thread.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def add_mapping(self, mapping: MidiMapping) -> None:
        """Bind `mapping`, replacing any mapping of the same control (type, channel, number)."""
        entry = mapping_table(mapping)
        with _WRITE_LOCK:
            table = read_toml(self.path, PatchError)
            midi = table.get("midi", {})
            if not isinstance(midi, dict):
                raise PatchError(str(self.path), "midi", "expected a table")
            old = midi.get("mappings", [])
            same = [m for m in old if isinstance(m, dict) and _control(m) == _control(entry)]
            if not same:
                text = self.path.read_text(encoding="utf-8")
                self._write_checked(text.rstrip("\n") + "\n\n[[midi.mappings]]\n" + _body(entry), table, "midi",
                                    lambda t: t.setdefault("midi", {}).setdefault("mappings", []).append(entry))
                return
            midi = dict(midi, mappings=[m for m in old if m not in same] + [entry])
            table["midi"] = midi
            atomic_write(self.path, dumps_toml(table))

    def store_preset(self, name: str, values: Mapping[str, float | tuple[float, ...]]) -> None:
        """Write `values` (parameter name → value) as `[presets.NAME]`, replacing a preset of that name."""
        entry = {k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items()}
        with _WRITE_LOCK:
            table = read_toml(self.path, PatchError)
            presets = table.get("presets", {})
            if not isinstance(presets, dict):
                raise PatchError(str(self.path), "presets", "expected a table of tables")
            if name not in presets:
                text = self.path.read_text(encoding="utf-8")
                header = "[presets." + dumps_toml({name: 0}).split(" = ")[0] + "]\n"
                self._write_checked(text.rstrip("\n") + "\n\n" + header + _body(entry), table, "presets",
                                    lambda t: t.setdefault("presets", {}).__setitem__(name, entry))
                return
            table["presets"] = dict(presets, **{name: entry})
            atomic_write(self.path, dumps_toml(table))

    def _write_checked(self, text: str, table: dict[str, Any], key: str, apply: Any) -> None:
        """Write appended `text` if it parses to `table` with the change applied; else rewrite from data."""
        apply(table)
        try:
            ok = tomllib.loads(text) == table
        except tomllib.TOMLDecodeError:
            ok = False
        atomic_write(self.path, text if ok else dumps_toml(table))


def mapping_table(mapping: MidiMapping) -> dict[str, Any]:
    """A mapping as TOML data, leaving out fields at their defaults (param, type and number always kept)."""
    full = to_table(mapping)
    default = to_table(MidiMapping())
    keep = {"param", "type", "number"}
    return {f.name: full[f.name] for f in fields(MidiMapping)
            if f.name in full and (f.name in keep or full[f.name] != default.get(f.name))}


def parse_mapping(table: dict[str, Any], source: str = "<mapping>") -> MidiMapping:
    """A mapping from TOML data, validated (PatchError names the key)."""
    return build(MidiMapping, table, source, prefix="midi.mappings", error=PatchError)


def _control(entry: Mapping[str, Any]) -> tuple[str, int, int]:
    return (str(entry.get("type", "cc")), int(entry.get("channel", 0)), int(entry.get("number", 0)))


def _body(entry: Mapping[str, Any]) -> str:
    return dumps_toml(dict(entry))


def preset_name(text: str) -> str:  # TEMPORARY stand-in
    return text.strip()
