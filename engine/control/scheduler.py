"""The installation scheduler: a new sound and a new image every period, inside opening hours.

`Scheduler.tick(now)` is called by the engine on the main thread once per frame with the
monotonic clock (seconds). Scenes fall on a fixed grid, `due = start + k * period`, so the cadence
never drifts however late a frame comes; a scene is fired on the first tick at or after its due
time. The wall clock (epoch seconds, injected) is read only to decide whether the installation is
open: outside the opening hours `master/fade` ramps to 0 (black and silent) and no scenes fire, the
process stays up; at opening time the fade ramps back to 1 and the grid restarts from that moment.

Each scene is either *live* (the scheduler triggers `scene/next`; the audio process and the GAN
worker glide to new latents with the schedule's glide times) or *baked* (a scene from a folder
written by `ciel bake`, handed to the scene listeners, which play its files). In both cases the
scene's seed is never repeated within the last `no_repeat` scenes.

Thread: everything here runs on the main thread; ParamStore is thread-safe, so `tick` may equally
be driven by a timer thread (`start_timer`) for a cadence finer than one frame.
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from ..baked import BakedFolder
from ..configio import resolve_path
from ..errors import PatchError
from ..params import ParamStore
from .config import Hours, ScheduleConfig

log = logging.getLogger("ciel.schedule")

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SOURCE = "schedule"
SEED_SPACE = 2**31 - 1


@dataclass(frozen=True)
class Scene:
    """One scene as fired. `due` and `fired` are monotonic seconds; `audio`/`image` are files of a
    baked scene (None for live scenes, which the engine generates from the latent spaces)."""

    number: int
    id: str
    seed: int
    due: float
    fired: float
    seconds: float
    audio: Path | None = None
    image: Path | None = None
    wav: Path | None = None


@dataclass(frozen=True)
class _Range:
    """Opening hours as minutes since midnight on the opening day; `end` may exceed 1440."""

    days: frozenset[int]
    start: int
    end: int


def _minutes(text: str, source: str, key: str) -> int:
    parts = text.split(":")
    if len(parts) != 2 or not all(p.isdigit() and len(p) == 2 for p in parts):
        raise PatchError(source, key, f"expected a time as HH:MM, got {text!r}")
    h, m = int(parts[0]), int(parts[1])
    if m > 59 or h > 24 or (h == 24 and m != 0):
        raise PatchError(source, key, f"expected a time between 00:00 and 24:00, got {text!r}")
    return h * 60 + m


def parse_hours(hours: tuple[Hours, ...], source: str = "<schedule>") -> tuple[_Range, ...]:
    """Validate opening hours; an `end` at or before `start` means the range runs past midnight."""
    out = []
    for i, h in enumerate(hours):
        key = f"schedule.hours[{i}]"
        start = _minutes(h.start, source, key + ".start")
        end = _minutes(h.end, source, key + ".end")
        if start == 1440:
            raise PatchError(source, key + ".start", "24:00 is only allowed as an end time")
        if end <= start:
            end += 1440
        days = set()
        for d in h.days:
            if d not in DAYS:
                raise PatchError(source, key + ".days", f"expected days among {list(DAYS)}, got {d!r}")
            days.add(DAYS.index(d))
        out.append(_Range(frozenset(days), start, end))
    return tuple(out)


def zone(name: str, source: str = "<schedule>") -> tzinfo:
    """The IANA time zone `name`, or the machine's local zone when empty."""
    if not name:
        local = datetime.now().astimezone().tzinfo
        return local if local is not None else timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise PatchError(source, "schedule.timezone", f"unknown time zone {name!r} (expected e.g. 'Europe/Paris')") from None


def is_open(ranges: tuple[_Range, ...], local: datetime) -> bool:
    """True if the local wall time `local` (aware) falls in any range. No ranges = always open."""
    if not ranges:
        return True
    minute = local.hour * 60 + local.minute + local.second / 60.0
    today = local.weekday()
    yesterday = (today - 1) % 7
    for r in ranges:
        if today in r.days and r.start <= minute < r.end:
            return True
        if r.end > 1440 and yesterday in r.days and minute < r.end - 1440:
            return True
    return False


def baked_folder(value: str, source: str) -> Path:
    """`schedule.baked` as a folder: absolute, or relative to the patch file's folder, then the ciel root."""
    base = Path(source).resolve().parent if source and not source.startswith("<") else Path.cwd()
    return resolve_path(value, base)


SceneListener = Callable[[Scene], None]


class Scheduler:
    """Fires scenes on a drift-free grid inside opening hours and fades outside them.

    config:   the patch's `[schedule]` section.
    store:    the engine's ParamStore (scene/next, glides and master/fade are set with source "schedule").
    clock:    monotonic seconds (injected; tests pass a fake that runs a day in a second).
    rng_seed: seed of the scene order (same seed, same sequence of scenes); `seed` is the same.
    wall:     epoch seconds, read only for the opening hours (injected like `clock`).
    source:   the patch file, named in errors about the schedule.
    timer:    also tick from a timer thread at each due time (scenes within ~1 ms of the grid
              instead of within one frame). None = on when `clock` is time.monotonic; it starts at
              the first `tick`, so a Scheduler made only to validate a patch starts no thread.
    """

    def __init__(self, config: ScheduleConfig, store: ParamStore, clock: Callable[[], float] = time.monotonic,
                 rng_seed: int = 0, wall: Callable[[], float] = time.time, source: str = "<schedule>",
                 seed: int | None = None, timer: bool | None = None) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.wall = wall
        self.period = float(config.period)
        self.ranges = parse_hours(config.hours, source)
        self.tz = zone(config.timezone, source)
        self.baked = BakedFolder.read(baked_folder(config.baked, source), source) if config.baked else None
        self._rng = np.random.default_rng(rng_seed if seed is None else seed)
        pool = len(self.baked.entries) if self.baked is not None else SEED_SPACE
        self._window = min(config.no_repeat, max(pool - 1, 0))
        self._recent: deque[int] = deque(maxlen=self._window or None)
        self._listeners: list[SceneListener] = []
        self._lock = threading.RLock()
        self._timer: threading.Thread | None = None
        self._want_timer = (clock is time.monotonic) if timer is None else timer
        self._stop = threading.Event()
        self.scene: Scene | None = None
        self.scenes = 0
        self.skipped = 0
        self.cadence_error_max = 0.0
        self.open = True
        self.fade = 1.0
        self._fade_from = 1.0
        self._fade_started = -math.inf
        self._start: float | None = None
        self._k = 0
        self._first = True

    # — listeners —
    def add_listener(self, fn: SceneListener) -> None:
        """`fn(scene)` runs after every scene change, on the thread that ticks."""
        self._listeners.append(fn)

    # — the loop —
    @property
    def next_due(self) -> float | None:
        """Monotonic time of the next scene, None while closed or before the first tick."""
        if self._start is None or not self.open:
            return None
        return self._start + self._k * self.period

    def time_to_next(self, now: float | None = None) -> float | None:
        """Seconds until the next scene (>= 0), None while closed."""
        due = self.next_due
        if due is None:
            return None
        now = self.clock() if now is None else now
        return max(0.0, due - now)

    def tick(self, now: float | None = None) -> Scene | None:
        """Advance to monotonic time `now`: opening hours, fade, and the scene if one is due.

        Returns the scene fired by this tick, if any. Main thread (or the timer thread)."""
        now = self.clock() if now is None else now
        if self._want_timer and self._timer is None and threading.current_thread() is threading.main_thread():
            self.start_timer()
        with self._lock:
            self._update_hours(now)
            self._update_fade(now)
            if not self.open:
                return None
            if self._start is None:
                self._start, self._k = now, 0
                self._apply_glides()
            due = self._start + self._k * self.period
            if now < due:
                return None
            late = int((now - due) // self.period)  # whole periods missed (a stall): skip them
            if late:
                self.skipped += late
                self._k += late
                due = self._start + self._k * self.period
                log.warning("scheduler: %d scene(s) skipped after a stall", late)
            self._k += 1
            self.cadence_error_max = max(self.cadence_error_max, now - due)
            scene = self._fire(due, now)
        for fn in tuple(self._listeners):
            fn(scene)
        return scene

    def _fire(self, due: float, now: float) -> Scene:
        self.scenes += 1
        if self.baked is not None:
            i = self._pick(len(self.baked.entries))
            e = self.baked.entries[i]
            scene = Scene(self.scenes, e.id, e.seed, due, now, e.seconds, e.audio, e.image, e.wav)
        else:
            seed = self._pick(SEED_SPACE)
            scene = Scene(self.scenes, f"live-{seed:010d}", seed, due, now, self.period)
        self.scene = scene
        self.store.trigger("scene/next", SOURCE)
        log.info("scene %d: %s", scene.number, scene.id)   # the installation's log says what played when
        return scene

    def _pick(self, pool: int) -> int:
        """A random index in [0, pool) not among the last `no_repeat` picks (uniform over the rest)."""
        banned = sorted(self._recent)
        r = int(self._rng.integers(0, pool - len(banned)))
        for b in banned:  # map r into the gaps between the banned values
            if r >= b:
                r += 1
            else:
                break
        if self._window:
            self._recent.append(r)
        return r

    def _apply_glides(self) -> None:
        self.store.set("audio/glide", self.config.audio_glide, SOURCE)
        self.store.set("image/glide", self.config.image_glide, SOURCE)

    # — opening hours —
    def local_time(self) -> datetime:
        """The wall clock in the schedule's time zone."""
        return datetime.fromtimestamp(self.wall(), tz=self.tz)

    def _update_hours(self, now: float) -> None:
        if not self.ranges:
            return
        is_open_now = is_open(self.ranges, self.local_time())
        if self._first:  # started outside the hours: black and silent at once, no fade-out
            self._first = False
            if not is_open_now:
                self.open, self.fade = False, 0.0
                self.store.set("master/fade", 0.0, SOURCE)
                log.info("scheduler: closed until %s", self.next_change())
                return
        if is_open_now == self.open:
            return
        self.open = is_open_now
        self._fade_from, self._fade_started = self.fade, now
        if is_open_now:
            self._start = None  # the grid restarts at opening time with a scene at once
            log.info("scheduler: opening (%s)", self.local_time().isoformat(timespec="minutes"))
        else:
            log.info("scheduler: closing (%s)", self.local_time().isoformat(timespec="minutes"))

    def _update_fade(self, now: float) -> None:
        if not self.ranges:
            return
        target = 1.0 if self.open else 0.0
        if self.fade == target:
            return
        length = self.config.fade
        t = 1.0 if length <= 0 else min(1.0, max(0.0, (now - self._fade_started) / length))
        value = self._fade_from + (target - self._fade_from) * t
        if t >= 1.0 or abs(value - self.fade) >= 1.0 / 256:
            self.fade = target if t >= 1.0 else value
            self.store.set("master/fade", self.fade, SOURCE)

    def next_change(self, horizon_days: int = 8) -> datetime | None:
        """Local time of the next opening or closing (minute resolution), None if it never changes."""
        if not self.ranges:
            return None
        t = self.local_time().replace(second=0, microsecond=0)
        state = is_open(self.ranges, t)
        minutes = [r.start for r in self.ranges] + [r.end % 1440 for r in self.ranges]
        marks = sorted(set(minutes))
        for _ in range(horizon_days * len(marks) + 1):
            m = t.hour * 60 + t.minute
            j = bisect.bisect_right(marks, m)
            if j < len(marks):
                t = (t + timedelta(minutes=marks[j] - m))
            else:
                t = (t + timedelta(days=1)).replace(hour=0, minute=0)
            t = t.astimezone(self.tz)
            if is_open(self.ranges, t) != state:
                return t
        return None

    # — status —
    def status(self, now: float | None = None) -> dict:
        """JSON-able state for /healthz: scene, time to next scene, open/closed, counters."""
        now = self.clock() if now is None else now
        nxt = self.time_to_next(now)
        change = self.next_change()
        scene = self.scene
        return {
            "scene": scene.id if scene else None,
            "scene_number": self.scenes,
            "next_scene_s": None if nxt is None else round(nxt, 3),
            "open": self.open,
            "fade": round(self.fade, 3),
            "next_change": change.isoformat(timespec="minutes") if change else None,
            "baked": str(self.baked.folder) if self.baked else None,
            "skipped": self.skipped,
            "cadence_error_ms_max": round(self.cadence_error_max * 1000.0, 3),
        }

    # — optional timer thread —
    def start_timer(self) -> None:
        """Tick from a background thread at each due time too, so scenes fire within a millisecond of
        the grid even when frames are slow. Only for a real clock (time.monotonic)."""
        if self._timer is not None or self._stop.is_set():
            return
        self._timer = threading.Thread(target=self._run_timer, name="ciel-scheduler", daemon=True)
        self._timer.start()

    def _run_timer(self) -> None:
        while not self._stop.is_set():
            wait = self.time_to_next()
            self._stop.wait(0.5 if wait is None else min(0.5, wait))
            if self._stop.is_set():
                break
            try:
                self.tick()
            except Exception as exc:  # noqa: BLE001 — e.g. the store closed under us: ticks from the main thread go on
                log.error("scheduler timer stopped: %s: %s", type(exc).__name__, exc)
                break

    def close(self) -> None:
        """Stop the timer thread (if started). `stop` is the same."""
        self._stop.set()
        if self._timer is not None:
            self._timer.join(timeout=2.0)
            self._timer = None

    stop = close
