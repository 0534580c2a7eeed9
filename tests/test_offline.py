"""Nothing leaves the machine: an artist's whole path (ingest → train → render → bake → broadcast)
runs inside a network namespace with loopback only, under a socket audit hook that records every
attempt to reach another machine. Every step succeeds and none tries."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import missing

from harness import netns

ROOT = Path(__file__).resolve().parent.parent


def test_the_whole_path_runs_with_no_network_and_never_tries_one(tmp_path: Path) -> None:
    why = netns.available()
    if why is not None:
        missing(f"the offline test needs a network namespace: {why}")
    with netns.Island() as island:
        proc = subprocess.run(island.run_in([sys.executable, "-m", "harness.offline", str(tmp_path)]),
                              cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {k: report[k] for k in ("ingest", "train", "render", "bake")} == dict.fromkeys(("ingest", "train", "render", "bake"), 0)
    assert report["broadcast"] == 200
    assert report["attempts"] == [], report["attempts"]
    card = (tmp_path / "run" / "model" / "card.toml").read_text(encoding="utf-8")
    assert str(tmp_path) not in card                  # the card names its dataset by folder and hash
