"""Console media behind short-lived, per-user signed links.

The item page loads its media from ``/items/<id>/media?exp=...&sig=...``. The
route needs the login session, a valid and unexpired link issued to that user
for that item, and a live right to see the item; the JSON API keeps serving
media to its own credentials without a link.
"""

from __future__ import annotations

import base64
import time
from urllib.parse import urlencode

import pytest
from sqlalchemy import select

from moderation.config import load_settings
from moderation.storage.models import AuditRecord, ItemMedia, User
from moderation.web import actions, media_links
from tests.support.factories import make_item
from tests.support.web import add_user, login, make_app, media_src

SECRET = "media-link-test-secret"
JPEG = b"\xff\xd8\xff\xe0JFIF-test-bytes"


@pytest.fixture
def app(db_url, sessions):
    with sessions() as s:
        for n in (1, 2):
            item = make_item(n)
            s.add(item)
            s.flush()
            s.add(ItemMedia(item_id=item.id, content_type="image/jpeg", data=JPEG))
        s.commit()
    settings = load_settings({}, database_url=db_url, secret_key=SECRET, dev_mode=True, media_link_seconds=60)
    return make_app(settings, send_decision=lambda k, v: None)


def _user_id(sessions, username: str) -> int:
    with sessions() as s:
        return s.scalars(select(User.id).where(User.username == username)).one()


def _moderator(app, sessions, name: str = "kim", role: str = "moderator"):
    client = app.test_client()
    csrf = login(client, name, add_user(sessions, name, role=role))
    return client, csrf


def _claimed_page(client, csrf) -> tuple[int, str]:
    resp = client.post("/next", data={"csrf_token": csrf})
    assert resp.status_code == 302 and "/items/" in resp.location
    item_id = int(resp.location.rsplit("/", 1)[1])
    return item_id, client.get(f"/items/{item_id}").get_data(as_text=True)


def test_the_page_link_serves_the_media_privately(app, sessions):
    client, csrf = _moderator(app, sessions)
    item_id, page = _claimed_page(client, csrf)
    src = media_src(page)
    assert src.startswith(f"/items/{item_id}/media?") and "sig=" in src and "exp=" in src
    resp = client.get(src)
    assert resp.status_code == 200 and resp.data == JPEG
    assert resp.headers["Cache-Control"] == "no-store, private"
    with sessions() as s:
        assert s.scalar(select(AuditRecord).where(AuditRecord.action == "item.media")) is not None


def test_no_link_a_tampered_link_or_an_expired_link_is_refused(app, sessions):
    client, csrf = _moderator(app, sessions)
    item_id, page = _claimed_page(client, csrf)
    src = media_src(page)
    uid = _user_id(sessions, "kim")

    bare = client.get(f"/items/{item_id}/media")
    assert bare.status_code == 403 and media_links.MISSING in bare.get_data(as_text=True)
    assert client.get(src.replace("sig=", "sig=x")).status_code == 403
    later = media_links.link_params(SECRET, uid, item_id, 60, time.time() + 3600)
    forged_expiry = dict(later, sig=dict(x.split("=", 1) for x in src.split("?")[1].split("&"))["sig"])
    resp = client.get(f"/items/{item_id}/media?{urlencode(forged_expiry)}")
    assert resp.status_code == 403 and media_links.FOREIGN in resp.get_data(as_text=True)

    expired = media_links.link_params(SECRET, uid, item_id, 60, time.time() - 120)
    resp = client.get(f"/items/{item_id}/media?{urlencode(expired)}")
    assert resp.status_code == 403 and media_links.EXPIRED in resp.get_data(as_text=True)
    assert "JFIF" not in resp.get_data(as_text=True)


def test_a_copied_link_is_useless_to_another_user_and_for_another_item(app, sessions):
    kim, csrf = _moderator(app, sessions)
    item_id, page = _claimed_page(kim, csrf)
    src = media_src(page)
    # An admin may see every item, but not through a link issued to someone else.
    ada, _ = _moderator(app, sessions, "ada", role="admin")
    resp = ada.get(src)
    assert resp.status_code == 403 and media_links.FOREIGN in resp.get_data(as_text=True)
    other = 2 if item_id == 1 else 1
    assert ada.get(src.replace(f"/items/{item_id}/", f"/items/{other}/")).status_code == 403
    # Not logged in at all: the login page, not the media.
    anonymous = app.test_client().get(src)
    assert anonymous.status_code == 302 and "/login" in anonymous.location


def test_a_valid_link_does_not_outlive_the_claim(app, sessions):
    client, csrf = _moderator(app, sessions)
    item_id, page = _claimed_page(client, csrf)
    src = media_src(page)
    assert client.post(f"/items/{item_id}/release", data={"csrf_token": csrf}).status_code == 302
    resp = client.get(src)
    assert resp.status_code == 404 and actions.NOT_VISIBLE in resp.get_data(as_text=True)


def test_the_page_can_fetch_a_fresh_link(app, sessions):
    client, csrf = _moderator(app, sessions)
    item_id, _ = _claimed_page(client, csrf)
    resp = client.get(f"/items/{item_id}/media-link")
    assert resp.status_code == 200 and resp.headers["Cache-Control"].startswith("no-store")
    url = resp.get_json()["url"]
    assert client.get(url).status_code == 200
    lou, _ = _moderator(app, sessions, "lou")
    assert lou.get(f"/items/{item_id}/media-link").status_code == 404  # kim's claim: not hers to see


def test_api_clients_keep_fetching_media_with_their_credentials(app, sessions):
    client, csrf = _moderator(app, sessions)
    item_id, _ = _claimed_page(client, csrf)
    assert client.get(f"/api/v1/items/{item_id}/media").status_code == 200  # session, no link
    basic = {"Authorization": "Basic " + base64.b64encode(b"kim:correct horse battery").decode()}
    resp = app.test_client().get(f"/api/v1/items/{item_id}/media", headers=basic)
    assert resp.status_code == 200 and resp.data == JPEG and "no-store" in resp.headers["Cache-Control"]


@pytest.mark.parametrize(
    ("user_id", "item_id", "shift", "sig", "reason"),
    [
        (7, 3, 0, None, None),
        (8, 3, 0, None, media_links.FOREIGN),  # another user
        (7, 4, 0, None, media_links.FOREIGN),  # another item
        (7, 3, -400, None, media_links.EXPIRED),
        (7, 3, 0, "", media_links.MISSING),
        (7, 3, 0, "\u2603" * 10, media_links.FOREIGN),
    ],
)
def test_link_checks(user_id, item_id, shift, sig, reason):
    now = 1_700_000_000.0
    params = media_links.link_params(SECRET, 7, 3, 300, now + shift)
    if sig is not None:
        params["sig"] = sig
    assert media_links.problem(SECRET, user_id, item_id, params["exp"], params["sig"], now) == reason
    assert media_links.problem("another secret", 7, 3, params["exp"], params["sig"], now) is not None
    assert media_links.problem(SECRET, 7, 3, "12x", params["sig"], now) == media_links.MISSING
