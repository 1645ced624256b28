"""A warning that may recur many times a second (a client's error events during a broker outage), logged at
most once per interval per key, with the count of the ones left out since."""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Hashable


class RateLimitedLog:
    def __init__(self, logger: logging.Logger, every_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self._log, self._every_s, self._clock = logger, every_s, clock
        self._last: dict[Hashable, tuple[float, int]] = {}  # key -> (last logged, left out since)

    def warning(self, key: Hashable, msg: str, *args: Any) -> None:
        now = self._clock()
        last, left_out = self._last.get(key, (float("-inf"), 0))
        if now - last < self._every_s:
            self._last[key] = (last, left_out + 1)
            return
        self._last[key] = (now, 0)
        self._log.warning(msg + ("; %d more since the last report" if left_out else ""),
                          *args, *((left_out,) if left_out else ()))
