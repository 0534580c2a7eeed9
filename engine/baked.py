"""The baked folder's format: its index and the checks a reader makes.

Baked folder (written by `ciel bake`, read by the scheduler and the broadcast page):

    OUT/index.json   {"version": 1, "name": ..., "created": ISO-8601 UTC, "samplerate": 48000,
                      "image_size": 256, "scenes": [{"id": "s0001", "seed": 123,
                      "audio": "s0001.ogg", "wav": "s0001.wav", "image": "s0001.png",
                      "seconds": 8.0}, ...]}
    OUT/s0001.ogg    the sound, Ogg Opus, stereo, 48 kHz (for the web)
    OUT/s0001.wav    the same sound, 16-bit PCM WAV at `samplerate` (optional; for playback
                     without a decoder)
    OUT/s0001.png    the image, RGB, square, `image_size` pixels

File names in the index are relative to the folder. `index.json` is written atomically after the
files it names, so a reader never sees a scene whose files are missing.

Written by `ciel bake` (engine/scenes.py), read by the scheduler and the broadcast page.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .configio import atomic_write
from .errors import ConfigError

INDEX = "index.json"
VERSION = 1


@dataclass(frozen=True)
class BakedScene:
    """One entry of a baked index, with absolute paths (`wav` is None when absent)."""

    id: str
    seed: int
    audio: Path
    image: Path
    seconds: float
    wav: Path | None = None


@dataclass(frozen=True)
class BakedFolder:
    """A baked folder and its checked scenes, in index order (what the scheduler plays)."""

    folder: Path
    entries: tuple[BakedScene, ...]

    @classmethod
    def read(cls, folder: str | Path, source: str | None = None) -> BakedFolder:
        """Read and check `folder`'s index (ConfigError naming the file and key, as read_index)."""
        return cls(Path(folder), tuple(read_index(folder, source)))


def read_index(folder: str | Path, source: str | None = None) -> list[BakedScene]:
    """The scenes of a baked folder, checked: every file named must exist.

    Raises ConfigError naming index.json, the key (e.g. `scenes[3].audio`) and what was expected.
    `source` is unused except to name who asked, when the folder itself is missing.
    """
    folder = Path(folder)
    path = folder / INDEX
    if not path.is_file():
        where = source or str(folder)
        raise ConfigError(where, "schedule.baked" if source else "", f"no baked scenes: {path} not found "
                          "(write a folder with `ciel bake --count N OUT/`)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(str(path), "", f"not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(str(path), "", "expected a JSON object")
    if data.get("version") != VERSION:
        raise ConfigError(str(path), "version", f"expected {VERSION}, got {data.get('version')!r}")
    entries = data.get("scenes")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(str(path), "scenes", "expected a non-empty list of scenes")
    out = []
    seen: set[str] = set()
    for i, e in enumerate(entries):
        key = f"scenes[{i}]"
        if not isinstance(e, dict):
            raise ConfigError(str(path), key, "expected an object")
        sid = _typed(e, "id", str, path, key)
        if sid in seen:
            raise ConfigError(str(path), key + ".id", f"duplicate scene id {sid!r}")
        seen.add(sid)
        seed = _typed(e, "seed", int, path, key)
        seconds = _typed(e, "seconds", (int, float), path, key)
        if not (math.isfinite(seconds) and seconds > 0):
            raise ConfigError(str(path), key + ".seconds", f"expected a positive number, got {seconds!r}")
        files: dict[str, Path] = {}
        for name in ("audio", "image", "wav"):
            if name == "wav" and name not in e:
                continue
            rel = _typed(e, name, str, path, key)
            f = (folder / rel).resolve()
            if folder.resolve() not in f.parents:
                raise ConfigError(str(path), f"{key}.{name}", f"expected a file inside the folder, got {rel!r}")
            if not f.is_file():
                raise ConfigError(str(path), f"{key}.{name}", f"file not found: {f}")
            files[name] = f
        out.append(BakedScene(sid, seed, files["audio"], files["image"], float(seconds), files.get("wav")))
    return out


def _typed(entry: dict[str, Any], name: str, typ: type | tuple[type, ...], path: Path, key: str) -> Any:
    value = entry.get(name)
    if isinstance(value, bool) or not isinstance(value, typ):
        want = typ.__name__ if isinstance(typ, type) else "number"
        raise ConfigError(str(path), f"{key}.{name}", f"expected {want}, got {value!r}")
    return value


def write_index(folder: Path, scenes: Sequence[dict[str, Any]], name: str, rate: int, image_size: int) -> Path:
    """Write index.json atomically."""
    data = {"version": VERSION, "name": name,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "samplerate": rate, "image_size": image_size, "scenes": list(scenes)}
    path = folder / INDEX
    atomic_write(path, json.dumps(data, indent=1) + "\n")
    path.chmod(0o644)  # readable by a web server running as another user, like the media files
    return path
