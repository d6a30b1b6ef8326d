"""Personal API tokens (scope review) and the cache of verified HTTP Basic
credentials, against a real PostgreSQL, through the console and the JSON API."""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from moderation.config import load_settings
from moderation.errors import Conflict, RequestError
from moderation.storage import tokens, users
from moderation.storage.models import ApiToken, AuditRecord, User, utcnow
from tests.support.factories import make_item
from tests.support.web import add_user, login, make_app

PW = "correct horse battery"
SECRET = re.compile(r"mod_[A-Za-z0-9_-]{40,}")


def app_with(db_url: str, **overrides: Any) -> Any:
    values: dict[str, Any] = dict(database_url=db_url, secret_key="test-secret", dev_mode=True)
    values.update(overrides)
    return make_app(load_settings({}, **values), send_decision=lambda k, v: None)


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def basic(username: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()}


def create_on_console(client: Any, csrf: str, label: str) -> str:
    """Create a token on the console's page; returns its secret, shown once."""
    resp = client.post("/tokens", data={"csrf_token": csrf, "label": label})
    assert resp.status_code == 200 and resp.headers["Cache-Control"].startswith("no-store")
    (secret,) = set(SECRET.findall(resp.get_data(as_text=True)))
    return str(secret)


def queue_items(sessions: Any, n: int) -> None:
    with sessions() as s:
        s.add_all([make_item(i) for i in range(1, n + 1)])
        s.commit()


def test_a_moderator_creates_a_token_on_the_console_then_claims_and_decides_with_it(db_url, sessions):
    add_user(sessions, "kim")
    queue_items(sessions, 2)
    app = app_with(db_url)
    console = app.test_client()
    csrf = login(console, "kim", PW)
    assert "API tokens" in console.get("/").get_data(as_text=True)
    secret = create_on_console(console, csrf, "laptop")
    page = console.get("/tokens").get_data(as_text=True)
    assert secret not in page and "kim/laptop" in page  # shown once only
    with sessions() as s:
        row = s.scalars(select(ApiToken)).one()
        assert row.token_hash == hashlib.sha256(secret.encode()).hexdigest() and secret not in repr(row)
        assert row.scopes == ["review"] and row.user_id == users.get_user(s, "kim").id

    api = app.test_client()  # no cookie: the token alone
    me = api.get("/api/v1/me", headers=bearer(secret)).get_json()
    assert me == {"username": "kim", "role": "moderator"}
    claimed = api.post("/api/v1/queue/claim", json={}, headers=bearer(secret))
    assert claimed.status_code == 200
    item_id = claimed.get_json()["id"]
    assert api.get(f"/api/v1/items/{item_id}", headers=bearer(secret)).status_code == 200
    form = api.post(f"/api/v1/items/{item_id}/decision", data={"action": "allow"}, headers=bearer(secret))
    assert form.status_code == 415  # a cross-site form can never ride on it
    decided = api.post(
        f"/api/v1/items/{item_id}/decision",
        json={"action": "allow", "reason": "not_violating"},
        headers=bearer(secret),
    )
    assert decided.status_code == 201 and decided.get_json()["moderator"] == "kim"
    with sessions() as s:
        actors = set(s.scalars(select(AuditRecord.actor).where(AuditRecord.item_id == item_id)))
        assert actors == {"kim"}  # the token acts as kim
        assert s.scalars(select(ApiToken)).one().last_used_at is not None
    # Console pages never take a token.
    assert api.get("/", headers=bearer(secret)).status_code == 302


@pytest.mark.parametrize("change", ["password", "deactivate", "revoke"])
def test_a_personal_token_stops_with_a_new_password_a_deactivation_or_a_revocation(db_url, sessions, change):
    add_user(sessions, "kim")
    app = app_with(db_url)
    console = app.test_client()
    csrf = login(console, "kim", PW)
    secret = create_on_console(console, csrf, "script")
    api = app.test_client()
    assert api.get("/api/v1/me", headers=bearer(secret)).status_code == 200
    if change == "revoke":
        page = console.get("/tokens").get_data(as_text=True)
        (token_id,) = re.findall(r'action="/tokens/(\d+)/revoke"', page)
        assert console.post(f"/tokens/{token_id}/revoke", data={"csrf_token": csrf}).status_code == 302
    else:
        with sessions() as s:
            user = users.get_user(s, "kim")
            if change == "password":
                users.set_password(s, user, "a brand new password")
            else:
                users.set_active(s, user, False)
            s.commit()
    resp = api.get("/api/v1/me", headers=bearer(secret))
    assert resp.status_code == 401 and "revoked" in resp.get_json()["error"]
    with sessions() as s:
        assert s.scalars(select(ApiToken)).one().revoked_at is not None
        if change == "deactivate":  # reactivating revives no token
            users.set_active(s, users.get_user(s, "kim"), True)
            s.commit()
    assert api.get("/api/v1/me", headers=bearer(secret)).status_code == 401


def test_nobody_revokes_or_lists_another_users_tokens(db_url, sessions):
    add_user(sessions, "kim")
    add_user(sessions, "lou")
    app = app_with(db_url)
    kim, lou = app.test_client(), app.test_client()
    kim_csrf, lou_csrf = login(kim, "kim", PW), login(lou, "lou", PW)
    secret = create_on_console(kim, kim_csrf, "script")
    with sessions() as s:
        token_id = s.scalars(select(ApiToken.id)).one()
    assert "kim/script" not in lou.get("/tokens").get_data(as_text=True)
    resp = lou.post(f"/tokens/{token_id}/revoke", data={"csrf_token": lou_csrf}, follow_redirects=True)
    assert "no such token of yours" in resp.get_data(as_text=True)
    assert app.test_client().get("/api/v1/me", headers=bearer(secret)).status_code == 200


def test_a_personal_token_acts_with_its_users_current_role_and_reaches_nothing_else(db_url, sessions):
    add_user(sessions, "sue", role="senior")
    with sessions() as s:
        sue = users.get_user(s, "sue")
        secret = tokens.create_token(s, "sue/dash", [tokens.REVIEW], created_by="admin", user=sue)
        s.commit()
    api = app_with(db_url).test_client()
    assert api.get("/api/v1/dashboard", headers=bearer(secret)).status_code == 200
    for method, path in (
        ("GET", "/api/v1/banks"),
        ("POST", "/api/v1/banks"),
        ("POST", "/api/v1/submissions?bank=x"),
        ("POST", "/api/v1/appeals"),
    ):
        resp = api.open(path, method=method, json={}, headers=bearer(secret))
        assert resp.status_code == 403, (method, path)
    with sessions() as s:  # demoted: the token has the new role at once
        users.get_user(s, "sue").role = "moderator"
        s.commit()
    assert api.get("/api/v1/dashboard", headers=bearer(secret)).status_code == 403


def test_personal_tokens_are_review_only_bound_to_an_active_user_and_limited(db_url, sessions):
    add_user(sessions, "kim")
    with sessions() as s:
        kim = users.get_user(s, "kim")
        with pytest.raises(RequestError, match="acts as a user"):
            tokens.create_token(s, "x", [tokens.REVIEW], created_by="t")
        with pytest.raises(RequestError, match="review scope only"):
            tokens.create_token(s, "x", [tokens.REVIEW, "banks:read"], created_by="t", user=kim)
        for n in range(tokens.MAX_PERSONAL_TOKENS):
            tokens.create_token(s, f"kim/{n}", [tokens.REVIEW], created_by="t", user=kim)
        with pytest.raises(Conflict, match="revoke one first"):
            tokens.create_token(s, "kim/one-more", [tokens.REVIEW], created_by="t", user=kim)
        kim.active = False
        with pytest.raises(RequestError, match="deactivated"):
            tokens.create_token(s, "kim/late", [tokens.REVIEW], created_by="t", user=kim)


# -- HTTP Basic: verified once, then remembered ------------------------------------------
@pytest.fixture
def password_checks(monkeypatch: Any) -> list[str]:
    checks: list[str] = []
    real = users.check_password_hash

    def counting(pwhash: str, password: str) -> bool:
        checks.append(password)
        return real(pwhash, password)

    monkeypatch.setattr(users, "check_password_hash", counting)
    return checks


def test_basic_credentials_are_hashed_once_then_remembered_until_they_change(
    db_url, sessions, password_checks
):
    add_user(sessions, "kim")
    c = app_with(db_url, login_attempts_per_minute=100).test_client()
    for _ in range(5):
        assert c.get("/api/v1/me", headers=basic("kim", PW)).status_code == 200
    assert password_checks == [PW]  # one scrypt check for five requests
    for _ in range(3):  # failures are never remembered: each one is checked (and counted)
        assert c.get("/api/v1/me", headers=basic("kim", "wrong password")).status_code == 401
    assert password_checks == [PW] + ["wrong password"] * 3
    with sessions() as s:  # a logout (a new session version) forgets it: checked once more
        users.get_user(s, "kim").session_version += 1
        s.commit()
    assert c.get("/api/v1/me", headers=basic("kim", PW)).status_code == 200
    assert c.get("/api/v1/me", headers=basic("kim", PW)).status_code == 200
    assert password_checks.count(PW) == 2
    with sessions() as s:  # a new password: the old one is refused at once
        users.set_password(s, users.get_user(s, "kim"), "a brand new password")
        s.commit()
    assert c.get("/api/v1/me", headers=basic("kim", PW)).status_code == 401
    with sessions() as s:
        users.set_active(s, users.get_user(s, "kim"), False)
        s.commit()
    assert c.get("/api/v1/me", headers=basic("kim", "a brand new password")).status_code == 401


def test_the_basic_cache_expires_and_can_be_turned_off(db_url, sessions, password_checks):
    add_user(sessions, "kim")
    app = app_with(db_url, basic_auth_cache_seconds=0)
    c = app.test_client()
    for _ in range(3):
        assert c.get("/api/v1/me", headers=basic("kim", PW)).status_code == 200
    assert password_checks == [PW] * 3
    cached = app_with(db_url, basic_auth_cache_seconds=60)
    cache = cached.extensions["moderation.basic_cache"]
    c = cached.test_client()
    assert c.get("/api/v1/me", headers=basic("kim", PW)).status_code == 200
    assert len(cache) == 1
    key = next(iter(cache._entries))
    assert PW.encode() not in key and b"kim" not in key  # an HMAC, under a key drawn at start
    cache._entries[key] = cache._entries[key].__class__(
        cache._entries[key].user_id, cache._entries[key].session_version, 0.0
    )  # expired
    assert c.get("/api/v1/me", headers=basic("kim", PW)).status_code == 200
    assert password_checks == [PW] * 5


def test_a_personal_token_of_a_user_who_left_is_refused(db_url, sessions):
    add_user(sessions, "kim")
    with sessions() as s:
        kim = users.get_user(s, "kim")
        secret = tokens.create_token(s, "kim/x", [tokens.REVIEW], created_by="admin", user=kim)
        # Deactivated behind the application's back (no revocation): still refused.
        s.execute(User.__table__.update().values(active=False))
        s.commit()
    api = app_with(db_url).test_client()
    assert api.get("/api/v1/me", headers=bearer(secret)).status_code == 401
    with sessions() as s:
        token = s.scalars(select(ApiToken)).one()
        assert token.revoked_at is None and token.last_used_at is None
        assert token.created_at > utcnow() - timedelta(minutes=5)
