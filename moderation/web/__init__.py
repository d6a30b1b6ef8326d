"""Flask app factory for the review console, JSON API and health endpoints."""

from __future__ import annotations

import logging
import secrets
from typing import Any

from flask import Flask
from werkzeug.routing import IntegerConverter, Map

from moderation import readiness
from moderation.config import Settings, load_settings
from moderation.metrics import DatabaseCollector, Metrics
from moderation.storage.db import make_sessionmaker, role_engine
from moderation.storage.gauges import database_gauges
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
    # Every <int:...> in a URL is a database id: larger than BIGINT is no such row (404), not a 500.
    app.url_map.converters["int"] = DatabaseIdConverter
    secret = settings.secret_key
    if not secret:
        log.warning("SECRET_KEY is not set: sessions will not survive a restart")
        secret = secrets.token_hex(32)
    # Session cookie flags and lifetime: sessions.configure (via security.init_app).
    app.config.update(SECRET_KEY=secret, MAX_CONTENT_LENGTH=1024 * 1024)
    sessions = make_sessionmaker(role_engine(settings))
    metrics = metrics or Metrics()
    metrics.registry.register(DatabaseCollector(lambda: _gauges(sessions, settings)))
    metrics.readiness.add("web", lambda: readiness.database(sessions))
    app.extensions["moderation"] = Services(
        settings=settings,
        sessions=sessions,
        metrics=metrics,
        publisher=DecisionPublisher(settings, sessions, metrics, send_decision),
    )

    from moderation.web import (
        admin,
        api,
        appeals_api,
        audit_views,
        auth,
        banks_api,
        console,
        dashboard,
        health,
        outbox_admin,
        personal_tokens,
        queues,
        security,
        submissions_api,
    )
    from moderation.web import evidence as evidence_views
    from moderation.web import groups as group_views
    from moderation.web.wellbeing import bp as wellbeing_bp

    security.init_app(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(auth.bp)
    app.register_blueprint(console.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(banks_api.bp)
    app.register_blueprint(submissions_api.bp)
    app.register_blueprint(appeals_api.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(outbox_admin.bp)
    app.register_blueprint(wellbeing_bp)
    app.register_blueprint(queues.bp)
    app.register_blueprint(audit_views.bp)
    app.register_blueprint(dashboard.bp)
    app.register_blueprint(group_views.bp)
    app.register_blueprint(personal_tokens.bp)
    evidence_views.init_app(app)  # a bad EVIDENCE_KEY stops start-up here
    return app


class DatabaseIdConverter(IntegerConverter):
    def __init__(self, url_map: Map, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max", 2**63 - 1)
        super().__init__(url_map, *args, **kwargs)


def _gauges(sessions: Any, settings: Settings) -> Any:
    with sessions() as session:
        return database_gauges(session, settings.sla_near_hours)
