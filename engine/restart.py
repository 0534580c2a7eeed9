"""The one restart policy of ciel's supervised workers (the audio process, the generator
process): after a restart that did not help, wait longer before the next, doubling from `first`
seconds up to `limit`; once the worker works again, start over from `first`.

Used by `engine.audio.output.AudioProcess` (0.5, 1, 2 s between tries) and by
`engine.supervise.StallWatch` (the stall timeout, doubling up to a minute). Main or supervisor
thread; not shared between threads.
"""

from __future__ import annotations


class Backoff:
    """`wait`: the current wait (s). `failed()` returns it and doubles it for next time (up to
    `limit`); `reset()` once the worker is healthy again."""

    def __init__(self, first: float, limit: float) -> None:
        if first <= 0 or limit < first:
            raise ValueError(f"Backoff: expected 0 < first <= limit, got first {first}, limit {limit}")
        self.first, self.limit = first, limit
        self.wait = first

    @property
    def backing_off(self) -> bool:
        """True after a restart that has not been followed by a healthy worker yet."""
        return self.wait > self.first

    def failed(self) -> float:
        """The wait before the next try; the one after it is twice as long (up to `limit`)."""
        now = self.wait
        self.wait = min(self.limit, self.wait * 2)
        return now

    def reset(self) -> None:
        self.wait = self.first
