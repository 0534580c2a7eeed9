"""An NDI receiver for tests and benches: what Resolume or OBS on another machine would get from
`ciel run --ndi NAME`, through NDI's own runtime (ndi-python) over loopback.

mDNS does not run on every test machine, so the finder asks 127.0.0.1's NDI port (5960) directly
("extra IPs"); a LAN receiver finds the same source by mDNS.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from engine.visual.projection import layout


@dataclass
class Received:
    """What a receiver got: `frames` video frames in `seconds` after the first (its `first_at`,
    monotonic), each (H, W, 4) uint8 BGRA; `kept` holds the last few."""

    frames: int = 0
    seconds: float = 0.0
    first_at: float | None = None
    size: tuple[int, int] = (0, 0)   # (width, height)
    kept: list[np.ndarray] = field(default_factory=list)
    sound_rate: int = 0                                            # Hz, of the audio frames
    sound: list[np.ndarray] = field(default_factory=list)          # (channels, n) float32 each, in order

    @property
    def sound_samples(self) -> int:
        return sum(a.shape[1] for a in self.sound)

    @property
    def fps(self) -> float:
        return (self.frames - 1) / self.seconds if self.frames > 1 and self.seconds > 0 else 0.0


def receive(name: str, seconds: float, find_timeout: float = 60.0, keep: int = 3,
            on_first: Callable[[], object] | None = None) -> Received:
    """Find the NDI source `name` on this machine and take its video for `seconds` after the first
    frame (or until `find_timeout` passes with no frame); `on_first` is called when the first frame
    arrives. Raises LookupError when it is not found."""
    import NDIlib as ndi

    if not ndi.initialize():
        raise RuntimeError("the NDI runtime did not start")
    finder = receiver = None
    got = Received()
    try:
        create = ndi.FindCreate()
        create.extra_ips = "127.0.0.1"
        finder = ndi.find_create_v2(create)
        deadline = time.monotonic() + find_timeout
        source = None
        while source is None and time.monotonic() < deadline:
            ndi.find_wait_for_sources(finder, 1000)
            source = next((s for s in ndi.find_get_current_sources(finder) if s.ndi_name.endswith(f"({name})")), None)
        if source is None:
            raise LookupError(f"no NDI source named {name!r} within {find_timeout:g} s")
        settings = ndi.RecvCreateV3()
        settings.color_format = ndi.RECV_COLOR_FORMAT_BGRX_BGRA
        settings.bandwidth = ndi.RECV_BANDWIDTH_HIGHEST
        receiver = ndi.recv_create_v3(settings)
        ndi.recv_connect(receiver, source)
        end = deadline
        while time.monotonic() < end:
            # asking for audio and metadata too: a video-only capture loop misses most frames
            kind, video, audio, meta = ndi.recv_capture_v2(receiver, 1000)
            if kind == ndi.FRAME_TYPE_VIDEO:
                now = time.monotonic()
                if got.first_at is None:
                    got.first_at, end = now, now + seconds
                    if on_first is not None:
                        on_first()
                got.frames += 1
                got.seconds = now - got.first_at
                got.size = (int(video.xres), int(video.yres))
                got.kept = [*got.kept[-(keep - 1):], video.data.copy()] if keep > 0 else []
                ndi.recv_free_video_v2(receiver, video)
            elif kind == ndi.FRAME_TYPE_AUDIO:
                if got.first_at is not None:
                    got.sound_rate = int(audio.sample_rate)
                    got.sound.append(np.array(audio.data, np.float32, copy=True).reshape(int(audio.no_channels), -1))
                ndi.recv_free_audio_v2(receiver, audio)
            elif kind == ndi.FRAME_TYPE_METADATA:
                ndi.recv_free_metadata(receiver, meta)
        return got
    finally:
        if receiver is not None:
            ndi.recv_destroy(receiver)
        if finder is not None:
            ndi.find_destroy(finder)
        ndi.destroy()


def oval_fit(frame: np.ndarray) -> tuple[float, float]:
    """(share of the pixels inside the projection's oval that are opaque, share of the pixels
    outside it, away from the note circle, that are opaque) for a BGRA frame. ciel's sky is opaque
    exactly inside the oval and transparent around it, so a frame from ciel gives about (1, 0)."""
    h, w = frame.shape[:2]
    lay = layout(w, h)
    xs = (np.arange(w) + 0.5 - lay.cx) / lay.scale
    ys = ((h - 1 - np.arange(h)) + 0.5 - lay.cy) / lay.scale            # rows top-down
    x, y = np.meshgrid(xs, ys)                                           # (H, W) in plane units
    f = x * x / 8 + y * y / 2 - 1
    d = f / np.maximum(np.hypot(x / 4, y) / lay.scale, 1e-9)            # signed distance to the edge (px)
    rows = np.arange(h)[:, None]
    note = np.hypot(np.arange(w)[None, :] + 0.5 - lay.note_x, (h - rows - 0.5) - lay.note_y) < lay.note_r + 4
    opaque = frame[..., 3] > 127
    inside, outside = d < -2.0, (d > 2.0) & ~note
    return float(opaque[inside].mean()), float(opaque[outside].mean())
