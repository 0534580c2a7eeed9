"""systemd service notifications (`Type=notify`, `WatchdogSec=`) without extra dependencies.

systemd passes `$NOTIFY_SOCKET` (a UNIX datagram socket; a leading `@` means the abstract
namespace) and, with `WatchdogSec=`, `$WATCHDOG_USEC` (and `$WATCHDOG_PID`). ciel sends
`READY=1` once sound and picture run, then `WATCHDOG=1` at half the watchdog interval but only
while frames and audio callbacks keep advancing: a frozen render loop or a dead sound path stops
the pings, and systemd restarts the service (`Restart=always`). Outside systemd every call is a
no-op.

Called from the main thread (`Watchdog.tick` once per frame).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping

log = logging.getLogger("ciel.systemd")


class Notifier:
    """Sends sd_notify messages to `$NOTIFY_SOCKET`; does nothing when it is unset."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        self.address: str | None = None
        if path.startswith("@"):
            self.address = "\0" + path[1:]
        elif path.startswith("/"):
            self.address = path
        self.watchdog_s: float | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 1e6
        self._sock: socket.socket | None = None
        self.errors = 0

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *fields: str) -> bool:
        """Send `KEY=value` lines in one datagram; False (counted, never raised) when it fails."""
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(fields).encode(), self.address)
            return True
        except OSError as exc:
            self.errors += 1
            if self.errors == 1:
                log.warning("systemd notify to %s failed: %s", self.address.lstrip("\0"), exc)
            return False

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *((f"STATUS={status}",) if status else ()))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class Watchdog:
    """READY once both counters have moved; WATCHDOG=1 only while both keep moving.

    progress: returns (frames drawn, audio callbacks) — monotonic counters (the audio count may be
              None when the engine runs without sound; then frames alone count).
    interval: seconds between pings (default: half of `$WATCHDOG_USEC`, or 10 s for STATUS only).
    """

    def __init__(self, progress: Callable[[], tuple[int, int | None]], notifier: Notifier | None = None,
                 interval: float | None = None) -> None:
        self.notifier = notifier or Notifier()
        self.progress = progress
        wd = self.notifier.watchdog_s
        self.interval = interval if interval is not None else (wd / 2 if wd else 10.0)
        self.ready = False
        self.pings = 0
        self.withheld = 0
        self._last: tuple[int, int | None] | None = None
        self._next = 0.0

    def tick(self, now: float, status: str = "") -> None:
        """Main thread, once per frame (cheap: does work once per `interval`)."""
        if not self.notifier.enabled or now < self._next:
            return
        self._next = now + self.interval
        frames, callbacks = self.progress()
        if not self.ready:
            if frames > 0 and (callbacks is None or callbacks > 0):
                self.ready = True
                self.notifier.ready(status or "sound and picture running")
                self._last = (frames, callbacks)
            return
        last = self._last or (0, None)
        moving = frames > last[0] and (callbacks is None or last[1] is None or callbacks > last[1])
        self._last = (frames, callbacks)
        if moving and self.notifier.watchdog_s:
            self.notifier.watchdog()
            self.pings += 1
        elif not moving:
            self.withheld += 1
            log.warning("watchdog withheld: frames %s, audio callbacks %s did not advance", frames, callbacks)
        if status:
            self.notifier.status(status)

    def close(self) -> None:
        if self.ready:
            self.notifier.stopping()
        self.notifier.close()
