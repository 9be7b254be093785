"""The access line idguard writes itself (logs.WithRequestId) is uvicorn's own line, character
for character: uvicorn's AccessFormatter (no colours) against the fast path, over random access
records, in text mode with and without a request id."""

from __future__ import annotations

import logging

from hypothesis import given
from hypothesis import strategies as st
from uvicorn.logging import AccessFormatter

from idguard import logs

UVICORN_ACCESS = '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s'

printable = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


def access_record(level: int, args: tuple[object, ...]) -> logging.LogRecord:
    record = logging.LogRecord("uvicorn.access", level, __file__, 1, '%s - "%s %s HTTP/%s" %d', args, None)
    logs.MaskIdNumbers().filter(record)  # as every access record passes the filter first
    return record


@given(
    client=printable,
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "BREW"]),
    path=printable,
    version=st.sampled_from(["1.0", "1.1", "2"]),
    status=st.integers(100, 599),
    level=st.sampled_from([logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL]),
    rid=st.one_of(st.none(), st.text("0123456789abcdef", min_size=32, max_size=32)),
)
def test_the_access_line_is_uvicorns(
    client: str, method: str, path: str, version: str, status: int, level: int, rid: str | None
) -> None:
    uvicorn = AccessFormatter(fmt=UVICORN_ACCESS, use_colors=False)
    ours = logs.WithRequestId(uvicorn)
    args = (client, method, path, version, status)
    expected = uvicorn.format(access_record(level, args))
    token = logs.request_id.set(rid)
    try:
        line = ours.format(access_record(level, args))
    finally:
        logs.request_id.reset(token)
    assert line == (expected if rid is None else f"{expected} request_id={rid}")


def test_an_access_line_with_an_id_number_in_its_path_is_masked() -> None:
    ours = logs.WithRequestId(AccessFormatter(fmt=UVICORN_ACCESS, use_colors=False))
    line = ours.format(
        access_record(logging.INFO, ("1.2.3.4:5", "GET", "/api/v1/persons/11010519491231002X", "1.1", 200))
    )
    assert "11010519491231002X" not in line
    assert "110105********002X" in line


def test_coloured_or_timed_formats_go_through_uvicorn() -> None:
    """Only the plain format is written directly; any other is uvicorn's own formatter's."""
    coloured = logs.WithRequestId(AccessFormatter(fmt=UVICORN_ACCESS, use_colors=True))
    timed = logs.WithRequestId(AccessFormatter(fmt="%(asctime)s " + UVICORN_ACCESS, use_colors=False))
    record = access_record(logging.INFO, ("1.2.3.4:5", "GET", "/", "1.1", 200))
    assert "\x1b[" in coloured.format(record)
    assert timed.format(record)[:4].isdigit()
