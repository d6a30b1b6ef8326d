"""The outbox-poisoning bug, end to end: a decision larger than the producer's
1 MiB limit (a moderator's 1 MiB note, from before the console bounded notes)
sits in the outbox. It used to be fatal: every `moderation worker` exited on
its first outbox sweep, within seconds of each restart, and no later decision
was ever published. Now a real worker process sets it aside with the reason,
stays up, counts it, and goes on publishing: the other decisions already
waiting and the decision of a new upload reach the decisions topic."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from sqlalchemy import select

from moderation.domain import Action, Source
from moderation.events import kafka
from moderation.events.uploads import make_upload_event
from moderation.storage import outbox
from moderation.storage.models import Decision, Item
from tests.conftest import wait_until
from tests.support.factories import make_item
from tests.support.http import http_get
from tests.support.images import encode, synthetic_image
from tests.support.worker_process import WorkerProcess, worker_env

HUGE_NOTE = "n" * (1024 * 1024)  # the outside probe's note: a decision over 1 MiB


def _decision(sessions: Any, n: int, note: str) -> int:
    with sessions() as s:
        item = make_item(n, content_id=f"poison-{n}", event_id=f"poison-e{n}", state="decided")
        s.add(item)
        s.flush()
        decision = outbox.add_decision(
            s, item, Action.REMOVE, Source.MODERATOR, "ncii", moderator="mo", note=note
        )
        s.commit()
        return decision.id


def _row(sessions: Any, decision_id: int) -> Decision:
    with sessions() as s:
        found = s.get(Decision, decision_id)
        assert found is not None
        s.expunge(found)
        return found


def test_a_worker_sets_an_oversized_decision_aside_stays_up_and_keeps_publishing(
    settings_factory, sessions, publish, media_server, topic_reader, tmp_path
):
    settings = settings_factory()
    kafka.ensure_topics(settings)
    huge = _decision(sessions, 1, HUGE_NOTE)
    waiting = _decision(sessions, 2, "an ordinary note")  # another item's decision, unpublished too
    decisions = topic_reader(settings.decisions_topic)

    with WorkerProcess(worker_env(settings), tmp_path / "worker.log") as worker:
        worker.wait_ready()
        wait_until(lambda: _row(sessions, huge).set_aside_at is not None, timeout=60, interval=0.3)
        refused = _row(sessions, huge)
        assert refused.published_at is None
        assert "MessageSizeTooLargeError" in (refused.set_aside_reason or ""), refused.set_aside_reason

        # The decision behind it in the same sweep went out.
        (other,) = decisions.wait_matching(
            lambda v: v["idempotency_key"] == _row(sessions, waiting).idempotency_key
        )
        assert other["note"] == "an ordinary note"
        assert _row(sessions, waiting).published_at is not None

        # A new upload is moderated and its decision published by the same, still running worker.
        event_id = str(uuid.uuid4())
        url = media_server.add("/after.jpg", encode(synthetic_image(7)))
        event = make_upload_event(event_id, "content-after", "u", url, "image/jpeg")
        publish(settings.uploads_topic, b"content-after", json.dumps(event).encode())
        (after,) = decisions.wait_matching(lambda v: v["event_id"] == event_id, timeout=60)
        assert after["content_id"] == "content-after" and after["sequence"] == 1

        # Two more sweeps (every 5 s) later the worker is still up and has not tried again.
        time.sleep(11)
        assert worker.alive, worker.log_tail()
        status, text = http_get(worker.base_url + "/metrics")
        assert status == 200
        assert 'moderation_publish_failures_total{outbox="decisions",reason="refused"} 1.0' in text
        assert _row(sessions, huge).set_aside_at == refused.set_aside_at

    logged = [line for line in worker.log_lines() if line.get("msg", "").startswith("decision set aside")]
    assert len(logged) == 1 and logged[0].get("idempotency_key") == refused.idempotency_key, logged
    assert [v["idempotency_key"] for v in decisions.values()].count(refused.idempotency_key) == 0
    with sessions() as s:
        assert s.scalar(select(Item.state).where(Item.event_id == event_id)) is not None
