"""The audio process's status: the layout of its shared-memory block (engine/shmblock.py) and
`AudioStatus`, what the main process reads from it.

The child (engine/audio/child.py) writes counters, times and text; the parent
(engine/audio/output.py) writes requests (stop, play, the latency probe). One writer per slot.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..shmblock import BlockLayout

# Status block layout (float64 slots).
_S_HEARTBEAT, _S_STATE, _S_PID, _S_CALLBACKS, _S_UNDERFLOWS, _S_STALLS = 0, 1, 2, 3, 4, 5
_S_PEAK, _S_FILL, _S_RATE, _S_BLOCK, _S_LATENCY, _S_XRUNS = 6, 7, 8, 9, 10, 11
_S_MARK_POS, _S_MARK_SEQ, _S_MARK_TIME, _S_PROBE, _S_STOP, _S_ERRKIND = 12, 13, 14, 15, 16, 17
_S_READ, _S_WRITTEN, _S_STEPS, _S_PANIC, _S_PLAY_SEQ, _S_PLAYING_SEQ, _S_AHEAD = 18, 19, 20, 21, 22, 23, 24
_S_CB_TIME = 25                # monotonic time of the last callback (the decode loop sleeps until the next one)
_S_HEARD = 26                  # 4 slots: listen/level (dBFS), centroid, flatness, onset (engine/audio/listen.py);
                               # the parent writes silence there (and counts it) while it replaces the child
_S_HEARD_SEQ = 30              # analyses so far
_S_INPUT_FRAMES = 32           # frames received from the input (0: no input open)
_S_STEP_TIMES = 64             # ring of decode-step durations (ms)
_N_STEP_TIMES = 4096
_TEXT_LEN = 4096               # bytes per text field: device name, last error, the sound file to play
_DEVICE, _ERROR, _PLAY = 0, 1, 2
LAYOUT = BlockLayout(slots=_S_STEP_TIMES + _N_STEP_TIMES, texts=3, text_bytes=_TEXT_LEN)
TAP_FRAMES = 1 << 17           # the shared output tap (NDI's sound, the recorder): 2.7 s at 48 kHz


def block_layout(tap_channels: int = 0) -> BlockLayout:
    """The status block's layout; with `tap_channels` > 0 its payload is the shared output tap:
    two int64 positions (read by the child's recorder, written by its callback), then
    (TAP_FRAMES, tap_channels) float32 samples, what the callback played."""
    return dataclasses.replace(LAYOUT, payload_bytes=16 + 4 * TAP_FRAMES * tap_channels) if tap_channels else LAYOUT

STARTING, RUNNING, STOPPED, FAILED = 0.0, 1.0, 2.0, -1.0
ERR_DEVICE, ERR_MODEL, ERR_OTHER = 1.0, 2.0, 3.0
NO_DEVICE = "no audio output device: start JACK (jackd -d dummy -r 48000 -p 64 &) or run with --audio none"


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
