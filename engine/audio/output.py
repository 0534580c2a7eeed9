"""The audio process's handle in the main process: `AudioProcess(config, snapshot_name)`.

`start()` starts the child (engine/workerproc.py: forked from a server that preloaded torch but
not PortAudio, so a replacement starts at once and initialises PortAudio afresh, seeing the
devices of now; its code is engine/audio/child.py), `poll()` (main thread, each frame)
restarts a child that died, stalled or lost its device (engine/restart.py's policy), `status()`
reads the shared status block (engine/audio/status.py), `play()` asks for a sound file, `stop()`
fades out and ends the child.

Status travels back through the shared-memory block: counters, heartbeat, output peak, fill, the
PortAudio output latency, decode-step times and a latency marker for `bench/audio.py`: when the
value at the probe slot of the parameter snapshot changes (default: the `audio/jump` counter),
the child stores the output index where that change starts, and the callback stores the
monotonic time at which that sample leaves at the port.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import time
from collections.abc import Callable

import numpy as np

from ..configio import to_table
from ..errors import AudioDeviceError, ModelError
from ..params import REGISTRY
from ..restart import Backoff
from ..shmblock import StatusBlock
from ..workerproc import start_worker
from .child import RunAhead, _child_main
from .config import AudioConfig
from .devices import list_devices
from .listen import Heard
from .status import (
    _DEVICE,
    _ERROR,
    _N_STEP_TIMES,
    _PLAY,
    _S_AHEAD,
    _S_BLOCK,
    _S_CALLBACKS,
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
    _S_PEAK,
    _S_PLAY_SEQ,
    _S_PLAYING_SEQ,
    _S_PROBE,
    _S_RATE,
    _S_STALLS,
    _S_STATE,
    _S_STEP_TIMES,
    _S_STEPS,
    _S_STOP,
    _S_UNDERFLOWS,
    _S_XRUNS,
    _TEXT_LEN,
    ERR_DEVICE,
    ERR_MODEL,
    FAILED,
    RUNNING,
    STARTING,
    TAP_FRAMES,
    AudioStatus,
    block_layout,
)

log = logging.getLogger("ciel.audio")

__all__ = ["AudioProcess", "AudioStatus", "OutputTap", "RunAhead", "list_devices"]


# — main-process handle —

class OutputTap:
    """What the audio process's callback played, its speakers after the ring (zeros where it ran
    short), read in the main process from the status block: NDI's sound. One reader, with its own
    cursor; the callback writes. `take()` -> the samples (n, channels) float32 new since the last
    call, a copy; a reader that fell half a ring behind (0.7 s at 48 kHz) skips to the newest.
    `rate()`: the device rate."""

    def __init__(self, block: StatusBlock, channels: int, rate: Callable[[], int]) -> None:
        self.pos = block.payload((2,), np.int64)
        self.buf = block.payload((TAP_FRAMES, channels), np.float32, offset=16)
        self.rate = rate
        self._cursor = -1

    def take(self) -> np.ndarray:
        w = int(self.pos[1])
        c = self._cursor
        if c < 0 or w < c or w - c > TAP_FRAMES // 2:   # first call, a new process, or far behind (the
            c = w                                         # callback could be writing where a copy would read)
        n = w - c
        out = np.empty((n, self.buf.shape[1]), np.float32)
        i = c & (TAP_FRAMES - 1)
        first = min(n, TAP_FRAMES - i)
        out[:first] = self.buf[i:i + first]
        out[first:] = self.buf[:n - first]
        self._cursor = w
        return out


class AudioProcess:
    """Owns the audio child process. Methods are called from the main thread."""

    RESTART_BACKOFF_S = (0.5, 2.0)   # the first wait between tries, the longest (engine.restart.Backoff)
    STALL_S = 4.0          # no heartbeat for this long: the child is replaced
    START_LIMIT_S = 20.0   # a child still starting after this long is replaced too

    def __init__(self, config: AudioConfig, snapshot_name: str, probe: str | None = None,
                 share_output: bool = False) -> None:
        self.config = config
        self.snapshot_name = snapshot_name
        # share_output: the status block carries what the callback plays (output_tap(): NDI's sound)
        self._tap_channels = config.channels if share_output else 0
        self._block: StatusBlock | None = StatusBlock(block_layout(self._tap_channels))
        self._st = self._block.ctl
        self._st[_S_PROBE] = REGISTRY.index(probe) if probe else -1
        self._proc: mp.process.BaseProcess | None = None
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
        # until the new process hears anything, listen/* reads silence (the old one's last
        # figures would hold every mapped target where the sound left it); the old one is gone,
        # so this is the slots' only writer now
        st[_S_HEARD:_S_HEARD + 4] = (-60.0, 0.0, 0.0, 0.0)
        st[_S_HEARD_SEQ] += 1
        block = self._live_block()
        block.set_text(_DEVICE, "")
        block.set_text(_ERROR, "")
        args = (to_table(self.config), self.snapshot_name, block.name, self.seed + self.restarts, fade_in_s,
                wait_for_device, self._tap_channels)
        if self.config.record and self.restarts:
            # a restarted process records to a new file beside the first: nothing is overwritten
            stem, ext = os.path.splitext(self.config.record)
            args[0]["record"] = f"{stem}-{self.restarts}{ext or '.wav'}"
        self._proc = start_worker(_child_main, args, "ciel-audio")
        self._spawned = time.monotonic()

    def start(self, timeout: float = 20.0) -> None:
        """Spawn the child and wait for sound. Raises AudioDeviceError / ModelError with one line."""
        self.begin()
        self.wait_started(timeout)

    def begin(self) -> None:
        """Spawn the child and return at once: it imports, loads its model and opens the device
        while the caller goes on (the engine starts its other parts meanwhile). `wait_started`
        then waits for it."""
        self._stopped = False
        self._spawn(fade_in_s=0.05)

    def wait_started(self, timeout: float = 20.0) -> None:
        """Wait until the child spawned by `begin` plays. Raises AudioDeviceError / ModelError with
        one line."""
        deadline = self._spawned + timeout
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
        # still starting after the limit, unless it is waiting for its device and says so (a fresh
        # heartbeat while STARTING comes only from that wait: a JACK server that is down for a while
        # must not cost a model load every START_LIMIT_S)
        waiting = st[_S_HEARTBEAT] > 0 and now - st[_S_HEARTBEAT] < self.STALL_S
        stuck = alive and state == STARTING and now - self._spawned > self.START_LIMIT_S and not waiting
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
        # a lost device: nothing left to close cleanly (closing a stream whose server died can hang)
        self._kill(at_once=state == FAILED and st[_S_ERRKIND] == ERR_DEVICE)
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

    def _kill(self, at_once: bool = False) -> None:
        """End the child: SIGTERM first (it closes its JACK client cleanly), SIGKILL if it hangs
        (or `at_once`)."""
        proc = self._proc
        if proc is not None and proc.is_alive():
            if not at_once:
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

    def output_tap(self) -> OutputTap | None:
        """What the audio process plays, readable here (None unless made with share_output)."""
        block = self._block
        if block is None or not self._tap_channels:
            return None
        return OutputTap(block, self._tap_channels, lambda: int(self._st[_S_RATE]) or self.config.samplerate)

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

    def heard(self) -> tuple[int, Heard]:
        """(analyses so far, what the newest heard): the figures behind `listen/*`
        (engine/audio/listen.py). Any thread; the sequence is 0 before the first."""
        st = self._st
        h = st[_S_HEARD:_S_HEARD + 4]
        return int(st[_S_HEARD_SEQ]), Heard(float(h[0]), float(h[1]), float(h[2]), float(h[3]))

    @property
    def input_frames(self) -> int:
        """Frames the audio process has received from its input (0: no input open)."""
        return int(self._st[_S_INPUT_FRAMES])

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
