import logging

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from idguard import logs
from idguard.core import idnumber
from idguard.core.idnumber import mask
from idguard.logs import MaskIdNumbers


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


def test_every_form_of_a_number_is_masked(caplog: pytest.LogCaptureFixture) -> None:
    """Percent-encoded (as a query is logged as sent), the UTF-8 of full-width digits (as uvicorn
    re-encodes a decoded path), full-width and other digits: each masked as the number itself."""
    logs.install()
    number = "110105194912310021"
    wide = number.translate(str.maketrans("0123456789", "０１２３４５６７８９"))
    forms = {
        "percent": "".join(f"%{b:02X}" for b in number.encode()),
        "percent-lower": "".join(f"%{b:02x}" for b in number.encode()),
        "utf8-full-width": "".join(f"%{b:02X}" for b in wide.encode()),
        "full-width": wide,
        "arabic-indic": number.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")),
    }
    logger = logging.getLogger("uvicorn.access")
    with caplog.at_level(logging.INFO, logger="uvicorn.access"):
        for form in forms.values():
            logger.info('%s - "%s %s HTTP/1.1" %d', "127.0.0.1", "GET", f"/api/v1/persons/{form}?x=1", 200)
            logger.info(f"lookup /api/v1/found-cards/lookup?id_number={form}&name=%E5%BC%A0")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 * len(forms)
    for line in lines:
        assert "110105********0021" in line, line
        assert "19491231" not in line
    for name, form in forms.items():
        assert form not in caplog.text, name
    assert "&name=-" in caplog.text  # the rest of the line as it was, but the name dropped
    assert "%E5%BC%A0" not in caplog.text


def test_redact_leaves_lines_without_a_number_alone() -> None:
    for line in ("100% done", "%E5%BC%A0%E4%B8%89 %zz %", "١٢٣", "GET /api/v1/health"):
        assert logs.redact(line) == line


def test_a_number_shorter_than_18_characters_is_still_masked() -> None:
    # Text under 18 characters is left alone without a scan only when it is ASCII: a character
    # such as ⑪ folds to two digits, so nine of them write a whole number.
    assert logs.redact("⑪⑫⑬⑭⑮⑯⑰⑱⑲") == "111213********1819"
    assert logs.redact("127.0.0.1:50000") == "127.0.0.1:50000"


def test_the_name_in_a_lookup_query_never_reaches_the_log() -> None:
    from idguard.logs import redact

    line = '127.0.0.1:5000 - "GET /api/v1/found-cards/lookup?id_number=110105194912310021&name=%E7%8E%8B%E4%BA%94 HTTP/1.1" 200'
    out = redact(line)
    assert "%E7" not in out
    assert "110105194912310021" not in out
    assert '/api/v1/found-cards/lookup?id_number=110105********0021&name=- HTTP/1.1" 200' in out
    assert redact(out) == out  # applied again (handler and logger filters): unchanged
    assert redact("GET /api/v1/checks?result=valid") == "GET /api/v1/checks?result=valid"


@given(
    st.lists(
        st.sampled_from([*'0123456789Xx%aAfFgs -/?=&"', "%31", "%3", "%d", "110105199003072010"]), max_size=30
    ).map("".join)
)
@example("".join(f"%{ord(c):02X}" for c in "110105199003072010"))  # the whole number percent-encoded
@example('%s - "%s %s HTTP/%s" %d')
def test_ascii_text_without_a_percent_byte_is_scanned_as_it_would_be_folded(text: str) -> None:
    """The fast path of `occurrences` (ASCII with no `%XX`, e.g. the access log's format string
    with its `%s` and `%d`) finds exactly what folding the text first finds."""
    view, starts, ends = idnumber._folded(text)
    slow = [
        (starts[m.start()], ends[m.end() - 1], m.group().upper()) for m in idnumber._IN_TEXT.finditer(view)
    ]
    assert idnumber.occurrences(text) == slow


def test_a_record_passing_several_filters_is_masked_once_and_stays_masked() -> None:
    number = "110105199003072010"
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, "%s %s", (f"/p/{number}", 200), None
    )
    first, second = MaskIdNumbers(), MaskIdNumbers()
    assert first.filter(record)
    assert second.filter(record)
    assert number not in record.getMessage()
    assert mask(number) in record.getMessage()
