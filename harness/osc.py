"""A small OSC client for tests, benchmarks and scripts (not part of a show)."""

from __future__ import annotations

import socket
import time
from typing import Any

from pythonosc.osc_packet import OscPacket

from engine.control.osc import Address, message


class OscClient:
    """A small OSC client over one UDP socket (tests, benchmarks, scripts): send, and read replies.

    The socket is bound to `bind` (an ephemeral port by default), so replies and, after
    /ciel/subscribe with no port, feedback come back to it.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 9000, bind: Address = ("127.0.0.1", 0)) -> None:
        self.target = (host, port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind(bind)
        self.port = self.sock.getsockname()[1]

    def send(self, address: str, *args: Any) -> None:
        self.sock.sendto(message(address, args), self.target)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendto(data, self.target)

    def recv(self, timeout: float = 1.0) -> tuple[str, tuple[Any, ...]] | None:
        """The next message received (bundles unpacked one message at a time), or None after `timeout` s."""
        self.sock.settimeout(timeout)
        try:
            data, _ = self.sock.recvfrom(65536)
        except (TimeoutError, BlockingIOError):   # a timeout of 0 makes the socket non-blocking
            return None
        m = OscPacket(data).messages[0].message
        return m.address, tuple(m.params)

    def wait_for(self, address: str, timeout: float = 1.0) -> tuple[Any, ...] | None:
        """Arguments of the next message to `address` within `timeout` s, skipping others."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            got = self.recv(left)
            if got is not None and got[0] == address:
                return got[1]
        return None

    def close(self) -> None:
        self.sock.close()
