"""Helpers shared by the benchmarks: percentiles, and what else ran on the machine."""

from __future__ import annotations

import os

import numpy as np


def percentile(values, q: float) -> float:
    """The q-th percentile of a list of numbers (nan for an empty list), rounded to 3 decimals."""
    if len(values) == 0:
        return float("nan")
    return round(float(np.percentile(np.asarray(values, dtype=float), q)), 3)


def machine_load() -> str:
    """One line: cores and the 1-minute load average, to print beside timings."""
    la = os.getloadavg()[0]
    return f"{os.cpu_count()} cores, loadavg {la:.2f}"
