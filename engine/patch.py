"""Patch files: TOML data → a validated, frozen `Patch`.

A patch sets parameter values, chooses models and devices, and holds MIDI mappings, the schedule
and the program note. Loading never evaluates anything; any problem raises `PatchError` naming the
file, the dotted key and what was expected. Relative paths are resolved against the patch file's
folder, then against the ciel root (the folder holding `models/` and `patches/`).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .audio.config import AudioConfig, is_scripted, not_a_model_line, trust_line
from .configio import ROOT, atomic_write, build, dumps_toml, field, read_toml, resolve_path, to_table
from .control.config import MidiConfig, OscConfig, OscQueryConfig, ScheduleConfig
from .errors import PatchError
from .form import FormConfig, form_table, parse_form
from .modulate import Route, mods_table, parse_mods
from .params import REGISTRY, ParamValue, Registry
from .visual.config import VisualConfig
from .web.config import WebConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PATCHES = ROOT / "patches"
DEFAULT_PATCH = PATCHES / "default.toml"


@dataclass(frozen=True)
class Patch:
    """A whole performance setup. `params` maps parameter names to values in their own units."""

    name: str = field("untitled")
    note: str = field("", doc="Program note shown behind the grey circle.")
    params: Mapping[str, ParamValue] = field(None)
    presets: Mapping[str, Mapping[str, ParamValue]] = field(None)
    audio: AudioConfig = field(None)
    visual: VisualConfig = field(None)
    osc: OscConfig = field(None)
    oscquery: OscQueryConfig = field(None)
    midi: MidiConfig = field(None)
    schedule: ScheduleConfig = field(None)
    web: WebConfig = field(None)
    form: FormConfig = field(None)
    mods: tuple[Route, ...] = field(None, doc="[[mod]] routes: what ciel hears moves parameters (engine/modulate.py).")
    source: str = dataclasses.field(default="<defaults>", compare=False)

    def __post_init__(self) -> None:
        defaults = {"params": MappingProxyType({}), "presets": MappingProxyType({}), "audio": AudioConfig(),
                    "visual": VisualConfig(), "osc": OscConfig(), "oscquery": OscQueryConfig(),
                    "midi": MidiConfig(), "schedule": ScheduleConfig(), "web": WebConfig(), "form": FormConfig(),
                    "mods": ()}
        for key, value in defaults.items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)

    def replace(self, **sections: Any) -> Patch:
        """A copy with whole sections or fields replaced (e.g. audio=dataclasses.replace(p.audio, output='none'))."""
        return dataclasses.replace(self, **sections)


def validate_params(values: Mapping[str, Any], source: str, prefix: str = "params",
                    registry: Registry = REGISTRY) -> dict[str, ParamValue]:
    """Check names, shapes and ranges of parameter values from a patch table."""
    out: dict[str, ParamValue] = {}
    for name, value in _flatten(values):
        key = f"{prefix}.{name}"
        if name not in registry:
            raise PatchError(source, key, "unknown parameter (see docs/osc.md for the list)")
        p = registry.get(name)
        if p.kind == "trigger":
            raise PatchError(source, key, "a trigger cannot be set in a patch")
        if p.readonly:
            raise PatchError(source, key, "read-only: it is measured from the sound (map it with [[mod]] instead)")
        vals = value if isinstance(value, list) else [value]
        if len(vals) != p.size:
            raise PatchError(source, key, f"expected {p.size} value(s), got {len(vals)}")
        checked = []
        for v in vals:
            if isinstance(v, bool) and p.kind == "bool":
                v = float(v)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise PatchError(source, key, f"expected a number, got {type(v).__name__} {v!r}")
            if not p.minimum <= v <= p.maximum:
                raise PatchError(source, key, f"expected a value in [{p.minimum:g}, {p.maximum:g}] {p.unit}".rstrip()
                                 + f", got {v!r}")
            checked.append(float(v))
        out[name] = checked[0] if p.size == 1 else tuple(checked)
    return out


def _flatten(table: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """`{"audio": {"walk": {"speed": 1}}}` and `{"audio/walk/speed": 1}` both give ("audio/walk/speed", 1)."""
    items: list[tuple[str, Any]] = []
    for k, v in table.items():
        name = f"{prefix}/{k}" if prefix else k
        if isinstance(v, dict):
            items.extend(_flatten(v, name))
        else:
            items.append((name, v))
    return items


def load_patch(path: str | Path | None = None, check_models: bool = True) -> Patch:
    """Load and validate a patch file (default: patches/default.toml).

    Model paths become absolute. With `check_models`, a missing model folder or file raises
    PatchError naming the key.
    """
    path = Path(path) if path is not None else DEFAULT_PATCH
    return _patch_from_table(read_toml(path, PatchError), path, check_models)


def patch_from_text(text: str, path: str | Path, check_models: bool = False) -> Patch:
    """Validate the text of a patch exactly as `load_patch` validates the file at `path` (whose
    folder resolves relative model paths). PatchWriter runs it on every text before it writes."""
    path = Path(path)
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PatchError(str(path), "", f"not valid TOML ({exc})") from None
    return _patch_from_table(table, path, check_models)


def _patch_from_table(table: Mapping[str, Any], path: Path, check_models: bool) -> Patch:
    source = str(path)
    table = dict(table)
    params = table.pop("params", {})
    presets = table.pop("presets", {})
    form = parse_form(table.pop("form", {}), source, validate_params)
    mods = parse_mods(table.pop("mod", []), source)
    if not isinstance(params, dict):
        raise PatchError(source, "params", "expected a table")
    if not isinstance(presets, dict):
        raise PatchError(source, "presets", "expected a table of tables")
    patch = build(Patch, table, source, error=PatchError)
    checked_presets = {}
    for pname, ptable in presets.items():
        if not isinstance(ptable, dict):
            raise PatchError(source, f"presets.{pname}", "expected a table of parameter values")
        checked_presets[pname] = MappingProxyType(validate_params(ptable, source, f"presets.{pname}"))
    base = path.resolve().parent
    audio = dataclasses.replace(patch.audio, model=str(resolve_path(patch.audio.model, base)))
    visual = dataclasses.replace(patch.visual, model=str(resolve_path(patch.visual.model, base)))
    if check_models:
        check_audio_model(audio, source)
        weights = Path(visual.model) / "model.safetensors"
        if not weights.is_file():
            raise PatchError(source, "visual.model", f"model file not found: {weights} (run `make models` to rebuild the defaults)")
    return dataclasses.replace(
        patch, params=MappingProxyType(validate_params(params, source)),
        presets=MappingProxyType(checked_presets), audio=audio, visual=visual, form=form, mods=mods,
        source=source)


def check_audio_model(audio: AudioConfig, source: str) -> None:
    """PatchError naming `audio.model` when its model is missing, or is a TorchScript file the
    patch does not trust (engine/audio/scripted.py)."""
    wrong = not_a_model_line(audio.model)
    if wrong is not None:
        raise PatchError(source, "audio.model", wrong)
    if is_scripted(audio.model):
        if not Path(audio.model).is_file():
            raise PatchError(source, "audio.model", f"model file not found: {audio.model}")
        if not audio.trust:
            raise PatchError(source, "audio.model", trust_line(audio.model))
        return
    weights = Path(audio.model) / "model.safetensors"
    if not weights.is_file():
        raise PatchError(source, "audio.model", f"model file not found: {weights} (run `make models` to rebuild the defaults)")


def patch_table(patch: Patch) -> dict[str, Any]:
    """The patch as plain TOML-writable data (parameters written with their slash names)."""
    table = to_table(patch)
    table.pop("source", None)
    table["params"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in patch.params.items()}
    table["presets"] = {n: {k: (list(v) if isinstance(v, tuple) else v) for k, v in pr.items()}
                        for n, pr in patch.presets.items()}
    table["form"] = form_table(patch.form)
    table.pop("mods", None)
    table["mod"] = mods_table(patch.mods)
    return table


def save_patch(patch: Patch, path: str | Path) -> None:
    """Write a whole patch atomically, from its data (comments are not kept: MIDI learn and preset
    store edit the file in place through `engine.patchwrite.PatchWriter`)."""
    atomic_write(Path(path), dumps_toml(patch_table(patch)))

