"""A log that a hostile guest cannot flood: a burst of lines, then a count of what was left out.

Counterpart of the rate limiting spice-server's ``spice_warning`` callers rely on QEMU for
(``qemu_log_mask(LOG_GUEST_ERROR, ...)``): a guest can make the device fail every command it
sends, and each failure must not cost the host a log line (or a traceback).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["RateLimitedLog", "LOG_BURST", "LOG_WINDOW"]

#: lines logged per window; the rest are counted
LOG_BURST = 10
#: seconds after which a new burst may be logged
LOG_WINDOW = 60.0


class RateLimitedLog:
    """At most ``burst`` warnings per ``window`` seconds; the first line of the next window says how
    many were left out."""

    def __init__(
        self, logger: logging.Logger, burst: int = LOG_BURST, window: float = LOG_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.logger = logger
        self.burst = burst
        self.window = window
        self.clock = clock
        self.start = clock()
        self.count = 0
        self.suppressed = 0

    def warning(self, msg: str, *args: object, exc_info: bool = False) -> bool:
        """Log ``msg % args`` as a warning (with the exception being handled if ``exc_info``)
        unless this window's burst is spent; True if logged."""
        now = self.clock()
        if now - self.start >= self.window:
            if self.suppressed:
                self.logger.warning("%d similar messages suppressed", self.suppressed)
            self.start, self.count, self.suppressed = now, 0, 0
        self.count += 1
        if self.count > self.burst:
            self.suppressed += 1
            return False
        self.logger.warning(msg, *args, exc_info=exc_info)
        return True
