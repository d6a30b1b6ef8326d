"""Console behaviour that needs no broker: auth, CSRF, headers, escaping, metrics.
Decisions are captured by an in-memory sender instead of Kafka."""

from __future__ import annotations

import pytest

from moderation.storage.models import ItemMedia
from tests.conftest import wait_until
from tests.support.factories import make_item
from tests.support.images import encode, synthetic_image
from tests.support.web import add_user, csrf_from, login, make_app, media_src, scrape_metrics

EVIL = '<script>alert("x")</script>'


@pytest.fixture
def app_and_item(settings_factory, sessions):
    sent: list[tuple[bytes, bytes]] = []
    settings = settings_factory()
    with sessions() as s:
        item = make_item(
            1,
            uploader_id=EVIL,
            media_type=EVIL,
            pdq="c" * 64,
            score=0.81,
            matches=[{"bank": EVIL, "bank_action": "review", "entry_id": 1, "signal": "pdq", "distance": 7}],
        )
        s.add(item)
        s.flush()
        s.add(ItemMedia(item_id=item.id, content_type="image/jpeg", data=encode(synthetic_image(1))))
        s.commit()
        item_id = item.id
    app = make_app(settings, send_decision=lambda k, v: sent.append((k, v)))
    return app, item_id, sent


def test_everything_but_health_needs_login_and_metrics_are_not_on_the_console_port(app_and_item):
    app, item_id, _ = app_and_item
    c = app.test_client()
    for path in ("/", f"/items/{item_id}", f"/items/{item_id}/media"):
        resp = c.get(path)
        assert resp.status_code == 302 and "/login" in resp.location
    assert c.get("/api/v1/me").status_code == 401
    assert c.get("/healthz").status_code == 200
    assert c.get("/readyz").status_code == 200
    # The restricted queue's depth is among the metrics: only on WEB_METRICS_PORT.
    assert c.get("/metrics").status_code == 404
    assert "moderation_queue_items" in scrape_metrics(app)


def test_console_routes_ignore_basic_credentials(app_and_item, sessions):
    # Otherwise a browser that remembered API credentials could be driven
    # cross-site to claim and decide items without a CSRF token.
    import base64

    app, _, _ = app_and_item
    pw = add_user(sessions, "kim")
    basic = {"Authorization": "Basic " + base64.b64encode(f"kim:{pw}".encode()).decode()}
    c = app.test_client()
    assert c.post("/next", headers=basic).status_code == 302  # to the login page
    assert "/login" in c.post("/next", headers=basic).location
    assert c.get("/api/v1/me", headers=basic).status_code == 200


def test_wrong_password_is_refused(app_and_item, sessions):
    app, _, _ = app_and_item
    add_user(sessions, "kim")
    c = app.test_client()
    token = csrf_from(c.get("/login").get_data(as_text=True))
    resp = c.post("/login", data={"username": "kim", "password": "wrong password!", "csrf_token": token})
    assert resp.status_code == 401 and "Wrong username or password" in resp.get_data(as_text=True)


def test_posts_without_csrf_token_are_rejected(app_and_item, sessions):
    app, item_id, sent = app_and_item
    pw = add_user(sessions, "kim")
    c = app.test_client()
    csrf = login(c, "kim", pw)
    assert c.post("/next", data={}).status_code == 400
    assert c.post("/next", data={"csrf_token": "forged"}).status_code == 400
    assert c.post("/next", data={"csrf_token": csrf}).status_code == 302
    resp = c.post(f"/items/{item_id}/decide", data={"action": "remove", "reason": "ncii"})
    assert resp.status_code == 400 and sent == []


def test_login_never_redirects_off_site(app_and_item, sessions):
    app, _, _ = app_and_item
    pw = add_user(sessions, "kim")
    c = app.test_client()
    token = csrf_from(c.get("/login").get_data(as_text=True))
    resp = c.post(
        "/login?next=//evil.example/x", data={"username": "kim", "password": pw, "csrf_token": token}
    )
    assert resp.location == "/"


def test_uploader_supplied_text_is_escaped_and_headers_are_set(app_and_item, sessions):
    app, item_id, _ = app_and_item
    pw = add_user(sessions, "kim")
    c = app.test_client()
    csrf = login(c, "kim", pw)
    c.post("/next", data={"csrf_token": csrf})
    resp = c.get(f"/items/{item_id}")
    html = resp.get_data(as_text=True)
    assert EVIL not in html and "&lt;script&gt;" in html
    csp = resp.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


def test_other_moderators_cannot_see_a_claimed_item(app_and_item, sessions):
    app, item_id, _ = app_and_item
    a_pw, b_pw = add_user(sessions, "kim"), add_user(sessions, "lou")
    a, b = app.test_client(), app.test_client()
    a_csrf, _ = login(a, "kim", a_pw), login(b, "lou", b_pw)
    a.post("/next", data={"csrf_token": a_csrf})
    refused, missing = b.get(f"/items/{item_id}"), b.get(f"/items/{item_id + 1000}")
    assert refused.status_code == missing.status_code == 404  # as if there were no such item
    assert refused.get_data() == missing.get_data()
    assert b.get(f"/items/{item_id}/media").status_code == 403  # no signed link of hers


def test_decision_by_keyboard_form_publishes_and_claims_the_next(app_and_item, sessions):
    app, item_id, sent = app_and_item
    pw = add_user(sessions, "kim")
    c = app.test_client()
    csrf = login(c, "kim", pw)
    c.post("/next", data={"csrf_token": csrf})
    page = c.get(f"/items/{item_id}").get_data(as_text=True)
    for key in ('data-key="x"', 'data-key="a"', 'data-key="e"', 'data-key="r"', 'data-key="1"'):
        assert key in page
    resp = c.post(
        f"/items/{item_id}/decide", data={"csrf_token": csrf, "action": "allow", "reason": "not_violating"}
    )
    assert resp.status_code == 302  # queue now empty: back to the overview
    assert len(sent) == 1 and b'"action":"allow"' in sent[0][1] and b'"moderator":"kim"' in sent[0][1]
    metrics = scrape_metrics(app)
    assert 'moderation_decisions_total{action="allow",source="moderator"} 1.0' in metrics


def test_queue_depth_metric_by_state_and_priority(app_and_item):
    app, _, _ = app_and_item
    metrics = scrape_metrics(app)
    assert 'moderation_queue_items{priority="50",state="pending",tier="moderator"} 1.0' in metrics


def test_a_stalled_broker_never_holds_up_a_decision(settings_factory, sessions):
    import threading

    from tests.support.web import make_app as _make_app

    release, published = threading.Event(), []

    def stalled_broker(key: bytes, value: bytes) -> None:
        release.wait(20)  # the broker answers only when the test says so
        published.append(value)

    with sessions() as s:
        s.add(make_item(1))
        s.commit()
    app = _make_app(settings_factory(), send_decision=stalled_broker)
    stop = app.extensions["moderation"].publisher.start_sweeper(interval_s=0.1)
    try:
        pw = add_user(sessions, "kim")
        c = app.test_client()
        csrf = login(c, "kim", pw)
        c.post("/next", data={"csrf_token": csrf})
        resp = c.post(
            "/items/1/decide", data={"csrf_token": csrf, "action": "allow", "reason": "not_violating"}
        )
        assert resp.status_code == 302 and published == []  # answered while the broker stalls
        release.set()
        wait_until(lambda: published, timeout=10)
        assert b'"moderator":"kim"' in published[0]
    finally:
        stop.set()
        release.set()


def test_a_video_item_is_shown_muted_blurred_and_never_autoplayed(settings_factory, sessions):
    from moderation.hashing.video import VideoFrameHash, serialize
    from tests.support.videos import synthetic_video

    frames = [VideoFrameHash("d" * 64, 90, float(i), i) for i in range(3)]
    with sessions() as s:
        item = make_item(
            1,
            vpdq=serialize(frames),
            matches=[
                {
                    "bank": "b",
                    "bank_action": "auto_remove",
                    "entry_id": 3,
                    "signal": "vpdq",
                    "distance": 12,
                    "variant": "original",
                    "share": 0.9,
                }
            ],
        )
        s.add(item)
        s.flush()
        s.add(
            ItemMedia(
                item_id=item.id, content_type="video/mp4", data=synthetic_video(None, seed=1, seconds=1)
            )
        )
        s.commit()
        item_id = item.id
    app = make_app(settings_factory())
    c = app.test_client()
    csrf = login(c, "ana", add_user(sessions, "ana"))
    assert c.post("/next", data={"csrf_token": csrf}).status_code == 302  # claims it
    page = c.get(f"/items/{item_id}").get_data(as_text=True)
    assert '<figure class="media blurred"' in page
    assert "<video" in page and " muted " in page and "autoplay" not in page
    assert "90% of frames" in page and "3 video frame hashes" in page
    media = c.get(media_src(page))  # the page's short-lived signed link
    assert media.status_code == 200 and media.mimetype == "video/mp4"
    assert "media-src 'self'" in media.headers["Content-Security-Policy"]
