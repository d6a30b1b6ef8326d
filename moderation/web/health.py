"""Liveness, readiness and Prometheus metrics: no login required."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from moderation.web.services import services

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify(ok=True)


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    try:
        with services().sessions() as db:
            db.execute(text("SELECT 1"))
    except Exception as exc:
        return jsonify(ok=False, database=False, error=type(exc).__name__), 503
    return jsonify(ok=True, database=True), 200


@bp.get("/metrics")
def metrics() -> Response:
    return Response(generate_latest(services().metrics.registry), mimetype=CONTENT_TYPE_LATEST)
