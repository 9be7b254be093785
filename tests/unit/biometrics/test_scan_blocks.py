"""The scan's block of inner products (`scan._dots`, issue 10's eleventh round): sixteen rows of
biased codes against one live code at once, in AVX-512 VNNI where the machine has it and in plain
vector operations elsewhere. Both must give numpy's exact integers and the mask of rows above the
bar, whatever the bytes."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from idguard.biometrics import identification, scan

VARIANTS = {"plain vector operations": scan._dots_for(False), "AVX-512 VNNI": scan._dots_for(True)}


def _kernel(dots):  # type: ignore[no-untyped-def]
    @numba.njit
    def run(codes, row, q, bar):  # type: ignore[no-untyped-def]
        out = np.zeros(scan.BLOCK, np.int32)
        mask = dots(codes, row, q, bar, out)
        return out, mask

    return run


KERNELS = {name: _kernel(dots) for name, dots in VARIANTS.items()}


@pytest.fixture(scope="module", params=sorted(KERNELS))
def kernel(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    if request.param == "AVX-512 VNNI" and not scan.VNNI:
        pytest.skip("this machine has no AVX-512 VNNI (the scan uses plain vector operations here)")
    return KERNELS[request.param]


codes_16 = hnp.arrays(np.int8, (scan.BLOCK + 3, scan.DIMS), elements=st.integers(-128, 127))
one_code = hnp.arrays(np.int8, (scan.DIMS,), elements=st.integers(-128, 127))


@settings(max_examples=60, deadline=None)
@given(codes=codes_16, q=one_code, row=st.integers(0, 3), bar=st.integers(-(2**20), 2**20))
def test_a_block_gives_the_exact_products_of_sixteen_rows_and_the_mask_above_the_bar(
    kernel,  # type: ignore[no-untyped-def]
    codes: np.ndarray,
    q: np.ndarray,
    row: int,
    bar: int,
) -> None:
    """Lane t holds the biased product of row `row + t` (code + 128, unsigned, times q), bit t of
    the mask whether it exceeds the bar: exactly numpy's, extreme bytes included."""
    padded = identification.biased(codes)
    out, mask = kernel(padded, row, q, np.int32(bar))
    rows = codes[row : row + scan.BLOCK].astype(np.int64) + scan.BIAS
    want = rows @ q.astype(np.int64)
    assert out.tolist() == want.tolist()
    assert [bool(mask >> t & 1) for t in range(scan.BLOCK)] == (want > bar).tolist()


def test_the_bias_comes_off_exactly(kernel) -> None:  # type: ignore[no-untyped-def]
    """The scan compares a biased product with the bar plus 128 x the live code's byte sum: the
    same test as the signed product against the bar, for every row."""
    rng = np.random.default_rng(3)
    codes = rng.integers(-127, 128, (scan.BLOCK, scan.DIMS)).astype(np.int8)
    q = rng.integers(-127, 128, scan.DIMS).astype(np.int8)
    signed = codes.astype(np.int64) @ q.astype(np.int64)
    bias = scan.BIAS * int(q.astype(np.int64).sum())
    for bar in np.sort(signed).tolist():  # every row's own product as the bar: exactly above it or not
        out, mask = kernel(identification.biased(codes), 0, q, np.int32(bar + bias))
        assert (out - bias).tolist() == signed.tolist()
        assert [bool(mask >> t & 1) for t in range(scan.BLOCK)] == (signed > bar).tolist()


def test_the_compiled_kernel_refuses_codes_it_would_misread() -> None:
    """Signed codes (not `biased`) or a strided array are a typing error, not a wrong answer."""
    run = KERNELS["plain vector operations"]
    q = np.zeros(scan.DIMS, np.int8)
    with pytest.raises(numba.TypingError):
        run(np.zeros((scan.BLOCK, scan.DIMS), np.int8), 0, q, np.int32(0))
    with pytest.raises(numba.TypingError):
        run(np.zeros((scan.BLOCK, 2 * scan.DIMS), np.uint8)[:, ::2], 0, q, np.int32(0))
