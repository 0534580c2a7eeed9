"""Run a function on one item at a time in a child process, with a time and a memory limit.

Ingest decodes every file of an artist's archive with FFmpeg and Pillow: C code that a strange file
can hang, crash or make allocate without end. `Isolated(fn)` calls `fn(item)` in a worker process;
an item that takes longer than `timeout_s` gets the worker killed (and a fresh one started for the
next item), a worker that dies (a crash, the memory limit) is replaced, and either way the caller
gets an `Outcome` saying what happened, never an exception, so one file never ends the walk.

The worker is forked where the platform allows (Linux: the decoders are already imported) and
spawned elsewhere; its address space is limited to what it had at start plus `memory_mb`.
Caller's thread only.
"""

from __future__ import annotations

import multiprocessing
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import ForkContext, SpawnContext
from typing import Generic, TypeVar

Item = TypeVar("Item")
R = TypeVar("R")


@dataclass(frozen=True)
class Outcome(Generic[R]):
    """What became of one item: `value` when `ok`; else `problem` says what went wrong, in words."""

    ok: bool
    value: R | None = None
    problem: str = ""
    error_type: str = ""   # the exception's class name when `fn` raised (e.g. "SkippedFile")


def _address_space() -> int:
    """This process's virtual size in bytes (Linux), 0 if unknown."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _worker(fn: Callable[[Item], R], conn: Connection, memory_mb: int) -> None:
    """The child's loop: receive an item, answer ("ok", value) or ("raised", type, message)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is the parent's to handle
    try:
        import resource

        limit = _address_space() + (memory_mb << 20)
        if limit > memory_mb << 20:
            resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))
    except (ImportError, ValueError, OSError):
        pass   # no limit where the platform has none
    while True:
        try:
            item = conn.recv()
        except (EOFError, OSError):
            return
        try:
            answer: tuple[object, ...] = ("ok", fn(item))
        except MemoryError:
            answer = ("raised", "MemoryError", f"needed more than the {memory_mb} MB a file may use")
        except Exception as exc:  # noqa: BLE001 — the child reports whatever the decoder raised, by name
            answer = ("raised", type(exc).__name__, str(exc))
        try:
            conn.send(answer)
        except (OSError, ValueError) as exc:   # e.g. a result too large to pickle: said, not fatal
            conn.send(("raised", type(exc).__name__, f"could not return the result ({exc})"))


class Isolated(Generic[Item, R]):
    """`fn(item)` in a worker process, one item at a time (see the module's docstring).

    fn:         a module-level function (it must pickle where workers are spawned).
    timeout_s:  seconds an item may take; the worker is killed after that.
    memory_mb:  memory the worker may allocate beyond what it had at start.
    """

    def __init__(self, fn: Callable[[Item], R], timeout_s: float, memory_mb: int) -> None:
        self.fn, self.timeout_s, self.memory_mb = fn, timeout_s, memory_mb
        self._ctx: ForkContext | SpawnContext = (multiprocessing.get_context("fork") if sys.platform.startswith("linux")
                                                 else multiprocessing.get_context("spawn"))
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self.restarts = 0

    def _start(self) -> Connection:
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=_worker, args=(self.fn, child, self.memory_mb), name="ciel-decode", daemon=True)
        proc.start()
        child.close()
        self._proc, self._conn = proc, parent
        return parent

    def __call__(self, item: Item) -> Outcome[R]:
        conn = self._conn or self._start()
        try:
            conn.send(item)
            if not conn.poll(self.timeout_s):
                self._kill()
                return Outcome(False, problem=f"took longer than {self.timeout_s:g} s (a hung decoder or an endless "
                                              "file); the decoder was stopped")
            answer = conn.recv()
        except (EOFError, OSError, BrokenPipeError):
            code = self._kill()
            how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
            return Outcome(False, problem=f"the decoder crashed on it ({how}); skipped")
        if answer[0] == "ok":
            return Outcome(True, value=answer[1])
        return Outcome(False, problem=str(answer[2]), error_type=str(answer[1]))

    def _kill(self) -> int | None:
        """End the worker (the next item starts a fresh one); its exit code."""
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        self.restarts += 1
        if conn is not None:
            conn.close()
        if proc is None:
            return None
        if proc.is_alive():
            proc.kill()
        proc.join(5)
        return proc.exitcode

    def close(self) -> None:
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if conn is not None:
            conn.close()     # the worker reads EOF and returns
        if proc is not None:
            proc.join(2)
            if proc.is_alive():
                proc.kill()
                proc.join(2)

    def __enter__(self) -> Isolated[Item, R]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
