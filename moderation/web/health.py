"""Liveness, readiness and Prometheus metrics: no login required."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from moderation import readiness
from moderation.web.services import services

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify(ok=True)


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    ok, detail = readiness.database(services().sessions)
    return jsonify(ok=ok, **detail), 200 if ok else 503


@bp.get("/metrics")
def metrics() -> Response:
    return Response(generate_latest(services().metrics.registry), mimetype=CONTENT_TYPE_LATEST)
