"""The OpenAPI document of the JSON API (``moderation/web/openapi.json``).

Checks that the document is a valid OpenAPI 3.1 document, that it documents
exactly the routes the Flask app registers under ``/api/v1`` (same paths, same
methods), and that the app serves the file unchanged.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from openapi_spec_validator import OpenAPIV31SpecValidator, validate
from prometheus_client import CollectorRegistry

from moderation.config import load_settings
from moderation.metrics import Metrics
from moderation.web import create_app

REPO_ROOT = Path(__file__).resolve().parents[2]
SPEC_PATH = REPO_ROOT / "moderation" / "web" / "openapi.json"
API_PREFIX = "/api/v1"
SPEC_ROUTE = f"{API_PREFIX}/openapi.json"
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
# Flask adds these implicitly to every rule; they are not part of the documented API.
IMPLICIT_METHODS = {"HEAD", "OPTIONS"}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return json.loads(SPEC_PATH.read_text())  # type: ignore[no-any-return]


@pytest.fixture()
def app(tmp_path: Path) -> Flask:
    settings = load_settings({}, database_url=f"sqlite:///{tmp_path}/t.db", secret_key="x")
    return create_app(settings, metrics=Metrics(CollectorRegistry()))


def _openapi_path(rule: str) -> str:
    """Flask rule under /api/v1 -> OpenAPI path relative to the server URL."""
    assert rule.startswith(API_PREFIX)
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule[len(API_PREFIX) :])


def _app_operations(app: Flask) -> dict[str, set[str]]:
    ops: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(API_PREFIX + "/") or rule.rule == SPEC_ROUTE:
            continue
        methods = {m.lower() for m in (rule.methods or set()) - IMPLICIT_METHODS}
        ops.setdefault(_openapi_path(rule.rule), set()).update(methods)
    return ops


def _spec_operations(spec: dict[str, Any]) -> dict[str, set[str]]:
    return {path: {k for k in item if k in HTTP_METHODS} for path, item in spec["paths"].items()}


def test_document_is_valid_openapi_31(spec: dict[str, Any]) -> None:
    assert spec["openapi"].startswith("3.1")
    validate(spec, cls=OpenAPIV31SpecValidator)
    assert spec["info"]["title"] == "moderation review API"
    assert spec["info"]["version"] == "1.0.0"
    assert spec["servers"] == [{"url": API_PREFIX}]


def test_path_conversion() -> None:
    assert _openapi_path("/api/v1/items/<int:item_id>/media") == "/items/{item_id}/media"
    assert _openapi_path("/api/v1/queue/claim") == "/queue/claim"


def test_every_api_route_is_documented(app: Flask, spec: dict[str, Any]) -> None:
    app_ops = _app_operations(app)
    spec_ops = _spec_operations(spec)
    assert app_ops, "no /api/v1 routes found in the app; is the api blueprint registered?"
    undocumented = sorted(set(app_ops) - set(spec_ops))
    stale = sorted(set(spec_ops) - set(app_ops))
    assert not undocumented, f"routes missing from openapi.json: {undocumented}"
    assert not stale, f"documented paths the app does not serve: {stale}"
    for path, methods in app_ops.items():
        documented = spec_ops[path]
        assert documented == methods, f"{path}: app has {sorted(methods)}, spec has {sorted(documented)}"


def test_path_parameters_are_declared(spec: dict[str, Any]) -> None:
    params = spec["components"]["parameters"]

    def resolve(p: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in p:
            return params[p["$ref"].rsplit("/", 1)[1]]  # type: ignore[no-any-return]
        return p

    for path, item in spec["paths"].items():
        templated = set(re.findall(r"{([^}]+)}", path))
        for method in HTTP_METHODS & set(item):
            declared = {
                resolve(p)["name"]
                for p in item.get("parameters", []) + item[method].get("parameters", [])
                if resolve(p)["in"] == "path"
            }
            where = f"{method.upper()} {path}"
            assert declared == templated, f"{where}: path parameters {declared} != {templated}"


def test_operations_document_auth_failure(spec: dict[str, Any]) -> None:
    for path, item in spec["paths"].items():
        for method in HTTP_METHODS & set(item):
            responses = item[method]["responses"]
            assert "401" in responses, f"{method.upper()} {path} lacks a 401 response"


def test_served_document_matches_file(app: Flask) -> None:
    resp = app.test_client().get(SPEC_ROUTE)
    assert resp.status_code == 200
    assert resp.mimetype == "application/json"
    assert resp.get_json() == json.loads(SPEC_PATH.read_text())
