"""The `[osc]`, `[oscquery]`, `[midi]` and `[schedule]` sections of a patch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..configio import field


@dataclass(frozen=True)
class OscConfig:
    enabled: bool = field(True)
    host: str = field("127.0.0.1", doc="Listen address; 0.0.0.0 to accept other machines.")
    port: int = field(9000, minimum=0, maximum=65535, doc="UDP port (0 = any free port).")
    allow: tuple[str, ...] = field((), doc="Client addresses allowed to send; empty = any.")
    feedback_port: int = field(9001, minimum=0, maximum=65535, doc="Default port of subscribers.")


@dataclass(frozen=True)
class OscQueryConfig:
    enabled: bool = field(True)
    port: int = field(9002, minimum=0, maximum=65535, doc="HTTP port of the OSCQuery tree.")
    zeroconf: bool = field(True, doc="Advertise as _oscjson._tcp.")


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


@dataclass(frozen=True)
class MidiConfig:
    enabled: bool = field(True)
    inputs: tuple[str, ...] = field((), doc="Input port names (substring match); empty = all.")
    output: str = field("", doc="Output port for controller feedback (LEDs, motor faders).")
    api: str = field("auto", doc="rtmidi API: auto, UNIX_JACK, LINUX_ALSA, MACOSX_CORE, WINDOWS_MM.")
    takeover: Literal["none", "pickup", "scale"] = field("pickup")
    clock: bool = field(False, doc="Follow MIDI clock in.")
    mappings: tuple[MidiMapping, ...] = field(())


@dataclass(frozen=True)
class Hours:
    """Opening hours: days (mon..sun) and a time range; `end` before `start` crosses midnight."""

    days: tuple[str, ...] = field(("mon", "tue", "wed", "thu", "fri", "sat", "sun"))
    start: str = field("00:00")
    end: str = field("24:00")


@dataclass(frozen=True)
class ScheduleConfig:
    enabled: bool = field(False, doc="Installation scheduler on.")
    period: float = field(30.0, minimum=0.1, maximum=86400.0, doc="Seconds between scenes.")
    audio_glide: float = field(2.0, minimum=0.0, maximum=600.0)
    image_glide: float = field(4.0, minimum=0.0, maximum=600.0)
    no_repeat: int = field(50, minimum=0, maximum=100000, doc="No scene repeats within this many scenes.")
    baked: str = field("", doc="Play from a baked folder (ciel bake) instead of generating.")
    fade: float = field(5.0, minimum=0.0, maximum=600.0, doc="Fade at opening and closing time (s).")
    timezone: str = field("", doc="IANA time zone of the opening hours (empty = local).")
    hours: tuple[Hours, ...] = field(())
