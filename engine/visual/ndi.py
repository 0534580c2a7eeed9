"""NDI out: the sky as an NDI source (`ciel run --ndi NAME`), for Resolume, TouchDesigner, OBS,
vMix or another machine on the LAN, as Autolume sends its pictures.

`NdiSender(name, fps)` is a `FrameSink` (engine/visual/window.py): the render loop hands it each
frame, (H, W, 4) uint8 RGBA top row first; a thread of its own passes the newest one to the NDI
runtime, so the render thread never waits for the network (newest frame wins, as everywhere in
the picture path). Alpha is the oval's coverage: receivers get the sky with a transparent
surround. With `listen(tap)` the sound goes too: before each frame, what the audio process
played since the last one (its speakers, read from shared memory), so sound and picture leave
together. The library is `ndi-python` (the `ndi` extra), whose wheel carries NewTek's
NDI runtime; it needs the system's Avahi client library (Debian: libavahi-client3), not the Avahi
daemon. Receivers find the source by mDNS on a LAN, or by asking this machine's port 5960
directly (NDI's "extra IPs") where mDNS does not run.

Threads: `send` on the render thread; the sender thread calls NDI; `close` from the render thread
at the end of the show. A failure of the NDI runtime becomes `error` (a line on the overlay and in
/healthz); the show goes on.
"""

from __future__ import annotations

import logging
import threading
from types import ModuleType
from typing import Protocol

import numpy as np

from ..errors import CielError

log = logging.getLogger(__name__)


class SoundTap(Protocol):
    """What the show plays, for NDI's sound (engine/audio/output.py: OutputTap): `take()` -> the
    samples (n, channels) float32 new since the last call; `rate()` -> their sample rate (Hz)."""

    def take(self) -> np.ndarray: ...

    def rate(self) -> int: ...


def load_ndi() -> ModuleType:
    """The NDI library, started; CielError saying what to install when it is missing or cannot start."""
    try:
        import NDIlib
    except ImportError as exc:
        raise CielError(f"--ndi needs the NDI library: pip install 'ciel[ndi]' (ndi-python; {exc})") from None
    except OSError as exc:   # the runtime's own shared libraries
        raise CielError(f"the NDI runtime does not load ({exc}); on Debian: apt-get install libavahi-client3") from None
    if not NDIlib.initialize():
        raise CielError("the NDI runtime did not start (it needs a CPU with SSE4.2)")
    return NDIlib


class NdiSender:
    """An NDI video source named `name` at `fps` frames per second (the render loop's cap)."""

    def __init__(self, name: str, fps: float) -> None:
        if not name.strip():
            raise CielError("--ndi: the source needs a name")
        self.ndi = ndi = load_ndi()
        self.name = name
        create = ndi.SendCreate()
        create.ndi_name = name
        create.clock_video = False    # the render loop paces the frames
        create.clock_audio = False
        self._send = ndi.send_create(create)
        if self._send is None:   # (the runtime stays initialised: another sender of this process may use it)
            raise CielError(f"--ndi {name}: an NDI source of that name already runs on this machine")
        self._frame = ndi.VideoFrameV2()
        self._frame.FourCC = ndi.FOURCC_VIDEO_TYPE_RGBA
        self._frame.frame_rate_N, self._frame.frame_rate_D = int(round(fps * 1000)), 1000
        self.error = ""
        self.sent = 0                    # frames handed to NDI
        self.dropped = 0                 # frames replaced by a newer one before they were sent
        self.samples_sent = 0            # sound frames (per channel) sent
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._next: np.ndarray | None = None    # the newest frame, not yet sent   (H, W, 4)
        self._spare: np.ndarray | None = None   # a buffer to copy the next frame into
        self._stop = False
        self._sound: SoundTap | None = None
        self._sound_lock = threading.Lock()   # listen(None) waits for a read of the tap in flight
        self._audio = ndi.AudioFrameV3()
        self._audio.FourCC = ndi.FOURCC_AUDIO_TYPE_FLTP
        self._thread = threading.Thread(target=self._run, name="ciel-ndi", daemon=True)
        self._thread.start()
        log.info("NDI source %r", name)

    def listen(self, sound: SoundTap | None) -> None:
        """Send `sound` with the picture: each video frame is preceded by the samples played since
        the one before (planar float32 at the device rate). `listen(None)` returns once no sound
        is being read any more (the tap's memory may then go)."""
        with self._sound_lock:
            self._sound = sound

    def send(self, frame: np.ndarray) -> None:
        """Render thread: keep a copy of `frame` (H, W, 4) uint8 RGBA as the newest; never waits."""
        with self._lock:
            buf = self._spare if self._spare is not None and self._spare.shape == frame.shape else None
            self._spare = None
        if buf is None:
            buf = np.empty(frame.shape, np.uint8)
        np.copyto(buf, frame)
        with self._lock:
            if self._next is not None:
                self.dropped += 1
                self._spare = self._next
            self._next = buf
        self._wake.set()

    def _run(self) -> None:
        ndi, video = self.ndi, self._frame
        while True:
            self._wake.wait()
            with self._lock:
                self._wake.clear()
                if self._stop:
                    return
                frame, self._next = self._next, None
            if frame is None:
                continue
            try:
                self._send_sound()
                video.data = frame                  # a pointer into `frame`: it lives until the send returns
                ndi.send_send_video_v2(self._send, video)
                self.sent += 1
                self.error = ""
            except Exception as exc:  # noqa: BLE001 — the NDI runtime's failure is data; the show goes on
                self.error = f"NDI {self.name}: {type(exc).__name__}: {exc}"
            with self._lock:
                if self._spare is None:
                    self._spare = frame

    def _send_sound(self) -> None:
        """The samples played since the last frame, as one planar audio frame (sender thread)."""
        with self._sound_lock:
            if self._sound is None:
                return
            samples = self._sound.take()                           # (n, C)
            rate = self._sound.rate()
        if not len(samples):
            return
        planar = np.ascontiguousarray(samples.T)                   # (C, n): a pointer to it is sent
        audio = self._audio
        audio.sample_rate = rate
        audio.no_channels, audio.no_samples = planar.shape
        audio.channel_stride_in_bytes = 4 * planar.shape[1]
        audio.data = planar
        self.ndi.send_send_audio_v3(self._send, audio)
        self.samples_sent += planar.shape[1]

    def close(self) -> None:
        """Stop the thread and withdraw the source."""
        with self._lock:
            self._stop = True
        self._wake.set()
        self._thread.join(5.0)
        if not self._thread.is_alive():
            self.ndi.send_destroy(self._send)
            self.ndi.destroy()
