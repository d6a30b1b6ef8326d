"""API tokens for services and trusted flaggers (helplines, NGOs).

The secret is shown once at creation; only its SHA-256 is stored, so a database
leak does not leak working tokens. Scopes:

- ``hashes:submit``: submit hashes (never images) to the token's bank with a case
  reference, withdraw them, and see whether they matched.
- ``banks:read`` / ``banks:write``: the bank API, for automation.
- ``appeals:submit``: the platform's appeal service submits appeals
  (``POST /api/v1/appeals``), reopening decided items for another moderator.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from moderation.errors import Conflict, NotFound, RequestError
from moderation.storage import audit
from moderation.storage.models import ApiToken, Bank, utcnow

SCOPES = ("hashes:submit", "banks:read", "banks:write", "appeals:submit")
PREFIX = "mod_"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(
    session: Session, name: str, scopes: Sequence[str], *, bank: str | None = None, created_by: str
) -> str:
    """Create a token and return its secret (shown once)."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise RequestError(f"unknown or missing scopes {unknown}: choose from {', '.join(SCOPES)}")
    if "hashes:submit" in scopes and not bank:
        raise RequestError("a hashes:submit token needs --bank: the bank its submissions go to")
    if bank is not None and session.scalar(select(Bank.id).where(Bank.name == bank)) is None:
        raise NotFound(f"no bank named {bank!r}")
    if not name or len(name) > 100:
        raise RequestError("token name must be 1-100 characters")
    if session.scalar(select(ApiToken.id).where(ApiToken.name == name)) is not None:
        raise Conflict(f"a token named {name!r} already exists")
    secret = PREFIX + secrets.token_urlsafe(32)
    session.add(
        ApiToken(name=name, token_hash=_digest(secret), scopes=list(scopes), bank=bank, created_by=created_by)
    )
    audit.record(session, created_by, "token.create", None, name=name, scopes=list(scopes), bank=bank)
    return secret


def authenticate(session: Session, secret: str) -> ApiToken | None:
    """The live token with this secret, or None. Records when it was last used."""
    if not secret.startswith(PREFIX):
        return None
    token = session.scalar(select(ApiToken).where(ApiToken.token_hash == _digest(secret)))
    if token is None or token.revoked_at is not None:
        return None
    token.last_used_at = utcnow()
    return token


def revoke_token(session: Session, name: str, actor: str) -> None:
    token = session.scalar(select(ApiToken).where(ApiToken.name == name))
    if token is None:
        raise NotFound(f"no token named {name!r}")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        audit.record(session, actor, "token.revoke", None, name=name)


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.created_at)))
