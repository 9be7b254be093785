"""Per-unit token buckets (a unit that harvests identities is stopped here).

Each worker process keeps its own buckets with the unit's rate divided by the number of workers,
so the service as a whole allows about `rate_limit` checks per second with a burst of one
second's worth. A batch takes one token per item.
"""

from __future__ import annotations

import math
import threading
import time


class RateLimiter:
    def __init__(self, workers: int = 1) -> None:
        self.workers = max(1, workers)
        self._buckets: dict[str, tuple[float, float]] = {}  # unit -> (tokens, last refill time)
        self._lock = threading.Lock()

    def take(self, unit: str, rate_limit: int, n: int = 1) -> float:
        """Take `n` tokens; return 0 when allowed, else the seconds to wait before retrying."""
        rate = max(rate_limit / self.workers, 1e-9)
        capacity = max(rate, float(n))
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(unit, (capacity, now))
            tokens = min(capacity, tokens + (now - last) * rate)
            if tokens >= n:
                self._buckets[unit] = (tokens - n, now)
                return 0.0
            self._buckets[unit] = (tokens, now)
            return max(0.001, (n - tokens) / rate)

    @staticmethod
    def retry_after_header(wait: float) -> str:
        return str(max(1, math.ceil(wait)))
