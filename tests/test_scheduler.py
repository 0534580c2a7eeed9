"""The installation scheduler with an injected clock: a day runs in well under a second.

What a visitor would notice: a new scene every period with no drift, no scene coming back too soon,
and the room dark and silent outside the opening hours, across midnight and across a DST change.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from engine.control.config import Hours, ScheduleConfig
from engine.control.scheduler import Scheduler, is_open, parse_hours
from engine.errors import ConfigError, PatchError
from engine.params import ParamStore
from engine.patch import load_patch

PARIS = ZoneInfo("Europe/Paris")


class FakeClock:
    """Monotonic seconds and the wall clock moving together; starts at a given local time."""

    def __init__(self, wall_start: datetime) -> None:
        self.t = 1000.0  # monotonic clocks do not start at zero
        self.wall0 = wall_start.timestamp() - self.t

    def __call__(self) -> float:
        return self.t

    def wall(self) -> float:
        return self.wall0 + self.t


def make(cfg: ScheduleConfig, start: datetime, seed: int = 7) -> tuple[Scheduler, FakeClock, ParamStore]:
    clock = FakeClock(start)
    store = ParamStore()
    return Scheduler(cfg, store, clock=clock, rng_seed=seed, wall=clock.wall), clock, store


def test_cadence_over_a_day_has_no_drift():
    """24 h at 30 s: each scene within 10 ms of start + k*period, however late each tick comes."""
    sched, clock, store = make(ScheduleConfig(period=30.0), datetime(2026, 5, 4, 12, tzinfo=PARIS))
    rng = np.random.default_rng(1)
    start = clock.t
    fired = [sched.tick(clock.t).fired]
    end = start + 24 * 3600
    while clock.t < end:
        # a timer that wakes a little late (0-8 ms), plus a few frame ticks in between
        for _ in range(3):
            clock.t += float(rng.uniform(0.0, sched.time_to_next(clock.t) or 0.0))
            sched.tick(clock.t)
        clock.t += sched.time_to_next(clock.t) + float(rng.uniform(0.0, 0.008))
        scene = sched.tick(clock.t)
        assert scene is not None
        fired.append(scene.fired)
    fired = np.array(fired)
    k = np.arange(len(fired))
    error = fired - (start + k * 30.0)
    assert len(fired) == 2880 + 1
    assert error.min() >= 0.0 and error.max() < 0.010, f"cadence error up to {error.max() * 1000:.3f} ms"
    assert sched.cadence_error_max < 0.010
    assert store.get1("scene/next") == len(fired)  # the engine saw every scene


def test_frame_ticks_keep_the_grid():
    """Ticked once per frame (60 fps with jitter), scenes stay on the grid: error below one frame,
    and the 120th scene is due exactly 120 periods after the first (a `now + period` timer would drift)."""
    sched, clock, _ = make(ScheduleConfig(period=1.0), datetime(2026, 5, 4, 12, tzinfo=PARIS))
    rng = np.random.default_rng(2)
    start = clock.t
    scenes = []
    while clock.t < start + 120.0:
        clock.t += 1 / 60 + float(rng.uniform(0, 0.004))
        scene = sched.tick(clock.t)
        if scene:
            scenes.append(scene)
    assert len(scenes) == 120
    assert scenes[-1].due - scenes[0].due == pytest.approx(119.0, abs=1e-9)
    assert max(s.fired - s.due for s in scenes) < 1 / 60 + 0.004 + 1e-9


def test_stall_skips_missed_scenes_instead_of_bursting():
    sched, clock, store = make(ScheduleConfig(period=30.0), datetime(2026, 5, 4, 12, tzinfo=PARIS))
    sched.tick(clock.t)
    clock.t += 95.0  # the machine froze for three periods
    scene = sched.tick(clock.t)
    assert scene is not None and sched.skipped == 2
    assert sched.tick(clock.t + 0.1) is None  # no burst of catch-up scenes
    assert store.get1("scene/next") == 2
    assert sched.time_to_next(clock.t) == pytest.approx(120.0 - 95.0)


def bake_stub(folder: Path, n: int) -> Path:
    """A baked folder with n scenes (tiny placeholder files; the scheduler only names them)."""
    folder.mkdir(parents=True, exist_ok=True)
    scenes = []
    for i in range(n):
        sid = f"s{i + 1:04d}"
        for ext in ("ogg", "png"):
            (folder / f"{sid}.{ext}").write_bytes(b"x")
        scenes.append({"id": sid, "seed": 100 + i, "audio": f"{sid}.ogg", "image": f"{sid}.png", "seconds": 8.0})
    (folder / "index.json").write_text(json.dumps({"version": 1, "scenes": scenes}))
    return folder


def test_baked_scenes_never_repeat_within_the_window(tmp_path):
    folder = bake_stub(tmp_path / "baked", 12)
    cfg = ScheduleConfig(period=30.0, no_repeat=8, baked=str(folder))
    sched, clock, _ = make(cfg, datetime(2026, 5, 4, 12, tzinfo=PARIS))
    ids = []
    for _ in range(500):
        scene = sched.tick(clock.t)
        ids.append(scene.id)
        assert scene.image is not None and scene.image.name == f"{scene.id}.png"
        clock.t += 30.0
    for i in range(len(ids) - 8):
        window = ids[i:i + 9]
        assert len(set(window)) == 9, f"a scene repeated within 8 scenes: {window}"
    assert set(ids) == {f"s{i + 1:04d}" for i in range(12)}  # every scene is played
    # same seed, same order
    again, clock2, _ = make(cfg, datetime(2026, 5, 4, 12, tzinfo=PARIS))
    assert [again.tick(clock2.t + 30.0 * i).id for i in range(50)] == ids[:50]


def test_window_larger_than_the_folder_still_plays(tmp_path):
    folder = bake_stub(tmp_path / "baked", 3)
    sched, clock, _ = make(ScheduleConfig(no_repeat=50, baked=str(folder)), datetime(2026, 5, 4, 12, tzinfo=PARIS))
    ids = [sched.tick(clock.t + 30.0 * i).id for i in range(30)]
    assert all(len(set(ids[i:i + 3])) == 3 for i in range(28))


def run_hours(cfg: ScheduleConfig, start: datetime, hours: float, step: float = 10.0):
    """Tick every `step` s for `hours`; returns (scheduler, store, [(utc time, open)] at each change)."""
    sched, clock, store = make(cfg, start)
    changes = []
    state = None
    end = clock.t + hours * 3600
    while clock.t < end:
        sched.tick(clock.t)
        if sched.open != state:
            state = sched.open
            changes.append((datetime.fromtimestamp(clock.wall(), timezone.utc), state))
        clock.t += step
    return sched, store, changes


def test_hours_across_midnight():
    """Open Fri and Sat 22:00-02:00: open until 02:00 on Saturday and Sunday mornings, closed between."""
    cfg = ScheduleConfig(period=60.0, fade=5.0, timezone="Europe/Paris",
                         hours=(Hours(days=("fri", "sat"), start="22:00", end="02:00"),))
    # Thursday 2026-05-07 20:00 local (UTC+2) to Monday
    sched, store, changes = run_hours(cfg, datetime(2026, 5, 7, 20, tzinfo=PARIS), 4 * 24)
    local = [(t.astimezone(PARIS).strftime("%a %H:%M"), s) for t, s in changes]
    assert local == [("Thu 20:00", False), ("Fri 22:00", True), ("Sat 02:00", False),
                     ("Sat 22:00", True), ("Sun 02:00", False)]
    assert store.get1("master/fade") == 0.0  # closed now: black and silent
    # 2 nights x 4 h x 60 scenes/h (+1 at each opening)
    assert sched.scenes == 2 * 4 * 60 + 0


def test_hours_across_a_dst_change():
    """Open 10:00-18:00 local, daily, in Paris across the spring change (29 March 2026, 02:00 → 03:00):
    Saturday opens at 09:00 UTC, Sunday at 08:00 UTC — always 10:00 on the wall."""
    cfg = ScheduleConfig(period=600.0, timezone="Europe/Paris", hours=(Hours(start="10:00", end="18:00"),))
    _, _, changes = run_hours(cfg, datetime(2026, 3, 28, 9, tzinfo=PARIS), 48, step=60.0)
    utc = [(t.strftime("%a %H:%M"), s) for t, s in changes]
    assert utc == [("Sat 08:00", False), ("Sat 09:00", True), ("Sat 17:00", False),
                   ("Sun 08:00", True), ("Sun 16:00", False)]


def test_night_hours_across_the_autumn_dst_change():
    """Open 22:00-04:00 across 25 October 2026 (03:00 → 02:00): that night lasts 7 real hours."""
    cfg = ScheduleConfig(period=600.0, timezone="Europe/Paris", hours=(Hours(days=("sat",), start="22:00", end="04:00"),))
    _, _, changes = run_hours(cfg, datetime(2026, 10, 24, 21, tzinfo=PARIS), 10, step=60.0)
    (t_open, s1), (t_close, s2) = [(t, s) for t, s in changes if s is not None][1:3]
    assert (s1, s2) == (True, False)
    assert (t_close - t_open).total_seconds() == 7 * 3600
    assert t_close.astimezone(PARIS).strftime("%H:%M") == "04:00"


def test_closing_fades_to_black_and_silence_then_opening_fades_back():
    cfg = ScheduleConfig(period=30.0, fade=5.0, timezone="UTC", hours=(Hours(start="09:00", end="17:00"),))
    sched, clock, store = make(cfg, datetime(2026, 6, 1, 16, 59, 50, tzinfo=timezone.utc))
    fades = []
    for _ in range(200):  # 20 s at 10 Hz across closing time
        sched.tick(clock.t)
        fades.append(store.get1("master/fade"))
        clock.t += 0.1
    assert fades[0] == 1.0 and fades[-1] == 0.0
    assert all(b <= a for a, b in zip(fades, fades[1:])), "the fade-out must be monotonic"
    ramp = [f for f in fades if 0.0 < f < 1.0]
    assert 30 <= len(ramp) <= 50, "about 5 s of ramp at 10 Hz"
    assert sched.time_to_next() is None and sched.status()["open"] is False
    assert sched.status()["next_change"].startswith("2026-06-02T09:00")
    scenes_closed = sched.scenes
    clock.t += 16 * 3600  # to 09:00:10 the next morning
    scene = sched.tick(clock.t)
    assert scene is not None and sched.scenes == scenes_closed + 1  # a new scene at opening
    clock.t += 5.0
    sched.tick(clock.t)
    assert store.get1("master/fade") == 1.0


def test_started_outside_hours_is_dark_at_once():
    cfg = ScheduleConfig(timezone="UTC", hours=(Hours(start="09:00", end="17:00"),))
    sched, clock, store = make(cfg, datetime(2026, 6, 1, 3, 0, tzinfo=timezone.utc))
    assert sched.tick(clock.t) is None
    assert store.get1("master/fade") == 0.0 and sched.scenes == 0


def test_always_open_never_touches_master_fade():
    sched, clock, store = make(ScheduleConfig(), datetime(2026, 6, 1, 3, tzinfo=timezone.utc))
    store.set("master/fade", 0.5, "osc")
    for i in range(100):
        sched.tick(clock.t + i)
    assert store.get1("master/fade") == 0.5


def test_is_open_edges():
    ranges = parse_hours((Hours(days=("mon",), start="22:00", end="24:00"), Hours(days=("tue",), start="00:00", end="01:30")))
    at = lambda d, h, m: datetime(2026, 6, d, h, m, tzinfo=timezone.utc)  # 2026-06-01 is a Monday
    assert not is_open(ranges, at(1, 21, 59))
    assert is_open(ranges, at(1, 22, 0)) and is_open(ranges, at(1, 23, 59)) and is_open(ranges, at(2, 1, 29))
    assert not is_open(ranges, at(2, 1, 30))


@pytest.mark.parametrize("hours, key", [
    (Hours(start="25:00"), "schedule.hours[0].start"),
    (Hours(end="9"), "schedule.hours[0].end"),
    (Hours(start="24:00", end="02:00"), "schedule.hours[0].start"),
])
def test_bad_hours_name_the_key(hours, key):
    with pytest.raises(PatchError) as err:
        Scheduler(ScheduleConfig(hours=(hours,)), ParamStore(), source="show.toml")
    assert err.value.source == "show.toml" and err.value.key == key


def test_bad_timezone_and_day_in_a_patch(tmp_path):
    patch = tmp_path / "p.toml"
    patch.write_text('[schedule]\ntimezone = "Mars/Olympus"\n')
    with pytest.raises(PatchError, match="schedule.timezone.*Mars/Olympus"):
        Scheduler(load_patch(patch, check_models=False).schedule, ParamStore(), source=str(patch))
    patch.write_text('[[schedule.hours]]\ndays = ["monday"]\n')
    with pytest.raises(PatchError, match=r"schedule.hours\[0\].days\[0\]"):
        load_patch(patch, check_models=False)


def test_missing_or_broken_baked_folder(tmp_path):
    with pytest.raises(ConfigError, match="ciel bake"):
        Scheduler(ScheduleConfig(baked=str(tmp_path / "nowhere")), ParamStore(), source="show.toml")
    folder = bake_stub(tmp_path / "b", 2)
    (folder / "s0002.png").unlink()
    with pytest.raises(ConfigError, match=r"scenes\[1\].image.*not found"):
        Scheduler(ScheduleConfig(baked=str(folder)), ParamStore())


def test_timer_thread_fires_scenes_between_frames():
    """With the real clock, scenes fire from the timer thread even when nobody ticks (a slow frame)."""
    import time

    store = ParamStore()
    sched = Scheduler(ScheduleConfig(period=0.2), store)  # clock = time.monotonic: timer on
    try:
        sched.tick()  # the first tick (main thread) starts the timer
        time.sleep(1.5)
        assert store.get1("scene/next") >= 4
        assert sched._timer is not None and sched._timer.name == "ciel-scheduler"
    finally:
        sched.close()
    assert sched._timer is None
    count = store.get1("scene/next")
    time.sleep(0.5)
    assert store.get1("scene/next") == count  # stopped for good
