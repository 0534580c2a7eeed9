"""Model folders: `model.safetensors` (weights) + `card.toml` (architecture, rates, training summary).

Loading reads tensors with safetensors — never pickle, so a model file cannot execute code — and
checks the card. Every failure raises `ModelError` naming the file and what was expected.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from .configio import atomic_write, dumps_toml, read_toml
from .errors import ConfigError, ModelError

WEIGHTS = "model.safetensors"
CARD = "card.toml"


def save_model(folder: str | Path, tensors: Mapping[str, torch.Tensor], card: Mapping[str, Any]) -> Path:
    """Write weights and card atomically into `folder` (created if needed). Returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write(folder / WEIGHTS, save(flat))
    atomic_write(folder / CARD, dumps_toml(dict(card)))
    return folder


def load_model(folder: str | Path, kind: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read `(tensors, card)` from a model folder; the card's `kind` must equal `kind` ("audio"/"image")."""
    folder = Path(folder)
    weights, card_path = folder / WEIGHTS, folder / CARD
    if not weights.is_file():
        raise ModelError(f"{weights}: model file not found (run `make models` to rebuild the defaults)")
    try:
        card = read_toml(card_path)
    except ConfigError as exc:
        raise ModelError(f"{card_path}: {exc.problem}") from None
    if card.get("kind") != kind:
        raise ModelError(f"{card_path}: kind: expected {kind!r}, got {card.get('kind')!r}")
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelError(f"{weights}: not a readable safetensors file ({exc})") from None
    return tensors, card


def card_value(card: Mapping[str, Any], key: str, typ: type, source: str) -> Any:
    """A required card entry of a given type, or ModelError naming the card and the key."""
    if key not in card:
        raise ModelError(f"{source}: {key}: missing from the model card")
    value = card[key]
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, typ) or isinstance(value, bool) and typ is not bool:
        raise ModelError(f"{source}: {key}: expected {typ.__name__}, got {value!r}")
    return value
