"""An item the caller may not see is answered exactly as one that does not exist:
same status, same body, on every item route of the console and the JSON API, so
that nobody learns which ids exist (or how many items there are) by probing.
409 stays for callers who may see the item (a senior's or admin's missing claim)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from moderation.config import load_settings
from moderation.storage import users
from moderation.storage.models import Item, ItemMedia, utcnow
from tests.support.factories import make_item
from tests.support.web import add_user, login, make_app

MISSING = 999_999
PW = "correct horse battery"


@pytest.fixture
def world(db_url: str, sessions: Any) -> Any:
    """Item 1 claimed by kim (moderator), item 2 in the restricted queue, both with media."""
    for name, role in (("kim", "moderator"), ("lou", "moderator"), ("sue", "senior")):
        add_user(sessions, name, role=role)
    with sessions() as s:
        kim = users.get_user(s, "kim")
        held = make_item(1, state="claimed", group_key="item:1")
        held.claimed_by, held.lease_expires_at = kim.id, utcnow() + timedelta(minutes=5)
        restricted = make_item(2, tier="restricted", group_key="item:2")
        s.add_all([held, restricted])
        s.flush()
        for item in (held, restricted):
            s.add(ItemMedia(item_id=item.id, content_type="image/jpeg", data=b"\xff\xd8\xff\xe0JFIF"))
        s.commit()
    settings = load_settings({}, database_url=db_url, secret_key="test-secret", dev_mode=True)
    return make_app(settings, send_decision=lambda k, v: None)


def _console_requests(item_id: int, csrf: str) -> list[tuple[str, str, dict[str, Any]]]:
    form = {"csrf_token": csrf}
    decision = {**form, "action": "allow", "reason": "not_violating"}
    return [
        ("GET", f"/items/{item_id}", {}),
        ("GET", f"/items/{item_id}/media", {}),  # without the page's signed link
        ("GET", f"/items/{item_id}/media-link", {}),
        ("POST", f"/items/{item_id}/reveal", {"data": form}),
        ("POST", f"/items/{item_id}/decide", {"data": decision}),
        ("POST", f"/items/{item_id}/release", {"data": form}),
        ("POST", f"/items/{item_id}/lease", {"headers": {"X-CSRF-Token": csrf}}),
        ("GET", f"/groups/{item_id}", {}),
        ("POST", f"/groups/{item_id}/decide", {"data": {**decision, "member": str(item_id)}}),
        ("POST", "/exposure", {"data": {**form, "item_id": str(item_id), "seconds": "5"}}),
    ]


def _api_requests(item_id: int, csrf: str) -> list[tuple[str, str, dict[str, Any]]]:
    headers = {"X-CSRF-Token": csrf}
    decision = {"action": "allow", "reason": "not_violating"}
    return [
        ("GET", f"/api/v1/items/{item_id}", {"headers": headers}),
        ("GET", f"/api/v1/items/{item_id}/media", {"headers": headers}),
        ("POST", f"/api/v1/items/{item_id}/decision", {"headers": headers, "json": decision}),
        ("POST", f"/api/v1/items/{item_id}/release", {"headers": headers, "json": {}}),
        ("POST", f"/api/v1/items/{item_id}/lease", {"headers": headers, "json": {}}),
    ]


@pytest.mark.parametrize(
    ("who", "hidden"),
    [("lou", 1), ("sue", 2)],  # another moderator's claim; the restricted queue for a senior
    ids=["moderator-vs-claimed-item", "senior-vs-restricted-item"],
)
def test_an_item_you_may_not_see_looks_exactly_like_no_item(world, sessions, who, hidden):
    client = world.test_client()
    csrf = login(client, who, PW)
    for build in (_console_requests, _api_requests):
        for (method, path, kw), (_, missing_path, missing_kw) in zip(
            build(hidden, csrf), build(MISSING, csrf), strict=True
        ):
            refused = client.open(path, method=method, **kw)
            missing = client.open(missing_path, method=method, **missing_kw)
            where = f"{method} {path} as {who}"
            assert refused.status_code == missing.status_code, where
            assert refused.get_data() == missing.get_data(), where
            assert refused.status_code in (403, 404, 200), where
            if refused.status_code == 404:
                assert "no such item, or not one you may see" in refused.get_data(as_text=True), where
    with sessions() as s:  # and nothing was changed
        item = s.get(Item, hidden)
        assert item is not None and item.state == ("claimed" if hidden == 1 else "pending")


def test_a_caller_who_may_see_the_item_still_gets_409_for_a_missing_claim(world):
    client = world.test_client()
    csrf = login(client, "sue", PW)  # a senior may see kim's item, but holds no claim on it
    assert client.get("/api/v1/items/1").status_code == 200
    headers = {"X-CSRF-Token": csrf}
    assert client.post("/api/v1/items/1/lease", json={}, headers=headers).status_code == 409
    assert client.post("/api/v1/items/1/release", json={}, headers=headers).status_code == 409
    assert client.post("/api/v1/items/999999/lease", json={}, headers=headers).status_code == 404
