"""Browser tests: a real server (uvicorn, in a thread, on a free port of 127.0.0.1) driven by
Debian's Chromium through Playwright. No browser is ever downloaded: without /usr/bin/chromium the
tests are skipped with a message, unless CI is set, where a missing browser is a failure
(.ci/run installs the `chromium` package)."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from idguard.app import create_app
from idguard.config import Environment, Settings
from idguard.console import DemoSupport, use_demo
from idguard.demo import fingers
from tests.factories import OFFICE_A, PASSWORD, SECRET

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "console"
DEMO_ACCOUNTS = [
    ("clerk_a", PASSWORD, "clerk", OFFICE_A),
    ("supervisor", PASSWORD, "supervisor", None),
    ("auditor", PASSWORD, "auditor", None),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    app: Any


@pytest.fixture(scope="module")
def server(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("CI is set but /usr/bin/chromium is missing: .ci/run installs Debian's chromium")
        pytest.skip("/usr/bin/chromium is missing (apt-get install chromium); browser tests skipped")
    directory = tmp_path_factory.mktemp("browser")
    shutil.copyfile(sqlite_template, directory / "idguard.db")
    settings = Settings(
        database_url=f"sqlite:///{directory / 'idguard.db'}", env=Environment.DEVELOPMENT, secret_key=SECRET
    )
    app = create_app(settings)
    use_demo(
        app.state,
        DemoSupport(
            accounts=DEMO_ACCOUNTS, live_finger=fingers.live_sample, enrolment=fingers.enrolment_samples
        ),
    )
    port = _free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not running.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the test server did not start")
        time.sleep(0.05)
    yield Server(url=f"http://127.0.0.1:{port}", app=app)
    running.should_exit = True
    thread.join(timeout=15)


@pytest.fixture(scope="module")
def chromium(server: Server) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        browser.close()
