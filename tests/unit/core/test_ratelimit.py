"""Token buckets on an injected clock: exact, with no wall-clock time in the test."""

from __future__ import annotations

from idguard.core.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_take_spends_the_burst_then_says_how_long_to_wait() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    assert [limiter.take("k", 1.0, burst=3) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("k", 1.0, burst=3) == 1.0
    clock.t += 1.0
    assert limiter.take("k", 1.0, burst=3) == 0.0
    assert limiter.take("other", 1.0, burst=3) == 0.0  # buckets are per key


def test_peek_never_takes() -> None:
    limiter = RateLimiter(clock=Clock())
    for _ in range(10):
        assert limiter.peek("k", 1.0, burst=2) == 0.0
    assert limiter.take("k", 1.0, burst=2) == 0.0
    assert limiter.take("k", 1.0, burst=2) == 0.0
    assert limiter.peek("k", 1.0, burst=2) == 1.0


def test_each_of_n_workers_allows_a_nth_of_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(4, clock=clock)
    assert [limiter.take("unit", 100.0) for _ in range(25)] == [0.0] * 25  # 100/s over 4 workers
    assert limiter.take("unit", 100.0) == 0.04
    clock.t += 0.05
    assert limiter.take("unit", 100.0) == 0.0


def test_a_batch_larger_than_the_burst_still_fits_an_empty_bucket_once() -> None:
    limiter = RateLimiter(clock=Clock())
    assert limiter.take("unit", 10.0, n=50) == 0.0  # capacity grows to the batch
    assert limiter.take("unit", 10.0, n=50) == 5.0
