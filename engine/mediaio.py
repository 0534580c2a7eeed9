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


# Video containers and codecs in the order they are tried: H.264 + AAC in MP4 plays everywhere;
# an FFmpeg built without libx264 falls back to VP9 + Opus in WebM, then MPEG-4 Part 2 + AAC.
VIDEO_FORMATS = (("mp4", "libx264", "aac"), ("webm", "libvpx-vp9", "libopus"), ("mp4", "mpeg4", "aac"))


def video_format() -> tuple[str, str, str]:
    """(container extension, video codec, audio codec): the first of VIDEO_FORMATS this PyAV's
    FFmpeg can encode. Raises ValueError naming what was tried."""
    import av

    for ext, vcodec, acodec in VIDEO_FORMATS:
        try:
            av.codec.Codec(vcodec, "w")
            av.codec.Codec(acodec, "w")
        except (av.FFmpegError, ValueError):
            continue
        return ext, vcodec, acodec
    raise ValueError("this FFmpeg (inside PyAV) has none of the video encoders "
                     + ", ".join(f"{v}+{a}" for _, v, a in VIDEO_FORMATS))


class VideoWriter:
    """A video file with sound, written frame by frame (`ciel render --video`).

    `frame(image)` encodes one (H, W, 3) uint8 picture at `fps`; `close(sound)` encodes the whole
    sound ((N, 2) float in [-1, 1] at `rate` Hz, starting with the first frame) and finishes the file.
    Same frames and sound, same decoded frames: the encoder runs with fixed settings (x264's
    output does not depend on its threads). Main thread."""

    def __init__(self, path: str, width: int, height: int, fps: float, rate: int, codecs: tuple[str, str]) -> None:
        import av

        self._av = av
        self.path = path
        self.fps = Fraction(fps).limit_denominator(1001)
        self.out = av.open(path, "w")
        vcodec, self.acodec = codecs
        options = {"crf": "18", "preset": "medium"} if vcodec == "libx264" else {}
        video = self.out.add_stream(vcodec, rate=self.fps, options=options)
        audio = self.out.add_stream(self.acodec, rate=48000 if self.acodec == "libopus" else rate, layout="stereo")
        if not isinstance(video, av.VideoStream) or not isinstance(audio, av.AudioStream):
            raise ValueError(f"{vcodec}/{self.acodec}: not a video and an audio encoder")
        video.width, video.height = width, height
        video.pix_fmt = "yuv420p"
        self.video, self.audio, self.rate = video, audio, rate
        self.count = 0

    def frame(self, image: np.ndarray) -> None:
        picture = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")  # (H, W, 3) uint8
        picture.pts = self.count
        picture.time_base = 1 / self.fps
        self.count += 1
        for packet in self.video.encode(picture):
            self.out.mux(packet)

    def close(self, sound: np.ndarray) -> None:
        for packet in self.video.encode(None):
            self.out.mux(packet)
        rate, stream = self.rate, self.audio
        x = np.ascontiguousarray(np.clip(np.asarray(sound, np.float32).T, -1.0, 1.0))   # (2, N)
        frame = self._av.AudioFrame.from_ndarray(x, format="fltp", layout="stereo")
        frame.sample_rate = rate
        frame.pts = 0
        frame.time_base = Fraction(1, rate)
        for packet in stream.encode(frame):
            self.out.mux(packet)
        for packet in stream.encode(None):
            self.out.mux(packet)
        self.out.close()
