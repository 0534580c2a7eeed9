"""OSC over real UDP: the address space from the registry, feedback to subscribers, presets, learn."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import pytest
from pythonosc.osc_bundle_builder import OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder

from engine.control.config import OscConfig
from engine.control.osc import OscServer, message
from engine.control.oscdoc import address_table
from engine.errors import CielError
from engine.params import REGISTRY, ParamStore
from engine.patch import DEFAULT_PATCH, load_patch
from engine.patchwrite import PatchWriter
from harness.osc import OscClient

ROOT = Path(__file__).resolve().parent.parent


def wait_until(cond, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.002)
    return cond()


@pytest.fixture
def osc():
    store = ParamStore()
    server = OscServer(OscConfig(port=0, heartbeat=0.2), store).start()
    client = OscClient(port=server.port)
    try:
        yield server, store, client
    finally:
        client.close()
        server.close()


def roundtrip(client: OscClient) -> None:
    """A ping answered means every earlier datagram from this client was handled."""
    client.send("/ciel/ping", 7)
    assert client.wait_for("/ciel/pong", 2.0) == (7,)


def test_set_scalars_clamps_and_rounds(osc):
    server, store, c = osc
    c.send("/ciel/audio/gain", -12.5)
    c.send("/ciel/sky/lon", 1000.0)           # far outside: clamped to 180
    c.send("/ciel/sky/colormap", 2.6)         # an int parameter: rounded
    c.send("/ciel/audio/hold", True)          # T/F for switches
    c.send("/ciel/sky/spacing", 45)           # an OSC int for a float parameter
    roundtrip(c)
    assert store.get1("audio/gain") == -12.5
    assert store.get1("sky/lon") == 180.0
    assert store.get1("sky/colormap") == 3.0
    assert store.get1("audio/hold") == 1.0
    assert store.get1("sky/spacing") == 45.0
    assert server.counters["clamped"] == 1


def test_vectors_whole_one_value_and_one_element(osc):
    server, store, c = osc
    c.send("/ciel/image/offset", *[0.5 * i for i in range(8)])
    roundtrip(c)
    assert store.get("image/offset") == tuple(min(4.0, 0.5 * i) for i in range(8))
    c.send("/ciel/sky/background", 0.25)
    c.send("/ciel/audio/offset/at", 3, -9.0)
    c.send("/ciel/audio/offset/at", 3.0, 1.5)  # Pd sends every number as a float
    roundtrip(c)
    assert store.get("sky/background") == (0.25, 0.25, 0.25)
    assert store.get("audio/offset")[3] == 1.5
    assert store.get("audio/offset")[:3] == (0.0, 0.0, 0.0)


def test_bad_arguments_are_counted_logged_and_change_nothing(osc, caplog):
    server, store, c = osc
    before = store.values.copy()
    with caplog.at_level(logging.WARNING, logger="ciel.osc"):
        c.send("/ciel/audio/offset/at", 16, 1.0)      # index out of range
        c.send("/ciel/image/offset", 1.0, 2.0)        # 2 of 8 values
        c.send("/ciel/audio/gain", "loud")            # a string
        c.send("/ciel/audio/gain", float("nan"))
        c.send("/ciel/no/such/param", 1.0)
        c.send_raw(b"\x00\x01garbage")
        roundtrip(c)
    assert (store.values == before).all()
    assert server.counters["malformed"] == 5
    assert server.counters["unknown"] == 1
    assert "/ciel/no/such/param" in caplog.text
    assert "/ciel/audio/offset/at" in caplog.text


def test_triggers_fire_on_none_or_one_and_ignore_zero(osc):
    server, store, c = osc
    c.send("/ciel/audio/jump")
    c.send("/ciel/audio/jump", 1)
    c.send("/ciel/audio/jump", 0.0)   # a button's release
    c.send("/ciel/scene/next", 1.0)
    roundtrip(c)
    assert store.get1("audio/jump") == 2.0
    assert store.get1("scene/next") == 1.0


def test_get_replies_with_values_in_their_types(osc):
    server, store, c = osc
    store.set("sky/colormap", 2, source="test")
    c.send("/ciel/get", "sky/colormap", "/ciel/audio/gain")
    assert c.wait_for("/ciel/sky/colormap") == (2,)
    assert c.wait_for("/ciel/audio/gain") == pytest.approx((-6.0,))
    c.send("/ciel/get")
    got = {}
    while (m := c.recv(0.5)) is not None:
        got[m[0]] = m[1]
    assert set(got) == {p.address for p in REGISTRY}
    assert len(got["/ciel/audio/offset"]) == 16


def test_subscribers_get_other_sources_changes_but_not_their_own(osc):
    server, store, a = osc
    b = OscClient(port=server.port)
    try:
        a.send("/ciel/subscribe", a.port)
        b.send("/ciel/subscribe", b.port)
        for cl in (a, b):  # each starts with a full dump
            assert cl.wait_for("/ciel/master/fade", 2.0) == pytest.approx((1.0,))
        store.set("audio/temperature", 2.0, source="midi")
        assert a.wait_for("/ciel/audio/temperature") == pytest.approx((2.0,))
        assert b.wait_for("/ciel/audio/temperature") == pytest.approx((2.0,))
        a.send("/ciel/sky/grain", 0.75)   # a's own fader: echoed to b only
        assert b.wait_for("/ciel/sky/grain") == pytest.approx((0.75,))
        assert a.wait_for("/ciel/sky/grain", 0.3) is None
        store.trigger("image/jump", source="scheduler")
        assert a.wait_for("/ciel/image/jump") == ()
        beat = a.wait_for("/ciel/heartbeat", 1.0)
        assert beat is not None and beat[1] >= 1
        a.send("/ciel/unsubscribe")
        roundtrip(b)
        store.set("audio/temperature", 0.5, source="midi")
        assert b.wait_for("/ciel/audio/temperature") == pytest.approx((0.5,))
        assert a.wait_for("/ciel/audio/temperature", 0.3) is None
    finally:
        b.close()


def test_renewed_subscription_does_not_resend_everything(osc):
    server, store, c = osc
    c.send("/ciel/subscribe", c.port)
    assert c.wait_for("/ciel/master/fade") is not None
    c.send("/ciel/subscribe", c.port)     # the example patches renew every two seconds
    assert c.wait_for("/ciel/master/fade", 0.3) is None
    assert len(server.health()["subscribers"]) == 1


def test_bundles_apply_at_once_whatever_their_time_tag(osc):
    server, store, c = osc
    bundle = OscBundleBuilder(time.time() + 3600)   # an hour ahead: must not stall anything
    msg = OscMessageBuilder("/ciel/sky/lat")
    msg.add_arg(45.0)
    bundle.add_content(msg.build())
    c.send_raw(bundle.build().dgram)
    roundtrip(c)
    assert store.get1("sky/lat") == 45.0


def test_presets_store_into_the_patch_file_and_recall(osc, tmp_path):
    _, store, _ = osc
    patch_file = tmp_path / "live.toml"
    patch_file.write_text(DEFAULT_PATCH.read_text() + "\n# my comment\n")
    server = OscServer(OscConfig(port=0), store, presets=load_patch(patch_file).presets,
                       writer=PatchWriter(patch_file)).start()
    c = OscClient(port=server.port)
    try:
        store.set("audio/gain", -20.0, source="test")
        store.set("sky/background", (0.1, 0.2, 0.3), source="test")
        store.set("audio/mute", 1, source="test")
        c.send("/ciel/preset/store", "dusk")
        roundtrip(c)
        saved = load_patch(patch_file)
        assert saved.presets["dusk"]["audio/gain"] == -20.0
        assert saved.presets["dusk"]["sky/background"] == pytest.approx((0.1, 0.2, 0.3))
        assert "audio/mute" not in saved.presets["dusk"]  # a preset never unmutes
        assert "# my comment" in patch_file.read_text()
        store.set("audio/gain", 0.0, source="test")
        store.set("sky/background", 0.0, source="test")
        c.send("/ciel/preset/recall", "dusk")
        c.send("/ciel/preset/recall", "nothing-like-this")
        roundtrip(c)
        assert store.get1("audio/gain") == -20.0
        assert store.get("sky/background") == pytest.approx((0.1, 0.2, 0.3))
        assert server.counters["malformed"] == 1
        c.send("/ciel/preset/list")
        assert c.wait_for("/ciel/preset/names") == ("dusk",)
    finally:
        c.close()
        server.close()


class FakeLearner:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def learn(self, param=None, index=-1) -> str:
        self.calls.append(("learn", param, index))
        return param or ""

    def cancel_learn(self) -> None:
        self.calls.append(("cancel",))


def test_learn_and_quit_reach_their_parts():
    store = ParamStore()
    learner, quits = FakeLearner(), []
    with OscServer(OscConfig(port=0), store, learner=learner, on_quit=lambda: quits.append(1)) as server:
        c = OscClient(port=server.port)
        c.send("/ciel/learn", "/ciel/audio/offset", 5)
        c.send("/ciel/learn", "sky/spin")
        c.send("/ciel/learn", "no/such")
        c.send("/ciel/learn/cancel")
        c.send("/ciel/quit")
        roundtrip(c)
        c.close()
    assert learner.calls == [("learn", "audio/offset", 5), ("learn", "sky/spin", -1), ("cancel",)]
    assert quits == [1]


def test_allow_list_refuses_other_addresses_and_this_machine_always_may():
    store = ParamStore()
    with OscServer(OscConfig(port=0, allow=("10.0.0.0/8",)), store) as server:
        server.handle_datagram(message("/ciel/audio/gain", [-30.0]), ("192.168.5.5", 9000))
        server.handle_datagram(message("/ciel/ping"), ("192.168.5.5", 9000))
        assert server.counters["denied"] == 2 and server.counters["sent"] == 0
        assert store.get1("audio/gain") == -6.0
        c = OscClient(port=server.port)                 # loopback is never refused
        c.send("/ciel/audio/gain", -30.0)
        roundtrip(c)
        c.close()
    assert store.get1("audio/gain") == -30.0


def test_bad_allow_list_entry_is_a_clear_error():
    with pytest.raises(CielError, match="allow: 'localhost' is not an IP address"):
        OscServer(OscConfig(port=0, allow=("localhost",)), ParamStore())


def test_busy_port_is_a_clear_error():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        with pytest.raises(CielError, match=f"127.0.0.1:{sock.getsockname()[1]}.*--osc-port"):
            OscServer(OscConfig(port=sock.getsockname()[1]), ParamStore())
    finally:
        sock.close()


def test_message_encoding_keeps_types():
    from pythonosc.osc_message import OscMessage
    m = OscMessage(message("/ciel/x", [1, 2.5, "s", True]))
    assert m.params == [1, 2.5, "s", True]


def test_docs_address_table_is_current():
    doc = (ROOT / "docs" / "osc.md").read_text()
    assert address_table(REGISTRY) in doc, "docs/osc.md is out of date: run python -m engine.control.oscdoc --doc"


# — the field's conventions: per-channel addresses, 0–1 faders, OSC 1.0 patterns —

def test_touchdesigner_channels_normalised_faders_and_patterns_reach_the_right_parameters(osc):
    server, store, c = osc
    c.send("/ciel/audio/offset/3", 1.5)             # TouchDesigner's OSC Out CHOP: one address per channel
    c.send("/ciel/audio/offset/0", -2.0)
    c.send("/ciel/norm/sky/lat", 0.75)              # a TouchOSC fader: 0–1 of the range (-90…90)
    c.send("/ciel/norm/image/offset/1", 0.0)        # 0 = the bottom of -4…4
    c.send("/ciel/norm/audio/mute", 1.0)
    c.send("/ciel/sky/{lon,roll}", 33.0)            # OSC 1.0 patterns
    c.send("/ciel/*/hold", 1)
    c.send("/ciel/sky/background/[0-1]", 0.5)
    roundtrip(c)
    off = store.get("audio/offset")
    assert (off[0], off[3]) == (-2.0, 1.5) and off[1] == off[2] == 0.0
    assert store.get1("sky/lat") == 45.0
    assert store.get("image/offset")[1] == -4.0 and store.get("image/offset")[0] == 0.0
    assert store.get1("audio/mute") == 1.0
    assert store.get1("sky/lon") == store.get1("sky/roll") == 33.0 and store.get1("sky/lat") == 45.0
    assert store.get1("audio/hold") == store.get1("image/hold") == 1.0
    assert store.get("sky/background") == (0.5, 0.5, 0.0)
    assert server.counters["unknown"] == 0 and server.counters["malformed"] == 0


def test_patterns_never_reach_commands_and_bad_patterns_are_refused(osc, caplog):
    server, store, c = osc
    quits = []
    server.on_quit = lambda: quits.append(1)
    c.send("/ciel/*", 0.5)                          # would match /ciel/quit if commands were patterned
    c.send("/ciel/qui?")
    c.send("/ciel/sky/[lon", 3.0)
    roundtrip(c)
    assert quits == []
    assert server.counters["malformed"] >= 1 and store.get1("sky/lon") == 0.0


def test_admin_addresses_are_refused_from_other_machines_unless_remote_admin():
    from engine.control.osc import Peer

    store = ParamStore()
    quits: list[int] = []
    config = OscConfig(port=0, allow=("10.9.0.0/16",))
    with OscServer(config, store, on_quit=lambda: quits.append(1)) as server:
        remote, outsider = Peer(("10.9.0.7", 5000), "ws", reply=lambda data: None), Peer(("10.8.0.7", 5000), "ws", reply=lambda data: None)
        server.handle_packet(message("/ciel/quit"), remote)
        server.handle_packet(message("/ciel/preset/store", ["x"]), remote)
        server.handle_packet(message("/ciel/sky/lon", [20.0]), remote)       # allowed: a plain set
        server.handle_packet(message("/ciel/sky/lat", [20.0]), outsider)     # outside the allow-list
        assert quits == [] and "x" not in server.presets
        assert server.counters["admin_refused"] == 2 and server.counters["denied"] == 1
        assert store.get1("sky/lon") == 20.0 and store.get1("sky/lat") == 0.0
        server.handle_packet(message("/ciel/quit"), Peer(("127.0.0.1", 5000)))
        assert quits == [1]
    with OscServer(OscConfig(port=0, allow=("10.9.0.0/16",), remote_admin=True), store,
                   on_quit=lambda: quits.append(2)) as server:
        server.handle_packet(message("/ciel/quit"), Peer(("10.9.0.7", 5000), "ws", reply=lambda data: None))
        assert quits == [1, 2]


def test_reply_budget_gives_a_forged_source_less_than_twice_its_bytes():
    from engine.control.osc import ReplyBudget

    budget = ReplyBudget()
    assert not budget.spend("10.1.2.3", 40)          # nothing received yet: nothing goes back
    sent = answered = 0
    for _ in range(1000):
        budget.earn("10.1.2.3", 16)
        sent += 16
        while budget.spend("10.1.2.3", 40):            # the whole /ciel/get answer, 40 bytes at a time
            answered += 40
    assert answered <= 2 * sent and answered > sent
    assert budget.spend("127.0.0.1", 10**6)          # this machine is not limited


def test_subscriptions_expire_unless_renewed():
    store = ParamStore()
    now = [0.0]
    with OscServer(OscConfig(port=0, subscription_ttl=10.0, heartbeat=0), store, clock=lambda: now[0]) as server:
        c = OscClient(port=server.port)
        try:
            c.send("/ciel/subscribe", c.port)
            roundtrip(c)
            assert len(server.health()["subscribers"]) == 1
            now[0] = 8.0
            c.send("/ciel/subscribe", c.port)          # renewed at 8 s: lasts until 18 s
            roundtrip(c)
            now[0] = 15.0
            store.set("sky/lon", 5.0, source="midi")
            assert c.wait_for("/ciel/sky/lon", 2.0) == (5.0,)
            now[0] = 19.0
            store.set("sky/lon", 6.0, source="midi")
            assert wait_until(lambda: server.counters["subscriptions_expired"] == 1)
            assert server.health()["subscribers"] == []
        finally:
            c.close()


def test_any_preset_name_is_stored_and_reloaded_or_refused_with_a_reply_and_the_patch_always_loads(tmp_path):
    """Names from the field (accents, quotes, dots, CJK) are stored in the patch and found again
    after a restart; a tab or a 10 kB name is refused with /ciel/error saying why; the patch loads."""
    patch_file = tmp_path / "live.toml"
    patch_file.write_text("# the performer's own comment\n" + DEFAULT_PATCH.read_text())
    patch_file.chmod(0o644)
    store = ParamStore()
    server = OscServer(OscConfig(port=0, heartbeat=0), store, writer=PatchWriter(patch_file)).start()
    c = OscClient(port=server.port)
    stored = ["été", '"quoted"', "a.b", "日本"]
    refused = ["a\tb", "x" * 10_000]
    try:
        for name in stored:
            c.send("/ciel/preset/store", name)
            assert c.wait_for("/ciel/preset/stored", 5.0) == (name,), name
        for name in refused:
            c.send("/ciel/preset/store", name)
            reply = c.wait_for("/ciel/error", 5.0)
            assert reply is not None and reply[0] == "/ciel/preset/store" and "preset name" in reply[1], reply
    finally:
        c.close()
        server.close()
    reloaded = load_patch(patch_file)                  # what the next start reads
    assert set(stored) <= set(reloaded.presets)
    assert not any("\t" in n or len(n) > 64 for n in reloaded.presets)
    assert patch_file.read_text().startswith("# the performer's own comment\n")
    assert patch_file.stat().st_mode & 0o777 == 0o644
