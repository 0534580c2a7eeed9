"""The learning axis: a network's weights moved live along the snapshots of its own training.

A training run keeps snapshots of its networks from step 0 (the untrained net) to the last step
(`engine.train.loop` writes them into RUN/snapshots/ at doubling training times: 0, 5, 10, 20,
40 s … and at the end). `ciel export` puts a chosen set into the model file; the runtime then
moves the playing network along them with `audio/learning` or `image/learning`:
0 = the untrained net, 1 = the final one, in between a linear interpolation of the weights of the
two neighbouring snapshots. Snapshots sit at equal steps of the knob (their training times
double), so the knob spends as long on the first seconds of learning, where the sound and the
picture change most, as on the last minutes.

Storage (in the model's safetensors file, beside the final weights):
    learning.{i}.{key}   float16 copy of state-dict entry `key` of snapshot i (i = 0 … n-2);
                         snapshot n-1 is the final weights, stored once, in float32, as `key`
                         itself (so learning = 1 plays exactly the exported model)
and in the card: `[learning] steps = [...]  seconds = [...]` (training step and time of each).

`WeightMorph(module, snapshots)` writes the interpolated weights into the module's own parameter
tensors in place, so whatever holds the module (a streaming decoder with its left contexts, a
compiled generator) keeps its state across a morph: moving the knob never restarts a stream.
Called from the thread that runs the module (the audio decode loop, the generator process).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from .errors import ModelError

PREFIX = "learning."


def pick(count: int, want: int) -> list[int]:
    """Indices of `want` snapshots spread evenly over `count` (first and last always in)."""
    if count <= 0:
        return []
    want = max(1, min(want, count))
    if want == 1:
        return [count - 1]
    return sorted({round(i * (count - 1) / (want - 1)) for i in range(want)})


def pack(snapshots: Sequence[Mapping[str, Tensor]], keys: Sequence[str]) -> dict[str, Tensor]:
    """Snapshots (each a state dict holding `keys`; the last one the final weights, which the
    model file holds already and which is not stored again) -> flat float16 tensors."""
    out: dict[str, Tensor] = {}
    for i, state in enumerate(snapshots[:-1]):
        for key in keys:
            out[f"{PREFIX}{i}.{key}"] = state[key].detach().to("cpu", torch.float16).contiguous()
    return out


def unpack(tensors: Mapping[str, Tensor], final: Mapping[str, Tensor], count: int,
           source: str) -> list[dict[str, Tensor]]:
    """The `count` snapshots of a model file: `count - 1` read from `tensors` and checked against
    the shapes of `final` (the model's own state dict, float32), then `final` itself. ModelError
    naming `source` and the tensor when one is missing or wrong. count < 2: no learning axis."""
    if count < 2:
        return []
    reference = final
    snaps: list[dict[str, Tensor]] = []
    for i in range(count - 1):
        state: dict[str, Tensor] = {}
        for key, ref in reference.items():
            name = f"{PREFIX}{i}.{key}"
            if name not in tensors:
                raise ModelError(f"{source}: tensor {name!r} missing (the card lists {count} learning snapshots)")
            t = tensors[name]
            if tuple(t.shape) != tuple(ref.shape):
                raise ModelError(f"{source}: tensor {name!r}: expected shape {tuple(ref.shape)}, got {tuple(t.shape)}")
            t = t.float()
            if not torch.isfinite(t).all():
                raise ModelError(f"{source}: tensor {name!r} holds NaN or infinite values")
            state[key] = t
        snaps.append(state)
    snaps.append({k: v.detach().float() for k, v in final.items()})
    return snaps


def card_steps(card: Mapping[str, object], source: str) -> list[int]:
    """The training steps of a model card's `[learning]` table (empty: no learning axis, also
    for a single snapshot); ModelError naming `source` when the table is malformed."""
    table = card.get("learning")
    if table is None:
        return []
    if not isinstance(table, dict):
        raise ModelError(f"{source}: learning: expected a table with steps and seconds")
    steps = table.get("steps")
    if not isinstance(steps, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in steps):
        raise ModelError(f"{source}: learning.steps: expected a list of training steps, got {steps!r}")
    return steps if len(steps) >= 2 else []


def stored_keys(tensors: Mapping[str, Tensor]) -> set[str]:
    """Names of the learning tensors in a model file (to tell them from unexpected ones)."""
    return {k for k in tensors if k.startswith(PREFIX)}


class WeightMorph:
    """Interpolates a module's floating-point parameters and buffers between snapshots, in place.

    snapshots: state dicts (float32, CPU) of the module at rising training times, the last one
    the final weights. `set(learning)` with learning in [0, 1]; returns True when the weights
    changed. Cost: one lerp over the weights (about 0.3 ms for the 0.26 M-parameter audio
    decoder), only when the value moves by more than `tolerance`.
    """

    def __init__(self, module: nn.Module, snapshots: Sequence[Mapping[str, Tensor]], tolerance: float = 1e-4) -> None:
        self.module = module
        self.count = len(snapshots)
        self.tolerance = tolerance
        own = dict(module.state_dict(keep_vars=True))
        self.keys = [k for k, v in own.items() if torch.is_floating_point(v) and all(k in s for s in snapshots)
                     and self.count >= 2]
        self.targets = [own[k].data if isinstance(own[k], nn.Parameter) else own[k] for k in self.keys]
        # (n, ...) stacks per tensor: one indexed lerp per tensor when the knob moves
        self.stacks = [torch.stack([s[k].to(t.dtype) for s in snapshots]) for k, t in zip(self.keys, self.targets)]
        self.value = math.nan

    @property
    def available(self) -> bool:
        return self.count >= 2

    def position(self, learning: float) -> tuple[int, float]:
        """(lower snapshot index, fraction towards the next) for a knob value in [0, 1]."""
        x = min(1.0, max(0.0, float(learning))) * (self.count - 1)
        i = min(int(math.floor(x)), self.count - 2)
        return i, x - i

    def moves(self, learning: float) -> bool:
        """Would `set(learning)` change the weights?"""
        return self.available and not abs(learning - self.value) <= self.tolerance   # NaN: never set yet

    @torch.no_grad()
    def set(self, learning: float) -> bool:
        """Write the weights for `learning` into the module (no-op without two snapshots)."""
        if not self.moves(learning):
            return False
        i, frac = self.position(learning)
        for target, stack in zip(self.targets, self.stacks):
            torch.lerp(stack[i], stack[i + 1], frac, out=target)
        self.value = float(learning)
        return True
