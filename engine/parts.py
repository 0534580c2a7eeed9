"""The swappable parts of a show, declared: what the wiring (engine/app.py) may plug in where.

Each is a `typing.Protocol`, so a part is anything with these methods; nothing inherits from
them. The wiring builds concrete parts from the patch and hands each one to the parts that use
it, by constructor:

- `KeyframeSource`: where the sky's pictures come from — the generator process
  (`engine.visual.worker.GanWorker`), baked scene images (`engine.scenes.BakedImageWorker`), or
  either behind the supervisor's restartable handle (`engine.supervise.RestartableWorker`).
- `SoundSource`: what the audio process plays — the VAE decoder's synth
  (`engine.audio.stream.AudioSynth`); a clip replaces its sound through `play`.
- `ControlSurface`: a thread that turns the outside world into parameter changes — OSC, OSCQuery,
  MIDI (`engine.control.*`). Started and stopped by the wiring; reports counters in `/healthz`.
- `SupervisedChild`: a worker process the supervisor's watchdog restarts — the generator
  process (the audio process is restarted by its own handle's `poll`, with the same
  `engine.restart.Backoff` policy). Its heartbeat is `count`; a failure is `error` (data).

Threads: each protocol's docstring says who calls what.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Keyframe:
    """One picture from a KeyframeSource. `image` (R, R, 3) uint8; `back` the image behind
    (sky/mapping 1) or None. `seq` counts the source's keyframes from 1 (gaps are keyframes
    nobody took: newest wins)."""

    image: np.ndarray
    back: np.ndarray | None
    seq: int


@runtime_checkable
class SupervisedChild(Protocol):
    """A worker the supervisor watches. `count` grows while it works (its heartbeat); `error` is
    None or the one-line reason it stopped. Called from the main or the supervisor thread."""

    @property
    def count(self) -> int: ...

    @property
    def error(self) -> str | None: ...

    def start(self) -> None: ...

    def stop(self, timeout: float = 5.0) -> None: ...

    def is_alive(self) -> bool: ...


@runtime_checkable
class KeyframeSource(SupervisedChild, Protocol):
    """Pictures for the sky. The render thread calls `latest()` once a frame: the newest keyframe
    not yet taken, or None (never waits). Parameters reach the source through the engine's one
    shared snapshot, not through the render loop, so they keep moving while the window stalls.
    `times_ms`: the time of the most recent keyframes, ms (for the bench and /healthz)."""

    @property
    def times_ms(self) -> list[float]: ...

    def latest(self) -> Keyframe | None: ...


@runtime_checkable
class SoundSource(Protocol):
    """What the audio process plays, blocks of its speakers (stereo by default) at `rate` Hz. Called only by the audio
    process's decode thread: `step(values)` (the smoothed parameter targets, the registry's flat
    layout) returns the next block, float32 (n, channels), already through the safety stage."""

    rate: int

    def step(self, values: np.ndarray) -> np.ndarray: ...

    @property
    def next_out_index(self) -> int:
        """Output frames handed out so far: where the next step's sound starts (the latency probe)."""
        ...

    def play(self, clip: np.ndarray | None, fade_s: float) -> None: ...

    def fade_out(self, seconds: float) -> None: ...

    @property
    def faded_out(self) -> bool: ...

    def panic(self) -> None: ...

    @property
    def panicked(self) -> bool: ...


@runtime_checkable
class ControlSurface(Protocol):
    """A control thread that writes into the ParamStore it was built with. `start()` and `stop()`
    from the main thread; `status()` from any thread (a JSON-able dict for /healthz)."""

    def start(self) -> Any: ...

    def stop(self) -> None: ...

    def status(self) -> dict[str, Any]: ...


__all__ = ["ControlSurface", "Keyframe", "KeyframeSource", "SoundSource", "SupervisedChild"]
