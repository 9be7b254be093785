"""idguard — the invalid resident ID card information system (失效居民身份证信息系统)."""

import os

# One BLAS thread per process, set before anything loads numpy: a worker's matrices (a fingerprint's
# cylinders, a search's live codes) are tiny, and OpenBLAS's second thread only spins while it
# waits. Measured (issue 10, stop 34): the same 1:N searches cost 190 ms of CPU each with two
# threads, 95 with one. Workers scale out by processes instead. An operator's own setting stands.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
