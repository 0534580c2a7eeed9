"""ciel — a real-time audio-visual performance engine for neural noise."""

__version__ = "0.1.0"
