"""Logging that never carries a full id number (DOMAIN.md: mask as 110105********002X).

Paths such as /api/v1/persons/{id_number} and query strings reach the access log; the filter
rewrites every 18-character id-number-shaped token in a record's message and arguments.
"""

from __future__ import annotations

import logging
import re

from idguard.core.idnumber import mask

_ID_NUMBER = re.compile(r"(?<![0-9A-Za-z])[1-9]\d{16}[\dXx](?![0-9A-Za-z])")


def redact(text: str) -> str:
    return _ID_NUMBER.sub(lambda m: mask(m.group(0)), text)


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
