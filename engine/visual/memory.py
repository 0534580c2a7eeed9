"""The last picture, kept across restarts: an installation that starts again (a crash, a lost
display, a power cut) shows the picture it last showed as soon as its window is open, without
running the generator in the render thread first.

`PictureMemory(path, resolution)`: `recall()` reads the file once at start (None when there is
none or it is not a picture of the model's size); `offer(keyframe)` is called by the render thread
with each keyframe it shows and only keeps a reference; a saver thread writes the newest one every
`interval_s` seconds (an uncompressed `.npz`, written beside and renamed over, so a reader never
sees half a file). Write errors (a full disk) are counted and said once, never raised: a picture
that cannot be kept never stops the show. `close()` writes the last one and stops the thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import zipfile
from pathlib import Path

import numpy as np

from ..parts import Keyframe

log = logging.getLogger("ciel.visual")


LAST_PICTURE = "last-picture.npz"   # its name in an installation's state folder


def recall_picture(path: Path) -> Keyframe | None:
    """The picture saved at `path`: a square uint8 RGB image (r, r, 3) and its back side, or None
    (missing, damaged, not square RGB). Any thread."""
    try:
        with np.load(path, allow_pickle=False) as data:
            image = np.asarray(data["image"])
            back = np.asarray(data["back"]) if "back" in data.files else None
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:   # damaged: start as without one
        log.warning("last picture %s not shown: %s", path, exc)
        return None
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or image.shape[0] != image.shape[1]:
        return None
    if back is not None and (back.dtype != np.uint8 or back.shape != image.shape):
        back = None
    return Keyframe(image, back, 0)


class PictureMemory:
    """The newest shown keyframe, saved to `path` every `interval_s` s. Threads: `offer` from the
    render thread, the saver on its own, `recall` and `close` from the main thread."""

    def __init__(self, path: Path, resolution: int, interval_s: float = 10.0) -> None:
        self.path, self.resolution, self.interval_s = Path(path), resolution, interval_s
        self.write_errors = 0
        self._offered: Keyframe | None = None
        self._saved: Keyframe | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ciel-picture-memory", daemon=True)
        self._thread.start()

    def recall(self) -> Keyframe | None:
        """The picture the last run showed, or None (missing, damaged, or of another size)."""
        shown = recall_picture(self.path)
        if shown is None or shown.image.shape[0] != self.resolution:
            return None
        return shown

    def offer(self, keyframe: Keyframe) -> None:
        """The render thread shows `keyframe` (kept by reference: keyframes are never written to)."""
        self._offered = keyframe

    def _save(self) -> None:
        keyframe = self._offered
        if keyframe is None or keyframe is self._saved:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:   # (R, R, 3) uint8 each
                if keyframe.back is None:
                    np.savez(fh, image=keyframe.image)
                else:
                    np.savez(fh, image=keyframe.image, back=keyframe.back)
            os.replace(tmp, self.path)
            self._saved = keyframe
        except OSError as exc:
            self.write_errors += 1
            if self.write_errors == 1:
                log.warning("cannot keep the last picture in %s: %s (the show goes on)", self.path, exc)
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            with self._lock:
                self._save()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        with self._lock:
            self._save()
