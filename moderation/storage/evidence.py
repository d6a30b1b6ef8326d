"""Evidence preservation: what a removal leaves behind for victims and investigators.

``preserve`` runs in the removal's own transaction, before the decision can be
published: if it fails, nothing of the removal is committed, so no removal is
ever published without its evidence. It keeps the media bytes encrypted
(``evidence_crypto``) and a manifest of hashes, event metadata, signals, the
decision and the moderator; the first custody record fingerprints both.

One case per item: a later removal of the same item (an automatic removal
confirmed by a moderator, an appeal upheld) adds a custody record ``decision``
with the new decision instead of a second case, and the manifest stays as it
was first preserved.

Viewing, exporting, legal holds and purges each append a custody record
(``storage/custody.py``) and an audit record. Purging at the end of retention
drops the ciphertext and the manifest's personal data (the raw event and the
uploader id) and keeps the hashes, signals and decisions, which are what block
re-uploads and account for the removal.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from moderation import evidence_bundle, evidence_crypto, text_limits
from moderation.config import Settings, load_settings
from moderation.errors import NotFound, RequestError
from moderation.storage import audit, custody
from moderation.storage.models import Decision, Evidence, Item, ItemMedia, utcnow

MANIFEST_SCHEMA = "moderation.evidence/1"
PURGED_FIELDS = ("event", "uploader_id")  # personal data with no use once the media is gone
EXPIRING_DAYS = 30  # "expiring soon" on the evidence list
# Decision payload fields kept with the decision (four eyes, appeals, the restricted queue).
DECISION_EXTRAS = ("sequence", "restricted", "second_moderator", "first_reason", "appeal_id", "supersedes")


# -- preservation ----------------------------------------------------------------------
def preserve(
    session: Session,
    item: Item,
    decision: Decision,
    actor: str,
    *,
    settings: Settings | None = None,
    media: tuple[bytes, str] | None = None,
) -> Evidence:
    """Preserve ``item``'s evidence for the removal ``decision``, in the caller's
    transaction (commit nothing here). ``settings`` supplies EVIDENCE_KEY and
    EVIDENCE_RETENTION_DAYS (without: the process environment's). ``media`` is
    (bytes, content type); without it the item's stored media is used, and with
    none at all the rest is kept and the manifest says ``media: null``."""
    session.flush()  # the decision's id
    existing = session.get(Evidence, item.id, with_for_update=True)
    if existing is not None:
        record = custody.append(session, item.id, actor, custody.DECISION, decision=_decision_json(decision))
        audit.record(session, actor, "evidence.decision", item.id, record_hash=record.record_hash)
        return existing
    settings = settings or load_settings()
    if media is None:
        stored = session.get(ItemMedia, item.id)
        media = (stored.data, stored.content_type) if stored is not None else None
    key = evidence_crypto.load_key(settings)
    nonce, content_type, media_sha256 = b"", "", ""
    ciphertext: bytes | None = None  # none without media
    if media is not None:
        data, content_type = media
        media_sha256 = hashlib.sha256(data).hexdigest()
        nonce, ciphertext = evidence_crypto.encrypt(key, data, item.id, media_sha256)
    now = utcnow()
    evidence = Evidence(
        item_id=item.id,
        created_at=now,
        key_id=key.key_id,
        nonce=nonce,
        ciphertext=ciphertext,
        content_type=content_type,
        media_sha256=media_sha256,
        manifest=build_manifest(item, decision, media, media_sha256, now),
        legal_hold=False,
        hold_reason="",
        retain_until=now + timedelta(days=settings.evidence_retention_days),
    )
    session.add(evidence)
    record = custody.append(
        session,
        item.id,
        actor,
        custody.PRESERVED,
        manifest_sha256=custody.digest(evidence.manifest),
        ciphertext_sha256=_sha256(ciphertext),
        media_sha256=media_sha256 or None,
        key_id=key.key_id,
        decision_id=decision.id,
        retain_until=custody.timestamp(evidence.retain_until),
    )
    audit.record(
        session,
        actor,
        "evidence.preserved",
        item.id,
        record_hash=record.record_hash,
        media=media is not None,
    )
    return evidence


def build_manifest(
    item: Item,
    decision: Decision,
    media: tuple[bytes, str] | None,
    media_sha256: str,
    preserved_at: datetime,
) -> dict[str, Any]:
    """``media_sha256``: the SHA-256 of ``media``'s bytes (already computed by the caller)."""
    return {
        "schema": MANIFEST_SCHEMA,
        "item_id": item.id,
        "event_id": item.event_id,
        "content_id": item.content_id,
        "uploader_id": item.uploader_id,
        "received_at": custody.timestamp(item.created_at or preserved_at),
        "preserved_at": custody.timestamp(preserved_at),
        "event": item.event,
        "hashes": {
            "sha256": item.sha256,
            "md5": item.md5,
            "pdq": item.pdq,
            "pdq_quality": item.pdq_quality,
            "vpdq": item.vpdq,
        },
        "signals": {
            "score": item.score,
            "model_version": item.model_version,
            "model_scores": item.model_scores,
            "matches": item.matches,
            "route": item.route,
            "reason": item.reason,
            "regions": item.regions,
        },
        "decision": _decision_json(decision),
        "moderator": decision.moderator,
        "media": None
        if media is None
        else {
            "content_type": media[1],
            "bytes": len(media[0]),
            "sha256": media_sha256,
        },
    }


def _decision_json(decision: Decision) -> dict[str, Any]:
    payload = decision.payload or {}
    extras = {k: payload[k] for k in DECISION_EXTRAS if k in payload}
    return {
        **extras,
        "id": decision.id,
        "idempotency_key": decision.idempotency_key,
        "action": decision.action,
        "reason": decision.reason,
        "note": payload.get("note"),
        "source": decision.source,
        "moderator": decision.moderator,
        "created_at": custody.timestamp(decision.created_at or utcnow()),
    }


def _sha256(data: bytes | None) -> str | None:
    return hashlib.sha256(data).hexdigest() if data is not None else None


# -- reading and checking ------------------------------------------------------------------
def get(session: Session, item_id: int, lock: bool = False) -> Evidence:
    evidence = session.get(Evidence, item_id, with_for_update=lock)
    if evidence is None:
        raise NotFound(f"no evidence was preserved for item {item_id}")
    return evidence


def verify(session: Session, evidence: Evidence) -> custody.ChainCheck:
    """The custody chain, and the stored manifest and ciphertext against the
    fingerprints its records last gave them."""
    return _verify(evidence, _chain(session, evidence.item_id))


def _chain(session: Session, item_id: int) -> list[dict[str, Any]]:
    return [custody.as_dict(r) for r in custody.records(session, item_id)]


def _verify(evidence: Evidence, rows: list[dict[str, Any]]) -> custody.ChainCheck:
    """``verify`` over ``rows``, the item's custody records as ``custody.as_dict`` gives them."""
    check = custody.verify_records(rows)
    if not check.ok:
        return check
    recorded = {
        name: (row["id"], row["details"][name])
        for row in rows
        for name in ("manifest_sha256", "ciphertext_sha256")
        if name in row["details"]
    }
    actual = {
        "manifest_sha256": custody.digest(evidence.manifest),
        "ciphertext_sha256": _sha256(evidence.ciphertext),
    }
    for name, (record_id, value) in recorded.items():
        if actual[name] != value:
            what = name.split("_")[0]
            problem = f"the stored {what} is not the one custody record {record_id} fingerprinted"
            return custody.ChainCheck(False, check.records, check.head, None, problem)
    return check


@dataclass(frozen=True)
class Case:
    evidence: Evidence
    records: list[dict[str, Any]]
    check: custody.ChainCheck


def open_case(session: Session, item_id: int, actor: str) -> Case:
    """The case as shown to a reader; the viewing is recorded first."""
    evidence = get(session, item_id, lock=True)
    custody.append(session, item_id, actor, custody.VIEWED)
    audit.record(session, actor, "evidence.view", item_id)
    rows = _chain(session, item_id)
    return Case(evidence, rows, _verify(evidence, rows))


def list_cases(
    session: Session, show: str = "", before_id: int | None = None, limit: int = 50
) -> list[Evidence]:
    """Newest first. ``show``: held, expiring (within EXPIRING_DAYS, not held), purged, or all."""
    query = select(Evidence).order_by(Evidence.item_id.desc()).limit(limit)
    if show == "held":
        query = query.where(Evidence.legal_hold.is_(True))
    elif show == "expiring":
        query = query.where(
            Evidence.legal_hold.is_(False),
            Evidence.purged_at.is_(None),
            Evidence.retain_until <= utcnow() + timedelta(days=EXPIRING_DAYS),
        )
    elif show == "purged":
        query = query.where(Evidence.purged_at.is_not(None))
    if before_id is not None:
        query = query.where(Evidence.item_id < before_id)
    return list(session.scalars(query))


# -- legal hold, export, purge --------------------------------------------------------------
def set_hold(session: Session, item_id: int, hold: bool, reason: str, actor: str) -> Evidence:
    """Put evidence under legal hold (never purged) or release it; a reason is required."""
    reason = reason.strip()
    if not reason:
        raise RequestError("give a reason (e.g. the police reference or the request it answers)")
    text_limits.check("reason", reason, text_limits.NOTE)
    evidence = get(session, item_id, lock=True)
    if evidence.legal_hold == hold:
        raise RequestError(f"evidence of item {item_id} is {'already' if hold else 'not'} under legal hold")
    evidence.legal_hold, evidence.hold_reason = hold, reason if hold else ""
    action = custody.HOLD if hold else custody.RELEASE
    record = custody.append(session, item_id, actor, action, reason=reason)
    audit.record(session, actor, f"evidence.{action}", item_id, reason=reason, record_hash=record.record_hash)
    return evidence


def export_case(session: Session, item_id: int, actor: str, settings: Settings) -> evidence_bundle.Bundle:
    """The case as a ZIP bundle (the media decrypted); the export is recorded
    with the bundle's SHA-256 after the chain it contains."""
    evidence = get(session, item_id, lock=True)
    rows = _chain(session, item_id)
    check = _verify(evidence, rows)
    media, note = None, ""
    if evidence.ciphertext is not None:
        data = evidence_crypto.decrypt(
            evidence_crypto.load_key(settings),
            evidence.key_id,
            evidence.nonce,
            evidence.ciphertext,
            item_id,
            evidence.media_sha256,
        )
        media = (data, evidence.content_type)
    elif evidence.purged_at is not None:
        note = f"The media was purged on {custody.timestamp(evidence.purged_at)} (retention ended)."
    else:
        note = "No media bytes were stored for this item when it was removed."
    now = utcnow()
    bundle = evidence_bundle.build(
        item_id,
        evidence.manifest,
        {"item_id": item_id, "verification": check.as_dict(), "records": rows},
        media,
        now,
        actor,
        note,
    )
    record = custody.append(
        session,
        item_id,
        actor,
        custody.EXPORTED,
        bundle_sha256=bundle.sha256,
        chain_head=check.head,
        chain_ok=check.ok,
        files=bundle.files,
    )
    audit.record(
        session,
        actor,
        "evidence.export",
        item_id,
        bundle_sha256=bundle.sha256,
        record_hash=record.record_hash,
    )
    return bundle


@dataclass
class PurgeResult:
    expired: int = 0  # due for purging when the run started
    purged: int = 0
    held: int = 0  # past retention but under legal hold: kept


def _expired(now: datetime) -> Any:
    return (Evidence.retain_until <= now, Evidence.purged_at.is_(None))


def purge_expired(
    sessions: sessionmaker[Session],
    actor: str,
    dry_run: bool = False,
    batch_size: int = 100,
    now: datetime | None = None,
    progress: Callable[[PurgeResult], None] | None = None,
) -> PurgeResult:
    """Purge evidence past its retention and not under legal hold, one committed
    batch at a time; rows another process holds locked are left for the next run."""
    now = now or utcnow()
    result = PurgeResult()
    with sessions() as session:
        count = select(func.count()).select_from(Evidence).where(*_expired(now))
        result.expired = session.scalar(count.where(Evidence.legal_hold.is_(False))) or 0
        result.held = session.scalar(count.where(Evidence.legal_hold.is_(True))) or 0
    if dry_run:
        return result
    while True:
        with sessions() as session:
            batch = list(
                session.scalars(
                    select(Evidence)
                    .where(*_expired(now), Evidence.legal_hold.is_(False))
                    .order_by(Evidence.item_id)
                    .limit(batch_size)
                    .with_for_update(skip_locked=True)
                )
            )
            if not batch:
                return result
            for evidence in batch:
                _purge(session, evidence, actor, now)
            session.commit()
        result.purged += len(batch)
        if progress is not None:
            progress(result)


def _purge(session: Session, evidence: Evidence, actor: str, now: datetime) -> None:
    evidence.ciphertext, evidence.nonce, evidence.purged_at = None, b"", now
    evidence.manifest = {k: v for k, v in evidence.manifest.items() if k not in PURGED_FIELDS}
    record = custody.append(
        session,
        evidence.item_id,
        actor,
        custody.PURGED,
        retain_until=custody.timestamp(evidence.retain_until),
        dropped=["media", *PURGED_FIELDS],
        manifest_sha256=custody.digest(evidence.manifest),
        ciphertext_sha256=None,
    )
    audit.record(session, actor, "evidence.purge", evidence.item_id, record_hash=record.record_hash)
