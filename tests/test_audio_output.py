"""The audio process through a real JACK server (dummy driver): sound, restarts, clear errors.

The servers are private (`harness.parts.jackd`: `jackd -n NAME`, chosen through
$JACK_DEFAULT_SERVER, which PortAudio's JACK backend honours), so the test that stops and
restarts one never touches a server someone else is using.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import missing, tone_share

from engine.audio.config import AudioConfig
from engine.audio.model import load_audio_model
from engine.audio.output import AudioProcess, RunAhead, list_devices
from engine.errors import AudioDeviceError, ModelError
from engine.params import REGISTRY, ParamStore, SharedSnapshot
from harness import parts

ROOT = Path(__file__).resolve().parents[1]
MODEL = str(ROOT / "models" / "audio-default")


@pytest.fixture
def store() -> Iterator[ParamStore]:
    snap = SharedSnapshot(REGISTRY.size)
    yield ParamStore(snapshot=snap)
    snap.close()


def wait_for(cond, timeout: float, poll: AudioProcess | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if poll is not None:
            poll.poll()
        if cond():
            return True
        time.sleep(0.02)
    return False


def level_db(x: np.ndarray) -> float:
    return 20 * np.log10(max(float(np.sqrt(np.mean(x ** 2))), 1e-12))


@contextlib.contextmanager
def playing(store: ParamStore, **config: str | int | float) -> Iterator[AudioProcess]:
    """An audio process that has started and called back 100 times; stopped afterwards."""
    audio = AudioProcess(AudioConfig(model=MODEL, **config), store.snapshot.name)
    try:
        audio.start()
        assert wait_for(lambda: audio.status().callbacks > 100, 20)
        yield audio
    finally:
        audio.stop()


def start_error(store: ParamStore, error: type[Exception], **config: str) -> str:
    """The one-line message `start()` fails with."""
    audio = AudioProcess(AudioConfig(**{"model": MODEL, **config}), store.snapshot.name)
    try:
        with pytest.raises(error) as info:
            audio.start()
    finally:
        audio.stop()
    message = str(info.value)
    assert "\n" not in message
    return message


def kill_and_wait_for_restart(audio: AudioProcess, callbacks: int) -> None:
    old = audio.pid
    os.kill(old, signal.SIGKILL)
    before = audio.status().callbacks
    assert wait_for(lambda: audio.status().running and audio.pid != old
                    and audio.status().callbacks > before + callbacks, 30, poll=audio)


def test_plays_audible_non_clipping_sound_through_jack(jackd: parts.JackServer, store: ParamStore, tmp_path: Path) -> None:
    rec = tmp_path / "out.wav"
    with playing(store, record=str(rec), seed=5) as audio:   # a fixed walk: never timed into one of the archive's pauses
        status = audio.status()
        assert status.running and "system" in status.device and status.samplerate == 48000
        assert wait_for(lambda: audio.status().peak_db > -60, 5)
        store.set("audio/glide", 0.0)
        seq = store.snapshot.sequence
        store.trigger("audio/jump")
        assert wait_for(lambda: audio.marker()[0] >= seq and audio.marker()[2] > 0, 5), "jump never reached the output"
        time.sleep(1.5)
    sound, rate = sf.read(rec)
    assert rate == 48000 and sound.shape[1] == 2 and len(sound) > rate // 2
    assert level_db(sound[rate // 4:, 0]) > -45            # audible
    assert np.abs(sound).max() <= 10 ** (-1 / 20) + 1e-4     # never above -1 dBFS
    assert np.abs(sound[-240:]).max() < np.abs(sound).max()  # faded out at stop


def test_the_jack_ports_carry_two_different_channels_without_a_frame_rate_drone(
        jackd: parts.JackServer, store: ParamStore, tmp_path: Path) -> None:
    """What a patchbay and a recorder see: the client `ciel` with ports out_1 and out_2; recorded
    there by JACK's own `jack_rec`, the channels differ at audio/width 1 and carry no drone at
    the decoder's frame rate."""
    from engine.audio.quality import comb_db

    if shutil.which("jack_rec") is None or shutil.which("jack_lsp") is None:
        missing("jack_rec / jack_lsp (jackd2's example clients) not installed")
    store.set("audio/width", 1.0)
    wav = tmp_path / "port.wav"
    with playing(store):
        ports = subprocess.run(["jack_lsp"], capture_output=True, text=True, timeout=10).stdout.split()
        assert "ciel:out_1" in ports and "ciel:out_2" in ports, ports
        time.sleep(1.0)
        subprocess.run(["jack_rec", "-f", str(wav), "-d", "8", "-b", "16", "ciel:out_1", "ciel:out_2"],
                       capture_output=True, timeout=30, check=True)
    sound, rate = sf.read(wav)
    assert sound.shape[1] == 2 and len(sound) >= 7 * rate
    sound = sound[rate // 2:]
    assert level_db(sound[:, 0]) > -45 and level_db(sound[:, 1]) > -45
    assert abs(np.corrcoef(sound[:, 0], sound[:, 1])[0, 1]) < 0.9
    model = load_audio_model(MODEL)
    assert max(comb_db(sound[:, c], rate, model.sample_rate / model.hop) for c in range(2)) <= 4.0


def test_a_cloud_of_eight_voices_spreads_across_the_jack_ports(jackd: parts.JackServer, store: ParamStore,
                                                               tmp_path: Path) -> None:
    """Eight voices panned apart (audio/cloud/pan 1), recorded at ciel's ports by `jack_rec`: the
    channels are far apart (correlation < 0.5), the balance between them moves over time (the
    voices' places change grain by grain), and still no drone at the decoder's frame rate. The
    offline twin in test_cloud.py keeps the centred cloud that must fail the same checks."""
    from engine.audio.quality import comb_db

    if shutil.which("jack_rec") is None:
        missing("jack_rec (jackd2's example clients) not installed")
    store.set("audio/voices", 8)
    store.set("audio/cloud/pan", 1.0)
    store.set("audio/reverb/send", 0.2)
    wav = tmp_path / "cloud.wav"
    with playing(store, voices=8, seed=5, ahead_ms=12.0):   # as patches/soundscape.toml: eight voices need the margin
        time.sleep(1.5)
        subprocess.run(["jack_rec", "-f", str(wav), "-d", "8", "-b", "16", "ciel:out_1", "ciel:out_2"],
                       capture_output=True, timeout=30, check=True)
    sound, rate = sf.read(wav)
    sound = sound[rate // 2:]
    assert level_db(sound[:, 0]) > -45 and level_db(sound[:, 1]) > -45
    assert np.corrcoef(sound[:, 0], sound[:, 1])[0, 1] < 0.5
    w = rate // 10
    n = len(sound) // w
    power = (sound[:n * w].reshape(n, w, 2) ** 2).mean(axis=1) + 1e-12
    ild = 10 * np.log10(power[:, 0] / power[:, 1])
    assert ild.std() > 1.5, f"the interaural level difference varies by {ild.std():.2f} dB only"
    model = load_audio_model(MODEL)
    assert max(comb_db(sound[:, c], rate, model.sample_rate / model.hop) for c in range(2)) <= 4.0


def test_record_holds_exactly_what_arrives_at_the_jack_ports(jackd: parts.JackServer, store: ParamStore,
                                                            tmp_path: Path) -> None:
    """A known signal (a baked file of seeded noise) through the real server, read back at ciel's
    ports by `jack_rec`: it is the same signal, sample for sample, as `record` wrote (both taken
    after the ring, so a dropout would be zeros in both)."""
    if shutil.which("jack_rec") is None:
        missing("jack_rec (jackd2's example clients) not installed")
    tone = tmp_path / "noise.wav"
    noise = 0.1 * np.random.default_rng(0).standard_normal(48000)
    sf.write(tone, np.stack([noise] * 2, axis=1), 48000, subtype="PCM_16")
    store.set("audio/glide", 0.0)
    rec = tmp_path / "rec.wav"
    with playing(store, record=str(rec)) as audio:
        audio.play(tone)
        time.sleep(1.0)
        subprocess.run(["jack_rec", "-f", str(tmp_path / "port.wav"), "-d", "3", "-b", "24", "ciel:out_1"],
                       capture_output=True, timeout=30, check=True)
    port, rate = sf.read(tmp_path / "port.wav")
    played, _ = sf.read(rec)
    port = port if port.ndim == 1 else port[:, 0]
    assert level_db(port) > -40
    # find a 0.25 s stretch of the capture in the recording: the lag of least squared difference
    probe = port[rate:rate + rate // 4]
    left = played[:, 0]
    n = 1 << (len(left) + len(probe)).bit_length()
    corr = np.fft.irfft(np.fft.rfft(left, n) * np.conj(np.fft.rfft(probe, n)), n)[:len(left) - len(probe) + 1]
    energy = np.concatenate(([0.0], np.cumsum(left ** 2)))
    lag = int(np.argmin(energy[len(probe):] - energy[:-len(probe)] - 2 * corr))
    assert np.abs(left[lag:lag + len(probe)] - probe).max() < 1e-4


def test_a_killed_recording_is_still_a_readable_wav(jackd: parts.JackServer, store: ParamStore, tmp_path: Path) -> None:
    rec = tmp_path / "rec.wav"
    audio = AudioProcess(AudioConfig(model=MODEL, record=str(rec)), store.snapshot.name)
    try:
        audio.start()
        assert wait_for(lambda: audio.status().callbacks > 600, 20)
        time.sleep(1.0)
        os.kill(audio.pid, signal.SIGKILL)
        time.sleep(0.2)
    finally:
        audio.stop()
    sound, rate = sf.read(rec)
    assert len(sound) >= rate // 2 and np.abs(sound).max() > 0.0


def test_stop_plays_the_fade_out_and_ends_the_process_by_itself(jackd: parts.JackServer, store: ParamStore) -> None:
    """Stopping (quitting ciel, a systemd stop) must not wait for a kill: the process plays its
    fade-out, closes its stream and exits 0 by itself (no SIGTERM or SIGKILL: the exit code is 0)."""
    audio = AudioProcess(AudioConfig(model=MODEL), store.snapshot.name)
    audio.start()
    assert wait_for(lambda: audio.status().callbacks > 100, 20)
    child = audio._proc
    t0 = time.monotonic()
    audio.stop()
    took = time.monotonic() - t0
    assert child is not None and child.exitcode == 0, f"exit code {child.exitcode if child else None}"
    assert took < 10.0, f"stop took {took:.2f} s"   # happened at all; the time is bench material


def test_killed_audio_process_comes_back_with_a_fade_in(jackd: parts.JackServer, store: ParamStore, tmp_path: Path) -> None:
    # a fixed seed: the restarted process plays the same stretch of the walk every run (a walk
    # from the clock can sit in one of the archive's pauses just when the level is read)
    with playing(store, record=str(tmp_path / "rec.wav"), seed=5) as audio:
        kill_and_wait_for_restart(audio, 500)
        assert audio.status().restarts == 1
        # a panic holds through a crash: the next audio process starts silent
        store.trigger("panic")
        time.sleep(0.3)
        kill_and_wait_for_restart(audio, 200)
    sound, rate = sf.read(tmp_path / "rec-1.wav")
    first = np.abs(sound[:int(0.01 * rate), 0]).max()
    later = np.abs(sound[int(0.4 * rate):int(1.2 * rate), 0]).max()
    print(f"restart: peak {first:.4f} in the first 10 ms, {later:.4f} from 0.4 to 1.2 s")
    assert later > 0.01 and first < 0.2 * later, (first, later)
    after_panic, _ = sf.read(tmp_path / "rec-2.wav")
    assert len(after_panic) > rate // 4 and np.all(after_panic == 0.0)


def test_a_baked_sound_file_plays_through_jack_and_a_bad_one_is_named(jackd: parts.JackServer, store: ParamStore,
                                                                      tmp_path: Path) -> None:
    """`play()` as the installation uses it for baked scenes: the file's sound replaces the
    decoder's at the output within the glide; a file that cannot be read is named in the status,
    and the sound goes on; a restarted audio process resumes the file."""
    tone = tmp_path / "s0001.wav"
    t = np.arange(48000) / 48000
    sf.write(tone, np.stack([0.3 * np.sin(2 * np.pi * 440.0 * t)] * 2, axis=1), 48000, subtype="PCM_16")
    store.set("audio/glide", 0.2)
    with playing(store, record=str(tmp_path / "rec.wav")) as audio:
        audio.play(tmp_path / "missing.wav")
        assert wait_for(lambda: "missing.wav" in audio.status().error, 5), audio.status().error
        before = audio.status().callbacks
        assert audio.status().playing == ""
        audio.play(tone)
        assert wait_for(lambda: audio.status().playing == str(tone), 5), audio.status()
        assert audio.status().error == ""
        time.sleep(1.5)
        assert audio.status().callbacks > before + 300 and audio.status().peak_db > -30
        kill_and_wait_for_restart(audio, 300)
        time.sleep(1.0)
    sound, rate = sf.read(tmp_path / "rec.wav")
    assert tone_share(sound[-rate // 2:, 0], 440.0, rate) > 0.9, "the file is not what plays"
    assert np.abs(sound).max() <= 10 ** (-1 / 20) + 1e-4
    resumed, _ = sf.read(tmp_path / "rec-1.wav")
    assert tone_share(resumed[-rate // 2:, 0], 440.0, rate) > 0.9, "a restarted audio process lost the file"


def test_a_flood_of_scene_changes_loads_one_file_at_a_time_and_the_newest_wins(jackd: parts.JackServer,
                                                                                 store: ParamStore, tmp_path: Path) -> None:
    """An OSC tool firing scene/next thousands of times with baked scenes: the audio process never
    loads more than one file at once (no pile of threads or files in memory) and the file asked
    for last is the one that plays."""
    long = []
    for i, hz in enumerate((330.0, 550.0)):
        path = tmp_path / f"s{i}.wav"   # 30 s at 44.1 kHz: each load is a resample, tens of ms
        t = np.arange(30 * 44100) / 44100
        sf.write(path, np.stack([0.3 * np.sin(2 * np.pi * hz * t)] * 2, axis=1), 44100, subtype="PCM_16")
        long.append(path)
    with playing(store) as audio:
        threads = []
        for i in range(400):
            audio.play(long[i % 2])
            if i % 20 == 0:
                threads.append(len(os.listdir(f"/proc/{audio.pid}/task")))
            time.sleep(0.002)
        audio.play(long[1])
        assert wait_for(lambda: audio.status().playing == str(long[1]), 15), audio.status()
    assert max(threads) <= min(threads) + 2, threads    # at most one loader beside the process's own threads


def test_unknown_device_is_one_clear_line(jackd: parts.JackServer, store: ParamStore) -> None:
    message = start_error(store, AudioDeviceError, device="no-such-device-xyz")
    assert "no-such-device-xyz" in message and "not found" in message


def test_no_jack_server_is_one_clear_line(store: ParamStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JACK_DEFAULT_SERVER", f"ciel-absent-{os.getpid()}")
    if list_devices():
        # a machine with a sound card besides JACK: without JACK, ciel plays through the card
        with playing(store) as audio:
            assert "JACK" not in audio.status().device
        return
    message = start_error(store, AudioDeviceError)
    assert "no audio output device" in message and "--audio none" in message and "jackd" in message


def test_corrupt_model_is_a_model_error_naming_the_file(jackd: parts.JackServer, store: ParamStore, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(MODEL, bad)
    (bad / "model.safetensors").write_bytes(b"garbage" * 50)
    assert str(bad / "model.safetensors") in start_error(store, ModelError, model=str(bad))


def test_sound_returns_when_jack_is_restarted(store: ParamStore, monkeypatch: pytest.MonkeyPatch) -> None:
    name = "ciel-audio-restart-test"  # fixed: a server that dies unregistered leaves its slot to this name
    monkeypatch.setenv("JACK_DEFAULT_SERVER", name)  # also for audio processes started after a restart
    server = parts.jackd(name=name)
    try:
        server.__enter__()
    except (FileNotFoundError, RuntimeError) as exc:
        missing(str(exc))
    try:
        with playing(store) as audio:
            server.__exit__(None, None, None)  # SIGTERM: the server unregisters from JACK
            assert wait_for(lambda: "waiting" in audio.status().error, 15, poll=audio)
            server = parts.jackd(name=name)
            server.__enter__()
            before = audio.status().callbacks
            assert wait_for(lambda: audio.status().running and audio.status().callbacks > before + 100, 15,
                            poll=audio)
            assert audio.status().peak_db > -60
    finally:
        server.__exit__(None, None, None)


LATE_CLIENT = """
import sys, time
import sounddevice as sd
from engine.audio.jacknames import set_client_name
set_client_name(sd, "late-test")   # its own name in the server's log: another client's lateness is not its own
late = [int(sys.argv[1])]
def callback(outdata, frames, time_info, flags):
    outdata[:] = 0
    if late[0] > 0:
        late[0] -= 1
        time.sleep(0.02)  # seven 2.7 ms cycles: the server must find this client unfinished
with sd.OutputStream(samplerate=48000, blocksize=128, channels=2, callback=callback):
    time.sleep(1.5)
"""


@pytest.mark.parametrize("late", [0, 3])
def test_jack_server_log_tells_a_late_client_from_its_own_clock(jackd: parts.JackServer, late: int) -> None:
    """The flood test and the benchmarks count a late callback of ciel's from the JACK server's log;
    a client that sleeps in its callback must show there, and one that does not must not."""
    mark = jackd.xruns().offset
    subprocess.run([sys.executable, "-c", LATE_CLIENT, str(late)], check=True, timeout=30, cwd=ROOT)
    found = jackd.xruns(since=mark, client="late-test")
    if late:
        assert found.client_late >= 1, f"{late} callbacks of 20 ms were not logged as late: {found}"
    else:
        assert found.client_late == 0, f"a client that never sleeps was logged late: {found}"


def test_run_ahead_grows_after_underflows_up_to_its_bound_and_shrinks_back_when_calm() -> None:
    """A loaded machine buys margin with latency after a dropout, never past the bound, and a
    calm one returns to the lowest latency half a millisecond per 30 s (an injected clock)."""
    ms = 48  # frames per millisecond at 48 kHz
    ahead = RunAhead(6 * ms, 12 * ms, 48000)
    assert ahead.update(5, 0.0) == 6 * ms            # counts before the start are not this run's
    assert ahead.update(5, 29.0) == 6 * ms
    assert ahead.update(6, 30.0) == 7 * ms           # one underflow: +1 ms
    for i in range(10):
        ahead.update(7 + i, 31.0 + i)
    assert ahead.frames == 12 * ms                   # bounded
    assert ahead.update(16, 40.0 + 29.0) == 12 * ms  # not calm long enough yet
    t = 40.0
    for _ in range(12):
        t += 30.0
        ahead.update(16, t)
    assert ahead.frames == 6 * ms                    # 6 ms back in 12 calm half-minutes, no lower
    fixed = RunAhead(6 * ms, 0, 48000)              # ahead_max_ms at or below ahead_ms: fixed
    assert fixed.update(0, 0.0) == fixed.update(3, 1.0) == 6 * ms


def test_a_dear_decoder_gets_a_run_ahead_longer_than_its_step() -> None:
    """The audio process times its first decode steps: a step of 7 ms (a RAVE frame on a laptop)
    raises a 6 ms run-ahead to whole blocks lasting 1.5 steps, keeping the adaptive range above
    it; ciel's own sub-millisecond steps leave a one-block run-ahead alone; never past half the
    ring."""
    from engine.audio.child import run_ahead_for

    base = RunAhead(288, 576, 48000)                      # 6 ms, adaptive up to 12 ms
    assert run_ahead_for(base, [0.02, 0.01, 0.001, 0.001], 48000, 128, 4096) is base
    dear = run_ahead_for(base, [0.03, 0.009, 0.007, 0.006], 48000, 128, 4096)
    assert dear.low == 512 and dear.high == 512 + 288     # 1.5 × 7 ms = 504 frames: four blocks
    one_block = RunAhead(64, 0, 48000)                     # 1.33 ms at 64-frame periods
    assert run_ahead_for(one_block, [0.004, 0.0004, 0.0005, 0.0004], 48000, 64, 4096) is one_block
    assert run_ahead_for(base, [0.5, 0.5], 48000, 128, 4096).high == 4096


def test_a_jack_period_longer_than_the_block_is_queued_whole(jackd: parts.JackServer, store: ParamStore) -> None:
    """A JACK server at 256-frame periods pulls four of ciel's 64-frame blocks back to back: the
    audio process reads the period and keeps at least that much queued, so the sound flows with no
    underflow; at the session server's 64-frame period one block is queued."""
    from engine.audio import jacknames

    assert jacknames.period() == jackd.period == 64
    with parts.jackd(rate=48000, period=256, name=parts.free_server_name("ciel-burst")) as server:
        assert jacknames.period() == server.period == 256
        with playing(store, seed=5) as audio:
            first = audio.status()
            assert wait_for(lambda: audio.status().callbacks > first.callbacks + 400, 20)
            end = audio.status()
    assert end.ahead_ms >= 256 / 48.0 - 0.01, end          # the status rounds to 0.01 ms
    assert end.underflows - first.underflows <= 2, end      # a loaded machine may drop one; one block would drop at every period
    with playing(store, seed=5) as audio:
        assert audio.status().ahead_ms == pytest.approx(64 / 48.0, abs=0.05)
