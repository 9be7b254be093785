"""Logging that never carries a full id number (DOMAIN.md: mask as 110105********002X).

Paths such as /api/v1/persons/{id_number} and query strings reach the access log; the filter
rewrites every 18-character id-number-shaped token in a record's message and arguments, in
whatever form it was sent: plain, percent-encoded (uvicorn logs the query string as sent and the
path re-encoded), in full-width or other digits (core.idnumber.occurrences finds them all). The
mask is always of the number in ASCII: `110105********002X`.

`use_format("json")` (IDGUARD_LOG_FORMAT=json; ops.install calls it) turns every line into one
JSON object: time, level, logger, message, request_id (the `X-Request-Id` of the request being
served, ops/middleware.py sets `request_id`), pid, and the exception's traceback when there is
one; uvicorn's access lines add client, method, path and status. The text is masked as above,
and once more as a whole (a traceback may quote a value), in either format. In text mode a line
logged while a request is served ends with ` request_id=…`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime as dt
import http
import json
import logging
import os
import re
import sys
import threading
import traceback
from typing import Any, cast

from uvicorn.logging import AccessFormatter

from idguard.core.idnumber import mask, occurrences

# A name in a query string (the deprecated GET form of the public found-card lookup) has no shape
# to recognise: its value is dropped from any record that shows that path.
_NAMED_QUERIES = re.compile(r"(/api/v1/found-cards/lookup\?[^\s\"']*?\bname=)(?!-(?:[&\s\"']|$))[^&\s\"']*")


def redact(text: str) -> str:
    if len(text) < 18 and text.isascii():  # too short for an id number (in ASCII: 18 characters)
        return text
    if "?" in text:
        text = _NAMED_QUERIES.sub(r"\1-", text)
    found = occurrences(text)
    if not found:
        return text
    parts: list[str] = []
    done = 0
    for start, end, number in found:
        if start < done:  # never expected: spans of distinct matches overlap
            continue
        parts.append(text[done:start])
        parts.append(mask(number))
        done = end
    parts.append(text[done:])
    return "".join(parts)


class MaskIdNumbers(logging.Filter):
    """Masks a record once: the filter sits on the loggers and on every handler (install), and a
    record passes several of them; the mark spares the access log's line a second pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.__dict__.get("_idguard_masked"):
            return True
        record.__dict__["_idguard_masked"] = True
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


LOGGERS = ("uvicorn", "uvicorn.access", "uvicorn.error", "idguard")


def install() -> None:
    """Attach the filter where every record passes (idempotent).

    A logger's own filters apply only to records logged on that exact logger, not to its
    children's, so the filter goes on the handlers (root's and uvicorn's), which see every
    record they emit, and on the named loggers for handlers added later.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    handlers = list(logging.getLogger().handlers)
    for name in LOGGERS:
        logger = logging.getLogger(name)
        handlers.extend(logger.handlers)
        if not any(isinstance(f, MaskIdNumbers) for f in logger.filters):
            logger.addFilter(MaskIdNumbers())
    for handler in handlers:
        if not any(isinstance(f, MaskIdNumbers) for f in handler.filters):
            handler.addFilter(MaskIdNumbers())


# The id of the request being served in this context (None outside a request). Set by the ops
# middleware; asyncio tasks and run_in_threadpool carry it with the context.
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("idguard_request_id", default=None)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
            "request_id": request_id.get(),
            "pid": record.process if record.process is not None else os.getpid(),
        }
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
            client, method, path, _, status = record.args
            entry.update(client=client, method=method, path=path, status=status)
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exception"] = redact(record.exc_text)
        return json.dumps(entry, ensure_ascii=False, default=str)


def _masked_whole(record: logging.LogRecord) -> bool:
    """Whether the record's text is all masked already: an access line whose arguments the filter
    masked (uvicorn's format keeps them apart, so no two can make a number together) and which
    carries no traceback or stack (text the filter never saw). It then needs no second pass over
    the whole line (issue 14)."""
    return bool(
        record.name == "uvicorn.access"
        and record.__dict__.get("_idguard_masked")
        and record.exc_info is None
        and record.exc_text is None
        and record.stack_info is None
        and isinstance(record.args, tuple)
        and len(record.args) == 5
    )


_STATUS_TEXT = {status.value: f"{status.value} {status.phrase}" for status in http.HTTPStatus}


class WithRequestId(logging.Formatter):
    """Text lines as another formatter writes them, masked as a whole (tracebacks too), with
    ` request_id=…` added during a request.

    An access line under uvicorn's own AccessFormatter (no colours, no time) is written here
    directly, the same text with one copy of the record's fields instead of uvicorn's two copies
    of the record: ~2 us instead of ~8.5 (issue 14; tests/unit/test_access_line.py holds the two
    equal)."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner
        plain = isinstance(inner, AccessFormatter) and not inner.use_colors and not inner.usesTime()
        self._access = inner._fmt if plain else None

    def format(self, record: logging.LogRecord) -> str:
        if self._access is not None and _masked_whole(record):
            text = self._access_line(record, self._access)
        else:
            text = self.inner.format(record)
            if not _masked_whole(record):
                text = redact(text)  # a traceback may quote an id number
        rid = request_id.get()
        return text if rid is None else f"{text} request_id={rid}"

    @staticmethod
    def _access_line(record: logging.LogRecord, fmt: str) -> str:
        """uvicorn's AccessFormatter(use_colors=False).format(record), without its copies."""
        client_addr, method, full_path, http_version, status_code = cast(tuple[Any, ...], record.args)
        record.message = record.getMessage()  # as logging.Formatter.format sets it
        status = int(status_code)
        levelname = record.levelname
        values = dict(record.__dict__)
        values["levelprefix"] = f"{levelname}:{' ' * (8 - len(levelname))}"
        values["client_addr"] = client_addr
        values["request_line"] = f"{method} {full_path} HTTP/{http_version}"
        values["status_code"] = _STATUS_TEXT.get(status) or f"{status} "
        return fmt % values


# uvicorn's own access format (uvicorn.config.LOGGING_CONFIG), the one `AccessLines` writes.
UVICORN_ACCESS = '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s'


class AccessLines:
    """Access lines written without a log record, gathered and written once per event-loop turn.

    `idguard serve`'s HTTP protocol answers a plain single check itself (api/server.py); its
    access line through `logging` cost ~20 us of the loop's ~75 (the record, the caller's frame,
    the filters, the lock, and a write and flush of its own: issue 14). When the access logger
    is configured as `idguard serve` configures it (uvicorn's: one plain `StreamHandler`, its
    format uvicorn's without colours or time, wrapped by `WithRequestId`; only the masking
    filter; not propagating), the line is the text that handler would write, character for
    character (tests/unit/test_access_line.py), masked the same way, and the lines of one turn go
    out in one write and flush under the handler's lock, once the loop has served the turn's
    ready requests. Any other configuration (JSON lines, a file handler, more filters or
    handlers, the level above INFO) returns False: the caller logs the line as a record.

    What a crash can lose is the lines of the turn being served: never a check's record (the
    check log's journal holds that), and the access log was never synced either."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self._lock = threading.Lock()
        self._lines: list[str] = []
        self._handler: logging.StreamHandler[Any] | None = None
        self._on: asyncio.AbstractEventLoop | None = None  # the loop whose turn will flush them

    def _direct_handler(self) -> logging.StreamHandler[Any] | None:
        """The access logger's one handler when this writer may stand in for it, else None."""
        logger = self.logger
        if logger.disabled or logger.propagate or not logger.isEnabledFor(logging.INFO):
            return None
        handlers = logger.handlers
        if len(handlers) != 1:
            return None
        handler = handlers[0]
        if type(handler) is not logging.StreamHandler or handler.level > logging.INFO:
            return None
        formatter = handler.formatter
        if not isinstance(formatter, WithRequestId) or formatter._access != UVICORN_ACCESS:
            return None
        filters = [*logger.filters, *handler.filters]
        if not all(type(f) is MaskIdNumbers for f in filters):
            return None
        return handler

    def write(
        self,
        loop: asyncio.AbstractEventLoop,
        client: str,
        method: str,
        path: str,
        http_version: str,
        status: int,
        rid: str | None,
    ) -> bool:
        """Gather the access line of one answer for this loop turn's write; False (nothing
        gathered) when the logger is not configured for it. The first line of a turn checks the
        configuration and asks `loop` to flush at the end of the turn; lines gathered for a
        loop that closed before its turn ended go out with the next loop's."""
        status_text = _STATUS_TEXT.get(status) or f"{status} "
        text = f'INFO:     {redact(client)} - "{redact(method)} {redact(path)} HTTP/{redact(http_version)}" {status_text}'
        with self._lock:
            if self._on is not loop:
                handler = self._direct_handler()
                if handler is None:
                    return False
                self._handler, self._on = handler, loop
                loop.call_soon(self.flush)
            self._lines.append(text if rid is None else f"{text} request_id={rid}")
        return True

    def flush(self) -> None:
        """Write the gathered lines as the handler writes records (its terminator, its lock)."""
        with self._lock:
            lines, handler = self._lines, self._handler
            self._lines, self._on = [], None
        if not lines or handler is None:
            return
        terminator = handler.terminator
        try:
            with handler.lock or contextlib.nullcontext():
                handler.stream.write(terminator.join(lines) + terminator)
                handler.flush()
        except Exception:  # as logging.Handler.handleError: the server goes on
            if logging.raiseExceptions and sys.stderr:
                sys.stderr.write("--- Logging error (idguard access lines) ---\n")
                traceback.print_exc(file=sys.stderr)


def _ours(handler: logging.Handler) -> bool:
    # pytest's capturing handlers keep their own format (tests read them).
    return not type(handler).__module__.startswith("_pytest")


def use_format(kind: str) -> None:
    """Write every line (idguard's, uvicorn's and its access log) as `kind`: "json" or "text"
    (idempotent; switching back restores each handler's own formatter)."""
    handlers = list(logging.getLogger().handlers)
    for name in LOGGERS:
        handlers.extend(logging.getLogger(name).handlers)
    for handler in dict.fromkeys(handlers):
        if not _ours(handler):
            continue
        current = handler.formatter
        original = getattr(handler, "_idguard_original_formatter", current)
        handler._idguard_original_formatter = original  # type: ignore[attr-defined]
        if kind == "json":
            if not isinstance(current, JsonFormatter):
                handler.setFormatter(JsonFormatter())
        elif not isinstance(current, WithRequestId):
            handler.setFormatter(WithRequestId(original or logging.Formatter()))
