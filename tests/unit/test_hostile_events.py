"""Hostile upload events: whatever bytes arrive, the parser returns an event or
raises InvalidEvent (an InvalidInput: dead-lettered, never retried) with a clear
message, quickly. tests/unit/test_upload_event.py covers the ordinary mistakes;
this file covers malicious and pathological values, and properties over any input."""

from __future__ import annotations

import json
import re
import string
import sys
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moderation.errors import InvalidEvent, InvalidInput
from moderation.events.uploads import (
    MAX_EVENT_BYTES,
    MAX_NESTING,
    SCHEMA_PATH,
    make_upload_event,
    parse_upload_event,
)

FIELDS = ("event_id", "content_id", "uploader_id", "media_url", "media_type", "created_at")
TIME_LIMIT_S = 0.5  # per hostile event; measured well under 10 ms each
PROPERTY = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def valid(**changes: Any) -> dict[str, Any]:
    event = make_upload_event("e1", "c1", "u1", "https://cdn.example/x.jpg", "image/jpeg")
    event.update(changes)
    return event


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def with_raw(fragment: str) -> bytes:
    """A valid event with ``"x": <fragment>`` (raw JSON text) added."""
    return (json.dumps(valid())[:-1] + ', "x": ' + fragment + "}").encode()


def refused(raw: Any) -> InvalidEvent:
    started = time.perf_counter()
    with pytest.raises(InvalidEvent) as info:
        parse_upload_event(raw)
    elapsed = time.perf_counter() - started
    assert elapsed < TIME_LIMIT_S, f"took {elapsed:.3f} s"
    assert info.value.code == "invalid_event" and isinstance(info.value, InvalidInput)
    return info.value


_HEADER = json.dumps(valid())[:-1]

HOSTILE: list[tuple[str, Any, str]] = [
    # malformed JSON
    ("truncated", dumps(valid())[:-1], "not valid JSON"),
    ("trailing garbage", dumps(valid()) + b"}{", "not valid JSON: Extra data"),
    ("single quotes", b"{'event_id': 'e1'}", "not valid JSON"),
    ("comment", b"// hi\n" + dumps(valid()), "not valid JSON"),
    ("trailing comma", dumps(valid())[:-1] + b",}", "not valid JSON"),
    ("raw control char in string", dumps(valid(event_id="a\tb")).replace(b"\\t", b"\t"), "not valid JSON"),
    # encodings
    (
        "invalid UTF-8",
        json.dumps(valid(event_id="\u00e9"), ensure_ascii=False).encode().replace(b"\xa9", b"("),
        "not UTF-8",
    ),
    ("overlong UTF-8", dumps(valid(event_id="A")).replace(b'"A"', b'"\xc1\x81"'), "not UTF-8"),
    ("CESU-8 surrogate", dumps(valid(event_id="A")).replace(b'"A"', b'"\xed\xa0\x80"'), "not UTF-8"),
    ("UTF-8 BOM", b"\xef\xbb\xbf" + dumps(valid()), "byte order mark"),
    ("UTF-16 with BOM", json.dumps(valid()).encode("utf-16"), "UTF-16|not UTF-8"),
    ("UTF-16-LE", json.dumps(valid()).encode("utf-16-le"), "NUL bytes"),
    ("UTF-32", json.dumps(valid()).encode("utf-32"), "NUL bytes|not UTF-8"),
    ("escaped lone surrogate value", with_raw('"\\udc00"'), "lone UTF-16 surrogate"),
    ("escaped lone surrogate key", with_raw('{"\\ud800x": 1}'), "lone UTF-16 surrogate"),
    ("lone surrogate in event_id", dumps(valid(event_id="\ud800")), "lone UTF-16 surrogate"),
    ("NUL in uploader_id", dumps(valid(uploader_id="u\x00")), "NUL"),
    ("raw NUL byte", dumps(valid()).replace(b"{", b"{\x00", 1), "NUL bytes"),
    # empty and non-object
    ("empty", b"", "empty"),
    ("whitespace", b" \r\n\t ", "empty"),
    ("null", b"null", "JSON object, got null"),
    ("string", b'"event"', "JSON object, got string"),
    ("number", b"1", "JSON object, got number"),
    ("boolean", b"true", "JSON object, got boolean"),
    ("array of event", dumps([valid()]), "JSON object, got array"),
    ("not bytes", json.dumps(valid()), "must be bytes"),
    # size and depth
    ("5 MB event", dumps(valid(blob="x" * 5_000_000)), "over the limit"),
    ("5 MB string field", dumps(valid(media_url="https://x/" + "a" * 5_000_000)), "over the limit"),
    ("250 KB event_id", dumps(valid(event_id="e" * 250_000)), "event_id: .* is too long"),
    ("100k nested arrays", b"[" * 100_000 + b"]" * 100_000, "nested more than|over the limit"),
    (
        "100k nested arrays in an extra field",
        with_raw("[" * 100_000 + "]" * 100_000),
        "nested more than|limit",
    ),
    ("40k nested objects", b'{"a":' * 40_000 + b"1" + b"}" * 40_000, "nested more than"),
    (f"{MAX_NESTING + 1} levels", with_raw("[" * MAX_NESTING + "]" * MAX_NESTING), "nested more than"),
    ("unclosed nesting", b"[" * 200_000, "nested more than|not valid JSON"),
    ("5000-digit number", with_raw("9" * 5000), "more than .* digits"),
    # numbers that are not JSON
    ("NaN", with_raw("NaN"), "NaN is not a JSON number"),
    ("Infinity", with_raw("Infinity"), "Infinity is not a JSON number"),
    ("-Infinity", with_raw("-Infinity"), "Infinity is not a JSON number"),
    ("float overflow", with_raw("1e999"), "out of range"),
    ("NaN schema_version", dumps(valid(schema_version=float("nan"))), "NaN"),
    # keys
    ("duplicate event_id", (_HEADER + ', "event_id": "other"}').encode(), "duplicate key 'event_id'"),
    ("duplicate nested key", with_raw('{"k": 1, "k": 2}'), "duplicate key 'k'"),
    # versions
    ("schema_version 2", dumps(valid(schema_version=2)), "schema_version"),
    ("schema_version 0", dumps(valid(schema_version=0)), "schema_version"),
    ("schema_version string", dumps(valid(schema_version="1")), "schema_version"),
    ("schema_version true", dumps(valid(schema_version=True)), "schema_version"),
    ("schema_version 1.5", dumps(valid(schema_version=1.5)), "schema_version"),
    ("schema_version huge", dumps(valid(schema_version=10**100)), "schema_version"),
    # created_at
    ("created_at without offset", dumps(valid(created_at="2026-01-02T03:04:05")), "created_at"),
    ("created_at date only", dumps(valid(created_at="2026-01-02")), "created_at"),
    ("created_at ISO week", dumps(valid(created_at="2026-W01-1T00:00:00Z")), "created_at"),
    ("created_at Feb 30", dumps(valid(created_at="2026-02-30T00:00:00Z")), "created_at"),
    ("created_at hour 24", dumps(valid(created_at="2026-01-01T24:00:00Z")), "created_at"),
    ("created_at year 0", dumps(valid(created_at="0000-01-01T00:00:00Z")), "created_at"),
    ("created_at NUL", dumps(valid(created_at="2026-01-01T00:00:00Z\x00")), "created_at"),
    ("created_at Arabic digits", dumps(valid(created_at="٢٠٢٦-01-01T00:00:00Z")), "created_at"),
    ("created_at 64+ chars", dumps(valid(created_at="2026-01-01T00:00:00." + "1" * 60 + "Z")), "created_at"),
]

# A wrong type for every field (and a missing one).
for _field in FIELDS:
    for _label, _value in (("number", 5), ("null", None), ("array", ["x"]), ("object", {"a": "x"})):
        HOSTILE.append((f"{_field} is {_label}", dumps(valid(**{_field: _value})), _field))
    HOSTILE.append((f"{_field} missing", dumps({k: v for k, v in valid().items() if k != _field}), _field))
    if _field != "created_at":
        HOSTILE.append((f"{_field} empty", dumps(valid(**{_field: ""})), _field))


@pytest.mark.parametrize(("raw", "message"), [(r, m) for _, r, m in HOSTILE], ids=[n for n, _, _ in HOSTILE])
def test_hostile_events_are_refused_quickly_with_a_reason(raw: Any, message: str) -> None:
    error = refused(raw)
    assert re.search(message, str(error)), str(error)
    assert len(str(error)) < 600  # dead letters carry the message: never the whole payload


def test_the_biggest_event_allowed_parses_quickly() -> None:
    raw = dumps(valid(blob="x" * (MAX_EVENT_BYTES - 400)))
    assert len(raw) <= MAX_EVENT_BYTES
    started = time.perf_counter()
    assert parse_upload_event(raw).raw["blob"].startswith("x")
    assert time.perf_counter() - started < TIME_LIMIT_S


def test_extra_fields_are_kept_and_nesting_up_to_the_limit_is_fine() -> None:
    deep: Any = "bottom"
    for _ in range(MAX_NESTING - 1):
        deep = [deep]
    event = parse_upload_event(dumps(valid(deep=deep, album={"id": 7, "tags": ["a", None, 1.5, True]})))
    assert event.raw["album"]["tags"] == ["a", None, 1.5, True]
    assert event.raw["deep"] == deep


def test_a_deep_event_is_refused_even_from_deep_in_the_stack() -> None:
    """The C JSON decoder recurses: near the recursion limit, even modest nesting
    raises RecursionError, which must still come out as InvalidEvent."""
    raw = with_raw("[" * 900 + "]" * 900)

    def nest(levels: int) -> InvalidEvent:
        if levels:
            return nest(levels - 1)
        return refused(raw)

    error = nest(sys.getrecursionlimit() - 150)
    assert "nested" in str(error)


@pytest.mark.parametrize("value", [bytearray, memoryview])
def test_bytes_like_values_parse(value: Any) -> None:
    assert parse_upload_event(value(dumps(valid()))).event_id == "e1"


@pytest.mark.parametrize(
    ("created_at", "expected"),
    [
        ("2026-11-23T10:15:00Z", datetime(2026, 11, 23, 10, 15, tzinfo=UTC)),
        ("2026-11-23t10:15:00z", datetime(2026, 11, 23, 10, 15, tzinfo=UTC)),
        ("2026-11-23 10:15:00+02:00", datetime(2026, 11, 23, 8, 15, tzinfo=UTC)),
        ("2026-11-23T10:15:00.123456789-05:30", datetime(2026, 11, 23, 15, 45, 0, 123456, tzinfo=UTC)),
    ],
)
def test_rfc3339_variants_parse(created_at: str, expected: datetime) -> None:
    assert parse_upload_event(dumps(valid(created_at=created_at))).created_at == expected


# -- properties -----------------------------------------------------------------------------


def parse_or_refuse(raw: bytes) -> Any:
    """The contract: an event, or InvalidEvent with a message, quickly; nothing else."""
    started = time.perf_counter()
    try:
        result: Any = parse_upload_event(raw)
    except InvalidEvent as exc:
        assert str(exc)
        result = exc
    assert time.perf_counter() - started < TIME_LIMIT_S
    return result


def _mutated(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for at, value in edits:
        if out:
            out[at % len(out)] = value
    return bytes(out)


any_bytes = st.one_of(
    st.binary(max_size=2048),
    st.builds(  # a valid event with a few bytes overwritten: reaches the deeper checks
        _mutated,
        st.just(dumps(valid(album={"a": [1, 2.5, None]}))),
        st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
    ),
    st.builds(lambda n, s: s[: n % (len(s) + 1)], st.integers(0, 400), st.just(dumps(valid()))),
)


@settings(PROPERTY, max_examples=1000)
@given(any_bytes)
def test_any_bytes_give_an_event_or_invalid_event(raw: bytes) -> None:
    parse_or_refuse(raw)


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**4000), max_value=10**4000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(st.characters(codec=None, exclude_categories=())),  # lone surrogates included
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=40,
)


def _event_with(field: str, value: Any, drop: bool) -> dict[str, Any]:
    event = valid()
    if drop:
        event.pop(field, None)
    else:
        event[field] = value
    return event


json_documents = st.one_of(
    json_values,
    st.builds(_event_with, st.sampled_from([*FIELDS, "schema_version", "extra"]), json_values, st.booleans()),
)


def _encode(value: Any, ensure_ascii: bool) -> bytes:
    text = json.dumps(value, allow_nan=True, ensure_ascii=ensure_ascii)
    return text.encode("utf-8", "surrogatepass")  # lone surrogates become invalid UTF-8


@PROPERTY
@given(json_documents, st.booleans())
def test_any_json_value_gives_an_event_or_invalid_event(value: Any, ensure_ascii: bool) -> None:
    try:
        raw = _encode(value, ensure_ascii)
    except ValueError:
        return
    result = parse_or_refuse(raw)
    if not isinstance(result, InvalidEvent):
        assert isinstance(value, dict)
        assert {k: result.raw[k] for k in FIELDS} == {k: value[k] for k in FIELDS}


# Valid events, from the schema's own constraints: every required string within its
# minLength..maxLength (without NUL or lone surrogates, which the parser refuses on
# purpose), created_at an RFC 3339 time, schema_version from its enum or absent.
SCHEMA = json.loads(SCHEMA_PATH.read_text())


def _id(name: str) -> st.SearchStrategy[str]:
    spec = SCHEMA["properties"][name]
    assert spec["type"] == "string"
    return st.text(
        st.characters(codec="utf-8", exclude_characters="\x00"),
        min_size=spec["minLength"],
        max_size=spec["maxLength"],
    )


offsets = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
times = st.builds(
    lambda dt, tz: dt.replace(tzinfo=tz),
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    offsets,
)
clean_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(codec="utf-8")),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
extras = st.dictionaries(
    st.text(string.ascii_lowercase, min_size=1, max_size=10).filter(lambda k: k not in FIELDS),
    clean_json,
    max_size=3,
)


@PROPERTY
@given(
    *(_id(name) for name in FIELDS[:5]),
    times,
    st.sampled_from([None, *SCHEMA["properties"]["schema_version"]["enum"]]),
    extras,
    st.data(),
)
def test_valid_events_round_trip(
    event_id: str,
    content_id: str,
    uploader_id: str,
    media_url: str,
    media_type: str,
    created: datetime,
    version: int | None,
    extra: dict[str, Any],
    data: st.DataObject,
) -> None:
    separator = data.draw(st.sampled_from(["T", "t", " "]))
    timespec = data.draw(st.sampled_from(["seconds", "microseconds"]))
    stamp = created.isoformat(sep=separator, timespec=timespec)
    if timespec == "seconds":
        created = created.replace(microsecond=0)
    if stamp.endswith("+00:00") and data.draw(st.booleans()):
        stamp = stamp[:-6] + "Z"
    body = {
        **extra,
        "event_id": event_id,
        "content_id": content_id,
        "uploader_id": uploader_id,
        "media_url": media_url,
        "media_type": media_type,
        "created_at": stamp,
    }
    if version is not None:
        body["schema_version"] = version
    raw = json.dumps(body, ensure_ascii=data.draw(st.booleans())).encode()
    if len(raw) > MAX_EVENT_BYTES:
        return
    event = parse_upload_event(raw)
    assert (event.event_id, event.content_id, event.uploader_id) == (event_id, content_id, uploader_id)
    assert (event.media_url, event.media_type) == (media_url, media_type)
    assert event.created_at == created and event.created_at.utcoffset() == created.utcoffset()
    assert event.raw == body
