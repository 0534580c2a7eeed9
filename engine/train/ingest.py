"""Archive ingest: a messy folder copied off a phone → a compact dataset and a report.

`ingest(archive, out, config)` walks `archive` (nested folders, any file names, including names
that are not valid UTF-8), and for every file:

- photos (anything Pillow reads: JPEG, PNG, GIF, WebP, BMP, TIFF, ...) are turned upright from
  their EXIF orientation, centre-cropped to a square and resized to `image_size`² RGB;
- everything else goes to FFmpeg (PyAV): the first audio track of voice notes and videos (AMR,
  3GP, MP4, M4A, MP3, WAV, OGG, ...) is decoded, mixed to mono and resampled to `samplerate`,
  leading and trailing silence is trimmed and long pauses inside are shortened, loudness is
  normalised (RMS of the active frames, with a peak ceiling), and clips shorter than
  `min_seconds` are padded with silence rather than dropped;
- exact duplicates (same bytes) and files whose decoded content repeats an earlier one are skipped.

A file that cannot be used is listed in the report with its reason; nothing stops the walk.

Each sound clip keeps a *class* (what `ciel train audio --condition folder` conditions on): the
top-level folder it lay in under the archive (`speech/a.wav` and `speech/2019/b.m4a` are both
`speech`; a file directly in the archive folder has none), or, with a label file
(`ingest(..., labels=FILE)`, `ciel ingest --labels FILE`), the label the file gives it: a CSV of
`path,label` rows, the path relative to the archive as the report writes it, an optional
`path,label` header, `#` comment lines; files it does not name have no class.

Dataset folder (all written atomically, readable with `load_dataset`):

    audio.npy        int16 [total_samples]      every clip, one after another
    audio_index.npy  int64 [clips, 2]           (start, length) of each clip in audio.npy
    audio_class.npy  int64 [clips]              each clip's class (index into classes.json; -1: none)
    classes.json     {"names": [...], "source": "folders" | "labels FILE"}: class names, sorted
    images.npy       uint8 [photos, H, W, 3]
    ingest.toml      the resolved IngestConfig
    report.json      counts, durations, every kept item and every skipped file with its reason
    report.txt       the same for a person to read

(audio_class.npy and classes.json only when at least one clip has a class: an archive of loose
files makes the same dataset as before classes existed.)

Runs on the calling thread (the CLI's main thread). Each file is decoded in a worker process with a
time and a memory limit (`file_timeout_s`, `file_memory_mb`; engine.train.isolate): a file that
hangs FFmpeg or crashes a decoder is named in the report and the walk goes on. Symbolic links are
listed, never followed (a link can loop); pipes and devices are listed, never opened.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..configio import atomic_write, build, dumps_toml, field, read_toml, to_table
from ..errors import ConfigError, DatasetError, SkippedFile
from .isolate import Isolated, Outcome

AUDIO_FILE = "audio.npy"
AUDIO_INDEX_FILE = "audio_index.npy"
AUDIO_CLASS_FILE = "audio_class.npy"
CLASSES_FILE = "classes.json"
IMAGES_FILE = "images.npy"
CONFIG_FILE = "ingest.toml"
REPORT_JSON = "report.json"
REPORT_TXT = "report.txt"

# Files an archive usually carries that are neither sound nor picture: reported, never decoded.
NOT_MEDIA = {".txt", ".json", ".xml", ".html", ".htm", ".db", ".ini", ".plist", ".pdf", ".doc",
             ".docx", ".vcf", ".csv", ".log", ".zip", ".apk", ".exe", ".md", ".toml", ".py"}
# Photo suffixes: a file with one of these that Pillow cannot read is a broken photo, not a video.
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".heic", ".heif",
                  ".dng", ".ppm", ".pgm"}

try:  # HEIC photos (newer iPhones) when the optional pillow-heif package is installed
    from pillow_heif import register_heif_opener

    register_heif_opener()
except ImportError:
    pass


@dataclass(frozen=True)
class IngestConfig:
    """How an archive becomes a dataset (saved as ingest.toml in the dataset)."""

    samplerate: int = field(16000, minimum=4000, maximum=96000, doc="Audio sample rate of the dataset (Hz).")
    image_size: int = field(256, minimum=16, maximum=2048, doc="Side of the square photos (pixels).")
    audio: bool = field(True, doc="Take sound from voice notes and videos.")
    images: bool = field(True, doc="Take photos.")
    silence_db: float = field(-55.0, minimum=-120.0, maximum=0.0, doc="A 20 ms frame quieter than this (dBFS) is silence.")
    silence_below_peak_db: float = field(45.0, minimum=6.0, maximum=120.0, doc="...or this far below the loudest frame.")
    max_pause_s: float = field(0.75, minimum=0.0, maximum=60.0, doc="Pauses inside a clip are shortened to this (s).")
    target_rms_db: float = field(-20.0, minimum=-60.0, maximum=0.0, doc="Loudness of the active frames after normalising (dBFS RMS).")
    peak_db: float = field(-1.0, minimum=-40.0, maximum=0.0, doc="Peak ceiling after normalising (dBFS).")
    min_seconds: float = field(1.0, minimum=0.0, maximum=60.0, doc="Shorter clips are padded with silence to this length (s).")
    min_active_seconds: float = field(0.05, minimum=0.0, maximum=10.0, doc="Less sound than this after trimming counts as silent (s).")
    max_file_seconds: float = field(3600.0, minimum=1.0, maximum=86400.0, doc="Only the first this-many seconds of a long file are used.")
    truncated_ratio: float = field(0.9, minimum=0.0, maximum=1.0, doc="Decoding less than this share of the declared duration flags the file as truncated.")
    file_timeout_s: float = field(120.0, minimum=0.01, maximum=86400.0, doc="A file whose decoding takes longer is skipped (its decoder process is stopped).")
    file_memory_mb: int = field(3072, minimum=64, maximum=1 << 20, doc="Memory the decoding of one file may use (MB).")
    max_image_megapixels: float = field(250.0, minimum=1.0, maximum=10000.0, doc="Larger images are skipped (a 200 MP phone photo is 200).")


@dataclass
class Report:
    """What the ingest used and what it skipped (written as report.json / report.txt)."""

    archive: str
    files_seen: int = 0
    clips: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    photos: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    skipped: list[dict[str, str]] = dataclasses.field(default_factory=list)
    warnings: list[dict[str, str]] = dataclasses.field(default_factory=list)
    seconds_taken: float = 0.0
    resumed: int = 0     # files an interrupted ingest had decoded, taken from its journal
    class_source: str = "folders"   # where the clips' classes come from: "folders" or "labels FILE"

    def skip(self, name: str, reason: str) -> None:
        self.skipped.append({"file": name, "reason": reason})

    def warn(self, name: str, note: str) -> None:
        self.warnings.append({"file": name, "note": note})

    def summary(self, samplerate: int) -> dict[str, Any]:
        return {
            "files_seen": self.files_seen,
            "clips": len(self.clips),
            "photos": len(self.photos),
            "skipped": len(self.skipped),
            "warnings": len(self.warnings),
            "audio_seconds": round(sum(c["seconds"] for c in self.clips), 3),
            "source_audio_seconds": round(sum(c["source_seconds"] for c in self.clips), 3),
            "padded_clips": sum(1 for c in self.clips if c["padded"]),
            "samplerate": samplerate,
            "seconds_taken": round(self.seconds_taken, 3),
            "resumed": self.resumed,
        }

    def to_json(self, samplerate: int, config: IngestConfig) -> dict[str, Any]:
        return {"archive": self.archive, "summary": self.summary(samplerate), "config": to_table(config),
                "class_source": self.class_source,
                "clips": self.clips, "photos": self.photos, "skipped": self.skipped, "warnings": self.warnings}

    def to_text(self, samplerate: int) -> str:
        s = self.summary(samplerate)
        lines = [
            f"ciel ingest of {self.archive}",
            f"files seen: {s['files_seen']}",
            f"sound clips kept: {s['clips']} ({_hms(s['audio_seconds'])} after trimming and padding, "
            f"{_hms(s['source_audio_seconds'])} in the sources, {s['padded_clips']} short clips padded), "
            f"{samplerate} Hz mono",
            f"photos kept: {s['photos']}",
            f"skipped: {s['skipped']}",
            f"took {s['seconds_taken']:.1f} s",
        ]
        lines += self.class_lines(samplerate)
        if self.skipped:
            lines += ["", "skipped files:"] + [f"  {d['file']}: {d['reason']}" for d in self.skipped]
        if self.warnings:
            lines += ["", "kept with a note:"] + [f"  {d['file']}: {d['note']}" for d in self.warnings]
        return "\n".join(lines) + "\n"


    def class_lines(self, samplerate: int) -> list[str]:
        """The classes the sound clips were given, with their clips and durations ([] for none)."""
        names = sorted({c["class"] for c in self.clips if c.get("class") is not None})
        if not names:
            return []
        lines = ["", f"classes ({self.class_source}; `ciel train audio --condition folder` conditions on them):"]
        for i, name in enumerate(names):
            mine = [c for c in self.clips if c.get("class") == name]
            lines.append(f"  {i} {name}: {len(mine)} clips, {_hms(sum(c['seconds'] for c in mine))}")
        loose = sum(1 for c in self.clips if c.get("class") is None)
        if loose:
            lines.append(f"  no class: {loose} clips ({'not named by the label file' if self.class_source != 'folders' else 'directly in the archive folder'}; "
                         "a conditioned training leaves them out)")
        return lines


def _hms(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


def display_name(path: str, root: str) -> str:
    """A printable, JSON-safe relative name: bytes that are not UTF-8 appear as \\xNN."""
    rel = os.path.relpath(path, root)
    return os.fsencode(rel).decode("utf-8", "backslashreplace")


def walk(root: str) -> Iterator[tuple[str, str | None]]:
    """Every entry under `root`, depth first, in sorted order (names may hold surrogates), as
    (path, None) for a regular file to ingest or (path, why it is not) for a symbolic link (never
    followed: a link can loop, or lead out of the archive) and for pipes, sockets and devices
    (never opened: reading a pipe can wait for ever)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort(key=os.fsencode)
        for name in list(dirnames):
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                dirnames.remove(name)
                yield path, f"a link to a folder ({_link_target(path)}): not followed"
        for name in sorted(filenames, key=os.fsencode):
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                yield path, f"a symbolic link ({_link_target(path)}): not followed"
            elif not os.path.isfile(path):
                yield path, f"not a regular file ({_file_kind(path)}): never opened"
            else:
                yield path, None


def _link_target(path: str) -> str:
    try:
        target = os.readlink(path)
    except OSError:
        return "unreadable"
    try:
        os.stat(path)
    except OSError as exc:
        why = "a loop" if exc.errno == 40 else "broken"   # ELOOP
        return f"{why}: {os.fsencode(target).decode('utf-8', 'backslashreplace')}"
    return f"to {os.fsencode(target).decode('utf-8', 'backslashreplace')}"


def _file_kind(path: str) -> str:
    import stat

    try:
        mode = os.lstat(path).st_mode
    except OSError as exc:
        return f"cannot be read: {exc.strerror}"
    for test, word in ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return word
    return "of an unknown kind"


def file_hash(path: str) -> str:
    """sha256 of the file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --- photos -------------------------------------------------------------------------------------

def load_photo(fh: io.BufferedReader, size: int, max_megapixels: float = 250.0) -> tuple[np.ndarray, tuple[int, int]] | None:
    """An upright, centre-cropped `size`² RGB photo as uint8 [size, size, 3], plus the source size;
    None when Pillow does not recognise the file. Raises SkippedFile for a recognised but broken
    image, and for one of more than `max_megapixels` (read from its header, before any decoding)."""
    try:
        img: Image.Image = Image.open(fh)
    except UnidentifiedImageError:
        return None
    except Image.DecompressionBombError as exc:
        raise SkippedFile(f"too large an image for a photo ({exc})") from None
    except (OSError, ValueError) as exc:
        raise SkippedFile(f"broken image ({exc})") from None
    w, h = img.size
    if w * h > max_megapixels * 1e6:
        raise SkippedFile(f"too large an image for a photo: {w} x {h} pixels ({w * h / 1e6:.0f} megapixels; "
                          f"max_image_megapixels is {max_megapixels:g})")
    try:
        if img.format == "JPEG":
            img.draft("RGB", (size * 2, size * 2))  # decode at a reduced scale: much faster for phone photos
        img.load()
        img = ImageOps.exif_transpose(img)
        src = img.size
        if img.mode != "RGB":
            img = img.convert("RGBA").convert("RGB") if "A" in img.getbands() or img.mode == "P" else img.convert("RGB")
        img = ImageOps.fit(img, (size, size), method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise SkippedFile(f"broken image ({exc})") from None
    return np.asarray(img, dtype=np.uint8).copy(), src


# --- sound --------------------------------------------------------------------------------------

def decode_audio(fh: io.BufferedReader, cfg: IngestConfig) -> tuple[np.ndarray, float | None]:
    """The first audio track as float32 mono at `cfg.samplerate` and its declared duration (s).

    Raises SkippedFile when FFmpeg cannot read the file or it has no audio track."""
    try:
        container = av.open(fh, mode="r")
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:
        raise SkippedFile(f"not a readable sound, video or image file ({_ff_reason(exc)})") from None
    with container:
        streams = container.streams.audio
        if not streams:
            kinds = ", ".join(sorted({s.type for s in container.streams})) or "nothing"
            raise SkippedFile(f"no audio track (the file holds {kinds})")
        stream = streams[0]
        declared = None
        if stream.duration is not None and stream.time_base is not None:
            declared = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            declared = container.duration / 1_000_000
        resampler = av.AudioResampler(format="flt", layout="mono", rate=cfg.samplerate)
        limit = int(cfg.max_file_seconds * cfg.samplerate)
        chunks: list[np.ndarray] = []
        total = 0
        errors = 0
        try:
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.FFmpegError:
                    errors += 1  # a damaged packet: keep what decodes around it
                    continue
                for frame in frames:
                    for out in resampler.resample(frame):
                        chunks.append(out.to_ndarray().reshape(-1))
                        total += chunks[-1].size
                if total >= limit:
                    break
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except (av.FFmpegError, ValueError) as exc:
            if not chunks:
                raise SkippedFile(f"audio track cannot be decoded ({_ff_reason(exc)})") from None
    if not chunks or total == 0:
        raise SkippedFile("audio track is empty (no samples decode)" + (f"; {errors} damaged packets" if errors else ""))
    x = np.concatenate(chunks)[:limit].astype(np.float32, copy=False)
    if not np.all(np.isfinite(x)):
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    return x, declared


def riff_declared_seconds(head: bytes) -> float | None:
    """Duration a RIFF/WAVE header declares (data chunk size / byte rate), from the file's first bytes.

    FFmpeg estimates a WAV's duration from the file size, so a cut-off WAV looks whole to it; the
    header still says how long the recording was."""
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos, byte_rate = 12, 0
    while pos + 8 <= len(head):
        cid, size = head[pos:pos + 4], int.from_bytes(head[pos + 4:pos + 8], "little")
        if cid == b"fmt " and pos + 16 <= len(head):
            byte_rate = int.from_bytes(head[pos + 16:pos + 20], "little")
        if cid == b"data":
            return size / byte_rate if byte_rate and size < 0xFFFFFFF0 else None
        pos += 8 + size + (size & 1)
    return None


def _ff_reason(exc: BaseException) -> str:
    msg = getattr(exc, "strerror", None) or str(exc)
    return str(msg).split(": '")[0].strip() or type(exc).__name__


def frame_db(x: np.ndarray, frame: int) -> np.ndarray:
    """RMS level (dBFS) of consecutive `frame`-sample frames of `x` (the last frame zero-padded)."""
    n = -(-x.size // frame)
    padded = np.zeros(n * frame, dtype=np.float32)
    padded[: x.size] = x
    rms = np.sqrt(np.mean(padded.reshape(n, frame) ** 2, axis=1) + 1e-20)
    return 20.0 * np.log10(rms)


def clean_audio(x: np.ndarray, cfg: IngestConfig) -> tuple[np.ndarray, float]:
    """Trim silence, shorten long pauses, normalise loudness, pad short clips.

    x: float32 mono at cfg.samplerate. Returns (clip, seconds of sound before padding). Raises
    SkippedFile for a silent file."""
    frame = max(1, cfg.samplerate // 50)  # 20 ms
    db = frame_db(x, frame)
    loudest = float(db.max())
    if loudest < cfg.silence_db:
        level = "digital silence" if loudest < -150 else f"loudest 20 ms at {loudest:.0f} dBFS"
        raise SkippedFile(f"silent ({level}, threshold {cfg.silence_db:.0f} dBFS)")
    active = db >= max(cfg.silence_db, loudest - cfg.silence_below_peak_db)
    if active.sum() * frame < cfg.min_active_seconds * cfg.samplerate:
        raise SkippedFile(f"silent (only {active.sum() * 20} ms of sound above the threshold)")
    # keep active frames, and of each pause at most max_pause_s (half before, half after the cut)
    keep = active.copy()
    max_gap = int(round(cfg.max_pause_s * 50))
    idx = np.flatnonzero(active)
    keep[idx[0]: idx[-1] + 1] = True
    gaps = np.flatnonzero(np.diff(idx) > max_gap + 1)
    for g in gaps:
        a, b = idx[g] + 1, idx[g + 1]
        keep[a + max_gap // 2: b - (max_gap - max_gap // 2)] = False
    mask = np.repeat(keep, frame)[: x.size]
    y = x[mask]
    rms_db = 10.0 * np.log10(np.mean(np.square(x[np.repeat(active, frame)[: x.size]])) + 1e-20)
    gain_db = min(cfg.target_rms_db - rms_db, cfg.peak_db - 20.0 * np.log10(np.abs(y).max() + 1e-20))
    y = (y * np.float32(10.0 ** (gain_db / 20.0))).astype(np.float32)
    sound = y.size / cfg.samplerate
    need = int(round(cfg.min_seconds * cfg.samplerate))
    if y.size < need:
        y = np.concatenate([y, np.zeros(need - y.size, np.float32)])
    return y, sound


def to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)


# --- the walk -----------------------------------------------------------------------------------

def read_labels(path: Path) -> dict[str, str]:
    """A label file: CSV rows `path,label` (the path relative to the archive, as the ingest report
    writes it; an optional `path,label` header; blank and `#` lines skipped) -> {path: label}.
    ConfigError naming the file and the line for a malformed row or a path labelled twice."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(str(path), "", "label file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), "", f"cannot read the label file ({exc})") from None
    labels: dict[str, str] = {}
    for number, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise ConfigError(str(path), f"line {number}", f"expected `path,label` (two fields, neither empty), got {row!r}")
        name, label = row[0].strip(), row[1].strip()
        if number == 1 and (name.lower(), label.lower()) == ("path", "label"):
            continue
        name = name.removeprefix("./")
        if labels.get(name, label) != label:
            raise ConfigError(str(path), f"line {number}", f"{name} is labelled twice ({labels[name]!r}, then {label!r})")
        labels[name] = label
    return labels


def clip_class(name: str, labels: dict[str, str] | None) -> str | None:
    """The class of the archive file `name` (relative, as the report writes it): its label when
    there is a label file, else its top-level folder (None for a file directly in the archive)."""
    if labels is not None:
        return labels.get(name)
    top, sep, _rest = name.partition(os.sep)
    return top if sep else None


def ingest(archive: str | os.PathLike[str], out: str | os.PathLike[str], config: IngestConfig = IngestConfig(),
           progress: bool = True, labels: str | os.PathLike[str] | None = None) -> Report:
    """Ingest every file under `archive` into the dataset folder `out`; returns the report.

    Each sound clip's class is its top-level folder, or its label in the `labels` file (see the
    module). Raises DatasetError when `archive` is not a folder or `out` cannot be written, and
    ConfigError for a malformed label file. Bad files never raise: each becomes a `skipped`
    entry with its reason."""
    from tqdm import tqdm

    root = os.fspath(archive)
    if not os.path.isdir(root):
        raise DatasetError(f"{root}: archive folder not found")
    out_dir = Path(out)
    if out_dir.resolve().is_relative_to(Path(root).resolve()):
        raise DatasetError(f"{out_dir}: the dataset folder must be outside the archive {root}")
    label_map = read_labels(Path(labels)) if labels is not None else None
    t0 = time.monotonic()
    report = Report(archive=os.fsencode(root).decode("utf-8", "backslashreplace"))
    if labels is not None:
        report.class_source = f"labels {Path(labels).name}"
    entries = list(walk(root))
    report.files_seen = len(entries)
    seen_bytes: dict[str, str] = {}
    seen_content: dict[str, str] = {}
    clips: list[np.ndarray] = []
    photos: list[np.ndarray] = []
    journal = Journal(out_dir / ".ingest", config)
    try:
        with Isolated(decode_file, config.file_timeout_s, config.file_memory_mb) as decoder:
            for path, problem in tqdm(entries, desc="ingest", unit="file", disable=not progress, dynamic_ncols=True):
                name = display_name(path, root)
                try:
                    if problem is not None:
                        raise SkippedFile(problem)
                    _ingest_one(path, name, config, report, seen_bytes, seen_content, clips, photos, decoder, journal,
                                clip_class(name, label_map))
                except SkippedFile as exc:
                    report.skip(name, str(exc))
                except OSError as exc:
                    report.skip(name, f"cannot read ({exc.strerror or exc})")
    finally:
        journal.close()
    if label_map is not None:
        seen = {display_name(path, root) for path, _ in entries}
        unknown = sorted(set(label_map) - seen)
        if unknown:
            report.warn(Path(labels or "").name, f"names {len(unknown)} files the archive does not hold: "
                                                 + ", ".join(unknown[:5]) + (", ..." if len(unknown) > 5 else ""))
    report.seconds_taken = time.monotonic() - t0
    report.resumed = journal.resumed
    write_dataset(out_dir, config, report, clips, photos)
    journal.finish()
    return report


Decoded = tuple[str, np.ndarray, Any]
"""("photo", uint8 [S, S, 3], (width, height)) or ("sound", float32 [samples], declared seconds or None)."""


def decode_file(job: tuple[str, str, IngestConfig]) -> Decoded:
    """Decode one file (path, name, config): a photo, else its sound. Runs in the decoder process
    (engine.train.isolate), where a hang or a crash costs only that process. Raises SkippedFile."""
    path, name, cfg = job
    ext = os.path.splitext(name)[1].lower()
    Image.MAX_IMAGE_PIXELS = int(cfg.max_image_megapixels * 1e6)   # this process only
    with open(path, "rb") as fh:
        photo = load_photo(fh, cfg.image_size, cfg.max_image_megapixels) if cfg.images else None
        if photo is not None:
            return "photo", photo[0], photo[1]
        if ext in PHOTO_SUFFIXES:
            hint = " (install pillow-heif for HEIC photos)" if ext in (".heic", ".heif") else ""
            raise SkippedFile(f"not a readable image: Pillow cannot identify this {ext} file{hint}")
        if not cfg.audio:
            raise SkippedFile("not a photo (sound ingest is off)")
        fh.seek(0)
        riff = riff_declared_seconds(fh.read(4096))
        fh.seek(0)
        x, declared = decode_audio(fh, cfg)
    return "sound", x, max(declared or 0.0, riff or 0.0) or None


class Journal:
    """What an ingest under way has decoded, kept in OUT/.ingest/ so that an interrupted ingest
    (Ctrl-C, a closed laptop, a crash) resumes where it stopped instead of decoding it all again.

    One line of `journal.jsonl` per decoded file, keyed by the file's sha256, with its array in a
    numbered .npy beside it; failures (a hang, a crash) are kept too, so a resume does not wait
    for them again. A different ingest config discards the folder; a finished ingest removes it.
    The caller's thread only.
    """

    def __init__(self, folder: Path, cfg: IngestConfig) -> None:
        self.folder = folder
        self.resumed = 0
        self._entries: dict[str, dict[str, Any]] = {}
        settings = json.dumps(to_table(cfg), sort_keys=True)
        try:
            if folder.is_dir() and (folder / "config.json").read_text(encoding="utf-8") != settings:
                shutil.rmtree(folder)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "config.json").write_text(settings, encoding="utf-8")
        except OSError as exc:
            raise DatasetError(f"{folder}: cannot keep the ingest's progress ({exc.strerror})") from None
        try:
            lines = (folder / "journal.jsonl").read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            lines = []
        for line in lines:
            try:
                entry = json.loads(line)
                self._entries[str(entry["digest"])] = entry
            except (ValueError, KeyError, TypeError):
                continue   # the line being written when the last run stopped
        self._log = (folder / "journal.jsonl").open("a", encoding="utf-8")

    def get(self, digest: str) -> Outcome[Decoded] | None:
        """The outcome kept for a file with these bytes, or None (also when its array is gone)."""
        entry = self._entries.get(digest)
        if entry is None:
            return None
        try:
            if not entry["ok"]:
                outcome: Outcome[Decoded] = Outcome(False, problem=entry["problem"], error_type=entry["error_type"])
            else:
                data = np.load(self.folder / entry["array"], allow_pickle=False)
                extra = tuple(entry["extra"]) if entry["kind"] == "photo" else entry["extra"]
                outcome = Outcome(True, value=(entry["kind"], data, extra))
        except (OSError, ValueError, KeyError):
            return None
        self.resumed += 1
        return outcome

    def put(self, digest: str, outcome: Outcome[Decoded]) -> None:
        entry: dict[str, Any] = {"digest": digest, "ok": outcome.ok, "problem": outcome.problem,
                                 "error_type": outcome.error_type}
        if outcome.ok and outcome.value is not None:
            kind, data, extra = outcome.value
            entry.update(kind=kind, array=f"{len(self._entries):06d}.npy",
                         extra=list(extra) if kind == "photo" else extra)
            atomic_write(self.folder / entry["array"], _npy_bytes(data))
        self._entries[digest] = entry
        self._log.write(json.dumps(entry) + "\n")
        self._log.flush()

    def finish(self) -> None:
        """The dataset is written: the progress is no longer needed."""
        self._log.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def close(self) -> None:
        self._log.close()


def _ingest_one(path: str, name: str, cfg: IngestConfig, report: Report, seen_bytes: dict[str, str],
                seen_content: dict[str, str], clips: list[np.ndarray], photos: list[np.ndarray],
                decoder: Isolated[tuple[str, str, IngestConfig], Decoded], journal: Journal,
                cls: str | None = None) -> None:
    ext = os.path.splitext(name)[1].lower()
    if os.path.getsize(path) == 0:
        raise SkippedFile("empty file (0 bytes)")
    if ext in NOT_MEDIA:
        raise SkippedFile(f"not a sound, video or photo ({ext} file)")
    digest = file_hash(path)
    if digest in seen_bytes:
        raise SkippedFile(f"duplicate of {seen_bytes[digest]}")
    seen_bytes[digest] = name
    outcome = journal.get(digest)
    if outcome is None:
        outcome = decoder((path, name, cfg))
        journal.put(digest, outcome)
    if not outcome.ok or outcome.value is None:
        if outcome.error_type in ("SkippedFile", ""):
            raise SkippedFile(outcome.problem)
        raise SkippedFile(f"unexpected {outcome.error_type} while decoding ({outcome.problem})")
    kind, data, extra = outcome.value
    if kind == "photo":
        _dedupe(data.tobytes(), name, seen_content)
        photos.append(data)
        report.photos.append({"file": name, "source_size": list(extra)})
        return
    x, declared = data, extra
    source_seconds = x.size / cfg.samplerate
    if declared and declared > 0.5 and source_seconds < cfg.truncated_ratio * declared \
            and source_seconds < cfg.max_file_seconds:
        report.warn(name, f"truncated: {source_seconds:.2f} s of the declared {declared:.2f} s decode; kept what is there")
    clip, sound = clean_audio(x, cfg)
    padded = clip.size > round(sound * cfg.samplerate)
    pcm = to_int16(clip)
    _dedupe(pcm.tobytes(), name, seen_content)
    clips.append(pcm)
    report.clips.append({"file": name, "source_seconds": round(source_seconds, 3),
                         "seconds": round(pcm.size / cfg.samplerate, 3), "padded": padded,
                         **({"class": cls} if cls is not None else {})})
    if clip.size - round(sound * cfg.samplerate) > 0.05 * cfg.samplerate:
        report.warn(name, f"short clip ({sound:.3f} s of sound): padded with silence to {cfg.min_seconds:g} s")


def _dedupe(content: bytes, name: str, seen: dict[str, str]) -> None:
    digest = hashlib.sha256(content).hexdigest()
    if digest in seen:
        raise SkippedFile(f"same content as {seen[digest]}")
    seen[digest] = name


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def write_dataset(out: Path, cfg: IngestConfig, report: Report, clips: list[np.ndarray],
                  photos: list[np.ndarray]) -> None:
    """Write the arrays, the resolved config and the report into `out`, each file atomically."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(f"{out}: cannot create the dataset folder ({exc.strerror})") from None
    lengths = np.array([c.size for c in clips], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if clips else np.zeros(0, np.int64)
    audio = np.concatenate(clips) if clips else np.zeros(0, np.int16)
    s = cfg.image_size
    images = np.stack(photos) if photos else np.zeros((0, s, s, 3), np.uint8)
    atomic_write(out / AUDIO_FILE, _npy_bytes(audio))
    atomic_write(out / AUDIO_INDEX_FILE, _npy_bytes(np.stack([starts, lengths], axis=1) if clips else np.zeros((0, 2), np.int64)))
    names = sorted({c["class"] for c in report.clips if c.get("class") is not None})
    if names:
        index = {name: i for i, name in enumerate(names)}
        classes = np.array([index.get(c.get("class"), -1) for c in report.clips], dtype=np.int64)
        atomic_write(out / AUDIO_CLASS_FILE, _npy_bytes(classes))
        atomic_write(out / CLASSES_FILE, json.dumps({"names": names, "source": report.class_source},
                                                    indent=1, ensure_ascii=False) + "\n")
    else:   # a dataset made again from loose files: no classes left over from an earlier ingest
        (out / AUDIO_CLASS_FILE).unlink(missing_ok=True)
        (out / CLASSES_FILE).unlink(missing_ok=True)
    atomic_write(out / IMAGES_FILE, _npy_bytes(images))
    atomic_write(out / CONFIG_FILE, dumps_toml(to_table(cfg)))
    atomic_write(out / REPORT_JSON, json.dumps(report.to_json(cfg.samplerate, cfg), indent=1, ensure_ascii=False) + "\n")
    atomic_write(out / REPORT_TXT, report.to_text(cfg.samplerate))


# --- reading a dataset --------------------------------------------------------------------------

@dataclass(frozen=True)
class Dataset:
    """A dataset folder, memory-mapped: audio int16 [samples], index int64 [clips, 2], images uint8
    [N, H, W, 3]; classes: the class names (sorted; empty when no clip has one) and clip_class
    int64 [clips], each clip's index into them (-1: none; None when the dataset has no classes)."""

    folder: Path
    config: IngestConfig
    audio: np.ndarray
    index: np.ndarray
    images: np.ndarray
    summary: dict[str, Any]
    classes: tuple[str, ...] = ()
    clip_class: np.ndarray | None = None


def load_config(path: Path) -> IngestConfig:
    """An IngestConfig from a TOML file (ConfigError naming the file and key on a bad value)."""
    return build(IngestConfig, read_toml(path), str(path))


def load_dataset(folder: str | os.PathLike[str]) -> Dataset:
    """Open a dataset written by `ingest`; DatasetError names the missing or unreadable file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: dataset folder not found (make one with `ciel ingest ARCHIVE -o {folder}`)")
    try:
        cfg = load_config(folder / CONFIG_FILE)
    except ConfigError as exc:
        raise DatasetError(str(exc)) from None
    arrays = {}
    for name, dtype, ndim in ((AUDIO_FILE, np.int16, 1), (AUDIO_INDEX_FILE, np.int64, 2), (IMAGES_FILE, np.uint8, 4)):
        try:
            arr = np.load(folder / name, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{folder / name}: not a readable dataset array ({exc})") from None
        if arr.dtype != dtype or arr.ndim != ndim:
            raise DatasetError(f"{folder / name}: expected {np.dtype(dtype).name} with {ndim} dimensions, "
                               f"got {arr.dtype} {arr.shape}")
        arrays[name] = arr
    try:
        summary = json.loads((folder / REPORT_JSON).read_text("utf-8")).get("summary", {})
    except (OSError, ValueError):
        summary = {}
    names, clip_class = _load_classes(folder, len(arrays[AUDIO_INDEX_FILE]))
    return Dataset(folder, cfg, arrays[AUDIO_FILE], arrays[AUDIO_INDEX_FILE], arrays[IMAGES_FILE], summary,
                   names, clip_class)


def _load_classes(folder: Path, clips: int) -> tuple[tuple[str, ...], np.ndarray | None]:
    """(class names, int64 [clips]) of a dataset, or ((), None) when it has no classes.
    DatasetError naming the file when one is there but does not match the clips."""
    names_path, class_path = folder / CLASSES_FILE, folder / AUDIO_CLASS_FILE
    if not names_path.exists() and not class_path.exists():
        return (), None
    try:
        names = json.loads(names_path.read_text("utf-8"))["names"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{names_path}: expected {{\"names\": [class names]}} ({exc})") from None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise DatasetError(f"{names_path}: names: expected a list of class names, got {names!r}")
    try:
        arr = np.load(class_path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{class_path}: not a readable dataset array ({exc})") from None
    if arr.dtype != np.int64 or arr.shape != (clips,) or (clips and (arr.min() < -1 or arr.max() >= len(names))):
        raise DatasetError(f"{class_path}: expected int64 [{clips}] classes in [-1, {len(names) - 1}], "
                           f"got {arr.dtype} {arr.shape}")
    return tuple(names), arr
