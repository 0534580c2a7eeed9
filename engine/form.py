"""The form: a piece's arc over minutes, as stages that set and glide parameters.

A patch's `[form]` lists stages; each holds its parameter values for `seconds`, having glided
into them from the previous stage's over its first `glide` seconds (raised cosine; whole-number
parameters step at the glide's middle). Parameters a stage does not name keep the value the
previous stages left. The arc the wavenet soundscape was composed with is `ARC`: noise →
babble cloud → a clearer voice → conversation → babble → noise.

```toml
[form]
enabled = true            # live: ciel run / install play it on the engine's clock
loop = true               # after the last stage, start again from the first

[[form.stages]]
name = "noise"
seconds = 60
glide = 20
params = { "audio/learning" = 0.0, "audio/voices" = 1, "audio/dissolve" = 0.5 }
```

`Form.values_at(t)` is a pure function of the time since the form began (seconds), so the live
engine (its injected clock) and `ciel compose` (sample time) play the same arc, and a day runs
in a second in tests. Any thread: a Form is immutable.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from .configio import array_of_tables, build, field
from .errors import PatchError
from .params import REGISTRY, ParamValue, Registry


@dataclass(frozen=True)
class Stage:
    """One stage of the form: its parameter values, held `seconds` (the glide included)."""

    name: str = field("", doc="What the stage is (shown in logs and plots).")
    seconds: float = field(60.0, minimum=0.1, maximum=86400.0, doc="Length of the stage (s), its glide included.")
    glide: float = field(10.0, minimum=0.0, maximum=86400.0, doc="Glide from the previous stage's values (s).")
    params: Mapping[str, ParamValue] = field(None)

    def __post_init__(self) -> None:
        if self.params is None:
            object.__setattr__(self, "params", MappingProxyType({}))


@dataclass(frozen=True)
class FormConfig:
    """The `[form]` section: the stages, and whether the engine plays them live."""

    enabled: bool = field(False, doc="Play the form live on the engine's clock (ciel run, ciel install).")
    loop: bool = field(True, doc="Start again from the first stage after the last.")
    stages: tuple[Stage, ...] = field(())

    def most(self, name: str, default: float) -> float:
        """The highest value any stage gives the scalar parameter `name` (`default` if none does)."""
        return max([float(v) for s in self.stages for k, v in s.params.items()
                    if k == name and not isinstance(v, tuple)] + [default])


def parse_form(table: Any, source: str, validate: Any) -> FormConfig:
    """The `[form]` table of a patch; `validate(values, source, prefix)` checks a stage's
    parameters as the patch's own are checked (names, ranges). Errors name the key and the file."""
    if not isinstance(table, dict):
        raise PatchError(source, "form", "expected a table")
    table = dict(table)
    stages = []
    for key, st in array_of_tables(table.pop("stages", []), source, "form.stages", "name, seconds, glide, params",
                                   PatchError):
        params = st.pop("params", {})
        if not isinstance(params, dict):
            raise PatchError(source, f"{key}.params", "expected a table of parameter values")
        stage = build(Stage, st, source, prefix=key, error=PatchError)
        if stage.glide > stage.seconds:
            raise PatchError(source, f"{key}.glide", f"longer than the stage ({stage.glide:g} > {stage.seconds:g} s)")
        stages.append(dataclasses.replace(stage, params=MappingProxyType(validate(params, source, f"{key}.params"))))
    form = build(FormConfig, table, source, prefix="form", error=PatchError)
    if form.enabled and not stages:
        raise PatchError(source, "form.stages", "an enabled form needs at least one stage")
    return dataclasses.replace(form, stages=tuple(stages))


def form_table(form: FormConfig) -> dict[str, Any]:
    """The form as plain TOML-writable data."""
    return {"enabled": form.enabled, "loop": form.loop,
            "stages": [{"name": s.name, "seconds": s.seconds, "glide": s.glide,
                        "params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in s.params.items()}}
                       for s in form.stages]}


def _ease(a: float) -> float:
    return 0.5 - 0.5 * math.cos(math.pi * min(max(a, 0.0), 1.0))


class Form:
    """Plays a FormConfig: `values_at(t)` → {parameter: value} at `t` seconds into the form, every
    parameter any stage names. `start` holds the values before the first stage (the patch's
    own, else the registry's defaults)."""

    def __init__(self, config: FormConfig, start: Mapping[str, ParamValue] | None = None,
                 registry: Registry = REGISTRY) -> None:
        if not config.stages:
            raise ValueError("a form needs at least one stage")
        self.config = config
        self.registry = registry
        names = sorted({n for s in config.stages for n in s.params})
        self.names = names
        start = start or {}
        # the values each stage glides from and to: every named parameter, carried forward
        before: dict[str, ParamValue] = {n: start.get(n, self._default(n)) for n in names}
        self._ends: list[tuple[dict[str, ParamValue], dict[str, ParamValue]]] = []
        for stage in config.stages:
            after = dict(before)
            after.update(stage.params)
            self._ends.append((before, after))
            before = after
        self._starts = [0.0]
        for stage in config.stages:
            self._starts.append(self._starts[-1] + stage.seconds)
        self.duration = self._starts[-1]

    def _default(self, name: str) -> ParamValue:
        p = self.registry.get(name)
        return p.default if p.size == 1 else tuple([p.default] * p.size)

    def stage_at(self, t: float) -> tuple[int, float]:
        """(stage index, seconds into it) at `t` seconds; past the end the last stage holds, or
        the form starts again when it loops."""
        if self.config.loop and t >= self.duration:
            t = math.fmod(t, self.duration)
        t = max(t, 0.0)
        for i in range(len(self.config.stages)):
            if t < self._starts[i + 1]:
                return i, t - self._starts[i]
        last = len(self.config.stages) - 1
        return last, self.config.stages[last].seconds

    def values_at(self, t: float) -> dict[str, ParamValue]:
        i, into = self.stage_at(t)
        stage = self.config.stages[i]
        a = 1.0 if stage.glide <= 0 else _ease(into / stage.glide)
        frm, to = self._ends[i]
        if i == 0 and self.config.loop and t >= self.duration:   # a loop glides on from the last stage
            frm = self._ends[-1][1]
        out: dict[str, ParamValue] = {}
        for name in self.names:
            x, y = frm[name], to[name]
            if isinstance(x, tuple) or isinstance(y, tuple):
                xs = x if isinstance(x, tuple) else (x,) * len(y)   # type: ignore[arg-type]
                ys = y if isinstance(y, tuple) else (y,) * len(xs)
                out[name] = tuple(u + (v - u) * a for u, v in zip(xs, ys))
            elif self.registry.get(name).kind in ("int", "bool"):
                out[name] = y if into >= 0.5 * stage.glide else x
            else:
                out[name] = x + (y - x) * a
        return out


def _stage(name: str, share: float, **params: float) -> tuple[str, float, dict[str, float]]:
    return name, share, {k.replace("__", "/"): v for k, v in params.items()}


# The wavenet soundscape's arc: (name, share of the whole, parameters). Noise is the untrained
# decoder with dissolve; babble a dense cloud of short grains; a clearer voice the trained pair
# alone, close and dry; conversation a few voices with long grains, apart.
_ARC = (
    _stage("noise", 0.14, audio__learning=0.0, audio__dissolve=0.5, audio__voices=1, audio__reverb__send=0.35,
           audio__cloud__density=0.6, audio__cloud__grain=1.0, audio__width=0.9),
    _stage("babble", 0.2, audio__learning=0.7, audio__dissolve=0.1, audio__voices=10, audio__reverb__send=0.3,
           audio__cloud__density=0.8, audio__cloud__grain=0.5, audio__cloud__spread=1.5, audio__width=0.8),
    _stage("a clearer voice", 0.16, audio__learning=1.0, audio__dissolve=0.0, audio__voices=1,
           audio__reverb__send=0.15, audio__width=0.3),
    _stage("conversation", 0.2, audio__learning=1.0, audio__dissolve=0.0, audio__voices=3, audio__reverb__send=0.2,
           audio__cloud__density=0.5, audio__cloud__grain=3.0, audio__cloud__spread=0.8, audio__width=0.5),
    _stage("babble", 0.16, audio__learning=0.7, audio__dissolve=0.1, audio__voices=10, audio__reverb__send=0.3,
           audio__cloud__density=0.8, audio__cloud__grain=0.5, audio__cloud__spread=1.5, audio__width=0.8),
    _stage("noise", 0.14, audio__learning=0.0, audio__dissolve=0.5, audio__voices=1, audio__reverb__send=0.4,
           audio__cloud__density=0.6, audio__cloud__grain=1.0, audio__width=0.9),
)
ARC_VOICES = 10   # the most voices the arc asks for


def arc(seconds: float, loop: bool = False) -> FormConfig:
    """The built-in arc stretched over `seconds`; each stage glides in over a third of its length."""
    stages = tuple(Stage(name=n, seconds=share * seconds, glide=share * seconds / 3.0, params=MappingProxyType(p))
                   for n, share, p in _ARC)
    return FormConfig(enabled=True, loop=loop, stages=stages)
