"""The `ciel` command as a user meets it: versions, one-line errors, and offline render."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from engine import __version__, parts

CIEL = [sys.executable, "-m", "engine.cli"]


def ciel(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*CIEL, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """The run failed with exit code 2 and exactly one line on stderr, no traceback."""
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and " INFO " not in ln and " WARNING " not in ln]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("ciel: ")
    return lines[0]


def test_version() -> None:
    proc = ciel("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"ciel {__version__}"


def test_run_without_display_says_what_to_do() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER")}
    proc = subprocess.run([*CIEL, "run", "--audio", "none", "--no-midi"], capture_output=True, text=True,
                          timeout=60, env=env)
    line = one_line_error(proc)
    assert "no display" in line and "--headless" in line and "Xvfb" in line


def test_run_with_a_missing_audio_device_says_what_to_do(jackd: parts.JackServer) -> None:
    proc = ciel("run", "--headless", "--no-midi", "--device", "no-such-sound-card", "--osc-port", "0", "--seconds", "5")
    line = one_line_error(proc)
    assert "no-such-sound-card" in line and "--audio none" in line


def test_bad_patch_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[params]\n"audio/gain" = 99\n')
    line = one_line_error(ciel("run", str(bad), "--headless", "--audio", "none"))
    assert str(bad) in line and "params.audio/gain" in line and "[-60, 6]" in line


def test_a_speaker_count_out_of_range_is_one_line() -> None:
    line = one_line_error(ciel("run", "--headless", "--audio", "none", "--no-midi", "--channels", "0"))
    assert "the command line" in line and "audio.channels" in line and "[1, 32]" in line


def test_render_over_four_speakers_writes_four_channels(tmp_path: Path) -> None:
    patch = tmp_path / "ring.toml"
    patch.write_text('[audio]\nchannels = 4\nvoices = 4\n[params]\n"audio/voices" = 4\n"audio/cloud/pan" = 1.0\n')
    proc = ciel("render", str(tmp_path / "out"), str(patch), "--seconds", "3", "--no-frames", timeout=300)
    assert proc.returncode == 0, proc.stderr
    sound, rate = sf.read(tmp_path / "out" / "audio.wav")
    assert sound.shape == (3 * rate, 4)
    levels = 10 * np.log10((sound[rate:] ** 2).mean(axis=0) + 1e-12)
    assert np.all(levels > -50), f"a speaker is silent: {levels.round(1)}"


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = []
    for run in ("a", "b"):
        folder = tmp_path_factory.mktemp(f"render-{run}")
        proc = ciel("render", str(folder), "--seconds", "3", "--seed", "1", "--fps", "4", "--size", "480x270",
                    timeout=300)
        assert proc.returncode == 0, proc.stderr
        out.append(folder)
    return out[0], out[1]


def test_render_is_deterministic(rendered: tuple[Path, Path]) -> None:
    a, b = rendered
    da, db = digest(a), digest(b)
    assert len(da) == 1 + 12
    assert da == db


def test_rendered_sound_is_audible_and_below_the_ceiling(rendered: tuple[Path, Path]) -> None:
    audio, rate = sf.read(rendered[0] / "audio.wav", always_2d=True)
    assert rate == 48000 and abs(len(audio) / rate - 3.0) < 1e-3
    rms_db = 20 * np.log10(np.sqrt(np.mean(audio[rate // 2:] ** 2)) + 1e-12)
    peak_db = 20 * np.log10(np.max(np.abs(audio)) + 1e-12)
    assert rms_db > -40.0, f"too quiet: {rms_db:.1f} dBFS RMS"
    assert peak_db <= -1.0 + 0.01, f"peak {peak_db:.2f} dBFS above the -1 dBFS ceiling"


def test_rendered_frame_shows_the_oval(rendered: tuple[Path, Path]) -> None:
    frame = np.asarray(Image.open(rendered[0] / "frames" / "000011.png").convert("RGB")).astype(int)
    h, w, _ = frame.shape
    corner = frame[2, 2]
    assert (np.abs(frame[:6, :6] - corner).max()) <= 1, "background outside the oval is not uniform"
    inside = frame[h // 2 - 20:h // 2 + 20, w // 2 - 20:w // 2 + 20]
    assert np.abs(inside - corner).sum(axis=2).mean() > 10, "the centre of the oval looks like the background"


def decode_video(path: Path) -> tuple[list[np.ndarray], np.ndarray, int]:
    """(frames (H, W, 3) uint8, the left channel, its rate) of a video file, as a player decodes it."""
    import av

    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    with av.open(str(path)) as container:
        chunks = [f for f in container.decode(audio=0)]
    start = chunks[0].pts * float(chunks[0].time_base)
    left = np.concatenate([f.to_ndarray()[0] for f in chunks])
    rate = chunks[0].sample_rate
    return frames, np.concatenate([np.zeros(int(round(start * rate)), left.dtype), left]), rate


def onset_s(x: np.ndarray, rate: int) -> float:
    """The first moment the sound reaches a tenth of its peak."""
    env = np.abs(x)
    return float(np.argmax(env > 0.1 * env.max())) / rate


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = []
    for run, extra in (("a", []), ("b", ["--no-frames"])):
        folder = tmp_path_factory.mktemp(f"video-{run}")
        proc = ciel("render", str(folder), "--seconds", "2", "--seed", "3", "--fps", "10", "--size", "320x180",
                    "--video", *extra, timeout=300)
        assert proc.returncode == 0, proc.stderr
        out.append(folder)
    return out[0], out[1]


def test_a_video_render_gives_the_same_frames_for_a_seed_with_its_sound_in_sync(videos: tuple[Path, Path]) -> None:
    """`ciel render --video` twice with one seed: the same pictures on decode, the pictures are the
    render's, and the sound starts where audio.wav starts (within one frame)."""
    a, b = videos
    fa, sa, rate = decode_video(a / "render.mp4")
    fb, _, _ = decode_video(b / "render.mp4")
    assert len(fa) == len(fb) == 20
    assert all(np.array_equal(x, y) for x, y in zip(fa, fb)), "same seed, other frames"
    assert (a / "frames").is_dir() and not (b / "frames").exists()     # --no-frames keeps the PNGs out
    pngs = [np.asarray(Image.open(a / "frames" / f"{i:06d}.png").convert("RGB")).astype(int) for i in (0, 19)]
    for k, i in enumerate((0, 19)):              # the video shows the render: lossy, but nearer its own frame
        own = np.abs(fa[i].astype(int) - pngs[k]).mean()
        other = np.abs(fa[i].astype(int) - pngs[1 - k]).mean()
        assert own < 10.0 and own < 0.5 * other, (i, own, other)
    wav, wav_rate = sf.read(a / "audio.wav", always_2d=True)
    assert abs(len(sa) / rate - 2.0) < 0.1
    assert abs(onset_s(sa, rate) - onset_s(wav[:, 0], wav_rate)) < 1 / 10
