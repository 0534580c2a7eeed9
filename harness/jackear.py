"""An ear on JACK ports in a process of its own: `python -m harness.jackear SERVER PATTERN`.

It opens a JACK client `chaos-ear` on the server, connects the output ports whose names match
the regular expression PATTERN (up to 8, in sorted name order) as they appear, and every 50 ms prints
one line to stdout:

    CYCLES FIRST LAST

CYCLES: process cycles so far; FIRST and LAST: the monotonic times (CLOCK_MONOTONIC, the same
clock as the caller's `time.monotonic()`) of the first and the last block since the previous
line with a peak above the threshold (-80 dBFS), or 0 when none was. A reader that marks both
times alive measures every silence to within one JACK period.

Why a process: libjack keeps per-process state keyed by the server's name. A client that
outlived its server (killed) and is closed after a new server of the same name came up can
leave the new client triggered by the server but never run, deaf for good. A fresh process per
server has none of that state; it exits (code 3) when its server goes away or when stdin
closes (the caller ended), and the caller starts another. The process callback only reads
peaks; connections are made on the reporting thread.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time

import numpy as np

SILENT_PEAK = 10 ** (-80 / 20)
INTERVAL_S = 0.05
CHANNELS = 8


def main(argv: list[str]) -> int:
    import jack

    server, pattern = argv[0], re.compile(argv[1])
    client = jack.Client("chaos-ear", no_start_server=True, servername=server)
    ports = [client.inports.register(f"in_{i}") for i in range(1, CHANNELS + 1)]
    state = {"cycles": 0, "first": 0.0, "last": 0.0}

    def process(frames: int) -> None:   # JACK's thread: peaks only
        state["cycles"] += 1
        if max(float(np.abs(p.get_array()).max()) for p in ports) > SILENT_PEAK:
            now = time.monotonic()
            if not state["first"]:
                state["first"] = now
            state["last"] = now

    client.set_process_callback(process)
    client.set_shutdown_callback(lambda status, reason: os._exit(3))
    client.activate()
    threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()   # the caller ended
    while True:
        names = sorted(p.name for p in client.get_ports(is_output=True, is_audio=True) if pattern.search(p.name))
        for src, dst in zip(names[:CHANNELS], ports):
            try:
                if dst.name not in {c.name for c in client.get_all_connections(src)}:
                    client.connect(src, dst)
            except jack.JackError:   # the port went away between the listing and now: next round
                pass
        # a block the callback hears between these two lines is lost: a silence's end may be
        # read one period (2.7 ms at 128 frames) late, never early
        first, last = state["first"], state["last"]
        state["first"] = state["last"] = 0.0
        sys.stdout.write(f"{state['cycles']} {first:.6f} {last:.6f}\n")
        sys.stdout.flush()
        time.sleep(INTERVAL_S)


if __name__ == "__main__":
    try:
        raise SystemExit(main(sys.argv[1:]))
    except Exception as exc:  # noqa: BLE001 — one line for the caller's log, then a restart
        print(f"jackear: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
