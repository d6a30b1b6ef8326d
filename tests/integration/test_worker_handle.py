"""Worker.handle on real PostgreSQL with captured producers: one record at a time."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from sqlalchemy import func, select

from moderation.classify import FixedScoreClassifier
from moderation.events.uploads import make_upload_event
from moderation.events.worker import Worker
from moderation.runtime import build_pipeline
from moderation.storage.models import Decision, Item
from tests.support.images import encode, synthetic_image


class ExplodingClassifier(FixedScoreClassifier):
    def run(self, tensors):
        raise RuntimeError("model crashed on this input")


@pytest.fixture
def make_worker(settings_factory, sessions, metrics):
    def make(classifier=None):
        sent = {"decisions": [], "dlq": []}
        settings = settings_factory()
        worker = Worker(
            consumer=None,
            sessions=sessions,
            pipeline=build_pipeline(settings, metrics, classifier or FixedScoreClassifier(0.1)),
            send_decision=lambda k, v, h=(): sent["decisions"].append((k, v)),
            send_dead_letter=lambda k, v, h=(): sent["dlq"].append((k, v, dict(h))),
            metrics=metrics,
            batch_wait_s=60.0,  # batches are cut by size here, never by a slow machine
        )
        return worker, sent

    return make


def _record(value: bytes, offset: int = 7):
    return SimpleNamespace(topic="uploads", partition=2, offset=offset, key=b"k", value=value)


def test_unexpected_errors_dead_letter_the_event_and_the_worker_carries_on(make_worker, media_server):
    worker, sent = make_worker(ExplodingClassifier())
    url = media_server.add("/a.jpg", encode(synthetic_image(1)))
    raw = json.dumps(make_upload_event("e1", "c1", "u", url, "image/jpeg")).encode()
    assert worker.handle(_record(raw)) == "dead_letter"
    key, value, headers = sent["dlq"][0]
    assert value == raw
    assert headers["error_class"] == b"processing_failed"
    assert b"RuntimeError: model crashed" in headers["error_message"]
    assert headers["source_partition"] == b"2" and headers["source_offset"] == b"7"
    assert headers["event_id"] == b"e1"


def test_redelivery_creates_no_second_item_or_decision(make_worker, media_server, sessions):
    worker, sent = make_worker()
    url = media_server.add("/b.jpg", encode(synthetic_image(2)))
    raw = json.dumps(make_upload_event("e2", "c2", "u", url, "image/jpeg")).encode()
    assert worker.handle(_record(raw)) == "allow"
    requests_after_first = media_server.requests
    assert worker.handle(_record(raw, offset=8)) == "duplicate"
    assert media_server.requests == requests_after_first  # no refetch
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Item)) == 1
        assert s.scalar(select(func.count()).select_from(Decision)) == 1
    assert len(sent["decisions"]) == 1


def test_a_decision_unpublished_before_a_crash_is_published_on_redelivery(
    make_worker, media_server, sessions
):
    worker, sent = make_worker()
    url = media_server.add("/c.jpg", encode(synthetic_image(3)))
    raw = json.dumps(make_upload_event("e3", "c3", "u", url, "image/jpeg")).encode()

    def broker_down(*_args):
        from moderation.errors import TransientError

        raise TransientError("broker unavailable")

    worker.send_decision = broker_down
    with pytest.raises(Exception, match="broker unavailable"):
        worker.handle(_record(raw))  # item stored, decision not acknowledged, offset not committed
    worker.send_decision = lambda k, v, h=(): sent["decisions"].append((k, v))
    assert worker.handle(_record(raw)) == "duplicate"  # redelivered
    assert len(sent["decisions"]) == 1
    with sessions() as s:
        assert s.scalar(select(Decision.published_at)) is not None


@pytest.mark.parametrize("bad_id", ["nul\u0000id", "surrogate\ud800"])
def test_ids_no_database_can_store_are_dead_lettered_not_fatal(make_worker, bad_id):
    worker, sent = make_worker()
    event = make_upload_event(bad_id, "c9", "u", "http://127.0.0.1:9/x.jpg", "image/jpeg")
    raw = json.dumps(event).encode()  # json escapes both, as an upload service would send them
    assert worker.handle(_record(raw, offset=11)) == "dead_letter"
    assert sent["dlq"][0][2]["error_class"] == b"invalid_event"


def test_a_redelivered_dead_letter_is_not_sent_or_counted_twice(make_worker, metrics):
    worker, sent = make_worker()
    assert worker.handle(_record(b"{broken", offset=3)) == "dead_letter"
    assert worker.handle(_record(b"{broken", offset=3)) == "duplicate"  # same position: redelivery
    assert len(sent["dlq"]) == 1
    assert (
        metrics.registry.get_sample_value("moderation_dead_letters_total", {"error_class": "invalid_event"})
        == 1
    )
    assert worker.handle(_record(b"{broken", offset=4)) == "dead_letter"  # a new delivery


def test_oversized_dead_letters_are_cut_to_fit_a_kafka_message(make_worker, sessions):
    worker, sent = make_worker()
    huge_key, huge_value = b"k" * 200_000, b"v" * 950_000
    record = SimpleNamespace(topic="uploads", partition=0, offset=1, key=huge_key, value=huge_value)
    assert worker.handle(record) == "dead_letter"
    key, value, headers = sent["dlq"][0]
    assert len(key) + len(value) + sum(len(k) + len(v) for k, v in headers.items()) < 1_000_000
    assert headers["value_truncated"] == b"true" and headers["value_size"] == b"950000"
    assert headers["key_truncated"] == b"true"


def test_an_unexpected_error_outside_the_pipeline_dead_letters_the_record(make_worker, monkeypatch):
    worker, sent = make_worker()
    from moderation.storage import outcomes

    def broken(*_args, **_kwargs):
        raise KeyError("bug")

    monkeypatch.setattr(outcomes, "find_item_id", broken)
    raw = json.dumps(make_upload_event("e7", "c7", "u", "http://x/y.jpg", "image/jpeg")).encode()
    assert worker.handle(_record(raw, offset=12)) == "dead_letter"
    assert sent["dlq"][0][2]["error_class"] == b"processing_failed"


class CountingClassifier(FixedScoreClassifier):
    """Scores by mean brightness and records each batch it was given; a picture
    whose top-left pixel is pure white crashes the model (a poison input)."""

    def __init__(self):
        super().__init__(0.0)
        self.batches = []

    def preprocess(self, images_bgr):
        rows = [[img.mean() / 255, float((img[0, 0] == 255).all())] for img in images_bgr]
        return {"brightness": np.array(rows)}

    def run(self, tensors):
        rows = np.concatenate([t["brightness"] for t in tensors])
        self.batches.append(len(rows))
        if rows[:, 1].any():
            raise RuntimeError("poison picture")
        return [self._scores(float(v)) for v in rows[:, 0]]

    def _scores(self, value):
        from moderation.classify import ModelScore, Scores

        return Scores(value, (ModelScore("brightness", "brightness-1", value, {"bright": value}),))


def _events(media_server, count, poison_at=None):
    raws = []
    for i in range(count):
        img = synthetic_image(40 + i)
        if i == poison_at:
            img[0, 0] = 255
        url = media_server.add(f"/batch{i}.png", encode(img, ".png"))
        raws.append(json.dumps(make_upload_event(f"b{i}", f"cb{i}", "u", url, "image/png")).encode())
    return raws


def test_a_batch_is_classified_in_one_run_and_each_event_keeps_its_own_score(
    make_worker, media_server, sessions
):
    classifier = CountingClassifier()
    worker, sent = make_worker(classifier)
    raws = _events(media_server, 5)
    records = [_record(raw, offset=i) for i, raw in enumerate(raws)]
    assert worker.handle_batch(records) == ["allow"] * 5
    assert classifier.batches == [5]
    with sessions() as s:
        items = {i.event_id: i for i in s.scalars(select(Item))}
    for i in range(len(raws)):
        item = items[f"b{i}"]
        expected = float(synthetic_image(40 + i).mean()) / 255  # PNG: lossless
        assert item.score == pytest.approx(expected, abs=1e-6)
        assert item.model_version == "brightness-1"
        assert item.model_scores == [
            {
                "model": "brightness",
                "version": "brightness-1",
                "score": round(expected, 6),
                "labels": {"bright": round(expected, 6)},
            }
        ]
    payloads = [v for _k, v in sent["decisions"]]
    first = json.loads(payloads[0])
    assert first["model_scores"][0]["model"] == "brightness" and "labels" not in first["model_scores"][0]


def test_the_batch_size_limits_how_many_records_are_taken(make_worker, media_server):
    classifier = CountingClassifier()
    worker, _sent = make_worker(classifier)
    worker.batch_size = 2
    records = [_record(raw, offset=i) for i, raw in enumerate(_events(media_server, 5))]
    assert len(worker.handle_batch(records)) == 2
    assert classifier.batches == [2]


def test_the_batch_wait_limits_how_long_records_are_gathered(make_worker, media_server):
    classifier = CountingClassifier()
    worker, _sent = make_worker(classifier)
    worker.batch_wait_s = 0.0  # every record takes longer than that to fetch
    records = [_record(raw, offset=i) for i, raw in enumerate(_events(media_server, 3))]
    assert len(worker.handle_batch(records)) == 1


def test_a_poison_picture_dead_letters_only_its_own_event(make_worker, media_server, sessions):
    classifier = CountingClassifier()
    worker, sent = make_worker(classifier)
    records = [_record(raw, offset=i) for i, raw in enumerate(_events(media_server, 4, poison_at=2))]
    assert worker.handle_batch(records) == ["allow", "allow", "dead_letter", "allow"]
    assert classifier.batches == [4, 1, 1, 1, 1]  # the batch failed, then one by one
    assert sent["dlq"][0][2]["event_id"] == b"b2"
    assert b"poison picture" in sent["dlq"][0][2]["error_message"]
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Item)) == 3


def test_invalid_media_in_a_batch_is_dead_lettered_and_the_rest_classified(make_worker, media_server):
    classifier = CountingClassifier()
    worker, sent = make_worker(classifier)
    raws = _events(media_server, 2)
    broken = media_server.add("/broken.jpg", b"\xff\xd8\xff not really a jpeg")
    raws.insert(1, json.dumps(make_upload_event("bad", "cbad", "u", broken, "image/jpeg")).encode())
    records = [_record(raw, offset=i) for i, raw in enumerate(raws)]
    assert worker.handle_batch(records) == ["allow", "dead_letter", "allow"]
    assert classifier.batches == [2]
    assert sent["dlq"][0][2]["error_class"] == b"media_undecodable"


class FakeDetector:
    """Finds one box on every picture; records how many pictures it was given."""

    name, version = "fake", "fake-0"

    def __init__(self, fail: bool = False):
        self.calls = []
        self.fail = fail

    def detect(self, images_bgr):
        from moderation.classify.detector import Region

        self.calls.append(len(images_bgr))
        if self.fail:
            raise RuntimeError("detector crashed")
        return [[Region("BUTTOCKS_EXPOSED", 0.8, 0.1, 0.2, 0.3, 0.4)] for _ in images_bgr]


@pytest.mark.parametrize("fail", [False, True])
def test_a_detector_adds_regions_to_items_a_moderator_will_see_and_never_blocks_them(
    make_worker, media_server, sessions, fail
):
    worker, _sent = make_worker(FixedScoreClassifier(0.9))  # over the threshold: review
    detector = FakeDetector(fail=fail)
    worker.pipeline.detector = detector
    records = [_record(raw, offset=i) for i, raw in enumerate(_events(media_server, 3))]
    assert worker.handle_batch(records) == ["review"] * 3
    assert detector.calls == [3]  # one batch for the whole batch of events
    with sessions() as s:
        regions = [i.regions for i in s.scalars(select(Item).order_by(Item.id))]
    if fail:
        assert regions == [None, None, None]
    else:
        box = {"label": "BUTTOCKS_EXPOSED", "score": 0.8, "x": 0.1, "y": 0.2, "w": 0.3, "h": 0.4}
        assert regions == [[box]] * 3


def test_no_detector_runs_for_allowed_items(make_worker, media_server):
    worker, _sent = make_worker(FixedScoreClassifier(0.1))
    detector = FakeDetector()
    worker.pipeline.detector = detector
    records = [_record(raw, offset=i) for i, raw in enumerate(_events(media_server, 2))]
    assert worker.handle_batch(records) == ["allow", "allow"]
    assert detector.calls == []


def test_flood_control_quarantine_takes_effect_within_the_same_batch(make_worker, media_server, sessions):
    from moderation.domain import EntrySpec
    from moderation.hashing import hash_media
    from moderation.media.decode import decode_image
    from moderation.storage import banks
    from moderation.storage.flood import FloodPolicy

    victim = encode(synthetic_image(77))
    with sessions() as s:
        bank = banks.create_bank(s, "victims", "auto_remove", actor="test")
        hashes = hash_media(victim, decode_image(victim, 10**8)[1])
        banks.add_entries(s, bank, [EntrySpec("pdq", hashes.pdq)], added_by="test")
        s.commit()
    worker, _sent = make_worker(FixedScoreClassifier(0.0))
    worker.flood = FloodPolicy(max_hits=2, window_seconds=3600)
    worker.refresh_banks(force=True)
    raws = []
    for i in range(4):
        url = media_server.add(f"/copy{i}.jpg", victim)
        raws.append(json.dumps(make_upload_event(f"copy{i}", f"cc{i}", "u", url, "image/jpeg")).encode())
    records = [_record(raw, offset=i) for i, raw in enumerate(raws)]
    # The second copy reaches the flood limit and quarantines the entry; the
    # third and fourth, matched before that in the same batch, go to people.
    assert worker.handle_batch(records) == ["auto_remove", "auto_remove", "review", "review"]
    with sessions() as s:
        items = list(s.scalars(select(Item).order_by(Item.id)))
    assert [m["quarantined"] for m in items[2].matches] == [True]
