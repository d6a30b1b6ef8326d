"""Hash banks end to end, on a live worker, broker and PostgreSQL: edited
re-uploads are caught, new hashes match within about a second, allowlists,
withdrawals and flood control change what the worker does without a restart."""

from __future__ import annotations

import json
import uuid
from typing import Any

import cv2
import numpy as np
from sqlalchemy import select

from moderation.classify import FixedScoreClassifier
from moderation.domain import EntrySpec, EntryStatus
from moderation.events.uploads import make_upload_event
from moderation.hashing import hash_media
from moderation.media.decode import decode_image
from moderation.storage import banks
from moderation.storage.models import Item
from tests.conftest import wait_until
from tests.support.images import encode, reencoded_copy, synthetic_image


def _publish(publish: Any, settings: Any, media_server: Any, name: str, data: bytes) -> str:
    event_id = str(uuid.uuid4())
    url = media_server.add(f"/{event_id}/{name}", data)
    event = make_upload_event(event_id, f"c-{event_id[:8]}", "uploader-1", url, "image/jpeg")
    publish(settings.uploads_topic, event["content_id"].encode(), json.dumps(event).encode())
    return event_id


def _outcome(sessions: Any, event_id: str, timeout: float = 30.0) -> Item:
    def find() -> Item | None:
        with sessions() as s:
            return s.scalar(select(Item).where(Item.event_id == event_id))

    return wait_until(find, timeout=timeout)


def _bank(sessions: Any, name: str, action: str, *images: bytes, case_id: str = "") -> list[int]:
    with sessions() as s:
        bank = banks.create_bank(s, name, action, actor="test")
        ids: list[int] = []
        for data in images:
            hashes = hash_media(data, decode_image(data, 10**8)[1])
            specs = [EntrySpec(k, v, case_id=case_id) for k, v in hashes.signals().items()]
            ids += banks.add_entries(s, bank, specs, added_by="test").ids
        s.commit()
    return ids


def test_edited_reuploads_allowlists_withdrawals_and_flood_control(
    settings_factory, sessions, start_worker, publish, media_server
):
    victim = synthetic_image(300)
    _bank(sessions, "victims", "auto_remove", encode(victim), case_id="case-7")
    benign = encode(synthetic_image(301))
    _bank(sessions, "known-benign", "allow", benign)

    settings = settings_factory(flood_max_matches=5, review_threshold=0.6)
    worker = start_worker(settings, classifier=FixedScoreClassifier(0.9))

    h, w = victim.shape[:2]
    edits = {
        "rotated": encode(cv2.rotate(victim, cv2.ROTATE_90_CLOCKWISE)),
        "mirrored": encode(cv2.flip(victim, 1)),
        "letterboxed": encode(cv2.copyMakeBorder(victim, h // 6, h // 6, 0, 0, cv2.BORDER_CONSTANT, value=0)),
        "resized": reencoded_copy(victim, scale=0.5, quality=60),
    }
    for name, data in edits.items():
        item = _outcome(sessions, _publish(publish, settings, media_server, f"{name}.jpg", data))
        assert item.route == "auto_remove", (name, item.reason, item.matches)
        assert item.matches[0]["bank"] == "victims"
    # The allowlisted picture would be flagged by the classifier (0.9) but is allowed.
    item = _outcome(sessions, _publish(publish, settings, media_server, "benign.jpg", benign))
    assert (item.route, item.reason) == ("allow", "allowlist_match")

    # A hash added while the worker runs matches the next upload, no restart.
    fresh = synthetic_image(302)
    _bank(sessions, "helpline", "auto_remove", encode(fresh))
    index = worker.worker.pipeline.index
    fresh_hashes = hash_media(encode(fresh), fresh)
    wait_until(lambda: index.match(fresh_hashes), timeout=5)  # within BANK_REFRESH_SECONDS
    item = _outcome(sessions, _publish(publish, settings, media_server, "fresh.jpg", encode(fresh)))
    assert item.route == "auto_remove" and item.matches[0]["bank"] == "helpline"

    # Flood control: the victims' PDQ entry has matched 4 times; the 5th match
    # quarantines it, so the next copy goes to review instead of being removed.
    item = _outcome(
        sessions, _publish(publish, settings, media_server, "fifth.jpg", reencoded_copy(victim, 0.7))
    )
    assert item.route == "auto_remove"
    wait_until(lambda: worker.counter("moderation_bank_entries_quarantined_total") == 1)
    item = _outcome(
        sessions, _publish(publish, settings, media_server, "sixth.jpg", reencoded_copy(victim, 0.8))
    )
    assert item.route == "review" and item.matches[0].get("quarantined") is True

    # The victim withdraws the case: copies are no longer matched.
    with sessions() as s:
        bank = banks.get_bank(s, "victims")
        banks.set_status(s, bank, banks.entries_by_case(s, bank, "case-7"), EntryStatus.WITHDRAWN, actor="t")
        s.commit()
    victim_hashes = hash_media(encode(victim), victim)
    wait_until(lambda: not index.match(victim_hashes), timeout=5)
    item = _outcome(
        sessions, _publish(publish, settings, media_server, "after.jpg", reencoded_copy(victim, 0.9))
    )
    assert item.matches == [] and item.reason == "classifier_score"


def test_unrelated_images_do_not_match_through_variants(
    settings_factory, sessions, start_worker, publish, media_server
):
    _bank(sessions, "victims", "auto_remove", *[encode(synthetic_image(400 + i)) for i in range(5)])
    settings = settings_factory()
    start_worker(settings, classifier=FixedScoreClassifier(0.0))
    for i in range(5):
        img = np.ascontiguousarray(synthetic_image(500 + i)[:, ::-1])
        item = _outcome(sessions, _publish(publish, settings, media_server, f"u{i}.jpg", encode(img)))
        assert item.matches == [] and item.route == "allow"


def test_a_banked_video_blocks_its_reencoded_copy(
    settings_factory, sessions, start_worker, publish, media_server
):
    from moderation.hashing import hash_video_bytes
    from tests.support.videos import reencoded_video, synthetic_video

    original = synthetic_video(None, seed=7, seconds=4)
    hashes = hash_video_bytes(original)
    assert hashes.vpdq and len(hashes.vpdq_frames) >= 3
    with sessions() as s:
        bank = banks.create_bank(s, "victim-videos", "auto_remove", actor="test")
        banks.add_signals(s, bank, hashes.signals(), added_by="test")
        s.commit()
    settings = settings_factory()
    start_worker(settings, classifier=FixedScoreClassifier(0.0))

    copy = _outcome(
        sessions, _publish(publish, settings, media_server, "copy.webm", reencoded_video(original))
    )
    assert copy.route == "auto_remove", (copy.reason, copy.matches)
    assert copy.matches[0]["signal"] == "vpdq" and copy.matches[0]["share"] >= 0.8
    assert copy.vpdq  # the item keeps its frame hashes, so a confirmed removal banks them
    other = _outcome(
        sessions, _publish(publish, settings, media_server, "other.mp4", synthetic_video(None, seed=8))
    )
    assert other.matches == [] and other.route == "allow"
