"""Logging that never carries a full id number (DOMAIN.md: mask as 110105********002X).

Paths such as /api/v1/persons/{id_number} and query strings reach the access log; the filter
rewrites every 18-character id-number-shaped token in a record's message and arguments, in
whatever form it was sent: plain, percent-encoded (uvicorn logs the query string as sent and the
path re-encoded), in full-width or other digits (core.idnumber.occurrences finds them all). The
mask is always of the number in ASCII: `110105********002X`.
"""

from __future__ import annotations

import logging
import re

from idguard.core.idnumber import mask, occurrences

# A name in a query string (the deprecated GET form of the public found-card lookup) has no shape
# to recognise: its value is dropped from any record that shows that path.
_NAMED_QUERIES = re.compile(r"(/api/v1/found-cards/lookup\?[^\s\"']*?\bname=)(?!-(?:[&\s\"']|$))[^&\s\"']*")


def redact(text: str) -> str:
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
    def filter(self, record: logging.LogRecord) -> bool:
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
