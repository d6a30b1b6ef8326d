"""Where the web role's metrics are served: on ``METRICS_HOST``:``WEB_METRICS_PORT``
for the monitoring system, never to anyone on the console's port (they include
the depth of the restricted queue of suspected minors), unless a bearer of
``METRICS_TOKEN`` asks there."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from moderation import runtime
from moderation.config import load_settings
from moderation.embedded import free_port
from moderation.errors import ConfigError
from tests.support.factories import make_item
from tests.support.live_server import request as http
from tests.support.web import add_user, login, make_app

RESTRICTED = 'moderation_queue_items{priority="50",state="pending",tier="restricted"} 1.0'


def app_with(db_url: str, **overrides: Any) -> Any:
    values: dict[str, Any] = dict(database_url=db_url, secret_key="test-secret", dev_mode=True)
    values.update(overrides)
    return make_app(load_settings({}, **values))


@pytest.fixture
def restricted_item(sessions: Any) -> None:
    with sessions() as s:
        s.add(make_item(1, tier="restricted"))
        s.commit()


def test_the_console_port_serves_no_metrics(db_url, sessions, restricted_item):
    app = app_with(db_url)
    anonymous = app.test_client()
    resp = anonymous.get("/metrics")
    assert resp.status_code == 404 and b"moderation_queue_items" not in resp.get_data()
    admin = app.test_client()
    login(admin, "ada", add_user(sessions, "ada", role="admin"))
    assert admin.get("/metrics").status_code == 404  # not even for an admin: not a console page


def test_a_bearer_of_the_metrics_token_reads_them_on_the_console_port(db_url, sessions, restricted_item):
    c = app_with(db_url, metrics_token="scrape-s3cret").test_client()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic c2NyYXBlLXMzY3JldA=="}):
        resp = c.get("/metrics", headers=headers)
        assert resp.status_code == 401 and b"moderation_queue_items" not in resp.get_data(), headers
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    resp = c.get("/metrics", headers={"Authorization": "Bearer scrape-s3cret"})
    assert resp.status_code == 200 and RESTRICTED in resp.get_data(as_text=True)


def test_the_metrics_port_serves_them_and_nothing_else(db_url, sessions, restricted_item):
    port = free_port()
    settings = load_settings(
        {}, database_url=db_url, metrics_host="127.0.0.1", web_metrics_port=port, dev_mode=True
    )
    app = make_app(settings)
    server = runtime.serve_web_metrics(settings, app.extensions["moderation"].metrics)
    assert server is not None
    try:
        status, _, body = http(f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and RESTRICTED in body.decode()
        assert 'moderation_ready{role="web"} 1.0' in body.decode()
        assert http(f"http://127.0.0.1:{port}/")[0] == 404
        assert http(f"http://127.0.0.1:{port}/api/v1/me")[0] == 404  # no console here
        # Taken: start-up stops, naming the setting.
        with pytest.raises(ConfigError, match="WEB_METRICS_PORT"):
            runtime.serve_web_metrics(settings, app.extensions["moderation"].metrics)
    finally:
        server.shutdown()
        server.server_close()
    assert runtime.serve_web_metrics(settings.with_overrides(web_metrics_port=0), None) is None  # type: ignore[arg-type]


def test_the_metrics_port_binds_metrics_host_only(db_url):
    port = free_port()
    settings = load_settings({}, database_url=db_url, metrics_host="127.0.0.1", web_metrics_port=port)
    server = runtime.serve_web_metrics(settings, make_app(settings).extensions["moderation"].metrics)
    assert server is not None
    try:
        assert server.server_address[0] == "127.0.0.1"  # loopback by default: a laptop exposes nothing
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
    finally:
        server.shutdown()
        server.server_close()
