"""Near-duplicate groups on real PostgreSQL: items recorded through
outcomes.record_analysis (and once through the worker) are grouped by bank
entry, identical bytes or a near PDQ hash; one decision from the console or
the API decides the whole group, a bulk action a chosen part of it."""

from __future__ import annotations

import base64
import json
import re
import uuid
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import psycopg
import pytest
from alembic import command
from sqlalchemy import create_engine, func, inspect, select, text
from werkzeug.security import generate_password_hash

from moderation import routing
from moderation.classify import FixedScoreClassifier, Scores
from moderation.config import load_settings
from moderation.domain import BankAction, Match, UploadEvent
from moderation.events.uploads import make_upload_event
from moderation.events.worker import Worker
from moderation.hashing import hash_media, pdq
from moderation.pipeline import Analysis
from moderation.runtime import build_pipeline
from moderation.storage import groups, outcomes
from moderation.storage.db import alembic_config, upgrade
from moderation.storage.models import AuditRecord, Decision, Item, ItemPdqBand, User, utcnow
from tests.support.images import encode, reencoded_copy, synthetic_image
from tests.support.web import add_user, login, make_app


@pytest.fixture
def settings(db_url):
    return load_settings(
        {}, database_url=db_url, secret_key="test-secret", dev_mode=True, media_allowed_hosts="127.0.0.1"
    )


def analysis(n: int, data: bytes, matches: tuple[Match, ...] = (), score: float = 0.9) -> Analysis:
    """What the pipeline hands to record_analysis for upload ``n`` of ``data``."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    hashes = hash_media(data, image)
    event = UploadEvent(f"e{n}", f"c{n}", f"uploader{n}", f"http://media/{n}.jpg", "image/jpeg", utcnow())
    verdict = routing.route(matches, score, hashes.pdq_quality, routing.RoutingPolicy())
    return Analysis(event, data, "image/jpeg", hashes, matches, Scores(score, ()), verdict)


def record(sessions: Any, settings: Any, n: int, data: bytes, matches: tuple[Match, ...] = ()) -> int:
    with sessions() as s:
        item_id, created, _ = outcomes.record_analysis(s, analysis(n, data, matches), True, settings=settings)
    assert created
    return item_id


def keys(sessions: Any) -> dict[int, str | None]:
    with sessions() as s:
        return dict(s.execute(select(Item.id, Item.group_key).order_by(Item.id)).all())


def entry_match(entry_id: int, distance: int = 4, **extra: Any) -> Match:
    return Match("alpha", BankAction.REVIEW, entry_id, "pdq", distance, **extra)


PASSWORD = "correct horse battery"
PICTURE = synthetic_image(1)
ORIGINAL = encode(PICTURE)
COPY = reencoded_copy(PICTURE)  # resized and re-compressed: other bytes, near PDQ


# -- grouping ------------------------------------------------------------------------------
def test_copies_are_grouped_by_identical_bytes_and_near_pdq(sessions, settings):
    assert pdq.distance(analysis(0, ORIGINAL).hashes.pdq, analysis(0, COPY).hashes.pdq) <= 31
    a = record(sessions, settings, 1, ORIGINAL)
    b = record(sessions, settings, 2, ORIGINAL)  # the same bytes again
    c = record(sessions, settings, 3, COPY)  # a near PDQ hash
    other = record(sessions, settings, 4, encode(synthetic_image(2)))  # an unrelated picture
    assert keys(sessions) == {a: f"item:{a}", b: f"item:{a}", c: f"item:{a}", other: None}
    with sessions() as s:
        assert groups.size(s, s.get(Item, c)) == 3
        assert groups.size(s, s.get(Item, other)) == 1
        # 16 PDQ slices and a SHA-256 prefix per queued image
        assert s.scalar(select(func.count()).select_from(ItemPdqBand).where(ItemPdqBand.item_id == a)) == 17


def test_items_matching_the_same_bank_entry_are_one_group(sessions, settings):
    a = record(sessions, settings, 1, encode(synthetic_image(3)), (entry_match(12, 6),))
    b = record(sessions, settings, 2, encode(synthetic_image(4)), (entry_match(12, 20), entry_match(13, 2)))
    # the strongest match decides: entry 13 (distance 2) is listed first by routing
    c = record(sessions, settings, 3, encode(synthetic_image(5)), (entry_match(12, 25),))
    # a quarantined entry (flood control) matches too much to vouch for anything
    d = record(sessions, settings, 4, encode(synthetic_image(6)), (entry_match(12, 1, quarantined=True),))
    assert keys(sessions) == {a: "entry:12", b: "entry:13", c: "entry:12", d: None}


def test_a_copy_of_a_bank_match_joins_the_entry_group(sessions, settings):
    a = record(sessions, settings, 1, ORIGINAL, (entry_match(7),))
    b = record(sessions, settings, 2, COPY)  # no bank match of its own
    assert keys(sessions) == {a: "entry:7", b: "entry:7"}


def low_contrast(tweak: int = 0) -> bytes:
    """A faint smooth pattern: a PDQ hash of quality under 50 (PDQ_MIN_QUALITY)."""
    y, x = np.mgrid[0:200, 0:200]
    grey = (120 + 40 * np.sin(x * 6.0 / 200) + 40 * np.cos(y * 5.0 / 200)).astype(np.uint8)
    img = np.dstack([grey, grey, grey])
    img[0:3, 0:3] += tweak
    return encode(img, ".png")


def test_low_quality_pdq_hashes_never_group_different_files(sessions, settings):
    flat_a, flat_b = low_contrast(), low_contrast(3)
    assert flat_a != flat_b
    qa, qb = analysis(0, flat_a).hashes, analysis(0, flat_b).hashes
    assert qa.pdq_quality < 50 and qb.pdq_quality < 50 and pdq.distance(qa.pdq, qb.pdq) <= 31
    a = record(sessions, settings, 1, flat_a)
    b = record(sessions, settings, 2, flat_b)
    c = record(sessions, settings, 3, flat_a)  # identical bytes still group
    assert keys(sessions) == {a: f"item:{a}", b: None, c: f"item:{a}"}


def test_allowed_and_decided_items_gather_no_copies(sessions, settings):
    queued = record(sessions, settings, 1, ORIGINAL)
    with sessions() as s:  # an allowed upload is closed, never queued
        closed = outcomes.record_analysis(s, analysis(2, ORIGINAL, score=0.1), True, settings=settings)[0]
    assert keys(sessions) == {queued: None, closed: None}
    with sessions() as s:
        s.get(Item, queued).state = "decided"
        groups.forget(s, [queued])
        s.commit()
        assert s.scalar(select(func.count()).select_from(ItemPdqBand)) == 0
    later = record(sessions, settings, 3, COPY)
    assert keys(sessions)[later] is None


def test_the_worker_groups_a_reupload(sessions, settings, metrics, media_server):
    worker = Worker(
        consumer=None,
        sessions=sessions,
        pipeline=build_pipeline(settings, metrics, FixedScoreClassifier(0.9)),
        send_decision=lambda k, v, h=(): None,
        send_dead_letter=lambda k, v, h=(): None,
        metrics=metrics,
        batch_wait_s=60.0,
        settings=settings,
    )
    for n, data in ((1, ORIGINAL), (2, COPY)):
        url = media_server.add(f"/{n}.jpg", data)
        raw = json.dumps(make_upload_event(f"e{n}", f"c{n}", "u", url, "image/jpeg")).encode()
        record_ = SimpleNamespace(topic="uploads", partition=0, offset=n, key=b"k", value=raw)
        assert worker.handle(record_) == "review"
    first, second = sorted(keys(sessions).items())
    assert second[1] == first[1] == f"item:{first[0]}"


# -- deciding a group --------------------------------------------------------------------------
@pytest.fixture
def console(sessions, settings):
    sent: list[tuple[bytes, bytes]] = []
    app = make_app(settings, send_decision=lambda k, v: sent.append((k, v)))
    return SimpleNamespace(app=app, sent=sent)


def four_copies(sessions: Any, settings: Any) -> list[int]:
    return [record(sessions, settings, n, ORIGINAL if n % 2 else COPY) for n in range(1, 5)]


def claim_for(sessions: Any, item_id: int, username: str, minutes: int = 5) -> None:
    with sessions() as s:
        item = s.get(Item, item_id)
        item.state, item.claimed_by = "claimed", s.scalar(select(User.id).where(User.username == username))
        item.lease_expires_at = utcnow() + timedelta(minutes=minutes)
        s.commit()


def add_senior(sessions: Any, username: str = "sen") -> str:
    """A senior (users.create_user may not know the role yet)."""
    with sessions() as s:
        s.add(
            User(username=username, password_hash=generate_password_hash(PASSWORD, "scrypt"), role="senior")
        )
        s.commit()
    return PASSWORD


def held_by(sessions: Any, username: str) -> int:
    with sessions() as s:
        uid = s.scalar(select(User.id).where(User.username == username))
        return s.scalar(select(Item.id).where(Item.claimed_by == uid, Item.state == "claimed"))


def test_one_decision_applies_to_the_group_and_leaves_others_claims_alone(sessions, settings, console):
    ids = four_copies(sessions, settings)
    add_user(sessions, "bo")
    claim_for(sessions, ids[3], "bo")  # another moderator holds one copy
    c = console.app.test_client()
    csrf = login(c, "mo", add_user(sessions, "mo"))
    c.post("/next", data={"csrf_token": csrf})
    mine = held_by(sessions, "mo")
    page = c.get(f"/items/{mine}").get_data(as_text=True)
    assert "4 open items like this one" in page and f'href="/groups/{mine}"' in page
    assert 'name="apply_to_group" value="1"' in page and 'data-key="g"' in page and "<kbd>G</kbd>" in page
    resp = c.post(
        f"/items/{mine}/decide",
        data={"csrf_token": csrf, "action": "remove", "reason": "ncii", "note": "n", "apply_to_group": "1"},
        follow_redirects=True,
    )
    assert (
        f"Removed 3 items of group item:{ids[0]} (1 held by another moderator, left alone)."
        in resp.get_data(as_text=True)
    )
    with sessions() as s:
        states = dict(s.execute(select(Item.id, Item.state)).all())
        assert [states[i] for i in ids] == ["decided", "decided", "decided", "claimed"]
        assert s.get(Item, ids[3]).claimed_by == s.scalar(select(User.id).where(User.username == "bo"))
        decided = s.scalars(select(Decision.item_id).where(Decision.source == "moderator")).all()
        assert sorted(decided) == ids[:3]  # one decision each
        group_audit = s.scalars(select(AuditRecord).where(AuditRecord.action == "group.decision")).all()
        assert {r.item_id for r in group_audit} == set(ids[:3]) - {mine}
        assert all(r.details["group"] == f"item:{ids[0]}" for r in group_audit)
        assert (
            s.scalar(select(func.count()).select_from(ItemPdqBand).where(ItemPdqBand.item_id.in_(ids[:3])))
            == 0
        )
    assert len(console.sent) == 3


def test_without_the_box_only_the_item_is_decided(sessions, settings, console):
    ids = four_copies(sessions, settings)
    c = console.app.test_client()
    csrf = login(c, "mo", add_user(sessions, "mo"))
    c.post("/next", data={"csrf_token": csrf})
    mine = held_by(sessions, "mo")
    c.post(f"/items/{mine}/decide", data={"csrf_token": csrf, "action": "allow", "reason": "not_violating"})
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Item).where(Item.state == "decided")) == 1
        assert groups.open_count(s, f"item:{ids[0]}") == 3


def test_bulk_action_decides_the_chosen_members(sessions, settings, console):
    ids = four_copies(sessions, settings)
    other = record(sessions, settings, 9, encode(synthetic_image(9)))
    c = console.app.test_client()
    csrf = login(c, "sen", add_senior(sessions))
    page = c.get(f"/groups/{ids[1]}").get_data(as_text=True)
    for i in ids:
        assert f'name="member" value="{i}"' in page
    assert "identical file" in page and "PDQ distance" in page and "uploader1" in page
    assert "<img" not in page and "/media" not in page  # no media on the group page
    resp = c.post(
        f"/groups/{ids[1]}/decide",
        data={
            "csrf_token": csrf,
            "action": "allow",
            "reason": "not_violating",
            "member": [ids[0], ids[2], other],
        },
        follow_redirects=True,
    )
    assert "Allowed 2 items of group" in resp.get_data(as_text=True)
    with sessions() as s:
        states = dict(s.execute(select(Item.id, Item.state)).all())
    assert [states[i] for i in ids] == ["decided", "pending", "decided", "pending"]
    assert states[other] == "pending"  # not in the group: never decided from it
    with sessions() as s:
        assert {
            r.details["group"]
            for r in s.scalars(select(AuditRecord).where(AuditRecord.action == "group.view"))
        }


def test_members_in_the_restricted_queue_are_listed_to_admins_only(sessions, settings, console):
    ids = four_copies(sessions, settings)
    with sessions() as s:
        s.get(Item, ids[3]).tier = "restricted"
        s.commit()
        s.add(User(username="ada", password_hash=generate_password_hash(PASSWORD, "scrypt"), role="admin"))
        s.commit()
    senior = console.app.test_client()
    login(senior, "sen", add_senior(sessions))
    page = senior.get(f"/groups/{ids[0]}").get_data(as_text=True)
    assert f"#{ids[2]}" in page and f"#{ids[3]}" not in page and "Listed: 3 of 4" in page
    admin = console.app.test_client()
    login(admin, "ada", PASSWORD)
    assert f"#{ids[3]}" in admin.get(f"/groups/{ids[0]}").get_data(as_text=True)


def test_a_refused_member_rolls_back_the_whole_group_decision(sessions, settings, console):
    ids = four_copies(sessions, settings)
    with sessions() as s:  # one copy already escalated: it cannot be escalated again
        s.get(Item, ids[2]).tier = "senior"
        s.commit()
    c = console.app.test_client()
    csrf = login(c, "sen", add_senior(sessions))
    resp = c.post(
        f"/groups/{ids[0]}/decide",
        data={"csrf_token": csrf, "action": "escalate", "reason": "unclear", "member": ids},
        follow_redirects=True,
    )
    assert "Nothing decided: item" in resp.get_data(as_text=True), re.findall(
        r"flash[^>]*>([^<]*)", resp.get_data(as_text=True)
    )
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Decision)) == 0
        assert {i.state for i in s.scalars(select(Item))} == {"pending"}
        assert (
            s.scalar(
                select(func.count()).select_from(AuditRecord).where(AuditRecord.action == "group.decision")
            )
            == 0
        )


def test_moderators_see_only_groups_of_items_they_hold(sessions, settings, console):
    ids = four_copies(sessions, settings)
    c = console.app.test_client()
    csrf = login(c, "mo", add_user(sessions, "mo"))
    assert c.get(f"/groups/{ids[0]}").status_code == 404  # as if there were no such item
    resp = c.post(
        f"/groups/{ids[0]}/decide",
        data={"csrf_token": csrf, "action": "remove", "reason": "ncii", "member": ids},
    )
    assert resp.status_code == 404
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Decision)) == 0


def test_api_decision_for_the_group_and_group_in_item_json(sessions, settings, console):
    ids = four_copies(sessions, settings)
    add_user(sessions, "mo")
    claim_for(sessions, ids[0], "mo")
    c = console.app.test_client()
    auth = {"Authorization": "Basic " + base64.b64encode(b"mo:correct horse battery").decode()}
    item = c.get(f"/api/v1/items/{ids[0]}", headers=auth).get_json()
    assert item["group"] == {"key": f"item:{ids[0]}", "size": 4}
    bad = c.post(
        f"/api/v1/items/{ids[0]}/decision",
        json={"action": "remove", "reason": "ncii", "apply_to_group": "yes"},
        headers=auth,
    )
    assert bad.status_code == 400
    resp = c.post(
        f"/api/v1/items/{ids[0]}/decision",
        json={"action": "remove", "reason": "ncii", "apply_to_group": True},
        headers=auth,
    )
    assert resp.status_code == 201, resp.get_json()
    body = resp.get_json()
    assert body["action"] == "remove" and body["group"]["key"] == f"item:{ids[0]}"
    assert sorted(body["group"]["decided"]) == ids and body["group"]["left_alone"] == []
    assert len(console.sent) == 4


def test_four_eyes_holds_a_group_removal_for_a_second_review_then_confirms_it(sessions, db_url):
    settings = load_settings(
        {},
        database_url=db_url,
        secret_key="test-secret",
        dev_mode=True,
        media_allowed_hosts="127.0.0.1",
        four_eyes_removals=True,
    )
    sent: list[tuple[bytes, bytes]] = []
    app = make_app(settings, send_decision=lambda k, v: sent.append((k, v)))
    ids = four_copies(sessions, settings)
    add_user(sessions, "mo")
    claim_for(sessions, ids[0], "mo")
    auth = {"Authorization": "Basic " + base64.b64encode(b"mo:correct horse battery").decode()}
    resp = app.test_client().post(
        f"/api/v1/items/{ids[0]}/decision",
        json={"action": "remove", "reason": "ncii", "apply_to_group": True},
        headers=auth,
    )
    assert resp.status_code == 202, resp.get_data(as_text=True)
    body = resp.get_json()
    assert body["outcome"] == "first_review" and sorted(body["group"]["decided"]) == ids
    with sessions() as s:
        rows = s.execute(select(Item.state, Item.tier).where(Item.id.in_(ids))).all()
        assert set(rows) == {("pending", "second_review")}
        assert s.scalar(select(func.count()).select_from(Decision)) == 0
        held = s.scalars(select(AuditRecord).where(AuditRecord.action == "group.decision")).all()
        assert {r.item_id for r in held} == set(ids[1:])
        assert all(r.details["idempotency_key"] is None for r in held)
    assert sent == []  # nothing published before the second review
    # A second moderator confirms the whole group from the item page.
    c = app.test_client()
    csrf = login(c, "bo", add_user(sessions, "bo"))
    c.post("/next", data={"csrf_token": csrf})
    theirs = held_by(sessions, "bo")
    resp = c.post(
        f"/items/{theirs}/decide",
        data={"csrf_token": csrf, "action": "remove", "reason": "ncii", "apply_to_group": "1"},
        follow_redirects=True,
    )
    assert f"Removed 4 items of group item:{ids[0]}." in resp.get_data(as_text=True)
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Decision).where(Decision.item_id.in_(ids))) == 4
    assert len(sent) == 4


# -- migration 0007 ------------------------------------------------------------------------------
def test_migration_backfills_keys_of_open_items_and_goes_down(db_url):
    name = f"groups_migration_{uuid.uuid4().hex[:8]}"
    admin = db_url.rsplit("/", 1)[0].replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(f"{admin}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{admin}/{name}".replace("postgresql://", "postgresql+psycopg://")
    try:
        upgrade(url, "0006")
        engine = create_engine(url)
        with engine.begin() as conn:
            for n, state, quality in ((1, "pending", 90), (2, "decided", 90), (3, "claimed", 10)):
                conn.execute(
                    text(
                        "INSERT INTO items (event_id, content_id, uploader_id, media_url, media_type, event,"
                        " sha256, md5, pdq, pdq_quality, model_version, matches, route, reason, priority,"
                        " state, tier, created_at) VALUES (:e, 'c', 'u', 'http://x', 'image/jpeg', '{}',"
                        " :h, :m, :p, :q, '', '[]', 'review', 'classifier', 10, :s, 'moderator', now())"
                    ),
                    {"e": f"e{n}", "h": "ab" * 32, "m": "b" * 32, "p": "0123" * 16, "q": quality, "s": state},
                )
        upgrade(url)
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT item_id, band, value FROM item_pdq_bands ORDER BY 1, 2")).all()
        assert [(r[0], r[1]) for r in rows] == [(1, b) for b in range(17)] + [(3, 16)]
        assert rows[0][2] == 0x0123 and rows[16][2] == groups.sha256_key("ab" * 32)
        command.downgrade(alembic_config(url), "0006")
        assert "item_pdq_bands" not in inspect(engine).get_table_names()
        engine.dispose()
    finally:
        with psycopg.connect(f"{admin}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_appeals_and_second_reviews_are_never_decided_in_bulk(sessions, settings, console):
    """An appeal's statement and a first reviewer's removal are read on the
    item's own page: a group decision leaves such members alone."""
    ids = four_copies(sessions, settings)
    with sessions() as s:
        s.get(Item, ids[2]).tier = "appeal"
        s.get(Item, ids[3]).tier = "second_review"
        s.commit()
    c = console.app.test_client()
    csrf = login(c, "sen", add_senior(sessions))
    resp = c.post(
        f"/groups/{ids[1]}/decide",
        data={"csrf_token": csrf, "action": "allow", "reason": "not_violating", "member": ids},
        follow_redirects=True,
    )
    text = resp.get_data(as_text=True)
    assert "Allowed 2 items of group" in text and "needs its own look" in text
    with sessions() as s:
        states = dict(s.execute(select(Item.id, Item.state)).all())
    assert [states[i] for i in ids] == ["decided", "decided", "pending", "pending"]
