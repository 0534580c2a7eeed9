"""`ciel run` end to end with real parts: a JACK dummy server, a window under Xvfb, OSC over UDP."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from harness import parts

CIEL = [sys.executable, "-m", "engine.cli"]


def test_run_plays_audible_sound_and_opens_the_sky(jackd: parts.JackServer, xdisplay: str, tmp_path: Path) -> None:
    record = tmp_path / "out.wav"
    proc = subprocess.run([*CIEL, "run", "--no-midi", "--osc-port", "0", "--seconds", "12", "--size", "640x360",
                           "--record", str(record)],
                          capture_output=True, text=True, timeout=180, env={**os.environ, "DISPLAY": xdisplay})
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    first = re.search(r"first sound after ([0-9.]+) s", proc.stderr)
    assert first, proc.stderr
    audio, rate = sf.read(record, always_2d=True)
    assert len(audio) > rate * 3, "less than 3 s of sound recorded"
    body = audio[rate:]
    rms_db = 20 * np.log10(np.sqrt(np.mean(body**2)) + 1e-12)
    peak_db = 20 * np.log10(np.max(np.abs(audio)) + 1e-12)
    assert rms_db > -40.0, f"too quiet: {rms_db:.1f} dBFS RMS"
    assert peak_db <= -1.0 + 0.01, f"peak {peak_db:.2f} dBFS"
    fps = re.findall(r"fps ([0-9.]+)", proc.stderr)
    assert fps and float(fps[-1]) > 1.0, proc.stderr
