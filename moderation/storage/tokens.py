"""API tokens for services and trusted flaggers (helplines, NGOs).

The secret is shown once at creation; only its SHA-256 is stored, so a database
leak does not leak working tokens. Scopes:

- ``hashes:submit``: submit hashes (never images) to the token's bank with a case
  reference, withdraw them, and see whether they matched.
- ``banks:read`` / ``banks:write``: the bank API, for automation.
- ``appeals:submit``: the platform's appeal service submits appeals
  (``POST /api/v1/appeals``), reopening decided items for another moderator.
- ``review`` (personal tokens only, bound to a user): the queue API as that
  user, with the user's current role: claim, read, decide. It stops working
  when the user is deactivated or their password changes (both revoke it), and
  it never reaches the bank, submission or appeal endpoints.

A token is checked with one indexed lookup of the secret's SHA-256 (the secret
has 256 random bits, so a fast hash is enough): no password hashing per request.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from moderation.errors import Conflict, NotFound, RequestError
from moderation.storage import audit
from moderation.storage.models import ApiToken, Bank, User, utcnow

SCOPES = ("hashes:submit", "banks:read", "banks:write", "appeals:submit")  # service tokens
REVIEW = "review"
USER_SCOPES = (REVIEW,)  # personal tokens, bound to a user
PREFIX = "mod_"
MAX_PERSONAL_TOKENS = 10  # live ones per user
# last_used_at is written at most this often per token: not one write per API call.
LAST_USED_RESOLUTION = timedelta(seconds=60)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(
    session: Session,
    name: str,
    scopes: Sequence[str],
    *,
    bank: str | None = None,
    created_by: str,
    user: User | None = None,
) -> str:
    """Create a token and return its secret (shown once). With ``user``: a
    personal token, scope ``review`` only, acting as that user."""
    if user is not None:
        _check_personal(session, user, scopes, bank)
    elif REVIEW in scopes:
        raise RequestError("a review token acts as a user: name the user (--user)")
    unknown = sorted(set(scopes) - set(SCOPES) - (set(USER_SCOPES) if user is not None else set()))
    if unknown or not scopes:
        choices = ", ".join(SCOPES + USER_SCOPES)
        raise RequestError(f"unknown or missing scopes {unknown}: choose from {choices}")
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
        ApiToken(
            name=name,
            token_hash=_digest(secret),
            scopes=list(scopes),
            bank=bank,
            created_by=created_by,
            user_id=user.id if user is not None else None,
        )
    )
    details = {"user": user.username} if user is not None else {}
    audit.record(
        session, created_by, "token.create", None, name=name, scopes=list(scopes), bank=bank, **details
    )
    return secret


def _check_personal(session: Session, user: User, scopes: Sequence[str], bank: str | None) -> None:
    if list(scopes) != [REVIEW] or bank is not None:
        raise RequestError(f"a personal token has the {REVIEW} scope only, and no bank")
    if not user.active:
        raise RequestError(f"user {user.username!r} is deactivated")
    live = session.scalar(
        select(func.count())
        .select_from(ApiToken)
        .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
    )
    if (live or 0) >= MAX_PERSONAL_TOKENS:
        raise Conflict(f"{user.username} has {MAX_PERSONAL_TOKENS} live tokens already: revoke one first")


def authenticate(session: Session, secret: str) -> ApiToken | None:
    """The live token with this secret, or None; a personal token only while its
    user is active (``token_user``). Notes when it was last used (at most once
    every ``LAST_USED_RESOLUTION``), for the caller to commit."""
    if not secret.startswith(PREFIX) or len(secret) > 200:
        return None
    token = session.scalar(select(ApiToken).where(ApiToken.token_hash == _digest(secret)))
    if token is None or token.revoked_at is not None:
        return None
    if token.user_id is not None and token_user(session, token) is None:
        return None
    now = utcnow()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        token.last_used_at = now
    return token


def token_user(session: Session, token: ApiToken) -> User | None:
    """The active user a personal token acts as; None for a service token."""
    if token.user_id is None:
        return None
    user = session.get(User, token.user_id)
    return user if user is not None and user.active else None


def revoke_user_tokens(session: Session, user_id: int, actor: str, reason: str) -> int:
    """Revoke every live personal token of ``user_id`` (a new password, a
    deactivation); returns how many."""
    now, revoked = utcnow(), 0
    for token in list_tokens(session, user_id=user_id):
        if token.revoked_at is None:
            token.revoked_at = now
            audit.record(session, actor, "token.revoke", None, name=token.name, reason=reason)
            revoked += 1
    return revoked


def revoke_own_token(session: Session, user: User, token_id: int) -> ApiToken:
    """Revoke one of ``user``'s personal tokens; NotFound for anybody else's."""
    token = session.get(ApiToken, token_id)
    if token is None or token.user_id != user.id:
        raise NotFound("no such token of yours")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        audit.record(session, user.username, "token.revoke", None, name=token.name)
    return token


def revoke_token(session: Session, name: str, actor: str) -> None:
    token = session.scalar(select(ApiToken).where(ApiToken.name == name))
    if token is None:
        raise NotFound(f"no token named {name!r}")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        audit.record(session, actor, "token.revoke", None, name=name)


def list_tokens(session: Session, user_id: int | None = None) -> list[ApiToken]:
    """Every token, or ``user_id``'s personal tokens."""
    query = select(ApiToken).order_by(ApiToken.created_at, ApiToken.id)
    if user_id is not None:
        query = query.where(ApiToken.user_id == user_id)
    return list(session.scalars(query))
