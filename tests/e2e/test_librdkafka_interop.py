"""librdkafka interop: an upload service written with confluent-kafka (librdkafka)
publishes real upload events to the suite's broker for a real worker, and a
platform consumer written with confluent-kafka reads the decisions and a dead
letter back in a consumer group, as docs/events.md describes them.

The worker is kafka-python; this checks that records, keys and headers cross
between the two client libraries unchanged, on the embedded tansu broker (or
the broker KAFKA_BOOTSTRAP_SERVERS names). Without confluent-kafka the test is
skipped, and fails under CI=true.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from moderation.classify import FixedScoreClassifier
from moderation.domain import EntrySpec
from moderation.events.uploads import make_upload_event
from moderation.hashing import hash_media
from moderation.media.decode import decode_image
from moderation.storage import banks
from tests.conftest import _unavailable
from tests.support.images import encode, reencoded_copy, synthetic_image

DECISION_FIELDS = {
    "schema_version",
    "idempotency_key",
    "sequence",
    "event_id",
    "content_id",
    "uploader_id",
    "action",
    "source",
    "reason",
    "matches",
    "classifier_score",
    "model_version",
    "model_scores",
    "moderator",
    "note",
    "decided_at",
}


@pytest.fixture
def ck() -> Any:
    try:
        import confluent_kafka
    except ImportError as exc:
        _unavailable("confluent-kafka (librdkafka)", exc)
    return confluent_kafka


@pytest.fixture
def platform_consumer(ck: Any, kafka_bootstrap: str) -> Iterator[Any]:
    consumer = ck.Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"platform-{uuid.uuid4().hex[:8]}",
            "client.id": "platform",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1000,
        }
    )
    yield consumer
    consumer.close()  # leaves the group


def test_librdkafka_upload_service_and_platform_consumer(
    ck, kafka_bootstrap, settings_factory, sessions, start_worker, media_server, platform_consumer
):
    settings = settings_factory()  # REVIEW_THRESHOLD 0.6, allow decisions published
    victim = synthetic_image(4101)
    with sessions() as s:
        bank = banks.create_bank(s, "victims", "auto_remove", actor="test")
        data = encode(victim)
        hashes = hash_media(data, decode_image(data, 10**8)[1])
        specs = [EntrySpec(k, v, case_id="case-interop") for k, v in hashes.signals().items()]
        banks.add_entries(s, bank, specs, added_by="test")
        s.commit()
    start_worker(settings, classifier=FixedScoreClassifier(0.0))  # creates the topics
    # Join the group now: the join overlaps with the worker's processing.
    platform_consumer.subscribe([settings.decisions_topic, settings.dlq_topic])
    platform_consumer.poll(0.1)

    # The upload service: librdkafka, acks=all, waits for every delivery report.
    allowed = make_upload_event(
        str(uuid.uuid4()),
        f"photo-{uuid.uuid4().hex[:8]}",
        "user-1",
        media_server.add("/allowed.jpg", encode(synthetic_image(4102))),
        "image/jpeg",
    )
    reupload = make_upload_event(
        str(uuid.uuid4()),
        f"photo-{uuid.uuid4().hex[:8]}",
        "user-2",
        media_server.add("/reupload.jpg", reencoded_copy(victim)),
        "image/jpeg",
        album_id="a-77",
    )
    broken_key, broken_value = f"broken-{uuid.uuid4().hex[:8]}".encode(), b'{"event_id": "x", not json'
    delivered: dict[bytes, tuple[int, int]] = {}
    failures: list[Any] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            failures.append(err)
        else:
            delivered[msg.key()] = (msg.partition(), msg.offset())

    producer = ck.Producer(
        {"bootstrap.servers": kafka_bootstrap, "client.id": "upload-service", "acks": "all"}
    )
    try:
        for key, value in (
            (allowed["content_id"].encode(), json.dumps(allowed).encode()),
            (reupload["content_id"].encode(), json.dumps(reupload).encode()),
            (broken_key, broken_value),
        ):
            producer.produce(settings.uploads_topic, key=key, value=value, on_delivery=on_delivery)
        assert producer.flush(10) == 0, "librdkafka did not deliver every upload event"
    finally:
        del producer
    assert not failures and len(delivered) == 3, (failures, delivered)

    # The platform: decisions and dead letters, in one consumer group.
    decisions: dict[bytes, list[Any]] = {}
    dead_letters: dict[bytes, Any] = {}
    wanted = {allowed["content_id"].encode(), reupload["content_id"].encode()}
    deadline = time.monotonic() + 25
    while time.monotonic() < deadline and not (wanted <= decisions.keys() and broken_key in dead_letters):
        msg = platform_consumer.poll(0.5)
        if msg is None:
            continue
        assert msg.error() is None, msg.error()
        if msg.topic() == settings.decisions_topic:
            decisions.setdefault(msg.key(), []).append(msg)
        elif msg.topic() == settings.dlq_topic:
            dead_letters[msg.key()] = msg
    assert wanted <= decisions.keys(), f"decisions for {sorted(decisions)} only"
    assert broken_key in dead_letters, f"dead letters for {sorted(dead_letters)} only"
    platform_consumer.commit(asynchronous=False)  # the group's offsets, through librdkafka

    by_content = {key: [json.loads(m.value()) for m in msgs] for key, msgs in decisions.items()}
    [allow] = by_content[allowed["content_id"].encode()]
    [remove] = by_content[reupload["content_id"].encode()]
    for decision, event in ((allow, allowed), (remove, reupload)):
        assert DECISION_FIELDS <= decision.keys(), DECISION_FIELDS - decision.keys()
        assert decision["schema_version"] == 1 and decision["sequence"] == 1
        assert decision["event_id"] == event["event_id"]
        assert decision["content_id"] == event["content_id"]
        assert decision["uploader_id"] == event["uploader_id"]
        assert decision["moderator"] is None and decision["note"] is None
        assert decision["idempotency_key"]
        datetime.fromisoformat(decision["decided_at"])
    assert allow["idempotency_key"] != remove["idempotency_key"]
    assert (allow["action"], allow["source"], allow["reason"]) == ("allow", "classifier", "below_threshold")
    assert allow["matches"] == [] and allow["classifier_score"] == 0.0
    assert allow["model_scores"] == [{"model": "fixed", "version": "fixed-0", "score": 0.0}]
    assert (remove["action"], remove["source"], remove["reason"]) == (
        "remove",
        "hash_match",
        "bank_match_auto_remove",
    )
    assert remove["matches"], remove
    for match in remove["matches"]:
        assert match["bank"] == "victims" and match["bank_action"] == "auto_remove"
        assert match["signal"] in {"sha256", "md5", "pdq"} and isinstance(match["entry_id"], int)
        assert isinstance(match["distance"], int)

    # The dead letter: the original key and value bytes, and headers saying why and where from.
    dead = dead_letters[broken_key]
    assert dead.value() == broken_value
    headers = {name: value.decode() for name, value in dead.headers() or []}
    partition, offset = delivered[broken_key]
    assert headers["error_class"] == "invalid_event"
    assert headers["error_message"]
    assert headers["source_topic"] == settings.uploads_topic
    assert (int(headers["source_partition"]), int(headers["source_offset"])) == (partition, offset)
    assert datetime.fromisoformat(headers["failed_at"]).tzinfo is not None
    assert "event_id" not in headers  # the value never parsed far enough to have one

    # The commit went through librdkafka to the broker's group coordinator.
    assignment = platform_consumer.assignment()
    committed = platform_consumer.committed(assignment, timeout=10)
    assert any(tp.offset > 0 for tp in committed if tp.topic == settings.dlq_topic), committed
