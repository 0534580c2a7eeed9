"""ciel — a real-time audio-visual performance engine for neural noise."""

__version__ = "0.1.0"
# the import name: `ciel` when installed (pyproject.toml maps the source folder engine/ to it),
# `engine` when run from a checkout's folder; subprocesses and the fork server import by it
PACKAGE = __name__
