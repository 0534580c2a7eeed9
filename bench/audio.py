"""Audio benchmark: decode speed, and OSC-to-sound latency through a real JACK dummy server.

    python -m bench audio [--quick] [--seconds S] [--osc-rate N] [--load sky|cpu|none]
                          [--samplerate 48000] [--blocksize 64] [--ahead-ms 1]
                          [--voices N] [--reverb SEND] [--channels N] [--listen-probes N]
                          [--model PATH [--trust-model]] [--threads N]

Keys:
  rtf            the whole real-time path per second of audio, median over 2,000 steps (500 for a
                 TorchScript model, whose steps are 10-50x dearer) on `--threads` threads (one by
                 default): navigation (two voices), streaming decoder, safety stage, resampler to the
                 device rate — what the audio process spends (`AudioSynth.step`); rtf_p99 beside it.
                 With `--voices N` and `--reverb SEND` the same path with N decoder voices made
                 ready and playing (the pair and N - 1 cloud voices, engine/audio/cloud.py) and the
                 reverb fed at SEND; every key below is then measured with them too
                 With `--channels N` (default 2) over N speakers (a ring; engine/audio/speakers.py):
                 the JACK server then has N outputs and every key is measured with them
  model          the audio model played: ciel's default, or `--model PATH` (a model folder, or a
                 RAVE / nn~ TorchScript export with `--trust-model`); model_rate (Hz) and
                 model_hop (samples per latent frame) beside it
  model_delay_ms the decoder's own delay: from the first sample decoded from a changed latent to
                 the first sample that differs because of it (two streams from one seed, one given
                 a latent 2 sigma away from frame 30 on; offline, at the model's rate). 0 for a
                 causal decoder such as ciel's; a RAVE export's cached convolutions hold sound back
  latency_plus_model_delay_ms_p50/p99  each probe's latency_ms plus model_delay_ms: when the sound
                 leaving the port starts to answer (derived: the delay is measured offline)
  threads        torch and BLAS threads of the audio process (`--threads`, default 1) and of rtf
  voices, reverb_send, channels  what the run played (`audio/voices`, `audio/reverb/send`,
                 `[audio] channels`)
  block_ms_p50/p99  time of one decode step in the running audio process (one latent frame:
                 decoder, safety stage, resampler; 4 ms of audio for the default model)
  latency_ms_p50/p99  from sending an OSC message (/ciel/audio/jump with audio/glide 0) to the
                 moment the first sample decoded from the new latent leaves at ciel's output port:
                 the callback's time + its block's DAC time as PortAudio reports it (JACK's port
                 latency) + the sample's offset in the block; over every probe, a missed one
                 counting as 1000 ms
  missed         probes whose change never reached the output within 1 s (failures, not dropped)
  audio_cpu_percent  CPU time of the audio process (user + system, all its threads) over the run,
                 in % of one core
  underflows     callbacks that found the ring short plus PortAudio's output-underflow flags,
                 during the run
  listen_to_param_ms_p50/p99  a sky that listens: from a tone entering ciel's JACK input (the
                 process cycle of the bench's tone client that wrote its first samples into the
                 port ciel reads) to the moment an OSC subscriber receives the `sky/grain` it moves
                 (a `[[mod]]` route from `listen/level`, depth 0.5, the default 50 ms glide) risen by
                 a twentieth of its range; a second audio process with the input open, its own sound
                 muted and `listen/source` on the input, run after the OSC probes with the same load
                 beside it (not the OSC flood); JACK's own capture latency (one period on a sound
                 card) is before this start and not in it; over every probe, a missed one as 1000 ms
  listen_missed  tones whose move never reached the subscriber within 1 s
  seconds        length of the run
  load           cores and load average, and what ran beside the audio process

It runs its own JACK server (dummy driver, named ciel-bench-audio, at realtime priority). The OSC
path is the real one: a python-osc client sends UDP to ciel's OSC server
(engine.control.osc), which writes the ParamStore, which publishes to the shared snapshot that the
audio process reads each decode step.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from bench.common import machine_load, percentile

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "audio-default"

SKY_LOAD = """
import math, sys, time
import numpy as np
from engine.params import REGISTRY
from engine.visual.config import VisualConfig
from engine.visual.offline import FrameRenderer
r = FrameRenderer(VisualConfig(model=sys.argv[1]), 1920, 1080, seed=0)
v, t, end = REGISTRY.defaults(), 0.0, time.monotonic() + float(sys.argv[2])
print("ready", flush=True)
while time.monotonic() < end:
    r.frame(v, t)
    t += 1 / 30
"""

CPU_LOAD = """
import sys, time
import numpy as np
a = np.random.rand(400, 400); end = time.monotonic() + float(sys.argv[2])
print("ready", flush=True)
while time.monotonic() < end:
    a = np.tanh(a @ a / 400)
"""


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def model_delay_ms(model, frames: int = 30, after: int = 40) -> float:
    """The decoder's own delay (ms): two streams from one seed decode the same random latents, one
    of them moved 2 sigma from frame `frames` on; the first sample that differs, after the first
    sample decoded from the moved latent. Raises if no sample ever differs."""
    from engine.audio.inference import NumpyStream

    rng = np.random.default_rng(0)
    d, hop = model.latent_dim, model.hop
    knobs = rng.standard_normal((frames + after, d))                                   # (T, D)
    moved = knobs.copy()
    moved[frames:] += 2.0
    outs = []
    for u in (knobs, moved):
        stream = model.script.stream(1, seed=0) if model.script is not None else NumpyStream(model.own.decoder, 1)
        z = model.knobs_to_latent(u).T[None].astype(np.float32)                         # (1, D, T)
        outs.append(np.concatenate([stream(z[:, :, t:t + 1])[0, 0] for t in range(z.shape[2])]))
    a, b = outs
    tol = 1e-4 * float(np.sqrt(np.mean(a ** 2))) + 1e-9
    differ = np.nonzero(np.abs(a - b) > tol)[0]
    if not len(differ):
        raise RuntimeError("the decoder never answered a latent 2 sigma away")
    return 1000.0 * max(int(differ[0]) - frames * hop, 0) / model.sample_rate


def realtime_rtf(model, steps: int, rate: int, voices: int = 1, send: float = 0.0,
                 channels: int = 2, threads: int = 1) -> tuple[float, float]:
    """(median, p99) of one AudioSynth step's time / the audio it makes, one torch thread (the
    decoder's numpy products are far below the size where BLAS would use a second thread), with
    `voices` voices playing over `channels` speakers and the reverb fed at `send`."""
    import torch

    from engine.audio.stream import AudioSynth
    from engine.params import REGISTRY

    torch.set_num_threads(threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads, user_api="blas")   # as the audio process runs it
    synth = AudioSynth(model, rate, seed=0, voices=voices, channels=channels)
    v = REGISTRY.defaults()
    v[REGISTRY.slot("audio/voices")] = voices
    v[REGISTRY.slot("audio/reverb/send")] = send
    frame_s = model.hop / model.sample_rate
    for _ in range(100):
        synth.step(v)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        synth.step(v)
        times.append((time.perf_counter() - t0) / frame_s)
    return float(np.median(times)), float(np.percentile(times, 99))


def start_load(kind: str, seconds: float) -> tuple[subprocess.Popen | None, str]:
    """A process that loads the machine like the window does; returns it and a description."""
    if kind == "none":
        return None, "nothing"
    code, what = (SKY_LOAD, "sky renderer offscreen 1920x1080 flat out") if kind == "sky" else \
        (CPU_LOAD, "a numpy busy loop on one core")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", code, str(ROOT / "models" / "image-default"), str(seconds + 30)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    line = proc.stdout.readline() if proc.stdout else ""
    if "ready" not in line:
        proc.wait()
        if kind == "sky":
            return start_load("cpu", seconds)[0], "a numpy busy loop (the sky renderer did not start)"
        return None, "nothing (load did not start)"
    return proc, what


def flood(port: int, rate: float, stop: threading.Event, sent: list[int]) -> None:
    """Send `rate` OSC messages per second to parameters other than the probe (walk speed, offsets)."""
    from pythonosc.udp_client import SimpleUDPClient

    client = SimpleUDPClient("127.0.0.1", port)
    rng = random.Random(1)
    period, t_next = 1.0 / rate, time.monotonic()
    while not stop.is_set():
        if rng.random() < 0.5:
            client.send_message("/ciel/audio/walk/speed", float(rng.uniform(0.1, 0.6)))
        else:
            client.send_message("/ciel/sky/spin", float(rng.uniform(-2, 2)))
        sent[0] += 1
        t_next += period
        delay = t_next - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif delay < -0.1:
            t_next = time.monotonic()


def listen_latency(cfg, server: str, probes: int) -> tuple[list[float], int, str]:
    """(latency of each probe in ms, probes missed, why nothing was measured or ""): a tone into
    ciel's input until the mapped `sky/grain` reaches an OSC subscriber (see the module's keys).
    A miss counts as 1000 ms; a probe whose previous tone had not died away first is a miss too."""
    from engine.audio.output import AudioProcess
    from engine.control.config import OscConfig
    from engine.control.osc import OscServer
    from engine.errors import AudioDeviceError, ModelError
    from engine.modulate import ListenPump, Modulation, Route
    from engine.params import REGISTRY, ParamStore, SharedSnapshot
    from harness.osc import OscClient
    from harness.parts import JackTone

    snapshot = SharedSnapshot(REGISTRY.size)
    store = ParamStore(snapshot=snapshot)
    store.set("audio/mute", 1)
    store.set("listen/source", 2)
    mod = Modulation(store, [Route("listen/level", "sky/grain", 0.5)])
    base = store.get1("sky/grain")
    osc = OscServer(OscConfig(port=0, heartbeat=0.0, subscription_ttl=0.0), store, modulator=mod).start()
    client = OscClient(port=osc.port)
    tone = JackTone(server, name="bench-tone")
    audio = AudioProcess(dataclasses.replace(cfg, input=tone.name), snapshot.name)
    pump = ListenPump(audio, store, mod)
    latencies: list[float] = []
    missed = 0
    rng = random.Random(1)

    def settle(cond, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while not cond() and time.monotonic() < end:
            time.sleep(0.005)
        return bool(cond())

    try:
        try:
            audio.start()
        except (AudioDeviceError, ModelError) as exc:
            return [], 0, f"the audio process with an input did not start: {exc}"
        pump.start()
        client.send("/ciel/subscribe", client.port)
        if not settle(lambda: audio.input_frames > cfg.samplerate // 2, 10.0):
            return [], 0, f"no input reached the audio process ({audio.status().error or 'no error said'})"
        for _ in range(probes):
            quiet = settle(lambda: store.get1("sky/grain") < base + 0.01, 2.0)
            time.sleep(rng.uniform(0.15, 0.3))                    # a random phase against the cycles
            while client.recv(0.0) is not None:                   # what came before the tone
                pass
            tone.started = 0.0
            tone.on = True
            deadline, arrived = time.monotonic() + 1.0, 0.0
            while (left := deadline - time.monotonic()) > 0:
                got = client.recv(left)
                if got is not None and got[0] == "/ciel/sky/grain" and float(got[1][0]) > base + 0.05:
                    arrived = time.monotonic()
                    break
            tone.on = False
            if quiet and tone.started and arrived > tone.started:
                latencies.append((arrived - tone.started) * 1e3)
            else:
                missed += 1
                latencies.append(1000.0)
    finally:
        pump.stop()
        audio.stop()
        tone.close()
        client.close()
        osc.close()
        snapshot.close()
    return latencies, missed, ""


def main(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench audio")
    ap.add_argument("--quick", action="store_true", help="a run of about 20 s")
    ap.add_argument("--seconds", type=float, default=None, help="playback length (default 120, quick 15)")
    ap.add_argument("--osc-rate", type=float, default=None, help="background OSC messages per second (default 1000)")
    ap.add_argument("--load", choices=("sky", "cpu", "none"), default=None, help="what runs beside (default sky, quick none)")
    ap.add_argument("--samplerate", type=int, default=48000)
    ap.add_argument("--blocksize", type=int, default=64, help="JACK's period and ciel's block (default 64)")
    ap.add_argument("--ahead-ms", type=float, default=None)
    ap.add_argument("--voices", type=int, default=1, help="decoder voices made ready and playing (1-16, default 1)")
    ap.add_argument("--channels", type=int, default=2, help="speakers (1-32, default 2: stereo; more: a ring)")
    ap.add_argument("--listen-probes", type=int, default=None, help="tones into ciel's input (default 100, quick 30)")
    ap.add_argument("--model", type=Path, default=MODEL, help="audio model: a folder, or a TorchScript export (.ts)")
    ap.add_argument("--trust-model", action="store_true", help="load a TorchScript model (it runs code from the file)")
    ap.add_argument("--threads", type=int, default=1, help="torch and BLAS threads of the audio process ([audio] threads)")
    ap.add_argument("--reverb", type=float, default=0.0, help="reverb send, 0-1 (default 0: the pair sends nothing; cloud voices still send by distance)")
    args = ap.parse_args(argv)
    seconds = args.seconds or (15.0 if args.quick else 120.0)
    osc_rate = args.osc_rate if args.osc_rate is not None else (0.0 if args.quick else 1000.0)
    load_kind = args.load or ("none" if args.quick else "sky")

    from pythonosc.udp_client import SimpleUDPClient

    from engine.audio.config import AudioConfig
    from engine.audio.model import load_audio_model
    from engine.audio.output import AudioProcess
    from engine.control.config import OscConfig
    from engine.control.osc import OscServer
    from engine.params import REGISTRY, ParamStore, SharedSnapshot
    from harness import parts

    if not 1 <= args.voices <= 16 or not 0.0 <= args.reverb <= 1.0 or not 1 <= args.channels <= 32:
        ap.error("--voices is 1-16, --reverb 0-1 and --channels 1-32")
    model = load_audio_model(args.model, args.trust_model)
    delay_ms: float | None = None
    try:
        delay_ms = model_delay_ms(model)
    except RuntimeError as exc:
        delay_why = str(exc)
    steps = 2000 if model.script is None else 500     # a TorchScript step is 10-50x dearer
    rtf, rtf_p99 = realtime_rtf(model, steps, args.samplerate, args.voices, args.reverb, args.channels, args.threads)
    cfg = AudioConfig(model=str(args.model), trust=args.trust_model, samplerate=args.samplerate,
                      blocksize=args.blocksize, **({"ahead_ms": args.ahead_ms} if args.ahead_ms else {}), seed=1,
                      voices=args.voices, channels=args.channels, threads=args.threads)
    # a JACK server of the benchmark's own: nobody else can stop or load it mid-run
    with parts.jackd(rate=args.samplerate, period=args.blocksize, name="ciel-bench-audio",
                     playback=max(2, args.channels)) as server:
        server_what = server.describe()
        jack_mark = server.xruns().offset
        snapshot = SharedSnapshot(REGISTRY.size)
        store = ParamStore(snapshot=snapshot)
        store.set("audio/voices", args.voices)
        store.set("audio/reverb/send", args.reverb)
        osc = OscServer(OscConfig(port=0, heartbeat=0.0), store)
        osc.start()
        client = SimpleUDPClient("127.0.0.1", osc.port)
        client.send_message("/ciel/audio/glide", 0.0)
        audio = AudioProcess(cfg, snapshot.name, probe="audio/jump")
        probes = args.listen_probes or (30 if args.quick else 100)
        load_proc, load_what = start_load(load_kind, seconds + 15.0 + 0.6 * probes)   # beside the listening too
        stop, sent = threading.Event(), [0]
        flooder = threading.Thread(target=flood, args=(osc.port, osc_rate, stop, sent), daemon=True) if osc_rate > 0 else None
        latencies: list[float] = []
        missed = 0
        step_times: list[np.ndarray] = []
        try:
            audio.start()
            time.sleep(1.0)  # settle: first callbacks, JACK graph
            base = audio.status()
            cpu0, wall0 = process_cpu_seconds(audio.pid), time.monotonic()
            steps_seen = audio.decode_steps
            if flooder is not None:
                flooder.start()
            rng = random.Random(0)
            t_start = time.monotonic()
            while time.monotonic() - t_start < seconds:
                time.sleep(rng.uniform(0.05, 0.15))  # random phase against the callback clock
                seq0 = snapshot.sequence
                t0 = time.monotonic()
                client.send_message("/ciel/audio/jump", [])
                deadline = t0 + 1.0
                while True:
                    seq, _, t_out = audio.marker()
                    if seq > seq0 and t_out > 0:
                        latencies.append((t_out - t0) * 1e3)
                        break
                    if time.monotonic() > deadline:
                        missed += 1
                        latencies.append(1000.0)   # a miss counts in the percentiles as at least 1 s
                        break
                    time.sleep(0.0002)
                audio.poll()
                n = audio.decode_steps
                if n - steps_seen > 3000:
                    step_times.append(audio.step_times_ms()[-(n - steps_seen):])
                    steps_seen = n
            elapsed = time.monotonic() - t_start
            cpu_percent = 100.0 * (process_cpu_seconds(audio.pid) - cpu0) / (time.monotonic() - wall0)
            n = audio.decode_steps
            step_times.append(audio.step_times_ms()[-min(n - steps_seen, 4096):])
            end = audio.status()
            jack = server.xruns(since=jack_mark)
            load_line = machine_load()
        finally:
            stop.set()
            if flooder is not None and flooder.is_alive():
                flooder.join(2)
            audio.stop()
            osc.close()
            snapshot.close()
        try:
            heard, heard_missed, heard_why = listen_latency(cfg, server.name, probes)
        finally:
            if load_proc is not None:
                parts.stop(load_proc)
    blocks = np.concatenate(step_times) if step_times else np.zeros(0)
    beside = [load_what]
    if osc_rate > 0:
        beside.append(f"OSC flood {sent[0] / max(elapsed, 1e-9):.0f} msg/s")
    if missed:
        beside.append(f"{missed} probes never arrived")
    beside.append(server_what)
    beside.append(f"device {end.device}, {end.samplerate} Hz, block {end.blocksize}, ahead {end.ahead_ms:.1f} ms, "
                  f"ring underflows {end.underflows - base.underflows}, PortAudio xruns {end.xruns - base.xruns}, "
                  f"restarts {end.restarts}; the JACK server logged {jack.client_late} cycles where ciel was late "
                  f"and {jack.driver_late} where its own clock thread was late")
    return {
        "model": str(args.model) if args.model != MODEL else "ciel default (models/audio-default)",
        "model_rate": model.sample_rate,
        "model_hop": model.hop,
        "model_delay_ms": round(delay_ms, 3) if delay_ms is not None else None,
        **({"model_delay_reason": delay_why} if delay_ms is None else {}),
        "threads": args.threads,
        "voices": args.voices,
        "reverb_send": args.reverb,
        "channels": args.channels,
        "rtf": round(rtf, 4),
        "rtf_p99": round(rtf_p99, 4),
        "block_ms_p50": percentile(blocks, 50),
        "block_ms_p99": percentile(blocks, 99),
        "latency_ms_p50": percentile(latencies, 50),
        "latency_ms_p99": percentile(latencies, 99),
        "latency_plus_model_delay_ms_p50": percentile([x + delay_ms for x in latencies], 50) if delay_ms is not None else None,
        "latency_plus_model_delay_ms_p99": percentile([x + delay_ms for x in latencies], 99) if delay_ms is not None else None,
        "missed": missed,
        "listen_to_param_ms_p50": percentile(heard, 50) if heard else None,
        "listen_to_param_ms_p99": percentile(heard, 99) if heard else None,
        "listen_missed": heard_missed if heard else None,
        **({"listen_to_param_reason": heard_why} if not heard else {}),
        "underflows": int(end.underflows - base.underflows + end.xruns - base.xruns),
        "audio_cpu_percent": round(cpu_percent, 1),
        "seconds": round(elapsed, 1),
        "load": f"{load_line}; beside: " + "; ".join(beside),
    }
