"""Benchmarks: `python -m bench NAME [--quick]` prints one JSON object; `python -m bench --all` a table."""
