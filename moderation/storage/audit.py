"""Append-only audit log.

Authentication events (``record_auth``) carry the client address and how the
caller authenticated (``method``: form, basic or sso); never a password:

- ``login.success``: a login (form, or the first request of a single sign-on session);
- ``login.failure``: unknown user or wrong password (actor: the username tried);
- ``login.locked``: an account was locked by this failure, or a login was tried
  while it was locked;
- ``logout``;
- ``session.expired``: a session ended by idle or absolute expiry, or because
  the user's password changed or the user was deactivated.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from moderation.storage.models import AuditRecord

LOGIN_SUCCESS = "login.success"
LOGIN_FAILURE = "login.failure"
LOGIN_LOCKED = "login.locked"
LOGOUT = "logout"
SESSION_EXPIRED = "session.expired"
MAX_ACTOR = 100


def record(session: Session, actor: str, action: str, item_id: int | None = None, **details: Any) -> None:
    session.add(AuditRecord(actor=actor, action=action, item_id=item_id, details=details))


def record_auth(session: Session, actor: str, action: str, address: str, **details: Any) -> None:
    """An authentication event. ``actor`` may be whatever a client typed as its
    username: it is cut to the column's length and NUL characters are replaced."""
    actor = actor.replace("\x00", "\ufffd")[:MAX_ACTOR] or "(blank)"
    record(session, actor, action, None, address=address, **details)
