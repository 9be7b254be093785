"""Token buckets: per unit for checks (a unit that harvests identities is stopped here), and per
account and client address for staff logins and the public found-card lookup (guessing).

Each worker process keeps its own buckets with the rate divided by the number of workers, so the
service as a whole allows about `rate_limit` per second with a burst of one second's worth (or
`burst`, when given). A batch takes one token per item.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable


class RateLimiter:
    def __init__(self, workers: int = 1, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.workers = max(1, workers)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill time)
        self._lock = threading.Lock()

    def take(self, key: str, rate_limit: float, n: int = 1, *, burst: float | None = None) -> float:
        """Take `n` tokens from `key`'s bucket; return 0 when allowed, else the seconds to wait."""
        return self._bucket(key, rate_limit, n, burst, consume=True)

    def peek(self, key: str, rate_limit: float, n: int = 1, *, burst: float | None = None) -> float:
        """As `take`, without taking: 0 when `n` tokens are there, else the seconds to wait."""
        return self._bucket(key, rate_limit, n, burst, consume=False)

    def _bucket(self, key: str, rate_limit: float, n: int, burst: float | None, *, consume: bool) -> float:
        rate = max(rate_limit / self.workers, 1e-9)
        capacity = max(rate if burst is None else burst / self.workers, float(n))
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (capacity, now))
            tokens = min(capacity, tokens + (now - last) * rate)
            if tokens >= n:
                self._buckets[key] = (tokens - n if consume else tokens, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return max(0.001, (n - tokens) / rate)

    @staticmethod
    def retry_after_header(wait: float) -> str:
        return str(max(1, math.ceil(wait)))
