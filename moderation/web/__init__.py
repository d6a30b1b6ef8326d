"""Flask app factory for the review console, JSON API and health endpoints."""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta
from typing import Any

from flask import Flask

from moderation.config import Settings, load_settings
from moderation.metrics import Metrics, QueueDepthCollector
from moderation.storage import queue
from moderation.storage.db import make_engine, make_sessionmaker
from moderation.web.services import DecisionPublisher, Services

log = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None,
    *,
    metrics: Metrics | None = None,
    send_decision: Any = None,
) -> Flask:
    settings = settings or load_settings()
    app = Flask(__name__)
    secret = settings.secret_key
    if not secret:
        log.warning("SECRET_KEY is not set: sessions will not survive a restart")
        secret = secrets.token_hex(32)
    app.config.update(
        SECRET_KEY=secret,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=not settings.dev_mode,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),  # a signed cookie is honoured this long at most
        MAX_CONTENT_LENGTH=1024 * 1024,
    )
    sessions = make_sessionmaker(make_engine(settings.database_url))
    metrics = metrics or Metrics()
    metrics.registry.register(QueueDepthCollector(lambda: _depth(sessions)))
    app.extensions["moderation"] = Services(
        settings=settings,
        sessions=sessions,
        metrics=metrics,
        publisher=DecisionPublisher(settings, sessions, metrics, send_decision),
    )

    from moderation.web import admin, api, auth, banks_api, console, health, security, submissions_api

    security.init_app(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(auth.bp)
    app.register_blueprint(console.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(banks_api.bp)
    app.register_blueprint(submissions_api.bp)
    app.register_blueprint(admin.bp)
    return app


def _depth(sessions: Any) -> Any:
    with sessions() as session:
        return queue.queue_depth(session)
