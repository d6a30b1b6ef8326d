"""The leads' dashboard on seeded data: queue depth by band, oldest age, SLA,
decisions per hour, per-moderator throughput and exposure; the page (SVG
charts, tables) and the JSON API; who may see it."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema
import pytest
from sqlalchemy import select

from moderation.config import load_settings
from moderation.storage import stats
from moderation.storage.db import make_engine, make_sessionmaker
from moderation.storage.models import AuditRecord, Decision, ExposureSession, Item, User
from moderation.web.api import OPENAPI_PATH
from tests.integration.test_authz_matrix import CHEAP_HASH, PASSWORD
from tests.support.factories import make_item
from tests.support.web import login, make_app

PINNED = datetime(2025, 6, 1, 12, 30, tzinfo=UTC)
EVIL = "<script>alert(1)</script>"


def seed(sessions: Any, now: datetime) -> None:
    """Open items, decisions, audit records and exposure relative to ``now``.

    Open: three priority 80+ items (two past deadline, one due in 2 h), one at
    priority 10, one senior-tier item due in 5 h, one under a live claim (past
    deadline) and one whose claim lapsed. Decisions: mo 3 and sen 3 (one an
    escalation) in the last 40 minutes, 4 automatic 2 hours ago, older ones at
    3 and 10 days."""
    m = timedelta(minutes=1)
    h = timedelta(hours=1)
    with sessions() as s:
        users = {}
        for name, role in (
            ("mo", "moderator"),
            ("sen", "senior"),
            ("lee", "moderator"),
            ("kim", "moderator"),
        ):
            users[name] = User(username=name, password_hash=CHEAP_HASH, role=role)
            s.add(users[name])
        for name, role in (("aud", "auditor"), ("ada", "admin"), (EVIL, "moderator")):
            users[name] = User(username=name, password_hash=CHEAP_HASH, role=role)
            s.add(users[name])
        s.flush()
        open_items = [
            dict(priority=80, created_at=now - 5 * h, due_at=now - h),
            dict(priority=85, created_at=now - h, due_at=now - 10 * m),
            dict(priority=100, created_at=now - 30 * m, due_at=now + 2 * h),
            dict(priority=10, created_at=now - 2 * h, due_at=now + 40 * h),
            dict(priority=45, created_at=now - 3 * h, due_at=now + 5 * h, tier="senior"),
            dict(
                priority=60,
                created_at=now - 6 * h,
                due_at=now - 2 * h,
                state="claimed",
                claimed_by=users["mo"].id,
                lease_expires_at=now + 5 * m,
            ),
            dict(
                priority=30,
                created_at=now - 4 * h,
                due_at=now + 30 * h,
                state="claimed",
                claimed_by=users["lee"].id,
                lease_expires_at=now - m,
            ),
        ]
        for n, values in enumerate(open_items, 1):
            s.add(make_item(n, **values))
        # (item number, source, moderator, action, decided, due)
        decided = [
            (16, "moderator", "mo", "remove", now - 10 * 24 * h, now - 11 * 24 * h),
            (15, "moderator", "mo", "remove", now - 3 * 24 * h, now - 4 * 24 * h),
            *[(18 + i, "hash_match", None, "remove", now - 2 * h, now + 40 * h) for i in range(4)],
            (12, "moderator", "mo", "allow", now - 40 * m, now + 40 * h),
            (14, "moderator", "sen", "remove", now - 25 * m, now - h),
            (11, "moderator", "mo", "remove", now - 20 * m, now + 40 * h),
            (13, "moderator", "sen", "allow", now - 15 * m, now + 40 * h),
            (10, "moderator", "mo", "remove", now - 10 * m, now + 40 * h),
            (17, "moderator", "sen", "escalate", now - 5 * m, now - h),
        ]
        for n, source, moderator, action, at, due in decided:  # in time order, as in production
            item = make_item(n, state="decided", created_at=at - h, decided_at=at, due_at=due)
            s.add(item)
            s.flush()
            s.add(
                Decision(
                    idempotency_key=f"k{n}",
                    item_id=item.id,
                    content_id=item.content_id,
                    action=action,
                    source=source,
                    reason="ncii",
                    moderator=moderator,
                    payload={},
                    created_at=at,
                )
            )
            s.flush()
        item_ids = {i.event_id: i.id for i in s.scalars(select(Item))}
        audit = [
            ("mo", "item.claim", "e12", now - 45 * m),
            ("mo", "decision.allow", "e12", now - 40 * m),  # 300 s
            ("mo", "item.claim", "e11", now - 21 * m),
            ("mo", "decision.remove", "e11", now - 20 * m),  # 60 s
            ("sen", "decision.allow", "e13", now - 15 * m),  # no claim: not timed
            ("mo", "item.claim", "e10", now - 12 * m),
            ("mo", "decision.remove", "e10", now - 10 * m),  # 120 s
            ("pipeline", "decision.remove", "e18", now - 2 * h),
        ]
        for actor, action, event_id, at in sorted(audit, key=lambda a: a[3]):
            s.add(AuditRecord(actor=actor, action=action, item_id=item_ids[event_id], at=at, details={}))
        today = now.replace(hour=0, minute=0, second=0, microsecond=0)
        exposure: list[tuple[Any, ...]] = [
            # mo: two breaks today, now 42 items and 5 minutes revealed since the last, break prompted.
            (users["mo"], today, today, today, 0),
            (users["mo"], today, today, today + (now - today) / 2, 0),
            (users["mo"], now - h, now - 5 * m, None, 42, now - 10 * m),
            # sen: a break yesterday only.
            (users["sen"], now - 30 * h, now - 20 * h, now - 20 * h, 5),
            # lee: working, no decisions yet; kim: an old open session, not shown.
            (users["lee"], now - 2 * h, now - 3 * m, None, 7),
            (users["kim"], now - 72 * h, now - 48 * h, None, 90),
            (users[EVIL], now - 2 * h, now - 3 * m, None, 1),
        ]
        for user, started, seen, ended, viewed, *prompted in exposure:
            s.add(
                ExposureSession(
                    user_id=user.id,
                    started_at=started,
                    last_seen_at=seen,
                    ended_at=ended,
                    items_viewed=viewed,
                    revealed_seconds=300.0 if viewed == 42 else 30.0,
                    break_prompted_at=prompted[0] if prompted else None,
                )
            )
        s.commit()


@pytest.fixture
def app(db_url):
    settings = load_settings(
        {}, database_url=db_url, secret_key="test-secret", dev_mode=True, sla_near_hours=6
    )
    return make_app(settings)


@pytest.fixture(params=["postgresql", "sqlite"])
def any_sessions(request):
    """PostgreSQL (production) and SQLite (the embedded default): the SQL differs per dialect."""
    if request.param == "postgresql":
        yield request.getfixturevalue("sessions")
        return
    engine = make_engine(request.getfixturevalue("sqlite_url"))
    yield make_sessionmaker(engine)
    engine.dispose()


def test_numbers_on_seeded_data(any_sessions):
    seed(any_sessions, PINNED)
    with any_sessions() as s:
        d = stats.dashboard(s, near_hours=6, now=PINNED)
    assert {(b.tier, b.band): b.count for b in d.bands} == {
        ("moderator", "80-100"): 3,
        ("moderator", "0-19"): 1,
        ("moderator", "20-39"): 1,  # the lapsed claim waits again
        ("senior", "40-59"): 1,
    }
    assert d.waiting == 6 and d.claimed == 1
    assert d.oldest_pending_at == PINNED - timedelta(hours=5) and d.oldest_age_seconds == 5 * 3600
    assert (d.sla.breached, d.sla.near, d.sla.near_hours) == (3, 2, 6)
    assert (d.sla.decided_late, d.sla.decided_on_time) == (2, 4)  # items 14, 15 late; escalation not counted
    assert d.window_start == datetime(2025, 5, 31, 13, tzinfo=UTC)
    assert len(d.hours) == 24 and d.hours[-1].start == datetime(2025, 6, 1, 12, tzinfo=UTC)
    per_hour = {h.start.hour: (h.moderator, h.automatic) for h in d.hours if h.moderator or h.automatic}
    assert per_hour == {12: (5, 0), 11: (1, 0), 10: (0, 4)}
    rows = {r.username: r for r in d.moderators}
    # Most decisions first, then by name; kim's open session is stale.
    assert list(rows) == ["mo", "sen", EVIL, "lee"]
    mo, sen, lee = rows["mo"], rows["sen"], rows["lee"]
    assert (mo.decisions, mo.active_hours, mo.per_hour, mo.median_claim_seconds) == (3, 2, 1.5, 120.0)
    assert (mo.items_viewed, mo.revealed_seconds, mo.break_due, mo.breaks_today) == (42, 300.0, True, 2)
    assert mo.since_break_at == PINNED - timedelta(hours=1)
    assert (sen.decisions, sen.active_hours, sen.per_hour, sen.median_claim_seconds) == (3, 1, 3.0, None)
    assert (sen.breaks_today, sen.items_viewed, sen.since_break_at) == (0, 0, None)
    assert (lee.decisions, lee.items_viewed, lee.break_due) == (0, 7, False)


def test_an_empty_database(sessions):
    with sessions() as s:
        d = stats.dashboard(s, near_hours=6, now=PINNED)
    assert d.bands == [] and d.waiting == 0 and d.oldest_age_seconds is None
    assert all(h.moderator == h.automatic == 0 for h in d.hours) and d.moderators == []
    assert (d.sla.breached, d.sla.near, d.sla.decided_late, d.sla.decided_on_time) == (0, 0, 0, 0)


def test_the_window_of_decisions_is_found_by_bisection(sessions):
    start = datetime(2025, 1, 1, tzinfo=UTC)
    with sessions() as s:
        item = make_item(1, state="decided")
        s.add(item)
        s.flush()
        for n in range(0, 300, 3):  # every third id used: the search must step over gaps
            s.add(
                Decision(
                    id=n + 1,
                    idempotency_key=f"k{n}",
                    item_id=item.id,
                    content_id="c",
                    action="allow",
                    source="classifier",
                    reason="r",
                    payload={},
                    created_at=start + timedelta(minutes=n),
                )
            )
        s.commit()
        ids = [(d.id, d.created_at) for d in s.scalars(select(Decision).order_by(Decision.id))]
        for minutes in (-5, 0, 1, 3, 100, 101, 297, 298, 400):
            since = start + timedelta(minutes=minutes)
            want = next((i for i, at in ids if at >= since), None)
            got = stats.first_id_since(s, Decision.id, Decision.created_at, since)
            if want is None:
                assert got is None, minutes
            else:  # the first id of the window, or a missing id just before it
                assert got is not None and got <= want, minutes
                assert not [i for i, at in ids if got <= i and at < since], minutes


def test_pure_helpers():
    assert [stats.band_of(p) for p in (-3, 0, 19, 20, 59, 79, 80, 100, 150)] == [
        "0-19",
        "0-19",
        "0-19",
        "20-39",
        "40-59",
        "60-79",
        "80-100",
        "80-100",
        "80-100",
    ]
    t = PINNED
    events = [
        ("a", "item.claim", 1, t - timedelta(minutes=70)),
        ("a", "decision.allow", 1, t - timedelta(minutes=65)),  # before the window
        ("a", "item.claim", 2, t),
        ("b", "decision.remove", 2, t + timedelta(seconds=5)),  # someone else's claim
        ("a", "decision.remove", 2, t + timedelta(seconds=30)),
        ("a", "decision.remove", None, t + timedelta(seconds=40)),
    ]
    assert stats.claim_to_decision(events, since=t - timedelta(minutes=60)) == {"a": [30.0]}


# -- the web ------------------------------------------------------------------------------
def test_the_page_shows_charts_and_tables(app, sessions):
    now = datetime.now(UTC)
    seed(sessions, now)
    client = app.test_client()
    login(client, "sen", PASSWORD)
    resp = client.get("/dashboard")
    assert resp.status_code == 200
    html = resp.get_data(as_text=True)
    assert re.search(r'<dd id="waiting">6</dd>', html) and re.search(r'<dd id="claimed">1</dd>', html)
    assert re.search(r'<dd id="breached">3</dd>', html) and re.search(r'<dd id="near">2</dd>', html)
    assert '<dd id="oldest">5 h 0 min</dd>' in html
    assert html.count('<svg class="chart"') == 2
    assert "style=" not in html and "<script>" not in html.replace(
        '<script src="/static/console.js"></script>', ""
    )
    assert re.search(
        r"<tr><td>80-100</td><td>3</td><td>0</td><td>3</td></tr>", html
    )  # moderator, senior, all
    assert "80-100: moderator 3" in html  # the bar's title
    row = re.search(
        r"<td>mo</td>\s*<td>(\d+)</td>\s*<td>[\d.]+</td>\s*<td>([^<]+)</td>\s*<td>(\d+)</td>", html
    )
    assert row and row.groups() == ("3", "2 min", "42")
    assert "break due" in html
    assert EVIL not in html and "<td>&lt;script&gt;alert(1)&lt;/script&gt;</td>" in html
    for section in ("queue", "throughput", "sla", "moderators"):
        assert f'id="{section}"' in html


def test_the_json_api_has_the_same_numbers(app, sessions):
    now = datetime.now(UTC)
    seed(sessions, now)
    auth = {"Authorization": "Basic " + base64.b64encode(f"ada:{PASSWORD}".encode()).decode()}
    body = app.test_client().get("/api/v1/dashboard", headers=auth).get_json()
    spec = json.loads(OPENAPI_PATH.read_text())
    jsonschema.validate(
        body, {**spec["components"]["schemas"]["Dashboard"], "components": spec["components"]}
    )
    assert body["queue"]["waiting"] == 6 and body["queue"]["claimed"] == 1
    assert body["queue"]["oldest_age_seconds"] == pytest.approx(5 * 3600, abs=60)
    assert {"tier": "moderator", "band": "80-100", "count": 3} in body["queue"]["bands"]
    assert body["sla"] == {
        "breached": 3,
        "near": 2,
        "near_hours": 6,
        "decided_late_7d": 2,
        "decided_on_time_7d": 4,
    }
    assert len(body["decisions_per_hour"]) == 24
    assert sum(h["moderator"] for h in body["decisions_per_hour"]) == 6
    assert sum(h["automatic"] for h in body["decisions_per_hour"]) == 4
    mo = next(m for m in body["moderators"] if m["username"] == "mo")
    assert mo["decisions"] == 3 and mo["median_claim_seconds"] == 120.0 and mo["items_viewed"] == 42
    assert mo["break_due"] is True and mo["revealed_seconds"] == 300.0
    moderator = {"Authorization": "Basic " + base64.b64encode(f"mo:{PASSWORD}".encode()).decode()}
    resp = app.test_client().get("/api/v1/dashboard", headers=moderator)
    assert resp.status_code == 403 and "error" in resp.get_json()


def test_who_sees_the_dashboard(app, sessions):
    seed(sessions, datetime.now(UTC))
    for name, status in (("mo", 403), ("sen", 200), ("ada", 200), ("aud", 200)):
        client = app.test_client()
        login(client, name, PASSWORD)
        assert client.get("/dashboard").status_code == status, name
        linked = 'href="/dashboard"' in client.get("/").get_data(as_text=True)
        assert linked == (status == 200), name


def test_an_empty_dashboard_renders(app, sessions):
    with sessions() as s:
        s.add(User(username="aud", password_hash=CHEAP_HASH, role="auditor"))
        s.commit()
    client = app.test_client()
    login(client, "aud", PASSWORD)
    html = client.get("/dashboard").get_data(as_text=True)
    assert html.count(">no data</text>") == 2 and "No moderator decided" in html
