"""The shared-memory block a parent process and its child share: the status of both worker
processes (the audio process, engine/audio/output.py; the generator process,
engine/visual/worker.py) travels through one of these.

Layout: `slots` float64 words (counters, states, times, rings of timings), then `texts` text
fields of `text_bytes` each (UTF-8, NUL-terminated, cut to fit), then `payload_bytes` of raw
bytes the owner lays out itself (the generator's keyframe slots). The parent creates the block
(`StatusBlock(..., name=None)`) and unlinks it; the child attaches by `name`.

Threads and processes: one writer per word (the child writes counters, the parent writes
requests); readers tolerate a word changing under them (each word is a whole float64). No locks.
"""

from __future__ import annotations

from dataclasses import dataclass
from multiprocessing import shared_memory

import numpy as np


@dataclass(frozen=True)
class BlockLayout:
    """The sizes of a StatusBlock: float64 words, text fields and their bytes, raw payload bytes."""

    slots: int
    texts: int = 0
    text_bytes: int = 512
    payload_bytes: int = 0

    @property
    def text_at(self) -> int:
        return 8 * self.slots

    @property
    def payload_at(self) -> int:
        return self.text_at + self.texts * self.text_bytes

    @property
    def size(self) -> int:
        return self.payload_at + self.payload_bytes


class StatusBlock:
    """Views into one shared-memory block of `layout`: `ctl` (slots,) float64, text fields by
    number, payload arrays. Create with `name=None` (zeroed), attach with the creator's `name`."""

    def __init__(self, layout: BlockLayout, name: str | None = None) -> None:
        self.layout = layout
        if name is None:
            self.shm = shared_memory.SharedMemory(create=True, size=layout.size)
        else:
            self.shm = shared_memory.SharedMemory(name=name)
        self._owner = name is None
        buf = self.shm.buf
        if buf is None:
            raise OSError(f"shared memory {self.shm.name}: no buffer")
        self._buf: memoryview = buf
        self.ctl = np.ndarray((layout.slots,), np.float64, buffer=buf)
        if self._owner:
            self._buf[:] = b"\0" * layout.size

    @property
    def name(self) -> str:
        return self.shm.name

    def text(self, field: int) -> str:
        """Text field `field` (0-based)."""
        start = self.layout.text_at + field * self.layout.text_bytes
        raw = bytes(self._buf[start:start + self.layout.text_bytes])
        return raw.split(b"\0", 1)[0].decode("utf-8", "replace")

    def set_text(self, field: int, value: str) -> None:
        """Write text field `field`, cut to its size (at a character boundary's worth of bytes)."""
        data = value.encode("utf-8")[: self.layout.text_bytes - 1] + b"\0"
        start = self.layout.text_at + field * self.layout.text_bytes
        self._buf[start:start + len(data)] = data

    def payload(self, shape: tuple[int, ...], dtype: type | np.dtype, offset: int = 0) -> np.ndarray:
        """A view of the payload region, `offset` bytes in."""
        view: np.ndarray = np.ndarray(shape, dtype, buffer=self._buf, offset=self.layout.payload_at + offset)
        return view

    def close(self) -> None:
        """Drop this process's views and mapping; the creator also unlinks the block. Views
        handed out by `payload` must be gone first."""
        del self.ctl
        del self._buf
        self.shm.close()
        if self._owner:
            try:
                self.shm.unlink()
            except FileNotFoundError:
                pass


__all__ = ["BlockLayout", "StatusBlock"]
