"""On stage over a LAN: ciel in one network namespace, another machine in a second, joined by a veth
pair. The other machine finds ciel over zeroconf, controls it over OSC, hears local changes over an
OSCQuery LISTEN websocket; an address outside the allow-list changes nothing; remote quit is refused;
a forged /ciel/get flood gets back at most twice its bytes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import missing

from harness import netns

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def lan():
    why = netns.available()
    if why is not None:
        missing(f"LAN tests need network namespaces: {why}")
    with netns.Lan() as lan:
        yield lan


def test_a_second_machine_discovers_controls_and_listens(lan: netns.Lan, tmp_path: Path) -> None:
    patch = tmp_path / "lan.toml"
    patch.write_text('name = "on stage"\n\n[schedule]\nenabled = true\nperiod = 1.0\n', encoding="utf-8")
    engine = subprocess.Popen(
        lan.run_in(lan.server, [sys.executable, "-m", "engine.cli", "run", str(patch), "--headless", "--audio", "none",
                                "--no-midi", "--lan", "--allow", f"{lan.client_ip}/32", "--seconds", "90"]),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        client = subprocess.run(
            lan.run_in(lan.client, [sys.executable, "-m", "harness.lanclient", "--me", lan.client_ip,
                                    "--outsider", lan.outsider_ip, "--flood", "2"]),
            cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert client.returncode == 0, client.stderr
        report = json.loads(client.stdout.strip().splitlines()[-1])
        still_running = engine.poll() is None             # /ciel/quit from the other machine did not end it
    finally:
        engine.terminate()
        _, err = engine.communicate(timeout=30)
    assert report["discovered"] and report["discovered"][0] == lan.server_ip, (report, err[-3000:])
    assert report["host_info"]["OSC_IP"] == lan.server_ip, report
    assert report["host_info"]["EXTENSIONS"]["LISTEN"] is True
    assert report["set_over_osc"] == 42.0, report
    assert report["listen_pushes"] >= 3, (report, err[-3000:])           # the scheduler's scene/next, pushed
    assert report["after_outsider_set"] == 42.0, report                   # the outsider's set changed nothing
    assert report["outsider_http_status"] == 403, report
    assert report["alive_after_remote_quit"] is True and still_running, report
    assert report["flood_requests"] > 100 and report["reflection_ratio"] <= 2.0, report
    assert f"from {lan.outsider_ip} refused (not in [osc] allow)" in err, err[-3000:]
    assert f"/ciel/quit from {lan.client_ip} refused: only this machine may send it" in err, err[-3000:]
