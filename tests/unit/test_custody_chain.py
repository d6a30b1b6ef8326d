"""The custody chain's hashing and the export bundle, without a database."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from datetime import UTC, datetime

import pytest

from moderation import evidence_bundle
from moderation.storage import custody

AT = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def chain(*actions: str) -> list[dict]:
    rows, prev = [], ""
    for n, action in enumerate(actions, 1):
        details = {"n": n, "reason": "police ref 42"}
        at = custody.timestamp(AT)
        digest = custody.record_hash(prev, 5, at, "ada", action, details)
        rows.append(
            {
                "id": n,
                "item_id": 5,
                "at": at,
                "actor": "ada",
                "action": action,
                "details": details,
                "prev_hash": prev,
                "record_hash": digest,
            }
        )
        prev = digest
    return rows


def test_the_record_hash_is_sha256_of_the_previous_hash_and_canonical_json():
    body = (
        b'{"action":"viewed","actor":"ada","at":"2025-03-01T12:00:00.123456+00:00","details":{},"item_id":5}'
    )
    assert custody.record_hash("ab", 5, AT, "ada", "viewed", {}) == hashlib.sha256(b"ab" + body).hexdigest()


def test_an_intact_chain_verifies():
    rows = chain("preserved", "viewed", "hold", "exported")
    check = custody.verify_records(rows)
    assert check.ok and check.records == 4 and check.head == rows[-1]["record_hash"]


@pytest.mark.parametrize(
    "tamper, bad_id, problem",
    [
        (lambda rows: rows[1]["details"].update(reason="nothing"), 2, "does not match its content"),
        (lambda rows: rows.pop(1), 3, "does not link"),
        (lambda rows: rows.insert(2, {**rows[1], "id": 99}), 99, "does not link"),
        (lambda rows: rows[0].update(actor="mallory"), 1, "does not match its content"),
    ],
    ids=["edited", "deleted", "inserted", "actor changed"],
)
def test_an_edited_deleted_or_inserted_record_is_found(tamper, bad_id, problem):
    rows = chain("preserved", "viewed", "hold", "exported")
    tamper(rows)
    check = custody.verify_records(rows)
    assert not check.ok and check.bad_id == bad_id and problem in check.problem


def test_no_records_is_not_a_verified_chain():
    assert not custody.verify_records([]).ok


def test_a_bundle_lists_every_file_in_its_checksums():
    media = b"\x89PNG synthetic"
    sha = hashlib.sha256(media).hexdigest()
    manifest = {"item_id": 5, "content_id": "c5", "media": {"sha256": sha}}
    bundle = evidence_bundle.build(
        5, manifest, {"records": chain("preserved")}, (media, "image/png"), AT, "ada"
    )
    archive = zipfile.ZipFile(io.BytesIO(bundle.data))
    assert bundle.sha256 == hashlib.sha256(bundle.data).hexdigest()
    assert bundle.filename == "evidence-item-5.zip"
    assert archive.read(f"evidence-item-5/{sha}.png") == media
    sums = archive.read("evidence-item-5/SHA256SUMS").decode().splitlines()
    assert sorted(line.split("  ")[1] for line in sums) == sorted(
        [f"{sha}.png", "manifest.json", "custody.json", "README.txt"]
    )
    for line in sums:
        digest, name = line.split("  ")
        assert hashlib.sha256(archive.read(f"evidence-item-5/{name}")).hexdigest() == digest
    assert json.loads(archive.read("evidence-item-5/manifest.json")) == manifest
    readme = archive.read("evidence-item-5/README.txt").decode()
    assert "sha256sum -c SHA256SUMS" in readme and "c5" in readme and "ada" in readme


def test_a_bundle_without_media_says_why():
    bundle = evidence_bundle.build(5, {"media": None}, {}, None, AT, "ada", "The media was purged.")
    archive = zipfile.ZipFile(io.BytesIO(bundle.data))
    assert len(archive.namelist()) == 4
    assert "The media was purged." in archive.read("evidence-item-5/README.txt").decode()
