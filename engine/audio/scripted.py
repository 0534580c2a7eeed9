"""TorchScript audio models: RAVE exports (`rave export --streaming`) and nn~ exports, ciel's own
(`ciel export --nn-tilde`) or anyone's, played through ciel's latent navigation, safety stage and
audio process.

A TorchScript file carries code, and loading it runs that code. ciel loads one only when the user
says so (`[audio] trust = true` in the patch, or `--trust-model`), with a one-line warning;
otherwise `load_scripted(path, trust=False)` raises ModelError saying why. Models in ciel's own
format (safetensors + card) are data and need no trust.

What ciel reads from the file (nn~'s convention, which RAVE follows):

    decode_params  (4,) int   [latent channels D, latent ratio (hop), audio channels C, 1]
    sr or sampling_rate  int  the model's sample rate (Hz)
    decode(z)      z (B, D, T) -> (B, C, T · hop)   streaming: consecutive calls continue
    encode(x)      x (B, C, L) -> (B, D, L / hop)   (not used live)

A streaming RAVE export keeps each convolution's left context inside the module (cached_conv
buffers, up to 64 batch rows), so every stream loads its own copy of the module from the file's
bytes. Each voice is mono: a model with C > 1 audio channels is heard as their mean, and ciel's
own voices and speakers make the space. RAVE's decode fills the latent dimensions the export
dropped with noise from torch's generator; a stream runs it on its own seeded generator state, so
the same seed gives the same sound.

Threads: a stream is called from the audio process's decode loop, or the renderer's thread; never
from the sound callback.
"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import ModelError
from .config import is_scripted, trust_line

__all__ = ["ScriptedModel", "ScriptedStream", "is_scripted", "load_scripted", "trust_line"]

MAX_BATCH = 64           # cached_conv keeps state for at most this many rows


@dataclass(frozen=True)
class ScriptedModel:
    """A TorchScript audio model's bytes and the shapes read from it.

    sample_rate (Hz); hop: audio samples per latent frame; latent_dim: D; channels: the model's
    audio channels C; kind: "rave" or "nn~" (what the file says it is, for cards and logs).
    """

    path: Path
    data: bytes = field(repr=False)
    sample_rate: int
    hop: int
    latent_dim: int
    channels: int
    kind: str

    def module(self) -> torch.jit.ScriptModule:
        """A fresh copy of the module (its own streaming state), in eval mode."""
        m = torch.jit.load(io.BytesIO(self.data), map_location="cpu")
        m.eval()
        return m

    def stream(self, batch: int, seed: int = 0) -> ScriptedStream:
        return ScriptedStream(self, batch, seed)

    def decode(self, z: np.ndarray, seed: int = 0) -> np.ndarray:
        """Offline: latent (D, T) -> audio (T · hop,) float32, from silence."""
        return self.stream(1, seed)(np.asarray(z, np.float32)[None])[0, 0]


class ScriptedStream:
    """Streaming decode of a ScriptedModel for `batch` voices (a LatentStream, like NumpyStream).

    `__call__(z (B, D, T), classes)` -> (B, 1, T · hop) float32; `classes` is ignored (the file has
    no conditioning ciel knows of). Its noise comes from a generator seeded with `seed`.
    """

    def __init__(self, model: ScriptedModel, batch: int, seed: int = 0) -> None:
        if not 1 <= batch <= MAX_BATCH:
            raise ModelError(f"{model.path}: {batch} voices: a streaming TorchScript model plays 1 to {MAX_BATCH}")
        self.model = model
        self.batch = batch
        self.hop = model.hop
        self.seed = seed
        self.reset()

    def reset(self) -> None:
        """Forget the left contexts (a fresh copy of the module) and restart the noise."""
        self.module = self.model.module()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self._rng = torch.get_rng_state()

    def weights_moved(self) -> None:
        """A TorchScript model has no learning axis: nothing to redo."""

    def save(self) -> list[tuple[np.ndarray, ...]]:
        raise ModelError(f"{self.model.path}: a TorchScript model has no learning axis to move")

    def restore(self, saved: list[tuple[np.ndarray, ...]]) -> None:
        raise ModelError(f"{self.model.path}: a TorchScript model has no learning axis to move")

    @torch.inference_mode()
    def __call__(self, z: np.ndarray, classes: np.ndarray | None = None) -> np.ndarray:
        """z (B, D, T) -> audio (B, 1, T · hop) float32 (non-finite samples become 0)."""
        x = torch.from_numpy(np.ascontiguousarray(z, np.float32))               # (B, D, T)
        # torch's generator is the process's: the stream swaps its own state in and out, so two
        # streams must not decode at once on two threads (ciel decodes on one thread per process)
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self._rng)
            y = self.module.decode(x)                                             # (B, C, T·hop)
            self._rng = torch.get_rng_state()
        y = y.mean(dim=1, keepdim=True) if y.shape[1] > 1 else y                # (B, 1, T·hop)
        return np.nan_to_num(y.numpy().astype(np.float32, copy=False), nan=0.0, posinf=0.0, neginf=0.0)


def _int_attr(m: torch.jit.ScriptModule, names: tuple[str, ...]) -> int | None:
    for name in names:
        if hasattr(m, name):
            value = getattr(m, name)
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                value = value.item()
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return int(value)
    return None


def load_scripted(path: str | Path, trust: bool) -> ScriptedModel:
    """Read a TorchScript audio model, checking what ciel needs of it by calling `decode` once.

    Raises ModelError naming the file: refused without `trust`, unreadable, or without the
    methods and attributes of an nn~ / RAVE export."""
    path = Path(path)
    if not trust:
        raise ModelError(trust_line(path))
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the model file ({exc.strerror or exc})") from None
    print(f"ciel: loading TorchScript model {path}: trusted, it runs code from the file", file=sys.stderr, flush=True)
    try:
        m = torch.jit.load(io.BytesIO(data), map_location="cpu")
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: not a TorchScript file torch can load ({first})") from None
    if not hasattr(m, "decode") or not hasattr(m, "decode_params"):
        raise ModelError(f"{path}: expected an nn~ / RAVE export with a `decode` method and `decode_params`")
    params = m.decode_params
    if not isinstance(params, torch.Tensor) or params.numel() != 4:
        raise ModelError(f"{path}: decode_params: expected 4 integers [latent dims, ratio, channels, 1], got {params!r}")
    dims, hop, channels, out_ratio = (int(v) for v in params.tolist())
    if dims < 1 or hop < 1 or channels < 1 or out_ratio != 1:
        raise ModelError(f"{path}: decode_params: expected [latent dims ≥ 1, ratio ≥ 1, channels ≥ 1, 1], "
                         f"got {params.tolist()}")
    rate = _int_attr(m, ("sr", "sampling_rate"))
    if rate is None or not 8000 <= rate <= 192000:
        raise ModelError(f"{path}: expected the sample rate as `sr` or `sampling_rate` (8000-192000 Hz), got {rate!r}")
    kind = "nn~" if hasattr(m, "sampling_rate") else "rave"
    try:
        with torch.inference_mode(), torch.random.fork_rng(devices=[]):
            y = m.decode(torch.zeros(1, dims, 2))                                  # (1, C, 2·hop)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "RuntimeError"
        raise ModelError(f"{path}: decode of a (1, {dims}, 2) latent failed ({first})") from None
    if not isinstance(y, torch.Tensor) or tuple(y.shape) != (1, channels, 2 * hop):
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ModelError(f"{path}: decode of a (1, {dims}, 2) latent gave {got}; decode_params say (1, {channels}, {2 * hop})")
    return ScriptedModel(path, data, rate, hop, dims, channels, kind)
