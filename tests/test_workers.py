"""How worker processes start and end (engine/workerproc.py): spawned at first, forked from the
fork server once it answers, with the main process's environment of now, and ended when the
main process dies however it ended (SIGKILL, a lost display), fork server included."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from engine import workerproc

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def note_and_wait(path: str) -> None:
    """A worker: writes its pid, parent and $CIEL_TEST_MARK, then waits to be orphaned and says so."""
    Path(path).write_text(f"{os.getpid()} {os.getppid()} {os.environ.get('CIEL_TEST_MARK', '')}\n")
    deadline = time.monotonic() + 120
    while not workerproc.orphaned() and time.monotonic() < deadline:
        time.sleep(0.02)
    with open(path, "a") as f:
        f.write("orphaned\n" if workerproc.orphaned() else "timed out\n")


MAIN = textwrap.dedent("""
    import os, sys, time
    sys.path[:0] = [{root!r}, {here!r}]
    from engine import workerproc
    import test_workers

    if __name__ == "__main__":
        if {forked!r}:
            workerproc.warm_up()
            deadline = time.monotonic() + 60
            while workerproc._server is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert workerproc._server is not None, "the fork server never answered"
        os.environ["CIEL_TEST_MARK"] = "set after the server started"
        proc = workerproc.start_worker(test_workers.note_and_wait, ({path!r},), "ciel-test-worker")
        print(proc.pid, flush=True)
        time.sleep(600)
""")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


def wait_for(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


@contextmanager
def main_with_a_worker(tmp_path: Path, forked: bool) -> Iterator[tuple[subprocess.Popen, int, int, Path]]:
    """A main process (MAIN) that started one worker: (main, worker pid, the worker's parent, its
    file), once the worker has written its line. The main process is killed afterwards."""
    out = tmp_path / "worker.txt"
    script = tmp_path / "main.py"
    script.write_text(MAIN.format(root=str(ROOT), here=str(HERE), forked=forked, path=str(out)))
    main = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        worker_pid = int(main.stdout.readline())
        assert wait_for(lambda: out.exists() and out.read_text().strip(), 60), "the worker never ran"
        pid, parent, mark = out.read_text().split(maxsplit=2)
        assert int(pid) == worker_pid
        assert mark.strip() == "set after the server started"     # the environment of now, not the server's
        yield main, worker_pid, int(parent), out
    finally:
        if main.poll() is None:
            main.kill()
            main.wait(10)


@pytest.mark.parametrize("forked", [False, True], ids=["spawned", "forked"])
def test_a_worker_ends_when_the_main_process_is_killed(tmp_path: Path, forked: bool) -> None:
    with main_with_a_worker(tmp_path, forked) as (main, worker_pid, server, out):
        if forked:
            assert server != main.pid                               # forked from the fork server
        else:
            assert server == main.pid                               # spawned by the main process
        main.send_signal(signal.SIGKILL)
        main.wait(10)
        assert wait_for(lambda: "orphaned" in out.read_text(), 30), out.read_text()
        assert wait_for(lambda: not alive(worker_pid), 30), "the worker outlived the main process"
        if forked:
            assert wait_for(lambda: not alive(server), 30), "the fork server outlived the main process"


def test_a_forked_worker_ends_when_its_fork_server_is_killed(tmp_path: Path) -> None:
    """Its handle in the main process then reads as ended and a replacement is started: the
    old worker must not play on beside it."""
    with main_with_a_worker(tmp_path, True) as (main, worker_pid, server, out):
        assert server != main.pid
        os.kill(server, signal.SIGKILL)
        assert wait_for(lambda: "orphaned" in out.read_text(), 30), out.read_text()
        assert wait_for(lambda: not alive(worker_pid), 30), "the worker outlived its fork server"
        assert main.poll() is None                                  # the main process goes on
