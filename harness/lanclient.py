"""The other machine of a stage LAN: what a performer's laptop or tablet does with ciel, as one JSON report.

    ip netns exec NS python -m harness.lanclient --me 10.77.0.2 --outsider 10.77.0.3 [--flood 2] [--pushes 20]

1. finds ciel over zeroconf (`_oscjson._tcp`) and reads HOST_INFO: the OSC address must be reachable;
2. sets `sky/lon` over OSC UDP from `--me`, reads it back over OSCQuery;
3. listens over the OSCQuery websocket (LISTEN) to a change this client does not make (ciel's
   scheduler fires `scene/next` every period) and counts the pushes, with the gaps between them;
4. from `--outsider` (an address outside ciel's allow-list): an OSC set and an HTTP request;
5. `/ciel/quit` from `--me`: ciel must still answer afterwards (admin is for ciel's own machine);
6. `--flood S`: forged `/ciel/get` requests from `--me` for S seconds; bytes answered ÷ bytes sent.

`--listen-probe S` (on the other machine) and `--send-local N` (on the ciel machine) time a LISTEN
push across the link instead: both stamp time.monotonic(), one clock for every network namespace.

Runs inside a network namespace (harness.netns); the test or bench reads the JSON from stdout.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import sys
import threading
import time
from typing import Any

from pythonosc.osc_message_builder import OscMessageBuilder


def osc(address: str, *args: Any) -> bytes:
    b = OscMessageBuilder(address)
    for a in args:
        b.add_arg(a)
    return b.build().dgram


def discover(timeout: float) -> tuple[str, int] | None:
    """(address, port) of the first `_oscjson._tcp` service zeroconf finds."""
    from zeroconf import IPVersion, ServiceBrowser, ServiceListener, Zeroconf

    found: list[tuple[str, int]] = []
    done = threading.Event()

    class Listener(ServiceListener):
        def add_service(self, zc: Zeroconf, type_: str, name: str) -> None:
            info = zc.get_service_info(type_, name, timeout=3000)
            if info is not None and info.parsed_addresses():
                found.append((info.parsed_addresses()[0], int(info.port or 0)))
                done.set()

        def update_service(self, zc: Zeroconf, type_: str, name: str) -> None:
            pass

        def remove_service(self, zc: Zeroconf, type_: str, name: str) -> None:
            pass

    zc = Zeroconf(ip_version=IPVersion.V4Only)
    try:
        ServiceBrowser(zc, "_oscjson._tcp.local.", Listener())
        done.wait(timeout)
    finally:
        zc.close()
    return found[0] if found else None


def http_get(host: str, port: int, path: str, source: str) -> tuple[int, Any]:
    conn = http.client.HTTPConnection(host, port, timeout=5, source_address=(source, 0))
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, json.loads(body) if resp.getheader("Content-Type", "").startswith("application/json") else None
    except OSError as exc:
        return 0, str(exc)
    finally:
        conn.close()


def udp_from(source: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((source, 0))
    return s


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--me", default="", help="this machine's address (allowed by ciel)")
    ap.add_argument("--outsider", default="", help="an address of this machine outside ciel's allow-list")
    ap.add_argument("--flood", type=float, default=2.0, help="seconds of forged /ciel/get (0 = none)")
    ap.add_argument("--pushes", type=int, default=3, help="LISTEN pushes to wait for")
    ap.add_argument("--discover", type=float, default=20.0)
    ap.add_argument("--listen-probe", type=float, default=0.0, metavar="S",
                    help="only LISTEN to sky/spacing for S seconds and report every push's arrival time")
    ap.add_argument("--send-local", type=int, default=0, metavar="N",
                    help="only send N local changes of sky/spacing to 127.0.0.1:--osc-port (run on the ciel machine)")
    ap.add_argument("--osc-port", type=int, default=9000)
    args = ap.parse_args(argv)
    out: dict[str, Any] = {}
    if args.send_local:
        return {"sent": send_local(args.osc_port, args.send_local, 0.02)}
    where = discover(args.discover)
    out["discovered"] = list(where) if where else None
    if where is None:
        return out
    host, port = where
    if args.listen_probe:
        out["pushes"] = listen_probe(host, port, args.listen_probe)
        return out
    status, info = http_get(host, port, "/?HOST_INFO", args.me)
    out["host_info"] = info if status == 200 else {"status": status}
    osc_ip, osc_port = (info or {}).get("OSC_IP"), (info or {}).get("OSC_PORT")
    out["osc_address"] = [osc_ip, osc_port]
    if not osc_ip or not osc_port:
        return out

    me = udp_from(args.me)
    me.sendto(osc("/ciel/sky/lon", 42.0), (osc_ip, osc_port))
    deadline = time.monotonic() + 5
    value = None
    while time.monotonic() < deadline:
        _, node = http_get(host, port, "/ciel/sky/lon?VALUE", args.me)
        value = (node or {}).get("VALUE", [None])[0] if isinstance(node, dict) else None
        if value == 42.0:
            break
        time.sleep(0.05)
    out["set_over_osc"] = value

    from websockets.sync.client import connect

    gaps, pushes = [], []
    with connect(f"ws://{host}:{port}/", open_timeout=5) as ws:
        ws.send(json.dumps({"COMMAND": "LISTEN", "DATA": "/ciel/scene/next"}))
        end = time.monotonic() + 15
        while len(pushes) < args.pushes and time.monotonic() < end:
            try:
                frame = ws.recv(timeout=max(0.1, end - time.monotonic()))
            except TimeoutError:
                break
            if isinstance(frame, bytes) and frame.startswith(b"/ciel/scene/next\0"):
                pushes.append(time.monotonic())
        gaps = [round((b - a) * 1e3, 1) for a, b in zip(pushes, pushes[1:])]
    out["listen_pushes"] = len(pushes)
    out["listen_gaps_ms"] = gaps

    outsider = udp_from(args.outsider)
    outsider.sendto(osc("/ciel/sky/lon", 7.0), (osc_ip, osc_port))
    outsider.sendto(osc("/ciel/quit"), (osc_ip, osc_port))
    time.sleep(0.5)
    _, node = http_get(host, port, "/ciel/sky/lon?VALUE", args.me)
    out["after_outsider_set"] = (node or {}).get("VALUE", [None])[0] if isinstance(node, dict) else None
    out["outsider_http_status"] = http_get(host, port, "/?HOST_INFO", args.outsider)[0]

    me.sendto(osc("/ciel/quit"), (osc_ip, osc_port))
    time.sleep(1.0)
    out["alive_after_remote_quit"] = http_get(host, port, "/?HOST_INFO", args.me)[0] == 200

    if args.flood > 0:
        out.update(reflection(me, (osc_ip, osc_port), args.flood))
    return out


def listen_probe(host: str, port: int, seconds: float) -> list[tuple[float, float]]:
    """LISTEN to `sky/spacing` for `seconds`: (value, time.monotonic() at arrival) of every push."""
    from pythonosc.osc_message import OscMessage
    from websockets.sync.client import connect

    got: list[tuple[float, float]] = []
    with connect(f"ws://{host}:{port}/", open_timeout=5) as ws:
        ws.send(json.dumps({"COMMAND": "LISTEN", "DATA": "/ciel/sky/spacing"}))
        print("listening", file=sys.stderr, flush=True)
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            try:
                frame = ws.recv(timeout=left)
            except TimeoutError:
                break
            now = time.monotonic()
            if isinstance(frame, bytes) and frame.startswith(b"/ciel/sky/spacing\0"):
                got.append((float(OscMessage(frame).params[0]), now))
    return got


def send_local(port: int, n: int, gap: float) -> list[tuple[float, float]]:
    """On the ciel machine, as a local tool (or the scheduler) would: `n` changes of `sky/spacing`
    over loopback UDP, `gap` s apart; (value, time.monotonic() just before each send)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sent = []
    for i in range(n):
        value = 5.0 + (i % 85) + 0.25 * ((i // 85) % 4)
        t = time.monotonic()
        s.sendto(osc("/ciel/sky/spacing", value), ("127.0.0.1", port))
        sent.append((value, t))
        time.sleep(gap)
    return sent


def reflection(sock: socket.socket, target: tuple[str, int], seconds: float, rate: float = 500.0) -> dict[str, Any]:
    """Send `/ciel/get` (all values) `rate` times a second for `seconds` and count what comes back
    to the same address: the amplification a forged source would get."""
    request = osc("/ciel/get")
    received = [0]
    stop = threading.Event()

    def drain() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                received[0] += len(sock.recv(65536))
            except (TimeoutError, OSError):
                continue

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    sent, t0 = 0, time.monotonic()
    while (now := time.monotonic()) - t0 < seconds:
        due = int((now - t0) * rate)
        while sent < due:
            sock.sendto(request, target)
            sent += 1
        time.sleep(0.002)
    time.sleep(0.5)
    stop.set()
    reader.join()
    sent_bytes = sent * len(request)
    return {"flood_requests": sent, "flood_request_bytes": sent_bytes, "flood_reply_bytes": received[0],
            "reflection_ratio": round(received[0] / sent_bytes, 3) if sent_bytes else None}


if __name__ == "__main__":
    json.dump(main(), sys.stdout)
    print()
