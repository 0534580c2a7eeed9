"""Files the broadcast serves, content-addressed, and the encoders that make them.

A `Media` is bytes with a content type and a SHA-1 based name, so its URL never changes meaning
and browsers may cache it for a year. Sound goes out as the Ogg Opus files that
engine/scenes.py writes (small; Chrome, Firefox, Edge, Safari 17+ decode them) with an MP3 copy made
here for browsers that cannot decode Opus; images as PNG (or JPEG/WebP from a baked folder).
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from ..mediaio import encode_audio

MP3_BITRATE = 96000


@dataclass(frozen=True)
class Media:
    """One file: `data` bytes, `ctype` (MIME type), `etag` (24 hex digits of its SHA-1), `ext`."""

    data: bytes
    ctype: str
    etag: str
    ext: str

    @classmethod
    def of(cls, data: bytes, ctype: str, ext: str) -> Media:
        return cls(data, ctype, hashlib.sha1(data).hexdigest()[:24], ext)

    @property
    def url(self) -> str:
        return f"/media/{self.etag}.{self.ext}"

    @property
    def etag_header(self) -> str:
        return f'"{self.etag}"'


class MediaStore:
    """A bounded, thread-safe map etag → Media; the least recently added is dropped first."""

    def __init__(self, max_items: int = 30) -> None:
        self.max_items = max_items
        self._items: OrderedDict[str, Media] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, media: Media) -> None:
        with self._lock:
            self._items[media.etag] = media
            self._items.move_to_end(media.etag)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def get(self, etag: str) -> Media | None:
        with self._lock:
            return self._items.get(etag)


def decode(data: bytes) -> tuple[np.ndarray, int, int]:
    """Any sound file PyAV reads → (samples (channels, frames) float32, rate, channels)."""
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        rate, layout = stream.rate, stream.layout.name
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        chunks = [f.to_ndarray() for frame in container.decode(stream) for f in resampler.resample(frame)]
    samples = np.concatenate(chunks, axis=1) if chunks else np.zeros((1, 0), np.float32)
    return samples, rate, samples.shape[0]


def mp3(data: bytes) -> Media:
    """A sound file (Ogg Opus, WAV, ...) → MP3 at 96 kbit/s per channel: the copy for browsers
    that cannot decode Ogg Opus. Takes about 1/50 of the sound's length on one core."""
    samples, rate, channels = decode(data)
    samples = samples[:2] if channels >= 2 else samples[:1]                   # (C, N), C = 1 or 2
    out_rate = rate if rate in (32000, 44100, 48000) else 48000
    encoded = encode_audio(samples, rate, "mp3", "libmp3lame", out_rate=out_rate,
                           bit_rate=MP3_BITRATE * samples.shape[0])
    return Media.of(encoded, "audio/mpeg", "mp3")


SOUND_TYPES = {".ogg": ("audio/ogg", "ogg"), ".opus": ("audio/ogg", "ogg"), ".wav": ("audio/wav", "wav"),
               ".mp3": ("audio/mpeg", "mp3"), ".m4a": ("audio/mp4", "m4a")}
IMAGE_TYPES = {".png": ("image/png", "png"), ".jpg": ("image/jpeg", "jpg"), ".jpeg": ("image/jpeg", "jpg"),
               ".webp": ("image/webp", "webp")}
