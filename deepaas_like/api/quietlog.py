"""Repeated warnings, aggregated: the first is logged, the rest counted per interval.

An overloaded server sheds thousands of requests a second; one WARNING line each
would bury everything else in the log (and cost the CPU it lacks). Each kind of
warning (a key: status, route, error type) is logged when first seen; further ones
within ``interval`` seconds are counted and reported in one line at its end::

    WARNINGS = RepeatedWarnings(logging.getLogger(__name__))
    WARNINGS.warn((503, "/v2/models/{name}/predict/", "QueueFull"), "%s -> 503: %s", path, message)
    # ... 10 s later, if more came: "4211 more like it in the last 10 s, the last: ..."
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Hashable

INTERVAL = 10.0
MAX_KEYS = 1000


@dataclass
class _Seen:
    since: float
    count: int = 0
    args: tuple = ()
    message: str = ""


class RepeatedWarnings:
    def __init__(self, logger: logging.Logger, interval: float = INTERVAL) -> None:
        self._logger = logger
        self._interval = interval
        self._seen: dict[Hashable, _Seen] = {}

    def warn(self, key: Hashable, message: str, *args: Any) -> None:
        now = time.monotonic()
        seen = self._seen.get(key)
        if seen is not None and now - seen.since < self._interval:
            if seen.count == 0:
                self._schedule_flush(key, seen.since + self._interval - now)
            seen.count += 1
            seen.message, seen.args = message, args
            return
        if len(self._seen) >= MAX_KEYS:
            self._seen.clear()
        self._seen[key] = _Seen(now)
        self._logger.warning(message, *args)

    def _schedule_flush(self, key: Hashable, delay: float) -> None:
        try:
            asyncio.get_running_loop().call_later(max(0.0, delay), self._flush, key)
        except RuntimeError:  # no loop: counted, reported with the next one
            pass

    def _flush(self, key: Hashable) -> None:
        seen = self._seen.pop(key, None)
        if seen is not None and seen.count:
            self._logger.warning(
                "%d more like it in the last %g s, the last: " + seen.message, seen.count, self._interval, *seen.args
            )
