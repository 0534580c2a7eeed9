"""Control surfaces: OSC throughput without loss, OSC and MIDI latency to the parameter store, and
audio underflows while OSC floods the engine.

`python -m bench control [--quick]` starts a JACK dummy server (harness.parts.jackd, 48 kHz,
128-frame periods, raised to real-time priority as bench/audio.py does), an OscServer and a MidiControl on a ParamStore that publishes to a
SharedSnapshot, and the real audio process (engine.audio.output.AudioProcess) reading it.

- osc_msgs_per_s: a sender process paces set messages at rising rates (5k, 10k, 20k, 40k, 80k
  per second, 2 s each; --quick: up to 40k, 1 s each); the highest rate it reached at which the
  server handled every message (server counter = sent) is the figure.
- osc_to_param_ms_p99: one /ciel/sky/lat message at a time from a UDP client in this process;
  time from send to the store's listener seeing the new value.
- midi_to_param_ms_p99: one CC at a time from a virtual JACK MIDI port (mido, UNIX_JACK) through
  MidiControl's 1 ms reader to the store. Includes JACK's MIDI period (128 frames = 2.7 ms).
- underflows_during_flood: ring underflows + PortAudio xruns of the audio process while a sender
  process floods OSC at 10,000 messages/s for 10 s (--quick: 5 s); null if the audio process
  cannot start.

Medians, the rate ladder, the machine's load and the audio details go to stderr as one line.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.common import machine_load, percentile

ROOT = Path(__file__).resolve().parents[1]
FLOODER = """
import sys, time
from engine.control.osc import message
import socket
port, rate, seconds = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
msgs = [message(a, [v]) for v in (0.1, 0.2, 0.3, 0.4) for a in ("/ciel/audio/walk/speed", "/ciel/sky/spin")]
t0 = time.monotonic(); n = 0
while (t := time.monotonic() - t0) < seconds:
    while n < t * rate:
        s.sendto(msgs[n % 8], ("127.0.0.1", port)); n += 1
    time.sleep(0.001)
print(n, round(n / (time.monotonic() - t0)))
"""


def flood(port: int, rate: float, seconds: float) -> subprocess.Popen:
    """A sender process pacing `rate` OSC messages per second for `seconds`; prints 'sent rate'."""
    return subprocess.Popen([sys.executable, "-c", FLOODER, str(port), str(rate), str(seconds)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))


def settle(osc, timeout: float = 5.0) -> int:
    """Wait until the server's handled count stops moving; returns it."""
    last, t0 = -1, time.monotonic()
    while time.monotonic() - t0 < timeout:
        now = osc.counters["handled"]
        if now == last:
            return now
        last = now
        time.sleep(0.1)
    return last


def lossless_rate(osc, rates: list[float], seconds: float) -> tuple[float, str]:
    best, notes = 0.0, []
    for rate in rates:
        before = settle(osc)
        proc = flood(osc.port, rate, seconds)
        sent, achieved = (int(x) for x in proc.communicate(timeout=seconds + 30)[0].split())
        handled = settle(osc) - before
        notes.append(f"{achieved}/s: {handled}/{sent}")
        if handled < sent:
            break
        best = max(best, achieved)
    return best, ", ".join(notes)


def osc_latency(osc, store, n: int) -> list[float]:
    from harness.osc import OscClient

    seen = threading.Event()
    want = [0.0]

    def listener(name: str, values: tuple[float, ...], source: str) -> None:
        if name == "sky/lat" and values[0] == want[0]:
            seen.set()

    store.add_listener(listener)
    client = OscClient(port=osc.port)
    out = []
    try:
        for i in range(n):
            want[0] = float((i % 170) - 85)
            seen.clear()
            t0 = time.perf_counter()
            client.send("/ciel/sky/lat", want[0])
            if seen.wait(1.0):
                out.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.003)
    finally:
        store.remove_listener(listener)
        client.close()
    return out


def midi_latency(store, n: int) -> list[float]:
    import mido

    from engine.control.config import MidiConfig, MidiMapping
    from engine.control.midi import MidiControl

    name = f"ciel-bench-{os.getpid()}"
    out_port = mido.Backend("mido.backends.rtmidi/UNIX_JACK").open_output(name, virtual=True)
    cfg = MidiConfig(api="UNIX_JACK", inputs=(name,), takeover="none",
                     mappings=(MidiMapping(param="sky/roll", number=10),))
    midi = MidiControl(cfg, store, client_name=f"ciel-bench-{os.getpid()}").start()
    seen = threading.Event()
    want = [0.0]

    def listener(pname: str, values: tuple[float, ...], source: str) -> None:
        if pname == "sky/roll" and abs(values[0] - want[0]) < 1e-9:
            seen.set()

    store.add_listener(listener)
    out = []
    try:
        t0 = time.monotonic()
        while not midi.ports and time.monotonic() - t0 < 5:
            midi.poll()
            time.sleep(0.02)
        for i in range(n):
            v = (i * 37) % 128
            if i and v == (i - 1) * 37 % 128:
                continue
            want[0] = -180.0 + 360.0 * v / 127
            seen.clear()
            t0 = time.perf_counter()
            out_port.send(mido.Message("control_change", control=10, value=v))
            if seen.wait(1.0):
                out.append((time.perf_counter() - t0) * 1000)
            midi.poll()
            time.sleep(0.005)
    finally:
        store.remove_listener(listener)
        midi.close()
        out_port.close()
    return out


def underflows_during_flood(osc, snapshot_name: str, seconds: float) -> tuple[int | None, str]:
    try:
        from engine.audio.output import AudioProcess
        from engine.patch import load_patch
    except ImportError as exc:
        return None, f"no audio process ({exc})"
    cfg = load_patch(check_models=False).audio
    audio = AudioProcess(cfg, snapshot_name)
    try:
        audio.start()
        time.sleep(1.0)
        base = audio.status()
        proc = flood(osc.port, 10_000, seconds)
        t0 = time.monotonic()
        while proc.poll() is None:
            audio.poll()
            time.sleep(0.05)
        sent, achieved = proc.communicate()[0].split()
        end = audio.status()
        lost = end.underflows - base.underflows + end.xruns - base.xruns
        return int(lost), (f"audio {end.device} {end.samplerate} Hz block {end.blocksize}: {end.callbacks - base.callbacks} "
                           f"callbacks in {time.monotonic() - t0:.1f} s of flood at {achieved} msg/s "
                           f"({end.underflows - base.underflows} ring underflows, {end.xruns - base.xruns} xruns, "
                           f"{end.restarts} restarts)")
    except Exception as exc:  # the figure is null with the reason; the other keys still count
        return None, f"audio process failed: {exc}"
    finally:
        audio.stop()


def main(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench control")
    ap.add_argument("--quick", action="store_true", help="a run of under a minute")
    args = ap.parse_args(argv)
    quick = args.quick

    from engine.control.config import OscConfig
    from engine.control.osc import OscServer
    from engine.params import REGISTRY, ParamStore, SharedSnapshot
    from harness import parts

    with parts.jackd(rate=48000, period=128) as server:
        server_what = server.describe()
        snapshot = SharedSnapshot(REGISTRY.size)
        store = ParamStore(snapshot=snapshot)
        osc = OscServer(OscConfig(port=0, heartbeat=0.0), store).start()
        try:
            osc_ms = osc_latency(osc, store, 300 if quick else 2000)
            midi_ms = midi_latency(store, 200 if quick else 1000)
            rates = [5000, 10000, 20000, 40000] + ([] if quick else [80000])
            best, ladder = lossless_rate(osc, rates, 1.0 if quick else 2.0)
            underflows, audio_note = underflows_during_flood(osc, snapshot.name, 5.0 if quick else 10.0)
            kernel_drops = osc.health()["kernel_drops"]
        finally:
            osc.close()
            snapshot.close()
    print(f"control: {machine_load()}; osc p50 {percentile(osc_ms, 50)} ms over {len(osc_ms)}, midi p50 "
          f"{percentile(midi_ms, 50)} ms over {len(midi_ms)}; lossless ladder (sent rate: handled/sent) {ladder}; "
          f"kernel drops {kernel_drops}; {audio_note}; {server_what}", file=sys.stderr)
    return {
        "osc_msgs_per_s": int(best),
        "osc_to_param_ms_p99": percentile(osc_ms, 99),
        "midi_to_param_ms_p99": percentile(midi_ms, 99),
        "underflows_during_flood": underflows,
    }
