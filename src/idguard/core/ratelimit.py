"""Token buckets: per unit for checks (a unit that harvests identities is stopped here), and per
account and client address for staff logins and the public found-card lookup (guessing).

Each worker process keeps its own buckets with the rate divided by the number of workers, so the
service as a whole allows about `rate_limit` per second with a burst of one second's worth (or
`burst`, when given). A batch takes one token per item.

A request larger than the bucket (a batch of more items than the unit's rate per second) is
admitted by borrowing: once the bucket is full it takes all its items at once and the bucket
goes into debt, which refills at the rate before anything else of that key is admitted. The
average stays at the rate; a large batch is never refused forever because single checks keep
the bucket from ever holding the whole batch (as it was when a batch had to fit the bucket).

`admit` also says what the IETF draft's `RateLimit-*` headers tell a client: the tokens left
and the seconds until the bucket is full again, for the service as a whole (this worker's
share times the workers, as every worker sees the same traffic spread over them).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import NamedTuple


class Admission(NamedTuple):
    wait: float  # 0 when admitted, else the seconds until it would be
    remaining: int  # tokens left for the service as a whole (0 while in debt)
    reset: int  # whole seconds until the bucket is full again

    def headers(self, limit: int) -> dict[str, str]:
        """`RateLimit-Limit/Remaining/Reset` (draft-ietf-httpapi-ratelimit-headers)."""
        return {
            "RateLimit-Limit": str(limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset),
        }


class RateLimiter:
    def __init__(self, workers: int = 1, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.workers = max(1, workers)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill time)
        self._lock = threading.Lock()

    def take(self, key: str, rate_limit: float, n: int = 1, *, burst: float | None = None) -> float:
        """Take `n` tokens from `key`'s bucket; return 0 when allowed, else the seconds to wait."""
        return self._bucket(key, rate_limit, n, burst, consume=True).wait

    def peek(self, key: str, rate_limit: float, n: int = 1, *, burst: float | None = None) -> float:
        """As `take`, without taking: 0 when `n` tokens are there, else the seconds to wait."""
        return self._bucket(key, rate_limit, n, burst, consume=False).wait

    def admit(self, key: str, rate_limit: float, n: int = 1) -> Admission:
        """As `take` (a unit's checks), with what the `RateLimit-*` headers say after it."""
        return self._bucket(key, rate_limit, n, None, consume=True)

    def _bucket(
        self, key: str, rate_limit: float, n: int, burst: float | None, *, consume: bool
    ) -> Admission:
        rate = max(rate_limit / self.workers, 1e-9)
        capacity = rate if burst is None else burst / self.workers
        need = min(float(n), capacity)  # more than the bucket holds: a full bucket, and the rest borrowed
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (capacity, now))
            tokens = min(capacity, tokens + (now - last) * rate)
            wait = 0.0
            if tokens >= need:
                if consume:
                    tokens -= n
            else:
                wait = max(0.001, (need - tokens) / rate)
            self._buckets[key] = (tokens, now)
        remaining = max(0, int(tokens * self.workers + 1e-9))
        return Admission(wait, remaining, math.ceil((capacity - tokens) / rate - 1e-9))

    @staticmethod
    def retry_after_header(wait: float) -> str:
        return str(max(1, math.ceil(wait)))
