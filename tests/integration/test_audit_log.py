"""The audit log: every kind of event reaches it through the real routes, the
page filters and pages it, the CSV export is streamed, neutralised and itself
audited, auditors change nothing, and the database refuses to edit the log."""

from __future__ import annotations

import base64
import csv
import io
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.exc import DBAPIError

from moderation.config import load_settings
from moderation.storage import audit_search, banks
from moderation.storage.models import AuditRecord, Decision, Item, ItemMedia, User
from moderation.web import audit_views
from tests.integration.test_authz_matrix import CHEAP_HASH, EXPECTED, OK, PASSWORD, ROUTES
from tests.support.factories import make_item
from tests.support.images import encode, synthetic_image
from tests.support.web import login, make_app

SCRIPT = "<script>alert(1)</script>"
ATTR = '"><img src=x onerror=alert(1)>'
ROW_ID = re.compile(r"<tr>\s*<td>(\d+)</td>")


@pytest.fixture
def app(db_url, sessions):
    with sessions() as s:
        for n in (1, 2):
            item = make_item(n, priority=60)
            s.add(item)
            s.flush()
            s.add(ItemMedia(item_id=item.id, content_type="image/jpeg", data=encode(synthetic_image(n))))
        for name, role in (("mo", "moderator"), ("ada", "admin"), ("aud", "auditor"), ("sen", "senior")):
            s.add(User(username=name, password_hash=CHEAP_HASH, role=role))
        s.commit()
    settings = load_settings({}, database_url=db_url, secret_key="test-secret", dev_mode=True)
    return make_app(settings, send_decision=lambda key, value: None)


def logged_in(app: Any, username: str) -> tuple[Any, str]:
    client = app.test_client()
    return client, login(client, username, PASSWORD)


def basic(username: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{username}:{PASSWORD}".encode()).decode()}


def csv_rows(resp: Any) -> list[dict[str, str]]:
    assert resp.status_code == 200, resp.get_data(as_text=True)[:300]
    return list(csv.DictReader(io.StringIO(resp.get_data(as_text=True))))


def seed(sessions: Any, *records: tuple[str, str, int | None, datetime, dict[str, Any]]) -> None:
    with sessions() as s:
        for actor, action, item_id, at, details in records:
            s.add(AuditRecord(actor=actor, action=action, item_id=item_id, at=at, details=details))
        s.commit()


def page_ids(html: str) -> list[int]:
    return [int(i) for i in ROW_ID.findall(html)]


# -- coverage ---------------------------------------------------------------------------
def test_every_kind_of_event_reaches_the_audit_log(app, sessions):
    anon = app.test_client()
    token = re.search(r'name="csrf_token" value="([^"]+)"', anon.get("/login").get_data(as_text=True))
    assert token
    anon.post("/login", data={"username": "mo", "password": "wrong", "csrf_token": token.group(1)})

    mo, csrf = logged_in(app, "mo")
    resp = mo.post("/next", data={"csrf_token": csrf})
    item_id = int(resp.location.rsplit("/", 1)[1])
    assert mo.get(f"/items/{item_id}").status_code == 200
    assert mo.post(f"/items/{item_id}/reveal", data={"csrf_token": csrf}).status_code < 400
    resp = mo.post(
        f"/items/{item_id}/decide", data={"csrf_token": csrf, "action": "remove", "reason": "ncii"}
    )
    assert resp.status_code == 302
    with sessions() as s:
        assert s.scalar(select(Decision.action).where(Decision.item_id == item_id)) == "remove"

    ada, admin_csrf = logged_in(app, "ada")
    form = {
        "csrf_token": admin_csrf,
        "name": "beta",
        "action": "review",
        "pdq_distance": "31",
        "vpdq_share": "0.8",
    }
    ada.post("/admin/banks", data=form)
    ada.post(
        "/admin/banks/beta/entries",
        data={"csrf_token": admin_csrf, "hashes": "md5 0123456789abcdef0123456789abcdef", "case_id": "k1"},
    )
    resp = app.test_client().patch("/api/v1/banks/beta", json={"description": "d"}, headers=basic("ada"))
    assert resp.status_code == 200
    mo.post("/logout", data={"csrf_token": csrf})

    aud, _ = logged_in(app, "aud")
    rows = csv_rows(aud.get("/audit.csv"))
    seen = {(r["actor"], r["action"], r["item_id"]) for r in rows}
    expected = {
        ("mo", "login.failure", ""),
        ("mo", "login.success", ""),
        ("mo", "item.claim", str(item_id)),
        ("mo", "item.view", str(item_id)),
        ("mo", "item.reveal", str(item_id)),
        ("mo", "decision.remove", str(item_id)),
        ("mo", "bank.entries.added", ""),  # the confirmed removal's hashes
        ("ada", "bank.create", ""),
        ("ada", "bank.entries.added", ""),  # the admin page
        ("ada", "bank.update", ""),  # the bank API
        ("mo", "logout", ""),
        ("aud", "login.success", ""),
    }
    assert expected <= seen, sorted(expected - seen)
    added = [r for r in rows if r["action"] == "bank.entries.added" and r["actor"] == "ada"]
    assert '"bank": "beta"' in added[0]["details"] and '"case_ids": ["k1"]' in added[0]["details"]
    confirmed = next(r for r in rows if r["action"] == "bank.entries.added" and r["actor"] == "mo")
    assert f'"source_item_id": {item_id}' in confirmed["details"]
    html = aud.get("/audit").get_data(as_text=True)
    for _actor, action, _item in expected:
        assert f"<code>{action}</code>" in html, action


def test_hashes_added_through_the_api_are_audited_with_the_token(app, sessions, db_url):
    from moderation.storage import tokens

    with sessions() as s:
        banks.create_bank(s, "alpha", "review", actor="test")
        secret = tokens.create_token(s, "writer", ["banks:write"], created_by="test")
        s.commit()
    resp = app.test_client().post(
        "/api/v1/banks/alpha/entries",
        json={"entries": [{"signal": "md5", "value": "f" * 32}, {"signal": "md5", "value": "e" * 32}]},
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert resp.status_code in (200, 201), resp.get_json()
    aud, _ = logged_in(app, "aud")
    rows = csv_rows(aud.get("/audit.csv?action=bank.entries"))
    assert [(r["actor"], r["action"]) for r in rows] == [("token:writer", "bank.entries.added")]
    assert '"added": 2' in rows[0]["details"]


# -- the page -----------------------------------------------------------------------------
def test_filters(app, sessions):
    t = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
    seed(
        sessions,
        ("mo", "login.success", None, t - timedelta(days=2), {}),
        ("mo", "item.view", 7, t - timedelta(days=1), {}),
        ("sen", "item.view", 8, t, {}),
        ("sen", "login.failure", None, t + timedelta(hours=1), {}),
        ("sen", "loginx", None, t + timedelta(hours=2), {}),
        ("mo", "logout", None, t + timedelta(days=1), {}),
        ("ada", "decision.remove", 7, t + timedelta(days=1, hours=1), {}),
    )
    aud, _ = logged_in(app, "aud")

    def actions(query: str) -> list[str]:
        resp = aud.get("/audit.csv?" + query)
        return [r["action"] for r in csv_rows(resp) if r["action"] not in ("login.success", "audit.export")]

    assert actions("actor=sen") == ["loginx", "login.failure", "item.view"]
    assert actions("action=login") == ["login.failure"]  # login.*, not loginx or logout
    assert actions("action=login.") == ["login.failure"]
    assert actions("action=item.view") == ["item.view", "item.view"]
    assert actions("action=decision") == ["decision.remove"]
    assert actions("item=7") == ["decision.remove", "item.view"]
    assert actions("item=%237") == ["decision.remove", "item.view"]  # "#7" as the page writes it
    # Dates are UTC; a date alone as "to" is the whole day.
    assert actions("from=2025-03-10&to=2025-03-10") == ["loginx", "login.failure", "item.view"]
    assert actions("from=2025-03-10T12:30&to=2025-03-10 14:00") == ["login.failure"]
    assert actions("actor=mo&from=2025-03-09&to=2025-03-11") == ["logout", "item.view"]
    # The page shows the same rows, filters kept in the export link.
    html = aud.get("/audit?actor=sen&action=login").get_data(as_text=True)
    assert "<code>login.failure</code>" in html and "<code>loginx</code>" not in html
    assert "/audit.csv?actor=sen&amp;action=login" in html
    for bad, message in (
        ("item=abc", "item id must be a number"),
        ("from=yesterday", "is not a date"),
        ("before_id=-1", "out of range"),
        ("actor=a%00b", "NUL"),
    ):
        resp = aud.get("/audit?" + bad)
        assert resp.status_code == 400 and message in resp.get_data(as_text=True), bad
        assert aud.get("/audit.csv?" + bad).status_code == 400, bad


def test_keyset_pages_newest_first(app, sessions):
    t = datetime(2025, 1, 1, tzinfo=UTC)
    seed(sessions, *[("mo", "item.view", n, t + timedelta(seconds=n), {}) for n in range(1, 251)])
    aud, _ = logged_in(app, "aud")
    seen: list[int] = []
    url = "/audit?action=item.view"
    pages = 0
    while url:
        html = aud.get(url).get_data(as_text=True)
        ids = page_ids(html)
        assert ids == sorted(ids, reverse=True) and len(ids) <= 100
        seen += ids
        pages += 1
        more = re.search(r'href="([^"]+)" rel="next"', html)
        url = more.group(1).replace("&amp;", "&") if more else ""
        if url:
            assert "action=item.view" in url  # the filter follows the pages
    assert pages == 3
    with sessions() as s:
        expected = list(
            s.scalars(
                select(AuditRecord.id)
                .where(AuditRecord.action == "item.view")
                .order_by(AuditRecord.id.desc())
            )
        )
    assert seen == expected and len(seen) == 250


def test_details_are_shown_as_key_value_pairs_escaped(app, sessions):
    seed(
        sessions,
        (SCRIPT, "login.failure", None, datetime.now(UTC), {"address": ATTR, "n": 3, "z": {"k": SCRIPT}}),
    )
    aud, _ = logged_in(app, "aud")
    html = aud.get("/audit?action=login.failure").get_data(as_text=True)
    assert SCRIPT not in html and ATTR not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert (
        '<span class="k">address</span>=<span class="v">&#34;&gt;&lt;img src=x onerror=alert(1)&gt;</span>'
        in html
    )
    assert '<span class="k">n</span>=<span class="v">3</span>' in html
    assert audit_search.detail_pairs({"b": [1, "x"], "a": "y" * 600}) == [
        ("a", "y" * 500 + "…"),
        ("b", '[1, "x"]'),
    ]


# -- the export -----------------------------------------------------------------------------
def test_csv_export_is_a_streamed_neutralised_audited_attachment(app, sessions):
    t = datetime(2025, 2, 1, tzinfo=UTC)
    hostile = ['=HYPERLINK("http://x")', "+1+1", "-2", "@SUM(A1)", "\tx", "plain"]
    seed(
        sessions,
        *[
            (actor, "login.failure", None, t + timedelta(minutes=i), {"u": actor})
            for i, actor in enumerate(hostile)
        ],
    )
    aud, _ = logged_in(app, "aud")
    with sessions() as s:
        newest = s.scalar(select(func.max(AuditRecord.id)))
    resp = aud.get("/audit.csv?action=login.failure&from=2025-02-01")
    assert resp.is_streamed
    assert resp.mimetype == "text/csv"
    assert resp.headers["Content-Disposition"].startswith('attachment; filename="audit-')
    assert resp.headers["Content-Disposition"].endswith('.csv"')
    assert "no-store" in resp.headers["Cache-Control"]
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    rows = csv_rows(resp)
    assert list(rows[0]) == ["id", "at", "actor", "action", "item_id", "details"]
    assert [r["actor"] for r in rows] == [
        "plain",
        "'\tx",
        "'@SUM(A1)",
        "'-2",
        "'+1+1",
        '\'=HYPERLINK("http://x")',
    ]
    assert rows[0]["at"] == (t + timedelta(minutes=5)).isoformat()
    assert rows[0]["details"] == '{"u": "plain"}'
    with sessions() as s:
        exports = list(s.scalars(select(AuditRecord).where(AuditRecord.action == "audit.export")))
    assert [(e.actor, e.details) for e in exports] == [
        (
            "aud",
            {"filters": {"action": "login.failure", "from": "2025-02-01T00:00:00+00:00"}, "up_to_id": newest},
        )
    ]
    # A later export sees the earlier one, never itself (a fixed snapshot).
    again = csv_rows(aud.get("/audit.csv?action=audit"))
    assert [r["action"] for r in again] == ["audit.export"] and int(again[0]["id"]) == exports[0].id


def test_a_large_export_streams_in_chunks(app, sessions, monkeypatch):
    monkeypatch.setattr(audit_search, "STREAM_BATCH", 100)
    monkeypatch.setattr(audit_views, "CHUNK_ROWS", 100)
    with sessions() as s:
        s.execute(
            AuditRecord.__table__.insert(),
            [
                {"actor": "bulk", "action": "item.view", "item_id": n, "at": datetime.now(UTC), "details": {}}
                for n in range(2500)
            ],
        )
        s.commit()
    aud, _ = logged_in(app, "aud")
    resp = aud.get("/audit.csv?actor=bulk", buffered=False)
    chunks = [c.decode() if isinstance(c, bytes) else c for c in resp.response]
    # The header alone first, then 100 records a chunk, produced as the client reads.
    assert [c.count("\n") for c in chunks] == [1] + [100] * 25
    rows = list(csv.DictReader(io.StringIO("".join(chunks))))
    assert len(rows) == 2500 and rows[0]["item_id"] == "2499" and rows[-1]["item_id"] == "0"
    empty = aud.get("/audit.csv?actor=nobody").get_data(as_text=True)
    assert empty == "id,at,actor,action,item_id,details\r\n"


# -- roles ----------------------------------------------------------------------------------
def test_only_admins_and_auditors_read_the_log(app):
    for name in ("mo", "sen"):
        client, _ = logged_in(app, name)
        assert client.get("/audit").status_code == 403
        assert client.get("/audit.csv").status_code == 403
        assert "Audit log" not in client.get("/").get_data(as_text=True)
    for name in ("ada", "aud"):
        client, _ = logged_in(app, name)
        assert client.get("/audit").status_code == 200
        assert 'href="/audit"' in client.get("/").get_data(as_text=True)


def test_auditors_change_nothing(app, sessions):
    # Every state-changing route lets auditors in only for their own session
    # and preferences (access classes public, logout, console).
    for (endpoint, method), route in ROUTES.items():
        if method != "GET" and EXPECTED[route.access]["auditor"] == OK:
            assert route.access in ("public", "logout", "console"), (endpoint, route.access)
    aud, csrf = logged_in(app, "aud")
    before = _state(sessions)
    for path, data in (
        ("/next", {}),
        ("/items/1/reveal", {}),
        ("/items/1/decide", {"action": "allow", "reason": "not_violating"}),
        ("/items/1/release", {}),
        ("/admin/banks", {"name": "x", "action": "review"}),
    ):
        assert aud.post(path, data={**data, "csrf_token": csrf}).status_code == 403, path
    assert aud.post("/api/v1/queue/claim", json={}, headers={"X-CSRF-Token": csrf}).status_code == 403
    assert aud.get("/items/1").status_code == 403
    assert _state(sessions) == before
    index = aud.get("/").get_data(as_text=True)
    assert 'id="next"' not in index and 'action="/next"' not in index
    assert 'href="/audit"' in index and 'href="/dashboard"' in index


def _state(sessions: Any) -> tuple[Any, ...]:
    with sessions() as s:
        return (
            s.execute(select(Item.id, Item.state, Item.claimed_by).order_by(Item.id)).all(),
            s.scalar(select(func.count()).select_from(Decision)),
            s.execute(select(AuditRecord.action).where(AuditRecord.actor == "aud")).scalars().all(),
        )


# -- append-only ------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_the_database_refuses_to_change_or_delete_audit_records(backend, db_url, sqlite_url):
    engine = create_engine(db_url if backend == "postgresql" else sqlite_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                AuditRecord.__table__.insert(),
                {"actor": "mo", "action": "item.view", "item_id": 1, "at": datetime.now(UTC), "details": {}},
            )
        for statement in (
            "UPDATE audit_log SET actor = 'someone else'",
            "UPDATE audit_log SET details = '{}' WHERE id = 1",
            "DELETE FROM audit_log",
            "DELETE FROM audit_log WHERE id = 1",
        ):
            with pytest.raises(DBAPIError, match="append-only|audit"):
                with engine.begin() as conn:
                    conn.execute(text(statement))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT actor FROM audit_log")).scalars().all() == ["mo"]
    finally:
        engine.dispose()
