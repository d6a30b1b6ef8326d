"""User accounts for the review console. Passwords are hashed with scrypt."""

from __future__ import annotations

import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from moderation.storage.models import User

ROLES = ("moderator", "admin")
MIN_PASSWORD_LENGTH = 10


class UserError(ValueError):
    pass


def create_user(session: Session, username: str, password: str, role: str) -> User:
    if role not in ROLES:
        raise UserError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    if not username or len(username) > 100 or not username.isprintable():
        raise UserError("username must be 1-100 printable characters")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    if session.scalar(select(User).where(User.username == username)):
        raise UserError(f"user {username!r} already exists")
    user = User(username=username, password_hash=generate_password_hash(password, "scrypt"), role=role)
    session.add(user)
    session.flush()
    return user


def authenticate(session: Session, username: str, password: str) -> User | None:
    user = session.scalar(select(User).where(User.username == username, User.active.is_(True)))
    if user is None:
        # Spend the same time as a real check so usernames can't be probed by timing.
        check_password_hash(_DUMMY_HASH, password)
        return None
    return user if check_password_hash(user.password_hash, password) else None


def generate_password() -> str:
    return secrets.token_urlsafe(15)


_DUMMY_HASH = generate_password_hash("not-a-real-password", "scrypt")
