"""One audio encoder for every file ciel writes in a compressed format (PyAV / FFmpeg).

Used for the baked scenes' Ogg Opus (engine/scenes.py), the broadcast page's MP3 copies
(engine/web/media.py) and the phone-codec voice notes of the generated archive
(engine/train/defaults.py: AAC in .m4a, AMR-NB). Any thread; nothing here is real-time.
"""

from __future__ import annotations

import io
from fractions import Fraction

import numpy as np

LAYOUTS = {1: "mono", 2: "stereo"}


def encode_audio(samples: np.ndarray, rate: int, container: str, codec: str, out_rate: int | None = None,
                 bit_rate: int | None = None) -> bytes:
    """Encode `samples` (C, N) float in [-1, 1], C = 1 or 2, at `rate` Hz into a `container`
    ("ogg", "mp3", "mp4", "amr"...) with `codec` ("libopus", "libmp3lame", "aac",
    "libopencore_amrnb"...); returns the file's bytes. The encoder resamples to `out_rate`
    (default `rate`) and cuts the codec's own frame sizes itself. Raises ValueError for a shape
    it cannot take."""
    import av

    x = np.asarray(samples, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] not in LAYOUTS:
        raise ValueError(f"encode_audio: expected (channels 1 or 2, frames) samples, got shape {x.shape}")
    layout = LAYOUTS[x.shape[0]]
    x = np.ascontiguousarray(np.clip(x, -1.0, 1.0))                       # (C, N)
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream(codec, rate=out_rate or rate, layout=layout)
        if bit_rate:
            stream.bit_rate = bit_rate
        frame = av.AudioFrame.from_ndarray(x, format="fltp", layout=layout)
        frame.sample_rate = rate
        frame.pts = 0
        frame.time_base = Fraction(1, rate)
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()
