"""core/randomness.py: the hot path's ids drawn from a pool OpenSSL's CSPRNG fills in blocks."""

from __future__ import annotations

import os

import pytest

from idguard.core import randomness


def test_bytes_are_never_handed_out_twice() -> None:
    """Across refills of the pool, every draw is fresh (no repeated 16-byte token in 5 pools)."""
    draws = [randomness.token_bytes(16) for _ in range(5 * randomness.POOL_BYTES // 16)]
    assert all(len(d) == 16 for d in draws)
    assert len(set(draws)) == len(draws)


def test_a_draw_larger_than_what_is_left_refills(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = randomness._fill

    def counting(n: int) -> bytes:
        calls.append(n)
        return real(n)

    monkeypatch.setattr(randomness, "_fill", counting)
    randomness._forget()
    randomness.token_bytes(randomness.POOL_BYTES - 10)
    randomness.token_bytes(16)  # 10 bytes left: a new pool, never a short draw
    assert calls == [randomness.POOL_BYTES, randomness.POOL_BYTES]
    assert len(randomness.token_bytes(8)) == 8
    assert calls == [randomness.POOL_BYTES, randomness.POOL_BYTES]


@pytest.mark.parametrize("n", [0, -1, randomness.POOL_BYTES + 1])
def test_sizes_outside_the_pool_are_refused(n: int) -> None:
    with pytest.raises(ValueError, match="bytes"):
        randomness.token_bytes(n)


def test_a_forked_child_does_not_repeat_the_parent() -> None:
    """The child's draws are not the parent's next draws (the pool is dropped at fork)."""
    randomness.token_bytes(16)  # the parent's pool is filled
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next draw, exit at once
        os.close(read)
        os.write(write, randomness.token_bytes(16))
        os._exit(0)
    os.close(write)
    child = os.read(read, 16)
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 16
    assert child != randomness.token_bytes(16)
