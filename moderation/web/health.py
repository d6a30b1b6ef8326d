"""Liveness and readiness (no login required) and Prometheus metrics.

The web role's metrics (queue depth by tier, the restricted queue of suspected
minors included) are for the monitoring system only: it scrapes them on
``METRICS_HOST``:``WEB_METRICS_PORT`` (runtime.serve_web_metrics), a port the
console's users never reach. On the console's own port, ``/metrics`` answers
only a bearer of ``METRICS_TOKEN`` (for a monitoring system that can reach
nothing else); without that setting it is not there (404).
"""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, abort, jsonify, request
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
    expected = services().settings.metrics_token
    if not expected:
        abort(404)
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected.encode()):
        resp = Response("metrics need Authorization: Bearer <METRICS_TOKEN>\n", 401, mimetype="text/plain")
        resp.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return resp
    return Response(generate_latest(services().metrics.registry), mimetype=CONTENT_TYPE_LATEST)
