"""One path for a parameter: OSC → the engine's store → its shared snapshot → the generator
process, with no render loop in between."""

from __future__ import annotations

import socket
import time

import numpy as np

from engine.app import Engine, RunOptions
from engine.control.config import MidiConfig, OscConfig, OscQueryConfig
from engine.control.osc import message
from engine.patch import Patch


def newest(source, after: int, timeout: float = 60.0):
    """The first keyframe with a sequence number above `after` (the source's newest at that time)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        kf = source.latest()
        if kf is not None and kf.seq > after:
            return kf
        time.sleep(0.02)
    raise AssertionError(f"no keyframe after {after} in {timeout} s (count {source.count}, error {source.error})")


def test_image_latent_change_over_osc_reaches_the_generator_while_the_window_is_stopped() -> None:
    patch = Patch(osc=OscConfig(port=0), oscquery=OscQueryConfig(enabled=False), midi=MidiConfig(enabled=False))
    engine = Engine(patch, None, RunOptions(audio=False, window=True, control=True))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        assert engine.osc is not None and engine.keyframes is not None
        target = ("127.0.0.1", engine.osc.port)
        source = engine.keyframes
        source.start()   # what the window does when it opens; no render loop runs in this test
        udp.sendto(message("/ciel/image/hold", [1]), target)   # the walk stands still: only the knob moves
        end = time.monotonic() + 10
        while engine.store.get1("image/hold") < 0.5 and time.monotonic() < end:
            time.sleep(0.01)
        held = newest(source, newest(source, 0).seq)    # a keyframe made after the hold arrived
        again = newest(source, held.seq)
        assert np.array_equal(held.image, again.image)   # held: the generator repeats its picture
        udp.sendto(message("/ciel/image/offset", [3.0] * 8), target)
        time.sleep(2.0)   # the window stays stopped for 2 s
        after = newest(source, source.count)
        change = np.abs(after.image.astype(np.int16) - held.image.astype(np.int16)).mean()
        assert change > 10.0, f"the picture moved by {change:.1f} grey levels on average"
        assert source.error is None
    finally:
        udp.close()
        engine.close()
