"""Image latent navigation and the GAN worker thread that turns it into keyframes.

`ImagePath` is a deterministic walk through the generator's Gaussian latent space: the same seed
and the same parameter values at the same times give the same latents. It reads the image/*
parameters (and scene/next) from the flat value array of engine.params:
- walk: spherical interpolation (slerp) between random waypoints at `image/walk/speed` sigma/s;
- jump: `image/jump` or `scene/next` (trigger counters) pick a new random latent and glide to it
  over `image/glide` seconds;
- hold: `image/hold` freezes the path (time stops for it);
- temperature scales the latent; `image/offset` moves it along the model's knob directions
  (its principal latent directions, most important first, in standard deviations; a model without
  directions: along the first latent dimensions);
- learning: `image/learning` moves the generator's weights along its training snapshots
  (`ImageModel.set_learning`; a model without snapshots ignores it).

`GanWorker` runs the generator in its own process: it advances the paths on its own clock, makes
a keyframe `keyframes_per_s` times a second and publishes it in shared memory; the render thread
takes the newest with `latest()`. Older keyframes are simply overwritten (newest wins), so the
display never waits for the generator. A failure becomes data: `error` holds the message.
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import os
import time

import numpy as np
import torch

from ..params import IMAGE_LATENT_KNOBS, REGISTRY, Registry, SharedSnapshot, check_view
from ..paramview import ParamView
from ..parts import Keyframe
from ..shmblock import BlockLayout, StatusBlock
from ..workerproc import orphaned, start_worker
from .model import ImageModel, compile_generator, load_image_model

log = logging.getLogger(__name__)

COMPILE_AFTER = 5        # keyframes timed eagerly before deciding to compile
COMPILE_ABOVE_MS = 20.0  # compile only a generator needing more CPU per keyframe (default: ~8 ms)


def slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Spherical interpolation between latents (keeps the Gaussian norm); linear if nearly parallel."""
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na < 1e-8 or nb < 1e-8:
        return (1 - t) * a + t * b
    cos = float(np.clip(np.dot(a / na, b / nb), -1.0, 1.0))
    omega = math.acos(cos)
    if omega < 1e-4:
        return (1 - t) * a + t * b
    so = math.sin(omega)
    return (math.sin((1 - t) * omega) / so) * a + (math.sin(t * omega) / so) * b


def _smoothstep(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return x * x * (3 - 2 * x)


class ImagePath:
    """Deterministic latent path for one seed. Called by one thread (the worker, or the offline
    renderer); `step(values, t)` with non-decreasing `t` seconds returns a (latent_dim,) float32.
    `directions` (K, latent_dim): the latent step of one `image/offset` unit along each knob
    (None: knob k adds to latent dimension k)."""

    def __init__(self, latent_dim: int, seed: int, registry: Registry = REGISTRY,
                 directions: np.ndarray | None = None) -> None:
        self.latent_dim = latent_dim
        self.directions = None if directions is None else np.asarray(directions, np.float64)[:IMAGE_LATENT_KNOBS]
        self.rng = np.random.default_rng(seed)
        check_view(registry)   # the typed view reads the registry's layout (a mismatch names the parameter)
        self._a = self._draw()
        self._b = self._draw()
        self._phase = 0.0
        self._t: float | None = None
        self._counters: tuple[float, float] | None = None
        self._glide_from: np.ndarray | None = None
        self._glide_elapsed = 0.0
        self.current = self._a.copy()

    def _draw(self) -> np.ndarray:
        return self.rng.standard_normal(self.latent_dim)

    def jump(self) -> None:
        """Glide from where the path is now to a new random latent."""
        self._glide_from = self.current.copy()
        self._glide_elapsed = 0.0
        self._a, self._b, self._phase = self._draw(), self._draw(), 0.0

    def step(self, values: np.ndarray, t: float) -> np.ndarray:
        """Advance to time `t` (seconds) with parameter targets `values`; returns the latent."""
        dt = 0.0 if self._t is None else min(max(t - self._t, 0.0), 5.0)
        self._t = t
        p = ParamView(values)
        counters = (p.image_jump, p.scene_next)
        if self._counters is not None and counters != self._counters:
            self.jump()
        self._counters = counters
        if p.image_hold < 0.5:
            # per-dimension distance between waypoints is about sqrt(2) sigma
            dist = max(float(np.linalg.norm(self._b - self._a)) / math.sqrt(self.latent_dim), 1e-6)
            self._phase += p.image_walk_speed * dt / dist
            while self._phase >= 1.0:
                self._phase -= 1.0
                self._a, self._b = self._b, self._draw()
            self._glide_elapsed += dt
        walk = slerp(self._a, self._b, self._phase)
        if self._glide_from is not None:
            glide = p.image_glide
            k = 1.0 if glide <= 0 else _smoothstep(self._glide_elapsed / glide)
            walk = slerp(self._glide_from, walk, k)
            if k >= 1.0:
                self._glide_from = None
        self.current = walk
        z = walk * p.image_temperature
        off = np.asarray(p.image_offset, dtype=np.float64)
        if self.directions is not None:
            z += off[:len(self.directions)] @ self.directions  # (K,) @ (K, latent_dim)
        else:
            n = min(IMAGE_LATENT_KNOBS, self.latent_dim)
            z[:n] += off[:n]
        return z.astype(np.float32)


def make_paths(model: ImageModel, seed: int, registry: Registry = REGISTRY) -> tuple[ImagePath, ImagePath]:
    """The front path (seed) and the path of the image behind (seed + 1), with the model's knob directions."""
    return (ImagePath(model.latent_dim, seed, registry, model.directions),
            ImagePath(model.latent_dim, seed + 1, registry, model.directions))


def render_keyframe(model: ImageModel, paths: tuple[ImagePath, ImagePath], values: np.ndarray, t: float,
                    with_back: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Move the generator to `image/learning`, advance both paths to `t` and generate the front
    (and back) image, (R, R, 3) uint8."""
    model.set_learning(ParamView(values).image_learning)
    zf = paths[0].step(values, t)
    zb = paths[1].step(values, t)
    front = model.to_uint8(torch.from_numpy(zf)).numpy()
    back = model.to_uint8(torch.from_numpy(zb)).numpy() if with_back else None
    return front, back


# Layout of the worker's shared block: float64 control words, error text, then SLOTS keyframe slots.
_STOP, _SEQ, _COUNT, _STATE, _RING_POS, _SLOT_SEQ = 0, 1, 2, 3, 4, 5
SLOTS = 3
_SLOT_BACK = _SLOT_SEQ + SLOTS  # 1.0 where the slot holds an image behind (mapping 1)
_FIRST_T, _LAST_T = _SLOT_BACK + SLOTS, _SLOT_BACK + SLOTS + 1  # monotonic times of keyframes 1 and n
_RING = 64
NICE = 5   # the generator process runs at this niceness: the render loop and the audio process come first
_RING_AT = _LAST_T + 1
_N_CTL = _RING_AT + _RING
_ERR_BYTES = 512


def _layout(resolution: int) -> BlockLayout:
    """The generator's status block: control words, the error text, then SLOTS keyframe slots
    of (2, R, R, 3) uint8 (front and back images)."""
    return BlockLayout(slots=_N_CTL, texts=1, text_bytes=_ERR_BYTES, payload_bytes=SLOTS * 2 * resolution * resolution * 3)


class _Block:
    """The generator's StatusBlock with its keyframe slots as arrays (either side)."""

    def __init__(self, resolution: int, name: str | None = None) -> None:
        self.status = StatusBlock(_layout(resolution), name)
        self.ctl = self.status.ctl
        r = resolution
        self.slots = [self.status.payload((2, r, r, 3), np.uint8, offset=i * 2 * r * r * 3) for i in range(SLOTS)]

    @property
    def name(self) -> str:
        return self.status.name

    def set_error(self, text: str) -> None:
        self.status.set_text(0, text)

    def error(self) -> str:
        return self.status.text(0)

    def release(self) -> None:
        del self.ctl, self.slots
        self.status.close()


class GanWorker:
    """Background keyframe producer in its own process (its own GIL: measured here, a generator
    thread beside the render loop got under a tenth of its speed). Methods are called by the
    render thread:

    - `start()`: start the process (engine/workerproc.py; it loads the model: a few seconds); once.
    - `latest()`: the newest Keyframe not yet taken, or None; older ones are never shown.
    - `error`: None, or the one-line reason the generator stopped (the last picture stays up).
    - `stop()`: end the process.

    The process runs at niceness NICE: on a small machine the render loop and the sound (and,
    at a start, the window and the first sound) come before the next keyframe.
    The process reads the parameters itself from the engine's shared snapshot (`snapshot`: its
    shared-memory name, `engine.params.SharedSnapshot.name`), the one every consumer reads: an
    image-latent change reaches it whether or not the window is drawing.
    `slow_s` adds a pause after each keyframe (tests use it to stand in for a slow generator).
    """

    def __init__(self, model: ImageModel, seed: int, snapshot: str, keyframes_per_s: float = 12.0,
                 threads: int = 1, compile: bool = False, slow_s: float = 0.0) -> None:
        self.folder = str(model.folder)
        self.resolution = model.resolution
        self.seed = seed
        self.keyframes_per_s = keyframes_per_s
        self.threads = threads
        self.compile = compile
        self.slow_s = slow_s
        self.snapshot = snapshot
        self.block = _Block(model.resolution)
        self._proc: mp.process.BaseProcess | None = None
        self._taken = 0
        self._final: tuple[int, list[float], str | None, float, float | None] | None = None  # stats kept after stop()

    def start(self) -> None:
        if self._proc is not None:   # started already (the engine starts it early; the window again)
            return
        args = (self.folder, self.resolution, self.seed, self.keyframes_per_s, self.threads, self.compile,
                self.snapshot, self.block.name, self.slow_s)
        self._proc = start_worker(_worker_main, args, "ciel-gan")

    def latest(self) -> Keyframe | None:
        ctl = self.block.ctl
        seq = int(ctl[_SEQ])
        if seq == self._taken or seq == 0:
            return None
        k = seq % SLOTS
        slot = self.block.slots[k]
        with_back = ctl[_SLOT_BACK + k] > 0.5
        front = slot[0].copy()
        back = slot[1].copy() if with_back else None
        if int(ctl[_SLOT_SEQ + k]) != seq:  # overwritten while copying: take the next one
            return None
        self._taken = seq
        return Keyframe(front, back, seq)

    @property
    def pid(self) -> int | None:
        """The generator process's id (None before `start`)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def count(self) -> int:
        """Keyframes made so far."""
        return self._final[0] if self._final else int(self.block.ctl[_COUNT])

    @property
    def times_ms(self) -> list[float]:
        """Generator time of the most recent keyframes (up to 64), ms."""
        if self._final:
            return self._final[1]
        n = min(self.count, _RING)
        return [float(x) for x in self.block.ctl[_RING_AT:_RING_AT + n]]

    @property
    def first_at(self) -> float | None:
        """time.monotonic() when the worker published its first keyframe (None before)."""
        if self._final:
            return self._final[4]
        return float(self.block.ctl[_FIRST_T]) if self.count > 0 else None

    @property
    def rate(self) -> float:
        """Keyframes per second since the first one (0 before the second)."""
        if self._final:
            return self._final[3]
        ctl = self.block.ctl
        span = ctl[_LAST_T] - ctl[_FIRST_T]
        return (self.count - 1) / span if self.count > 1 and span > 0 else 0.0

    @property
    def error(self) -> str | None:
        if self._final:
            return self._final[2]
        text = self.block.error()
        if text:
            return text
        if self._proc is not None and self._proc.exitcode is not None:
            return f"image generator process exited with code {self._proc.exitcode}"
        return None

    def is_alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        if self._final:
            return
        self._final = (self.count, self.times_ms, self.error, self.rate, self.first_at)
        self.block.ctl[_STOP] = 1.0
        if self._proc is not None:
            self._proc.join(timeout)
            if self._proc.is_alive():
                self._proc.terminate()
                self._proc.join(timeout)
        self.block.release()


def _worker_main(folder: str, resolution: int, seed: int, keyframes_per_s: float, threads: int,
                 compile: bool, values_name: str, block_name: str, slow_s: float) -> None:
    """Entry of the generator process: keyframes along the image paths until told to stop."""
    block = _Block(resolution, block_name)  # the parent owns and unlinks it
    snapshot: SharedSnapshot | None = None
    try:   # below the render loop and the sound: on a small machine they come first (a start too)
        os.nice(NICE)
    except OSError:
        pass
    try:
        torch.set_num_threads(threads)
        model = load_image_model(folder)
        snapshot = SharedSnapshot(REGISTRY.size, name=values_name, create=False)
        _produce(model, seed, keyframes_per_s, compile, snapshot, block, slow_s)
    except Exception as exc:  # noqa: BLE001 — any failure becomes the parent's `error` (shown on the overlay)
        block.set_error(f"image generator stopped: {type(exc).__name__}: {exc}"[:_ERR_BYTES - 1])
        block.ctl[_STATE] = 2.0
    finally:
        if snapshot is not None:
            snapshot.close()
        block.release()


def _produce(model: ImageModel, seed: int, keyframes_per_s: float, compile: bool, snapshot: SharedSnapshot,
             block: _Block, slow_s: float) -> None:
    ctl = block.ctl
    paths = make_paths(model, seed)
    values = REGISTRY.defaults()
    view = ParamView(values)
    period = 1.0 / max(keyframes_per_s, 1e-3)
    ctl[_STATE] = 1.0
    next_t = time.monotonic()
    seq = 0
    cpu_ms: list[float] = []  # CPU time of the first keyframes (torch runs on this thread)
    while ctl[_STOP] == 0.0 and not orphaned():   # asked to stop, or the main process ended
        snapshot.read_into(values)
        now = time.monotonic()
        t0, c0 = time.perf_counter(), time.thread_time()
        m = view.sky_mapping
        front, back = render_keyframe(model, paths, values, now, 0.5 <= m < 1.5)
        ms = 1000.0 * (time.perf_counter() - t0)
        if len(cpu_ms) < COMPILE_AFTER:
            cpu_ms.append(1000.0 * (time.thread_time() - c0))
        if slow_s > 0:
            time.sleep(slow_s)
        seq += 1
        k = seq % SLOTS
        ctl[_SLOT_SEQ + k] = -1.0
        slot = block.slots[k]
        slot[0] = front
        if back is not None:
            slot[1] = back
        ctl[_SLOT_BACK + k] = float(back is not None)
        ctl[_SLOT_SEQ + k] = seq
        ctl[_SEQ] = seq
        pos = int(ctl[_RING_POS])
        ctl[_RING_AT + pos] = ms
        ctl[_RING_POS] = (pos + 1) % _RING
        ctl[_COUNT] = seq
        ctl[_LAST_T] = time.monotonic()
        if seq == 1:
            ctl[_FIRST_T] = ctl[_LAST_T]
        if compile and seq == COMPILE_AFTER and not model.compiled:
            # compiling takes 10-20 s of CPU: worth it only for a generator too slow for the rate
            # CPU time, not wall time: on a busy machine waiting for a core is not the model's cost
            if min(cpu_ms) > COMPILE_ABOVE_MS:
                model.generator, model.compiled = compile_generator(model.generator, model.latent_dim,
                                                                    freeze=not model.has_learning)
        next_t = max(next_t + period, time.monotonic())
        time.sleep(max(0.0, next_t - time.monotonic()))
