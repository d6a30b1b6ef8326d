"""The moderator's loop, browser-free: an upload reaches the queue, a moderator
logs in, claims it, reveals and removes it; the decision is published, the hashes
land in the `confirmed` bank, and a re-upload of the same picture is removed
automatically without reaching the queue."""

from __future__ import annotations

import json
import uuid

from sqlalchemy import select

from moderation.domain import HashSet
from moderation.events.uploads import make_upload_event
from moderation.storage.models import Bank, BankEntry, Item
from tests.conftest import wait_until
from tests.support.images import encode, reencoded_copy, synthetic_image
from tests.support.web import add_user, login, make_app, media_src


def _publish_upload(publish, settings, url: str) -> str:
    event_id = str(uuid.uuid4())
    event = make_upload_event(event_id, f"content-{event_id[:8]}", "uploader-9", url, "image/jpeg")
    publish(settings.uploads_topic, event["content_id"].encode(), json.dumps(event).encode())
    return event_id


def _item(sessions, event_id: str) -> Item | None:
    with sessions() as s:
        return s.scalar(select(Item).where(Item.event_id == event_id))


def test_confirmed_removal_blocks_the_next_copy(
    settings_factory, sessions, start_worker, publish, topic_reader, media_server, real_classifier
):
    # Threshold 0: the real model scores every upload and each one goes to review.
    settings = settings_factory(review_threshold=0.0)
    worker = start_worker(settings, classifier=real_classifier)
    original = synthetic_image(42)
    first = _publish_upload(publish, settings, media_server.add("/a.jpg", encode(original)))
    item = wait_until(lambda: _item(sessions, first), timeout=60)
    assert item.route == "review" and item.state == "pending"

    password = add_user(sessions, "maria")
    client = make_app(settings).test_client()
    assert client.get("/").status_code == 302  # login required
    csrf = login(client, "maria", password)

    resp = client.post("/next", data={"csrf_token": csrf})
    assert resp.status_code == 302 and resp.location.endswith(f"/items/{item.id}")
    page = client.get(f"/items/{item.id}").get_data(as_text=True)
    assert 'class="media blurred"' in page  # blurred until revealed
    assert "Classifier score" in page and f"{item.score:.3f}" in page
    assert item.model_scores and all(m["version"] in page for m in item.model_scores)  # each model's verdict
    media = client.get(media_src(page))  # the page's short-lived signed link
    assert media.status_code == 200 and media.data == encode(original)
    assert "no-store" in media.headers["Cache-Control"]
    assert client.post(f"/items/{item.id}/reveal", headers={"X-CSRF-Token": csrf}).status_code == 204

    resp = client.post(
        f"/items/{item.id}/decide", data={"csrf_token": csrf, "action": "remove", "reason": "ncii"}
    )
    assert resp.status_code == 302

    decided = _item(sessions, first)
    assert decided.state == "decided"
    with sessions() as s:
        bank = s.scalar(select(Bank).where(Bank.name == "confirmed"))
        assert bank is not None and bank.action == "auto_remove"
        entries = s.scalars(select(BankEntry).where(BankEntry.bank_id == bank.id)).all()
        signals = {e.signal: e.value for e in entries}
    assert signals == {"sha256": decided.sha256, "md5": decided.md5, "pdq": decided.pdq}

    decisions = topic_reader(settings.decisions_topic)
    moderator_decision = decisions.wait_matching(lambda v: v["source"] == "moderator")[0]
    assert moderator_decision["action"] == "remove"
    assert moderator_decision["reason"] == "ncii"
    assert moderator_decision["moderator"] == "maria"
    assert moderator_decision["content_id"] == decided.content_id

    # Every worker applies new bank entries within BANK_REFRESH_SECONDS.
    index = worker.worker.pipeline.index
    wait_until(lambda: index.match(HashSet(decided.sha256, "", "", 0)), timeout=5)

    # The same picture again, resized and re-compressed: removed with no human involved.
    second = _publish_upload(publish, settings, media_server.add("/b.jpg", reencoded_copy(original)))
    again = wait_until(lambda: _item(sessions, second), timeout=60)
    assert again.route == "auto_remove", (again.reason, again.matches, again.pdq_quality)
    assert again.matches[0]["bank"] == "confirmed"
    auto = decisions.wait_matching(lambda v: v["event_id"] == second)[0]
    assert auto["action"] == "remove" and auto["source"] == "hash_match"


def test_api_flow_with_basic_auth_and_escalation(
    settings_factory, sessions, start_worker, publish, topic_reader, media_server, real_classifier
):
    settings = settings_factory(review_threshold=0.0)
    start_worker(settings, classifier=real_classifier)
    event_id = _publish_upload(publish, settings, media_server.add("/c.jpg", encode(synthetic_image(7))))
    item = wait_until(lambda: _item(sessions, event_id), timeout=60)

    mod_pw = add_user(sessions, "sam")
    admin_pw = add_user(sessions, "ada", role="admin")
    other_pw = add_user(sessions, "lee")
    client = make_app(settings).test_client()
    sam = {"Authorization": _basic("sam", mod_pw)}
    ada = {"Authorization": _basic("ada", admin_pw)}
    lee = {"Authorization": _basic("lee", other_pw)}

    assert client.post("/api/v1/queue/claim", json={}).status_code == 401
    # A form post riding on remembered Basic credentials is refused.
    assert client.post("/api/v1/queue/claim", headers=sam, data={"x": "1"}).status_code == 415
    claimed = client.post("/api/v1/queue/claim", headers=sam, json={})
    assert claimed.status_code == 200 and claimed.json["id"] == item.id
    # Nobody else gets the same item while the lease is live.
    assert client.post("/api/v1/queue/claim", headers=lee, json={}).status_code == 204
    assert client.get(f"/api/v1/items/{item.id}", headers=lee).status_code == 404  # not his to see

    bad = client.post(
        f"/api/v1/items/{item.id}/decision", headers=sam, json={"action": "nuke", "reason": "ncii"}
    )
    assert bad.status_code == 400 and "unknown action" in bad.json["error"]
    minor = client.post(
        f"/api/v1/items/{item.id}/decision",
        headers=sam,
        json={"action": "remove", "reason": "suspected_minor"},
    )
    assert minor.status_code == 400

    esc = client.post(
        f"/api/v1/items/{item.id}/decision", headers=sam, json={"action": "escalate", "reason": "unclear"}
    )
    assert esc.status_code == 201 and esc.json["action"] == "escalate"
    # Escalated items go to admins only.
    assert client.post("/api/v1/queue/claim", headers=lee, json={}).status_code == 204
    admin_claim = client.post("/api/v1/queue/claim", headers=ada, json={})
    assert admin_claim.json["id"] == item.id and admin_claim.json["tier"] == "senior"
    done = client.post(
        f"/api/v1/items/{item.id}/decision", headers=ada, json={"action": "allow", "reason": "not_violating"}
    )
    assert done.status_code == 201 and done.json["banked_hashes"] == 0

    decisions = topic_reader(settings.decisions_topic)
    moderator = decisions.wait_matching(lambda v: v["source"] == "moderator", count=2)
    assert [(v["action"], v["moderator"]) for v in moderator] == [("escalate", "sam"), ("allow", "ada")]
    assert len({v["idempotency_key"] for v in moderator}) == 2


def _basic(user: str, password: str) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
