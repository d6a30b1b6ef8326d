"""Console pages added for API clients and refused records, in a real browser:
a moderator makes a personal API token, uses it and revokes it; an admin
shortens an over-long note the broker refused and sends the decision again.
Screenshots in tests/browser/artifacts."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from typing import Any

from sqlalchemy import select

from moderation.domain import Action, Source
from moderation.storage import outbox
from moderation.storage.models import AuditRecord, Decision, Item, utcnow
from tests.browser.test_console_browser import add_user, seed_items
from tests.support.browser import Console

HUGE_NOTE = "x" * (1 << 20)
SECRET = re.compile(r"\bmod_[A-Za-z0-9_-]{20,}")


def api_me(console: Console, token: str) -> int:
    request = urllib.request.Request(
        console.base_url + "/api/v1/me", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.load(response)["username"] == "mo"
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_moderator_makes_uses_and_revokes_a_personal_token(open_console, sessions):
    from selenium.webdriver.common.by import By

    password = add_user(sessions, "mo")
    console = open_console()
    console.login("mo", password)
    console.open("/tokens")
    console.driver.find_element(By.NAME, "label").send_keys("laptop-script")
    console.click_and_load(console.button("Create token"))
    found = SECRET.search(console.text())
    assert found, console.text()
    assert "shown only once" in console.text()
    console.shot("token-created")
    assert api_me(console, found.group(0)) == 200

    console.open("/tokens")  # the secret is never shown again
    assert not SECRET.search(console.text()) and "mo/laptop-script" in console.text()
    console.click_and_load(console.button("Revoke"))
    assert "revoked" in console.flashes()
    console.shot("token-revoked")
    assert api_me(console, found.group(0)) == 401


def test_an_admin_shortens_a_refused_note_and_retries_it(open_console, sessions):
    [item_id] = seed_items(sessions, 1)
    with sessions() as s:
        item = s.get(Item, item_id)
        decision = outbox.add_decision(
            s, item, Action.REMOVE, Source.MODERATOR, "ncii", moderator="mo", note=HUGE_NOTE
        )
        s.flush()
        decision.set_aside_at = utcnow()
        decision.set_aside_reason = "[Error 10] MessageSizeTooLargeError: 1048700 bytes"
        s.commit()
        decision_id = decision.id
    password = add_user(sessions, "ada", role="admin")
    console = open_console()
    console.login("ada", password)
    console.open("/admin/outbox")
    assert "MessageSizeTooLargeError" in console.text()
    assert "note of 1,048,576 characters (the limit is 2,000)" in console.text()
    console.shot("set-aside")

    console.click_and_load(console.button("Shorten the note and retry"))
    assert f"Decision {decision_id}: note shortened from 1,048,576 to 2,000 characters" in console.flashes()
    assert "No decision is set aside." in console.text()
    console.shot("shortened")
    with sessions() as s:
        row = s.get(Decision, decision_id)
        assert row is not None and row.set_aside_at is None and len(row.payload["note"]) == 2000
        actions: list[Any] = s.scalars(select(AuditRecord.action).where(AuditRecord.actor == "ada")).all()
        assert "outbox.shorten" in actions
