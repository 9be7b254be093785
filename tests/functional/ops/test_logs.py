"""IDGUARD_LOG_FORMAT=json: one JSON object per line, with the request's id, id numbers masked;
the text format names the request id too. (The access log, which only a real server writes,
is tested in tests/integration/test_metrics_workers.py.)"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from idguard import logs
from idguard.app import create_app
from idguard.config import Environment, Settings
from idguard.core.clock import FixedClock
from idguard.core.idnumber import mask
from tests.factories import NOW, SECRET, id_number

NUMBER = id_number(NOW.date().replace(year=1991))
log = logging.getLogger("idguard.test_ops")


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """A handler on the root logger, as a server's stderr would be."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        logs.use_format("text")


def app_logging(tmp_path: Path, log_format: str) -> FastAPI:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'logs.db'}",
        env=Environment.TEST,
        secret_key=SECRET,
        log_format=log_format,
    )
    app = create_app(settings, clock=FixedClock(NOW))

    @app.get("/logged")
    def logged() -> dict[str, str]:
        log.info("looked up %s for a caller", NUMBER)
        try:
            raise ValueError(f"bad number {NUMBER}")
        except ValueError:
            log.exception("failed on %s", NUMBER)
        return {}

    return app


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]


def test_json_lines_carry_the_request_id_and_never_a_full_id_number(
    stream: io.StringIO, tmp_path: Path
) -> None:
    app = app_logging(tmp_path, "json")
    client = TestClient(app)
    assert client.get("/logged", headers={"X-Request-Id": "req-json-1"}).status_code == 200
    log.info("outside any request")
    entries = lines(stream)  # every line is one JSON object (json.loads fails otherwise)
    looked_up = next(e for e in entries if "looked up" in str(e["message"]))
    assert looked_up["message"] == f"looked up {mask(NUMBER)} for a caller"
    assert looked_up["request_id"] == "req-json-1"
    assert looked_up["level"] == "INFO"
    assert looked_up["logger"] == "idguard.test_ops"
    assert isinstance(looked_up["pid"], int)
    assert str(looked_up["time"]).endswith("+00:00")
    failed = next(e for e in entries if "failed on" in str(e["message"]))
    assert failed["level"] == "ERROR"
    assert "ValueError" in str(failed["exception"])
    assert mask(NUMBER) in str(failed["exception"])
    outside = next(e for e in entries if e["message"] == "outside any request")
    assert outside["request_id"] is None
    assert NUMBER not in stream.getvalue()
    app.state.engine.dispose()


def test_text_lines_name_the_request_id(stream: io.StringIO, tmp_path: Path) -> None:
    app = app_logging(tmp_path, "text")
    client = TestClient(app)
    r = client.get("/logged")
    rid = r.headers["x-request-id"]
    [looked_up] = [line for line in stream.getvalue().splitlines() if "looked up" in line]
    assert looked_up.endswith(f"looked up {mask(NUMBER)} for a caller request_id={rid}")
    assert NUMBER not in stream.getvalue()
    app.state.engine.dispose()


def test_the_format_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDGUARD_LOG_FORMAT", "json")
    assert Settings().log_format == "json"
    monkeypatch.setenv("IDGUARD_LOG_FORMAT", "xml")
    with pytest.raises(ValueError, match="log_format"):
        Settings()
