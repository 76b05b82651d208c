"""A small progress bar on standard error (no dependency). Quiet when stderr is not a terminal,
except for a final line."""

from __future__ import annotations

import sys
import time


class Progress:
    """``start`` (a ``time.perf_counter()`` reading, default now) and ``close(seconds=...)``
    let the bar share the caller's clock: the time the bar shows is the time the run's
    summary reports."""

    def __init__(self, total: int, label: str = "", stream=None, enabled: bool = True,
                 start: float | None = None):
        self.total = max(1, total)
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter() if start is None else start
        self._last = 0.0

    def update(self, done: int, info: str = ""):
        if not self.tty:
            return
        now = time.perf_counter()
        if done < self.total and now - self._last < 0.1:
            return
        self._last = now
        width = 30
        filled = int(width * done / self.total)
        bar = "#" * filled + "-" * (width - filled)
        rate = done / max(now - self.start, 1e-9)
        self.stream.write(f"\r{self.label} [{bar}] {done}/{self.total} {rate:6.1f} it/s {info}   ")
        self.stream.flush()

    def close(self, info: str = "", seconds: float | None = None):
        """The final line: ``seconds`` (the caller's measure of the run), default the time
        since ``start``."""
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start if seconds is None else seconds
        prefix = "\r" if self.tty else ""
        self.stream.write(f"{prefix}{self.label} {self.total} steps in {elapsed:.1f}s {info}"
                          + " " * 20 + "\n")
        self.stream.flush()
