"""Log files for an unattended ciel: rotation that survives a full disk.

`SafeRotatingFileHandler` rotates logs and swallows write errors (ENOSPC, EIO) after counting
them: a full disk never stops the show. `setup_file_logging` adds one to the root logger.
"""

from __future__ import annotations

import errno
import logging
import logging.handlers
from pathlib import Path


class SafeRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating log file whose write errors are counted and swallowed, never raised or printed
    per record: with the disk full the show goes on, and logging resumes when space returns."""

    def __init__(self, filename: str | Path, max_bytes: int = 1_000_000, backups: int = 5) -> None:
        super().__init__(filename, maxBytes=max_bytes, backupCount=backups, encoding="utf-8", delay=True)
        self.write_errors = 0
        self.last_error = ""
        self._lost = 0   # records lost since the last one written

    def emit(self, record: logging.LogRecord) -> None:
        """Write `record`; the first record written after failures is followed by one line that
        says how many were lost before it and why, so the log shows the gap instead of hiding it."""
        errors = self.write_errors
        super().emit(record)
        if self._lost and self.write_errors == errors:
            lost, self._lost = self._lost, 0
            super().emit(logging.LogRecord("ciel.log", logging.WARNING, __file__, 0,
                                           "logging resumed: %d log records before this one were lost (%s)",
                                           (lost, self.last_error), None))

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's naming)
        import sys

        exc = sys.exc_info()[1]
        self.write_errors += 1
        self._lost += 1
        self.last_error = f"{type(exc).__name__}: {exc}" if exc else "unknown error"
        if self.write_errors == 1 or (isinstance(exc, OSError) and exc.errno == errno.ENOSPC and self.write_errors % 1000 == 0):
            print(f"ciel: cannot write log {self.baseFilename}: {self.last_error} (the show goes on)",
                  file=sys.__stderr__)
        stream, self.stream = self.stream, None  # reopened on the next record
        if stream is not None:
            try:
                stream.close()
            except (OSError, ValueError):
                pass


def setup_file_logging(folder: str | Path, level: int = logging.INFO, max_bytes: int = 1_000_000,
                       backups: int = 5) -> SafeRotatingFileHandler:
    """Add a rotating `ciel.log` in `folder` to the root logger; returns the handler (for its counts)."""
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    handler = SafeRotatingFileHandler(folder / "ciel.log", max_bytes, backups)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    handler.setLevel(level)
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > level or root.level == logging.NOTSET:
        root.setLevel(level)
    return handler
