"""The parameter registry: the single address space of ciel.

Every control surface (OSC, OSCQuery, MIDI, patches, the scheduler, the web page) names the
parameters defined here; none keeps its own copy of state. `ParamStore` holds the current target
values in the main process and publishes them to a `SharedSnapshot` (shared memory, seqlock) that
the audio process and the visual side read without locks. Consumers smooth towards the targets
with each parameter's own smoothing time (`Smoother`).

Triggers (jump, next, panic…) are stored as counters: a consumer fires when the count changes.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .errors import ParamError
from .shmblock import BlockLayout, StatusBlock

Kind = Literal["float", "int", "bool", "trigger"]
ParamValue = float | tuple[float, ...]   # a parameter's value in a patch: a number, or one per element

AUDIO_LATENT_DIMS = 16
IMAGE_LATENT_KNOBS = 8


@dataclass(frozen=True)
class Param:
    """One parameter. `size` > 1 makes a vector (one OSC message with a float list).

    name:        slash-separated, lowercase, no all-numeric parts ("audio/walk/speed").
    minimum/maximum/default: in the parameter's own unit; ints and bools are stored as floats.
    unit:        "dB", "s", "deg", "sigma", "" …
    smoothing_s: time constant consumers use to glide to a new target (0 = jump).
    labels:      names of an int parameter's values, in order (an enumeration: a menu on the control page,
                 RANGE VALS in OSCQuery).
    extended:    what the values are beyond numbers, in OSCQuery's words ("color.rgb"), or "".
    readonly:    measured, not set: only the engine's listener writes it (`LISTEN_SOURCE`); OSC,
                 MIDI, patches and the web page read it, and modulation takes it as a source.
    """

    name: str
    minimum: float
    maximum: float
    default: float
    unit: str = ""
    smoothing_s: float = 0.0
    description: str = ""
    kind: Kind = "float"
    size: int = 1
    labels: tuple[str, ...] = ()
    extended: str = ""
    readonly: bool = False

    @property
    def address(self) -> str:
        """OSC address of this parameter."""
        return "/ciel/" + self.name

    def clamp(self, value: float) -> float:
        """Clamp to the range; ints and bools are rounded. NaN becomes the default."""
        if not math.isfinite(value):
            if math.isnan(value):
                return self.default
            value = self.maximum if value > 0 else self.minimum
        value = min(self.maximum, max(self.minimum, value))
        if self.kind in ("int", "bool"):
            value = float(round(value))
        return value


def _p(name: str, lo: float, hi: float, default: float, unit: str = "", smooth: float = 0.0,
       doc: str = "", kind: Kind = "float", size: int = 1, labels: tuple[str, ...] = (), extended: str = "") -> Param:
    return Param(name, lo, hi, default, unit, smooth, doc, kind, size, labels, extended)


def _measured(name: str, lo: float, hi: float, unit: str, doc: str) -> Param:
    return Param(name, lo, hi, lo, unit, 0.0, doc, "float", 1, readonly=True)


def _trigger(name: str, doc: str) -> Param:
    return Param(name, 0.0, float(2**52), 0.0, "", 0.0, doc, "trigger", 1)


# The address space. Order is the shared-memory layout; append new parameters at the end of a group.
PARAMS: tuple[Param, ...] = (
    # — sound —
    _p("audio/gain", -60.0, 6.0, -6.0, "dB", 0.05, "Output gain before the safety stage."),
    _p("audio/mute", 0, 1, 0, "", 0.0, "Mute with a short fade (1 = muted).", "bool"),
    _p("audio/offset", -4.0, 4.0, 0.0, "sigma", 0.03,
       "Per-dimension latent offsets, most important dimension first.", size=AUDIO_LATENT_DIMS),
    _p("audio/temperature", 0.0, 3.0, 1.0, "", 0.1, "Scale of the latent around the data's centre (above 1 the sound leaves the archive)."),
    _p("audio/walk/speed", 0.0, 4.0, 0.3, "sigma/s", 0.2, "Speed of the walk through the archive's latent space (in the data's own spread per second)."),
    _p("audio/walk/spread", 0.0, 3.0, 1.0, "sigma", 0.2, "How far the walk wanders, in the data's own spread (1 = as far as the archive goes)."),
    _p("audio/glide", 0.0, 30.0, 2.0, "s", 0.0, "Glide time to a new latent after a jump."),
    _p("audio/hold", 0, 1, 0, "", 0.0, "Freeze the latent path (1 = hold).", "bool"),
    _p("audio/replay", 0, 1, 0, "", 0.0, "Replay the encoded clip instead of walking (1 = on).", "bool"),
    _p("audio/clip", 0, 4095, 0, "", 0.0, "Index of the encoded clip to replay.", "int"),
    _p("audio/dissolve", 0.0, 1.0, 0.0, "", 0.1, "Mix Gaussian noise into the latent along a diffusion schedule (1 = pure noise)."),
    _p("audio/loudness", -36.0, -10.0, -20.0, "dB", 0.0, "Loudness normalisation target (RMS, dBFS)."),
    _p("audio/ceiling", -20.0, -1.0, -1.0, "dBFS", 0.0, "True-peak limiter ceiling; never above -1 dBFS."),
    _trigger("audio/jump", "Glide to a new random audio latent."),
    _p("audio/learning", 0.0, 1.0, 1.0, "", 0.3,
       "Where along its training the decoder plays: 0 = the untrained net (noise), 1 = the final one."),
    _p("audio/width", 0.0, 1.0, 0.6, "", 0.2,
       "Stereo width: 0 = the same voice on both channels, 1 = two independent walks."),
    _p("audio/voices", 1, 16, 1, "", 0.0,
       "Decoder voices: 1 = the stereo pair alone; each more is a mono voice of the cloud on its own walk "
       "(up to the patch's [audio] voices).", "int"),
    _p("audio/cloud/spread", 0.0, 3.0, 1.0, "sigma", 0.2,
       "How far each cloud voice wanders from the shared place, in the data's own spread."),
    _p("audio/cloud/density", 0.0, 1.0, 0.6, "", 0.2,
       "Share of the time each cloud voice sounds: 0 = silent, 1 = always (grains overlap into a drone)."),
    _p("audio/cloud/grain", 0.05, 10.0, 1.5, "s", 0.0, "Mean length of a cloud voice's grain (its onsets follow)."),
    _p("audio/cloud/pan", 0.0, 1.0, 1.0, "", 0.0,
       "How far apart the cloud voices are placed: a new random pan per grain within ± this (1 = the whole field)."),
    _p("audio/cloud/distance", 0.0, 1.0, 0.4, "", 0.2,
       "How far away the cloud voices sound: far is quieter, darker and wetter (a new random distance per grain)."),
    _p("audio/reverb/send", 0.0, 1.0, 0.0, "", 0.1,
       "Level of everything sent into the reverb (distant cloud voices send more)."),
    _p("audio/reverb/size", 0.0, 1.0, 0.92, "", 0.0, "Reverb size: its decay (1 = frozen, never ends)."),
    _p("audio/reverb/damp", 0.0, 1.0, 0.75, "", 0.0, "Reverb darkness: how fast its highs die away."),
    _p("audio/reverb/level", -60.0, 6.0, -3.0, "dB", 0.1, "Level of the reverb's return."),
    _p("audio/class", 0.0, 15.0, 0.0, "", 0.5,
       "Which class of the archive a conditioned decoder plays (its card lists them; a fraction blends "
       "two neighbours: 0.5 is halfway between classes 0 and 1). A decoder trained without classes ignores it."),
    # — image latent —
    _p("image/offset", -4.0, 4.0, 0.0, "sigma", 0.1,
       "Moves along the generator's principal latent directions, most important first, in standard deviations.", size=IMAGE_LATENT_KNOBS),
    _p("image/temperature", 0.0, 3.0, 1.0, "", 0.2, "Scale of the image latent."),
    _p("image/walk/speed", 0.0, 2.0, 0.05, "sigma/s", 0.3, "Speed of the image latent walk."),
    _p("image/glide", 0.0, 30.0, 4.0, "s", 0.0, "Crossfade time to a new image."),
    _p("image/hold", 0, 1, 0, "", 0.0, "Freeze the image latent (1 = hold).", "bool"),
    _trigger("image/jump", "Crossfade to a new random image latent."),
    _p("image/learning", 0.0, 1.0, 1.0, "", 0.5,
       "Where along its training the generator draws: 0 = the untrained net, 1 = the final one."),
    # — sky —
    _p("sky/projection", 0, 1, 0, "", 0.0, "Map projection of the sky.", "int",
       labels=("Mollweide", "Hammer-Aitoff")),
    _p("sky/mapping", 0, 2, 0, "", 0.0, "How the image wraps the sphere (mirrored equirectangular, two hemispheres, tiled).", "int",
       labels=("mirrored", "hemispheres", "tiled")),
    _p("sky/lon", -180.0, 180.0, 0.0, "deg", 0.3, "Longitude at the centre of the map."),
    _p("sky/lat", -90.0, 90.0, 0.0, "deg", 0.3, "Latitude at the centre of the map."),
    _p("sky/roll", -180.0, 180.0, 0.0, "deg", 0.3, "Roll of the sky around the view axis."),
    _p("sky/spin", -30.0, 30.0, 1.0, "deg/s", 0.5, "Continuous rotation in longitude."),
    _p("sky/graticule", 0.0, 1.0, 0.25, "", 0.2, "Opacity of the graticule."),
    _p("sky/spacing", 5.0, 90.0, 30.0, "deg", 0.0, "Graticule spacing."),
    _p("sky/colormap", 0, 4, 0, "", 0.0, "0 = image colours, 1.. false-colour survey maps.", "int"),
    _p("sky/grain", 0.0, 1.0, 0.15, "", 0.2, "Film grain amount."),
    _p("sky/dissolve", 0.0, 1.0, 0.0, "", 0.2, "Gaussian noise along a diffusion schedule (0 = image, 1 = pure noise)."),
    _p("sky/brightness", 0.0, 2.0, 1.0, "", 0.2, "Brightness of the map."),
    _p("sky/background", 0.0, 1.0, 0.0, "", 0.0, "Background colour outside the oval (RGB).", size=3,
       extended="color.rgb"),
    # — scene, installation, safety —
    _trigger("scene/next", "New sound and new image now (the scheduler sends this every period)."),
    _p("note/show", 0, 1, 0, "", 0.0, "Show the program note (1 = shown).", "bool"),
    _trigger("panic", "Mute all sound at once; unmute with audio/mute 0 after checking levels."),
    _p("master/fade", 0.0, 1.0, 1.0, "", 1.0, "Fade of sound and picture together (0 = black and silent)."),
    # — listening: measured by the audio process, read-only —
    _p("listen/source", 0, 2, 0, "", 0.0,
       "What listen/* measures: ciel's own sound and the input (--input) together, ciel's sound alone, "
       "or the input alone.", "int", labels=("both", "ciel", "input")),
    _measured("listen/level", -60.0, 0.0, "dB", "Level of what is heard (RMS over 21 ms, dBFS; -60 = silence)."),
    _measured("listen/centroid", 0.0, 1.0, "",
              "Brightness: the spectral centroid on a log scale, 0 = 50 Hz or below, 1 = 12 kHz or above."),
    _measured("listen/flatness", 0.0, 1.0, "", "Noisiness: spectral flatness, 0 = a pure tone, 1 = white noise."),
    _measured("listen/onset", 0.0, 1.0, "", "Onsets: 1 at each attack (spectral flux), falling away over 0.25 s."),
)

LISTEN_SOURCE = "listen"   # the store source of measured values (the only one allowed to set them)


class Registry:
    """Index of parameters by name and their slots in the flat value array."""

    def __init__(self, params: Sequence[Param] = PARAMS) -> None:
        self.params: tuple[Param, ...] = tuple(params)
        self._by_name: dict[str, Param] = {}
        self._slot: dict[str, int] = {}
        slot = 0
        for p in self.params:
            if p.name in self._by_name:
                raise ValueError(f"duplicate parameter {p.name}")
            if any(part.isdigit() for part in p.name.split("/")):
                raise ValueError(f"numeric address part in {p.name}")
            self._by_name[p.name] = p
            self._slot[p.name] = slot
            slot += p.size
        self.size = slot

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[Param]:
        return iter(self.params)

    def get(self, name: str) -> Param:
        try:
            return self._by_name[name]
        except KeyError:
            raise ParamError(f"unknown parameter {name!r}") from None

    def slot(self, name: str) -> slice:
        """Slice of the flat value array that holds `name`."""
        p = self.get(name)
        s = self._slot[name]
        return slice(s, s + p.size)

    def index(self, name: str) -> int:
        """First slot of `name` in the flat value array."""
        self.get(name)
        return self._slot[name]

    def defaults(self) -> np.ndarray:
        """Flat float64 array of every default."""
        out = np.empty(self.size, dtype=np.float64)
        for p in self.params:
            out[self.slot(p.name)] = p.default
        return out


REGISTRY = Registry()

Listener = Callable[[str, tuple[float, ...], str], None]


class SharedSnapshot:
    """A float64 array in shared memory with a sequence counter (seqlock), one writer, many readers.

    Layout: [seq, values...]. The writer (main process) makes seq odd, writes, makes it even.
    Readers (audio process, GAN worker) copy and retry if seq changed or was odd. No locks, so the
    audio side never waits on the control side.
    """

    def __init__(self, size: int, name: str | None = None, create: bool = True) -> None:
        if not create and name is None:
            raise ParamError("SharedSnapshot: attaching needs the creator's name")
        self.block = StatusBlock(BlockLayout(slots=size + 1), None if create else name)
        self.size = size
        self._arr = self.block.ctl   # (size + 1,) float64: [seq, values...]

    @property
    def name(self) -> str:
        return self.block.name

    def write(self, values: np.ndarray) -> None:
        """Publish a full value array. Called by the main process only."""
        seq = self._arr[0]
        self._arr[0] = seq + 1.0
        self._arr[1:] = values
        self._arr[0] = seq + 2.0

    def read_into(self, out: np.ndarray, tries: int = 100) -> bool:
        """Copy a consistent snapshot into `out` (float64, `size`); False if the writer kept racing."""
        for _ in range(tries):
            s0 = self._arr[0]
            if int(s0) & 1:
                continue
            out[:] = self._arr[1:]
            if self._arr[0] == s0:
                return True
        return False

    @property
    def sequence(self) -> int:
        return int(self._arr[0])

    def close(self) -> None:
        """Unmap (and, in the process that created it, unlink) the block."""
        del self._arr
        self.block.close()


class ParamStore:
    """Target values of every parameter, in the main process; thread-safe setters.

    Control threads call `set`/`trigger`; listeners (OSC feedback, MIDI takeover, the web page) are
    told of every change with the source that made it. If a `SharedSnapshot` is attached, each
    change is published to it at once.
    """

    def __init__(self, registry: Registry = REGISTRY, snapshot: SharedSnapshot | None = None) -> None:
        self.registry = registry
        self.values = registry.defaults()
        self.snapshot = snapshot
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []
        if snapshot is not None:
            snapshot.write(self.values)

    def add_listener(self, fn: Listener) -> None:
        """`fn(name, values, source)` is called after each change, on the thread that made it."""
        self._listeners.append(fn)

    def remove_listener(self, fn: Listener) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)

    def get(self, name: str) -> tuple[float, ...]:
        sl = self.registry.slot(name)
        with self._lock:
            return tuple(float(v) for v in self.values[sl])

    def get1(self, name: str) -> float:
        i = self.registry.index(name)
        with self._lock:
            return float(self.values[i])

    def snapshot_values(self, out: np.ndarray | None = None) -> np.ndarray:
        """A consistent copy of every target (float64, the registry's layout), taken under the
        lock; written into `out` when given. Readers in this process use this, never `values`."""
        with self._lock:
            if out is None:
                copy: np.ndarray = self.values.copy()
                return copy
            out[:] = self.values
            return out

    def set(self, name: str, value: float | Iterable[float], source: str = "api", index: int | None = None) -> tuple[float, ...]:
        """Set a parameter (clamped); `index` sets one element of a vector. Returns the stored values."""
        p = self.registry.get(name)
        if p.kind == "trigger":
            raise ParamError(f"{name} is a trigger: use trigger()")
        if p.readonly and source != LISTEN_SOURCE:
            raise ParamError(f"{name} is read-only: it is measured from the sound")
        if isinstance(value, (int, float)):
            vals = [float(value)] * (1 if index is not None else p.size)
        else:
            vals = [float(v) for v in value]
        if index is not None:
            if not 0 <= index < p.size or len(vals) != 1:
                raise ParamError(f"{name}: index {index} out of range 0..{p.size - 1}")
        elif len(vals) != p.size:
            raise ParamError(f"{name}: expected {p.size} values, got {len(vals)}")
        clamped = [p.clamp(v) for v in vals]
        sl = self.registry.slot(name)
        with self._lock:
            if index is not None:
                self.values[sl.start + index] = clamped[0]
            else:
                self.values[sl] = clamped
            stored = tuple(float(v) for v in self.values[sl])
            if self.snapshot is not None:
                self.snapshot.write(self.values)
        self._notify(name, stored, source)
        return stored

    def trigger(self, name: str, source: str = "api") -> None:
        """Fire a trigger (its counter goes up by one)."""
        p = self.registry.get(name)
        if p.kind != "trigger":
            raise ParamError(f"{name} is not a trigger")
        i = self.registry.index(name)
        mute = self.registry.index("audio/mute") if name == "panic" and "audio/mute" in self.registry else None
        with self._lock:
            self.values[i] += 1.0
            stored = (float(self.values[i]),)
            if mute is not None:  # panic stays on until someone unmutes on purpose
                self.values[mute] = 1.0
            if self.snapshot is not None:
                self.snapshot.write(self.values)
        self._notify(name, stored, source)
        if mute is not None:
            self._notify("audio/mute", (1.0,), source)

    def _notify(self, name: str, values: tuple[float, ...], source: str) -> None:
        for fn in tuple(self._listeners):
            fn(name, values, source)


class Smoother:
    """One-pole smoothing of a flat value array towards targets, per parameter time constant.

    Called by a consumer (audio process per block, renderer per frame) with the elapsed time in
    seconds, which comes from that consumer's clock. Triggers and zero-time params jump.
    """

    def __init__(self, registry: Registry = REGISTRY) -> None:
        self.registry = registry
        self.tau = np.zeros(registry.size)
        for p in registry.params:
            self.tau[registry.slot(p.name)] = p.smoothing_s if p.kind == "float" else 0.0
        self.value = registry.defaults()

    def reset(self, targets: np.ndarray) -> None:
        self.value[:] = targets

    def step(self, targets: np.ndarray, dt: float) -> np.ndarray:
        """Advance by `dt` seconds towards `targets`; returns the smoothed array (a view, reused)."""
        with np.errstate(divide="ignore", over="ignore"):
            a = np.where(self.tau > 0, 1.0 - np.exp(-max(dt, 0.0) / np.maximum(self.tau, 1e-9)), 1.0)
        self.value += a * (targets - self.value)
        return self.value


# — the typed view ----------------------------------------------------------------------------
# engine/paramview.py is generated from PARAMS by `python -m engine.params --view` (a test holds it
# current): one read-only property per parameter, so a consumer writes `view.audio_gain` and mypy
# catches a renamed parameter; `check_view` confirms the layout against a registry at start.

VIEW_FILE = "paramview.py"


def attribute(name: str) -> str:
    """The view's attribute for a parameter name: "audio/walk/speed" → "audio_walk_speed"."""
    return name.replace("/", "_")


def view_source(registry: Registry = REGISTRY) -> str:
    """The text of engine/paramview.py for `registry`."""
    lines = [
        '"""Typed reads of a flat parameter array: generated from engine/params.py by',
        "`python -m engine.params --view`; do not edit.",
        "",
        "`ParamView(values)` wraps a float64 array in the registry's layout (a snapshot copy, a",
        "Smoother's output) without copying it; each property reads one parameter. Scalars come",
        "back as float; vectors as a view (their size) into the array. Any thread, as the array.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "import numpy as np",
        "",
        "# name → (first slot, size); the layout the properties below read",
        "LAYOUT: dict[str, tuple[int, int]] = {",
    ]
    lines += [f'    "{p.name}": ({registry.index(p.name)}, {p.size}),' for p in registry.params]
    lines += [
        "}",
        "",
        "",
        "class ParamView:",
        '    """One property per parameter of engine.params.PARAMS (the name with "/" as "_")."""',
        "",
        '    __slots__ = ("values",)',
        "",
        "    def __init__(self, values: np.ndarray) -> None:",
        "        self.values = values",
    ]
    for p in registry.params:
        at = registry.index(p.name)
        unit = f", {p.unit}" if p.unit else ""
        doc = f"{p.name} ({p.kind}{unit})" if p.size == 1 else f"{p.name} ({p.size} floats{unit})"
        lines += ["", "    @property"]
        if p.size == 1:
            lines += [f"    def {attribute(p.name)}(self) -> float:",
                      f'        """{doc}"""',
                      f"        return float(self.values[{at}])"]
        else:
            lines += [f"    def {attribute(p.name)}(self) -> np.ndarray:",
                      f'        """{doc}"""',
                      f"        return self.values[{at}:{at + p.size}]"]
    return "\n".join(lines) + "\n"


def check_view(registry: Registry = REGISTRY) -> None:
    """Raise ParamError naming the first parameter whose place differs between `registry` and the
    generated view (called once at start by each consumer)."""
    from .paramview import LAYOUT

    for p in registry.params:
        if LAYOUT.get(p.name) != (registry.index(p.name), p.size):
            raise ParamError(f"parameter {p.name}: the typed view (engine/paramview.py) has "
                             f"{LAYOUT.get(p.name)}, the registry ({registry.index(p.name)}, {p.size}); "
                             "regenerate it with `python -m engine.params --view`")
    missing = sorted(set(LAYOUT) - {p.name for p in registry.params})
    if missing:
        raise ParamError(f"parameter {missing[0]}: in the typed view but not in the registry; "
                         "regenerate it with `python -m engine.params --view`")


if __name__ == "__main__":
    import sys
    from pathlib import Path

    if sys.argv[1:] != ["--view"]:
        sys.exit("usage: python -m engine.params --view   (regenerates engine/paramview.py)")
    (Path(__file__).parent / VIEW_FILE).write_text(view_source(), encoding="utf-8")
