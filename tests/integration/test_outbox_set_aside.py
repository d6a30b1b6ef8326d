"""A record the broker refuses for good is set aside with its reason, counted and
shown to admins; the rest of the outbox keeps flowing, an item's later
decisions wait behind its set-aside one, and an admin retries, shortens or
discards it (audited). The sender is a real TopicSender over a producer that
enforces kafka-python's 1 MiB max_request_size as kafka-python does (the
real broker is in tests/e2e/test_set_aside_e2e.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kafka.errors import MessageSizeTooLargeError, NotLeaderForPartitionError
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import select

from moderation.domain import Action, Source
from moderation.errors import RequestError
from moderation.events.kafka import BrokerUnavailable, TopicSender
from moderation.metrics import DatabaseCollector, Metrics
from moderation.storage import deadletters, outbox, set_aside
from moderation.storage.gauges import database_gauges
from moderation.storage.models import AuditRecord, DeadLetter, Decision, Item
from tests.support.factories import make_item
from tests.support.reviewers import World

MAX_REQUEST_SIZE = 1024 * 1024
HUGE_NOTE = "n" * MAX_REQUEST_SIZE


class Future:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error

    def get(self, timeout: float) -> None:
        if self.error is not None:
            raise self.error


class SizeLimitedProducer:
    """kafka-python's producer as far as the outbox sees it: a record over
    max_request_size fails in ``send`` itself; ``unavailable`` keys time out."""

    def __init__(self) -> None:
        self.topic: list[tuple[bytes, dict[str, Any]]] = []  # what the broker holds, in order
        self.unavailable: set[bytes] = set()

    def send(self, topic: str, *, key: bytes, value: bytes, headers: list[Any]) -> Future:
        if len(key) + len(value) > MAX_REQUEST_SIZE:
            raise MessageSizeTooLargeError(
                f"The message is {len(key) + len(value)} bytes when serialized which is larger than "
                "the maximum request size you have configured with the max_request_size configuration"
            )
        if key in self.unavailable:
            return Future(NotLeaderForPartitionError())
        self.topic.append((key, json.loads(value) if value.startswith(b"{") else {"raw": value}))
        return Future()

    def sequences(self, key: bytes) -> list[int]:
        return [v["sequence"] for k, v in self.topic if k == key]


@pytest.fixture
def producer() -> SizeLimitedProducer:
    return SizeLimitedProducer()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


@pytest.fixture
def send(producer, metrics) -> TopicSender:
    return TopicSender(producer, "decisions", metrics.publish_failed("decisions"))  # type: ignore[arg-type]


def decide(sessions: Any, n: int, note: str = "", action: Action = Action.REMOVE) -> int:
    """A moderator decision on item ``n`` (created on first use); returns the decision id."""
    with sessions() as s:
        item = s.scalar(select(Item).where(Item.event_id == f"e{n}"))
        if item is None:
            item = make_item(n, state="decided")
            s.add(item)
            s.flush()
        decision = outbox.add_decision(s, item, action, Source.MODERATOR, "ncii", moderator="mo", note=note)
        s.commit()
        return decision.id


def row(sessions: Any, decision_id: int) -> Decision:
    with sessions() as s:
        found = s.get(Decision, decision_id)
        assert found is not None
        s.expunge(found)
        return found


def refused_count(metrics: Metrics, outbox_name: str = "decisions") -> float | None:
    return metrics.registry.get_sample_value(
        "moderation_publish_failures_total", {"outbox": outbox_name, "reason": "refused"}
    )


def test_a_refused_decision_is_set_aside_and_the_rest_of_the_batch_is_published(
    sessions, producer, send, metrics
):
    before = decide(sessions, 1)
    huge = decide(sessions, 2, HUGE_NOTE)
    after = decide(sessions, 3)
    assert outbox.publish_pending(sessions, send) == 2  # no exception: nothing stops the sweep
    assert [k for k, _ in producer.topic] == [b"c1", b"c3"]
    refused = row(sessions, huge)
    assert refused.published_at is None and refused.set_aside_at is not None
    assert "MessageSizeTooLargeError" in (refused.set_aside_reason or "")
    assert "larger than the maximum request size" in (refused.set_aside_reason or "")
    assert row(sessions, before).published_at and row(sessions, after).published_at
    assert refused_count(metrics) == 1
    assert outbox.publish_pending(sessions, send) == 0  # set aside: not tried again by itself
    assert refused_count(metrics) == 1


def test_an_items_later_decisions_wait_behind_its_set_aside_one(sessions, producer, send):
    first = decide(sessions, 1, HUGE_NOTE, Action.ESCALATE)
    second = decide(sessions, 1, "", Action.REMOVE)  # the senior's final decision
    other = decide(sessions, 2)
    # One batch: the item's second decision is not sent once its first was refused.
    assert outbox.publish_pending(sessions, send) == 1
    assert producer.sequences(b"c1") == [] and producer.sequences(b"c2") == [1]
    assert row(sessions, second).published_at is None and row(sessions, second).set_aside_at is None
    assert outbox.publish_pending(sessions, send, item_ids=[row(sessions, first).item_id]) == 0  # still waits
    with sessions() as s:
        (listed,) = [r for r in set_aside.list_rows(s) if r.outbox == "decisions"]
        assert (listed.id, listed.waiting, listed.note_too_long) == (first, 1, True)
        assert listed.size > MAX_REQUEST_SIZE and "MessageSizeTooLargeError" in listed.reason

    # Shortened and retried: both go out, in order, in one sweep.
    with sessions() as s:
        message = set_aside.shorten_note(s, first, "ada")
        s.commit()
    assert "note shortened from 1,048,576 to 2,000 characters" in message
    assert outbox.publish_pending(sessions, send) == 2
    assert producer.sequences(b"c1") == [1, 2]
    note = next(v["note"] for k, v in producer.topic if k == b"c1" and v["sequence"] == 1)
    assert len(note) == 2000 and note.endswith("the full note is in the audit log]")
    assert "shortened by ada from 1,048,576 characters" in note
    assert row(sessions, other).published_at is not None
    with sessions() as s:
        (audit,) = s.scalars(select(AuditRecord).where(AuditRecord.action == "outbox.shorten")).all()
        assert (audit.actor, audit.item_id, audit.details["note_length"]) == (
            "ada",
            row(sessions, first).item_id,
            1_048_576,
        )


def test_a_discarded_decision_lets_the_later_ones_go_and_a_retry_is_refused_again(
    sessions, producer, send, metrics
):
    first = decide(sessions, 1, HUGE_NOTE)
    second = decide(sessions, 1, "", Action.ALLOW)
    outbox.publish_pending(sessions, send)
    with sessions() as s:
        set_aside.retry(s, "decisions", first, "ada")
        s.commit()
    assert outbox.publish_pending(sessions, send) == 0  # still too large: set aside again
    assert row(sessions, first).set_aside_at is not None and refused_count(metrics) == 2
    with sessions() as s:
        assert "discarded" in set_aside.discard(s, "decisions", first, "ada")
        s.commit()
    assert outbox.publish_pending(sessions, send) == 1
    assert producer.sequences(b"c1") == [2]  # the gap in sequence shows what was discarded
    assert row(sessions, second).published_at is not None and row(sessions, first).published_at is None
    with sessions() as s:
        assert set_aside.list_rows(s) == []
        actions = s.scalars(select(AuditRecord.action).order_by(AuditRecord.id)).all()
        assert actions == ["outbox.retry", "outbox.discard"]
        with pytest.raises(RequestError, match="is not set aside"):
            set_aside.retry(s, "decisions", first, "ada")


def test_a_broker_outage_for_some_records_keeps_the_acknowledged_ones_marked(
    sessions, producer, send, metrics
):
    ok = decide(sessions, 1)
    away = decide(sessions, 2)
    producer.unavailable.add(b"c2")
    with pytest.raises(BrokerUnavailable, match="NotLeaderForPartitionError"):
        outbox.publish_pending(sessions, send)
    assert row(sessions, ok).published_at is not None  # acknowledged: not produced twice
    assert row(sessions, away).published_at is None and row(sessions, away).set_aside_at is None
    assert (
        metrics.registry.get_sample_value(
            "moderation_publish_failures_total", {"outbox": "decisions", "reason": "broker_unavailable"}
        )
        == 1
    )
    producer.unavailable.clear()
    assert outbox.publish_pending(sessions, send) == 1


def test_a_refused_dead_letter_is_set_aside_and_the_others_are_published(sessions, producer, metrics):
    send = TopicSender(producer, "dlq", metrics.publish_failed("dead_letters"))  # type: ignore[arg-type]
    with sessions() as s:
        for n, value in enumerate((b"small", b"v" * MAX_REQUEST_SIZE, b"also small")):
            s.add(
                DeadLetter(
                    source_topic="uploads",
                    source_partition=0,
                    source_offset=n,
                    source_timestamp=1,
                    error_class="invalid_event",
                    key=b"k",
                    value=value,
                    headers={"error_class": "invalid_event"},
                )
            )
        s.commit()
    assert deadletters.publish_pending(sessions, send) == 2
    assert refused_count(metrics, "dead_letters") == 1
    with sessions() as s:
        (listed,) = set_aside.list_rows(s)
        assert (listed.outbox, listed.summary, listed.size) == (
            "dead_letters",
            "invalid_event",
            MAX_REQUEST_SIZE + 1,
        )
        set_aside.discard(s, "dead_letters", listed.id, "ada")
        s.commit()
        assert set_aside.counts(s) == [("decisions", 0), ("dead_letters", 0)]


def test_the_gauges_count_set_aside_rows_apart_from_pending_ones(sessions, producer, send):
    decide(sessions, 1, HUGE_NOTE)
    decide(sessions, 1)  # waits behind it: pending
    decide(sessions, 2)
    producer.unavailable.add(b"c2")
    with pytest.raises(BrokerUnavailable):
        outbox.publish_pending(sessions, send)
    with sessions() as s:
        gauges = database_gauges(s, near_hours=6)
    assert list(gauges.set_aside) == [("decisions", 1), ("dead_letters", 0)]
    assert [(name, count) for name, count, _age in gauges.outbox] == [("decisions", 2), ("dead_letters", 0)]
    registry = CollectorRegistry()
    registry.register(DatabaseCollector(lambda: gauges))
    text = generate_latest(registry).decode()
    assert 'moderation_outbox_set_aside{outbox="decisions"} 1.0' in text
    assert 'moderation_outbox_set_aside{outbox="dead_letters"} 0.0' in text


# -- the admin page ----------------------------------------------------------------------------
def test_admins_see_set_aside_records_and_retry_or_discard_them(db_url, sessions, producer, send):
    world = World(db_url, sessions)
    huge = decide(sessions, 1, HUGE_NOTE)
    later = decide(sessions, 1, "", Action.ALLOW)
    outbox.publish_pending(sessions, send)
    ada = world.reviewer("ada")
    html = ada.client.get("/admin/outbox").get_data(as_text=True)
    assert "Set-aside records" in html and "MessageSizeTooLargeError" in html
    assert f"{row(sessions, huge).idempotency_key}" in html
    assert "1 later decision of the item" in html and "note of 1,048,576 characters" in html
    assert "Shorten the note and retry" in html and "No dead letter is set aside." in html
    assert world.reviewer("mo").client.get("/admin/outbox").status_code == 403

    path = f"/admin/outbox/decisions/{huge}"
    assert ada.client.post(path, data={"verb": "discard"}).status_code == 400  # no CSRF token
    resp = ada.client.post(path, data={"csrf_token": ada.csrf, "verb": "bogus"}, follow_redirects=True)
    assert "unknown action &#39;bogus&#39;" in resp.get_data(as_text=True)
    resp = ada.client.post(path, data={"csrf_token": ada.csrf, "verb": "retry"}, follow_redirects=True)
    assert "will be produced again by the next sweep" in resp.get_data(as_text=True)
    assert row(sessions, huge).set_aside_at is None
    outbox.publish_pending(sessions, send)  # refused again
    resp = ada.client.post(path, data={"csrf_token": ada.csrf, "verb": "discard"}, follow_redirects=True)
    assert f"Decision {huge} discarded" in resp.get_data(as_text=True)
    assert "No decision is set aside." in resp.get_data(as_text=True)
    assert outbox.publish_pending(sessions, send) == 1 and row(sessions, later).published_at is not None
    assert [a.actor for a in world.audit("outbox.retry") + world.audit("outbox.discard")] == ["ada", "ada"]
    assert (
        world.audit("outbox.discard")[0].details["reason"].startswith("[Error 10] MessageSizeTooLargeError")
    )
