"""How ciel starts its worker processes (the audio process, the generator process).

The first workers are *spawned*: each is a fresh interpreter that imports what it needs, all of
them in parallel with the main process, which is the quickest way to the first sound. Once the
show is up, `warm_up()` starts a *fork server* in the background (Linux): a small process that
imports numpy, torch and the workers' modules once (nothing that opens PortAudio or a device)
and forks a fresh child for each worker after that. A worker that is replaced after a
fault (a lost JACK server, a killed process) then starts in tens of milliseconds instead of
importing torch again for 1–2 s, which was most of the silence after such a fault. Until the
server answers, and on macOS and Windows, workers are spawned.

A child forked from the server has the server's environment and working folder, those of the
main process when the server started. `start_worker` hands the main process's environment and
folder of *now* to the child, which takes them before running its target, so a worker sees what
it would have seen if spawned (e.g. `JACK_DEFAULT_SERVER` set after the server started, as
tests do).

A forked worker's parent is the fork server, not the main process, and the server lives as long
as any worker does; so a worker learns that the main process has ended (a display that went
away, SIGKILL) from a *lifeline*: a pipe whose write end only the main process holds.
`orphaned()` turns true in every worker, spawned or forked, once the main process is gone,
however it ended.

Threads: `start_worker`/`warm_up` from any thread of the main process; `orphaned` in a worker.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

from . import PACKAGE

if TYPE_CHECKING:   # ForkServerContext does not exist on Windows
    from multiprocessing.context import ForkServerContext, SpawnContext

log = logging.getLogger("ciel.workers")

# imported once by the fork server: nothing that initialises PortAudio (it must start in the
# worker, where it sees the devices of now), opens a device or starts a thread at import
PRELOAD = ["numpy", "torch", f"{PACKAGE}.audio.child", f"{PACKAGE}.visual.worker"]
# (numpy's BLAS starts its thread pool at import; its fork handlers make forking after that safe.
# Variables read at import, such as OMP_NUM_THREADS, keep the values of the server's start.)

_lock = threading.Lock()
_server: ForkServerContext | None = None   # the fork server's context, once it has answered
_warming = False
_lifeline_ends: tuple[Connection, Connection] | None = None   # main process: (read, write), kept for its life
_lifeline: Connection | None = None                          # a worker: the read end
_parent = 0                                                  # a worker: its parent's pid at start


def _noop() -> None:
    """The fork server's first child: proves the server answers."""


def warm_up(after_s: float = 0.0) -> None:
    """Start the fork server in the background, `after_s` seconds from now (so that its imports
    do not compete with the first sound and picture); workers start from it once it answered.
    Returns at once; does nothing off Linux or when called again."""
    global _warming
    with _lock:
        if _warming or not sys.platform.startswith("linux"):
            return
        _warming = True

    def start() -> None:
        global _server
        ctx = mp.get_context("forkserver")
        try:
            ctx.set_forkserver_preload(PRELOAD)    # process-wide: one server for every worker
            probe = ctx.Process(target=_noop, name="ciel-forkserver-probe", daemon=True)
            probe.start()                          # blocks this thread until the server has imported
            probe.join(30)
        except Exception as exc:  # noqa: BLE001 — a thread's boundary: no server, workers keep being spawned
            log.warning("worker fork server not started (%s: %s): workers are spawned", type(exc).__name__, exc)
            return
        with _lock:
            _server = ctx

    timer = threading.Timer(after_s, start)
    timer.name, timer.daemon = "ciel-forkserver-start", True
    timer.start()


def orphaned() -> bool:
    """In a worker: True once the main process that started it has ended, or the fork server it
    came from has (its handle in the main process then reads as ended, and a replacement is
    started: this one must not play on beside it). False elsewhere."""
    if _lifeline is None:
        return False
    if os.getppid() != _parent:
        return True
    try:
        return _lifeline.poll()   # nothing is ever written: readable means the write end closed
    except (OSError, EOFError):
        return True


def _server_alive() -> bool:
    """Whether the fork server still runs (Linux: its /proc entry, not a zombie)."""
    from multiprocessing import forkserver

    pid = getattr(getattr(forkserver, "_forkserver", None), "_forkserver_pid", None)
    if not pid:
        return True   # nothing to go by: let multiprocessing find out
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _run_here(env: dict[str, str], cwd: str, lifeline: Connection, target: Callable[..., None],
              args: tuple[object, ...]) -> None:
    """In the child: take the caller's environment, folder and lifeline, then run `target(*args)`."""
    global _lifeline, _parent
    _lifeline, _parent = lifeline, os.getppid()
    os.environ.clear()
    os.environ.update(env)
    try:
        os.chdir(cwd)
    except OSError:   # the folder went away meanwhile: relative paths fail with their own names
        pass
    target(*args)


def start_worker(target: Callable[..., None], args: tuple[object, ...], name: str) -> mp.process.BaseProcess:
    """Start `target(*args)` in a daemon worker process named `name` (target and args must be
    picklable: a module-level function and plain data): forked from the server when it answers,
    spawned otherwise. Returns the started process."""
    global _lifeline_ends, _server, _warming
    restart = False
    with _lock:
        if _server is not None and not _server_alive():   # killed: spawn now, a new server in the background
            log.warning("the worker fork server has ended: workers are spawned until a new one answers")
            _server, _warming, restart = None, False, True
        ctx: ForkServerContext | SpawnContext = _server or mp.get_context("spawn")
        if _lifeline_ends is None:
            _lifeline_ends = mp.Pipe(duplex=False)
        lifeline = _lifeline_ends[0]
    try:
        cwd = os.getcwd()
    except OSError:   # the main process's folder was removed under it
        cwd = "/"
    proc = ctx.Process(target=_run_here, args=(dict(os.environ), cwd, lifeline, target, args), name=name, daemon=True)
    proc.start()
    if restart:
        warm_up()
    return proc
