"""The `ciel` command: run, render, devices, and the commands of the training, installation and
broadcast stages (ingest, train, export, bake, install, broadcast).

Every `CielError` is printed as one line (`ciel: ...`) with exit code 2; no tracebacks for
problems a user can fix.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Callable, Sequence

from . import PACKAGE, __version__
from .errors import CielError

STARTED = time.monotonic()  # when the command started: the time-to-first-sound line counts from here

# Modules that add sub-commands: each has `register(sub: argparse._SubParsersAction) -> None`
# and sets `func` on its parsers.
COMMAND_MODULES = tuple(f"{PACKAGE}.{name}" for name in (
    "commands", "train.commands", "installation", "broadcast.commands", "compose"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ciel", description="Neural noise in an oval sky: a real-time audio-visual engine.")
    parser.add_argument("--version", action="version", version=f"ciel {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.t0 = STARTED
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 0
    try:
        return int(func(args) or 0)
    except CielError as exc:
        print(f"ciel: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
