"""Moderator wellbeing through the console: blurred and greyscale media by
default, per-user display preferences, exposure counting, breaks that stop the
queue until acknowledged, and keyboard shortcuts shown on every page."""

from __future__ import annotations

import base64
import re
from html import unescape
from typing import Any

import pytest
from sqlalchemy import select

from moderation.config import load_settings
from moderation.hashing.video import VideoFrameHash, serialize
from moderation.storage.models import AuditRecord, ExposureSession, Item, ItemMedia, User
from moderation.web import wellbeing
from tests.support.factories import make_item
from tests.support.web import add_user, login, make_app

PASSWORD = "correct horse battery"


def _app(db_url: str, sessions: Any, items: int = 3, **settings: Any) -> Any:
    with sessions() as s:
        for n in range(1, items + 1):
            item = make_item(n, priority=100 - n)  # served in order 1, 2, 3
            s.add(item)
            s.flush()
            s.add(ItemMedia(item_id=item.id, content_type="image/jpeg", data=b"\xff\xd8\xff\xe0x"))
        s.commit()
    values: dict[str, Any] = dict(database_url=db_url, secret_key="wellbeing-test", dev_mode=True)
    values.update(settings)
    return make_app(load_settings({}, **values), send_decision=lambda k, v: None)


def _client(app: Any, sessions: Any, name: str = "kim", role: str = "moderator") -> tuple[Any, str]:
    client = app.test_client()
    return client, login(client, name, add_user(sessions, name, role=role))


def _next(client: Any, csrf: str) -> str:
    resp = client.post("/next", data={"csrf_token": csrf})
    assert resp.status_code == 302
    return str(resp.location)


def _exposure(sessions: Any, name: str = "kim") -> ExposureSession:
    with sessions() as s:
        user_id = s.scalars(select(User.id).where(User.username == name)).one()
        row = s.scalars(
            select(ExposureSession)
            .where(ExposureSession.user_id == user_id, ExposureSession.ended_at.is_(None))
            .order_by(ExposureSession.id.desc())
        ).first()
        assert row is not None
        return row


def _figure(html: str) -> str:
    match = re.search(r'<figure class="media blurred"[^>]*>', html)
    assert match, "no blurred media figure"
    return match.group(0)


# -- display -----------------------------------------------------------------------------
def test_media_is_blurred_and_greyscale_by_default_and_video_never_plays_by_itself(db_url, sessions):
    app = _app(db_url, sessions, items=0)
    frames = [VideoFrameHash("d" * 64, 90, float(i), i) for i in range(2)]
    with sessions() as s:
        s.add(make_item(1, vpdq=serialize(frames), media_type="video/mp4"))
        s.commit()
    client, csrf = _client(app, sessions)
    page = client.get(_next(client, csrf)).get_data(as_text=True)
    figure = _figure(page)
    assert 'data-blur="medium"' in figure and 'data-greyscale="reveal"' in figure
    assert 'data-reveal-mode="click"' in figure
    video = re.search(r"<video [^>]*>", page)
    assert video and " muted " in video.group(0) and "autoplay" not in page
    css = client.get("/static/console.css").get_data(as_text=True)
    assert ".media.blurred img, .media.blurred video { filter: blur(28px) grayscale(1); }" in css


def test_every_shortcut_is_shown_on_the_page(db_url, sessions):
    app = _app(db_url, sessions)
    client, csrf = _client(app, sessions)
    for path in ("/", _next(client, csrf), "/break"):
        html = client.get(path).get_data(as_text=True)
        keys = re.findall(r'<(button|input)[^>]*data-key="([^"]+)"[^>]*>(.*?)</(?:button|label)>', html, re.S)
        assert keys, path
        for _tag, key, rest in keys:
            assert "<kbd>" in rest, (path, key)  # the key is written next to its control
        found = {key for _, key, _ in keys}
        assert "?" in found  # the shortcut list
        expected = {"/": {"n"}, "/break": {"b"}}.get(path, {"x", "a", "e", "s", "r", "h", "1"})
        assert expected <= found, (path, found)


def test_preferences_round_trip_and_apply_to_the_item_page(db_url, sessions):
    app = _app(db_url, sessions)
    client, csrf = _client(app, sessions)
    page = client.get("/preferences").get_data(as_text=True)
    assert 'value="click" checked' in page and '<option value="medium" selected>' in page
    form = {"reveal_mode": "hold", "greyscale_after_reveal": "true", "blur_strength": "high"}
    resp = client.post("/preferences", data={**form, "csrf_token": csrf})
    assert resp.status_code == 302 and resp.location.endswith("/preferences")
    page = client.get("/preferences").get_data(as_text=True)
    assert 'value="hold" checked' in page and '<option value="high" selected>' in page
    assert '<option value="true" selected>' in page
    with sessions() as s:
        stored = s.scalars(select(User.preferences).where(User.username == "kim")).one()
        audited = s.scalars(select(AuditRecord).where(AuditRecord.action == "preferences.update")).one()
    assert stored == {"reveal_mode": "hold", "greyscale_after_reveal": True, "blur_strength": "high"}
    assert audited.actor == "kim" and audited.details == stored

    item_page = client.get(_next(client, csrf)).get_data(as_text=True)
    figure = _figure(item_page)
    assert 'data-reveal-mode="hold"' in figure and 'data-blur="high"' in figure
    assert 'data-greyscale="keep"' in figure
    assert 'data-key="h"' in item_page and 'data-key="r"' not in item_page  # no sticky reveal

    # A partial update (JSON, as a script would send it) keeps the rest.
    resp = client.post("/preferences", json={"blur_strength": "low"}, headers={"X-CSRF-Token": csrf})
    assert resp.status_code == 200 and resp.get_json()["preferences"]["reveal_mode"] == "hold"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"theme": "dark"}, "unknown preference 'theme'"),
        ({"blur_strength": "extreme"}, "blur_strength must be one of low, medium, high"),
        ({"reveal_mode": "hover"}, "reveal_mode must be one of click, hold"),
        ({"greyscale_after_reveal": "maybe"}, "greyscale_after_reveal must be true or false"),
        ({}, "send at least one preference"),
    ],
)
def test_invalid_preferences_are_refused_with_a_clear_message(db_url, sessions, fields, message):
    app = _app(db_url, sessions, items=0)
    client, csrf = _client(app, sessions)
    resp = client.post("/preferences", data={**fields, "csrf_token": csrf})
    assert resp.status_code == 400 and message in unescape(resp.get_data(as_text=True))
    resp = client.post("/preferences", json=fields, headers={"X-CSRF-Token": csrf})
    assert resp.status_code == 400 and message in resp.get_json()["error"]
    with sessions() as s:
        assert not s.scalars(select(User.preferences).where(User.username == "kim")).one()


def test_stored_nonsense_falls_back_to_the_defaults():
    stored = {"blur_strength": "extreme", "greyscale_after_reveal": 1, "reveal_mode": "hold", "x": 1}
    assert wellbeing.effective_preferences(stored) == {**wellbeing.DEFAULTS, "reveal_mode": "hold"}
    assert wellbeing.effective_preferences(None) == wellbeing.DEFAULTS


# -- exposure ------------------------------------------------------------------------------
def test_item_views_count_each_item_once(db_url, sessions):
    app = _app(db_url, sessions)
    client, csrf = _client(app, sessions)
    first = _next(client, csrf)
    for _ in range(3):
        assert client.get(first).status_code == 200  # reloads
    assert _exposure(sessions).items_viewed == 1
    client.post(f"{first}/release", data={"csrf_token": csrf})
    client.get(_next(client, csrf))
    assert _exposure(sessions).items_viewed == 2


def test_revealed_seconds_are_clamped_and_only_count_for_items_you_may_see(db_url, sessions):
    app = _app(db_url, sessions)
    kim, csrf = _client(app, sessions)
    item_id = int(_next(kim, csrf).rsplit("/", 1)[1])
    kim.get(f"/items/{item_id}")

    def report(client: Any, token: str, **body: Any) -> Any:
        return client.post("/exposure", data=body, headers={"X-CSRF-Token": token})

    assert report(kim, csrf, item_id=item_id, seconds="14.5").get_json() == {
        "counted": 14.5,
        "break_due": False,
    }
    assert report(kim, csrf, item_id=item_id, seconds="5000").get_json()["counted"] == 120.0
    assert report(kim, csrf, item_id=item_id, seconds="-3").get_json()["counted"] == 0.0
    assert report(kim, csrf, item_id=item_id, seconds="nan").status_code == 400
    assert report(kim, csrf, item_id="one", seconds="1").status_code == 400
    assert report(kim, csrf, item_id=999, seconds="10").get_json()["counted"] == 0.0  # no such item
    assert _exposure(sessions).revealed_seconds == pytest.approx(134.5)

    lou, lou_csrf = _client(app, sessions, "lou")  # kim holds the item; lou never opened it
    assert report(lou, lou_csrf, item_id=item_id, seconds="30").get_json()["counted"] == 0.0
    assert _exposure(sessions, "lou").revealed_seconds == 0.0

    # The last report of an item may arrive just after the decision ended the claim.
    kim.post(
        f"/items/{item_id}/decide", data={"csrf_token": csrf, "action": "allow", "reason": "not_violating"}
    )
    assert report(kim, csrf, item_id=item_id, seconds="2").get_json()["counted"] == 2.0
    # Without the CSRF header a report is refused like any other POST.
    assert kim.post("/exposure", data={"item_id": item_id, "seconds": "2"}).status_code == 400


# -- breaks --------------------------------------------------------------------------------
def test_a_break_stops_the_queue_until_it_is_acknowledged(db_url, sessions):
    app = _app(db_url, sessions, break_after_items=2)
    client, csrf = _client(app, sessions)
    decide = {"csrf_token": csrf, "action": "allow", "reason": "not_violating"}
    first = _next(client, csrf)
    assert first.endswith("/items/1")
    client.get(first)
    second = client.post(f"{first}/decide", data=decide).location
    assert second.endswith("/items/2")
    client.get(second)
    resp = client.post(f"{second}/decide", data=decide)  # the third item is not served
    assert resp.status_code == 302 and resp.location.endswith("/break")
    assert _next(client, csrf).endswith("/break")
    page = client.get("/break").get_data(as_text=True)
    assert 'You have viewed <strong id="items-viewed">2</strong> items' in page
    assert "Take a break." in page and 'data-key="b"' in page
    exposure = _exposure(sessions)
    assert exposure.break_prompted_at is not None
    with sessions() as s:
        assert s.get(Item, 3).state == "pending"  # type: ignore[union-attr]

    basic = {"Authorization": "Basic " + base64.b64encode(f"kim:{PASSWORD}".encode()).decode()}
    api = app.test_client().post("/api/v1/queue/claim", json={}, headers=basic)
    assert api.status_code == 409
    body = api.get_json()
    assert body["break_due"] is True and "break due" in body["error"] and body["items_viewed"] == 2

    resp = client.post("/break", data={"csrf_token": csrf})
    assert resp.status_code == 302 and resp.location.endswith("/")
    with sessions() as s:
        ended = s.get(ExposureSession, exposure.id)
        assert ended is not None and ended.ended_at is not None
        audited = s.scalars(select(AuditRecord).where(AuditRecord.action == "exposure.break")).one()
    assert audited.actor == "kim" and audited.details["items_viewed"] == 2
    assert _exposure(sessions).items_viewed == 0
    assert _next(client, csrf).endswith("/items/3")


def test_api_clients_count_views_and_acknowledge_breaks_through_the_api(db_url, sessions):
    """An API client's item reads count towards a break like page views (and
    are audited); the break is acknowledged with POST /api/v1/break."""
    app = _app(db_url, sessions, break_after_items=1)
    add_user(sessions, "kim", role="moderator")
    api = app.test_client()
    basic = {"Authorization": "Basic " + base64.b64encode(f"kim:{PASSWORD}".encode()).decode()}
    assert api.get("/api/v1/exposure", headers=basic).get_json()["break_due"] is False
    claimed = api.post("/api/v1/queue/claim", json={}, headers=basic).get_json()
    for _ in range(2):  # read twice: one item viewed
        assert api.get(f"/api/v1/items/{claimed['id']}", headers=basic).status_code == 200
    state = api.get("/api/v1/exposure", headers=basic).get_json()
    assert state["items_viewed"] == 1 and state["break_due"] is True
    decided = api.post(
        f"/api/v1/items/{claimed['id']}/decision",
        json={"action": "allow", "reason": "not_violating"},
        headers=basic,
    )
    assert decided.status_code == 201
    refused = api.post("/api/v1/queue/claim", json={}, headers=basic)
    assert refused.status_code == 409 and "POST /api/v1/break" in refused.get_json()["error"]
    fresh = api.post("/api/v1/break", json={}, headers=basic)
    assert fresh.status_code == 200 and fresh.get_json()["items_viewed"] == 0
    assert api.post("/api/v1/queue/claim", json={}, headers=basic).status_code == 200
    with sessions() as s:
        views = s.scalars(select(AuditRecord).where(AuditRecord.action == "item.view")).all()
        breaks = s.scalars(select(AuditRecord).where(AuditRecord.action == "exposure.break")).all()
    assert [v.details.get("via") for v in views] == ["api", "api"]
    assert len(breaks) == 1 and breaks[0].details["items_viewed"] == 1


def test_revealed_time_prompts_a_break_but_the_current_item_can_be_finished(db_url, sessions):
    app = _app(db_url, sessions, break_after_revealed_seconds=60, break_after_items=0)
    client, csrf = _client(app, sessions)
    first = _next(client, csrf)
    client.get(first)
    item_id = int(first.rsplit("/", 1)[1])
    for _ in range(2):
        reply = client.post(
            "/exposure", data={"item_id": item_id, "seconds": 40}, headers={"X-CSRF-Token": csrf}
        )
    assert reply.get_json()["break_due"] is True
    assert _next(client, csrf) == first  # still holding it: finish it
    assert client.get(first).status_code == 200
    client.post(f"{first}/release", data={"csrf_token": csrf})
    assert _next(client, csrf).endswith("/break")


def test_zero_disables_the_break(db_url, sessions):
    app = _app(db_url, sessions, break_after_items=0, break_after_revealed_seconds=0)
    client, csrf = _client(app, sessions)
    decide = {"csrf_token": csrf, "action": "allow", "reason": "not_violating"}
    location = _next(client, csrf)
    for _ in range(3):
        assert "/items/" in location
        client.get(location)
        location = client.post(f"{location}/decide", data=decide).location
    assert location.endswith("/") and _exposure(sessions).items_viewed == 3
