from __future__ import annotations

import json

import pytest

from moderation.errors import InvalidEvent
from moderation.events.uploads import make_upload_event, parse_upload_event


def valid(**changes):
    event = make_upload_event("e1", "c1", "u1", "https://cdn.example/x.jpg", "image/jpeg")
    event.update(changes)
    return event


def test_valid_event_parses_and_keeps_unknown_fields():
    event = parse_upload_event(json.dumps(valid(album="holiday", nested={"a": [1, 2]})).encode())
    assert (event.event_id, event.content_id, event.uploader_id) == ("e1", "c1", "u1")
    assert event.raw["album"] == "holiday" and event.raw["nested"] == {"a": [1, 2]}
    assert event.created_at.tzinfo is not None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (None, "no value"),
        (b"", "not valid JSON"),
        (b"{oops", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (json.dumps({k: v for k, v in valid().items() if k != "media_url"}).encode(), "media_url"),
        (json.dumps(valid(event_id=5)).encode(), "event_id"),
        (json.dumps(valid(content_id="")).encode(), "content_id"),
        (json.dumps(valid(schema_version=7)).encode(), "schema_version"),
        (json.dumps(valid(created_at="yesterday")).encode(), "created_at"),
        (json.dumps(valid(uploader_id="x" * 500)).encode(), "uploader_id"),
        (b"[" * 100_000 + b"]" * 100_000, "limit|JSON"),
        (json.dumps(valid(blob="x" * 300_000)).encode(), "limit"),
    ],
)
def test_invalid_events_say_what_is_wrong(raw, message):
    with pytest.raises(InvalidEvent, match=message):
        parse_upload_event(raw)


def test_schema_file_is_valid_json_schema():
    from jsonschema import Draft202012Validator

    from moderation.events.uploads import SCHEMA_PATH

    Draft202012Validator.check_schema(json.loads(SCHEMA_PATH.read_text()))
