"""Sub-commands of this stage (filled in by its module)."""

from __future__ import annotations

import argparse


def register(sub: "argparse._SubParsersAction") -> None:
    """Add this stage's sub-commands to the `ciel` parser."""
