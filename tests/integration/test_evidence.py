"""Evidence preservation on real PostgreSQL: removals by moderators (through the
console) and by the worker, the chain of custody, legal holds, purges, exports."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import zipfile
from datetime import timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select, text
from werkzeug.security import generate_password_hash

from moderation import evidence_crypto
from moderation.classify import FixedScoreClassifier
from moderation.config import load_settings
from moderation.domain import EntrySpec
from moderation.events.uploads import make_upload_event
from moderation.events.worker import Worker
from moderation.runtime import build_pipeline
from moderation.storage import banks, custody, evidence
from moderation.storage.models import (
    AuditRecord,
    CustodyRecord,
    Decision,
    Evidence,
    Item,
    ItemMedia,
    User,
    utcnow,
)
from tests.support.factories import make_item
from tests.support.images import encode, synthetic_image
from tests.support.web import add_user, login, make_app

KEY = base64.b64encode(bytes(range(32))).decode()
PASSWORD = "correct horse battery"
CHEAP = "scrypt:1024:8:1"


@pytest.fixture
def settings(db_url, tmp_path):
    return load_settings(
        {},
        database_url=db_url,
        secret_key="test-secret",
        evidence_key=KEY,
        data_dir=str(tmp_path),
        dev_mode=True,
        media_allowed_hosts="127.0.0.1",
    )


def seed_item(sessions, n=1, media=True, **overrides):
    """A pending item with (optionally) its media; returns (item id, media bytes)."""
    data = encode(synthetic_image(n))
    with sessions() as s:
        values = {"sha256": hashlib.sha256(data).hexdigest(), "event": {"title": "holiday"}, **overrides}
        item = make_item(n, **values)
        s.add(item)
        s.flush()
        if media:
            s.add(ItemMedia(item_id=item.id, content_type="image/jpeg", data=data))
        s.commit()
        return item.id, data


def remove_in_console(app, sessions, item_id, username="kim"):
    password = add_user(sessions, username)
    client = app.test_client()
    csrf = login(client, username, password)
    client.post("/next", data={"csrf_token": csrf})
    resp = client.post(
        f"/items/{item_id}/decide", data={"csrf_token": csrf, "action": "remove", "reason": "ncii"}
    )
    assert resp.status_code == 302, resp.get_data(as_text=True)
    return client, csrf


def admin_client(app, sessions, role="admin", name="ada"):
    """A logged-in console client of a new user with ``role`` (any of domain.Role)."""
    with sessions() as s:
        s.add(User(username=name, password_hash=generate_password_hash(PASSWORD, CHEAP), role=role))
        s.commit()
    client = app.test_client()
    return client, login(client, name, PASSWORD)


# -- preservation -------------------------------------------------------------------------
def test_a_moderator_removal_preserves_evidence_before_the_decision_is_published(settings, sessions):
    seen_at_publish = []

    def send(key, value):
        # The broker sees the decision only after its transaction committed: by then the evidence must exist.
        with sessions() as s:
            seen_at_publish.append(s.scalar(select(func.count()).select_from(Evidence)))

    item_id, data = seed_item(sessions)
    app = make_app(settings, send_decision=send)
    remove_in_console(app, sessions, item_id)
    assert seen_at_publish == [1]
    with sessions() as s:
        ev = s.get(Evidence, item_id)
        decision = s.scalars(select(Decision)).one()
        assert ev is not None and ev.ciphertext is not None
        assert data not in ev.ciphertext and ev.ciphertext != data
        assert ev.media_sha256 == hashlib.sha256(data).hexdigest() and ev.content_type == "image/jpeg"
        m = ev.manifest
        assert m["decision"]["id"] == decision.id and m["decision"]["action"] == "remove"
        assert m["moderator"] == "kim" and m["event"] == {"title": "holiday"}
        assert m["hashes"]["sha256"] == ev.media_sha256 and m["media"]["bytes"] == len(data)
        assert m["signals"]["reason"] == "classifier_score"
        assert (ev.retain_until - ev.created_at).days == 365 and not ev.legal_hold
        records = custody.records(s, item_id)
        assert [r.action for r in records] == ["preserved"] and records[0].actor == "kim"
        assert records[0].details["manifest_sha256"] == custody.digest(m)
        assert evidence.verify(s, ev).ok
        assert s.scalar(select(AuditRecord.id).where(AuditRecord.action == "evidence.preserved"))


def test_evidence_stays_when_the_broker_is_down(settings, sessions):
    def broker_down(key, value):
        raise RuntimeError("broker unavailable")

    item_id, _ = seed_item(sessions)
    remove_in_console(make_app(settings, send_decision=broker_down), sessions, item_id)
    with sessions() as s:
        assert s.scalar(select(Decision.published_at)) is None  # waits in the outbox
        assert s.get(Evidence, item_id) is not None


def test_no_removal_is_recorded_when_evidence_cannot_be_preserved(settings, sessions, monkeypatch):
    def broken(*_args, **_kwargs):
        raise RuntimeError("encryption failed")

    monkeypatch.setattr(evidence_crypto, "encrypt", broken)
    item_id, _ = seed_item(sessions)
    sent = []
    app = make_app(settings, send_decision=lambda k, v: sent.append(v))
    with pytest.raises(RuntimeError, match="encryption failed"):
        remove_in_console(app, sessions, item_id)
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Decision)) == 0
        assert s.get(Item, item_id).state != "decided"
    assert sent == []


def test_an_automatic_removal_by_the_worker_preserves_evidence(settings, sessions, metrics, media_server):
    data = encode(synthetic_image(5))
    sha = hashlib.sha256(data).hexdigest()
    with sessions() as s:
        bank = banks.create_bank(s, "victims", "auto_remove", actor="t")
        banks.add_entries(s, bank, [EntrySpec("sha256", sha, case_id="case-9")], added_by="t")
        s.commit()
    sent = []
    worker = Worker(
        consumer=None,
        sessions=sessions,
        pipeline=build_pipeline(settings, metrics, FixedScoreClassifier(0.1)),
        send_decision=lambda k, v, h=(): sent.append(v),
        send_dead_letter=lambda k, v, h=(): None,
        metrics=metrics,
        batch_wait_s=60.0,
        settings=settings,
    )
    worker.refresh_banks(force=True)
    url = media_server.add("/v.jpg", data)
    raw = json.dumps(make_upload_event("e5", "c5", "u5", url, "image/jpeg")).encode()
    record = SimpleNamespace(topic="uploads", partition=0, offset=1, key=b"c5", value=raw)
    assert worker.handle(record) == "auto_remove"
    assert len(sent) == 1
    with sessions() as s:
        item_id = s.scalar(select(Item.id))
        ev = s.get(Evidence, item_id)
        assert ev is not None and ev.media_sha256 == sha
        assert ev.manifest["decision"]["source"] == "hash_match" and ev.manifest["moderator"] is None
        assert ev.manifest["signals"]["matches"][0]["bank"] == "victims"
        assert [(r.action, r.actor) for r in custody.records(s, item_id)] == [("preserved", "pipeline")]


def test_a_second_removal_of_the_same_item_is_a_custody_record_not_a_second_case(settings, sessions):
    item_id, _ = seed_item(sessions)
    with sessions() as s:
        item = s.get(Item, item_id)
        from moderation.domain import Action, Source
        from moderation.storage import outbox

        first = outbox.add_decision(s, item, Action.REMOVE, Source.HASH_MATCH, "bank_match", "k1")
        evidence.preserve(s, item, first, "pipeline", settings=settings)
        s.commit()
        manifest = dict(s.get(Evidence, item_id).manifest)
        second = outbox.add_decision(s, item, Action.REMOVE, Source.MODERATOR, "ncii", moderator="lou")
        evidence.preserve(s, item, second, "lou", settings=settings)
        s.commit()
        assert s.scalar(select(func.count()).select_from(Evidence)) == 1
        assert s.get(Evidence, item_id).manifest == manifest
        rows = custody.records(s, item_id)
        assert [r.action for r in rows] == ["preserved", "decision"]
        assert rows[1].details["decision"]["moderator"] == "lou"
        assert rows[1].details["decision"]["id"] == second.id
        assert custody.verify(s, item_id).ok


def test_an_item_without_stored_media_keeps_the_rest(settings, sessions):
    item_id, _ = seed_item(sessions, media=False)
    remove_in_console(make_app(settings, send_decision=lambda k, v: None), sessions, item_id)
    with sessions() as s:
        ev = s.get(Evidence, item_id)
        assert ev.ciphertext is None and ev.manifest["media"] is None
        assert ev.manifest["hashes"]["md5"] == "b" * 32
        assert custody.records(s, item_id)[0].details["media_sha256"] is None


# -- the chain of custody --------------------------------------------------------------------
def test_a_forged_custody_record_is_detected(settings, sessions):
    item_id, _ = seed_item(sessions)
    app = make_app(settings, send_decision=lambda k, v: None)
    remove_in_console(app, sessions, item_id)
    client, _ = admin_client(app, sessions)
    assert client.get(f"/evidence/{item_id}").status_code == 200  # viewed: record 2
    with sessions() as s:
        head = custody.records(s, item_id)[-1]
        assert evidence.verify(s, s.get(Evidence, item_id)).ok
        # Somebody with database access slips in a record that never happened.
        s.execute(
            text(
                "INSERT INTO custody_records (item_id, at, actor, action, details, prev_hash, record_hash) "
                "VALUES (:i, now(), 'mallory', 'viewed', '{}', :p, :h)"
            ),
            {"i": item_id, "p": head.record_hash, "h": "0" * 64},
        )
        s.commit()
        forged = custody.records(s, item_id)[-1]
        check = evidence.verify(s, s.get(Evidence, item_id))
        assert not check.ok and check.bad_id == forged.id and "hash" in check.problem
        with pytest.raises(Exception, match="append-only"):
            s.execute(text("UPDATE custody_records SET actor = 'x' WHERE id = :i"), {"i": head.id})
        s.rollback()
    page = client.get(f"/evidence/{item_id}").get_data(as_text=True)
    assert "chain of custody broken" in page


def test_a_swapped_ciphertext_or_edited_manifest_is_detected(settings, sessions):
    app = make_app(settings, send_decision=lambda k, v: None)
    a, _ = seed_item(sessions, 1)
    remove_in_console(app, sessions, a, "kim")
    b, _ = seed_item(sessions, 2)
    remove_in_console(app, sessions, b, "lou")
    with sessions() as s:
        ev_b = s.get(Evidence, b)
        s.execute(Evidence.__table__.update().where(Evidence.item_id == a).values(ciphertext=ev_b.ciphertext))
        s.commit()
        s.expire_all()
        check = evidence.verify(s, s.get(Evidence, a))
        assert not check.ok and "ciphertext" in check.problem
        with pytest.raises(evidence_crypto.EvidenceUnreadable, match="belongs to another case"):
            evidence.export_case(s, a, "ada", settings)  # bound to item b by its associated data
        s.rollback()
        manifest = {**ev_b.manifest, "moderator": "someone else"}
        s.execute(Evidence.__table__.update().where(Evidence.item_id == b).values(manifest=manifest))
        s.commit()
        s.expire_all()
        assert "manifest" in evidence.verify(s, s.get(Evidence, b)).problem


# -- legal hold and purge --------------------------------------------------------------------
def test_legal_hold_blocks_purge_and_expired_evidence_is_purged(settings, sessions):
    app = make_app(settings, send_decision=lambda k, v: None)
    held, _ = seed_item(sessions, 1)
    remove_in_console(app, sessions, held, "kim")
    expired, _ = seed_item(sessions, 2)
    remove_in_console(app, sessions, expired, "lou")
    current, _ = seed_item(sessions, 3)
    remove_in_console(app, sessions, current, "mia")
    client, csrf = admin_client(app, sessions)
    resp = client.post(f"/evidence/{held}/hold", data={"csrf_token": csrf, "legal_hold": "on", "reason": ""})
    assert "give a reason" in client.get(resp.location).get_data(as_text=True)
    client.post(
        f"/evidence/{held}/hold", data={"csrf_token": csrf, "legal_hold": "on", "reason": "police ref 42"}
    )
    with sessions() as s:
        assert s.get(Evidence, held).legal_hold and s.get(Evidence, held).hold_reason == "police ref 42"
        past = utcnow() - timedelta(days=1)
        s.execute(
            Evidence.__table__.update().where(Evidence.item_id.in_([held, expired])).values(retain_until=past)
        )
        s.commit()

    dry = evidence.purge_expired(sessions, "cron", dry_run=True)
    assert (dry.expired, dry.purged, dry.held) == (1, 0, 1)
    progress = []
    result = evidence.purge_expired(sessions, "cron", batch_size=1, progress=progress.append)
    assert (result.expired, result.purged, result.held) == (1, 1, 1) and len(progress) == 1
    with sessions() as s:
        gone, kept, fresh = s.get(Evidence, expired), s.get(Evidence, held), s.get(Evidence, current)
        assert gone.ciphertext is None and gone.purged_at is not None
        assert "event" not in gone.manifest and "uploader_id" not in gone.manifest
        assert gone.manifest["hashes"]["sha256"] and gone.manifest["decision"]["action"] == "remove"
        assert kept.ciphertext is not None and fresh.ciphertext is not None
        assert custody.records(s, expired)[-1].action == "purged"
        assert evidence.verify(s, gone).ok
        assert [r.action for r in custody.records(s, held)] == ["preserved", "viewed", "hold"]
    assert evidence.purge_expired(sessions, "cron").purged == 0  # nothing left to purge

    client.post(f"/evidence/{held}/hold", data={"csrf_token": csrf, "legal_hold": "off", "reason": "closed"})
    assert evidence.purge_expired(sessions, "cron").purged == 1
    listing = client.get("/evidence?show=purged").get_data(as_text=True)
    assert f"/evidence/{held}" in listing and f"/evidence/{current}" not in listing


# -- export and access ------------------------------------------------------------------------
def test_export_bundle_holds_the_original_media_and_correct_checksums(settings, sessions):
    item_id, data = seed_item(sessions)
    app = make_app(settings, send_decision=lambda k, v: None)
    remove_in_console(app, sessions, item_id)
    client, csrf = admin_client(app, sessions)
    resp = client.post(f"/evidence/{item_id}/export", data={"csrf_token": csrf})
    assert resp.status_code == 200 and resp.mimetype == "application/zip"
    assert "no-store" in resp.headers["Cache-Control"]
    assert f"evidence-item-{item_id}.zip" in resp.headers["Content-Disposition"]
    body = resp.get_data()
    archive = zipfile.ZipFile(io.BytesIO(body))
    folder = f"evidence-item-{item_id}/"
    sha = hashlib.sha256(data).hexdigest()
    names = {n.removeprefix(folder) for n in archive.namelist()}
    assert names == {f"{sha}.jpg", "manifest.json", "custody.json", "README.txt", "SHA256SUMS"}
    assert archive.read(f"{folder}{sha}.jpg") == data
    sums = dict(
        reversed(line.split("  ")) for line in archive.read(folder + "SHA256SUMS").decode().splitlines()
    )
    assert set(sums) == names - {"SHA256SUMS"}
    for name, digest in sums.items():
        assert hashlib.sha256(archive.read(folder + name)).hexdigest() == digest
    chain = json.loads(archive.read(folder + "custody.json"))
    assert chain["verification"]["ok"] and custody.verify_records(chain["records"]).ok
    assert json.loads(archive.read(folder + "manifest.json"))["media"]["sha256"] == sha
    with sessions() as s:
        last = custody.records(s, item_id)[-1]
        assert last.action == "exported" and last.actor == "ada"
        assert last.details["bundle_sha256"] == hashlib.sha256(body).hexdigest()
        assert last.details["chain_head"] == chain["records"][-1]["record_hash"]
        assert s.scalar(select(AuditRecord.id).where(AuditRecord.action == "evidence.export"))


def test_export_with_another_key_fails_clearly(settings, sessions):
    item_id, _ = seed_item(sessions)
    remove_in_console(make_app(settings, send_decision=lambda k, v: None), sessions, item_id)
    other = settings.with_overrides(evidence_key=base64.b64encode(os.urandom(32)).decode())
    client, csrf = admin_client(make_app(other), sessions)
    resp = client.post(f"/evidence/{item_id}/export", data={"csrf_token": csrf})
    assert resp.status_code == 409 and "was encrypted with key" in resp.get_data(as_text=True)
    with sessions() as s:
        assert custody.records(s, item_id)[-1].action == "preserved"  # nothing exported


def test_auditors_read_but_never_hold_or_export(settings, sessions):
    item_id, _ = seed_item(sessions)
    app = make_app(settings, send_decision=lambda k, v: None)
    remove_in_console(app, sessions, item_id)
    client, csrf = admin_client(app, sessions, role="auditor", name="aud")
    listing = client.get("/evidence")
    assert listing.status_code == 200 and f"/evidence/{item_id}" in listing.get_data(as_text=True)
    page = client.get(f"/evidence/{item_id}").get_data(as_text=True)
    assert "chain of custody verified" in page and "Download the bundle" not in page
    assert "<img" not in page and "<video" not in page  # media only in exports
    form = {"csrf_token": csrf, "legal_hold": "on", "reason": "r"}
    assert client.post(f"/evidence/{item_id}/hold", data=form).status_code == 403
    assert client.post(f"/evidence/{item_id}/export", data={"csrf_token": csrf}).status_code == 403
    moderator, _ = admin_client(app, sessions, role="moderator", name="mod")
    assert moderator.get("/evidence").status_code == 403
    assert moderator.get(f"/evidence/{item_id}").status_code == 403
    with sessions() as s:
        assert [(r.action, r.actor) for r in custody.records(s, item_id)] == [
            ("preserved", "kim"),
            ("viewed", "aud"),
        ]
        assert not s.get(Evidence, item_id).legal_hold


def test_unknown_cases_are_404(settings, sessions):
    client, csrf = admin_client(make_app(settings), sessions)
    assert client.get("/evidence/999").status_code == 404
    assert client.post("/evidence/999/export", data={"csrf_token": csrf}).status_code == 404
    form = {"csrf_token": csrf, "legal_hold": "on", "reason": "r"}
    assert client.post("/evidence/999/hold", data=form).status_code == 404
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(CustodyRecord)) == 0


def test_the_cli_exports_verifies_holds_and_purges(settings, sessions, tmp_path, monkeypatch, capsys):
    from moderation.cli import main

    item_id, data = seed_item(sessions)
    remove_in_console(make_app(settings, send_decision=lambda k, v: None), sessions, item_id)
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("EVIDENCE_KEY", KEY)
    out = tmp_path / "case.zip"
    assert main(["evidence", "export", str(item_id), "--out", str(out)]) == 0
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    assert data in zipfile.ZipFile(out).read(
        f"evidence-item-{item_id}/{hashlib.sha256(data).hexdigest()}.jpg"
    )
    assert main(["evidence", "export", str(item_id), "--out", str(out)]) == 1  # never overwrites
    assert main(["evidence", "verify", str(item_id)]) == 0
    capsys.readouterr()
    assert main(["evidence", "hold", str(item_id), "--reason", "helpline case 7"]) == 0
    assert main(["evidence", "hold", str(item_id), "--reason", "again"]) == 1
    assert "already under legal hold" in capsys.readouterr().err
    assert main(["evidence", "release", str(item_id), "--reason", "case closed"]) == 0
    assert main(["evidence", "purge", "--dry-run"]) == 0
    assert "would purge 0 cases" in capsys.readouterr().out
    assert main(["evidence", "verify", "999"]) == 1
    with sessions() as s:
        actions = [r.action for r in custody.records(s, item_id)]
        assert actions == ["preserved", "exported", "hold", "release"]
        assert custody.records(s, item_id)[1].actor.startswith("cli")


def test_uploader_supplied_text_is_escaped_on_the_case_page(settings, sessions):
    script = '<script>alert("x")</script>'
    item_id, _ = seed_item(sessions, event={"title": script}, content_id=script, uploader_id=script)
    app = make_app(settings, send_decision=lambda k, v: None)
    remove_in_console(app, sessions, item_id)
    client, _ = admin_client(app, sessions)
    for page in (f"/evidence/{item_id}", "/evidence"):
        html = client.get(page).get_data(as_text=True)
        assert script not in html and "&lt;script&gt;" in html, page
