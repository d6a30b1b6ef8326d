"""Who may call what: every route of the app x every kind of caller.

``ROUTES`` names every (endpoint, method) the Flask app serves, with an example
request and its access class; a route added without an entry fails
``test_every_route_has_a_matrix_entry``. Each access class says, per caller,
whether the request must be sent to the login page, refused with 401 or 403,
or let in (any other status below 500: the view then answers 2xx, or 4xx for
its own reasons, such as a withdrawn entry or an invalid decision).

Callers: anonymous; a moderator, a senior, an auditor and an admin with a console session (cookie and
CSRF token) and with HTTP Basic; API tokens of each scope, the moderator's
personal token (scope review); a revoked token and a malformed one. A refused
caller never sees any of the seeded data.
Shared with test_security_headers.py (CSRF and headers on every route).
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from werkzeug.security import generate_password_hash

from moderation.config import load_settings
from moderation.domain import EntrySpec
from moderation.storage import banks, tokens
from moderation.storage.models import Item, ItemMedia, User, utcnow
from moderation.web import media_links
from moderation.web import sessions as web_sessions
from tests.support.factories import make_item
from tests.support.web import make_app

PASSWORD = "correct horse battery"
# A cheap scrypt hash: HTTP Basic checks it on every request.
CHEAP_HASH = generate_password_hash(PASSWORD, "scrypt:1024:8:1")
MD5 = "0123456789abcdef0123456789abcdef"
PDQ = "f" * 64
CASE = "case-1"
# Seeded values no refused caller may ever see in a response.
SECRETS = ("content-secret-1", "uploader-secret-1", MD5, "note-secret-1", "JFIF")


@dataclass(frozen=True)
class Route:
    path: str
    access: str
    body: dict[str, Any] | None = None
    signed: bool = False  # console media: the caller's own short-lived signed link is appended


ITEM = "/items/1"
API = "/api/v1"
ENTRY = f"{API}/banks/alpha/entries/{{eid}}"
SUB = f"{API}/submissions"
ROUTES: dict[tuple[str, str], Route] = {
    # Public: liveness, readiness, Prometheus metrics (counters only), static files, the API's document.
    ("health.healthz", "GET"): Route("/healthz", "public"),
    ("health.readyz", "GET"): Route("/readyz", "public"),
    ("health.metrics", "GET"): Route("/metrics", "public"),
    ("static", "GET"): Route("/static/console.css", "public"),
    ("api.openapi", "GET"): Route(f"{API}/openapi.json", "public"),
    ("auth.login", "GET"): Route("/login", "public"),
    ("auth.login", "POST"): Route("/login", "public", {"username": "mo", "password": PASSWORD}),
    ("auth.logout", "POST"): Route("/logout", "logout"),
    # The review console: session cookie (or single sign-on) only.
    ("console.index", "GET"): Route("/", "console"),
    ("console.next_item", "POST"): Route("/next", "console_review"),
    ("console.item", "GET"): Route(ITEM, "console_review"),
    ("console.media", "GET"): Route(f"{ITEM}/media", "console_review", signed=True),
    ("console.reveal", "POST"): Route(f"{ITEM}/reveal", "console_review"),
    ("console.decide", "POST"): Route(
        f"{ITEM}/decide", "console_review", {"action": "bogus", "reason": "ncii"}
    ),
    ("console.release", "POST"): Route(f"{ITEM}/release", "console_review"),
    # Admin pages.
    ("admin.bank_list", "GET"): Route("/admin/banks", "console_admin"),
    ("admin.create_bank", "POST"): Route(
        "/admin/banks", "console_admin", {"name": "beta", "action": "review", "pdq_distance": "31"}
    ),
    ("admin.bank_page", "GET"): Route("/admin/banks/alpha", "console_admin"),
    ("admin.bank_settings", "POST"): Route(
        "/admin/banks/alpha/settings",
        "console_admin",
        {"action": "review", "pdq_distance": "30", "vpdq_share": "0.8", "enabled": "on"},
    ),
    ("admin.add_hashes", "POST"): Route(
        "/admin/banks/alpha/entries", "console_admin", {"hashes": f"pdq {PDQ}"}
    ),
    ("admin.entry_status", "POST"): Route(
        "/admin/banks/alpha/entries/{eid}/status", "console_admin", {"verb": "disable"}
    ),
    ("admin.quarantine", "GET"): Route("/admin/quarantine", "console_admin"),
    ("admin.token_list", "GET"): Route("/admin/tokens", "console_admin"),
    ("admin.create_token", "POST"): Route(
        "/admin/tokens", "console_admin", {"name": "new", "scope": "banks:read"}
    ),
    ("admin.revoke_token", "POST"): Route("/admin/tokens/revoke", "console_admin", {"name": "old"}),
    # Set-aside outbox records (none seeded: an allowed caller gets the page's own "no decision 1").
    ("outbox_admin.page", "GET"): Route("/admin/outbox", "console_admin"),
    ("outbox_admin.change", "POST"): Route("/admin/outbox/decisions/1", "console_admin", {"verb": "retry"}),
    # Wellbeing: preferences and breaks for every console user; exposure reports and media links
    # for those who review.
    ("wellbeing.preferences", "GET"): Route("/preferences", "console"),
    ("wellbeing.update_preferences", "POST"): Route("/preferences", "console", {"blur_strength": "high"}),
    ("wellbeing.report_exposure", "POST"): Route(
        "/exposure", "console_review", {"item_id": "1", "seconds": "5"}
    ),
    ("wellbeing.break_page", "GET"): Route("/break", "console"),
    # Personal API tokens: every console user manages their own (token 1 is the service token
    # "reader": nobody's own, so revoking it is the page's own "no such token of yours").
    ("personal_tokens.token_page", "GET"): Route("/tokens", "console"),
    ("personal_tokens.create_token", "POST"): Route("/tokens", "console", {"label": "laptop"}),
    ("personal_tokens.revoke_token", "POST"): Route("/tokens/1/revoke", "console"),
    ("wellbeing.take_break", "POST"): Route("/break", "console"),
    ("console.media_link", "GET"): Route(f"{ITEM}/media-link", "console_review"),
    # The audit log (read-only, admins and auditors) and the leads' dashboard.
    ("audit.log_page", "GET"): Route("/audit?action=item&item=1", "console_audit"),
    ("audit.export_csv", "GET"): Route("/audit.csv?action=item", "console_audit"),
    ("dashboard.page", "GET"): Route("/dashboard", "console_lead"),
    ("dashboard.api", "GET"): Route(f"{API}/dashboard", "queue_api_lead"),
    # Queue mechanics: lease renewal (the claim holder; others 403/409), queue views for leads.
    ("console.lease", "POST"): Route(f"{ITEM}/lease", "console_review"),
    ("queues.queue_page", "GET"): Route("/queues?view=claimed", "console_lead"),
    ("api.renew_lease", "POST"): Route(f"{API}{ITEM}/lease", "queue_api_review", {}),
    # Near-duplicate groups: whoever may see the item (claim holder, senior, admin).
    ("groups.group_page", "GET"): Route("/groups/1", "console_review"),
    ("groups.decide_members", "POST"): Route(
        "/groups/1/decide", "console_review", {"member": "1", "action": "bogus", "reason": "ncii"}
    ),
    # Evidence: admins and auditors read (item 1 has none: 404 for them), only admins hold and export.
    ("evidence.case_list", "GET"): Route("/evidence?show=held", "console_audit"),
    ("evidence.case", "GET"): Route("/evidence/1", "console_audit"),
    ("evidence.hold", "POST"): Route(
        "/evidence/1/hold", "console_admin", {"legal_hold": "on", "reason": "police ref"}
    ),
    ("evidence.export", "POST"): Route("/evidence/1/export", "console_admin"),
    # Appeals: the platform's appeal service (token scope appeals:submit) and admins. Item 1 is
    # claimed, not decided: allowed callers get the view's own 409.
    ("appeals_api.submit_appeal", "POST"): Route(
        f"{API}/appeals", "appeal_submit", {"appeal_id": "a-1", "item_id": 1}
    ),
    # The queue API: users (session, Basic or their personal token), never service tokens.
    ("api.me", "GET"): Route(f"{API}/me", "queue_api"),
    ("api.reasons", "GET"): Route(f"{API}/reasons", "queue_api"),
    ("api.queue_stats", "GET"): Route(f"{API}/queue", "queue_api"),
    ("api.claim", "POST"): Route(f"{API}/queue/claim", "queue_api_review", {}),
    ("api.get_exposure", "GET"): Route(f"{API}/exposure", "queue_api_review"),
    ("api.take_break", "POST"): Route(f"{API}/break", "queue_api_review", {}),
    ("api.get_item", "GET"): Route(f"{API}{ITEM}", "queue_api_review"),
    ("api.get_media", "GET"): Route(f"{API}{ITEM}/media", "queue_api_review"),
    ("api.post_decision", "POST"): Route(
        f"{API}{ITEM}/decision", "queue_api_review", {"action": "bogus", "reason": "ncii"}
    ),
    ("api.release", "POST"): Route(f"{API}{ITEM}/release", "queue_api_review", {}),
    # The bank API (entries carry case references and notes): reads for admins and banks:read,
    # writes for admins and banks:write.
    ("banks_api.list_banks", "GET"): Route(f"{API}/banks", "bank_read"),
    ("banks_api.create_bank", "POST"): Route(
        f"{API}/banks", "bank_write", {"name": "gamma", "action": "review"}
    ),
    ("banks_api.get_bank", "GET"): Route(f"{API}/banks/alpha", "bank_read"),
    ("banks_api.update_bank", "PATCH"): Route(f"{API}/banks/alpha", "bank_write", {"description": "d"}),
    ("banks_api.quarantined", "GET"): Route(f"{API}/banks/quarantined", "bank_read"),
    ("banks_api.list_entries", "GET"): Route(f"{API}/banks/alpha/entries", "bank_read"),
    ("banks_api.add_entries", "POST"): Route(
        f"{API}/banks/alpha/entries", "bank_write", {"entries": [{"signal": "pdq", "value": PDQ}]}
    ),
    ("banks_api.get_entry", "GET"): Route(ENTRY, "bank_read"),
    ("banks_api.disable_entry", "POST"): Route(ENTRY + "/disable", "bank_write", {}),
    ("banks_api.enable_entry", "POST"): Route(ENTRY + "/enable", "bank_write", {}),
    ("banks_api.withdraw_entry", "POST"): Route(ENTRY + "/withdraw", "bank_write", {"reason": "r"}),
    # Submissions: hashes:submit tokens (their own bank) and admins (naming the bank).
    ("submissions_api.submit", "POST"): Route(
        f"{SUB}?bank=alpha", "submit", {"case_id": CASE, "hashes": [{"signal": "pdq", "value": PDQ}]}
    ),
    ("submissions_api.submission_status", "GET"): Route(f"{SUB}/{CASE}?bank=alpha", "submit"),
    ("submissions_api.withdraw", "POST"): Route(f"{SUB}/{CASE}/withdraw?bank=alpha", "submit", {}),
}

CALLERS = (
    "anonymous",
    "revoked",
    "malformed",
    "banks:read",
    "banks:write",
    "hashes:submit",
    "appeals:submit",
    "review",
    "moderator:basic",
    "admin:basic",
    "moderator",
    "senior",
    "auditor",
    "admin",
)
SESSION_CALLERS = {"moderator": "mo", "senior": "sen", "auditor": "aud", "admin": "ada"}
BASIC_CALLERS = {"moderator:basic": "mo", "admin:basic": "ada"}
TOKEN_CALLERS = (
    "banks:read",
    "banks:write",
    "hashes:submit",
    "appeals:submit",
    "review",
    "revoked",
    "malformed",
)
SERVICE_TOKENS = ("banks:read", "banks:write", "hashes:submit", "appeals:submit")
LOGIN, OK = "login", "ok"  # redirect to the login page; let in


def _all(outcome: str | int) -> dict[str, str | int]:
    return dict.fromkeys(CALLERS, outcome)


def _api(*allowed: str) -> dict[str, str | int]:
    """Token-accepting API routes: unauthenticated callers 401, ``allowed`` in, others 403."""
    return {**_all(403), "anonymous": 401, "revoked": 401, "malformed": 401, **dict.fromkeys(allowed, OK)}


EXPECTED: dict[str, dict[str, str | int]] = {
    "public": _all(OK),
    # others: 400, no CSRF token
    "logout": {**_all(OK), **dict.fromkeys(SESSION_CALLERS, LOGIN)},
    # Any console user (the queue overview, preferences).
    "console": {**_all(LOGIN), **dict.fromkeys(SESSION_CALLERS, OK)},
    # Claim, view and decide: not auditors, who only read.
    "console_review": {**_all(LOGIN), **dict.fromkeys(SESSION_CALLERS, OK), "auditor": 403},
    # Leads: the dashboard and queue views.
    "console_lead": {**_all(LOGIN), **dict.fromkeys(SESSION_CALLERS, OK), "moderator": 403},
    # The audit log and evidence, read-only.
    "console_audit": {**_all(LOGIN), **dict.fromkeys(SESSION_CALLERS, 403), "admin": OK, "auditor": OK},
    "console_admin": {**_all(LOGIN), **dict.fromkeys(SESSION_CALLERS, 403), "admin": OK},
    # The JSON API of users (session, HTTP Basic, or a personal token acting as
    # the moderator), never service tokens (403: they are valid, without scope
    # review): any user reads the overview; claim, view and decide as in the console.
    "queue_api": {
        **_all(401),
        **dict.fromkeys(SERVICE_TOKENS, 403),
        **dict.fromkeys((*SESSION_CALLERS, *BASIC_CALLERS, "review"), OK),
    },
    "queue_api_review": {
        **_all(401),
        **dict.fromkeys(SERVICE_TOKENS, 403),
        **dict.fromkeys((*SESSION_CALLERS, *BASIC_CALLERS, "review"), OK),
        "auditor": 403,
    },
    # Leads' numbers (the dashboard as JSON): seniors, admins and auditors.
    "queue_api_lead": {
        **_all(401),
        **dict.fromkeys(SERVICE_TOKENS, 403),
        **dict.fromkeys((*SESSION_CALLERS, *BASIC_CALLERS), OK),
        "moderator": 403,
        "moderator:basic": 403,
        "review": 403,
    },
    # Bank entries carry victims' case references and notes: admins and banks:read only.
    "bank_read": _api("admin", "admin:basic", "banks:read"),
    "bank_write": _api("admin", "admin:basic", "banks:write"),
    "submit": _api("admin", "admin:basic", "hashes:submit"),
    "appeal_submit": _api("admin", "admin:basic", "appeals:submit"),
}


# -- the world every request runs in ------------------------------------------------------
@dataclass
class World:
    app: Any
    sessions: Any
    entry_id: int
    secrets: dict[str, str]  # caller -> bearer secret


def build_world(db_url: str, sessions: Any, **settings: Any) -> World:
    """Users (cheap hashes), bank alpha with an entry of case CASE, item 1 with
    media claimed by the moderator, a token of each scope plus a revoked one, and
    the moderator's personal token."""
    with sessions() as s:
        for name, role in (("mo", "moderator"), ("sen", "senior"), ("aud", "auditor"), ("ada", "admin")):
            s.add(User(username=name, password_hash=CHEAP_HASH, role=role))
        s.flush()
        bank = banks.create_bank(s, "alpha", "review", actor="test")
        result = banks.add_entries(
            s, bank, [EntrySpec("md5", MD5, case_id=CASE, note="note-secret-1")], added_by="test"
        )
        item = make_item(1, content_id="content-secret-1", uploader_id="uploader-secret-1")
        s.add(item)
        s.flush()
        s.add(ItemMedia(item_id=item.id, content_type="image/jpeg", data=b"\xff\xd8\xff\xe0JFIF-bytes"))
        secrets = {
            "banks:read": tokens.create_token(s, "reader", ["banks:read"], created_by="test"),
            "banks:write": tokens.create_token(s, "writer", ["banks:write"], created_by="test"),
            "hashes:submit": tokens.create_token(
                s, "flagger", ["hashes:submit"], bank="alpha", created_by="test"
            ),
            "appeals:submit": tokens.create_token(s, "appeals", ["appeals:submit"], created_by="test"),
            "revoked": tokens.create_token(s, "old", list(tokens.SCOPES), bank="alpha", created_by="test"),
            "review": tokens.create_token(
                s, "mo/script", [tokens.REVIEW], created_by="test", user=_user(s, "mo")
            ),
            "malformed": "not-a-token",
        }
        s.commit()
        tokens.revoke_token(s, "old", actor="test")
        s.commit()
        entry_id = result.ids[0]
    values: dict[str, Any] = dict(database_url=db_url, secret_key="test-secret", dev_mode=True)
    values.update(settings)
    world = World(make_app(load_settings({}, **values)), sessions, entry_id, secrets)
    reset_claim(world)
    return world


def _user(s: Any, username: str) -> User:
    return s.query(User).filter_by(username=username).one()  # type: ignore[no-any-return]


def reset_claim(world: World, username: str = "mo") -> None:
    """Item 1 claimed by ``username`` again (a previous request may have released it)."""
    with world.sessions() as s:
        holder = s.query(User).filter_by(username=username).one()
        item = s.get(Item, 1)
        assert item is not None
        item.state, item.claimed_by = "claimed", holder.id
        item.lease_expires_at = utcnow() + timedelta(minutes=5)
        s.commit()


def session_client(world: World, username: str) -> tuple[Any, str]:
    """A test client with a live console session of ``username`` and its CSRF token."""
    client = world.app.test_client()
    with world.sessions() as s, client.session_transaction() as cookie:
        web_sessions.begin(cookie, s.query(User).filter_by(username=username).one())
        cookie["csrf_token"] = csrf = f"csrf-{username}"
    return client, csrf


def signed_media_path(world: World, username: str, item_id: int = 1) -> str:
    """The console media path of ``item_id`` with a fresh signed link of ``username``."""
    with world.sessions() as s:
        user_id = s.query(User).filter_by(username=username).one().id
    params = media_links.link_params(world.app.secret_key, user_id, item_id, 300, time.time())
    return f"/items/{item_id}/media?{urlencode(params)}"


def request_as(world: World, caller: str, method: str, route: Route, csrf: bool = True) -> Any:
    """Send ``route``'s example request as ``caller``; ``csrf=False`` leaves the token out."""
    path = route.path.format(eid=world.entry_id)
    if route.signed and caller in SESSION_CALLERS:
        path = signed_media_path(world, SESSION_CALLERS[caller])
    api = path.startswith(API)
    headers: dict[str, str] = {}
    client = world.app.test_client()
    body: dict[str, Any] | None = dict(route.body) if route.body is not None else None
    if caller in SESSION_CALLERS:
        client, token = session_client(world, SESSION_CALLERS[caller])
        if csrf:
            headers["X-CSRF-Token"] = token
            if not api and method != "GET":
                body = {**(body or {}), "csrf_token": token}
    elif caller in BASIC_CALLERS:
        raw = f"{BASIC_CALLERS[caller]}:{PASSWORD}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
    elif caller in TOKEN_CALLERS:
        headers["Authorization"] = f"Bearer {world.secrets[caller]}"
    if method == "GET":
        return client.open(path, method=method, headers=headers)
    if api:
        return client.open(path, method=method, headers=headers, json=body if body is not None else {})
    return client.open(path, method=method, headers=headers, data=body or {})


def outcome(resp: Any) -> str | int:
    if resp.status_code in (301, 302, 303) and "/login" in (resp.location or ""):
        return LOGIN
    if resp.status_code in (401, 403):
        return int(resp.status_code)
    assert resp.status_code < 500, resp.get_data(as_text=True)[:500]
    return OK


def assert_no_data(resp: Any, where: str) -> None:
    body = resp.get_data(as_text=True)
    leaked = [s for s in SECRETS if s in body]
    assert not leaked, f"{where}: a refused caller saw {leaked}"


# -- tests -----------------------------------------------------------------------------------
def app_routes(app: Any) -> set[tuple[str, str]]:
    return {
        (rule.endpoint, method)
        for rule in app.url_map.iter_rules()
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }


def test_every_route_has_a_matrix_entry(tmp_path):
    app = make_app(load_settings({}, database_url=f"sqlite:///{tmp_path}/t.db", secret_key="x"))
    served = app_routes(app)
    missing = sorted(served - set(ROUTES))
    stale = sorted(set(ROUTES) - served)
    assert not missing, f"routes without an authorization matrix entry (add them to ROUTES): {missing}"
    assert not stale, f"matrix entries for routes the app no longer serves: {stale}"
    assert set(EXPECTED) == {r.access for r in ROUTES.values()}
    for access, table in EXPECTED.items():
        assert set(table) == set(CALLERS), access


@pytest.mark.parametrize("key", sorted(ROUTES), ids=lambda k: f"{k[1]} {k[0]}")
def test_authorization_matrix(db_url, sessions, key):
    endpoint, method = key
    route = ROUTES[key]
    world = build_world(db_url, sessions)
    got, want = {}, EXPECTED[route.access]
    for caller in CALLERS:
        reset_claim(world)
        resp = request_as(world, caller, method, route)
        got[caller] = outcome(resp)
        if got[caller] != OK:
            assert_no_data(resp, f"{method} {route.path} as {caller}")
        if got[caller] in (401, 403) and route.path.startswith(API):
            assert "error" in resp.get_json(), (caller, route.path)
        if got[caller] == 401:  # every API route takes HTTP Basic and Bearer tokens
            challenges = " ".join(resp.headers.getlist("WWW-Authenticate"))
            assert "Basic" in challenges and "Bearer" in challenges
    assert got == want, f"{method} {route.path} ({endpoint})"
