"""End to end: real broker, real PostgreSQL, real model, media over loopback HTTP.

Publishes fresh uploads, re-uploads of a banked image (exact and re-encoded), a
watch-listed image, a redelivered event and every kind of broken event, then
checks that each event got exactly one outcome, that decisions and dead letters
are on their topics, and that the worker's metrics agree.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from typing import Any

from sqlalchemy import func, select

from moderation.domain import BankAction
from moderation.events.uploads import make_upload_event
from moderation.hashing import hash_media
from moderation.media.decode import decode_image
from moderation.storage import banks
from moderation.storage.models import Item
from tests.conftest import wait_until
from tests.support.images import encode, reencoded_copy, synthetic_image


def _event(url: str, media_type: str = "image/jpeg", **extra: Any) -> dict[str, Any]:
    return make_upload_event(
        str(uuid.uuid4()), f"c-{uuid.uuid4().hex[:10]}", "uploader-1", url, media_type, **extra
    )


def _bank_image(sessions: Any, name: str, action: BankAction, data: bytes) -> None:
    hashes = hash_media(data, decode_image(data, 10**8)[1])
    with sessions() as s:
        bank = banks.get_or_create_bank(s, name, action)
        banks.add_signals(s, bank, hashes.signals(), added_by="test")
        s.commit()


def test_every_event_gets_exactly_one_outcome(
    settings_factory, sessions, start_worker, publish, topic_reader, media_server, real_classifier
):
    # Fresh uploads, scored by the real model; the review threshold is set between
    # their scores so that both the review and the allow paths are taken.
    fresh = [encode(synthetic_image(seed)) for seed in range(1, 7)]
    scores = sorted(real_classifier.classify([decode_image(b, 10**8)[1]])[0].score for b in fresh)
    threshold = (scores[2] + scores[3]) / 2
    expected_review_by_score = sum(s >= threshold for s in scores)

    banked = encode(synthetic_image(100))
    _bank_image(sessions, "victim-hashes", BankAction.AUTO_REMOVE, banked)
    watched = encode(synthetic_image(200))
    _bank_image(sessions, "watchlist", BankAction.REVIEW, watched)

    settings = settings_factory(review_threshold=threshold, media_max_bytes=2_000_000)
    worker = start_worker(settings, classifier=real_classifier)

    events: list[tuple[dict[str, Any] | None, bytes, str]] = []  # (event, raw bytes, expected outcome)

    def add(event: dict[str, Any], expected: str) -> None:
        events.append((event, json.dumps(event).encode(), expected))

    for i, data in enumerate(fresh):
        add(_event(media_server.add(f"/fresh/{i}.jpg", data)), "classifier")
    add(_event(media_server.add("/reupload/exact.jpg", banked)), "auto_remove")
    add(
        _event(media_server.add("/reupload/resized.jpg", reencoded_copy(synthetic_image(100)))), "auto_remove"
    )
    add(_event(media_server.add("/watched.png", watched), "image/png", extra_field={"kept": True}), "review")
    # Broken input: each must become a dead letter with its own error class.
    events.append((None, b"{not json", "dead_letter:invalid_event"))
    events.append(
        (None, json.dumps({"event_id": "x", "content_id": "y"}).encode(), "dead_letter:invalid_event")
    )
    add(_event(media_server.url("/missing.jpg")), "dead_letter:media_fetch_failed")
    add(_event("http://127.0.0.1:9/unreachable.jpg"), "dead_letter:media_fetch_failed")
    add(_event(media_server.add("/huge.jpg", b"\xff" * 3_000_000)), "dead_letter:media_too_large")
    add(_event(media_server.add("/junk.jpg", b"this is not an image" * 50)), "dead_letter:media_undecodable")
    add(_event(media_server.url("/status/503")), "dead_letter:media_fetch_failed")

    for _event_dict, raw, _expected in events:
        publish(settings.uploads_topic, b"k", raw)
    # Redelivery of an already published event must not create a second outcome.
    redelivered = events[0][1]
    publish(settings.uploads_topic, b"k", redelivered)

    dead_expected = [e for e in events if e[2].startswith("dead_letter")]
    valid = [e for e in events if not e[2].startswith("dead_letter")]

    dlq = topic_reader(settings.dlq_topic)

    def all_done() -> bool:
        with sessions() as s:
            n_items = s.scalar(select(func.count()).select_from(Item))
        consumed = sum(
            worker.counter("moderation_events_consumed_total", outcome=o)
            for o in ("auto_remove", "review", "allow", "dead_letter", "duplicate")
        )
        return n_items == len(valid) and consumed == len(events) + 1

    wait_until(all_done, timeout=90)

    # Exactly one item per valid event, with the expected route.
    with sessions() as s:
        items = {it.event_id: it for it in s.scalars(select(Item)).all()}
    assert len(items) == len(valid)
    routes = Counter()
    for event, _raw, expected in valid:
        item = items[event["event_id"]]
        routes[item.route] += 1
        if expected != "classifier":
            assert item.route == expected, (event["media_url"], item.route, item.reason)
    assert routes["auto_remove"] == 2
    assert routes["review"] == 1 + expected_review_by_score
    assert routes["allow"] == len(fresh) - expected_review_by_score
    watched_item = next(it for it in items.values() if it.media_url.endswith("/watched.png"))
    assert watched_item.event["extra_field"] == {"kept": True}  # unknown fields are kept
    assert watched_item.matches[0]["bank"] == "watchlist"

    # Dead letters: original bytes plus headers naming the error and the source.
    records = dlq.wait_for(len(dead_expected))
    assert len(records) == len(dead_expected)
    got_classes = Counter(dict(r.headers)["error_class"].decode() for r in records)
    want_classes = Counter(e[2].split(":", 1)[1] for e in dead_expected)
    assert got_classes == want_classes
    for r in records:
        headers = dict(r.headers)
        assert headers["source_topic"].decode() == settings.uploads_topic
        assert int(headers["source_offset"]) >= 0 and int(headers["source_partition"]) >= 0
        assert headers["error_message"]
    assert {r.value for r in records} == {e[1] for e in dead_expected}

    # Decisions: one per automatic outcome, unique idempotency keys.
    decisions = topic_reader(settings.decisions_topic)
    want_decisions = routes["auto_remove"] + routes["allow"]
    decisions.wait_for(want_decisions)
    values = decisions.values()
    assert len(values) == want_decisions
    assert len({v["idempotency_key"] for v in values}) == len(values)
    removes = [v for v in values if v["action"] == "remove"]
    assert len(removes) == 2
    assert all(v["source"] == "hash_match" and v["matches"][0]["bank"] == "victim-hashes" for v in removes)
    assert {r.key for r in decisions.records} == {items[v["event_id"]].content_id.encode() for v in values}

    # Metrics agree with what happened.
    c = worker.counter
    assert c("moderation_events_consumed_total", outcome="auto_remove") == routes["auto_remove"]
    assert c("moderation_events_consumed_total", outcome="review") == routes["review"]
    assert c("moderation_events_consumed_total", outcome="allow") == routes["allow"]
    assert c("moderation_events_consumed_total", outcome="dead_letter") == len(dead_expected)
    assert c("moderation_events_consumed_total", outcome="duplicate") == 1
    for cls, n in want_classes.items():
        assert c("moderation_dead_letters_total", error_class=cls) == n
    assert c("moderation_decisions_published_total") == want_decisions
    assert c("moderation_decisions_total", action="remove", source="hash_match") == 2
    assert c("moderation_bank_matches_total", bank="victim-hashes", signal="pdq") == 2
    # Every valid upload's picture was classified exactly once, in batches.
    assert c("moderation_classify_batch_pictures_sum") == len(valid)
    batches = c("moderation_stage_duration_seconds_count", stage="classify")
    assert 1 <= batches <= len(valid)
    assert c("moderation_model_inference_seconds_count", model=real_classifier.name) == batches
