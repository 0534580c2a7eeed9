"""Fixtures that start real parts: a JACK dummy server, Xvfb, an EGL context, Pure Data.

Under CI=true a part that cannot be started fails the test; elsewhere the test is skipped with
the reason, so a laptop without Pure Data still runs everything else.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from harness import parts

torch.set_num_threads(1)

IN_CI = os.environ.get("CI", "").lower() == "true"


def missing(reason: str) -> None:
    """Fail under CI, skip elsewhere."""
    if IN_CI:
        pytest.fail(f"required part missing under CI: {reason}")
    pytest.skip(reason)


@contextmanager
def chromium(width: int, height: int) -> Iterator[object]:
    """Headless Chromium (harness.chromium.Chromium) for a browser test; missing() without it."""
    from harness.chromium import Chromium, find_chromium

    try:
        find_chromium()
    except FileNotFoundError as exc:
        missing(str(exc))
    with Chromium(width, height) as browser:
        yield browser


def param_values(**named: float | list[float]) -> np.ndarray:
    """The registry's defaults with `named` parameters set (`audio__walk__speed=0.3` names
    audio/walk/speed): a flat parameter array as the synth and the renderers read it."""
    from engine.params import REGISTRY

    v = REGISTRY.defaults()
    for name, value in named.items():
        v[REGISTRY.slot(name.replace("__", "/"))] = value
    return v


def tone_share(x: np.ndarray, hz: float, rate: int) -> float:
    """Share of a signal's energy within 20 Hz of `hz` (0..1): how much of what is heard is that tone."""
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    return float(spec[np.abs(freqs - hz) < 20].sum() / max(spec.sum(), 1e-30))


@pytest.fixture(scope="session")
def jackd() -> Iterator[parts.JackServer]:
    """A private JACK server (dummy driver, 48 kHz, 128-frame periods, 8 outputs like an
    installation's sound card) for the whole session;
    $JACK_DEFAULT_SERVER points the tests and the processes they start at it."""
    try:
        cm = parts.jackd(rate=48000, period=64, name=parts.free_server_name("ciel-test"), playback=8)
        server = cm.__enter__()
    except (FileNotFoundError, RuntimeError) as exc:
        missing(str(exc))
        return
    try:
        yield server
    finally:
        cm.__exit__(None, None, None)


@pytest.fixture(scope="session")
def xdisplay() -> Iterator[str]:
    """An X display (Xvfb started if none is set); sets $DISPLAY for the session."""
    try:
        cm = parts.xvfb()
        display = cm.__enter__()
    except (FileNotFoundError, RuntimeError) as exc:
        missing(str(exc))
        return
    old = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = display
    try:
        yield display
    finally:
        if old is None:
            os.environ.pop("DISPLAY", None)
        else:
            os.environ["DISPLAY"] = old
        cm.__exit__(None, None, None)


@pytest.fixture(scope="session")
def gl_context():
    """A standalone moderngl context on EGL (Mesa llvmpipe without a GPU)."""
    import moderngl

    try:
        ctx = moderngl.create_context(standalone=True, backend="egl")
    except Exception as exc:  # moderngl raises plain Exception when EGL is missing
        missing(f"no EGL OpenGL context: {exc}")
        return
    yield ctx
    ctx.release()


@pytest.fixture(scope="session")
def pd_bin() -> str:
    try:
        return parts.pd_binary()
    except FileNotFoundError as exc:
        missing(str(exc))
        raise


@pytest.fixture(scope="session")
def phone_dataset(tmp_path_factory: pytest.TempPathFactory):
    """A small generated phone archive, ingested (2 minutes of voice notes, 64 photos at 256 px;
    other recordings than the default models learned): the data the quality checks compare to."""
    from engine.errors import MissingPackages
    from engine.train.defaults import make_archive
    from engine.train.ingest import ingest, load_dataset

    tmp = tmp_path_factory.mktemp("phone")
    try:
        make_archive(tmp / "archive", audio_minutes=2.0, photos=64, seed=1)
    except MissingPackages as exc:
        missing(str(exc))
    ingest(tmp / "archive", tmp / "dataset", progress=False)
    return load_dataset(tmp / "dataset")


RAVE_PYTHON = Path(__file__).resolve().parents[1] / ".venv-rave" / "bin" / "python"


@pytest.fixture(scope="session")
def rave_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A RAVE v2 (small) streaming export made by the `acids-rave` package itself, untrained
    (seeded), 8 latent dimensions, 44.1 kHz: made once per test session in the RAVE environment
    (`make test` builds it: scripts/setup-rave.sh)."""
    if not RAVE_PYTHON.exists():
        missing(f"the RAVE environment ({RAVE_PYTHON}; `make setup-test` makes it)")
    out = tmp_path_factory.mktemp("rave") / "rave-v2-small.ts"
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([str(RAVE_PYTHON), "-W", "ignore", str(root / "harness" / "rave_export.py"), str(out)],
                          capture_output=True, text=True, timeout=300, cwd=root)
    if done.returncode != 0 or not out.is_file():
        pytest.fail(f"acids-rave could not export a model: {done.stderr.strip()[-2000:]}")
    return out
