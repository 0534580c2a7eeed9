"""Run one benchmark (`python -m bench audio --quick`) or all of them as a table (`--all`).

Each benchmark is a module `bench/NAME.py` with `main(argv: list[str]) -> dict`; the runner prints
the dict as one JSON object. `--all` runs every benchmark with `--quick` in its own process, one
after another (so they do not load each other), and prints a table of their keys.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
NAMES = sorted(p.stem for p in HERE.glob("*.py") if not p.stem.startswith("_") and p.stem != "common")


def run_one(name: str, argv: list[str]) -> dict:
    if name not in NAMES:
        raise SystemExit(f"bench: unknown benchmark {name!r}; known: {', '.join(NAMES)}")
    module = importlib.import_module(f"bench.{name}")
    return module.main(argv)


def run_all(argv: list[str]) -> None:
    rows: list[tuple[str, str, str]] = []
    for name in NAMES:
        proc = subprocess.run([sys.executable, "-m", "bench", name, *argv], capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            rows.append((name, "error", err[:100]))
            continue
        for key, value in json.loads(lines[-1]).items():
            rows.append((name, key, json.dumps(value) if not isinstance(value, str) else value))
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    print(f"{'bench':<{w0}}  {'key':<{w1}}  value")
    for b, k, v in rows:
        print(f"{b:<{w0}}  {k:<{w1}}  {v}")


def main() -> None:
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help"):
        print(__doc__.strip())
        print("benchmarks:", ", ".join(NAMES))
        return
    if args[0] == "--all":
        run_all(args[1:] or ["--quick"])
        return
    result = run_one(args[0], args[1:])
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
