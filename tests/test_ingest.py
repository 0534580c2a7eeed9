"""`ciel ingest` on a messy phone archive: what it keeps, what it skips and why, and the shapes it writes."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from engine import cli
from engine.errors import DatasetError
from engine.train.defaults import babble, write_sound
from engine.train.ingest import IngestConfig, ingest, load_dataset

SR_IN = 44100


def tone(seconds: float, freq: float, sr: int = SR_IN, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_video(path: Path, audio: np.ndarray, sr: int = 16000) -> None:
    """An MP4 with an MPEG-4 video track and an AAC audio track (a phone video)."""
    with av.open(str(path), mode="w") as out:
        v = out.add_stream("mpeg4", rate=10)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        a = out.add_stream("aac", rate=sr, layout="mono")
        for i in range(int(len(audio) / sr * 10)):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 10 % 255, np.uint8), format="rgb24")
            for p in v.encode(frame):
                out.mux(p)
        for i in range(0, len(audio) - 1024, 1024):
            af = av.AudioFrame.from_ndarray((audio[None, i:i + 1024] * 32767).astype(np.int16), format="s16", layout="mono")
            af.sample_rate = sr
            for p in a.encode(af):
                out.mux(p)
        for s in (v, a):
            for p in s.encode(None):
                out.mux(p)


def upright_photo() -> Image.Image:
    """Red on top, blue at the bottom, a green stripe on the left: any rotation is visible."""
    arr = np.zeros((300, 400, 3), np.uint8)
    arr[:150, :, 0] = 255
    arr[150:, :, 2] = 255
    arr[:, :100] = (0, 255, 0)
    return Image.fromarray(arr)


@pytest.fixture(scope="module")
def messy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("archive")
    rng = np.random.default_rng(1)
    notes = root / "2014" / "voice notes"
    notes.mkdir(parents=True)
    sf.write(notes / "tone440.wav", tone(2.0, 440.0), SR_IN)                # good, 44.1 kHz
    write_sound(notes / "memo.amr", babble(3.0, rng))                        # good, AMR-NB
    write_sound(notes / "memo.m4a", babble(2.5, rng))                        # good, AAC
    video_dir = root / "2016" / "DCIM" / "deep" / "er"
    video_dir.mkdir(parents=True)
    write_video(video_dir / "VID_0001.mp4", tone(2.0, 300.0, 16000))       # good: video's audio track
    shutil.copy(notes / "tone440.wav", root / "2016" / "copy of tone440.wav")  # duplicate
    (root / "empty.m4a").write_bytes(b"")                                    # zero bytes
    full = root / "full.wav"
    sf.write(full, tone(2.0, 660.0), SR_IN, subtype="PCM_16")
    data = full.read_bytes()
    (root / "truncated.wav").write_bytes(data[: len(data) // 2])            # header says 2 s, 1 s present
    full.unlink()
    (root / "song.mp3").write_text("this is a text file, not an mp3\n" * 20)  # text named .mp3
    sf.write(root / "short.wav", tone(0.2, 500.0), SR_IN)                   # 0.2 s clip
    sf.write(root / "silence.wav", np.zeros(SR_IN, np.float32), SR_IN)      # silent
    (root / "notes.txt").write_text("shopping list")
    rotated = upright_photo().transpose(Image.Transpose.ROTATE_90)           # stored sideways...
    exif = Image.Exif()
    exif[0x0112] = 6                                                         # ...tagged "rotate 90° CW to view"
    rotated.save(root / "2016" / "DCIM" / "IMG_rotated.jpg", quality=95, exif=exif.tobytes())
    upright_photo().save(root / "2016" / "DCIM" / "plain.png")
    (root / "2016" / "DCIM" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 30)
    odd = os.path.join(os.fsencode(root), b"caf\xe9 \xff.wav")              # not UTF-8
    sf.write(odd, tone(1.5, 880.0), SR_IN)
    return root


@pytest.fixture(scope="module")
def dataset(messy: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ds") / "dataset"
    assert cli.main(["ingest", str(messy), "-o", str(out), "-q"]) == 0
    return out


def report(dataset: Path) -> dict:
    return json.loads((dataset / "report.json").read_text("utf-8"))


def test_report_names_every_bad_file_with_its_reason(dataset: Path) -> None:
    rep = report(dataset)
    skipped = {d["file"]: d["reason"] for d in rep["skipped"]}
    assert "0 bytes" in skipped["empty.m4a"]
    assert "not a readable" in skipped["song.mp3"]
    assert skipped["silence.wav"].startswith("silent")
    assert "duplicate of 2014/voice notes/tone440.wav" == skipped["2016/copy of tone440.wav"]
    assert "not a sound" in skipped["notes.txt"]
    assert "not a readable image" in skipped["2016/DCIM/broken.jpg"]
    notes: dict[str, str] = {}
    for d in rep["warnings"]:
        notes[d["file"]] = notes.get(d["file"], "") + d["note"] + "; "
    assert "truncated" in notes["truncated.wav"] and "2.00 s" in notes["truncated.wav"]
    assert "padded" in notes["short.wav"]
    text = (dataset / "report.txt").read_text("utf-8")
    for name in ("empty.m4a", "song.mp3", "silence.wav", "truncated.wav", "short.wav"):
        assert name in text, name
    assert rep["summary"]["files_seen"] == 15


def test_good_files_land_at_the_rate_and_shape(dataset: Path) -> None:
    ds = load_dataset(dataset)
    rep = report(dataset)
    kept = [c["file"] for c in rep["clips"]]
    assert sorted(kept) == sorted(["2014/voice notes/tone440.wav", "2014/voice notes/memo.amr", "2014/voice notes/memo.m4a",
                                   "2016/DCIM/deep/er/VID_0001.mp4", "truncated.wav", "short.wav", "caf\\xe9 \\xff.wav"])
    assert ds.config.samplerate == 16000 and ds.audio.dtype == np.int16 and ds.index.shape == (7, 2)
    by_name = dict(zip(kept, ds.index.tolist()))
    for name, freq, seconds in (("2014/voice notes/tone440.wav", 440, 2.0), ("caf\\xe9 \\xff.wav", 880, 1.5),
                                ("2016/DCIM/deep/er/VID_0001.mp4", 300, 1.9)):
        start, n = by_name[name]
        assert abs(n / 16000 - seconds) < 0.15, (name, n)
        x = ds.audio[start:start + n].astype(np.float32) / 32768
        peak_hz = np.argmax(np.abs(np.fft.rfft(x))) * 16000 / n
        assert abs(peak_hz - freq) < 3, (name, peak_hz)          # resampled to 16 kHz, pitch kept
        rms_db = 20 * np.log10(np.sqrt(np.mean(x ** 2)))
        assert -21.5 < rms_db < -18.5 and np.abs(x).max() < 0.95  # loudness normalised, not clipped
    start, n = by_name["short.wav"]
    assert n == 16000                                            # 0.2 s padded to 1 s, not dropped
    assert np.abs(ds.audio[start + 4000:start + n]).max() == 0   # ...with silence
    assert ds.images.shape == (2, 256, 256, 3) and ds.images.dtype == np.uint8


def test_rotated_photo_is_upright(dataset: Path) -> None:
    ds = load_dataset(dataset)
    names = [p["file"] for p in report(dataset)["photos"]]
    img = ds.images[names.index("2016/DCIM/IMG_rotated.jpg")].astype(int)
    top, bottom, left = img[20:60, 160], img[200:240, 160], img[128, 2:8]
    assert top[:, 0].mean() > 200 and top[:, 2].mean() < 60     # red on top
    assert bottom[:, 2].mean() > 200 and bottom[:, 0].mean() < 60  # blue at the bottom
    assert left[:, 1].mean() > 200                               # green stripe on the left
    assert report(dataset)["photos"][names.index("2016/DCIM/IMG_rotated.jpg")]["source_size"] == [400, 300]


def test_config_and_resample_rate_are_saved(messy: Path, tmp_path: Path) -> None:
    rep = ingest(messy, tmp_path / "d8k", IngestConfig(samplerate=8000, image_size=64, images=True), progress=False)
    ds = load_dataset(tmp_path / "d8k")
    assert ds.config.samplerate == 8000 and ds.images.shape[1:] == (64, 64, 3)
    start, n = ds.index[[c["file"] for c in rep.clips].index("2014/voice notes/tone440.wav")]
    assert abs(n / 8000 - 2.0) < 0.15


def test_missing_archive_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["ingest", str(tmp_path / "nope"), "-o", str(tmp_path / "ds")]) == 2
    assert "nope: archive folder not found" in capsys.readouterr().err
    with pytest.raises(DatasetError, match="dataset folder not found"):
        load_dataset(tmp_path / "nothing")


def giant_png(path: Path, side: int = 30_000) -> None:
    """A PNG whose header says `side` x `side` (900 megapixels at 30,000) in a few hundred bytes:
    what a decompression bomb looks like to the walk."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def test_a_giant_image_an_endless_pipe_and_link_loops_are_named_and_the_rest_ingested(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    (archive / "sub").mkdir(parents=True)
    sf.write(archive / "voice.wav", tone(2.0, 220.0), SR_IN)
    upright_photo().save(archive / "sub" / "photo.jpg")
    giant_png(archive / "giant.png")
    os.mkfifo(archive / "endless.wav")                  # reading it would wait for ever
    os.symlink("loop.m4a", archive / "loop.m4a")        # a link to itself
    os.symlink("..", archive / "sub" / "up")            # a folder link back into the archive
    report = ingest(archive, tmp_path / "data", IngestConfig(samplerate=16000, image_size=64), progress=False)
    skipped = {s["file"]: s["reason"] for s in report.skipped}
    assert "too large an image" in skipped["giant.png"] and "900" in skipped["giant.png"]   # 900 megapixels
    assert "named pipe" in skipped["endless.wav"]
    assert "loop" in skipped["loop.m4a"] and "not followed" in skipped["loop.m4a"]
    assert "link to a folder" in skipped[os.path.join("sub", "up")]
    assert [c["file"] for c in report.clips] == ["voice.wav"]
    assert [p["file"] for p in report.photos] == [os.path.join("sub", "photo.jpg")]
    text = (tmp_path / "data" / "report.txt").read_text(encoding="utf-8")
    assert all(name in text for name in ("giant.png", "endless.wav", "loop.m4a"))


def test_a_decoder_that_hangs_or_crashes_costs_only_its_file() -> None:
    import time

    from engine.train.isolate import Isolated

    with Isolated(time.sleep, timeout_s=0.5, memory_mb=256) as slow:
        hung = slow(30.0)                              # a decoder that never returns
        assert not hung.ok and "took longer than 0.5 s" in hung.problem
        assert slow(0.01).ok                           # a fresh worker takes the next file
    with Isolated(os._exit, timeout_s=10.0, memory_mb=256) as crashing:
        dead = crashing(3)
        assert not dead.ok and "crashed" in dead.problem and "exit code 3" in dead.problem
    with Isolated(bytearray, timeout_s=30.0, memory_mb=64) as greedy:
        big = greedy(1 << 30)                          # a gigabyte where 64 MB are allowed
        assert not big.ok and big.error_type == "MemoryError"
        assert greedy(16).ok


def test_an_interrupted_ingest_resumes_without_decoding_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C in the middle of a long ingest: the files decoded so far are kept in OUT/.ingest and
    the next run takes them from there; the finished dataset equals an uninterrupted one."""
    from engine.train import ingest as ingest_module

    archive = tmp_path / "archive"
    archive.mkdir()
    for i in range(4):
        sf.write(archive / f"note{i}.wav", tone(1.5, 200.0 + 50 * i), SR_IN)
    cfg = IngestConfig(samplerate=16000, image_size=64)
    whole = ingest(archive, tmp_path / "whole", cfg, progress=False)

    calls = {"n": 0}
    real_put = ingest_module.Journal.put

    def put_then_stop(self, digest, outcome):          # the third decoded file never finishes
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        real_put(self, digest, outcome)

    monkeypatch.setattr(ingest_module.Journal, "put", put_then_stop)
    with pytest.raises(KeyboardInterrupt):
        ingest(archive, tmp_path / "data", cfg, progress=False)
    assert (tmp_path / "data" / ".ingest" / "journal.jsonl").read_text().count("\n") == 2
    monkeypatch.setattr(ingest_module.Journal, "put", real_put)
    resumed = ingest(archive, tmp_path / "data", cfg, progress=False)
    assert resumed.resumed == 2 and len(resumed.clips) == 4
    assert not (tmp_path / "data" / ".ingest").exists()
    a, b = load_dataset(tmp_path / "whole"), load_dataset(tmp_path / "data")
    assert np.array_equal(a.audio, b.audio) and np.array_equal(a.index, b.index)
    assert whole.resumed == 0
