"""Appeals through the API and the consumer's record handling: reopen a decided
item, serve it to a different moderator, publish the outcome as a new decision
that supersedes the old one, withdraw the bank entries of an overturned
removal, and ignore a redelivered appeal. Decisions are captured in memory;
the Kafka path is tests/e2e/test_appeals_e2e.py."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from moderation.config import load_settings
from moderation.events.appeals import AppealConsumer
from moderation.events.kafka import BrokerUnavailable
from moderation.metrics import Metrics
from moderation.storage import appeals, tokens
from moderation.storage.models import Appeal, AuditRecord, DeadLetter, Decision, Item, ItemExclusion, User
from tests.support.reviewers import World, add_item


@pytest.fixture
def world(db_url, sessions):
    return World(db_url, sessions)


@pytest.fixture
def appeal_token(sessions) -> str:
    with sessions() as s:
        secret = tokens.create_token(s, "appeals", ["appeals:submit"], created_by="test")
        s.commit()
    return secret


def post_appeal(world: World, secret: str, **body: Any) -> Any:
    client = world.app.test_client()
    return client.post("/api/v1/appeals", json=body, headers={"Authorization": f"Bearer {secret}"})


def removed_by(world: World, username: str, n: int = 1, **item: Any) -> int:
    item_id = add_item(world.sessions, n, **item)
    reviewer = world.reviewer(username)
    assert reviewer.claim() == item_id
    assert reviewer.decide(item_id, "remove", "ncii").status_code == 201
    return item_id


def count(sessions: Any, model: Any, *where: Any) -> int:
    with sessions() as s:
        return int(s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def test_an_appeal_reopens_the_item_for_another_moderator(world, sessions, appeal_token):
    item_id = removed_by(world, "mo")
    before = world.item(item_id)
    assert len(world.confirmed_entries()) == 3

    resp = post_appeal(
        world,
        appeal_token,
        appeal_id="ap-1",
        content_id="c1",
        statement="It is my own photo",
        submitted_by="u-9",
    )
    assert resp.status_code == 201, resp.get_json()
    assert resp.get_json() == {
        "appeal_id": "ap-1",
        "item_id": item_id,
        "content_id": "c1",
        "created": True,
        "state": "pending",
        "tier": "appeal",
        "resolved": False,
        "decision_id": None,
    }
    reopened = world.item(item_id)
    assert (reopened.state, reopened.tier, reopened.claimed_by) == ("pending", "appeal", None)
    assert reopened.due_at is not None and before.due_at is not None and reopened.due_at > before.due_at
    with sessions() as s:
        mo_id = s.scalar(select(User.id).where(User.username == "mo"))
        assert s.get(ItemExclusion, (item_id, mo_id)).why == "decided"
    (opened,) = world.audit("appeal.open")
    assert opened.actor == "token:appeals" and opened.details["excluded"] == ["mo"]

    mo, lou = world.reviewer("mo"), world.reviewer("lou")
    assert mo.claim() is None  # who decided it before never gets it back
    assert lou.claim() == item_id
    page = lou.page(item_id)
    assert "Appeal ap-1" in page and "It is my own photo" in page
    assert "Appealed decision: <strong>remove</strong>" in page

    resp = lou.decide(item_id, "allow", "not_violating")
    assert resp.status_code == 201
    outcome = resp.get_json()
    (original,) = [d for d in world.sent if d["action"] == "remove"]
    assert outcome["appeal_id"] == "ap-1" and outcome["supersedes"] == original["idempotency_key"]
    assert outcome["idempotency_key"] != original["idempotency_key"] and outcome["sequence"] == 2
    assert [d["idempotency_key"] for d in world.sent] == [
        original["idempotency_key"],
        outcome["idempotency_key"],
    ]

    # The overturned removal no longer blocks copies of the picture.
    assert {e.status for e in world.confirmed_entries()} == {"withdrawn"}
    assert len(world.audit("bank.entry.withdrawn")) == 3
    (resolved,) = world.audit("appeal.resolve")
    assert resolved.details["overturned"] is True and resolved.details["withdrawn"] == 3
    with sessions() as s:
        appeal = s.scalar(select(Appeal))
        decision_id = s.scalar(
            select(Decision.id).where(Decision.idempotency_key == outcome["idempotency_key"])
        )
        assert appeal.resolved_at is not None and appeal.decision_id == decision_id
        assert appeal.source == "api" and appeal.submitted_by == "u-9"

    # A second appeal (a new appeal_id) keeps both earlier deciders away; a senior takes it.
    assert post_appeal(world, appeal_token, appeal_id="ap-2", item_id=item_id).status_code == 201
    assert lou.claim() is None and world.reviewer("sen").claim() == item_id
    # Removed again: a fresh judgement, so the withdrawn hashes block copies again.
    again = world.reviewer("sen").decide(item_id, "remove", "ncii")
    assert again.status_code == 201 and again.get_json()["banked"] == 3
    assert {e.status for e in world.confirmed_entries()} == {"active"}


def test_the_same_appeal_id_again_changes_nothing(world, sessions, appeal_token):
    item_id = removed_by(world, "mo")
    first = post_appeal(world, appeal_token, appeal_id="ap-1", content_id="c1")
    again = post_appeal(world, appeal_token, appeal_id="ap-1", content_id="c1")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.get_json()["created"] is False and again.get_json()["item_id"] == item_id
    lou = world.reviewer("lou")
    assert lou.claim() == item_id
    lou.decide(item_id, "remove", "ncii")  # upheld
    # Redelivered after the appeal was decided: still no reopening.
    late = post_appeal(world, appeal_token, appeal_id="ap-1", content_id="c1")
    assert late.status_code == 200 and late.get_json()["resolved"] is True
    assert world.item(item_id).state == "decided"
    assert count(sessions, Appeal) == 1 and len(world.audit("appeal.open")) == 1


def test_a_removal_upheld_on_appeal_keeps_its_bank_entries(db_url, sessions, appeal_token):
    w = World(db_url, sessions, four_eyes_removals=True)
    item_id = add_item(sessions)
    mo, lou, sen = w.reviewer("mo"), w.reviewer("lou"), w.reviewer("sen")
    assert mo.claim() == item_id and mo.decide(item_id, "remove", "ncii").status_code == 202
    assert lou.claim() == item_id and lou.decide(item_id, "remove", "ncii").status_code == 201
    assert post_appeal(w, appeal_token, appeal_id="ap-1", content_id="c1").status_code == 201
    # Both four-eyes reviewers decided it: neither reviews the appeal.
    assert mo.claim() is None and lou.claim() is None
    assert sen.claim() == item_id
    upheld = sen.decide(item_id, "remove", "ncii")
    assert upheld.status_code == 201  # every hash is banked already: no second review needed
    payload = upheld.get_json()
    assert payload["appeal_id"] == "ap-1" and payload["supersedes"] == w.sent[0]["idempotency_key"]
    assert {e.status for e in w.confirmed_entries()} == {"active"}
    (resolved,) = w.audit("appeal.resolve")
    assert resolved.details["overturned"] is False


def test_an_appeal_of_a_restricted_decision_stays_with_admins(world, sessions, appeal_token):
    item_id = add_item(sessions)
    mo, ada, eve = world.reviewer("mo"), world.reviewer("ada"), world.reviewer("eve")
    assert mo.claim() == item_id and mo.decide(item_id, "escalate", "suspected_minor").status_code == 201
    assert ada.claim() == item_id and ada.decide(item_id, "remove", "suspected_minor").status_code == 201
    resp = post_appeal(world, appeal_token, appeal_id="ap-1", content_id="c1")
    assert resp.status_code == 201 and resp.get_json()["tier"] == "restricted"
    assert world.reviewer("lou").claim() is None and world.reviewer("sen").claim() is None
    assert ada.claim() is None  # the admin who decided it
    assert eve.claim() == item_id
    payload = eve.decide(item_id, "allow", "not_violating").get_json()
    assert payload["restricted"] is True and payload["appeal_id"] == "ap-1"


def test_appeals_that_cannot_be_applied(world, sessions, appeal_token):
    decided = removed_by(world, "mo")
    pending = add_item(sessions, 2)
    escalated = add_item(sessions, 3)
    lou = world.reviewer("lou")
    assert lou.claim() == pending
    lou.client.post(f"/api/v1/items/{pending}/release", json={}, headers=lou.headers)
    assert lou.claim() == escalated and lou.decide(escalated, "escalate", "unclear").status_code == 201

    def status(**body: Any) -> tuple[int, str]:
        resp = post_appeal(world, appeal_token, **body)
        return resp.status_code, resp.get_json()["error"]

    assert status(appeal_id="a", content_id="nope") == (404, "no content 'nope' to appeal")
    assert status(appeal_id="a", item_id=999) == (404, "no item 999 to appeal")
    assert status(appeal_id="a", item_id=pending)[0] == 409
    code, error = status(appeal_id="a", item_id=escalated)
    assert code == 409 and "not decided" in error
    assert status(appeal_id="a", item_id=decided, content_id="c2") == (
        400,
        f"item {decided} is not content 'c2'",
    )
    assert status(content_id="c1")[1] == "appeal_id is required"
    assert status(appeal_id="a")[1] == "name the decided item: content_id or item_id"
    assert status(appeal_id="a", item_id="1")[1] == "item_id must be a positive integer"
    assert status(appeal_id="a", item_id=True)[1] == "item_id must be a positive integer"
    assert status(appeal_id="a", item_id=decided, statement="x" * 5001)[0] == 400
    assert status(appeal_id="a", item_id=decided, reason="x")[0] == 400  # unknown field
    # A lone surrogate no database can store: refused, never a 500.
    assert status(appeal_id="a", item_id=decided, statement="x\ud800y") == (
        400,
        "statement must be valid Unicode text",
    )
    assert count(sessions, Appeal) == 0 and world.item(decided).state == "decided"


def test_who_may_submit_appeals(world, sessions, appeal_token):
    item_id = removed_by(world, "mo")
    with sessions() as s:
        reader = tokens.create_token(s, "reader", ["banks:read"], created_by="test")
        s.commit()
    assert post_appeal(world, reader, appeal_id="a", item_id=item_id).status_code == 403
    assert world.app.test_client().post("/api/v1/appeals", json={"appeal_id": "a"}).status_code == 401
    mo = world.reviewer("mo")
    assert mo.post_json("/api/v1/appeals", {"appeal_id": "a", "item_id": item_id}).status_code == 403
    ada = world.reviewer("ada")
    resp = ada.post_json("/api/v1/appeals", {"appeal_id": "a", "item_id": item_id})
    assert resp.status_code == 201
    (opened,) = world.audit("appeal.open")
    assert opened.actor == "ada"


# -- the consumer's handling of one record (the broker is in the e2e test) -------------------
@dataclass
class Record:
    value: bytes | None
    key: bytes | None = b"c1"
    offset: int = 0
    topic: str = "moderation.appeals"
    partition: int = 0
    timestamp: int = 1_700_000_000_000


class FakeConsumer:
    """What AppealConsumer.poll_once uses of a KafkaConsumer."""

    def __init__(self, records: list[Record]) -> None:
        self.records = records
        self.commits: list[int] = []
        self.seeks: list[int] = []

    def poll(self, timeout_ms: int = 0) -> dict[Any, list[Record]]:
        records, self.records = self.records, []
        return {"tp": records} if records else {}

    def commit(self, offsets: dict[Any, Any]) -> None:
        self.commits.extend(o.offset for o in offsets.values())

    def seek(self, tp: Any, offset: int) -> None:
        self.seeks.append(offset)

    def assignment(self) -> set[str]:
        return {"tp"}


def make_consumer(world: World, records: list[Record]) -> tuple[AppealConsumer, list[Any], Metrics]:
    dead: list[Any] = []
    metrics = Metrics(CollectorRegistry())
    settings = load_settings({}, database_url=world.app.extensions["moderation"].settings.database_url)
    consumer = AppealConsumer(
        FakeConsumer(records),  # type: ignore[arg-type]
        world.sessions,
        settings,
        lambda key, value, headers: dead.append((key, value, dict(headers))),
        metrics,
    )
    return consumer, dead, metrics


def test_consumed_appeals_reopen_once_and_bad_ones_are_dead_lettered(world, sessions):
    item_id = removed_by(world, "mo")
    good = json.dumps({"appeal_id": "k-1", "statement": "mine"}).encode()  # content id from the key
    consumer, dead, metrics = make_consumer(world, [])
    assert consumer.handle(Record(good)) == "reopened"
    assert consumer.handle(Record(good, offset=1)) == "duplicate"  # redelivered
    assert world.item(item_id).tier == "appeal"
    with sessions() as s:
        assert s.scalar(select(Appeal.source)) == "kafka"
    (opened,) = world.audit("appeal.open")
    assert opened.actor == "kafka:appeals"

    bad = Record(b"{not json", offset=2)
    assert consumer.handle(bad) == "invalid"
    assert consumer.handle(bad) == "invalid"  # redelivered: the same dead letter, not produced again
    unknown = Record(json.dumps({"appeal_id": "k-2", "content_id": "gone"}).encode(), offset=3)
    assert consumer.handle(unknown) == "invalid"
    with sessions() as s:
        rows = s.scalars(select(DeadLetter).order_by(DeadLetter.id)).all()
        assert [(r.error_class, r.source_offset, r.event_id) for r in rows] == [
            ("invalid_appeal", 2, None),
            ("invalid_appeal", 3, "k-2"),
        ]
        assert all(r.published_at is not None for r in rows)
    assert [d[1] for d in dead] == [b"{not json", unknown.value]
    assert dead[1][2]["error_message"] == b"no content 'gone' to appeal"
    assert dead[0][2]["source_topic"] == b"moderation.appeals"

    def sample(outcome: str) -> float:
        return metrics.registry.get_sample_value(
            "moderation_appeals_total", {"source": "kafka", "outcome": outcome}
        )

    assert (sample("reopened"), sample("duplicate"), sample("invalid")) == (1.0, 1.0, 3.0)
    assert (
        metrics.registry.get_sample_value("moderation_dead_letters_total", {"error_class": "invalid_appeal"})
        == 2.0
    )


def test_a_record_with_a_lone_surrogate_is_dead_lettered_not_fatal(world, sessions):
    removed_by(world, "mo")
    poison = Record(json.dumps({"appeal_id": "k-\ud800", "content_id": "c1"}).encode())
    consumer, dead, _ = make_consumer(world, [])
    assert consumer.handle(poison) == "invalid"
    assert dead[0][2]["error_message"] == b"appeal_id must be valid Unicode text"
    assert count(sessions, Appeal) == 0


def test_a_database_outage_rewinds_and_commits_nothing(world, sessions, monkeypatch):
    item_id = removed_by(world, "mo")
    records = [
        Record(json.dumps({"appeal_id": f"k-{n}", "item_id": item_id}).encode(), offset=n) for n in (5, 6)
    ]
    consumer, _, _ = make_consumer(world, list(records))
    real_submit, calls = appeals.submit, []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("SELECT 1", {}, Exception("connection refused"))
        return real_submit(*args, **kwargs)

    monkeypatch.setattr(appeals, "submit", flaky)
    monkeypatch.setattr(consumer.stop_event, "wait", lambda _s: False)  # no real backoff sleep
    fake: Any = consumer.consumer
    assert consumer.poll_once() == 0
    assert (fake.commits, fake.seeks) == ([], [5])  # handed back, nothing committed
    fake.records = records  # the broker redelivers from the rewound position
    assert consumer.poll_once() == 2
    assert fake.commits == [7]
    assert world.item(item_id).tier == "appeal"
    with sessions() as s:
        assert s.scalars(select(Appeal.appeal_id)).all() == ["k-5"]  # k-6: the item was no longer decided
        assert s.scalar(select(DeadLetter.event_id)) == "k-6"
        assert (
            s.scalar(select(func.count()).select_from(AuditRecord).where(AuditRecord.action == "appeal.open"))
            == 1
        )
    assert count(sessions, Item) == 1


def test_a_dead_letter_the_broker_does_not_take_is_retried_as_a_broker_outage(world, sessions, monkeypatch):
    bad = Record(b"{not json", offset=4)
    consumer, _, metrics = make_consumer(world, [bad])

    def broker_away(*_args: Any) -> None:
        raise BrokerUnavailable("dead letter not acknowledged")

    consumer.send_dead_letter = broker_away  # type: ignore[assignment]
    monkeypatch.setattr(consumer.stop_event, "wait", lambda _s: False)  # no real backoff sleep
    fake: Any = consumer.consumer
    assert consumer.poll_once() == 0
    assert (fake.commits, fake.seeks) == ([], [4])  # handed back for a retry
    retries = metrics.registry.get_sample_value("moderation_transient_errors_total", {"dependency": "broker"})
    assert retries == 1.0


def test_an_unexpected_error_dead_letters_the_record_instead_of_stopping_the_consumer(
    world, sessions, monkeypatch
):
    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("a bug met this record")

    monkeypatch.setattr(appeals, "submit", broken)
    record = Record(json.dumps({"appeal_id": "k-7", "content_id": "c1"}).encode(), offset=8)
    consumer, dead, metrics = make_consumer(world, [record])
    assert consumer.poll_once() == 1
    assert consumer.consumer.commits == [9]  # type: ignore[attr-defined]
    with sessions() as s:
        row = s.scalars(select(DeadLetter)).one()
    assert (row.error_class, row.event_id) == ("processing_failed", "k-7")
    assert dead[0][2]["error_message"] == b"RuntimeError: a bug met this record"
    assert (
        metrics.registry.get_sample_value(
            "moderation_appeals_total", {"source": "kafka", "outcome": "failed"}
        )
        == 1.0
    )
