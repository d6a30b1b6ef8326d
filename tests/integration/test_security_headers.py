"""Security headers on every response (pages, JSON, media, errors), CSRF on
every state-changing route, and uploader- or submitter-supplied text escaped
on every page that shows it. Routes come from test_authz_matrix.ROUTES, which
is checked against the app's url_map."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import func, select

from moderation.domain import EntrySpec, EntryStatus
from moderation.storage import banks, tokens
from moderation.storage.models import ApiToken, AuditRecord, Bank, BankEntry, Decision, Item, LoginAttempt
from tests.integration.test_authz_matrix import (
    API,
    ROUTES,
    build_world,
    request_as,
    reset_claim,
    session_client,
    signed_media_path,
)

SAFE = {"GET", "HEAD", "OPTIONS"}
SCRIPT = "<script>alert(1)</script>"
ATTR = '"><img src=x onerror=alert(1)>'
PAYLOADS = (SCRIPT, ATTR)


def assert_security_headers(resp: Any, where: str) -> None:
    h = resp.headers
    csp = h.get("Content-Security-Policy", "")
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp, where
    assert "unsafe-inline" not in csp, where
    assert h.get("X-Content-Type-Options") == "nosniff", where
    assert h.get("Referrer-Policy") == "no-referrer", where
    assert h.get("X-Frame-Options") == "DENY", where
    if (
        where.split()[1].startswith(API)
        or "/media" in where
        or resp.mimetype.startswith(("image/", "video/"))
    ):
        assert "no-store" in h.get("Cache-Control", ""), where


@pytest.fixture
def world(db_url, sessions):
    return build_world(db_url, sessions)


# -- headers ------------------------------------------------------------------------
@pytest.mark.parametrize("caller", ["anonymous", "admin", "moderator", "banks:write", "hashes:submit"])
def test_every_route_sends_the_security_headers(world, caller):
    for (_endpoint, method), route in sorted(ROUTES.items()):
        reset_claim(world)
        resp = request_as(world, caller, method, route)
        assert_security_headers(resp, f"{method} {route.path} as {caller} -> {resp.status_code}")
        if resp.status_code != 200 or route.path.startswith("/static/"):
            continue
        if route.path.startswith(API) and "/media" not in route.path:
            assert resp.mimetype == "application/json", route.path
        if resp.mimetype == "text/html":
            assert "no-store" in resp.headers["Cache-Control"]  # pages show private data too


def test_media_responses_are_private_and_never_cached(world):
    client, _ = session_client(world, "mo")
    for path in (signed_media_path(world, "mo"), "/api/v1/items/1/media"):
        resp = client.get(path)
        assert resp.status_code == 200 and resp.mimetype == "image/jpeg"
        assert "no-store" in resp.headers["Cache-Control"]
        assert resp.headers["Cross-Origin-Resource-Policy"] == "same-origin"  # no embedding elsewhere


def test_error_responses_send_the_headers_too(world):
    app = world.app
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @app.get("/boom")
    def boom() -> Any:
        raise RuntimeError("a bug")

    @app.get("/api/v1/boom")
    def api_boom() -> Any:
        raise RuntimeError("a bug")

    c = app.test_client()
    admin, csrf = session_client(world, "ada")
    cases = [
        ("GET /nope", c.get("/nope"), 404),
        ("GET /api/v1/nope", c.get("/api/v1/nope"), 404),
        ("PUT /login", c.put("/login"), 405),
        ("DELETE /api/v1/banks", c.delete("/api/v1/banks"), 405),
        ("GET /boom", c.get("/boom"), 500),
        ("GET /api/v1/boom", c.get("/api/v1/boom"), 500),
        ("POST /next", admin.post("/next"), 400),
        (
            "POST /api/v1/banks",
            admin.post(
                "/api/v1/banks",
                data="x" * (2 << 20),
                headers={"X-CSRF-Token": csrf},
                content_type="application/json",
            ),
            413,
        ),
        ("GET /admin/banks/nope", admin.get("/admin/banks/nope"), 404),
    ]
    for where, resp, status in cases:
        assert resp.status_code == status, where
        assert_security_headers(resp, where)
        assert "no-store" in resp.headers["Cache-Control"], where
        if "/api/" in where:
            assert resp.is_json and "error" in resp.get_json(), where
        assert "a bug" not in resp.get_data(as_text=True), where  # no internals


# -- CSRF -------------------------------------------------------------------------------
def _snapshot(sessions: Any) -> tuple[Any, ...]:
    with sessions() as s:
        return (
            s.execute(
                select(Bank.name, Bank.action, Bank.description, Bank.pdq_distance, Bank.enabled)
            ).all(),
            s.execute(select(BankEntry.id, BankEntry.status).order_by(BankEntry.id)).all(),
            s.execute(select(ApiToken.name, ApiToken.revoked_at).order_by(ApiToken.id)).all(),
            s.execute(select(Item.id, Item.state, Item.claimed_by)).all(),
            s.scalar(select(func.count()).select_from(Decision)),
            s.scalar(select(func.count()).select_from(AuditRecord)),
            s.scalar(select(func.count()).select_from(LoginAttempt)),
        )


UNSAFE = sorted(key for key in ROUTES if key[1] not in SAFE)


def test_the_unsafe_routes_are_the_expected_ones():
    assert len(UNSAFE) == 36  # grows with every new form or write endpoint: each gets the test below
    assert {method for _, method in UNSAFE} == {"POST", "PATCH"}


@pytest.mark.parametrize("caller", ["admin", "moderator"])
def test_every_state_changing_route_refuses_a_session_without_the_csrf_token(world, sessions, caller):
    for endpoint, method in UNSAFE:
        route = ROUTES[(endpoint, method)]
        if caller == "moderator" and route.access != "console" and route.access != "queue_api":
            continue  # routes a moderator may not call at all: the admin run covers them
        reset_claim(world)
        before = _snapshot(sessions)
        resp = request_as(world, caller, method, route, csrf=False)
        where = f"{method} {route.path} ({endpoint}) as {caller}"
        assert resp.status_code == 400, where
        assert "CSRF" in resp.get_data(as_text=True), where
        assert _snapshot(sessions) == before, f"{where} changed something"
        client, _ = session_client(world, {"admin": "ada", "moderator": "mo"}[caller])
        path = route.path.format(eid=world.entry_id)
        forged = {"X-CSRF-Token": "forged"}
        if path.startswith(API):
            resp = client.open(path, method=method, headers=forged, json=route.body or {})
        else:
            resp = client.open(path, method=method, data={**(route.body or {}), "csrf_token": "forged"})
        assert resp.status_code == 400, f"{where}, forged token"
        assert _snapshot(sessions) == before, f"{where}, forged token, changed something"


def test_every_post_form_on_every_page_carries_the_csrf_token(world, sessions):
    _quarantine_an_entry(sessions)
    client, csrf = session_client(world, "ada")
    with sessions() as s:
        s.execute(Item.__table__.update().values(claimed_by=None, state="pending"))
        s.commit()
    client.post("/next", data={"csrf_token": csrf})  # the admin holds item 1: decision forms shown
    pages = ["/", "/items/1", "/admin/banks", "/admin/banks/alpha", "/admin/quarantine", "/admin/tokens"]
    pages += ["/preferences", "/break", "/groups/1", "/queues", "/dashboard", "/audit", "/evidence"]
    forms = 0
    for page in pages:
        html = client.get(page).get_data(as_text=True)
        for form in re.findall(r"<form[^>]*>.*?</form>", html, re.S):
            if 'method="post"' in form:
                forms += 1
                assert f'name="csrf_token" value="{csrf}"' in form, (page, form[:200])
    assert forms >= 10


# -- escaping ---------------------------------------------------------------------------
def _quarantine_an_entry(sessions: Any) -> None:
    with sessions() as s:
        bank = banks.get_bank(s, "alpha")
        entry = s.scalars(
            select(BankEntry).where(BankEntry.bank_id == bank.id).order_by(BankEntry.id.desc())
        ).first()
        assert entry is not None
        banks.set_status(s, bank, [entry], EntryStatus.QUARANTINED, actor=ATTR, reason=SCRIPT)
        s.commit()


def _seed_hostile_text(sessions: Any) -> None:
    with sessions() as s:
        item = s.get(Item, 1)
        assert item is not None
        item.content_id, item.uploader_id, item.media_type = SCRIPT, ATTR, SCRIPT
        item.event = {"title": SCRIPT, "description": ATTR}
        item.model_version = ATTR
        item.model_scores = [{"model": SCRIPT, "score": 0.5, "version": ATTR}]
        item.regions = [{"label": ATTR + "'", "score": 0.9, "x": 0.1, "y": 0.1, "w": 0.2, "h": 0.2}]
        item.matches = [{"bank": SCRIPT, "bank_action": ATTR, "entry_id": 1, "signal": ATTR, "distance": 3}]
        bank = banks.get_bank(s, "alpha")
        banks.update_bank(s, bank, actor="test", description=ATTR + SCRIPT)
        banks.add_entries(
            s,
            bank,
            [EntrySpec("md5", "f" * 32, case_id=SCRIPT, source_ref=ATTR, note=ATTR + SCRIPT)],
            added_by=SCRIPT,
        )
        tokens.create_token(s, ATTR, ["banks:read"], created_by=SCRIPT)
        s.commit()
    _quarantine_an_entry(sessions)


def test_supplied_text_is_escaped_on_every_page_that_shows_it(world, sessions):
    _seed_hostile_text(sessions)
    client, csrf = session_client(world, "ada")
    # A flash message that repeats what was typed, and a 404 page that names it.
    flashed = client.post(
        "/admin/banks", data={"csrf_token": csrf, "name": SCRIPT, "action": "review"}, follow_redirects=True
    )
    pages = {
        "flash": flashed,
        "404": client.get("/admin/banks/" + ATTR),
        **{p: client.get(p) for p in ("/", "/items/1", "/admin/banks", "/admin/banks/alpha")},
        **{p: client.get(p) for p in ("/admin/quarantine", "/admin/tokens")},
    }
    shown = {p: r.get_data(as_text=True) for p, r in pages.items()}
    for page, html in shown.items():
        assert pages[page].mimetype == "text/html", page
        for payload in PAYLOADS:
            assert payload not in html, f"{page} shows {payload!r} unescaped"
        assert "<img src=x" not in html and "<script>alert" not in html, page
    escaped_script = "&lt;script&gt;alert(1)&lt;/script&gt;"
    escaped_attr = "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;"
    must_show = {
        "/items/1": (escaped_script, escaped_attr),  # content id, uploader, type, models, matches
        "/admin/banks": (escaped_attr + escaped_script,),  # description
        "/admin/banks/alpha": (escaped_script, escaped_attr),  # case id, note, source ref, reason, actor
        "/admin/quarantine": (escaped_script, escaped_attr),
        "/admin/tokens": (escaped_attr, escaped_script),  # token name, creator
        "flash": (escaped_script,),
        "404": (escaped_attr,),
    }
    for page, fragments in must_show.items():
        for fragment in fragments:
            assert fragment in shown[page], f"{page} lacks {fragment!r}"
    # The regions ride in a single-quoted attribute as JSON: no quote may end it early.
    regions = re.search(r"data-regions='([^']*)'", shown["/items/1"])
    assert regions and "\\u0027" in regions.group(1) and "<" not in regions.group(1)


def test_the_json_api_returns_supplied_text_as_json_only(world, sessions):
    _seed_hostile_text(sessions)
    client, _ = session_client(world, "ada")
    for path in ("/api/v1/items/1", "/api/v1/banks/alpha/entries", "/api/v1/banks/quarantined"):
        resp = client.get(path)
        assert resp.status_code == 200 and resp.mimetype == "application/json", path
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
    item = client.get("/api/v1/items/1").get_json()
    assert (item["content_id"], item["uploader_id"]) == (SCRIPT, ATTR)  # data, returned as it is


def test_a_csrf_token_with_odd_characters_is_refused_not_a_500(world):
    client, csrf = session_client(world, "ada")
    for forged in ("é" * 40, csrf + "\u2603", "\x00"):
        assert client.post("/next", data={"csrf_token": forged}).status_code == 400
        resp = client.post(
            "/api/v1/queue/claim", json={}, headers={"X-CSRF-Token": forged.encode().decode("latin-1")}
        )
        assert resp.status_code == 400 and resp.is_json


def _seed_hostile_review_history(world: Any, sessions: Any) -> None:
    """Item 1 with hostile content id, uploader, report reason and group key,
    removed with a hostile note (evidence kept, put under a hold with a hostile
    reason), appealed with a hostile statement, and carrying a hostile four-eyes
    first review; claimed by the admin again."""
    _seed_hostile_text(sessions)
    with sessions() as s:
        item = s.get(Item, 1)
        assert item is not None
        item.event = {"report_reason": SCRIPT + ATTR}
        s.commit()
    reset_claim(world, "ada")
    client, csrf = session_client(world, "ada")
    note = SCRIPT + ATTR
    decided = client.post(
        "/items/1/decide", data={"csrf_token": csrf, "action": "remove", "reason": "ncii", "note": note}
    )
    assert decided.status_code == 302
    held = client.post("/evidence/1/hold", data={"csrf_token": csrf, "legal_hold": "on", "reason": note})
    assert held.status_code == 302
    appeal = {"appeal_id": ATTR, "item_id": 1, "statement": note, "submitted_by": SCRIPT}
    opened = client.post("/api/v1/appeals", json=appeal, headers={"X-CSRF-Token": csrf})
    assert opened.status_code == 201, opened.get_data(as_text=True)
    with sessions() as s:
        item = s.get(Item, 1)
        assert item is not None
        item.group_key = ATTR + SCRIPT
        second = {"user_id": 0, "moderator": ATTR, "reason": SCRIPT, "note": ATTR}
        first = {"user_id": 0, "moderator": SCRIPT, "reason": ATTR, "note": note}
        item.first_review = {**first, "second": second}
        s.commit()
    reset_claim(world, "ada")


def test_supplied_text_is_escaped_on_the_review_console_pages(world, sessions):
    _seed_hostile_review_history(world, sessions)
    client, _ = session_client(world, "ada")
    paths = ["/items/1", "/groups/1", "/dashboard", "/evidence", "/evidence/1", "/break", "/preferences"]
    paths += [f"/queues?view={v}" for v in ("waiting", "claimed", "escalated", "breached")]
    paths += ["/audit", "/audit?" + urlencode({"actor": ATTR, "action": SCRIPT}), "/audit?item=" + ATTR]
    shown = {}
    for path in paths:
        resp = client.get(path)
        assert resp.status_code in (200, 400) and resp.mimetype == "text/html", path
        shown[path] = html = resp.get_data(as_text=True)
        for payload in PAYLOADS:
            assert payload not in html, f"{path} shows {payload!r} unescaped"
        assert "<img src=x" not in html and "<script>alert" not in html, path
    escaped_script = "&lt;script&gt;alert(1)&lt;/script&gt;"
    escaped_attr = "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;"
    must_show = {
        "/items/1": (escaped_script, escaped_attr),  # appeal statement and id, first review, group key
        "/groups/1": (escaped_attr,),  # uploader, group key
        "/evidence": (escaped_script,),  # content id, hold reason
        "/evidence/1": (escaped_script, escaped_attr),  # manifest, note, custody details
        "/queues?view=claimed": (escaped_script,),  # report reason
        "/audit": (escaped_script, escaped_attr),  # notes, statements in the details
    }
    for path, fragments in must_show.items():
        for fragment in fragments:
            assert fragment in shown[path], f"{path} lacks {fragment!r}"
