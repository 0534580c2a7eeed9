"""Where the broadcast's scenes come from: a baked folder, or the models, live.

Both give a `SceneMedia` for a scene id; the broadcast's preparer thread calls `prepare` a few
scenes ahead of the clock, so a slow disk or generator never delays a scene change.

- `BakedScenes` reads a folder written by `ciel bake` (engine/scenes.py's format) and cycles
  through its scenes in index order: scene id n shows entry n mod count. The index is re-read when
  it changes, so a bake still running adds scenes to the broadcast.
- `LiveScenes` renders each scene with engine/scenes.py from seed = web.seed + scene id (the same
  server clock and seed give every visitor, and a restarted server, the same scene), writes it with
  the baked-folder writer into a temporary folder and serves it like a baked one.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .. import baked, scenes
from ..params import REGISTRY
from ..patch import Patch
from ..web.media import IMAGE_TYPES, SOUND_TYPES, Media, mp3
from ..web.server import SceneMedia

log = logging.getLogger("ciel.web")
SEED_MODULUS = 2**31 - 1


def scene_media(entry: baked.BakedScene) -> SceneMedia:
    """Read one baked scene's files (Ogg Opus or WAV sound, PNG/JPEG/WebP image) and make the MP3 copy."""
    ctype, ext = SOUND_TYPES.get(entry.audio.suffix.lower(), ("application/octet-stream", "bin"))
    sound = Media.of(entry.audio.read_bytes(), ctype, ext)
    ictype, iext = IMAGE_TYPES.get(entry.image.suffix.lower(), ("application/octet-stream", "bin"))
    image = Media.of(entry.image.read_bytes(), ictype, iext)
    fallback = mp3(sound.data) if ext == "ogg" else None
    return SceneMedia(name=f"{entry.id} (seed {entry.seed})", sound=sound, image=image, sound_fallback=fallback)


class BakedScenes:
    """Scenes from a baked folder; scene id n → entry n mod count. Raises ConfigError if unreadable."""

    def __init__(self, folder: str | Path, cache: int = 8) -> None:
        self.folder = Path(folder)
        self._mtime = 0.0
        self._entries: list[baked.BakedScene] = []
        self._cache: OrderedDict[str, SceneMedia] = OrderedDict()
        self._max = cache
        self._reload()

    def _reload(self) -> None:
        mtime = (self.folder / baked.INDEX).stat().st_mtime if (self.folder / baked.INDEX).exists() else 0.0
        if mtime != self._mtime or not self._entries:
            self._entries = baked.read_index(self.folder)
            self._mtime = mtime
            log.info("broadcast: %d baked scenes in %s", len(self._entries), self.folder)

    def __len__(self) -> int:
        return len(self._entries)

    def prepare(self, scene_id: int) -> SceneMedia:
        """Called from the preparer thread: read (or take from the cache) entry scene_id mod count."""
        self._reload()
        entry = self._entries[scene_id % len(self._entries)]
        key = f"{entry.id}:{entry.audio.stat().st_mtime_ns}"
        media = self._cache.get(key)
        if media is None:
            media = scene_media(entry)
            self._cache[key] = media
            while len(self._cache) > self._max:
                self._cache.popitem(last=False)
        return media


def patch_values(patch: Patch) -> np.ndarray:
    """The registry's defaults with the patch's parameter values written in (the scene's knobs)."""
    values = REGISTRY.defaults()
    for name, value in patch.params.items():
        values[REGISTRY.slot(name)] = value
    return values


class LiveScenes:
    """Scenes rendered by the patch's models as the clock needs them (`seconds` of sound each).

    The models load on the first `prepare` (in the preparer thread), with `threads` torch threads so
    the server stays responsive on a small machine.
    """

    def __init__(self, patch: Patch, seconds: float, seed: int = 0, rate: int = scenes.OPUS_RATE,
                 threads: int = 1) -> None:
        self.patch, self.seconds, self.seed, self.rate, self.threads = patch, seconds, seed, rate, threads
        self.values = patch_values(patch)
        self._models: tuple[object, object] | None = None
        self._lock = threading.Lock()
        self._tmp = tempfile.TemporaryDirectory(prefix="ciel-broadcast-")

    def _load(self) -> tuple[object, object]:
        if self._models is None:
            import torch

            from ..audio.model import load_audio_model
            from ..visual.model import load_image_model

            torch.set_num_threads(self.threads)
            self._models = (load_audio_model(self.patch.audio.model, self.patch.audio.trust), load_image_model(self.patch.visual.model))
        return self._models

    def prepare(self, scene_id: int) -> SceneMedia:
        """Render scene `scene_id` (seconds of work), encode it, and drop the temporary files."""
        with self._lock:
            audio_model, image_model = self._load()
            seed = (self.seed + scene_id) % SEED_MODULUS
            sound = scenes.render_sound(audio_model, seed, self.values, self.seconds, self.rate,
                                       voices=self.patch.audio.voices)
            picture = scenes.render_image(image_model, seed, self.values)
            folder = Path(self._tmp.name)
            sid = f"live{scene_id}"
            names = scenes.write_scene_files(folder, sid, sound, picture, self.rate, wav=False)
            entry = baked.BakedScene(sid, seed, folder / names["audio"], folder / names["image"], self.seconds)
            try:
                return scene_media(entry)
            finally:
                for name in names.values():
                    (folder / name).unlink(missing_ok=True)

    def close(self) -> None:
        self._tmp.cleanup()
