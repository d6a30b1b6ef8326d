"""Helpers for driving the console with Flask's test client."""

from __future__ import annotations

import re
from html import unescape
from typing import Any

from prometheus_client import CollectorRegistry

from moderation.config import Settings
from moderation.metrics import Metrics
from moderation.storage import users
from moderation.web import create_app

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_MEDIA_SRC = re.compile(r'<(?:img|video) src="([^"]+)"')


def make_app(settings: Settings, send_decision: Any = None) -> Any:
    app = create_app(settings, metrics=Metrics(CollectorRegistry()), send_decision=send_decision)
    app.config["TESTING"] = True
    return app


def add_user(
    sessions: Any, username: str, role: str = "moderator", password: str = "correct horse battery"
) -> str:
    with sessions() as s:
        users.create_user(s, username, password, role)
        s.commit()
    return password


def csrf_from(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "no CSRF token on the page"
    return match.group(1)


def login(client: Any, username: str, password: str) -> str:
    """Log in through the form; returns a CSRF token for later posts."""
    token = csrf_from(client.get("/login").get_data(as_text=True))
    resp = client.post("/login", data={"username": username, "password": password, "csrf_token": token})
    assert resp.status_code == 302, resp.get_data(as_text=True)
    return csrf_from(client.get("/").get_data(as_text=True))


def scrape_metrics(app: Any) -> str:
    """The web role's /metrics as Prometheus reads it: from the metrics port's
    app (``WEB_METRICS_PORT``), not the console's port, which has none."""
    from werkzeug.test import Client

    from moderation.runtime import metrics_only_app

    resp = Client(metrics_only_app(app.extensions["moderation"].metrics)).get("/metrics")
    assert resp.status_code == 200
    return resp.get_data(as_text=True)


def media_src(html: str) -> str:
    """The item page's media URL (its short-lived signed link), as a browser reads it."""
    match = _MEDIA_SRC.search(html)
    assert match, "no media on the page"
    return unescape(match.group(1))
