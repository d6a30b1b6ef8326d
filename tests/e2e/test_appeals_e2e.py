"""Appeals over the real broker: a moderator's removal is published, the
platform appeals it on the appeals topic, ``moderation appeals`` (its consumer
loop, in a thread) reopens the item, a different moderator allows it, and the
new decision reaches the decisions topic naming the appeal and the decision it
supersedes. A redelivered appeal changes nothing; an appeal of unknown content
is dead-lettered."""

from __future__ import annotations

import json
import threading
import uuid

from prometheus_client import CollectorRegistry
from sqlalchemy import func, select

from moderation.events import kafka
from moderation.events.appeals import build_appeal_consumer
from moderation.metrics import Metrics
from moderation.storage.models import Appeal, BankEntry, Item
from tests.conftest import wait_until
from tests.support.reviewers import Reviewer, add_item, add_users
from tests.support.web import make_app


def test_an_appeal_on_the_topic_reopens_and_the_new_decision_is_published(
    settings_factory, sessions, publish, topic_reader
):
    settings = settings_factory(appeals_topic=f"appeals-{uuid.uuid4().hex[:8]}")
    kafka.ensure_topics(settings)
    metrics = Metrics(CollectorRegistry())
    consumer = build_appeal_consumer(settings, metrics, group_id=f"appeals-{uuid.uuid4().hex[:8]}")
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    try:
        app = make_app(settings)  # decisions go to the real decisions topic
        add_users(sessions, mo="moderator", lou="moderator")
        item_id = add_item(sessions)
        mo, lou = Reviewer(app, sessions, "mo"), Reviewer(app, sessions, "lou")
        assert mo.claim() == item_id
        assert mo.decide(item_id, "remove", "ncii").status_code == 201

        decisions = topic_reader(settings.decisions_topic)
        (removal,) = decisions.wait_matching(lambda v: v["action"] == "remove")
        assert removal["moderator"] == "mo"

        appeal = {
            "appeal_id": "ap-e2e",
            "content_id": "c1",
            "statement": "my own photo",
            "submitted_by": "u-1",
        }
        publish(settings.appeals_topic, b"c1", json.dumps(appeal).encode())

        def item() -> Item:
            with sessions() as s:
                found = s.get(Item, item_id)
                assert found is not None
                return found

        wait_until(lambda: item().tier == "appeal", timeout=30)
        # Redelivered, then an appeal of content nobody knows; same key, so in this order.
        publish(settings.appeals_topic, b"c1", json.dumps(appeal).encode())
        publish(
            settings.appeals_topic, b"c1", json.dumps({"appeal_id": "ap-x", "content_id": "gone"}).encode()
        )
        dlq = topic_reader(settings.dlq_topic)
        dlq.wait_matching(lambda v: v.get("appeal_id") == "ap-x")
        (dead,) = dlq.records
        headers = dict(dead.headers)
        assert headers["error_class"] == b"invalid_appeal"
        assert headers["error_message"] == b"no content 'gone' to appeal"
        with sessions() as s:
            assert s.scalar(select(func.count()).select_from(Appeal)) == 1
        sample = metrics.registry.get_sample_value
        assert sample("moderation_appeals_total", {"source": "kafka", "outcome": "duplicate"}) == 1.0

        assert mo.claim() is None  # the moderator who removed it is not served the appeal
        assert lou.claim() == item_id
        assert lou.decide(item_id, "allow", "not_violating").status_code == 201
        (outcome,) = decisions.wait_matching(lambda v: v.get("appeal_id") == "ap-e2e")
        assert (outcome["action"], outcome["moderator"]) == ("allow", "lou")
        assert outcome["supersedes"] == removal["idempotency_key"]
        assert outcome["idempotency_key"] != removal["idempotency_key"] and outcome["sequence"] == 2
        assert decisions.records[-1].key == b"c1"
        with sessions() as s:  # the overturned removal's hashes no longer block copies
            assert set(s.scalars(select(BankEntry.status)).all()) == {"withdrawn"}
    finally:
        consumer.stop()
        thread.join(timeout=20)
        consumer.close()
