"""Random bytes for the hot path's ids (check ids, request ids), drawn from a CSPRNG in blocks
instead of one call per request, and without letting go of the GIL.

`os.urandom` is one `getrandom` call, and CPython releases the GIL around it: on a worker whose
journal, check-log and follower threads are waiting for the GIL, every such release hands the
GIL over and the event loop waits to get it back. Measured on the single check (issue 14,
bench/protocol_cpu.py): ~17 us a call with those threads about, against 0.3 us alone; two calls
a request were a tenth of a single check's cost. Reading ahead (POOL_BYTES a call, a few hundred
requests' ids) made that rare, not gone: with a thread spinning in Python, one `os.urandom(4096)`
in a few hundred waited up to 8 ms for the GIL, a stall of every request in flight.

So the pool is filled by `ssl.RAND_bytes`: OpenSSL's DRBG (NIST SP 800-90A CTR-DRBG, seeded and
reseeded from the OS's CSPRNG, reseeded after a fork), which CPython calls with the GIL held;
Python documents it as cryptographically strong. 4096 bytes cost ~1.2 us (7 us from
`os.urandom`). An id is as unguessable as a uuid4's: each id's bytes are fresh DRBG output, never
reused or derived from another's. A forked child also starts with an empty pool of its own
(`os.register_at_fork`), so a parent and its workers never hand out the same bytes. For secrets
(keys, nonces) use `os.urandom` or `secrets`: their cost does not matter, and they should not sit
in memory ahead of use.
"""

from __future__ import annotations

import os
import ssl
import threading

POOL_BYTES = 4096
_fill = ssl.RAND_bytes  # the GIL held (see above)

_lock = threading.Lock()
_pool = b""
_at = 0


def token_bytes(n: int) -> bytes:
    """`n` (at most POOL_BYTES) fresh random bytes from OpenSSL's CSPRNG."""
    global _pool, _at
    if not 0 < n <= POOL_BYTES:
        raise ValueError(f"between 1 and {POOL_BYTES} bytes, not {n}")
    with _lock:
        end = _at + n
        if end > len(_pool):
            _pool, _at, end = _fill(POOL_BYTES), 0, n
        out = _pool[_at:end]
        _at = end
    return out


def _forget() -> None:
    """In a forked child: never hand out bytes the parent may also hand out."""
    global _pool, _at, _lock
    _lock = threading.Lock()
    _pool, _at = b"", 0


os.register_at_fork(after_in_child=_forget)
