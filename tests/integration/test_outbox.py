"""Decisions wait in the outbox until the broker acknowledges them."""

from __future__ import annotations

from sqlalchemy import select

from moderation.domain import Action, Source
from moderation.storage import outbox
from moderation.storage.models import Decision, Item
from tests.support.factories import make_item


def _item(sessions) -> int:
    with sessions() as s:
        item = make_item(1, route="allow", reason="below_threshold", priority=0, state="closed")
        s.add(item)
        s.flush()
        outbox.add_decision(s, item, Action.ALLOW, Source.CLASSIFIER, "below_threshold", "c1:e1:pipeline")
        s.commit()
        return item.id


def test_unacknowledged_decisions_are_published_by_a_later_sweep(sessions):
    item_id = _item(sessions)
    sent: list[tuple[bytes, bytes]] = []

    def broker_down(key: bytes, value: bytes) -> None:
        raise ConnectionError("broker unavailable")

    try:
        outbox.publish_pending(sessions, broker_down)
    except ConnectionError:
        pass
    with sessions() as s:
        assert s.scalar(select(Decision.published_at).where(Decision.item_id == item_id)) is None

    assert outbox.publish_pending(sessions, lambda k, v: sent.append((k, v))) == 1
    assert sent[0][0] == b"c1" and b'"idempotency_key":"c1:e1:pipeline"' in sent[0][1]
    assert outbox.publish_pending(sessions, lambda k, v: sent.append((k, v))) == 0  # nothing twice
    with sessions() as s:
        assert s.scalar(select(Decision.published_at).where(Decision.item_id == item_id)) is not None


def test_an_items_decisions_are_published_in_order(sessions):
    from moderation.domain import Action, Source

    item_id = _item(sessions)  # has decision 1 (allow, pipeline)
    with sessions() as s:
        item = s.get(Item, item_id)
        second = outbox.add_decision(s, item, Action.REMOVE, Source.MODERATOR, "ncii", moderator="kim")
        s.commit()
        assert second.payload["sequence"] == 2
        assert second.idempotency_key == "c1:e1:decision:2"
    sent: list[bytes] = []

    # Another sweeper holds decision 1 (locked, not yet produced): decision 2 must wait.
    with sessions() as holder:
        holder.scalars(
            select(Decision)
            .where(Decision.payload.is_not(None))
            .order_by(Decision.id)
            .limit(1)
            .with_for_update()
        ).all()
        assert outbox.publish_pending(sessions, lambda k, v: sent.append(v), item_ids=[item_id]) == 0
    assert outbox.publish_pending(sessions, lambda k, v: sent.append(v), item_ids=[item_id]) == 2
    assert [b'"sequence":1' in v for v in sent] == [True, False]
    assert b'"sequence":2' in sent[1]
