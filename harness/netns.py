"""Two network namespaces joined by a veth pair: a stage LAN on one machine, for tests and benches.

    with Lan() as lan:
        lan.server   # namespace name of the ciel machine (address lan.server_ip)
        lan.client   # namespace of the other machine: lan.client_ip, plus lan.outsider_ip on the same link
        subprocess.run(lan.run_in(lan.client, [sys.executable, "-m", "harness.lanclient", ...]))

Needs root (`ip netns`); `available()` says why not. Every namespace and link is removed on exit,
also after a failure. Each namespace has its own loopback (up) and a multicast route, so zeroconf
works across the link and nowhere else: nothing reaches the machine's real network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

SUBNET = "10.77.0"


def available() -> str | None:
    """None if namespaces can be made here, else why not."""
    if shutil.which("ip") is None:
        return "the `ip` command (Debian package iproute2) is missing"
    if os.geteuid() != 0:
        return "network namespaces need root"
    return None


def _ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")


class Lan:
    """The ciel machine (`server`, 10.77.0.1) and another machine (`client`, 10.77.0.2 and, outside
    any allow-list the test writes, 10.77.0.3) on one link."""

    def __init__(self, tag: str | None = None) -> None:
        tag = tag or str(os.getpid())
        self.server, self.client = f"ciel-srv-{tag}", f"ciel-cli-{tag}"
        self._veth = (f"cs{tag}"[-15:], f"cc{tag}"[-15:])
        self.server_ip, self.client_ip, self.outsider_ip = f"{SUBNET}.1", f"{SUBNET}.2", f"{SUBNET}.3"

    def __enter__(self) -> Lan:
        try:
            for ns in (self.server, self.client):
                _ip("netns", "add", ns)
                _ip("-n", ns, "link", "set", "lo", "up")
            a, b = self._veth
            _ip("link", "add", a, "netns", self.server, "type", "veth", "peer", "name", b, "netns", self.client)
            for ns, dev, addrs in ((self.server, a, [self.server_ip]), (self.client, b, [self.client_ip, self.outsider_ip])):
                for addr in addrs:
                    _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
                _ip("-n", ns, "link", "set", dev, "up")
                _ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", dev)
        except BaseException:
            self.__exit__()
            raise
        return self

    def run_in(self, namespace: str, argv: list[str]) -> list[str]:
        """`argv` as run inside `namespace` (for subprocess), from this repository's root."""
        return ["ip", "netns", "exec", namespace, *argv]

    def __exit__(self, *exc: object) -> None:
        for ns in (self.server, self.client):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)   # the veth pair goes with it


ROOT = Path(__file__).resolve().parent.parent


class Island:
    """One network namespace with loopback only: no route to anywhere (`run_in(argv)`)."""

    def __init__(self, tag: str | None = None) -> None:
        self.name = f"ciel-island-{tag or os.getpid()}"

    def __enter__(self) -> Island:
        _ip("netns", "add", self.name)
        try:
            _ip("-n", self.name, "link", "set", "lo", "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def run_in(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=10)
