"""The parameter registry, the shared snapshot and smoothing."""

from __future__ import annotations

import math
import multiprocessing as mp

import numpy as np
import pytest

from engine.errors import ParamError
from engine.params import REGISTRY, ParamStore, SharedSnapshot, Smoother


def test_every_parameter_is_documented_and_has_a_sane_range() -> None:
    for p in REGISTRY:
        assert p.description, p.name
        assert p.minimum <= p.default <= p.maximum, p.name
        assert p.name == p.name.lower() and " " not in p.name
        assert not any(part.isdigit() for part in p.address.split("/")), p.address


def test_set_clamps_to_the_range_and_notifies_with_the_source() -> None:
    store = ParamStore()
    seen = []
    store.add_listener(lambda name, values, source: seen.append((name, values, source)))
    assert store.set("audio/gain", 100.0, "osc") == (6.0,)
    assert store.set("audio/gain", float("nan"), "osc") == (REGISTRY.get("audio/gain").default,)
    assert store.set("sky/lat", -float("inf"), "midi") == (-90.0,)
    assert seen[0] == ("audio/gain", (6.0,), "osc")
    assert seen[-1][2] == "midi"


def test_vectors_set_whole_or_one_element() -> None:
    store = ParamStore()
    store.set("audio/offset", [1.0] * 16)
    store.set("audio/offset", -9.0, index=3)
    values = store.get("audio/offset")
    assert values[3] == -4.0 and values[0] == 1.0
    with pytest.raises(ParamError, match="expected 16 values"):
        store.set("audio/offset", [1.0, 2.0])
    with pytest.raises(ParamError, match="index 16 out of range"):
        store.set("audio/offset", 1.0, index=16)


def test_ints_and_bools_are_rounded_and_triggers_count() -> None:
    store = ParamStore()
    assert store.set("sky/projection", 0.7) == (1.0,)
    store.trigger("audio/jump")
    store.trigger("audio/jump")
    assert store.get1("audio/jump") == 2.0
    with pytest.raises(ParamError, match="is a trigger"):
        store.set("audio/jump", 1.0)
    with pytest.raises(ParamError, match="unknown parameter 'nope'"):
        store.set("nope", 1.0)


def _read_in_child(name: str, size: int, queue: mp.Queue[list[float]]) -> None:
    snap = SharedSnapshot(size, name=name, create=False)
    out = np.empty(size)
    ok = snap.read_into(out)
    queue.put([float(ok)] + out.tolist())
    snap.close()


def test_snapshot_reaches_another_process() -> None:
    snap = SharedSnapshot(REGISTRY.size)
    try:
        store = ParamStore(snapshot=snap)
        store.set("audio/gain", -12.0)
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        child = ctx.Process(target=_read_in_child, args=(snap.name, REGISTRY.size, queue))
        child.start()
        got = queue.get(timeout=30)
        child.join(10)
        assert got[0] == 1.0
        assert got[1 + REGISTRY.index("audio/gain")] == -12.0
    finally:
        snap.close()


def test_smoother_glides_with_each_parameters_time_constant() -> None:
    sm = Smoother()
    targets = REGISTRY.defaults()
    gain = REGISTRY.index("audio/gain")
    proj = REGISTRY.index("sky/projection")
    targets[gain] = 0.0
    targets[proj] = 1.0
    tau = REGISTRY.get("audio/gain").smoothing_s
    start = sm.value[gain]
    v = sm.step(targets, tau)
    assert math.isclose(v[gain], start + (1 - math.exp(-1)) * (0.0 - start), rel_tol=1e-9)
    assert v[proj] == 1.0  # ints jump
    for _ in range(100):
        v = sm.step(targets, tau)
    assert abs(v[gain]) < 1e-6


def test_panic_leaves_the_sound_muted_until_unmuted() -> None:
    store = ParamStore()
    seen = []
    store.add_listener(lambda name, values, source: seen.append((name, values)))
    store.trigger("panic", "osc")
    assert store.get1("audio/mute") == 1.0
    assert ("audio/mute", (1.0,)) in seen
    store.set("audio/mute", 0.0)
    assert store.get1("audio/mute") == 0.0


def test_typed_view_is_generated_from_the_registry_and_checked_at_start():
    import dataclasses
    from pathlib import Path

    import engine
    from engine.errors import ParamError
    from engine.params import PARAMS, Registry, check_view, view_source
    from engine.paramview import ParamView

    text = (Path(engine.__file__).parent / "paramview.py").read_text(encoding="utf-8")
    assert text == view_source(), "engine/paramview.py is stale: run python -m engine.params --view"
    values = REGISTRY.defaults()
    values[REGISTRY.index("audio/walk/speed")] = 2.5
    values[REGISTRY.slot("image/offset")] = np.arange(8)
    view = ParamView(values)
    assert view.audio_walk_speed == 2.5 and list(view.image_offset) == list(range(8))
    check_view(REGISTRY)
    renamed = Registry(tuple(dataclasses.replace(p, name="audio/volume") if p.name == "audio/gain" else p
                             for p in PARAMS))
    with pytest.raises(ParamError, match="audio/volume"):
        check_view(renamed)
