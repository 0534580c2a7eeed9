"""The audio process: decodes ahead into a ring buffer that a PortAudio callback copies out.

Main process: `AudioProcess(config, snapshot_name)` is the handle the engine owns. `start()` spawns
a child ('spawn' start method, so the child initialises PortAudio afresh and sees the devices of
now), `poll()` (main thread, each frame) restarts a child that died, stalled or lost its device,
`status()` reads the shared status block, `stop()` fades out and ends the child.

Child process (`_child_main`): loads the model, opens a sounddevice OutputStream on the device
chosen by name substring, and runs the decode loop on its main thread:

    read SharedSnapshot -> AudioSynth.step (one latent frame) -> ring (preallocated, float32 (N, 2))

whenever the ring holds less than the run-ahead (`ahead_ms`, raised after an underflow up to
`ahead_max_ms` and lowered again once calm: `RunAhead`) of sound. The PortAudio callback (a PortAudio/JACK
thread) only copies from the ring (`outdata[:] = ring[...]`); an empty ring gives zeros and counts
an underflow. Recording (`record = "file.wav"`) takes what the callback hands to PortAudio (after
the ring: an underflow's zeros are in it): the callback copies its block into a second ring, a
writer thread drains it to a 24-bit WAV whose header is brought up to date twice a second, so
the file stays readable if the process is killed.

Status travels back through a small shared-memory float64 block (`_S_*` slots) plus three text
fields (from the child: device name, last error; to it: the sound file `play()` names):
counters, heartbeat, output peak, fill, the PortAudio output
latency, decode-step times and a latency marker for `bench/audio.py`: when the value at the probe
slot of the parameter snapshot changes (default: the `audio/jump` counter), the child stores the
output index where that change starts, and the callback stores the monotonic time at which it
copies that sample out.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing as mp
import os
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..configio import to_table
from ..errors import AudioDeviceError, ModelError
from ..params import REGISTRY
from ..restart import Backoff
from ..shmblock import BlockLayout, StatusBlock
from . import jacknames
from .config import AudioConfig

log = logging.getLogger("ciel.audio")

# Status block layout (float64 slots).
_S_HEARTBEAT, _S_STATE, _S_PID, _S_CALLBACKS, _S_UNDERFLOWS, _S_STALLS = 0, 1, 2, 3, 4, 5
_S_PEAK, _S_FILL, _S_RATE, _S_BLOCK, _S_LATENCY, _S_XRUNS = 6, 7, 8, 9, 10, 11
_S_MARK_POS, _S_MARK_SEQ, _S_MARK_TIME, _S_PROBE, _S_STOP, _S_ERRKIND = 12, 13, 14, 15, 16, 17
_S_READ, _S_WRITTEN, _S_STEPS, _S_PANIC, _S_PLAY_SEQ, _S_PLAYING_SEQ, _S_AHEAD = 18, 19, 20, 21, 22, 23, 24
_S_STEP_TIMES = 64             # ring of decode-step durations (ms)
_N_STEP_TIMES = 4096
_TEXT_LEN = 4096               # bytes per text field: device name, last error, the sound file to play
_DEVICE, _ERROR, _PLAY = 0, 1, 2
_LAYOUT = BlockLayout(slots=_S_STEP_TIMES + _N_STEP_TIMES, texts=3, text_bytes=_TEXT_LEN)

STARTING, RUNNING, STOPPED, FAILED = 0.0, 1.0, 2.0, -1.0
ERR_DEVICE, ERR_MODEL, ERR_OTHER = 1.0, 2.0, 3.0
NO_DEVICE = "no audio output device: start JACK (jackd -d dummy -r 48000 -p 128 &) or run with --audio none"


@dataclass(frozen=True)
class AudioStatus:
    """What the audio process reports (read from shared memory; cheap, any thread). Counters add
    up over restarts; heartbeat_age_s is -1 before the first heartbeat; peak_db is the output peak
    over about half a second (-200 before the first callback); playing is the sound file `play()`
    asked for once it sounds ('' while the decoder has the sound); ahead_ms is the run-ahead now."""

    running: bool
    pid: int
    device: str
    samplerate: int
    blocksize: int
    callbacks: int
    underflows: int
    xruns: int
    stalls: int
    restarts: int
    heartbeat_age_s: float
    peak_db: float
    fill_ms: float
    output_latency_ms: float
    error: str
    playing: str = ""
    ahead_ms: float = 0.0


# — devices —

def _output_devices(sd: Any) -> list[tuple[int, str]]:
    apis = sd.query_hostapis()
    return [(i, f"{d['name']} ({apis[d['hostapi']]['name']})")
            for i, d in enumerate(sd.query_devices()) if d["max_output_channels"] > 0]


def _pick_device(sd: Any, name: str) -> tuple[int, str]:
    """Output device index and label by name substring (case-insensitive); '' = the default."""
    outs = _output_devices(sd)
    if not outs:
        raise AudioDeviceError(NO_DEVICE)
    if not name:
        default = sd.default.device[1]
        for i, label in outs:
            if i == default:
                return i, label
        return outs[0]
    hits = [(i, label) for i, label in outs if name.lower() in label.lower()]
    if not hits:
        known = ", ".join(label for _, label in outs)
        raise AudioDeviceError(f"audio device {name!r} not found; outputs: {known} (`ciel devices` lists them)")
    return hits[0]


def list_devices(timeout: float = 15.0) -> list[str]:
    """Names of the audio outputs now, queried in a fresh process (PortAudio pins the device list
    when it initialises). Raises AudioDeviceError if PortAudio cannot be loaded."""
    code = ("import json, sounddevice as sd\n"
            "from engine.audio.output import _output_devices\n"
            "print(json.dumps([label for _, label in _output_devices(sd)]))\n")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH")))))
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise AudioDeviceError(f"listing audio devices took more than {timeout:.0f} s") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
        raise AudioDeviceError(f"cannot query audio devices: {last}")
    return list(json.loads(proc.stdout.strip().splitlines()[-1]))


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


# — child process —

class _Ring:
    """Preallocated stereo ring; `pos[0]` frames read (callback), `pos[1]` frames written (decoder)."""

    def __init__(self, frames: int) -> None:
        size = 1 << max(10, math.ceil(math.log2(frames)))
        self.buf = np.zeros((size, 2), np.float32)
        self.mask = size - 1
        self.pos = np.zeros(2, np.int64)

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


def _recorder(path: str, rate: int, tap: _Ring, done: threading.Event, block: StatusBlock) -> None:
    """Writer thread of the audio process: what the callback played (the `tap` ring, written by
    the callback, read here) to a 24-bit WAV file. The header is updated every 0.5 s (libsndfile
    rewrites it on flush), so a killed process leaves a readable file. A writer that falls a whole
    ring behind skips ahead (the lost frames are counted in the status error line)."""
    import soundfile as sf

    lost = 0
    try:
        with sf.SoundFile(path, "w", samplerate=rate, channels=2, subtype="PCM_24") as fh:
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


# SCHED_FIFO priorities when the system allows them. JACK runs its driver at 10 by default and gives
# client threads 5; the callback keeps a realtime priority its host API gave it and otherwise gets
# _CALLBACK_PRIORITY; the decode thread sits at the lowest realtime priority: above every normal
# process, below the callback (which waits for it only for the GIL) and below the sound server.
_CALLBACK_PRIORITY, _DECODE_PRIORITY = 8, 1


def _realtime(priority: int) -> str:
    """Raise the calling thread's scheduling priority: SCHED_FIFO if allowed, else a lower nice
    value, else nothing. A thread that already runs at a realtime priority keeps it. Returns what
    it did."""
    try:
        if os.sched_getscheduler(0) in (os.SCHED_FIFO, os.SCHED_RR):
            return f"kept realtime priority {os.sched_getparam(0).sched_priority}"
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        return f"SCHED_FIFO {priority}"
    except (PermissionError, OSError, AttributeError):
        pass
    try:
        os.setpriority(os.PRIO_PROCESS, 0, -10)
        return "nice -10"
    except (PermissionError, OSError, AttributeError):
        return "normal priority"


def _child_main(cfg_table: dict, snapshot_name: str, status_name: str, seed: int, fade_in_s: float,
                wait_for_device: bool) -> None:
    """Entry point of the audio process (spawned). How it ended is in the status block: STOPPED,
    or FAILED with the kind of error and its one-line message."""
    block = StatusBlock(_LAYOUT, status_name)
    st = block.ctl
    st[_S_PID] = os.getpid()
    try:
        _run_child(AudioConfig(**cfg_table), snapshot_name, st, block, seed, fade_in_s, wait_for_device)
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


def _wait_for_device(sd: Any, name: str, st: np.ndarray, block: StatusBlock, wait: bool) -> tuple[int, str] | None:
    """The output device; when `wait`, re-initialise PortAudio every 0.5 s until it is there
    (a JACK server restarted, a USB interface plugged back in). None if asked to stop meanwhile."""
    while True:
        try:
            return _pick_device(sd, name)
        except AudioDeviceError as exc:
            if not wait:
                raise
            block.set_text(_ERROR, f"{exc} (waiting for it)")
        for _ in range(5):
            st[_S_HEARTBEAT] = time.monotonic()
            if st[_S_STOP] > 0:
                return None
            time.sleep(0.1)
        sd._terminate()   # PortAudio lists devices only when it initialises (sounddevice has
        sd._initialize()  # no public call for this; no stream is open in this process yet)


def _run_child(cfg: AudioConfig, snapshot_name: str, st: np.ndarray, block: StatusBlock, seed: int,
               fade_in_s: float, wait_for_device: bool) -> None:
    try:
        import sounddevice as sd
    except OSError as exc:
        raise AudioDeviceError(f"PortAudio not available ({exc}): install libportaudio2 or run with --audio none") from None
    named = jacknames.set_client_name(sd)   # JACK sees the client as `ciel`
    if not named.startswith("JACK client"):
        print(f"ciel-audio: {named}", file=sys.stderr, flush=True)
    found = _wait_for_device(sd, cfg.device, st, block, wait_for_device)  # first: the quickest error
    if found is None:
        return
    index, label = found
    block.set_text(_ERROR, "")

    import torch

    from ..params import SharedSnapshot
    from .model import load_audio_model
    from .stream import AudioSynth

    torch.set_num_threads(cfg.threads)
    sys.setswitchinterval(0.0005)  # the callback thread waits at most this long for the GIL
    model = load_audio_model(cfg.model)
    snapshot = SharedSnapshot(REGISTRY.size, name=snapshot_name, create=False)
    values = np.empty(REGISTRY.size, np.float64)
    if not snapshot.read_into(values):
        values[:] = REGISTRY.defaults()

    rate = cfg.samplerate
    try:
        sd.check_output_settings(device=index, channels=2, dtype="float32", samplerate=rate)
    except sd.PortAudioError:
        rate = int(sd.query_devices(index)["default_samplerate"])  # e.g. JACK runs at its own rate
    synth = AudioSynth(model, rate, seed, fade_in_s=fade_in_s)
    if st[_S_PANIC] > 0:  # a panic outlives a restart of the audio process
        synth.panic()
    run_ahead = RunAhead(max(int(cfg.ahead_ms * rate / 1000), 1), int(cfg.ahead_max_ms * rate / 1000), rate)
    ahead = run_ahead.low
    ring = _Ring(run_ahead.high + 8 * cfg.blocksize + 4 * model.hop * rate // model.sample_rate + 1024)
    rb, mask, pos = ring.buf, ring.mask, ring.pos
    size = len(rb)

    rt = [cfg.realtime]
    tap: _Ring | None = _Ring(2 * rate) if cfg.record else None   # what the callback plays, for the recorder

    def callback(outdata: np.ndarray, frames: int, time_info: Any, flags: Any) -> None:
        if rt[0]:
            rt[0] = False
            _realtime(_CALLBACK_PRIORITY)
        r = int(pos[0])
        avail = int(pos[1]) - r
        n = frames if avail >= frames else max(avail, 0)
        i = r & mask
        first = min(n, size - i)
        outdata[:first] = rb[i:i + first]
        if first < n:
            outdata[first:n] = rb[: n - first]
        if n < frames:
            outdata[n:] = 0.0
            st[_S_UNDERFLOWS] += 1
        if flags.output_underflow:
            st[_S_XRUNS] += 1
        if tap is not None:
            tap.write(outdata)
        if r <= st[_S_MARK_POS] < r + n:
            # when that sample leaves at the port: the block's DAC time (PortAudio's clock) plus
            # the sample's place in the block, carried over to the monotonic clock
            dac = time_info.outputBufferDacTime - time_info.currentTime
            st[_S_MARK_TIME] = time.monotonic() + max(dac, 0.0) + (st[_S_MARK_POS] - r) / rate
        pos[0] = r + n
        st[_S_CALLBACKS] += 1

    rec_done = threading.Event()
    rec_thread = None
    if tap is not None:
        rec_thread = threading.Thread(target=_recorder, args=(cfg.record, rate, tap, rec_done, block),
                                      name="ciel-recorder", daemon=True)
        rec_thread.start()

    clips: queue.Queue[tuple[float, np.ndarray]] = queue.Queue()
    play_seq = 0.0
    glide = REGISTRY.index("audio/glide")

    probe = int(st[_S_PROBE]) if st[_S_PROBE] >= 0 else REGISTRY.index("audio/jump")
    last_probe = values[probe]
    peak_decay = math.exp(-model.hop / (0.5 * model.sample_rate))  # per step: 0.5 s time constant
    peak = 0.0
    steps = 0

    def decode_step() -> None:
        nonlocal last_probe, peak, steps, play_seq
        snapshot.read_into(values)
        if st[_S_PLAY_SEQ] != play_seq:  # play() named a file (or none): load it off this loop
            play_seq = st[_S_PLAY_SEQ]
            path = block.text(_PLAY)
            if path:
                threading.Thread(target=_clip_loader, args=(path, play_seq, model.sample_rate, clips, block),
                                 name="ciel-clip-loader", daemon=True).start()
            else:
                synth.play(None, float(values[glide]))
                st[_S_PLAYING_SEQ] = 0.0
        while not clips.empty():
            asked, clip = clips.get_nowait()
            if asked == play_seq:  # a file asked for since then wins
                synth.play(clip, float(values[glide]))
                st[_S_PLAYING_SEQ] = asked
        seq = snapshot.sequence
        out_index = synth.next_out_index
        t0 = time.perf_counter()
        sound = synth.step(values)
        st[_S_STEP_TIMES + steps % _N_STEP_TIMES] = (time.perf_counter() - t0) * 1e3
        steps += 1
        st[_S_STEPS] = steps
        if values[probe] != last_probe:
            last_probe = values[probe]
            st[_S_MARK_TIME] = 0.0
            st[_S_MARK_SEQ] = seq
            st[_S_MARK_POS] = out_index
        st[_S_PANIC] = 1.0 if synth.panicked else 0.0
        ring.write(sound)
        peak = max(peak * peak_decay, float(np.max(np.abs(sound))) if len(sound) else 0.0)
        st[_S_PEAK] = 20 * math.log10(max(peak, 1e-10))

    if cfg.realtime:
        _realtime(_DECODE_PRIORITY)
    while ring.fill < ahead:
        decode_step()
    try:
        stream = sd.OutputStream(samplerate=rate, blocksize=cfg.blocksize, device=index, channels=2,
                                 dtype="float32", callback=callback, latency="low")
        stream.start()
    except sd.PortAudioError as exc:
        raise AudioDeviceError(f"cannot open audio device {label} at {rate} Hz, block {cfg.blocksize}: {exc}") from None
    if "JACK" in sd.query_hostapis(sd.query_devices(index)["hostapi"])["name"]:
        note = jacknames.number_ports_from_one()
        if not note.startswith("JACK ports"):
            print(f"ciel-audio: {note}", file=sys.stderr, flush=True)
    block.set_text(_DEVICE, label)
    st[_S_RATE], st[_S_BLOCK] = rate, cfg.blocksize
    st[_S_LATENCY] = float(stream.latency) * 1e3
    st[_S_STATE] = RUNNING
    last_cb, last_cb_change = -1.0, time.monotonic()
    stopping = False
    busy = 0
    parent = os.getppid()
    try:
        while True:
            now = time.monotonic()
            st[_S_HEARTBEAT] = now
            if (st[_S_STOP] > 0 or os.getppid() != parent) and not stopping:  # asked, or orphaned
                stopping = True
                synth.fade_out(0.05)
            if stopping and synth.faded_out:  # the fade is decoded: play it out, then end
                if ring.fill < cfg.blocksize:  # what is left is silence after the fade
                    break
                time.sleep(cfg.blocksize / rate)
                continue
            if st[_S_CALLBACKS] != last_cb:
                last_cb, last_cb_change = st[_S_CALLBACKS], now
            elif now - last_cb_change > 1.0:
                raise AudioDeviceError(f"audio device {label} stopped calling back (device lost)")
            ahead = run_ahead.update(int(st[_S_UNDERFLOWS]), now)
            fill = ring.fill
            st[_S_FILL], st[_S_READ], st[_S_WRITTEN] = fill, pos[0], pos[1]
            st[_S_AHEAD] = 1000.0 * ahead / rate
            if fill < ahead:
                if fill < cfg.blocksize and steps > 0 and st[_S_CALLBACKS] > 0:
                    st[_S_STALLS] += 1  # decoding fell behind: the next callback may underflow
                decode_step()
                busy += 1
                if busy > 250:  # a second of audio without catching up: let the machine breathe
                    time.sleep(0.002)
                    busy = 0
            else:
                busy = 0
                time.sleep(max(0.0003, (fill - ahead) / rate))
    finally:
        try:
            stream.abort() if not stopping else stream.stop()
            stream.close()
        except sd.PortAudioError:
            pass
        if rec_thread is not None:
            rec_done.set()
            rec_thread.join(5)
        snapshot.shm.close()


# — main-process handle —

class AudioProcess:
    """Owns the audio child process. Methods are called from the main thread."""

    RESTART_BACKOFF_S = (0.5, 2.0)   # the first wait between tries, the longest (engine.restart.Backoff)
    STALL_S = 4.0          # no heartbeat for this long: the child is replaced
    START_LIMIT_S = 20.0   # a child still starting after this long is replaced too

    def __init__(self, config: AudioConfig, snapshot_name: str, probe: str | None = None) -> None:
        self.config = config
        self.snapshot_name = snapshot_name
        self._block: StatusBlock | None = StatusBlock(_LAYOUT)
        self._st = self._block.ctl
        self._st[_S_PROBE] = REGISTRY.index(probe) if probe else -1
        self._proc: mp.process.BaseProcess | None = None
        self._ctx = mp.get_context("spawn")
        self.seed = config.seed or (int(time.time() * 1000) & 0x7FFFFFFF)
        self.restarts = 0
        self._backoff = Backoff(*self.RESTART_BACKOFF_S)
        self._next_try = 0.0
        self._spawned = 0.0
        self._stopped = False

    # — lifecycle —
    def _spawn(self, fade_in_s: float, wait_for_device: bool = False) -> None:
        st = self._st
        for slot in (_S_STATE, _S_HEARTBEAT, _S_STOP, _S_ERRKIND, _S_MARK_TIME):
            st[slot] = 0.0
        st[_S_MARK_POS] = -1.0
        block = self._live_block()
        block.set_text(_DEVICE, "")
        block.set_text(_ERROR, "")
        args = (to_table(self.config), self.snapshot_name, block.name, self.seed + self.restarts, fade_in_s,
                wait_for_device)
        if self.config.record and self.restarts:
            # a restarted process records to a new file beside the first: nothing is overwritten
            stem, ext = os.path.splitext(self.config.record)
            args[0]["record"] = f"{stem}-{self.restarts}{ext or '.wav'}"
        self._proc = self._ctx.Process(target=_child_main, args=args, name="ciel-audio", daemon=True)
        self._proc.start()
        self._spawned = time.monotonic()

    def start(self, timeout: float = 20.0) -> None:
        """Spawn the child and wait for sound. Raises AudioDeviceError / ModelError with one line."""
        self._stopped = False
        self._spawn(fade_in_s=0.05)
        deadline = time.monotonic() + timeout
        while self._st[_S_STATE] == STARTING:
            if not self._proc or not self._proc.is_alive():
                if self._st[_S_STATE] == STARTING:
                    self._raise_failure(f"audio process exited with code {self._proc.exitcode if self._proc else '?'}")
                break
            if time.monotonic() > deadline:
                self._kill()
                raise AudioDeviceError(f"audio process did not start within {timeout:.0f} s")
            time.sleep(0.02)
        if self._st[_S_STATE] == FAILED:
            if self._proc is not None:
                self._proc.join(2)
            self._raise_failure("audio process failed")
        self._backoff.reset()

    def _raise_failure(self, fallback: str) -> None:
        message = self._live_block().text(_ERROR) or fallback
        if self._st[_S_ERRKIND] == ERR_MODEL:
            raise ModelError(message)
        raise AudioDeviceError(message)

    def poll(self) -> None:
        """Main thread, each frame: restart a child that died, stalled or failed (with a fade-in)."""
        if self._stopped or self._proc is None:
            return
        st = self._st
        alive = self._proc.is_alive()
        now = time.monotonic()
        state = st[_S_STATE]
        stalled = alive and st[_S_HEARTBEAT] > 0 and now - st[_S_HEARTBEAT] > self.STALL_S
        stuck = alive and state == STARTING and now - self._spawned > self.START_LIMIT_S
        stalled = stalled or stuck
        starting = state == STARTING and alive and not stalled
        if starting or (alive and state == RUNNING and not stalled):
            if state == RUNNING:
                self._backoff.reset()
            return
        if now < self._next_try:
            return
        if stuck:
            reason = f"still starting after {now - self._spawned:.0f} s"
        elif stalled:
            reason = f"no heartbeat for {now - st[_S_HEARTBEAT]:.1f} s"
        else:
            reason = self._live_block().text(_ERROR) or f"exit code {self._proc.exitcode}"
        log.warning("audio process %s (%s); restarting with a fade-in", "stalled" if stalled else "stopped", reason)
        self._kill()
        self.restarts += 1
        self._next_try = now + self._backoff.failed()
        self._spawn(fade_in_s=0.3, wait_for_device=True)

    def play(self, path: str | os.PathLike[str] | None) -> None:
        """Main thread: crossfade, over the `audio/glide` time, from what sounds now to the sound
        file at `path` played in a loop (a baked scene), or with None back to the decoder. The
        audio process loads the file beside its decode loop and mixes it in before the safety
        stage; a restarted process resumes it. A file it cannot read shows in `status().error`
        and the sound goes on."""
        text = os.fspath(path) if path else ""
        if len(text.encode("utf-8")) >= _TEXT_LEN:
            raise AudioDeviceError(f"sound file path longer than {_TEXT_LEN - 1} bytes: {text[:80]}…")
        self._live_block().set_text(_PLAY, text)
        self._st[_S_PLAY_SEQ] += 1

    def _kill(self) -> None:
        """End the child: SIGTERM first (it closes its JACK client cleanly), SIGKILL if it hangs."""
        proc = self._proc
        if proc is not None and proc.is_alive():
            proc.terminate()
            proc.join(0.5)
            if proc.is_alive():
                proc.kill()
                proc.join(2)

    def stop(self, timeout: float = 3.0) -> None:
        """Fade out, end the child, free the status block. Safe to call twice."""
        self._stopped = True
        proc = self._proc
        if proc is not None and proc.is_alive():
            self._st[_S_STOP] = 1.0
            proc.join(timeout)
            if proc.is_alive():
                proc.terminate()
                proc.join(1)
            self._kill()
        self._proc = None
        if self._block is not None:
            del self._st
            self._block.close()
            self._block = None

    # — status —
    @property
    def pid(self) -> int:
        return self._proc.pid if self._proc is not None and self._proc.pid else 0

    def _live_block(self) -> StatusBlock:
        if self._block is None:
            raise AudioDeviceError("the audio process was stopped")
        return self._block

    def status(self) -> AudioStatus:
        block = self._block
        if block is None:
            return AudioStatus(False, 0, "", 0, 0, 0, 0, 0, 0, self.restarts, -1.0, -200.0, 0.0, 0.0, "stopped")
        st = self._st
        rate = st[_S_RATE] or self.config.samplerate
        hb = st[_S_HEARTBEAT]
        return AudioStatus(
            running=bool(st[_S_STATE] == RUNNING and self._proc is not None and self._proc.is_alive()),
            pid=self.pid, device=block.text(_DEVICE), samplerate=int(st[_S_RATE]), blocksize=int(st[_S_BLOCK]),
            callbacks=int(st[_S_CALLBACKS]), underflows=int(st[_S_UNDERFLOWS]), xruns=int(st[_S_XRUNS]),
            stalls=int(st[_S_STALLS]), restarts=self.restarts,
            heartbeat_age_s=round(time.monotonic() - float(hb), 3) if hb else -1.0,
            peak_db=round(float(st[_S_PEAK]), 2) if st[_S_CALLBACKS] else -200.0,
            fill_ms=round(1000.0 * float(st[_S_FILL]) / float(rate), 2),
            output_latency_ms=round(float(st[_S_LATENCY]), 2),
            ahead_ms=round(float(st[_S_AHEAD]), 2),
            error=block.text(_ERROR),
            playing=block.text(_PLAY) if st[_S_PLAYING_SEQ] == st[_S_PLAY_SEQ] > 0 else "",
        )

    def marker(self) -> tuple[int, float, float]:
        """(snapshot sequence, output index, monotonic time it leaves at the output port or 0) of
        the newest change at the probe slot: the callback's time plus its block's DAC time (as
        PortAudio reports it: JACK's port latency) plus the sample's offset in the block. For
        latency measurements."""
        st = self._st
        return int(st[_S_MARK_SEQ]), float(st[_S_MARK_POS]), float(st[_S_MARK_TIME])

    @property
    def decode_steps(self) -> int:
        """Decode steps run so far by the current audio process."""
        return int(self._st[_S_STEPS])

    def step_times_ms(self) -> np.ndarray:
        """Durations of the latest decode steps (ms), oldest first (up to 4096)."""
        n = int(self._st[_S_STEPS])
        times = self._st[_S_STEP_TIMES:_S_STEP_TIMES + _N_STEP_TIMES]
        if n <= _N_STEP_TIMES:
            return times[:n].copy()
        i = n % _N_STEP_TIMES
        return np.concatenate((times[i:], times[:i]))
