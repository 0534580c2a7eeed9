"""What every control surface shares: `start()` and `close()`, with `stop()` (the engine's name)
and the context manager (`with OscServer(...) as server:`) made from them, once."""

from __future__ import annotations

from typing import TypeVar

S = TypeVar("S", bound="Lifecycle")


class Lifecycle:
    """Subclasses define `start()` (returning themselves) and `close()`. Main thread."""

    def start(self: S) -> S:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """The same as `close()`: the name `engine.parts.ControlSurface` uses."""
        self.close()

    def __enter__(self: S) -> S:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
