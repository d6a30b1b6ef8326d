"""Workers joining and leaving mid-stream: every event still gets exactly one outcome."""

from __future__ import annotations

import json
import uuid

from sqlalchemy import func, select

from moderation.classify import FixedScoreClassifier
from moderation.events.uploads import make_upload_event
from moderation.storage.models import Item
from tests.conftest import wait_until
from tests.support.images import encode, synthetic_image


def _count(sessions) -> int:
    with sessions() as s:
        return s.scalar(select(func.count()).select_from(Item)) or 0


def test_scale_out_and_in_loses_and_doubles_nothing(
    settings_factory, sessions, start_worker, publish, topic_reader, media_server
):
    settings = settings_factory(kafka_max_poll_records=5)
    url = media_server.add("/img.jpg", encode(synthetic_image(1, (120, 160))))
    total = 90
    events = [make_upload_event(str(uuid.uuid4()), f"c{i}", "u", url, "image/jpeg") for i in range(total)]

    first = start_worker(settings, classifier=FixedScoreClassifier(0.0))
    for ev in events[:30]:
        publish(settings.uploads_topic, ev["content_id"].encode(), json.dumps(ev).encode())
    wait_until(lambda: _count(sessions) >= 10, timeout=60)

    second = start_worker(settings, classifier=FixedScoreClassifier(0.0))  # joins: rebalance
    # Let the join finish before the first worker leaves: the embedded tansu broker
    # (unlike Apache Kafka) leaves a group stuck in "rebalancing" when a member
    # leaves while another is still joining.
    wait_until(lambda: second.worker.consumer.assignment() and first.worker.consumer.assignment(), timeout=60)
    for ev in events[30:60]:
        publish(settings.uploads_topic, ev["content_id"].encode(), json.dumps(ev).encode())
    wait_until(lambda: _count(sessions) >= 40, timeout=60)

    first.stop()  # leaves: its partitions move to the second worker
    for ev in events[60:]:
        publish(settings.uploads_topic, ev["content_id"].encode(), json.dumps(ev).encode())
    try:
        wait_until(lambda: _count(sessions) >= total, timeout=90)
    except AssertionError:
        raise AssertionError(
            f"{_count(sessions)}/{total} stored; second worker holds {second.worker.consumer.assignment()}"
        ) from None

    with sessions() as s:
        event_ids = s.scalars(select(Item.event_id)).all()
    assert sorted(event_ids) == sorted(ev["event_id"] for ev in events)

    decisions = topic_reader(settings.decisions_topic)
    values = decisions.wait_matching(lambda v: True, count=total)
    assert {v["event_id"] for v in values} == {ev["event_id"] for ev in events}
    assert len({v["idempotency_key"] for v in values}) == total
    handled = sum(
        rw.counter("moderation_events_consumed_total", outcome=o)
        for rw in (first, second)
        for o in ("allow", "duplicate")
    )
    assert handled >= total
