"""Login security against a real PostgreSQL: account lockout (per account and
source), the per-address rate limit, one answer for every failed login, session
expiry and rotation, cookie flags, single sign-on through a trusted proxy, and
the audit trail. Concurrent bursts run against a real waitress server."""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from functools import partial
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import select

from moderation.config import load_settings
from moderation.storage import users
from moderation.storage.models import AuditRecord, LoginFailure, User, utcnow
from tests.support.live_server import live_server
from tests.support.live_server import request as http
from tests.support.web import add_user, csrf_from, make_app

PW = "correct horse battery"


def app_with(db_url: str, **overrides: Any) -> Any:
    values: dict[str, Any] = dict(database_url=db_url, secret_key="test-secret", dev_mode=True)
    values.update(overrides)
    return make_app(load_settings({}, **values))


def client_from(app: Any, address: str = "127.0.0.1") -> Any:
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def try_login(client: Any, username: str, password: str, **kw: Any) -> Any:
    token = csrf_from(client.get("/login", **kw).get_data(as_text=True))
    data = {"username": username, "password": password, "csrf_token": token}
    return client.post("/login", data=data, **kw)


def basic(username: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()}


def audit_rows(sessions_: Any, prefix: str = "") -> list[tuple[str, str, dict[str, Any]]]:
    with sessions_() as s:
        rows = s.scalars(select(AuditRecord).order_by(AuditRecord.id))
        return [(r.actor, r.action, r.details) for r in rows if r.action.startswith(prefix)]


def user_row(sessions_: Any, username: str) -> User:
    with sessions_() as s:
        return users.get_user(s, username)


def lock_rows(sessions_: Any, username: str) -> list[LoginFailure]:
    """The account's lockout rows, one per source that failed or logged in."""
    with sessions_() as s:
        user_id = users.get_user(s, username).id
        return list(s.scalars(select(LoginFailure).where(LoginFailure.user_id == user_id)))


def _flash(resp: Any) -> str:
    html = resp.get_data(as_text=True)
    start = html.index('role="status">') + len('role="status">')
    return html[start : html.index("</p>", start)]


# -- lockout -------------------------------------------------------------------------
def test_an_account_locks_after_consecutive_failures_even_for_the_right_password(db_url, sessions):
    add_user(sessions, "kim")
    c = client_from(app_with(db_url, login_max_failures=3, login_lockout_seconds=600))
    for _ in range(3):
        assert try_login(c, "kim", "wrong password").status_code == 401
    locked = try_login(c, "kim", PW)
    assert locked.status_code == 401  # locked: the right password is refused too
    (row,) = lock_rows(sessions, "kim")
    assert row.source == "127.0.0.1"
    assert row.locked_until is not None and row.locked_until > utcnow() + timedelta(seconds=590)
    actions = [a for _, a, _ in audit_rows(sessions, "login")]
    assert actions == ["login.failure"] * 3 + ["login.locked", "login.locked"]
    details = audit_rows(sessions, "login")
    assert all(d["address"] == "127.0.0.1" and "password" not in d for _, _, d in details)
    assert details[0][2]["reason"] == "wrong_password" and "locked_until" in details[3][2]
    assert details[4][2]["reason"] == "attempt while locked"


def test_the_lock_expires_and_a_success_resets_the_count(db_url, sessions):
    add_user(sessions, "kim")
    c = client_from(app_with(db_url, login_max_failures=3))
    for _ in range(2):
        try_login(c, "kim", "wrong password")
    assert [r.failures for r in lock_rows(sessions, "kim")] == [2]
    assert try_login(c, "kim", PW).status_code == 302
    assert [r.failures for r in lock_rows(sessions, "kim")] == [0]
    assert user_row(sessions, "kim").last_login_at is not None
    with sessions() as s:  # a lock that ran out
        row = s.scalars(select(LoginFailure)).one()
        row.locked_until = utcnow() - timedelta(seconds=1)
        s.commit()
    assert try_login(client_from(c.application), "kim", PW).status_code == 302
    assert [r.locked_until for r in lock_rows(sessions, "kim")] == [None]


def test_the_failure_count_holds_across_web_replicas(db_url, sessions):
    add_user(sessions, "kim")
    replicas = [app_with(db_url, login_max_failures=4) for _ in range(2)]
    for n in range(4):
        try_login(client_from(replicas[n % 2], "10.0.0.1"), "kim", "wrong password")
    assert try_login(client_from(replicas[0], "10.0.0.1"), "kim", PW).status_code == 401
    assert try_login(client_from(replicas[1], "10.0.0.1"), "kim", PW).status_code == 401
    ((source, until),) = [(r.source, r.locked_until) for r in lock_rows(sessions, "kim")]
    assert source == "10.0.0.1" and until is not None


def test_basic_auth_counts_towards_the_lockout(db_url, sessions):
    add_user(sessions, "kim")
    c = client_from(app_with(db_url, login_max_failures=3))
    for _ in range(3):
        assert c.get("/api/v1/me", headers=basic("kim", "wrong password")).status_code == 401
    assert c.get("/api/v1/me", headers=basic("kim", PW)).status_code == 401  # locked
    methods = {d["method"] for _, _, d in audit_rows(sessions, "login")}
    assert methods == {"basic"}


def test_lockout_zero_turns_it_off(db_url, sessions):
    add_user(sessions, "kim")
    c = client_from(app_with(db_url, login_max_failures=0))
    for _ in range(6):
        try_login(c, "kim", "wrong password")
    assert try_login(c, "kim", PW).status_code == 302


def test_failures_from_one_address_never_lock_the_account_for_another(db_url, sessions):
    add_user(sessions, "kim")
    app = app_with(db_url, login_max_failures=3, login_lockout_seconds=600, login_attempts_per_minute=0)
    attacker = client_from(app, "203.0.113.5")
    lengths = []
    for _ in range(2):  # repeatedly: the lock is never a weapon against the account's owner
        for _ in range(3):
            assert try_login(attacker, "kim", "wrong password").status_code == 401
        assert try_login(attacker, "kim", PW).status_code == 401  # locked, for this address only
        assert attacker.get("/api/v1/me", headers=basic("kim", PW)).status_code == 401
        assert try_login(client_from(app, "198.51.100.7"), "kim", PW).status_code == 302
        owner_api = client_from(app, "198.51.100.8")
        assert owner_api.get("/api/v1/me", headers=basic("kim", PW)).status_code == 200
        with sessions() as s:  # the lock runs out
            row = s.scalars(select(LoginFailure).where(LoginFailure.source == "203.0.113.5")).one()
            assert row.locked_until is not None
            lengths.append((row.locked_until - row.updated_at).total_seconds())
            row.locked_until = utcnow() - timedelta(seconds=1)
            s.commit()
    assert lengths == [600, 1200]  # each further lock from the same source lasts twice as long
    assert try_login(attacker, "kim", PW).status_code == 302  # a success starts the doubling again
    assert {r.source: r.lockouts for r in lock_rows(sessions, "kim")}["203.0.113.5"] == 0


def test_addresses_of_one_ipv6_64_network_are_one_source(db_url, sessions):
    add_user(sessions, "kim")
    app = app_with(db_url, login_max_failures=2, login_attempts_per_minute=0)
    for address in ("2001:db8::1", "2001:db8::2"):
        assert try_login(client_from(app, address), "kim", "wrong password").status_code == 401
    assert try_login(client_from(app, "2001:db8::ffff"), "kim", PW).status_code == 401  # same /64: locked
    assert try_login(client_from(app, "2001:db8:0:1::1"), "kim", PW).status_code == 302
    assert [r.source for r in lock_rows(sessions, "kim") if r.locked_until] == ["2001:db8::/64"]


# -- concurrent bursts, over real HTTP (waitress, 8 request threads) ------------------
def _attempt(base: str, method: str) -> Callable[[str, str], int]:
    """A login attempt through the form (one session and CSRF token for all of
    them, as a script would) or HTTP Basic: returns the status."""
    if method == "basic":
        return lambda username, password: http(base + "/api/v1/me", headers=basic(username, password))[0]
    _, headers, body = http(base + "/login")
    cookie = headers["Set-Cookie"].split(";", 1)[0]
    token = csrf_from(body.decode())

    def post(username: str, password: str) -> int:
        form = urlencode({"username": username, "password": password, "csrf_token": token}).encode()
        hdrs = {"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"}
        return http(base + "/login", method="POST", headers=hdrs, data=form)[0]

    return post


def _burst(calls: list[Callable[[], int]]) -> list[int]:
    """Every call at once, each in its own thread."""
    start = threading.Barrier(len(calls))

    def run(call: Callable[[], int]) -> int:
        start.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


@pytest.mark.parametrize("method", ["form", "basic"])
def test_40_parallel_wrong_attempts_never_get_past_the_limit(db_url, sessions, method):
    add_user(sessions, "kim")
    app = app_with(db_url, login_attempts_per_minute=10, login_max_failures=0)
    with live_server(app) as server:
        attempt = _attempt(server.url, method)
        statuses = _burst([partial(attempt, "kim", f"wrong guess {n:02}") for n in range(40)])
    checked = [status for status in statuses if status != 429]
    assert checked == [401] * 10, statuses  # exactly the limit: no more guesses, none lost
    assert [a for _, a, _ in audit_rows(sessions, "login")] == ["login.failure"] * 10


@pytest.mark.parametrize("method", ["form", "basic"])
def test_a_burst_with_the_right_password_never_both_logs_in_and_locks(db_url, sessions, method):
    app = app_with(db_url, login_max_failures=5, login_attempts_per_minute=0)
    success = 302 if method == "form" else 200
    outcomes = []
    with live_server(app) as server:
        attempt = _attempt(server.url, method)
        for n in range(4):
            name = f"kim{n}"
            add_user(sessions, name)
            calls = [partial(attempt, name, f"wrong guess {i}") for i in range(5)]
            calls.insert(n % 6, partial(attempt, name, PW))
            statuses = _burst(calls)
            logged_in = success in statuses
            locked = any(r.locked_until is not None for r in lock_rows(sessions, name))
            assert not (logged_in and locked), (name, statuses)
            assert logged_in or locked, (name, statuses)
            outcomes.append(logged_in)
    assert outcomes  # both outcomes are fine; which one depends on the order the server took them


# -- one answer for every failure -----------------------------------------------------
def test_unknown_user_wrong_password_and_locked_account_look_the_same(db_url, sessions, monkeypatch):
    add_user(sessions, "kim")
    add_user(sessions, "lou")
    with sessions() as s:
        users.set_active(s, users.get_user(s, "lou"), False)
        s.commit()
    checks: list[str] = []
    real = users.check_password_hash

    def counting(pwhash: str, password: str) -> bool:
        checks.append(pwhash)
        return real(pwhash, password)

    monkeypatch.setattr(users, "check_password_hash", counting)
    app = app_with(db_url, login_max_failures=2)
    answers = []
    for name, password in [
        ("nobody", PW),  # unknown
        ("lou", PW),  # deactivated
        ("kim", "wrong password"),
        ("kim", "wrong password"),  # locks
        ("kim", PW),  # locked
        ("kim\x00", PW),  # a name no user can have
        ("k" * 5000, PW),
    ]:
        checks.clear()
        resp = try_login(client_from(app), name, password)
        assert len(checks) == 1, name  # one scrypt check each: the same time
        answers.append((resp.status_code, _flash(resp)))
    assert len(set(answers)) == 1 and answers[0][0] == 401
    assert "locked" in answers[0][1]  # the one message covers a lock without confirming one


def test_failed_login_audit_names_the_attempted_user_and_never_the_password(db_url, sessions):
    c = client_from(app_with(db_url), "192.0.2.7")
    try_login(c, "x" * 300 + "\x00", "secret guess 123")
    ((actor, action, details),) = audit_rows(sessions, "login")
    assert action == "login.failure" and len(actor) == 100 and "\x00" not in actor
    assert details == {"address": "192.0.2.7", "method": "form", "reason": "unknown_user"}
    assert "secret guess" not in repr(audit_rows(sessions))


# -- per-address rate limit -----------------------------------------------------------
def test_login_attempts_per_address_are_limited_with_retry_after(db_url, sessions):
    add_user(sessions, "kim")
    app = app_with(db_url, login_attempts_per_minute=3, login_max_failures=0)
    c = client_from(app, "198.51.100.1")
    for _ in range(3):
        assert try_login(c, "kim", "wrong password").status_code == 401
    refused = try_login(c, "kim", PW)
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert "Too many login attempts" in refused.get_data(as_text=True)
    assert "login.success" not in [a for _, a, _ in audit_rows(sessions)]  # never checked
    # Another address, and another replica sharing the database.
    assert try_login(client_from(app, "198.51.100.2"), "kim", PW).status_code == 302
    other_replica = app_with(db_url, login_attempts_per_minute=3)
    assert try_login(client_from(other_replica, "198.51.100.1"), "kim", PW).status_code == 429


def test_successful_logins_count_too(db_url, sessions):
    add_user(sessions, "kim")
    c = client_from(app_with(db_url, login_attempts_per_minute=2))
    assert try_login(c, "kim", PW).status_code == 302
    assert try_login(c, "kim", PW).status_code == 302
    assert try_login(c, "kim", PW).status_code == 429


def test_basic_failures_count_and_over_the_limit_basic_is_refused(db_url, sessions):
    add_user(sessions, "kim")
    c = client_from(app_with(db_url, login_attempts_per_minute=2, login_max_failures=0))
    for _ in range(4):  # successful Basic requests are ordinary API use: not counted
        assert c.get("/api/v1/me", headers=basic("kim", PW)).status_code == 200
    assert c.get("/api/v1/me", headers=basic("kim", "nope nope nope")).status_code == 401
    assert c.get("/api/v1/banks", headers=basic("kim", "nope nope nope")).status_code == 401
    refused = c.get("/api/v1/me", headers=basic("kim", PW))
    assert refused.status_code == 429 and refused.is_json and "Retry-After" in refused.headers
    assert c.get("/api/v1/banks", headers=basic("kim", PW)).status_code == 429


def test_x_forwarded_for_is_ignored_unless_from_a_trusted_proxy(db_url, sessions):
    add_user(sessions, "kim")
    app = app_with(db_url, login_attempts_per_minute=1, sso_trusted_proxies="10.9.0.0/16")
    spoofer = client_from(app, "203.0.113.5")
    try_login(spoofer, "kim", "wrong password", headers={"X-Forwarded-For": "1.1.1.1"})
    assert try_login(spoofer, "kim", PW, headers={"X-Forwarded-For": "2.2.2.2"}).status_code == 429
    proxy = client_from(app, "10.9.0.1")
    hdr = {"X-Forwarded-For": "spoofed, 198.51.100.9, 10.9.0.2"}
    assert try_login(proxy, "kim", "wrong password", headers=hdr).status_code == 401
    assert try_login(proxy, "kim", PW, headers={"X-Forwarded-For": "198.51.100.10"}).status_code == 302
    addresses = [d["address"] for _, a, d in audit_rows(sessions, "login")]
    assert addresses == ["203.0.113.5", "198.51.100.9", "198.51.100.10"]


# -- sessions ------------------------------------------------------------------------
def _logged_in(app: Any, sessions_: Any, name: str = "kim", role: str = "moderator") -> Any:
    add_user(sessions_, name, role=role)
    c = client_from(app)
    assert try_login(c, name, PW).status_code == 302
    return c


def _age_session(client: Any, **seconds_ago: int) -> None:
    with client.session_transaction() as s:
        for key, ago in seconds_ago.items():
            s[key] = int(time.time()) - ago


@pytest.mark.parametrize(
    "aged, reason",
    [({"seen_at": 61}, "idle"), ({"login_at": 3601, "seen_at": 1}, "absolute")],
)
def test_idle_and_absolute_expiry_end_the_session(db_url, sessions, aged, reason):
    app = app_with(db_url, session_idle_seconds=60, session_max_seconds=3600)
    c = _logged_in(app, sessions)
    assert c.get("/").status_code == 200
    _age_session(c, **aged)
    resp = c.get("/")
    assert resp.status_code == 302 and "/login" in resp.location
    assert "session expired" in c.get(resp.location).get_data(as_text=True)
    assert c.get("/api/v1/me").status_code == 401  # and stays logged out
    ((actor, _, details),) = audit_rows(sessions, "session.expired")
    assert actor == "kim" and details["reason"] == reason and details["address"] == "127.0.0.1"


def test_an_expired_session_gets_401_from_the_api(db_url, sessions):
    app = app_with(db_url, session_idle_seconds=60)
    c = _logged_in(app, sessions)
    _age_session(c, seen_at=120)
    resp = c.get("/api/v1/me")
    assert resp.status_code == 401 and "expired" in resp.get_json()["error"]


def test_activity_keeps_a_session_alive(db_url, sessions):
    app = app_with(db_url, session_idle_seconds=60)
    c = _logged_in(app, sessions)
    _age_session(c, seen_at=50)
    assert c.get("/").status_code == 200  # refreshes seen_at
    with c.session_transaction() as s:
        assert time.time() - s["seen_at"] < 5
    _age_session(c, login_at=50_000)  # SESSION_MAX_SECONDS default: 12 h
    assert c.get("/").status_code == 302


def test_a_session_from_before_the_expiry_checks_is_ended(db_url, sessions):
    app = app_with(db_url)
    add_user(sessions, "kim")
    c = client_from(app)
    with c.session_transaction() as s:
        s["user_id"] = user_row(sessions, "kim").id  # no timestamps, no version
    assert c.get("/").status_code == 302


def test_login_rotates_the_session_and_logout_ends_every_copy(db_url, sessions):
    app = app_with(db_url)
    add_user(sessions, "kim")
    c = client_from(app)
    before = csrf_from(c.get("/login").get_data(as_text=True))
    try_login(c, "kim", PW)
    with c.session_transaction() as s:
        assert s.get("csrf_token") != before and s.permanent
    csrf = csrf_from(c.get("/").get_data(as_text=True))
    assert csrf != before
    stolen = c.get_cookie("session").value
    assert c.post("/logout", data={"csrf_token": csrf}).status_code == 302
    assert c.get("/").status_code == 302
    replay = client_from(app)
    replay.set_cookie("session", stolen)
    assert replay.get("/").status_code == 302  # the copied cookie died with the logout
    assert [a for _, a, _ in audit_rows(sessions)][-2:] == ["logout", "session.expired"]


@pytest.mark.parametrize("change", ["password", "deactivate"])
def test_a_password_change_or_deactivation_ends_open_sessions(db_url, sessions, change):
    app = app_with(db_url)
    c = _logged_in(app, sessions)
    api = client_from(app)
    assert api.get("/api/v1/me", headers=basic("kim", PW)).status_code == 200
    with sessions() as s:
        u = users.get_user(s, "kim")
        if change == "password":
            users.set_password(s, u, "a brand new password")
        else:
            users.set_active(s, u, False)
        s.commit()
    assert c.get("/").status_code == 302
    assert c.get("/api/v1/me").status_code == 401
    assert api.get("/api/v1/me", headers=basic("kim", PW)).status_code == 401
    reason = "credentials_changed" if change == "password" else "deactivated"
    assert audit_rows(sessions, "session.expired")[0][2]["reason"] == reason


def test_cookie_flags_in_production_and_dev_mode(db_url, sessions):
    add_user(sessions, "kim")
    prod = client_from(app_with(db_url, dev_mode=False, session_max_seconds=7200))
    resp = try_login(prod, "kim", PW, base_url="https://console.example")
    cookie = resp.headers["Set-Cookie"]
    assert cookie.startswith("__Host-session=")
    for flag in ("Secure", "HttpOnly", "SameSite=Lax", "Path=/", "Expires="):
        assert flag in cookie, flag
    assert "Domain" not in cookie
    assert prod.application.permanent_session_lifetime == timedelta(seconds=7200)
    dev = client_from(app_with(db_url))
    cookie = try_login(dev, "kim", PW).headers["Set-Cookie"]
    assert cookie.startswith("session=") and "Secure" not in cookie and "HttpOnly" in cookie


# -- single sign-on ------------------------------------------------------------------
SSO = {"sso_user_header": "X-Forwarded-User", "sso_trusted_proxies": "10.8.0.0/24, 192.0.2.10"}


def test_single_sign_on_from_a_trusted_proxy(db_url, sessions):
    add_user(sessions, "kim")
    add_user(sessions, "ada", role="admin")
    app = app_with(db_url, **SSO)
    proxy = client_from(app, "10.8.0.3")
    who = {"X-Forwarded-User": "kim", "X-Forwarded-For": "198.51.100.20"}
    assert proxy.get("/", headers=who).status_code == 200
    assert proxy.get("/api/v1/me", headers=who).get_json() == {"username": "kim", "role": "moderator"}
    assert proxy.get("/admin/banks", headers=who).status_code == 403  # the role is the database's
    assert proxy.get("/login", headers=who).status_code == 302  # nothing to type
    admin = client_from(app, "192.0.2.10")
    assert admin.get("/admin/banks", headers={"X-Forwarded-User": "ada"}).status_code == 200
    logins = audit_rows(sessions, "login")
    assert [(a, act, d["method"]) for a, act, d in logins] == [
        ("kim", "login.success", "sso"),
        ("ada", "login.success", "sso"),
    ]  # once per session, not per request
    assert logins[0][2]["address"] == "198.51.100.20"


def test_single_sign_on_needs_an_active_known_user(db_url, sessions):
    add_user(sessions, "kim")
    with sessions() as s:
        users.set_active(s, users.get_user(s, "kim"), False)
        s.commit()
    proxy = client_from(app_with(db_url, **SSO), "10.8.0.3")
    for name in ("kim", "nobody", "", "x" * 101):
        resp = proxy.get("/", headers={"X-Forwarded-User": name})
        assert resp.status_code == 302 and "/login" in resp.location
        assert proxy.get("/api/v1/me", headers={"X-Forwarded-User": name}).status_code == 401


def test_the_sso_header_from_anywhere_else_is_ignored_and_logged_once(db_url, sessions, caplog):
    add_user(sessions, "kim")
    app = app_with(db_url, **SSO)
    c = client_from(app, "203.0.113.9")
    with caplog.at_level(logging.WARNING, logger="moderation.web.proxies"):
        for _ in range(3):
            resp = c.get("/", headers={"X-Forwarded-User": "kim"})
            assert resp.status_code == 302 and "/login" in resp.location
            assert c.get("/api/v1/me", headers={"X-Forwarded-User": "kim"}).status_code == 401
    warnings = [r for r in caplog.records if "X-Forwarded-User" in r.getMessage()]
    assert len(warnings) == 1 and "203.0.113.9" in warnings[0].getMessage()
    assert audit_rows(sessions, "login") == []


def test_sso_header_is_ignored_when_sso_is_off(db_url, sessions):
    add_user(sessions, "kim")
    app = app_with(db_url, sso_trusted_proxies="10.8.0.0/24")
    c = client_from(app, "10.8.0.3")
    assert c.get("/", headers={"X-Forwarded-User": "kim"}).status_code == 302


def test_sso_posts_still_need_the_csrf_token(db_url, sessions):
    add_user(sessions, "kim")
    proxy = client_from(app_with(db_url, **SSO), "10.8.0.3")
    who = {"X-Forwarded-User": "kim"}
    assert proxy.post("/next", headers=who).status_code == 400
    csrf = csrf_from(proxy.get("/", headers=who).get_data(as_text=True))
    assert proxy.post("/next", headers=who, data={"csrf_token": csrf}).status_code == 302


def test_a_different_sso_user_gets_a_fresh_session(db_url, sessions):
    add_user(sessions, "kim")
    add_user(sessions, "lou")
    proxy = client_from(app_with(db_url, **SSO), "10.8.0.3")
    kim_csrf = csrf_from(proxy.get("/", headers={"X-Forwarded-User": "kim"}).get_data(as_text=True))
    lou_page = proxy.get("/", headers={"X-Forwarded-User": "lou"}).get_data(as_text=True)
    assert csrf_from(lou_page) != kim_csrf and "lou (moderator)" in lou_page


def test_bad_trusted_proxy_setting_fails_at_start(db_url):
    from moderation.errors import ConfigError

    with pytest.raises(ConfigError, match="SSO_TRUSTED_PROXIES"):
        app_with(db_url, sso_user_header="X-User", sso_trusted_proxies="10.0.0.0/8, proxy.internal")
