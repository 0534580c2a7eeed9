"""A sky that listens: what ciel hears (listen/*) and modulation routes that let it move any parameter.

The analysis is checked on signals whose figures are known (silence, a tone, white noise,
clicks); the routes on a store; the whole path through a real JACK server: a tone played into
ciel's input moves `listen/level`, and a `sky/grain` mapped to it follows.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from engine.audio.config import AudioConfig
from engine.audio.listen import Ear, Heard
from engine.audio.output import AudioProcess
from engine.control.config import OscConfig
from engine.control.osc import OscServer
from engine.errors import ParamError, PatchError
from engine.modulate import ListenPump, Modulation, Route
from engine.params import LISTEN_SOURCE, REGISTRY, ParamStore, SharedSnapshot
from engine.patch import load_patch, patch_from_text
from harness import parts
from harness.osc import OscClient

ROOT = Path(__file__).resolve().parents[1]
MODEL = str(ROOT / "models" / "audio-default")
RATE = 48000


def heard_over(signal: np.ndarray, ear: Ear) -> list[Heard]:
    """Every hop's analysis of `signal`, as the audio process runs it."""
    out = []
    for end in range(ear.size, len(signal) + 1, ear.hop):
        out.append(ear.hear(signal[end - ear.size:end].astype(np.float32)))
    return out


def test_the_ear_reads_silence_a_tone_and_noise_as_what_they_are() -> None:
    ear = Ear(RATE)
    t = np.arange(RATE // 2) / RATE
    silent = heard_over(np.zeros(RATE // 4), ear)[-1]
    assert (silent.level_db, silent.centroid, silent.flatness) == (-60.0, 0.0, 0.0)
    tone = heard_over(0.5 * np.sin(2 * np.pi * 1000 * t), Ear(RATE))[-1]
    assert tone.level_db == pytest.approx(20 * math.log10(0.5 / math.sqrt(2)), abs=0.2)
    assert tone.centroid == pytest.approx(math.log(1000 / 50) / math.log(12000 / 50), abs=0.03)
    assert tone.flatness < 0.05
    noise = heard_over(0.1 * np.random.default_rng(0).standard_normal(RATE // 2), Ear(RATE))
    assert np.median([h.flatness for h in noise]) > 0.4          # a Hann periodogram of white noise: about 0.56
    assert np.median([h.centroid for h in noise]) > 0.85         # the centroid of white noise at 48 kHz: 12 kHz
    dark = heard_over(0.5 * np.sin(2 * np.pi * 110 * t), Ear(RATE))[-1]
    assert dark.centroid < tone.centroid - 0.3


def test_onsets_are_counted_once_per_click_and_not_in_a_steady_tone() -> None:
    ear = Ear(RATE)
    x = 0.001 * np.random.default_rng(1).standard_normal(2 * RATE)
    for at in (0.2, 0.5, 0.8, 1.1, 1.4):          # five clicks of decaying noise
        i = int(at * RATE)
        x[i:i + 2400] += 0.5 * np.random.default_rng(i).standard_normal(2400) * np.exp(-np.arange(2400) / 300)
    h = heard_over(x, ear)
    assert ear.onsets == 5
    assert max(v.onset for v in h) == 1.0 and h[-1].onset < 0.2     # fallen away half a second after the last
    steady = Ear(RATE)
    heard_over(0.3 * np.sin(2 * np.pi * 440 * np.arange(2 * RATE) / RATE), steady)
    assert steady.onsets <= 1                                         # the tone's own start at most


@pytest.fixture
def store() -> Iterator[ParamStore]:
    snap = SharedSnapshot(REGISTRY.size)
    yield ParamStore(snapshot=snap)
    snap.close()


def test_a_measured_parameter_is_read_only_everywhere_but_the_listener(store: ParamStore) -> None:
    with pytest.raises(ParamError, match="read-only"):
        store.set("listen/level", -10.0, source="osc:127.0.0.1:9")
    store.set("listen/level", -10.0, source=LISTEN_SOURCE)
    assert store.get1("listen/level") == -10.0
    with pytest.raises(PatchError, match=r"params\.listen/level.*read-only"):
        patch_from_text('[params]\n"listen/level" = -3.0\n', "p.toml")
    with pytest.raises(PatchError, match=r"mod\[0\].*modulation source must be measured"):
        patch_from_text('[[mod]]\nsource = "sky/lon"\ntarget = "sky/grain"\ndepth = 0.5\n', "p.toml")
    with pytest.raises(PatchError, match=r"mod\[0\].*image/offset.*name one element"):
        patch_from_text('[[mod]]\nsource = "listen/level"\ntarget = "image/offset"\ndepth = 0.5\n', "p.toml")
    with pytest.raises(PatchError, match=r"mod\[0\]\.depth"):
        patch_from_text('[[mod]]\nsource = "listen/level"\ntarget = "sky/grain"\ndepth = 3\n', "p.toml")
    patch = patch_from_text('[[mod]]\nsource = "listen/onset"\ntarget = "image/offset/2"\ndepth = -0.25\n', "p.toml")
    assert patch.mods == (Route("listen/onset", "image/offset/2", -0.25, 0.05),)


def test_a_route_moves_its_target_around_the_value_a_performer_set(store: ParamStore) -> None:
    now = [0.0]
    mod = Modulation(store, [Route("listen/level", "sky/grain", 0.5, 0.0)], clock=lambda: now[0])
    store.set("sky/grain", 0.2, source="osc:127.0.0.1:9")
    pump = ListenPump(_Fixed(Heard(-30.0, 0.5, 0.1, 0.0)), store, mod)
    assert pump.pump()
    assert store.get1("listen/level") == -30.0
    assert store.get1("sky/grain") == pytest.approx(0.2 + 0.5 * 0.5)        # half the level range × depth
    store.set("sky/grain", 0.1, source="midi")                                # the performer moves it: a new base
    mod.step()
    assert store.get1("sky/grain") == pytest.approx(0.1 + 0.25)
    mod.add("listen/centroid", "sky/grain", -0.2, 0.0)                         # two routes add up
    mod.step()
    assert store.get1("sky/grain") == pytest.approx(0.1 + 0.25 - 0.1)
    assert mod.clear("sky/grain") == 2
    assert store.get1("sky/grain") == pytest.approx(0.1)                      # back where it was set
    with pytest.raises(ParamError, match="trigger"):
        mod.add("listen/level", "audio/jump", 1.0)


def test_a_route_glides_its_source(store: ParamStore) -> None:
    now = [0.0]
    mod = Modulation(store, [Route("listen/onset", "sky/brightness", 0.5, smooth=0.1)], clock=lambda: now[0])
    base = store.get1("sky/brightness")
    mod.step()
    store.set("listen/onset", 1.0, source=LISTEN_SOURCE)
    now[0] = 0.1                                   # one time constant: 63 % of the way
    mod.step()
    assert store.get1("sky/brightness") == pytest.approx(base + 0.5 * 2.0 * (1 - math.exp(-1)), abs=1e-6)


class _Fixed:
    def __init__(self, heard: Heard) -> None:
        self.seq, self.heard_now = 0, heard

    def heard(self) -> tuple[int, Heard]:
        self.seq += 1
        return self.seq, self.heard_now


def _exchange(client: OscClient, address: str, *args: object) -> list[tuple[str, tuple]]:
    """What comes back within 0.5 s of sending one message."""
    client.send(address, *args)
    out = []
    while (got := client.recv(0.5)) is not None:
        out.append(got)
    return out


def test_osc_refuses_a_set_of_a_measured_parameter_and_sets_routes(store: ParamStore) -> None:
    mod = Modulation(store)
    server = OscServer(OscConfig(port=0, heartbeat=0.0), store, modulator=mod).start()
    client = OscClient(port=server.port)
    try:
        replies = _exchange(client, "/ciel/listen/level", -3.0)
        assert [a for a, _ in replies] == ["/ciel/error"] and "read-only" in replies[0][1][1]
        assert store.get1("listen/level") == -60.0
        assert _exchange(client, "/ciel/mod/set", "listen/level", "sky/lon", 0.25) == []
        listed = _exchange(client, "/ciel/mod/list")
        assert listed[0][0] == "/ciel/mod/routes" and listed[0][1][:3] == ("listen/level", "sky/lon", 0.25)
        refused = _exchange(client, "/ciel/mod/set", "listen/level", "panic", 1.0)
        assert refused[0][0] == "/ciel/error" and "trigger" in refused[0][1][1]
        _exchange(client, "/ciel/mod/clear")
        assert mod.routes() == []
    finally:
        client.close()
        server.close()


def test_a_tone_into_the_jack_input_moves_listen_level_and_a_mapped_sky_parameter(
        jackd: parts.JackServer, store: ParamStore) -> None:
    """Through the real server: ciel's own sound muted and `listen/source` on the input alone,
    so what moves is the tone; `sky/grain` is mapped to `listen/level` and follows it up and
    back down when the tone stops."""
    tone = parts.JackTone(jackd.name)
    store.set("audio/mute", 1)
    store.set("listen/source", 2)
    mod = Modulation(store, [Route("listen/level", "sky/grain", 0.5, 0.02)])
    base = store.get1("sky/grain")
    audio = AudioProcess(AudioConfig(model=MODEL, input=tone.name), store.snapshot.name)
    pump = ListenPump(audio, store, mod)
    try:
        audio.start()
        pump.start()
        assert _until(lambda: audio.input_frames > 48000 // 2, 20), "no input reached the audio process"
        assert _until(lambda: pump.published > 10, 5), "no analysis reached the store"
        assert store.get1("listen/level") <= -59.0 and audio.status().error == ""
        tone.on = True
        expected = 20 * math.log10(0.5 / math.sqrt(2))                        # the tone's RMS, dBFS
        assert _until(lambda: abs(store.get1("listen/level") - expected) < 0.5, 5), store.get1("listen/level")
        assert _until(lambda: store.get1("sky/grain") > base + 0.35, 5), store.get1("sky/grain")
        tone.on = False
        assert _until(lambda: store.get1("listen/level") <= -59.0 and store.get1("sky/grain") < base + 0.01, 5)
        # ciel's own sound: heard when it plays, silence when muted
        store.set("listen/source", 1)
        store.set("audio/mute", 0)
        assert _until(lambda: store.get1("listen/level") > -45.0, 5), store.get1("listen/level")
        store.set("audio/mute", 1)
        assert _until(lambda: store.get1("listen/level") <= -59.0, 5), store.get1("listen/level")
    finally:
        pump.stop()
        audio.stop()
        tone.close()


def _until(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return bool(cond())


def test_a_patch_with_mod_routes_moves_its_target_with_ciels_own_sound(jackd: parts.JackServer, tmp_path: Path) -> None:
    """The engine's wiring: a patch's [[mod]] route and the listening pump it starts; the moved
    value reaches an OSC subscriber, and /healthz counts the analyses."""
    from engine.app import Engine, RunOptions

    patch_file = tmp_path / "listening.toml"
    patch_file.write_text(f'''
[params]
"audio/gain" = -6.0
"listen/source" = 1
"sky/grain" = 0.1

[audio]
model = "{MODEL}"
seed = 2

[osc]
port = 0
heartbeat = 0.0

[oscquery]
enabled = false

[midi]
enabled = false

[[mod]]
source = "listen/level"
target = "sky/grain"
depth = 0.8
''')
    engine = Engine(load_patch(patch_file), None, RunOptions(window=False, control=True))
    client = None
    try:
        assert engine.osc is not None
        client = OscClient(port=engine.osc.port)
        client.send("/ciel/subscribe", client.port)
        moved = None
        deadline = time.monotonic() + 10
        while moved is None and time.monotonic() < deadline:
            engine.tick(time.monotonic())
            got = client.recv(0.05)
            if got is not None and got[0] == "/ciel/sky/grain" and got[1][0] > 0.3:
                moved = got[1][0]
        assert moved is not None, (engine.store.get1("listen/level"), engine.store.get1("sky/grain"))
        assert engine.health()["listening"]["analyses"] > 0 and engine.health()["listening"]["routes"] == 1
    finally:
        if client is not None:
            client.close()
        engine.close()
