"""MIDI through JACK MIDI (rtmidi's UNIX_JACK API on a jackd dummy server): a controller is a
virtual JACK MIDI port made by mido; the engine's side is MidiControl, polled as Engine.tick does."""

from __future__ import annotations

import os
import time

import mido
import pytest

from engine.control.config import MidiConfig, MidiMapping
from engine.control.midi import MidiControl, list_ports
from engine.params import ParamStore
from engine.patch import DEFAULT_PATCH, load_patch
from engine.patchwrite import PatchWriter

FRAME = 1 / 60


@pytest.fixture(scope="module")
def backend(jackd):
    return mido.Backend("mido.backends.rtmidi/UNIX_JACK")


def tick_until(midi: MidiControl, cond, timeout: float) -> float | None:
    """Call poll() once a frame (as the engine's main loop does) until cond(); seconds taken or None."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        midi.poll()
        if cond():
            return time.monotonic() - t0
        time.sleep(FRAME)
    return None


def controller(backend, tag: str):
    return backend.open_output(f"ciel-test-{tag}-{os.getpid()}", virtual=True)


def engine_side(tag: str, store: ParamStore, **kw) -> MidiControl:
    cfg = MidiConfig(api="UNIX_JACK", inputs=(f"ciel-test-{tag}-{os.getpid()}",), **kw)
    return MidiControl(cfg, store, client_name=f"ciel-{tag}-{os.getpid()}").start()


def test_cc_sweep_moves_its_parameter_without_a_jump_under_pickup(backend):
    store = ParamStore()
    store.set("audio/temperature", 1.5, source="osc")   # the value the knob must pick up
    out = controller(backend, "sweep")
    midi = engine_side("sweep", store, mappings=(MidiMapping(param="audio/temperature", number=21),))
    try:
        assert tick_until(midi, lambda: len(midi.ports) == 1, 5.0) is not None, "the controller's port was not opened"
        seen = [store.get1("audio/temperature")]          # every value the parameter takes
        store.add_listener(lambda name, values, source: name == "audio/temperature" and seen.append(values[0]))
        for v in range(128):
            out.send(mido.Message("control_change", control=21, value=v))
            time.sleep(0.002)
            midi.poll()
            if v == 40:
                assert store.get1("audio/temperature") == 1.5, "the knob took over before reaching the value"
        assert tick_until(midi, lambda: store.get1("audio/temperature") == 3.0, 2.0) is not None
        steps = [abs(b - a) for a, b in zip(seen, seen[1:])]
        # one CC step is 3/127; a takeover jump would be 1.5 here. A few steps are allowed for a
        # message a starved JACK server drops in an xrun.
        assert max(steps) <= 4 * 3.0 / 127, f"jump of {max(steps):.3f} (range 0..3) during the sweep"
        assert len(seen) > 60
        assert midi.health()["applied"] >= 60
    finally:
        midi.close()
        out.close()


def test_learn_binds_a_new_cc_and_writes_it_into_the_patch(backend, tmp_path):
    patch_file = tmp_path / "live.toml"
    patch_file.write_text(DEFAULT_PATCH.read_text())
    store = ParamStore()
    out = controller(backend, "learn")
    midi = MidiControl(MidiConfig(api="UNIX_JACK", inputs=(f"ciel-test-learn-{os.getpid()}",), takeover="none"),
                       store, writer=PatchWriter(patch_file), client_name=f"ciel-learn-{os.getpid()}").start()
    try:
        assert tick_until(midi, lambda: len(midi.ports) == 1, 5.0) is not None
        midi.learn("sky/spin")
        for value in range(127, 100, -1):       # a knob turned: several messages
            out.send(mido.Message("control_change", channel=4, control=77, value=value))
            if tick_until(midi, lambda: midi.health()["learned"] == 1, 0.1) is not None:
                break
        assert midi.health()["learned"] == 1
        assert load_patch(patch_file).midi.mappings == (
            MidiMapping(param="sky/spin", type="cc", channel=5, number=77),)
        out.send(mido.Message("control_change", channel=4, control=77, value=0))
        assert tick_until(midi, lambda: store.get1("sky/spin") == -30.0, 3.0) is not None
    finally:
        midi.close()
        out.close()


def test_a_port_that_vanishes_and_returns_is_picked_up_again_within_3s(backend):
    store = ParamStore()
    out = controller(backend, "replug")
    midi = engine_side("replug", store, takeover="none", rescan=0.5,
                       mappings=(MidiMapping(param="sky/grain", number=5),))
    try:
        assert tick_until(midi, lambda: len(midi.ports) == 1, 5.0) is not None
        out.send(mido.Message("control_change", control=5, value=127))
        assert tick_until(midi, lambda: store.get1("sky/grain") == 1.0, 2.0) is not None
        out.close()                                    # unplugged: no error, the port is just gone
        assert tick_until(midi, lambda: midi.health()["vanished"] == 1, 3.0) is not None
        out = controller(backend, "replug")            # plugged in again
        took = tick_until(midi, lambda: len(midi.ports) == 1, 3.0)
        assert took is not None, "the port was not reopened within 3 s"
        time.sleep(0.05)
        out.send(mido.Message("control_change", control=5, value=0))
        assert tick_until(midi, lambda: store.get1("sky/grain") == 0.0, 2.0) is not None
    finally:
        midi.close()
        out.close()


def test_values_changed_elsewhere_are_sent_back_to_the_controller(backend):
    store = ParamStore()
    name = f"ciel-test-lights-{os.getpid()}"
    received: list[mido.Message] = []
    lights = backend.open_input(name, virtual=True, callback=received.append)
    out = controller(backend, "lights")
    midi = engine_side("lights", store, output=name, mappings=(
        MidiMapping(param="sky/grain", number=5), MidiMapping(param="audio/hold", type="note", number=40)))
    try:
        assert tick_until(midi, lambda: midi.output is not None and midi.ports, 5.0) is not None
        assert tick_until(midi, lambda: len(received) >= 2, 3.0) is not None, "no initial sync of the lights"
        received.clear()
        store.set("sky/grain", 0.5, source="osc")
        store.set("audio/hold", 1, source="osc")
        assert tick_until(midi, lambda: len(received) >= 2, 3.0) is not None, (midi.health(), received)
        got = {(m.type, m.control if m.type == "control_change" else m.note) :
               (m.value if m.type == "control_change" else m.velocity) for m in received}
        assert got[("control_change", 5)] == 64
        assert got[("note_on", 40)] == 127
    finally:
        midi.close()
        out.close()
        lights.close()


def test_ports_are_listed_for_ciel_devices(backend):
    out = controller(backend, "list")
    try:
        ins, outs = list_ports("UNIX_JACK")
        assert any(f"ciel-test-list-{os.getpid()}" in name for name in ins), ins
    finally:
        out.close()
