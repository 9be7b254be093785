"""A process that imports idguard runs numpy's BLAS (OpenBLAS, bundled in numpy's wheels) on one
thread, unless the operator said otherwise: the worker's matrices are tiny and a second thread only
spins (issue 10: 190 ms of CPU a 1:N search with two threads, 95 with one)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

_THREADS = """
import ctypes, glob, os, sys
import idguard, numpy
libs = glob.glob(os.path.join(os.path.dirname(numpy.__file__), os.pardir, "numpy.libs", "*openblas*"))
if not libs:
    sys.exit(3)
print(ctypes.CDLL(libs[0]).scipy_openblas_get_num_threads64_())
"""


def _threads(**env: str) -> int:
    clean = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    done = subprocess.run(  # noqa: S603 - this interpreter with the test's own script
        [sys.executable, "-c", _THREADS], env={**clean, **env}, capture_output=True, text=True, check=False
    )
    if done.returncode == 3:
        pytest.skip("this numpy bundles no OpenBLAS (a numpy built against another BLAS)")
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


def test_importing_idguard_first_gives_numpy_one_blas_thread() -> None:
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: OpenBLAS would start one thread anyway, so the test would prove nothing")
    assert _threads() == 1


def test_an_operators_own_setting_stands() -> None:
    assert _threads(OPENBLAS_NUM_THREADS="2") == 2
