"""A StopNCII hash list end to end: `moderation exchange sync` pulls a victim's
hash from a loopback StopNCII API into its bank, the worker sends a re-upload
to high-priority review, a moderator removes it, and `moderation exchange
feedback` reports it Blocked; a later withdrawal stops the StopNCII matching."""

from __future__ import annotations

import base64
import json
import uuid

from sqlalchemy import select

from moderation.classify import FixedScoreClassifier
from moderation.cli import main
from moderation.domain import HashSet
from moderation.events.uploads import make_upload_event
from moderation.hashing import pdq
from moderation.storage.models import Bank, Item
from tests.conftest import wait_until
from tests.support.exchange_servers import StopNCIIServer
from tests.support.images import reencoded_copy, synthetic_image
from tests.support.web import add_user, make_app


def _upload(publish, settings, media_server, data: bytes) -> str:
    event_id = str(uuid.uuid4())
    url = media_server.add(f"/{event_id}.jpg", data)
    event = make_upload_event(event_id, f"c-{event_id[:8]}", "uploader-3", url, "image/jpeg")
    publish(settings.uploads_topic, event["content_id"].encode(), json.dumps(event).encode())
    return event_id


def _item(sessions, event_id: str) -> Item:
    def find() -> Item | None:
        with sessions() as s:
            return s.scalar(select(Item).where(Item.event_id == event_id))

    return wait_until(find, timeout=30)


def test_stopncii_sync_match_review_feedback_and_withdrawal(
    settings_factory, sessions, start_worker, publish, media_server, monkeypatch, capsys
):
    victim = synthetic_image(600)
    victim_pdq, _ = pdq.hash_image(victim)
    settings = settings_factory()
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    with StopNCIIServer() as server:
        env = {
            "DATABASE_URL": settings.database_url,
            "STOPNCII_API_URL": server.url,
            "STOPNCII_SUBSCRIPTION_KEY": "sub-key",
            "STOPNCII_FETCH_FUNCTION_KEY": "fetch-key",
            "STOPNCII_FEEDBACK_FUNCTION_KEY": "fb-key",
        }
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        server.add(victim_pdq, cases={"case-1": "Active"})
        assert main(["exchange", "sync", "stopncii"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert (out["bank"], out["added"]) == ("stopncii", 1)
        with sessions() as s:
            bank = s.scalar(select(Bank).where(Bank.name == "stopncii"))
            assert bank is not None and (bank.action, bank.source) == ("review_high", "stopncii")

        worker = start_worker(settings, classifier=FixedScoreClassifier(0.0))
        item = _item(sessions, _upload(publish, settings, media_server, reencoded_copy(victim)))
        assert item.route == "review" and item.matches[0]["bank"] == "stopncii"
        assert item.priority >= 90  # review_high

        password = add_user(sessions, "maria")
        auth = {"Authorization": "Basic " + base64.b64encode(f"maria:{password}".encode()).decode()}
        client = make_app(settings, send_decision=lambda *a, **k: None).test_client()
        assert client.post("/api/v1/queue/claim", headers=auth, json={}).json["id"] == item.id
        decided = client.post(
            f"/api/v1/items/{item.id}/decision", headers=auth, json={"action": "remove", "reason": "ncii"}
        )
        assert decided.status_code == 201

        assert main(["exchange", "feedback", "stopncii"]) == 0
        assert json.loads(capsys.readouterr().out)["sent"] == 1
        assert len(server.feedback) == 1
        body = server.feedback[0]
        assert victim_pdq in json.dumps(body) and "Blocked" in json.dumps(body)
        assert main(["exchange", "feedback", "stopncii"]) == 0  # nothing is sent twice
        assert json.loads(capsys.readouterr().out)["sent"] == 0

        # The victim withdraws the case at StopNCII: the next sync stops that
        # bank's matching (the platform's own confirmed removal still blocks it).
        server.now += 100
        server.set_status(victim_pdq, "Withdrawn")
        assert main(["exchange", "sync", "stopncii"]) == 0
        assert json.loads(capsys.readouterr().out)["withdrawn"] == 1
        index = worker.worker.pipeline.index
        probe = HashSet("", "", victim_pdq, 100)
        wait_until(lambda: [m.bank for m in index.match(probe)] == ["confirmed"], timeout=5)
        later = _item(sessions, _upload(publish, settings, media_server, reencoded_copy(victim, 0.8)))
        assert [m["bank"] for m in later.matches] == ["confirmed"]
