"""Control surfaces: OSC throughput without loss, OSC and MIDI latency to the parameter store, and
audio underflows while OSC floods the engine.

`python -m bench control [--quick]` starts a JACK dummy server (harness.parts.jackd, 48 kHz,
64-frame periods, raised to real-time priority as bench/audio.py does), an OscServer and a MidiControl on a ParamStore that publishes to a
SharedSnapshot, and the real audio process (engine.audio.output.AudioProcess) reading it.

- osc_msgs_per_s: a sender process paces set messages at rising rates (5k, 10k, 20k, 40k, 80k
  per second, 2 s each; --quick: up to 40k, 1 s each); the highest rate it reached at which the
  server handled every message (server counter = sent) is the figure.
- osc_to_param_ms_p99: one /ciel/sky/lat message at a time from a UDP client in this process;
  time from send to the store's listener seeing the new value.
- midi_to_param_ms_p99: one CC at a time from a virtual JACK MIDI port (mido, UNIX_JACK) through
  MidiControl's 1 ms reader to the store. Includes JACK's MIDI period (64 frames = 1.3 ms).
- underflows_during_flood: ring underflows + PortAudio xruns of the audio process while a sender
  process floods OSC at 10,000 messages/s for 10 s (--quick: 5 s); null if the audio process
  cannot start.

- listen_push_ms_p99 (listen_push_missed): `ciel run --lan` in a network namespace; a local tool on
  that machine changes `sky/spacing` over loopback OSC (a change the remote client did not make, as
  the scheduler or a MIDI knob makes one) until a LISTEN client in a second namespace receives it
  over the websocket across the veth link (time.monotonic() on both sides: one clock). Null with
  `lan_reason` without namespaces.
- page_to_param_ms_p99 (page_to_param_missed): the control page in headless Chromium at 390x844; a
  real drag on the sky/lon slider (DevTools Input events: press, three moves); from the last move
  until the store has the page's last value. Includes the page's one send per animation frame
  (16.7 ms at 60 Hz).
- midi_to_page_ms_p99 (midi_to_page_missed): a CC from a virtual JACK MIDI port until the page has
  set the slider (the page stamps Date.now(); same wall clock). Null with `page_reason` without Chromium.
- get_reflection_ratio: `ciel run --lan` in a network namespace; a client in a second one sends
  /ciel/get 500 times a second for 10 s from an allowed address (as a forger would): bytes that came
  back ÷ bytes sent. Null with `get_reflection_reason` without namespaces (root and iproute2).
Every probe counts: a miss enters the percentile at the 1 s timeout and is counted in `*_missed`.

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


def probe_ms(samples: list[float | None], timeout_ms: float) -> tuple[list[float], int]:
    """Probe times with each miss counted at the timeout (a miss is a failure, never dropped)."""
    missed = sum(1 for s in samples if s is None)
    return [timeout_ms if s is None else s for s in samples], missed


def page_latencies(store, osc, n: int) -> tuple[list[float | None], list[float | None], str]:
    """The control page in headless Chromium (a 390x844 phone screen):
    page_to_param: a real mouse press on the `sky/lon` slider (CDP Input events) until the store
    sees the new value from the page's websocket; midi_to_page: a CC from a virtual JACK MIDI port
    (mapped to `sky/lat`) until the page has applied the pushed value (the page stamps Date.now()
    when it sets the slider; the bench's clock is the same wall clock)."""
    import mido

    from engine.control.config import MidiConfig, MidiMapping, OscQueryConfig
    from engine.control.midi import MidiControl
    from engine.control.oscquery import OscQueryServer
    from harness.chromium import Chromium, find_chromium

    try:
        find_chromium()
    except FileNotFoundError as exc:
        return [], [], str(exc)
    name = f"ciel-bench-page-{os.getpid()}"
    controller = mido.Backend("mido.backends.rtmidi/UNIX_JACK").open_output(name, virtual=True)
    midi = MidiControl(MidiConfig(api="UNIX_JACK", inputs=(name,), takeover="none",
                                  mappings=(MidiMapping(param="sky/lat", number=23),)),
                       store, client_name=f"ciel-bench-page-{os.getpid()}").start()
    query = OscQueryServer(OscQueryConfig(port=0, zeroconf=False), store, osc).start()
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            midi.poll()
            time.sleep(0.01)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    changes: list[float] = []      # perf_counter() of each change of sky/lon that came from the page

    def listener(pname: str, values: tuple[float, ...], source: str) -> None:
        if pname == "sky/lon" and source.startswith("ws:"):
            changes.append(time.perf_counter())

    store.add_listener(listener)
    to_param: list[float | None] = []
    to_page: list[float | None] = []
    try:
        with Chromium(390, 844) as browser, browser.page(f"http://127.0.0.1:{query.port}/control/") as page:
            page.wait_for("window.cielPage && window.cielPage.ready", 20)
            page.click("#group-sky summary")
            page.evaluate("document.getElementById('p-sky-lon').scrollIntoView({block: 'center'})")
            x, y, w, h = page.box("#p-sky-lon")

            def mouse(kind: str, at: float) -> None:
                browser.call("Input.dispatchMouseEvent", {"type": kind, "x": at, "y": y + h / 2, "button": "left",
                                                          "buttons": 1, "clickCount": 1}, page.session)

            for i in range(n):
                # a drag: press, three moves; timed from the last move to the store having the page's value
                start = 0.1 + 0.35 * ((i * 37) % 100) / 100
                mouse("mousePressed", x + start * w)
                mouse("mouseMoved", x + (start + 0.1) * w)
                mouse("mouseMoved", x + (start + 0.2) * w)
                before = len(changes)
                t0 = time.perf_counter()
                mouse("mouseMoved", x + (start + 0.3) * w)
                deadline = t0 + 1.0
                while time.perf_counter() < deadline and (len(changes) == before or time.perf_counter() - changes[-1] < 0.05):
                    time.sleep(0.001)
                to_param.append((changes[-1] - t0) * 1000 if len(changes) > before else None)
                mouse("mouseReleased", x + (start + 0.3) * w)
                time.sleep(0.05)
            while not midi.ports:
                time.sleep(0.05)
            for i in range(n):
                v = (i * 37) % 128
                t0 = time.time()
                controller.send(mido.Message("control_change", control=23, value=v))
                target = -90.0 + 180.0 * v / 127      # the slider snaps to its step (0.18 degrees)
                expr = (f"Math.abs(Number(document.getElementById('p-sky-lat').value) - {target!r}) <= 0.2 && "
                        f"window.cielPage.received['/ciel/sky/lat'] >= {int(t0 * 1000)}")
                try:
                    page.wait_for(expr, 1.0, interval=0.005)
                    to_page.append(page.evaluate("window.cielPage.received['/ciel/sky/lat']") - t0 * 1000)
                except Exception:   # CDPError: the page never showed it within a second
                    to_page.append(None)
                time.sleep(0.01)
            errors = page.console_errors
    finally:
        store.remove_listener(listener)
        stop.set()
        poller.join()
        query.close()
        midi.close()
        controller.close()
    return to_param, to_page, f"page console errors {len(errors)}"


def lan_figures(seconds: float, probes: int) -> tuple[list[float | None] | None, float | None, str]:
    """`ciel run --lan` (the whole engine) in one network namespace, another machine in a second.

    listen push: a local tool on the ciel machine sends `probes` changes of `sky/spacing` over
    loopback, 20 ms apart; the other machine LISTENs over the OSCQuery websocket across the link.
    Both stamp time.monotonic() (one clock for every namespace); a change never pushed is None.
    reflection: the other machine sends /ciel/get 500 times a second for `seconds` from an allowed
    address (as a forger would); bytes that came back ÷ bytes sent.
    Returns (push delays in ms, reflection ratio, a note); None where namespaces cannot be made."""
    import json

    from harness import netns

    why = netns.available()
    if why is not None:
        return None, None, f"no network namespaces: {why}"
    root = Path(__file__).resolve().parents[1]
    client = [sys.executable, "-m", "harness.lanclient"]

    def last_json(proc: subprocess.CompletedProcess) -> dict:
        try:
            return json.loads(proc.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return {"error": proc.stderr.strip()[-300:]}

    with netns.Lan() as lan:
        engine = subprocess.Popen(
            lan.run_in(lan.server, [sys.executable, "-m", "engine.cli", "run", "--headless", "--audio", "none",
                                    "--no-midi", "--lan", "--allow", f"{lan.client_ip}/32", "--seconds", str(seconds + 120)]),
            cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            listener = subprocess.Popen(lan.run_in(lan.client, [*client, "--listen-probe", str(probes * 0.02 + 8)]),
                                        cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            assert listener.stderr is not None
            ready = listener.stderr.readline()          # "listening" once discovered and LISTENed
            sent = last_json(subprocess.run(lan.run_in(lan.server, [*client, "--send-local", str(probes)]),
                                            cwd=root, capture_output=True, text=True, timeout=probes * 0.05 + 60))
            out, err = listener.communicate(timeout=probes * 0.05 + 60)
            pushes = last_json(subprocess.CompletedProcess([], listener.returncode, out, err)).get("pushes", [])
            flood = last_json(subprocess.run(lan.run_in(lan.client, [*client, "--me", lan.client_ip, "--outsider",
                                                                     lan.outsider_ip, "--flood", str(seconds), "--pushes", "0"]),
                                             cwd=root, capture_output=True, text=True, timeout=seconds + 90))
        finally:
            engine.terminate()
            engine.wait(timeout=30)
    delays: list[float | None] = []
    if "listening" in ready:
        arrivals = list(pushes)
        for value, t_sent in sent.get("sent", []):
            hit = next((t for v, t in arrivals if abs(v - value) < 1e-3 and t >= t_sent), None)
            delays.append(None if hit is None else (hit - t_sent) * 1000)
    ratio = flood.get("reflection_ratio")
    note = (f"listen push over the veth link: {sum(d is not None for d in delays)} of {len(delays)} pushes arrived; "
            f"reflection: {flood.get('flood_requests')} forged /ciel/get, {flood.get('flood_request_bytes')} B sent, "
            f"{flood.get('flood_reply_bytes')} B answered")
    return (delays or None), ratio, note


def main(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench control")
    ap.add_argument("--quick", action="store_true", help="a run of under a minute")
    args = ap.parse_args(argv)
    quick = args.quick

    from engine.control.config import OscConfig
    from engine.control.osc import OscServer
    from engine.params import REGISTRY, ParamStore, SharedSnapshot
    from harness import parts

    with parts.jackd(rate=48000, period=64) as server:
        server_what = server.describe()
        snapshot = SharedSnapshot(REGISTRY.size)
        store = ParamStore(snapshot=snapshot)
        osc = OscServer(OscConfig(port=0, heartbeat=0.0), store).start()
        try:
            osc_ms = osc_latency(osc, store, 300 if quick else 2000)
            midi_ms = midi_latency(store, 200 if quick else 1000)
            page_raw, midi_page_raw, page_note = page_latencies(store, osc, 40 if quick else 200)
            page_ms, page_missed = probe_ms(page_raw, 1000.0)
            midi_page_ms, midi_page_missed = probe_ms(midi_page_raw, 1000.0)
            rates = [5000, 10000, 20000, 40000] + ([] if quick else [80000])
            best, ladder = lossless_rate(osc, rates, 1.0 if quick else 2.0)
            underflows, audio_note = underflows_during_flood(osc, snapshot.name, 5.0 if quick else 10.0)
            kernel_drops = osc.health()["kernel_drops"]

        finally:
            osc.close()
            snapshot.close()
    push_raw, reflection, lan_note = lan_figures(10.0, 100 if quick else 400)
    push_ms, push_missed = probe_ms(push_raw or [], 1000.0)
    print(f"control: {machine_load()}; listen push p50 {percentile(push_ms, 50)} ms, page→param p50 "
          f"{percentile(page_ms, 50)} ms, MIDI→page p50 {percentile(midi_page_ms, 50)} ms ({page_note}); "
          f"{lan_note}", file=sys.stderr)
    print(f"control: {machine_load()}; osc p50 {percentile(osc_ms, 50)} ms over {len(osc_ms)}, midi p50 "
          f"{percentile(midi_ms, 50)} ms over {len(midi_ms)}; lossless ladder (sent rate: handled/sent) {ladder}; "
          f"kernel drops {kernel_drops}; {audio_note}; {server_what}", file=sys.stderr)
    return {
        "osc_msgs_per_s": int(best),
        "osc_to_param_ms_p99": percentile(osc_ms, 99),
        "midi_to_param_ms_p99": percentile(midi_ms, 99),
        "underflows_during_flood": underflows,
        "listen_push_ms_p99": percentile(push_ms, 99) if push_ms else None,
        "listen_push_missed": push_missed if push_ms else None,
        "page_to_param_ms_p99": percentile(page_ms, 99) if page_ms else None,
        "page_to_param_missed": page_missed if page_ms else None,
        "midi_to_page_ms_p99": percentile(midi_page_ms, 99) if midi_page_ms else None,
        "midi_to_page_missed": midi_page_missed if midi_page_ms else None,
        "page_reason": None if page_ms else page_note,
        "lan_reason": None if push_ms else lan_note,
        "get_reflection_ratio": reflection,
        "get_reflection_reason": None if reflection is not None else lan_note,
    }
