"""The access line idguard writes itself (logs.WithRequestId) is uvicorn's own line, character
for character: uvicorn's AccessFormatter (no colours) against the fast path, over random access
records, in text mode with and without a request id."""

from __future__ import annotations

import asyncio
import io
import logging
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from uvicorn.logging import AccessFormatter

from idguard import logs

UVICORN_ACCESS = logs.UVICORN_ACCESS

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


# --- the protocol's single checks: lines written per loop turn (logs.AccessLines) -------------


def access_logger(
    name: str, stream: io.StringIO, formatter: logging.Formatter | None = None
) -> logging.Logger:
    """A logger configured as `idguard serve` configures uvicorn's access logger."""
    logger = logging.getLogger(f"test.access.{name}")
    logger.handlers.clear()
    logger.filters.clear()
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        formatter or logs.WithRequestId(AccessFormatter(fmt=UVICORN_ACCESS, use_colors=False))
    )
    handler.addFilter(logs.MaskIdNumbers())
    logger.addHandler(handler)
    logger.addFilter(logs.MaskIdNumbers())
    return logger


def through_lines(logger: logging.Logger, answers: list[tuple[str, str, str, str, int, str | None]]) -> bool:
    """Write the answers' lines through AccessLines within one loop turn, then let it flush."""
    lines = logs.AccessLines(logger)

    async def turn() -> bool:
        loop = asyncio.get_running_loop()
        taken = [lines.write(loop, *answer) for answer in answers]
        await asyncio.sleep(0)  # the turn ends: the gathered lines are written
        return all(taken)

    return asyncio.run(turn())


@given(
    answers=st.lists(
        st.tuples(
            printable,
            st.sampled_from(["GET", "POST"]),
            st.one_of(printable, st.just("/api/v1/persons/11010519491231002X")),
            st.sampled_from(["1.0", "1.1"]),
            st.integers(100, 599),
            st.one_of(st.none(), st.text("0123456789abcdef", min_size=32, max_size=32)),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_lines_written_per_turn_are_the_handlers_own(
    answers: list[tuple[str, str, str, str, int, str | None]],
) -> None:
    """The lines AccessLines writes are, character for character, what the logger's handler
    writes for the same answers logged as records (masked alike), in order, in one write."""
    expected, ours = io.StringIO(), io.StringIO()
    logger = access_logger("records", expected)
    for client, method, path, version, status, rid in answers:
        token = logs.request_id.set(rid)
        try:
            logger.info('%s - "%s %s HTTP/%s" %d', client, method, path, version, status)
        finally:
            logs.request_id.reset(token)
    writes: list[str] = []
    ours.write = lambda text: writes.append(text) or len(text)  # type: ignore[method-assign]
    assert through_lines(access_logger("direct", ours), answers)
    assert writes == [expected.getvalue()]
    assert "11010519491231002X" not in expected.getvalue()


@pytest.mark.parametrize(
    "change",
    ["json", "propagates", "warning level", "another filter", "two handlers", "timed format", "file handler"],
)
def test_any_other_configuration_is_left_to_logging(change: str, tmp_path: Path) -> None:
    """AccessLines declines (the protocol then logs a record) whenever the logger is set up in
    any other way than `idguard serve`'s: it must never write a line the handler would not."""
    stream = io.StringIO()
    logger = access_logger(change.replace(" ", "-"), stream)
    handler = logger.handlers[0]
    if change == "json":
        handler.setFormatter(logs.JsonFormatter())
    elif change == "propagates":
        logger.propagate = True
    elif change == "warning level":
        logger.setLevel(logging.WARNING)
    elif change == "another filter":
        handler.addFilter(lambda record: True)
    elif change == "two handlers":
        logger.addHandler(logging.StreamHandler(io.StringIO()))
    elif change == "timed format":
        handler.setFormatter(
            logs.WithRequestId(AccessFormatter(fmt="%(asctime)s " + UVICORN_ACCESS, use_colors=False))
        )
    elif change == "file handler":
        logger.removeHandler(handler)
        file_handler = logging.FileHandler(tmp_path / "access.log")
        file_handler.setFormatter(handler.formatter)
        logger.addHandler(file_handler)
    assert not through_lines(logger, [("1.2.3.4:5", "POST", "/api/v1/verify", "1.1", 200, None)])
    assert stream.getvalue() == ""
    for h in logger.handlers:
        h.close()


def test_lines_of_a_loop_closed_before_its_turn_ended_go_out_with_the_next_loops() -> None:
    """A loop that stops before running its flush (a server shut down mid-turn, a test's loop)
    leaves no line stuck: the next loop's turn writes them, in order."""
    stream = io.StringIO()
    logger = access_logger("closed-loop", stream)
    lines = logs.AccessLines(logger)
    first = asyncio.new_event_loop()
    assert lines.write(first, "1.2.3.4:5", "POST", "/api/v1/verify", "1.1", 200, "first")
    first.close()  # its flush never ran

    async def turn() -> None:
        assert lines.write(
            asyncio.get_running_loop(), "1.2.3.4:5", "POST", "/api/v1/verify", "1.1", 200, "second"
        )
        await asyncio.sleep(0)

    asyncio.run(turn())
    written = stream.getvalue().splitlines()
    assert [line.rsplit("request_id=", 1)[1] for line in written] == ["first", "second"]
