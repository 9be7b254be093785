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
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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


@dataclass
class GuardedPage:
    """A page whose context aborts every request to a host other than the test server's (data:
    URLs aside), noting each in `blocked`; every failed request and console error is in `failed`."""

    page: Any
    blocked: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def problems(self, where: str, *, axe: bool = True, axe_where: str | None = None) -> list[str]:
        """A line for each request blocked, each request failed or console error, and (with `axe`)
        each serious or critical axe-core violation of the page as it stands; `where` heads the
        lines (`axe_where`, when given, the axe-core ones)."""
        found = [
            f"{where}: {what} {item}"
            for what, items in (("blocked", self.blocked), ("failed", self.failed))
            for item in items
        ]
        if axe:
            for violation in _axe().run(self.page).response["violations"]:
                if violation["impact"] in ("serious", "critical"):
                    found.append(f"{axe_where or where}: axe {violation['id']}: {violation['help']}")
        return found


@cache
def _axe() -> Any:
    from axe_playwright_python.sync_playwright import Axe  # type: ignore[import-untyped]

    return Axe()


@contextmanager
def guarded_page(chromium: Any, server: Server) -> Iterator[GuardedPage]:
    """A new page in a context of its own (zh-CN) where every other host is out of reach; the
    context is closed at the end."""
    own = urlsplit(server.url).netloc
    ctx = chromium.new_context(locale="zh-CN")
    try:
        blocked: list[str] = []

        def route(r: Any) -> None:
            if urlsplit(r.request.url).netloc != own and not r.request.url.startswith("data:"):
                blocked.append(r.request.url)
                r.abort()
            else:
                r.continue_()

        ctx.route("**/*", route)
        guarded = GuardedPage(ctx.new_page(), blocked)
        guarded.page.on("requestfailed", lambda req: guarded.failed.append(req.url))
        guarded.page.on(
            "console", lambda msg: guarded.failed.append(msg.text) if msg.type == "error" else None
        )
        yield guarded
    finally:
        ctx.close()
