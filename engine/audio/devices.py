"""PortAudio's side of the audio process: output devices by name, waiting for one to come
back, and the scheduling priority of the audio threads. Used by the audio process
(engine/audio/child.py) and, for `ciel devices`, from a short-lived subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np

from ..errors import AudioDeviceError
from ..shmblock import StatusBlock
from .status import _ERROR, _S_HEARTBEAT, _S_STOP, NO_DEVICE


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
            f"from {__name__} import _output_devices\n"
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


def _wait_for_device(sd: Any, name: str, st: np.ndarray, block: StatusBlock, wait: bool) -> tuple[int, str] | None:
    """The output device; when `wait`, re-initialise PortAudio every 0.25 s until it is there
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
            time.sleep(0.05)
        sd._terminate()   # PortAudio lists devices only when it initialises (sounddevice has
        sd._initialize()  # no public call for this; no stream is open in this process yet)


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
