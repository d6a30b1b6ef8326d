"""Body-part regions on the item page: passed to console.js as a JSON data attribute.

The page's CSP forbids inline scripts and style attributes, so the regions travel
in ``data-regions`` on the media figure and console.js draws the overlays. The
attribute must round-trip as JSON and never let a label (which could come from a
replaced model, or be tampered with in the database) break out of it.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest

from moderation.storage.models import ItemMedia
from tests.support.factories import make_item
from tests.support.images import encode, synthetic_image
from tests.support.web import add_user, login, make_app

REGIONS = [
    {"label": "BUTTOCKS_EXPOSED", "score": 0.8123, "x": 0.1, "y": 0.2, "w": 0.3, "h": 0.25},
    {"label": "ANUS_EXPOSED", "score": 0.41, "x": 0.55, "y": 0.5, "w": 0.05, "h": 0.07},
]
HOSTILE = "</script><b>x'\"&amp;"


class _Figure(HTMLParser):
    """The attributes of <figure id="media">, entity-decoded as a browser would."""

    def __init__(self) -> None:
        super().__init__()
        self.attrs: dict[str, str | None] | None = None
        self.buttons: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "figure" and dict(attrs).get("id") == "media":
            self.attrs = dict(attrs)
        if tag == "button":
            self.buttons.append(dict(attrs))


def _page(settings_factory, sessions, **item_fields) -> tuple[str, _Figure]:
    with sessions() as s:
        item = make_item(1, **item_fields)
        s.add(item)
        s.flush()
        s.add(ItemMedia(item_id=item.id, content_type="image/jpeg", data=encode(synthetic_image(1))))
        s.commit()
        item_id = item.id
    app = make_app(settings_factory())
    c = app.test_client()
    csrf = login(c, "kim", add_user(sessions, "kim"))
    assert c.post("/next", data={"csrf_token": csrf}).status_code == 302
    resp = c.get(f"/items/{item_id}")
    assert resp.status_code == 200
    html = resp.get_data(as_text=True)
    figure = _Figure()
    figure.feed(html)
    assert figure.attrs is not None
    return html, figure


def _raw_attribute(html: str) -> str:
    start = html.index("data-regions='") + len("data-regions='")
    return html[start : html.index("'", start)]


def test_regions_round_trip_through_the_data_attribute(settings_factory, sessions):
    html, figure = _page(settings_factory, sessions, regions=REGIONS)
    assert figure.attrs is not None
    assert json.loads(figure.attrs["data-regions"] or "") == REGIONS
    raw = _raw_attribute(html)
    assert "<" not in raw and ">" not in raw
    assert json.loads(raw) == REGIONS  # tojson needs no entity decoding here
    keys = {b.get("data-key") for b in figure.buttons}
    assert {"r", "shift+r"} <= keys
    assert "Show all <kbd>Shift+R</kbd>" in html and "2 detected regions stay blurred" in html
    assert 'style="' not in html  # the CSP forbids style attributes; console.js sets them


def test_an_item_without_regions_renders_none(settings_factory, sessions):
    html, figure = _page(settings_factory, sessions)
    assert figure.attrs is not None and "data-regions" not in figure.attrs
    assert "data-regions" not in html and 'data-key="shift+r"' not in html
    assert '<figure class="media blurred"' in html


@pytest.mark.parametrize("regions", [[], None])
def test_empty_or_missing_regions_render_none(settings_factory, sessions, regions):
    html, _ = _page(settings_factory, sessions, regions=regions)
    assert "data-regions" not in html and "Show all" not in html


def test_a_hostile_label_is_escaped(settings_factory, sessions):
    hostile = [dict(REGIONS[0], label=HOSTILE)]
    html, figure = _page(settings_factory, sessions, regions=hostile)
    assert "</script><b>" not in html and "<b>x" not in html
    raw = _raw_attribute(html)  # the attribute ends at the first ' : none inside
    assert "<" not in raw and "'" not in raw and "&amp;" not in raw
    assert figure.attrs is not None
    assert json.loads(figure.attrs["data-regions"] or "") == hostile


def test_videos_never_get_regions(settings_factory, sessions):
    from moderation.hashing.video import VideoFrameHash, serialize

    frames = [VideoFrameHash("d" * 64, 90, float(i), i) for i in range(2)]
    html, _ = _page(settings_factory, sessions, vpdq=serialize(frames), regions=REGIONS)
    assert "data-regions" not in html and "Show all" not in html


def test_the_api_exposes_regions(settings_factory, sessions):
    with sessions() as s:
        s.add(make_item(1, regions=REGIONS))
        s.add(make_item(2))
        s.commit()
    app = make_app(settings_factory())
    c = app.test_client()
    login(c, "ada", add_user(sessions, "ada", role="admin"))  # admins see unclaimed items
    assert c.get("/api/v1/items/1").get_json()["regions"] == REGIONS
    assert c.get("/api/v1/items/2").get_json()["regions"] is None
