"""Fixtures for the browser tests: one headless Chromium per module, and per test a
fresh cookie jar, the app on its own loopback port and a ``Console`` that saves
screenshots. Without Chromium and chromedriver the tests are skipped; with
CI=true they fail instead."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from moderation.config import load_settings
from moderation.metrics import Metrics
from moderation.web import create_app
from tests.conftest import _unavailable
from tests.support.browser import (
    BrowserUnavailable,
    Console,
    LiveServer,
    artifacts_dir,
    find_chromium,
    start_chromium,
)

CALL_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    # Lets the console fixture know whether the test itself failed.
    report = yield
    if report.when == "call":
        item.stash[CALL_FAILED] = report.failed
    return report


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    try:
        driver = start_chromium(*find_chromium())
    except BrowserUnavailable as exc:
        _unavailable("headless Chromium", exc)
    yield driver
    driver.quit()


@pytest.fixture
def sent() -> list[tuple[bytes, bytes]]:
    """Decisions the console published (key, value), instead of a broker."""
    return []


@pytest.fixture
def open_console(
    chromium: Any, db_url: str, sent: list[tuple[bytes, bytes]], request: pytest.FixtureRequest
) -> Iterator[Callable[..., Console]]:
    """``open_console(**settings)`` serves the app on the test database and
    returns a Console in a browser with no cookies. Breaks are off unless asked
    for, so they do not interrupt other flows."""
    servers: list[tuple[LiveServer, Any]] = []
    consoles: list[Console] = []
    chromium.execute_cdp_cmd("Network.clearBrowserCookies", {})
    chromium.get_log("browser")  # drop what an earlier test left

    def start(**overrides: Any) -> Console:
        values: dict[str, Any] = dict(
            database_url=db_url, secret_key="browser-test", dev_mode=True, break_after_items=0
        )
        values.update(overrides)
        app = create_app(
            load_settings({}, **values),
            metrics=Metrics(CollectorRegistry()),
            send_decision=lambda key, value: sent.append((key, value)),
        )
        server = LiveServer(app)
        servers.append((server, app))
        console = Console(chromium, server.url, artifacts_dir(), request.node.name)
        if not consoles:
            console.forget_old_shots()
        consoles.append(console)
        return console

    yield start
    failed = request.node.stash.get(CALL_FAILED, False)
    errors: list[str] = []
    for console in consoles:
        if failed:
            console.shot("failed")
        errors += console.script_errors()
    chromium.get("about:blank")  # stops the page's timers before its server goes
    chromium.execute_cdp_cmd("Network.clearBrowserCookies", {})
    for server, app in servers:
        server.close()
        # The app's pooled connections would keep the next test's TRUNCATE waiting.
        app.extensions["moderation"].sessions.kw["bind"].dispose()
    if errors and not failed:
        pytest.fail("the browser logged script errors or CSP violations:\n" + "\n".join(errors))
