import logging

import pytest

from idguard import logs


def test_access_log_lines_carry_no_full_id_number(caplog: pytest.LogCaptureFixture) -> None:
    logs.install()
    logger = logging.getLogger("uvicorn.access")
    with caplog.at_level(logging.INFO, logger="uvicorn.access"):
        logger.info('%s - "%s %s HTTP/1.1" %d', "127.0.0.1", "GET", "/api/v1/persons/11010519491231002X", 200)
        logger.info("lookup /api/v1/found-cards/lookup?id_number=110105194912310021&name=x")
    text = caplog.text
    assert "11010519491231002X" not in text
    assert "110105194912310021" not in text
    assert "110105********002X" in text
    assert "110105********0021" in text


def test_other_numbers_are_left_alone() -> None:
    # A 32-hex chip serial or a 19-digit number is not an id number.
    assert logs.redact("card 5B7AE52858ACC00F1AED2A557E9D3FD4 seq 1234567890123456789") == (
        "card 5B7AE52858ACC00F1AED2A557E9D3FD4 seq 1234567890123456789"
    )


def test_child_loggers_are_masked_too(caplog: pytest.LogCaptureFixture) -> None:
    logs.install()
    with caplog.at_level(logging.INFO):
        logging.getLogger("idguard.verification.verifier").warning("number %s", "11010519491231002X")
    assert "11010519491231002X" not in caplog.text
