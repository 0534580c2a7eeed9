"""NDI out (engine/visual/ndi.py): `ciel run --headless --ndi NAME` seen by NDI's own runtime in
another process over loopback (harness/ndirecv.py), as a VJ's Resolume or OBS would see it: the
frames keep coming at 1280x720, the sky inside the oval where the projection puts it, opaque, and
transparent around it. The frame rate is measured by `python -m bench ndi`, not asserted here."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from conftest import missing

from harness.ndirecv import Received, oval_fit, receive

CIEL = [sys.executable, "-m", "engine.cli"]


def need_ndi() -> None:
    try:
        import NDIlib  # noqa: F401
    except (ImportError, OSError) as exc:
        missing(f"ndi-python (the `ndi` extra): {exc}")


def run_and_receive(name: str, options: list[str], seconds: float,
                    env: dict[str, str] | None = None) -> tuple[Received, str]:
    """`ciel run --ndi NAME` with `options`, received for `seconds` after its first frame; then
    stopped. Returns what arrived and what ciel wrote to stderr (no traceback in it)."""
    proc = subprocess.Popen([*CIEL, "run", *options, "--no-midi", "--osc-port", "0", "--ndi", name,
                             "--seconds", "90"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        got = receive(name, seconds=seconds, find_timeout=60.0)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "Traceback" not in err, err
    return got, err


@pytest.mark.parametrize("where", ["headless", "window"])
def test_the_sky_arrives_over_ndi_with_the_oval_where_the_projection_puts_it(where: str,
                                                                            request: pytest.FixtureRequest) -> None:
    """Offscreen (`--headless`) and from the window (under Xvfb), the same frames."""
    need_ndi()
    name = f"ciel-test-{where}-{os.getpid()}"
    env = dict(os.environ)
    how = ["--headless"]
    if where == "window":
        env["DISPLAY"], how = request.getfixturevalue("xdisplay"), []
    got, err = run_and_receive(name, [*how, "--audio", "none"], 4.0, env)
    assert got.first_at is not None, f"no frame over NDI; ciel said: {err[-2000:]}"
    assert got.size == (1280, 720)
    assert got.frames >= 8, f"{got.frames} frames in {got.seconds:.1f} s"     # they keep coming (rate: bench ndi)
    frame = got.kept[-1]                                                      # (720, 1280, 4) BGRA
    inside, outside = oval_fit(frame)
    assert inside > 0.99 and outside < 0.01, (inside, outside)
    sky = frame[..., :3][frame[..., 3] > 127].astype(np.float64)
    assert sky.std(axis=0).mean() > 5.0          # a picture in the oval, not a flat fill
    # the must-fail fixtures: the oval moved by 40 pixels, or a frame opaque everywhere
    moved = oval_fit(np.roll(frame, 40, axis=1))
    assert not (moved[0] > 0.99 and moved[1] < 0.01), moved
    full = frame.copy()
    full[..., 3] = 255
    assert oval_fit(full)[1] == 1.0


def best_match(segment: np.ndarray, recording: np.ndarray) -> float:
    """The highest normalised correlation of `segment` (n,) against every place in `recording` (m,)."""
    n = len(segment)
    spec = np.fft.rfft(recording, len(recording) + n) * np.conj(np.fft.rfft(segment, len(recording) + n))
    dots = np.fft.irfft(spec)[:len(recording) - n + 1]                               # segment · recording[k:k+n]
    energy = np.convolve(recording ** 2, np.ones(n), mode="valid")                    # |recording[k:k+n]|²
    return float(np.max(dots / np.sqrt(energy * np.sum(segment ** 2) + 1e-20)))


def test_the_sound_goes_out_with_the_picture(jackd, tmp_path) -> None:
    """With an audio device (the JACK test server), the NDI source carries what ciel plays: stereo
    at the device rate, as much sound as time passed, and it is the sound `record` wrote (what the
    callback handed to JACK), not just any sound."""
    need_ndi()
    record = tmp_path / "played.wav"
    got, err = run_and_receive(f"ciel-sound-{os.getpid()}", ["--headless", "--record", str(record)], 6.0)
    assert got.sound_rate == 48000 and got.sound and all(a.shape[0] == 2 for a in got.sound)
    # the picture starts after the first sound: from the first frame on, sound for all of the time
    assert got.sound_samples >= 0.9 * got.seconds * got.sound_rate, (got.sound_samples, got.seconds)
    sound = np.concatenate(got.sound, axis=1)                                          # (2, n)
    level = 20 * np.log10(np.sqrt(np.mean(sound[:, -2 * got.sound_rate:] ** 2)) + 1e-12)
    assert level > -45.0 and np.abs(sound).max() <= 10 ** (-1 / 20) + 1e-3, level
    played, rate = sf.read(record, dtype="float32")                                    # (m, 2)
    segment = sound[0, -got.sound_rate // 2:-got.sound_rate // 4].astype(np.float64)    # 250 ms, near the end
    assert best_match(segment, played[:, 0].astype(np.float64)) > 0.999
    # the must-fail fixture: the same sound played backwards is found nowhere in the recording
    assert best_match(segment[::-1].copy(), played[:, 0].astype(np.float64)) < 0.9


def test_a_second_source_of_the_same_name_is_one_line() -> None:
    need_ndi()
    from engine.errors import CielError
    from engine.visual.ndi import NdiSender

    name = f"ciel-twice-{os.getpid()}"
    first = NdiSender(name, 30.0)
    try:
        with pytest.raises(CielError, match="already runs") as info:
            NdiSender(name, 30.0)
        assert name in str(info.value) and "\n" not in str(info.value)
    finally:
        first.close()
