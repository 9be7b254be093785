"""Rate limits divided by workers (docs/rules.md: each worker enforces its share; login buckets
"divided by IDGUARD_WORKERS"), on RateLimiter's injected clock: every figure is exact, nothing
depends on how fast the test runs. (tests/unit/core/test_ratelimit.py covers take and peek.)"""

from __future__ import annotations

import pytest

from idguard.core.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def allowed(limiter: RateLimiter, key: str, rate: float, *, burst: float | None = None) -> int:
    """How many single takes in a row succeed (the clock standing still)."""
    for n in range(100):
        if limiter.take(key, rate, burst=burst):
            return n
    return 100


@pytest.mark.parametrize(("workers", "share"), [(1, 10), (2, 5), (5, 2), (10, 1)])
def test_a_units_rate_is_shared_among_the_workers(clock: Clock, workers: int, share: int) -> None:
    # 10 checks a second for the service: each worker's bucket holds a second of its share.
    assert allowed(RateLimiter(workers, clock=clock), "unit", 10) == share


def test_a_worker_refills_at_its_share_of_the_rate(clock: Clock) -> None:
    limiter = RateLimiter(2, clock=clock)  # 10/s for the service: 5/s in this worker
    assert allowed(limiter, "unit", 10) == 5
    assert limiter.take("unit", 10) == pytest.approx(0.2)  # one token at 5/s
    clock.now += 0.1
    assert limiter.take("unit", 10) == pytest.approx(0.1)  # half a token so far
    clock.now += 0.1
    assert limiter.take("unit", 10) == 0.0
    assert limiter.take("unit", 10) > 0


@pytest.mark.parametrize(("workers", "share"), [(1, 10), (2, 5), (4, 2), (10, 1)])
def test_a_login_burst_is_shared_among_the_workers(clock: Clock, workers: int, share: int) -> None:
    # Sign-ins: a burst of 10 for the service, then 2 a minute.
    assert allowed(RateLimiter(workers, clock=clock), "login", 2 / 60, burst=10) == share


def test_a_workers_login_bucket_refills_at_its_share(clock: Clock) -> None:
    limiter = RateLimiter(4, clock=clock)  # a burst of 2.5 and 0.5 a minute in this worker
    assert allowed(limiter, "login", 2 / 60, burst=10) == 2
    wait = limiter.take("login", 2 / 60, burst=10)  # half a token short at 1/120 a second
    assert wait == pytest.approx(60.0)
    assert RateLimiter.retry_after_header(wait) == "60"
    clock.now += 59.0
    assert limiter.take("login", 2 / 60, burst=10) > 0
    clock.now += 1.0
    assert limiter.take("login", 2 / 60, burst=10) == 0.0


def test_a_batch_takes_its_items_from_the_workers_share(clock: Clock) -> None:
    limiter = RateLimiter(2, clock=clock)  # 100/s for the service: a bucket of 50 here
    assert limiter.take("unit", 100, 30) == 0.0
    assert limiter.take("unit", 100, 30) == pytest.approx(10 / 50)  # 20 left: 10 short at 50/s
    assert limiter.take("unit", 100, 20) == 0.0
    assert limiter.take("unit", 100, 1) > 0
