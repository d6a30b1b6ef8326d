"""Append-only audit log."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from moderation.storage.models import AuditRecord


def record(session: Session, actor: str, action: str, item_id: int | None = None, **details: Any) -> None:
    session.add(AuditRecord(actor=actor, action=action, item_id=item_id, details=details))
