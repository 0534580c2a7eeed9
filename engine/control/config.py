"""The `[osc]`, `[oscquery]`, `[midi]` and `[schedule]` sections of a patch; what a MIDI mapping
listens to (`controls`) and its checks; `preset_name`, the one rule for preset names (OSC, the
control page, engine.patchwrite)."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, fields
from typing import Any, Literal, NamedTuple

from ..configio import build, field, to_table
from ..errors import PatchError
from ..params import Registry

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
Scalar = str | int | float | bool
TomlValue = Scalar | list[float]
"""What engine.patchwrite.PatchWriter writes: mapping fields and preset values (a vector as a list)."""


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
    program_presets: bool = field(True, doc="A program change recalls a preset: program 0 the first in the patch, "
                                            "1 the second… (false = program changes are ignored).")
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


class Control(NamedTuple):
    """One stream of MIDI messages a control sends: kind "cc", "note" or "pitchbend", the channel
    1-16 (0 in a mapping = any channel) and the CC or note number (0 for pitch bend)."""

    kind: Literal["cc", "note", "pitchbend"]
    channel: int
    number: int


def controls(mapping: MidiMapping) -> frozenset[Control]:
    """The message streams `mapping` listens to: a 14-bit CC both of its CCs (n and n + 32), an
    inc/dec encoder both of its CCs (n up, n + 1 down). Two mappings are of the same control when
    these sets meet."""
    ch, n = mapping.channel, mapping.number
    if mapping.type == "note":
        return frozenset({Control("note", ch, n)})
    if mapping.type == "pitchbend":
        return frozenset({Control("pitchbend", ch, 0)})
    if mapping.type == "cc14":
        return frozenset({Control("cc", ch, n), Control("cc", ch, n + 32)})
    if mapping.type == "relative" and mapping.encoding == "incdec":
        return frozenset({Control("cc", ch, n), Control("cc", ch, min(n + 1, 127))})
    return frozenset({Control("cc", ch, n)})


def selects(mapping: MidiMapping, param: str | None = None, index: int = -1, control: Control | None = None) -> bool:
    """Whether `unlearn(param, index, control)` removes `mapping`: `param` None = any parameter,
    `index` -1 = any element, `control` None = any control (else one of the mapping's streams)."""
    return ((param is None or mapping.param == param) and (index < 0 or mapping.index == index)
            and (control is None or control in controls(mapping)))


def check_mapping(mapping: MidiMapping, registry: Registry, source: str, key: str) -> None:
    """What a mapping must satisfy to bind (beyond its fields' types and ranges): a known parameter,
    an element inside it, a 14-bit CC on CC 0-31 and a range inside the parameter's. PatchError
    names `key` in `source`."""
    if mapping.param not in registry:
        raise PatchError(source, f"{key}.param", f"unknown parameter {mapping.param!r} (see docs/osc.md)")
    p = registry.get(mapping.param)
    if p.readonly:
        raise PatchError(source, f"{key}.param", f"{mapping.param} is read-only: it is measured from the sound "
                                                 "(map it to a parameter with [[mod]])")
    if mapping.index >= p.size or (mapping.index >= 0 and p.size == 1):
        raise PatchError(source, f"{key}.index", f"{mapping.param} has {p.size} element(s); index {mapping.index} is outside")
    if mapping.type == "cc14" and mapping.number > 31:
        raise PatchError(source, f"{key}.number", "a 14-bit CC is its MSB number 0..31 (LSB = number + 32)")
    for bound in (mapping.minimum, mapping.maximum):
        if bound is not None and not p.minimum <= bound <= p.maximum:
            raise PatchError(source, key, f"range {bound:g} is outside {mapping.param}'s [{p.minimum:g}, {p.maximum:g}]")


PRESET_NAME_MAX = 64
PRESET_NAME_RULE = (f"a preset name is 1 to {PRESET_NAME_MAX} characters: letters of any script, digits, spaces, "
                    "quotes, dots and other punctuation, but no control characters (tab, newline…)")
_REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})   # controls, lone surrogates, line and paragraph breaks


def preset_name(text: str) -> str:
    """`text` as a preset name, without surrounding white space; ValueError saying the rule if it
    breaks it (empty, longer than PRESET_NAME_MAX characters, or a control character). Any other
    name is fine: the patch file quotes it (`[presets."a.b"]`, `[presets."été"]`)."""
    name = text.strip()
    shown = repr(name) if len(name) <= 40 else repr(name[:40]) + f"… ({len(name)} characters)"
    if not name:
        raise ValueError(f"empty preset name: {PRESET_NAME_RULE}")
    if len(name) > PRESET_NAME_MAX:
        raise ValueError(f"preset name {shown} is too long: {PRESET_NAME_RULE}")
    bad = next((c for c in name if unicodedata.category(c) in _REFUSED_CATEGORIES), None)
    if bad is not None:
        raise ValueError(f"preset name {shown} holds the control character U+{ord(bad):04X}: {PRESET_NAME_RULE}")
    return name


def mapping_table(mapping: MidiMapping) -> dict[str, TomlValue]:
    """A mapping as TOML data, leaving out fields at their defaults (param, type and number always kept)."""
    full = to_table(mapping)
    default = to_table(MidiMapping())
    keep = {"param", "type", "number"}
    return {f.name: full[f.name] for f in fields(MidiMapping)
            if f.name in full and (f.name in keep or full[f.name] != default.get(f.name))}


def parse_mapping(table: dict[str, Any], source: str = "<mapping>", key: str = "midi.mappings") -> MidiMapping:
    """A mapping from TOML data, validated (PatchError names the key)."""
    return build(MidiMapping, table, source, prefix=key, error=PatchError)


