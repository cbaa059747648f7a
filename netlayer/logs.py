"""Rate-limited logging for what strangers can trigger (refused connections, bad frames).

A flood of bad connections must not become a flood of log lines: each `RateLimitedLog`
writes at most ``burst`` lines per ``period`` seconds and then one summary of how many
it held back.

Threading: one event loop (or guard it yourself); not thread-safe.
"""

from __future__ import annotations

import logging
import time

__all__ = ["RateLimitedLog"]


class RateLimitedLog:
    def __init__(self, logger: logging.Logger, *, burst: int = 5, period: float = 10.0) -> None:
        self.logger = logger
        self.burst = burst
        self.period = period
        self._window_start = float("-inf")
        self._written = 0
        self.suppressed = 0
        """Lines held back in the current window (reported when it ends)."""

    def log(self, level: int, msg: str, *args: object, exc_info: bool = False) -> None:
        now = time.monotonic()
        if now - self._window_start >= self.period:
            if self.suppressed:
                self.logger.log(
                    level,
                    "(%d similar messages suppressed in %.0f s)",
                    self.suppressed,
                    self.period,
                )
            self._window_start, self._written, self.suppressed = now, 0, 0
        if self._written < self.burst:
            self._written += 1
            self.logger.log(level, msg, *args, exc_info=exc_info)
        else:
            self.suppressed += 1

    def warning(self, msg: str, *args: object, exc_info: bool = False) -> None:
        self.log(logging.WARNING, msg, *args, exc_info=exc_info)

    def error(self, msg: str, *args: object, exc_info: bool = False) -> None:
        self.log(logging.ERROR, msg, *args, exc_info=exc_info)
