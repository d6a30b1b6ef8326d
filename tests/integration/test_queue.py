"""The review queue on real PostgreSQL (row locks, SKIP LOCKED) and on the
SQLite default: claim order (tiers, SLA deadlines, rank), exclusions and skips,
leases (renewal, expiry), no double claims, and the leads' queue views."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text

from moderation.config import Settings, load_settings
from moderation.storage import queue, queue_views, users
from moderation.storage.db import make_engine, make_sessionmaker
from moderation.storage.models import AuditRecord, Item, ItemExclusion, User, utcnow
from tests.support.factories import make_item
from tests.support.web import login, make_app

SETTINGS = Settings(sla_hours="ncii=48,spam=200,default=100", sla_near_hours=6, priority_point_minutes=15)


@pytest.fixture(params=["postgresql", "sqlite"])
def qurl(request):
    return request.getfixturevalue("db_url" if request.param == "postgresql" else "sqlite_url")


@pytest.fixture
def qsessions(qurl):
    engine = make_engine(qurl)
    yield make_sessionmaker(engine)
    engine.dispose()


def _add(sessions, *specs: dict[str, Any]) -> list[int]:
    """Items scheduled as record_analysis does; each spec: priority, tier, age_h,
    reason, report_reason, state. Returns their ids in order."""
    now = utcnow()
    ids = []
    with sessions() as s:
        for spec in specs:
            n = s.scalar(select(Item.id).order_by(Item.id.desc()).limit(1)) or 0
            report = spec.get("report_reason")
            item = make_item(
                n + 1,
                priority=spec.get("priority", 50),
                tier=spec.get("tier", "moderator"),
                reason=spec.get("reason", "classifier_score"),
                state=spec.get("state", "pending"),
                event={"report_reason": report} if report else {},
                created_at=now - timedelta(hours=spec.get("age_h", 0)),
            )
            queue.schedule(item, SETTINGS)
            s.add(item)
            s.flush()
            ids.append(item.id)
        s.commit()
    return ids


def _user(s, name: str, role: str, password: str = "a long enough password") -> User:
    # create_user may not know the newer roles yet: the role is set directly.
    user = users.create_user(s, name, password, "moderator")
    user.role = role
    s.flush()
    return user


def _users(sessions, *specs):
    with sessions() as s:
        made = [_user(s, name, role) for name, role in specs]
        s.commit()
        return [u.id for u in made]


def _claim(sessions, user_id, lease=60, now=None):
    with sessions() as s:
        user = s.get(User, user_id)
        item = queue.claim_next_item(s, user, lease, now=now, settings=SETTINGS)
        s.commit()
        return None if item is None else item.id


def _decide(sessions, item_id):
    with sessions() as s:
        item = s.get(Item, item_id)
        item.state, item.lease_expires_at, item.decided_at = "decided", None, utcnow()
        s.commit()


def _drain(sessions, user_id) -> list[int]:
    """Claim and decide until the user gets nothing: the order they are served in."""
    order = []
    while (got := _claim(sessions, user_id)) is not None:
        order.append(got)
        _decide(sessions, got)
    return order


# -- order ---------------------------------------------------------------------------------
def test_rank_trades_priority_against_waiting_time(qsessions):
    # 15 minutes per priority point: 80 points now ranks like 20 h of waiting.
    fresh_high, old_mid, recent_low = _add(
        qsessions, dict(priority=80, age_h=0), dict(priority=40, age_h=12), dict(priority=10, age_h=1)
    )
    (u,) = _users(qsessions, ("a", "moderator"))
    assert _drain(qsessions, u) == [old_mid, fresh_high, recent_low]


def test_equal_rank_is_served_oldest_id_first(qsessions):
    ids = _add(qsessions, *[dict(priority=50, age_h=0)] * 3)
    with qsessions() as s:  # the same rank exactly
        rank = s.get(Item, ids[0]).rank_at
        for i in ids:
            s.get(Item, i).rank_at = rank
        s.commit()
    (u,) = _users(qsessions, ("a", "moderator"))
    assert _drain(qsessions, u) == ids


def test_items_near_or_past_their_deadline_come_first_soonest_first(qsessions):
    # default SLA 100 h, near = 6 h: 96 h old is 4 h from breach, 103 h old is breached.
    top, near, breached, nearer = _add(
        qsessions,
        dict(priority=100, age_h=0),
        dict(priority=0, age_h=96),
        dict(priority=0, age_h=103),
        dict(priority=0, age_h=99),
    )
    (u,) = _users(qsessions, ("a", "moderator"))
    assert _drain(qsessions, u) == [breached, nearer, near, top]


def test_the_report_reason_picks_the_sla(qsessions):
    # Both arrived 44 h ago: the NCII report is due in 4 h (48 h SLA), the other in 56 h.
    other, ncii = _add(
        qsessions, dict(priority=90, age_h=44), dict(priority=0, age_h=44, report_reason="ncii")
    )
    with qsessions() as s:
        due = {i: s.get(Item, i).due_at for i in (other, ncii)}
        created = s.get(Item, ncii).created_at
    assert due[ncii] - created == timedelta(hours=48)
    assert due[other] - created == timedelta(hours=100)
    (u,) = _users(qsessions, ("a", "moderator"))
    assert _drain(qsessions, u) == [ncii, other]  # although the other ranks higher


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        ("moderator", ["second_review", "appeal", "moderator"]),
        ("senior", ["senior", "second_review", "appeal", "moderator"]),
        ("admin", ["restricted", "senior", "second_review", "appeal", "moderator"]),
        ("auditor", []),
    ],
)
def test_tiers_are_served_in_the_roles_order(qsessions, role, expected):
    tiers = ["moderator", "appeal", "senior", "restricted", "second_review"]
    # The lowest tier has the best rank: the more urgent queues still come first.
    ids = _add(qsessions, *[dict(tier=t, priority=100 if t == "moderator" else 0, age_h=0) for t in tiers])
    (u,) = _users(qsessions, ("u", role))
    with qsessions() as s:
        tier_of = {i: s.get(Item, i).tier for i in ids}
    assert [tier_of[i] for i in _drain(qsessions, u)] == expected


def test_a_near_breach_item_comes_before_the_other_queues(qsessions):
    """A flood of appeals or second reviews must not make the main queue miss
    its SLA: near-breach items of every queue come before anything by rank."""
    ids = _add(
        qsessions,
        dict(tier="appeal", priority=100, age_h=0),
        dict(tier="second_review", priority=100, age_h=0),
        dict(tier="moderator", priority=0, age_h=0),
    )
    with qsessions() as s:
        s.get(Item, ids[2]).due_at = utcnow() + timedelta(hours=1)
        s.commit()
    (u,) = _users(qsessions, ("u", "moderator"))
    assert _drain(qsessions, u) == [ids[2], ids[1], ids[0]]


def test_items_without_rank_or_deadline_are_still_claimable(qsessions):
    # Rows inserted directly (tools, old rows): scheduled at their first claim.
    with qsessions() as s:
        now = utcnow()
        s.add(make_item(1, priority=10, created_at=now))
        s.add(make_item(2, priority=90, created_at=now))
        s.commit()
    (u,) = _users(qsessions, ("a", "moderator"))
    first = _claim(qsessions, u)
    with qsessions() as s:
        assert s.get(Item, first).event_id == "e2"
        assert s.scalar(select(Item.rank_at).where(Item.event_id == "e1")) is not None
        assert s.scalar(select(Item.due_at).where(Item.event_id == "e1")) is not None


# -- exclusions and skips ----------------------------------------------------------------
def test_an_excluded_item_is_never_served_to_that_user(qsessions):
    first, second = _add(qsessions, dict(priority=90), dict(priority=10))
    a, b = _users(qsessions, ("a", "moderator"), ("b", "moderator"))
    with qsessions() as s:
        queue.exclude(s, first, a, "first_review")
        queue.exclude(s, first, a, "first_review")  # idempotent
        s.commit()
    assert _drain(qsessions, a) == [second]
    assert _claim(qsessions, b) == first


def test_a_skipped_item_never_comes_back_to_the_skipper_and_keeps_its_priority(qsessions):
    high, low = _add(qsessions, dict(priority=90), dict(priority=10))
    a, b = _users(qsessions, ("a", "moderator"), ("b", "moderator"))
    assert _claim(qsessions, a) == high
    with qsessions() as s:
        item, user = s.get(Item, high), s.get(User, a)
        rank, due = item.rank_at, item.due_at
        queue.skip(s, item, user)
        s.commit()
    for _ in range(3):  # pressing "next" again and again: never the skipped item
        assert _claim(qsessions, a) == low
    _decide(qsessions, low)
    assert _claim(qsessions, a) is None
    assert _claim(qsessions, b) == high  # first for everybody else
    with qsessions() as s:
        item = s.get(Item, high)
        assert (item.rank_at, item.due_at) == (rank, due)
        assert s.get(ItemExclusion, (high, a)).why == "skipped"


# -- leases --------------------------------------------------------------------------------
def test_a_live_claim_is_returned_instead_of_a_second_item(qsessions):
    _add(qsessions, dict(priority=50), dict(priority=40))
    (u,) = _users(qsessions, ("a", "moderator"))
    first = _claim(qsessions, u)
    assert _claim(qsessions, u) == first


def test_expired_leases_return_items_to_the_queue(qsessions):
    (item,) = _add(qsessions, dict(priority=50))
    a, b = _users(qsessions, ("a", "moderator"), ("b", "moderator"))
    assert _claim(qsessions, a, lease=30) == item
    assert _claim(qsessions, b) is None
    later = utcnow() + timedelta(seconds=31)
    assert _claim(qsessions, b, now=later) == item
    with qsessions() as s:
        assert not queue.holds_live_claim(s.get(Item, item), s.get(User, a), now=later)
        expiry = s.scalars(select(AuditRecord).where(AuditRecord.action == "item.lease_expired")).all()
        assert [(r.item_id, r.details["claimed_by"]) for r in expiry] == [(item, a)]


def test_renewing_a_lease_keeps_the_item_and_a_gone_claim_cannot_be_renewed(qsessions):
    (item,) = _add(qsessions, dict(priority=50))
    a, b = _users(qsessions, ("a", "moderator"), ("b", "moderator"))
    _claim(qsessions, a, lease=30)
    t = utcnow()
    with qsessions() as s:
        renewed = queue.renew_lease(s.get(Item, item), s.get(User, a), 30, now=t + timedelta(seconds=20))
        s.commit()
    assert renewed == t + timedelta(seconds=50)
    assert _claim(qsessions, b, now=t + timedelta(seconds=45)) is None  # without renewal it had expired
    with qsessions() as s:
        assert queue.renew_lease(s.get(Item, item), s.get(User, b), 30) is None  # not b's claim
        late = t + timedelta(seconds=51)
        assert queue.renew_lease(s.get(Item, item), s.get(User, a), 30, now=late) is None  # ran out


def test_expired_leases_are_returned_concurrently_without_double_claims(qsessions):
    n = 30
    ids = _add(qsessions, *[dict(priority=i % 5) for i in range(n)])
    holders = _users(qsessions, *[(f"h{i}", "moderator") for i in range(n)])
    for h in holders:
        _claim(qsessions, h, lease=1)
    later = utcnow() + timedelta(seconds=5)
    claimers = _users(qsessions, *[(f"c{i}", "moderator") for i in range(6)])
    claimed: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def claimer(user_id: int) -> None:
        try:
            while (got := _claim(qsessions, user_id, now=later)) is not None:
                _decide(qsessions, got)
                with lock:
                    claimed.append(got)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(u,)) for u in claimers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert sorted(claimed) == sorted(ids)  # each exactly once


def test_concurrent_claimers_never_get_the_same_item(qsessions):
    n_items, n_claimers = 60, 12
    # Several tiers and deadlines: every walk of the claim is exercised.
    ids = _add(
        qsessions,
        *[
            dict(priority=i % 7, age_h=(i % 4) * 40, tier=("moderator", "appeal", "second_review")[i % 3])
            for i in range(n_items)
        ],
    )
    users_ = _users(qsessions, *[(f"u{i}", "moderator") for i in range(n_claimers)])
    claimed: list[int] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def claimer(user_id: int) -> None:
        try:
            while True:
                with qsessions() as s:
                    user = s.get(User, user_id)
                    item = queue.claim_next_item(s, user, 60, settings=SETTINGS)
                    if item is None:
                        return
                    item.state = "decided"  # decide at once so the next claim takes a new item
                    item_id = item.id
                    s.commit()
                with lock:
                    claimed.append(item_id)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(u,)) for u in users_]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert sorted(claimed) == sorted(ids)  # zero double claims, nothing lost


def test_one_user_clicking_next_twice_at_once_gets_one_item(qsessions):
    _add(qsessions, *[dict(priority=50, age_h=i) for i in range(6)])
    (u,) = _users(qsessions, ("a", "moderator"))
    results: list[int | None] = []
    barrier = threading.Barrier(4)

    def click() -> None:
        barrier.wait()
        results.append(_claim(qsessions, u))

    threads = [threading.Thread(target=click) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 4 and len(set(results)) == 1 and results[0] is not None
    with qsessions() as s:
        assert len(s.scalars(select(Item.id).where(Item.claimed_by == u)).all()) == 1


def test_queue_depth_counts_expired_claims_as_pending(qsessions):
    _add(qsessions, dict(priority=50), dict(priority=20))
    (u,) = _users(qsessions, ("a", "moderator"))
    _claim(qsessions, u, lease=30)
    with qsessions() as s:
        now_depth = {(st, p): n for st, _t, p, n in queue.queue_depth(s)}
        later = {(st, p): n for st, _t, p, n in queue.queue_depth(s, now=utcnow() + timedelta(seconds=60))}
    assert now_depth == {("claimed", 50): 1, ("pending", 20): 1}
    assert later == {("pending", 50): 1, ("pending", 20): 1}


# -- queue views ---------------------------------------------------------------------------
def _seed_views(sessions) -> dict[str, int]:
    """One item per situation; returns their ids by name."""
    names = ["waiting", "claimed", "expired", "senior", "restricted", "breached", "decided"]
    ids = dict(
        zip(
            names,
            _add(
                sessions,
                dict(priority=10),
                dict(priority=90),
                dict(priority=20),
                dict(priority=30, tier="senior"),
                dict(priority=40, tier="restricted"),
                dict(priority=5, age_h=101),
                dict(priority=50, state="decided"),
            ),
            strict=True,
        )
    )
    (holder,) = _users(sessions, ("holder", "moderator"))
    with sessions() as s:
        now = utcnow()
        for name, lease in (("claimed", now + timedelta(minutes=5)), ("expired", now - timedelta(seconds=1))):
            item = s.get(Item, ids[name])
            item.state, item.claimed_by, item.lease_expires_at = "claimed", holder, lease
        s.commit()
    return ids


def test_queue_view_counts_and_rows(qsessions):
    ids = _seed_views(qsessions)
    with qsessions() as s:
        admin = queue_views.view_counts(s, include_restricted=True)
        lead = queue_views.view_counts(s, include_restricted=False)
        rows = {v: [r.id for r in queue_views.view_rows(s, v, True, limit=50)] for v in queue_views.VIEWS}
        claimed_row = queue_views.view_rows(s, "claimed", True, limit=50)[0]
    assert admin == {"waiting": 5, "claimed": 1, "escalated": 2, "breached": 1}
    assert lead == {"waiting": 4, "claimed": 1, "escalated": 1, "breached": 1}
    assert sorted(rows["waiting"]) == sorted(
        ids[n] for n in ("waiting", "expired", "senior", "restricted", "breached")
    )
    assert rows["waiting"][0] == ids["breached"]  # soonest deadline first
    assert rows["claimed"] == [ids["claimed"]]
    assert sorted(rows["escalated"]) == sorted([ids["senior"], ids["restricted"]])
    assert rows["breached"] == [ids["breached"]]
    assert claimed_row.claimed_by == "holder" and claimed_row.lease_expires_at is not None


# -- through the console and the API --------------------------------------------------------
@pytest.fixture
def web(qurl, qsessions):
    def make(**settings: Any) -> Any:
        # with_overrides skips validation: a lease of one second keeps the expiry test short.
        base = load_settings({}, database_url=qurl, secret_key="k", dev_mode=True)
        return make_app(base.with_overrides(**settings))

    return make


def _client(app, sessions, name, role):
    password = "correct horse battery"
    with sessions() as s:
        _user(s, name, role, password)
        s.commit()
    client = app.test_client()
    return client, login(client, name, password)


def _next(client, csrf) -> int | None:
    resp = client.post("/next", data={"csrf_token": csrf})
    assert resp.status_code == 302
    return int(resp.location.rsplit("/", 1)[1]) if "/items/" in resp.location else None


def test_skip_in_the_console_never_serves_the_item_back(web, qsessions):
    high, low = _add(qsessions, dict(priority=90), dict(priority=10))
    app = web()
    a, a_csrf = _client(app, qsessions, "ann", "moderator")
    b, b_csrf = _client(app, qsessions, "bob", "moderator")
    assert _next(a, a_csrf) == high
    page = a.get(f"/items/{high}").get_data(as_text=True)
    assert "Skip" in page and 'data-key="s"' in page
    assert a.post(f"/items/{high}/release", data={"csrf_token": a_csrf}).status_code == 302
    served = [_next(a, a_csrf) for _ in range(3)]
    assert served == [low, low, low]
    _decide(qsessions, low)
    assert _next(a, a_csrf) is None
    assert _next(b, b_csrf) == high
    with qsessions() as s:
        actions = s.scalars(select(AuditRecord.action).where(AuditRecord.item_id == high)).all()
    assert "item.skip" in actions


def test_an_abandoned_claim_returns_to_the_queue_when_its_short_lease_runs_out(web, qsessions):
    (item,) = _add(qsessions, dict(priority=50))
    app = web(claim_lease_seconds=1)
    a, a_csrf = _client(app, qsessions, "ann", "moderator")
    b, b_csrf = _client(app, qsessions, "bob", "moderator")
    assert _next(a, a_csrf) == item
    assert _next(b, b_csrf) is None
    time.sleep(1.2)  # ann closed the page: nothing renews her claim
    assert _next(b, b_csrf) == item
    resp = a.post(f"/items/{item}/lease", headers={"X-CSRF-Token": a_csrf})
    assert resp.status_code == 404  # not hers to see any more; lease.js then tells her the claim has ended
    assert b.post(f"/items/{item}/lease", headers={"X-CSRF-Token": b_csrf}).status_code == 200


def test_the_open_page_renews_the_lease(web, qsessions):
    (item,) = _add(qsessions, dict(priority=50))
    app = web(claim_lease_seconds=60)
    a, a_csrf = _client(app, qsessions, "ann", "moderator")
    sen, sen_csrf = _client(app, qsessions, "sue", "senior")
    assert _next(a, a_csrf) == item
    page = a.get(f"/items/{item}").get_data(as_text=True)
    assert 'id="lease"' in page and "lease.js" in page and 'data-lease-seconds="60"' in page
    with qsessions() as s:
        before = s.get(Item, item).lease_expires_at
    assert a.post(f"/items/{item}/lease").status_code == 400  # no CSRF token
    time.sleep(0.05)
    resp = a.post(f"/items/{item}/lease", headers={"X-CSRF-Token": a_csrf})
    assert resp.status_code == 200
    renewed = datetime.fromisoformat(resp.get_json()["lease_expires_at"])
    assert renewed > before
    # The JSON API does the same; a senior may see the item but holds no claim on it.
    api = a.post(f"/api/v1/items/{item}/lease", headers={"X-CSRF-Token": a_csrf}, json={})
    assert api.status_code == 200 and "lease_expires_at" in api.get_json()
    assert (
        sen.post(f"/api/v1/items/{item}/lease", headers={"X-CSRF-Token": sen_csrf}, json={}).status_code
        == 409
    )
    # After a skip the claim is gone, and with it her right to see the item: 404, as for no
    # such item, which the page reports to the moderator as the end of her claim.
    a.post(f"/items/{item}/release", data={"csrf_token": a_csrf})
    with qsessions() as s:
        assert s.get(Item, item).state == "pending"
    gone = a.post(f"/items/{item}/lease", headers={"X-CSRF-Token": a_csrf})
    missing = a.post("/items/999999/lease", headers={"X-CSRF-Token": a_csrf})
    assert gone.status_code == missing.status_code == 404 and gone.get_data() == missing.get_data()


def test_item_page_and_api_show_the_sla(web, qsessions):
    (item,) = _add(qsessions, dict(priority=50, age_h=103))  # 100 h SLA: breached 3 h ago
    app = web(sla_hours="ncii=48,spam=200,default=100")
    a, a_csrf = _client(app, qsessions, "ann", "moderator")
    claimed = a.post("/api/v1/queue/claim", headers={"X-CSRF-Token": a_csrf}, json={}).get_json()
    assert claimed["id"] == item and claimed["due_at"] and claimed["rank_at"]
    assert -3 * 3600 - 60 < claimed["sla_seconds_left"] <= -3 * 3600
    page = a.get(f"/items/{item}").get_data(as_text=True)
    assert "breached 3 h ago" in page and 'data-kind="sla"' in page


def test_queue_views_page_for_leads(web, qsessions):
    ids = _seed_views(qsessions)
    app = web()
    mod, _ = _client(app, qsessions, "mo", "moderator")
    sen, _ = _client(app, qsessions, "sen", "senior")
    aud, _ = _client(app, qsessions, "aud", "auditor")
    ada, _ = _client(app, qsessions, "ada", "admin")
    assert mod.get("/queues").status_code == 403
    assert "/queues" not in mod.get("/").get_data(as_text=True)
    senior_page = sen.get("/queues?view=escalated").get_data(as_text=True)
    assert "Escalated (1)" in senior_page and "Waiting (4)" in senior_page
    assert f"#{ids['senior']}" in senior_page and f"#{ids['restricted']}" not in senior_page
    assert f'href="/items/{ids["senior"]}"' in senior_page
    admin_page = ada.get("/queues?view=escalated").get_data(as_text=True)
    assert f"#{ids['restricted']}" in admin_page and "Escalated (2)" in admin_page
    claimed = aud.get("/queues?view=claimed").get_data(as_text=True)
    assert "holder" in claimed and f"#{ids['claimed']}" in claimed
    assert 'href="/items/' not in claimed and "<form" not in claimed.split("</header>", 1)[1]
    breached = aud.get("/queues?view=breached").get_data(as_text=True)
    assert "breached" in breached and f"#{ids['breached']}" in breached
    assert aud.get("/queues?view=bogus").status_code == 404
    assert 'href="/queues"' in aud.get("/").get_data(as_text=True)


def test_queue_api_counts_per_view(web, qsessions):
    _seed_views(qsessions)
    app = web()
    mod, _ = _client(app, qsessions, "mo", "moderator")
    ada, _ = _client(app, qsessions, "ada", "admin")
    body = mod.get("/api/v1/queue").get_json()
    assert body["counts"] == {"waiting": 4, "claimed": 1, "escalated": 1, "breached": 1}
    assert sum(row["count"] for row in body["depth"]) == 7 - 1  # the decided item is not open
    assert ada.get("/api/v1/queue").get_json()["counts"]["escalated"] == 2


# -- PostgreSQL's plan --------------------------------------------------------------------
def test_claim_walks_the_partial_indexes_on_postgresql(db_url, sessions):
    """The candidate queries are index walks, not scans of every pending item."""
    with sessions() as s:
        s.execute(
            text(
                "INSERT INTO items (event_id, content_id, uploader_id, media_url, media_type, event, sha256,"
                " md5, pdq, pdq_quality, model_version, matches, route, reason, priority, state, tier,"
                " created_at, due_at, rank_at) SELECT 'e' || g, 'c' || g, 'u', 'http://x', 'image/jpeg',"
                " '{}', '', '', '', 90, '', '[]', 'review', 'classifier_score', g % 100, 'pending',"
                " 'moderator', now(), now() + (g % 90) * interval '1 hour',"
                " now() - (g % 100) * interval '15 minutes' FROM generate_series(1, 20000) g"
            )
        )
        s.execute(text("ANALYZE items"))
        u = _user(s, "a", "moderator")
        s.commit()
        near_q, rank_q = queue._candidates("moderator", u.id, utcnow() + timedelta(hours=6))
        for query, index in ((near_q, "ix_items_queue_due"), (rank_q, "ix_items_queue_rank")):
            compiled = query.limit(1).with_for_update(skip_locked=True).compile(s.get_bind())
            explained = s.connection().exec_driver_sql(f"EXPLAIN {compiled}", compiled.params)
            plan = "\n".join(row[0] for row in explained)
            assert index in plan, plan
            assert "Seq Scan on items" not in plan, plan


# -- record time ---------------------------------------------------------------------------
def test_the_worker_schedules_queued_items_by_their_report_reason(db_url, sessions, metrics, media_server):
    """The real worker path: an NCII report gets the 48-hour deadline, other flags the default."""
    import json
    from types import SimpleNamespace

    from moderation.classify import FixedScoreClassifier
    from moderation.events.uploads import make_upload_event
    from moderation.events.worker import Worker
    from moderation.runtime import build_pipeline
    from tests.support.images import encode, synthetic_image

    settings = load_settings({}, database_url=db_url, dev_mode=True).with_overrides(
        sla_hours="ncii=48,default=100", priority_point_minutes=15
    )
    worker = Worker(
        consumer=None,
        sessions=sessions,
        pipeline=build_pipeline(settings, metrics, FixedScoreClassifier(0.95)),
        send_decision=lambda k, v, h=(): None,
        send_dead_letter=lambda k, v, h=(): None,
        metrics=metrics,
        batch_wait_s=60.0,
        settings=settings,
    )
    for n, report in ((1, "ncii"), (2, None)):
        event = make_upload_event(
            f"e{n}", f"c{n}", "u", media_server.add(f"/{n}.jpg", encode(synthetic_image(n))), "image/jpeg"
        )
        if report:
            event["report_reason"] = report
        record = SimpleNamespace(
            topic="uploads", partition=0, offset=n, key=b"k", value=json.dumps(event).encode()
        )
        assert worker.handle(record) == "review"
    with sessions() as s:
        items = {i.event_id: i for i in s.scalars(select(Item))}
    for event_id, hours in (("e1", 48), ("e2", 100)):
        item = items[event_id]
        assert item.due_at - item.created_at == timedelta(hours=hours)
        assert item.created_at - item.rank_at == timedelta(minutes=15 * item.priority)
