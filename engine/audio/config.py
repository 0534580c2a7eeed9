"""The `[audio]` section of a patch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..configio import field

SUFFIXES = (".ts", ".pt", ".torchscript")


def is_scripted(path: str | Path) -> bool:
    """Is `path` a TorchScript file (by its suffix), rather than one of ciel's model folders?"""
    return Path(path).suffix.lower() in SUFFIXES


def not_a_model_line(path: str | Path) -> str | None:
    """Why `path` cannot be an audio model at all (a file that is not TorchScript), or None."""
    p = Path(path)
    if p.is_file() and not is_scripted(p):
        return (f"{p}: expected a model folder (model.safetensors + card.toml) or a TorchScript file "
                f"({', '.join(SUFFIXES)})")
    return None


def trust_line(path: str | Path) -> str:
    """Why a TorchScript model was refused: one line naming the file and the way to accept it."""
    return (f"{path}: a TorchScript model runs code from the file when it loads; ciel loads it only "
            f"when you trust it: `trust = true` in [audio] or --trust-model")


@dataclass(frozen=True)
class AudioConfig:
    """Audio output settings. Paths are resolved by `engine.patch` (relative to the patch file)."""

    model: str = field("models/audio-default", doc="Folder with model.safetensors and card.toml, or a TorchScript "
                                                   "file (a RAVE or nn~ export, .ts), which needs `trust`.")
    trust: bool = field(False, doc="Load `model` when it is a TorchScript file: loading one runs code from the "
                                   "file, so ciel does it only when you say so (--trust-model).")
    output: str = field("auto", choices=("auto", "none"), doc="'none' runs without a sound device.")
    device: str = field("", doc="Output device, by name substring; empty = the host's default.")
    samplerate: int = field(48000, minimum=8000, maximum=192000, doc="Device sample rate (Hz).")
    blocksize: int = field(64, minimum=16, maximum=8192, doc="Device block (frames per callback; JACK's period).")
    ahead_ms: float = field(1.0, minimum=1.0, maximum=500.0,
                            doc="How far decoding runs ahead of the output (ms), at least one block. The audio "
                                "process raises it to whole blocks that outlast 1.5 decode steps as this machine "
                                "runs them (a RAVE export's frames are dear).")
    ahead_max_ms: float = field(0.0, minimum=0.0, maximum=500.0,
                                doc="Adaptive run-ahead: after an underflow it grows by 1 ms, up to this (ms), "
                                    "and shrinks back by 0.5 ms per 30 s without one. At or below ahead_ms "
                                    "(the default, 0): fixed at ahead_ms.")
    voices: int = field(1, minimum=1, maximum=16,
                        doc="Decoder voices made ready: the stereo pair and voices - 1 mono voices of the cloud, "
                            "decoded as one batch (each costs; `audio/voices` plays up to this many).")
    channels: int = field(2, minimum=1, maximum=32,
                          doc="Speakers: 2 is stereo; more places the voices over N speakers in `layout`, "
                              "equal-power between neighbours (engine/audio/speakers.py).")
    channel_offset: int = field(0, minimum=0, maximum=64,
                                doc="Output channels left silent before ciel's first speaker (a sound card's "
                                    "outputs 3-10 are channel_offset = 2, channels = 8).")
    layout: str = field("ring", choices=("ring", "line"),
                        doc="With 3 or more speakers: 'ring' around the listener, numbered clockwise from the "
                            "front; 'line' in a row from left to right. Two speakers are always a row.")
    threads: int = field(1, minimum=1, maximum=64, doc="Torch and numpy BLAS threads in the audio process.")
    realtime: bool = field(True, doc="Raise the audio process's priority (SCHED_FIFO when allowed, else nice).")
    record: str = field("", doc="Also write the output to this WAV file.")
    input: str = field("", doc="Listen to an input too (listen/*): on JACK the output port to connect to ciel:in_1 "
                               "(e.g. system:capture_1; '-' opens ciel:in_1 for a patchbay), elsewhere any text opens "
                               "the device's first input channel. Empty: ciel hears only itself.")
    seed: int = field(0, minimum=0, doc="Seed of the latent walk (0 = from the clock).")
