"""The audio process (started by engine/audio/output.py's `AudioProcess`; engine/workerproc.py).

It loads the model, opens a sounddevice OutputStream on the device chosen by name substring,
and runs the decode loop on its main thread:

    read SharedSnapshot -> SoundSource.step (one latent frame) -> ring (preallocated, float32 (frames, channels))

whenever the ring holds less than the run-ahead (`RunAhead`) of sound. The PortAudio callback
only copies from the ring (see `AudioChild.callback` for its rules), and, when an input is open,
copies the input into a listening ring; the decode loop analyses what ciel hears every few
milliseconds (`AudioChild.listen`, engine/audio/listen.py) into the status block. Recording takes what the
callback hands to PortAudio; a file named by `play()` is loaded on a thread of its own.
How the process ended is in its status block (engine/audio/status.py): STOPPED, or FAILED with
the kind of error and its one-line message.
"""

from __future__ import annotations

import gc
import math
import os
import queue
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import AudioDeviceError, ModelError
from ..params import REGISTRY, SharedSnapshot
from ..paramview import ParamView
from ..parts import SoundSource
from ..shmblock import StatusBlock
from ..workerproc import orphaned
from . import jacknames
from .config import AudioConfig
from .devices import _CALLBACK_PRIORITY, _DECODE_PRIORITY, _realtime, _wait_for_device
from .status import (
    _DEVICE,
    _ERROR,
    _N_STEP_TIMES,
    _PLAY,
    _S_AHEAD,
    _S_BLOCK,
    _S_CALLBACKS,
    _S_CB_TIME,
    _S_ERRKIND,
    _S_FILL,
    _S_HEARD,
    _S_HEARD_SEQ,
    _S_HEARTBEAT,
    _S_INPUT_FRAMES,
    _S_LATENCY,
    _S_MARK_POS,
    _S_MARK_SEQ,
    _S_MARK_TIME,
    _S_PANIC,
    _S_PEAK,
    _S_PID,
    _S_PLAY_SEQ,
    _S_PLAYING_SEQ,
    _S_PROBE,
    _S_RATE,
    _S_READ,
    _S_STALLS,
    _S_STATE,
    _S_STEP_TIMES,
    _S_STEPS,
    _S_STOP,
    _S_UNDERFLOWS,
    _S_WRITTEN,
    _S_XRUNS,
    ERR_DEVICE,
    ERR_MODEL,
    ERR_OTHER,
    FAILED,
    RUNNING,
    STOPPED,
    TAP_FRAMES,
    block_layout,
)

if TYPE_CHECKING:
    from .model import AudioModel


_WARM_STEPS = 4   # decode steps timed before the stream opens (TorchScript optimises after its first calls)
# the least run-ahead on a host that does not say its period (not JACK): ciel's default before it
# read JACK's period; the buffers of ALSA, CoreAudio or WASAPI devices are unknown to it
OTHER_HOST_AHEAD_MS = 6.0


class RunAhead:
    """How much sound (frames) the decode loop keeps queued: `low` at first; each underflow adds
    `up_ms`, up to `high`; every `calm_s` seconds without one takes `down_ms` off, down to `low`.
    A performer keeps the lowest latency the machine allows, and a machine that cannot hold it
    trades a few milliseconds of latency for no more dropouts. `update` takes the underflow count
    and a monotonic time (injected, so tests run hours in a moment). Audio process, decode loop."""

    def __init__(self, low: int, high: int, rate: int, up_ms: float = 1.0, down_ms: float = 0.5,
                 calm_s: float = 30.0) -> None:
        self.low, self.high = low, max(low, high)
        self.up, self.down = int(up_ms * rate / 1000), int(down_ms * rate / 1000)
        self.calm_s = calm_s
        self.frames = low
        self._seen: int | None = None
        self._since = 0.0

    def update(self, underflows: int, now: float) -> int:
        if self._seen is None:
            self._seen, self._since = underflows, now
        elif underflows != self._seen:
            self._seen, self._since = underflows, now
            self.frames = min(self.frames + self.up, self.high)
        elif self.frames > self.low and now - self._since >= self.calm_s:
            self._since = now
            self.frames = max(self.frames - self.down, self.low)
        return self.frames


def run_ahead_for(run_ahead: RunAhead, step_times_s: list[float], rate: int, blocksize: int, most: int) -> RunAhead:
    """The run-ahead for a decoder whose first steps took `step_times_s` (seconds): whole blocks
    (frames at `rate`), enough that the ring outlasts 1.5 times the slower of the last two steps.

    A step starts after the callback that leaves the ring under the run-ahead, so the ring then
    holds at least run-ahead - 1 block; the callbacks it can still serve, plus the one after
    (whose block the step fills), last floor(run-ahead / block) blocks. Run-aheads are kept above
    one block; the adaptive range above is kept; never more than `most` frames (the ring's half)."""
    blocks = max(1, math.ceil(1.5 * max(step_times_s[-2:]) * rate / blocksize))
    need = min(blocks * blocksize, most)
    if need <= run_ahead.low:
        return run_ahead
    return RunAhead(need, min(need + run_ahead.high - run_ahead.low, most), rate)


class _Ring:
    """Preallocated ring of `channels` (stereo by default); `pos[0]` frames read, `pos[1]` frames
    written (one writer each: the decoder writes the output ring, the callback reads it)."""

    def __init__(self, frames: int, channels: int = 2, shared: StatusBlock | None = None) -> None:
        size = 1 << max(10, math.ceil(math.log2(frames)))
        if shared is not None:   # the status block's payload (engine/audio/status.py: block_layout)
            self.pos = shared.payload((2,), np.int64)
            self.buf = shared.payload((TAP_FRAMES, channels), np.float32, offset=16)
            size = TAP_FRAMES
            self.pos[0] = self.pos[1]   # a restarted process reads from where the last one stopped
        else:
            self.buf = np.zeros((size, channels), np.float32)
            self.pos = np.zeros(2, np.int64)
        self.mask = size - 1

    @property
    def fill(self) -> int:
        return int(self.pos[1] - self.pos[0])

    def write(self, block: np.ndarray) -> None:
        n, w = len(block), int(self.pos[1])
        i = w & self.mask
        first = min(n, len(self.buf) - i)
        self.buf[i:i + first] = block[:first]
        if first < n:
            self.buf[: n - first] = block[first:]
        self.pos[1] = w + n

    def latest(self, out: np.ndarray) -> None:
        """The newest len(out) frames of the first channel into `out` (n,), oldest first."""
        n, w = len(out), int(self.pos[1])
        i = (w - n) & self.mask
        first = min(n, len(self.buf) - i)
        out[:first] = self.buf[i:i + first, 0]
        if first < n:
            out[first:] = self.buf[: n - first, 0]


def _recorder(path: str, rate: int, tap: _Ring, done: threading.Event, block: StatusBlock) -> None:
    """Writer thread of the audio process: what the callback played (the `tap` ring, written by
    the callback, read here) to a 24-bit WAV file. The header is updated every 0.5 s (libsndfile
    rewrites it on flush), so a killed process leaves a readable file. A writer that falls a whole
    ring behind skips ahead (the lost frames are counted in the status error line)."""
    import soundfile as sf

    lost = 0
    try:
        with sf.SoundFile(path, "w", samplerate=rate, channels=tap.buf.shape[1], subtype="PCM_24") as fh:
            last_flush = time.monotonic()
            while True:
                finished = done.is_set()
                r, w = int(tap.pos[0]), int(tap.pos[1])
                if w - r > len(tap.buf):
                    lost += w - r - len(tap.buf)
                    r = w - len(tap.buf)
                    block.set_text(_ERROR, f"recording to {path}: {lost} frames lost (disk too slow)")
                while r < w:
                    i = r & tap.mask
                    n = min(w - r, len(tap.buf) - i)
                    fh.write(tap.buf[i:i + n])
                    r += n
                tap.pos[0] = r
                if time.monotonic() - last_flush >= 0.5:
                    fh.flush()
                    last_flush = time.monotonic()
                if finished:
                    break
                time.sleep(0.05)
    except (OSError, RuntimeError) as exc:
        block.set_text(_ERROR, f"recording to {path} failed: {exc}")


def load_clip(path: str, rate: int) -> np.ndarray:
    """A sound file as a seamless mono loop at `rate` Hz, (n,) float32 (any rate and channel count
    libsndfile reads: WAV, FLAC, Ogg Vorbis/Opus). Raises AudioDeviceError naming the file."""
    import soundfile as sf
    import soxr

    from .stream import loop_clip

    try:
        data, file_rate = sf.read(path, dtype="float32", always_2d=True)
    except (OSError, RuntimeError) as exc:  # soundfile's LibsndfileError is a RuntimeError
        raise AudioDeviceError(f"cannot play {path}: {exc}") from None
    if not len(data):
        raise AudioDeviceError(f"cannot play {path}: the file holds no samples")
    mono = data.mean(axis=1)
    if file_rate != rate:
        mono = soxr.resample(mono, file_rate, rate, quality="HQ")
    return loop_clip(mono, rate)


def _clip_loader(path: str, seq: float, rate: int, out: queue.Queue[tuple[float, np.ndarray]],
                 block: StatusBlock) -> None:
    """Loader thread of the audio process: the file `play()` named (request `seq`), ready for
    `AudioSynth.play`. A file it cannot read becomes the status block's error line (cleared by the
    next file that loads); the sound goes on. Runs at normal priority: the decode loop it was
    started from runs at a realtime one."""
    try:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except (PermissionError, OSError, AttributeError):
        pass
    try:
        out.put((seq, load_clip(path, rate)))
    except AudioDeviceError as exc:
        block.set_text(_ERROR, str(exc))
        return
    if block.text(_ERROR).startswith("cannot play "):
        block.set_text(_ERROR, "")


def _child_main(cfg_table: dict, snapshot_name: str, status_name: str, seed: int, fade_in_s: float,
                wait_for_device: bool, tap_channels: int = 0) -> None:
    """Entry point of the audio process (a worker). How it ended is in the status block: STOPPED,
    or FAILED with the kind of error and its one-line message. `tap_channels` > 0: the block
    carries the shared output tap (what the callback plays, for the main process)."""
    block = StatusBlock(block_layout(tap_channels), status_name)
    st = block.ctl
    st[_S_PID] = os.getpid()
    try:
        AudioChild(AudioConfig(**cfg_table), snapshot_name, st, block, seed, fade_in_s, wait_for_device).run()
        st[_S_STATE] = STOPPED
    except AudioDeviceError as exc:
        _fail(st, block, ERR_DEVICE, str(exc))
    except ModelError as exc:
        _fail(st, block, ERR_MODEL, str(exc))
    except Exception as exc:  # noqa: BLE001 — the process boundary: any failure becomes a status line
        _fail(st, block, ERR_OTHER, f"{type(exc).__name__}: {exc}")
    finally:
        del st
        block.close()


def _fail(st: np.ndarray, block: StatusBlock, kind: float, message: str) -> None:
    block.set_text(_ERROR, message)
    st[_S_ERRKIND] = kind
    st[_S_STATE] = FAILED


class AudioChild:
    """The audio process's work, on its main thread (`run`), plus the PortAudio callback (a
    PortAudio/JACK thread) and the helper threads it starts (recorder, clip loader).

    cfg: the patch's `[audio]`; snapshot_name: the engine's parameter snapshot; st/block: the
    status block (`st` is `block.ctl`); seed: of the latent walks; fade_in_s: the start's fade;
    wait_for_device: wait for a vanished device to come back instead of failing.
    """

    def __init__(self, cfg: AudioConfig, snapshot_name: str, st: np.ndarray, block: StatusBlock, seed: int,
                 fade_in_s: float, wait_for_device: bool) -> None:
        self.cfg, self.snapshot_name, self.st, self.block = cfg, snapshot_name, st, block
        self.seed, self.fade_in_s, self.wait_for_device = seed, fade_in_s, wait_for_device
        self._first_callback = cfg.realtime
        self.steps = 0
        self.peak = 0.0
        self.play_seq = 0.0
        self.clips: queue.Queue[tuple[float, np.ndarray]] = queue.Queue(maxsize=4)
        self._loader: threading.Thread | None = None   # at most one file loads at a time
        self._want: tuple[float, str] | None = None    # the newest file play() asked for, not loading yet
        self.tap: _Ring | None = None
        self.rate = cfg.samplerate
        self._probe = 0                        # the latency probe's value slot, set in run()
        self._last_probe = 0.0
        self._peak_decay = 1.0
        self.heard_in: _Ring | None = None     # what the input brings (mono), when one is open
        self._heard_at = 0                     # frames of the listening clock at the last analysis
        self._off = 0                          # output channels left silent before ciel's first speaker

    # — the callback: real-time rules —
    def callback(self, outdata: np.ndarray, frames: int, time_info: Any, flags: Any) -> None:
        """PortAudio's callback (a PortAudio/JACK thread, at a realtime priority where allowed).

        The contract it keeps, as python-sounddevice asks of a callback:
        - it only copies: `frames` frames of the preallocated ring into `outdata` (from channel
          `channel_offset` on; zeros before it), zeros where the ring is short (an underflow,
          counted), and the same block into the recorder's ring;
        - it allocates no sample buffer (only the small objects Python makes for any
          statement: slice views, numpy scalars, floats), takes no lock, does no I/O, never
          waits for the decode loop and never raises (the ring's positions are plain int64
          words: one writer each); its first call also sets its thread's priority;
        - it touches only the ring, the tap, and status words in shared memory (its count and the
          time it ran, by which the decode loop sleeps until the next one);
        - the GIL is its only wait. The decode loop runs numpy in short steps and the switch
          interval is 0.5 ms; automatic garbage collection is off in this process (objects
          made while loading are frozen, and the decode loop collects the young generations in
          its idle time, all of them once a minute), so a collection never holds the
          interpreter in the middle of a cycle. Reading a sound file for `play()` runs on a loader thread and can still hold
          it for the length of one C call.
        """
        if self._first_callback:
            self._first_callback = False
            _realtime(_CALLBACK_PRIORITY)
        st, rb, pos, size = self.st, self._rb, self._pos, self._size
        if self._off:   # the channels before ciel's first speaker stay silent
            outdata[:, :self._off] = 0.0
            outdata = outdata[:, self._off:]
        r = int(pos[0])
        avail = int(pos[1]) - r
        n = frames if avail >= frames else max(avail, 0)
        i = r & self._mask
        first = min(n, size - i)
        outdata[:first] = rb[i:i + first]
        if first < n:
            outdata[first:n] = rb[: n - first]
        if n < frames:
            outdata[n:] = 0.0
            st[_S_UNDERFLOWS] += 1
        if flags.output_underflow:
            st[_S_XRUNS] += 1
        if self.tap is not None:
            self.tap.write(outdata)
        if r <= st[_S_MARK_POS] < r + n:
            # when that sample leaves at the port: the block's DAC time (PortAudio's clock) plus
            # the sample's place in the block, carried over to the monotonic clock
            dac = time_info.outputBufferDacTime - time_info.currentTime
            st[_S_MARK_TIME] = time.monotonic() + max(dac, 0.0) + (st[_S_MARK_POS] - r) / self.rate
        pos[0] = r + n
        st[_S_CALLBACKS] += 1
        st[_S_CB_TIME] = time.monotonic()

    def duplex_callback(self, indata: np.ndarray, outdata: np.ndarray, frames: int, time_info: Any,
                        flags: Any) -> None:
        """PortAudio's callback when an input is open (same thread and rules as `callback`): the
        input block (frames, 1) is copied into the listening ring, then the output as always."""
        ring = self.heard_in
        if ring is not None:
            ring.write(indata)
            self.st[_S_INPUT_FRAMES] += frames
        self.callback(outdata, frames, time_info, flags)

    # — the decode loop —
    def listen(self) -> None:
        """Every `Ear.hop` frames (of the input when one is open, else of ciel's own sound): the
        newest window of what `listen/source` chooses, analysed into the status block (decode loop)."""
        ear, own, inp = self.ear, self.own, self.heard_in
        clock = inp if inp is not None else own
        w = int(clock.pos[1])
        if w - self._heard_at < ear.hop:
            return
        frames, self._heard_at = w - self._heard_at, w
        source = self.values[self._listen_source]          # 0 both, 1 ciel alone, 2 the input alone
        x, extra = self._window, self._window2
        if source == 2:
            x[:] = 0.0
        else:
            own.latest(x)
        if inp is not None and source != 1:
            inp.latest(extra)
            x += extra
        h = ear.hear(x, min(frames, ear.size))
        st = self.st
        st[_S_HEARD], st[_S_HEARD + 1], st[_S_HEARD + 2], st[_S_HEARD + 3] = h.level_db, h.centroid, h.flatness, h.onset
        st[_S_HEARD_SEQ] += 1

    def decode_step(self) -> None:
        """One latent frame of sound into the ring (decode loop; main thread of the process)."""
        st, block, synth, values = self.st, self.block, self.synth, self.values
        self.snapshot.read_into(values)
        if st[_S_PLAY_SEQ] != self.play_seq:  # play() named a file (or none): load it off this loop
            self.play_seq = st[_S_PLAY_SEQ]
            path = block.text(_PLAY)
            self._want = (self.play_seq, path) if path else None
            if not path:
                synth.play(None, ParamView(values).audio_glide)
                st[_S_PLAYING_SEQ] = 0.0
        if self._want is not None and (self._loader is None or not self._loader.is_alive()):
            # one loader at a time, newest request next: a flood of scene changes cannot pile up
            # threads or files in memory
            asked, path = self._want
            self._want = None
            self._loader = threading.Thread(target=_clip_loader, args=(path, asked, self.model.sample_rate, self.clips, block),
                                            name="ciel-clip-loader", daemon=True)
            self._loader.start()
        while not self.clips.empty():
            asked, clip = self.clips.get_nowait()
            if asked == self.play_seq:  # a file asked for since then wins
                synth.play(clip, ParamView(values).audio_glide)
                st[_S_PLAYING_SEQ] = asked
        seq = self.snapshot.sequence
        out_index = synth.next_out_index
        t0 = time.perf_counter()
        sound = synth.step(values)                                               # (n, N) at the device rate
        st[_S_STEP_TIMES + self.steps % _N_STEP_TIMES] = (time.perf_counter() - t0) * 1e3
        self.steps += 1
        st[_S_STEPS] = self.steps
        if values[self._probe] != self._last_probe:
            self._last_probe = values[self._probe]
            st[_S_MARK_TIME] = 0.0
            st[_S_MARK_SEQ] = seq
            st[_S_MARK_POS] = out_index
        st[_S_PANIC] = 1.0 if synth.panicked else 0.0
        self.ring.write(sound)
        # (n, 1): the speakers' sum over two, so listen/* reads the same level over N speakers as in stereo
        self.own.write(sound.mean(axis=1, keepdims=True) if sound.shape[1] <= 2 else 0.5 * sound.sum(axis=1, keepdims=True))
        self.peak = max(self.peak * self._peak_decay, float(np.max(np.abs(sound))) if len(sound) else 0.0)
        st[_S_PEAK] = 20 * math.log10(max(self.peak, 1e-10))

    def _load_model(self) -> AudioModel:
        import torch

        from .model import load_audio_model

        torch.set_num_threads(self.cfg.threads)
        # numpy's BLAS on one thread too: the decoder's products are small, and a product spread
        # over threads waits for the slowest of them (on 2 busy cores that doubled a step's time)
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=self.cfg.threads, user_api="blas")
        sys.setswitchinterval(0.0005)  # the callback thread waits at most this long for the GIL
        self.model = model = load_audio_model(self.cfg.model, self.cfg.trust)
        return model

    def run(self) -> None:
        """Open the device, load the model, fill the ring and keep it filled until asked to stop
        (or orphaned). Raises AudioDeviceError / ModelError with one line."""
        cfg, st, block = self.cfg, self.st, self.block
        try:
            import sounddevice as sd
        except OSError as exc:
            raise AudioDeviceError(f"PortAudio not available ({exc}): install libportaudio2 or run with --audio none") from None
        named = jacknames.set_client_name(sd)   # JACK sees the client as `ciel`
        if not named.startswith("JACK client"):
            print(f"ciel-audio: {named}", file=sys.stderr, flush=True)
        # A first start looks for the device first (the quickest error for a wrong name); a restart
        # (the device or its server went away) loads the model first, so the sound is back as soon
        # as the device is.
        if self.wait_for_device:
            model = self._load_model()
        found = _wait_for_device(sd, cfg.device, st, block, self.wait_for_device)
        if found is None:
            return
        index, label = found
        block.set_text(_ERROR, "")
        if not self.wait_for_device:
            model = self._load_model()

        from .stream import AudioSynth

        self.snapshot = SharedSnapshot(REGISTRY.size, name=self.snapshot_name, create=False)
        self.values = np.empty(REGISTRY.size, np.float64)
        if not self.snapshot.read_into(self.values):
            self.values[:] = REGISTRY.defaults()

        rate = cfg.samplerate
        speakers = cfg.channels
        self._off = cfg.channel_offset
        width = self._off + speakers                # the stream's channels: the silent ones first
        outputs = int(sd.query_devices(index)["max_output_channels"])
        if width > outputs:
            raise AudioDeviceError(f"{label} has {outputs} output channels; [audio] channels = {speakers} from "
                                   f"channel_offset = {self._off} needs {width}")
        try:
            sd.check_output_settings(device=index, channels=width, dtype="float32", samplerate=rate)
        except sd.PortAudioError:
            rate = int(sd.query_devices(index)["default_samplerate"])  # e.g. JACK runs at its own rate
        self.rate = rate
        synth: SoundSource = AudioSynth(model, rate, self.seed, fade_in_s=self.fade_in_s, voices=cfg.voices,
                                        channels=speakers, layout=cfg.layout)
        self.synth = synth
        if st[_S_PANIC] > 0:  # a panic outlives a restart of the audio process
            synth.panic()
        # at least one block, and one host period: PortAudio fills a period larger than the block
        # with callbacks back to back, straight from the ring. JACK says its period; other hosts
        # (ALSA through PipeWire or Pulse, CoreAudio, WASAPI) do not, and keep OTHER_HOST_AHEAD_MS
        host_api = sd.query_hostapis(sd.query_devices(index)["hostapi"])["name"]
        if "JACK" in host_api:
            burst = max(cfg.blocksize, jacknames.period() or 0)
        else:
            burst = max(cfg.blocksize, int(OTHER_HOST_AHEAD_MS * rate / 1000))
        run_ahead = RunAhead(max(int(cfg.ahead_ms * rate / 1000), burst), int(cfg.ahead_max_ms * rate / 1000), rate)
        ahead = run_ahead.low
        self.ring = ring = _Ring(run_ahead.high + 8 * burst + 4 * model.hop * rate // model.sample_rate + 1024,
                                 channels=speakers)
        self._rb, self._mask, self._pos, self._size = ring.buf, ring.mask, ring.pos, len(ring.buf)
        # what the callback plays, for the recorder and, in the status block, for the main process (NDI)
        shared = self.block if self.block.layout.payload_bytes else None
        self.tap = _Ring(2 * rate, channels=speakers, shared=shared) if cfg.record or shared else None
        from .listen import Ear

        self.ear = Ear(rate)
        self.own = _Ring(2 * self.ear.size + 4 * model.hop * rate // model.sample_rate, channels=1)   # ciel's sound, mono
        self._window = np.zeros(self.ear.size, np.float32)
        self._window2 = np.zeros(self.ear.size, np.float32)
        self._listen_source = REGISTRY.index("listen/source")
        want_input = bool(cfg.input) and int(sd.query_devices(index)["max_input_channels"]) > 0
        if cfg.input and not want_input:
            block.set_text(_ERROR, f"{label} has no input channel: input {cfg.input!r} not opened, ciel hears only itself")
        if want_input:
            self.heard_in = _Ring(2 * self.ear.size + 4 * cfg.blocksize, channels=1)

        rec_done = threading.Event()
        rec_thread = None

        self._probe = int(st[_S_PROBE]) if st[_S_PROBE] >= 0 else REGISTRY.index("audio/jump")
        self._last_probe = self.values[self._probe]
        self._peak_decay = math.exp(-model.hop / (0.5 * model.sample_rate))  # per step: 0.5 s time constant

        if cfg.realtime:
            _realtime(_DECODE_PRIORITY)
        # the run-ahead must outlast one decode step as this machine runs it: a model whose frame
        # is long and dear (a RAVE export: 512-2048 samples, several ms each) needs more than
        # ahead_ms; ciel's own (4 ms frames at about 1 ms) never does
        warm: list[float] = []
        while ring.fill < ahead or len(warm) < _WARM_STEPS:
            t_step = time.perf_counter()
            self.decode_step()
            warm.append(time.perf_counter() - t_step)
        run_ahead = run_ahead_for(run_ahead, warm, rate, burst, len(ring.buf) // 2)
        ahead = run_ahead.low
        gc.collect()
        gc.freeze()      # what loading made is never scanned again
        gc.disable()     # collections run only in the decode loop's idle time (below)
        next_gc = time.monotonic()
        idle_collections = 0
        stream = None
        try:
            if self.heard_in is not None:
                try:
                    stream = sd.Stream(samplerate=rate, blocksize=cfg.blocksize, device=(index, index),
                                       channels=(1, width), dtype="float32", callback=self.duplex_callback, latency="low")
                except sd.PortAudioError as exc:   # the sound comes first: play without listening to the input
                    self.heard_in = None
                    block.set_text(_ERROR, f"input {cfg.input!r} not opened on {label}: {exc}; ciel hears only itself")
            if stream is None:
                stream = sd.OutputStream(samplerate=rate, blocksize=cfg.blocksize, device=index, channels=width,
                                         dtype="float32", callback=self.callback, latency="low")
            stream.start()
        except sd.PortAudioError as exc:
            raise AudioDeviceError(f"cannot open audio device {label} at {rate} Hz, block {cfg.blocksize}: {exc}") from None
        if "JACK" in host_api:
            wired = None if self.heard_in is None else ("" if cfg.input == "-" else cfg.input)
            note = jacknames.number_ports_from_one(input_port=wired)
            if "not connected" in note or "not open" in note:   # said where the performer looks: /healthz, the overlay
                block.set_text(_ERROR, note.split("; ", 1)[-1])
            if not note.startswith("JACK ports") or "not connected" in note or "not open" in note:
                print(f"ciel-audio: {note}", file=sys.stderr, flush=True)
        block.set_text(_DEVICE, label)
        st[_S_RATE], st[_S_BLOCK] = rate, cfg.blocksize
        latency = stream.latency      # a duplex stream gives (input, output)
        st[_S_LATENCY] = float(latency[1] if isinstance(latency, tuple) else latency) * 1e3
        st[_S_STATE] = RUNNING
        last_cb, last_cb_change = -1.0, time.monotonic()
        stopping = False
        busy = 0
        try:
            if self.tap is not None and cfg.record:   # joined below, before the tap's memory can go
                rec_thread = threading.Thread(target=_recorder, args=(cfg.record, rate, self.tap, rec_done, block),
                                              name="ciel-recorder", daemon=True)
                rec_thread.start()
            while True:
                now = time.monotonic()
                st[_S_HEARTBEAT] = now
                if (st[_S_STOP] > 0 or orphaned()) and not stopping:  # asked, or the main process ended
                    stopping = True
                    synth.fade_out(0.05)
                if stopping and synth.faded_out:  # the fade is decoded: play it out, then end
                    if ring.fill < cfg.blocksize:  # what is left is silence after the fade
                        break
                    time.sleep(cfg.blocksize / rate)
                    continue
                if st[_S_CALLBACKS] != last_cb:
                    last_cb, last_cb_change = st[_S_CALLBACKS], now
                elif now - last_cb_change > 1.0 or (now - last_cb_change > 0.05 and not stream.active):
                    # lost: callbacks stopped for a second, or PortAudio says the stream ended (its
                    # JACK host API does as soon as the server goes away). Said before the stream is
                    # torn down: closing a stream whose server died can hang, and the engine
                    # replaces this process as soon as it reads FAILED
                    message = f"audio device {label} stopped calling back (device lost)"
                    _fail(st, block, ERR_DEVICE, message)
                    raise AudioDeviceError(message)
                self.listen()
                ahead = run_ahead.update(int(st[_S_UNDERFLOWS]), now)
                fill = ring.fill
                st[_S_FILL], st[_S_READ], st[_S_WRITTEN] = fill, ring.pos[0], ring.pos[1]
                st[_S_AHEAD] = 1000.0 * ahead / rate
                if fill < ahead:
                    if self.steps > 0 and st[_S_CALLBACKS] > 0 and now - st[_S_CB_TIME] > 0.5 * burst / rate:
                        # a step began more than half a period after the callback that called for
                        # it: half its time to finish is gone, the next callback may underflow
                        st[_S_STALLS] += 1
                    self.decode_step()
                    busy += 1
                    if busy > 250:  # a second of audio without catching up: let the machine breathe
                        time.sleep(0.002)
                        busy = 0
                else:
                    busy = 0
                    if now >= next_gc:   # idle: the ring is full enough for this to fit in
                        idle_collections += 1
                        gc.collect(2 if idle_collections % 120 == 0 else 1)   # all generations once a minute
                        next_gc = now + 0.5
                    # sleep until the callback that takes the ring below `ahead` (callbacks take
                    # whole blocks), not in short polls: one wake-up per callback at most
                    due = st[_S_CB_TIME] + ((fill - ahead) // cfg.blocksize + 1) * cfg.blocksize / rate
                    time.sleep(max(0.0003, due + 0.0002 - time.monotonic()))
        finally:
            try:
                stream.abort() if not stopping else stream.stop()
                stream.close()
            except sd.PortAudioError:
                pass
            if rec_thread is not None:
                rec_done.set()
                rec_thread.join(5)
            self.snapshot.close()
