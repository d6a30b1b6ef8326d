"""Decision-policy and appeal tests' world: an app whose decisions are captured
in memory, queue items, and console users, each a Flask test client with a
live session (no password round trip) that claims and decides through the JSON
API, as a moderator's browser or script would."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from werkzeug.security import generate_password_hash

from moderation.config import load_settings
from moderation.storage import banks
from moderation.storage.models import AuditRecord, Bank, BankEntry, Item, User, utcnow
from moderation.web import sessions as web_sessions
from tests.support.factories import make_item
from tests.support.web import make_app

# A cheap scrypt hash: these users never log in with a password.
CHEAP_HASH = generate_password_hash("correct horse battery", "scrypt:1024:8:1")


def add_users(sessions: Any, **roles: str) -> None:
    """``add_users(sessions, mo="moderator", ada="admin")``."""
    with sessions() as s:
        for name, role in roles.items():
            s.add(User(username=name, password_hash=CHEAP_HASH, role=role))
        s.commit()


class Reviewer:
    def __init__(self, app: Any, sessions: Any, username: str) -> None:
        self.username = username
        self.client = app.test_client()
        self.csrf = f"csrf-{username}"
        with sessions() as s, self.client.session_transaction() as cookie:
            user = s.query(User).filter_by(username=username).one()
            web_sessions.begin(cookie, user)
            cookie["csrf_token"] = self.csrf

    @property
    def headers(self) -> dict[str, str]:
        return {"X-CSRF-Token": self.csrf}

    def claim(self) -> int | None:
        """The id of the item ``next`` gives this user, or None (queue empty for them)."""
        resp = self.client.post("/api/v1/queue/claim", json={}, headers=self.headers)
        assert resp.status_code in (200, 204), resp.get_data(as_text=True)
        return int(resp.get_json()["id"]) if resp.status_code == 200 else None

    def decide(self, item_id: int, action: str, reason: str, note: str = "") -> Any:
        return self.client.post(
            f"/api/v1/items/{item_id}/decision",
            json={"action": action, "reason": reason, "note": note},
            headers=self.headers,
        )

    def page(self, item_id: int) -> str:
        resp = self.client.get(f"/items/{item_id}")
        assert resp.status_code == 200, resp.status_code
        return str(resp.get_data(as_text=True))

    def post_json(self, path: str, body: Any) -> Any:
        return self.client.post(path, json=body, headers=self.headers)


class World:
    """The app (four eyes, reasons... as ``settings`` say), decisions sent (as
    JSON), and users: moderators mo and lou, senior sen, admins ada and eve."""

    def __init__(self, db_url: str, sessions: Any, **settings: Any) -> None:
        values: dict[str, Any] = dict(database_url=db_url, secret_key="test-secret", dev_mode=True)
        values.update(settings)
        self.sent: list[dict[str, Any]] = []
        self.sessions = sessions
        self.app = make_app(
            load_settings({}, **values), send_decision=lambda k, v: self.sent.append(json.loads(v))
        )
        add_users(sessions, mo="moderator", lou="moderator", sen="senior", ada="admin", eve="admin")

    def reviewer(self, name: str) -> Reviewer:
        return Reviewer(self.app, self.sessions, name)

    def item(self, item_id: int) -> Item:
        with self.sessions() as s:
            found = s.get(Item, item_id)
            assert found is not None
            s.expunge(found)
            return found

    def force_claim(self, item_id: int, username: str) -> None:
        """Give ``username`` a live claim on the item, whatever the queue would serve them."""
        with self.sessions() as s:
            item = s.get(Item, item_id)
            assert item is not None
            item.state, item.claimed_by = (
                "claimed",
                s.scalar(select(User.id).where(User.username == username)),
            )
            item.lease_expires_at = utcnow() + timedelta(minutes=5)
            s.commit()

    def audit(self, action: str) -> list[AuditRecord]:
        with self.sessions() as s:
            return list(s.scalars(select(AuditRecord).where(AuditRecord.action == action)))

    def confirmed_entries(self) -> list[BankEntry]:
        with self.sessions() as s:
            bank = s.scalar(select(Bank).where(Bank.name == banks.CONFIRMED_BANK))
            if bank is None:
                return []
            return list(s.scalars(select(BankEntry).where(BankEntry.bank_id == bank.id)))


def add_item(sessions: Any, n: int = 1, **overrides: Any) -> int:
    values: dict[str, Any] = dict(sha256=f"{n:064x}", md5=f"{n:032x}", pdq="c" * 64, pdq_quality=90)
    values.update(overrides)
    with sessions() as s:
        item = make_item(n, **values)
        s.add(item)
        s.commit()
        return item.id
