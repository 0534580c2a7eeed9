"""`pip install .` as a Python user meets it: a wheel installed into a fresh environment outside
the repository gives a `ciel` command whose import name is `ciel`, that finds its bundled models,
shaders, patches, page and control page inside the installed package, and that renders, runs
headless, ingests, trains and exports a broadcast from a folder that is not the checkout.

The wheel is built from this checkout (`pip wheel --no-deps`); the fresh environment reaches the
dependencies already installed here through a `.pth` line (nothing is downloaded), so the test
checks the package and not the package index."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from harness.offline import archive

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, str]]:
    """(the fresh environment's bin folder, a work folder outside the checkout, its environment)."""
    tmp = tmp_path_factory.mktemp("package")
    wheels = tmp / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheels), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next(wheels.glob("ciel-*.whl"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    site = next((venv / "lib").glob("python*/site-packages"))
    deps = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (site / "ciel-test-deps.pth").write_text("\n".join(deps) + "\n")
    inst = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--no-index", "-q",
                           str(wheel)], capture_output=True, text=True, timeout=300)
    assert inst.returncode == 0, inst.stderr[-2000:]
    work = tmp / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return venv / "bin", work, env


def run(installed: tuple[Path, Path, dict[str, str]], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    bin_dir, work, env = installed
    exe = args[0] if args[0] == "python" else "ciel"
    argv = [str(bin_dir / exe), *(args[1:] if exe == "python" else args)]
    return subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_installed_package_is_ciel_and_carries_what_it_needs(installed) -> None:
    bin_dir, work, _ = installed
    proc = run(installed, "python", "-c",
               "import ciel, ciel.configio as c, ciel.visual.sky as s, ciel.web.server as w, ciel.control.oscquery as q;"
               "print(ciel.__file__); print(c.ROOT); print(s.SHADERS); print(w.STATIC); print(q.PAGE)")
    assert proc.returncode == 0, proc.stderr
    package, data, shaders, static, page = (Path(line) for line in proc.stdout.split())
    venv = bin_dir.parent
    for p in (package, data, shaders, static, page):
        assert venv in p.parents and ROOT not in p.parents, f"{p} is not inside the installed package"
    for needed in ("models/audio-default/model.safetensors", "models/image-default/card.toml",
                   "patches/default.toml", "patches/installation.toml", "shaders"):
        assert (data / needed).exists(), f"the package lacks {needed}"
    assert any(static.iterdir()) and any(page.iterdir())
    assert run(installed, "python", "-c", "import engine").returncode != 0, "the checkout's folder name leaked in"
    version = run(installed, "--version")
    assert version.returncode == 0 and version.stdout.startswith("ciel ")


def test_the_installed_ciel_renders_runs_ingests_trains_and_exports_outside_the_checkout(installed) -> None:
    _, work, _ = installed
    render = run(installed, "render", "out", "--seconds", "2", "--no-frames")
    assert render.returncode == 0, render.stderr[-2000:]
    sound, rate = sf.read(work / "out" / "audio.wav")
    assert len(sound) == 2 * rate and abs(sound).max() > 1e-3
    show = run(installed, "run", "--headless", "--audio", "none", "--no-midi", "--osc-port", "0", "--seconds", "2")
    assert show.returncode == 0, show.stderr[-2000:]
    archive(work / "archive")
    ingest = run(installed, "ingest", "archive", "-o", "data")
    assert ingest.returncode == 0, ingest.stderr[-2000:]
    train = run(installed, "train", "audio", "data", "-o", "run", "--steps", "2", "--checkpoint-steps", "2",
                "--batch", "2", "--threads", "1")
    assert train.returncode == 0, train.stderr[-2000:]
    assert (work / "run" / "model" / "model.safetensors").exists()
    export = run(installed, "broadcast", "--export", "site", "--scenes", "1")
    assert export.returncode == 0, export.stderr[-2000:]
    assert (work / "site" / "index.html").exists() and (work / "site" / "manifest.json").exists()
