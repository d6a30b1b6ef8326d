"""Parse and validate upload events against upload_event.schema.json.

Events come from another system and are parsed as hostile input: the value must
be UTF-8 JSON (no byte order mark, no NUL bytes), a JSON object at most
``MAX_EVENT_BYTES`` long and ``MAX_NESTING`` levels deep, without duplicate
keys, non-finite numbers (``NaN``, ``Infinity``, ``1e999``) or lone UTF-16
surrogates anywhere (the event is stored and republished as JSON, which would
fail later, after the media was fetched). ``created_at`` must be an RFC 3339
time with a UTC offset. Every refusal is an ``InvalidEvent`` naming the problem.
"""

from __future__ import annotations

import json
import math
import re
import sys
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from moderation.domain import UploadEvent
from moderation.errors import InvalidEvent

SCHEMA_PATH = Path(__file__).with_name("upload_event.schema.json")
MAX_EVENT_BYTES = 256 * 1024
MAX_NESTING = 64  # levels of objects/arrays, extra fields included
_UTF8_BOM = b"\xef\xbb\xbf"
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})",
    re.ASCII,
)


@lru_cache(maxsize=1)
def _validator() -> Draft202012Validator:
    return Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))


def parse_upload_event(raw: bytes | bytearray | memoryview | None) -> UploadEvent:
    """Bytes from Kafka -> UploadEvent, or InvalidEvent saying exactly what is wrong."""
    if raw is None:
        raise InvalidEvent("message has no value (tombstone)")
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise InvalidEvent(f"message value must be bytes, got {type(raw).__name__}")
    size = memoryview(raw).nbytes
    if size > MAX_EVENT_BYTES:
        raise InvalidEvent(f"event is {size} bytes, over the limit of {MAX_EVENT_BYTES}")
    data = _load_json(bytes(raw))
    if not isinstance(data, dict):
        raise InvalidEvent(f"event must be a JSON object, got {_json_type(data)}")
    errors = sorted(_validator().iter_errors(data), key=lambda e: [str(p) for p in e.path])
    if errors:
        first = errors[0]
        where = ".".join(str(p) for p in first.path) or "(root)"
        message = (
            first.message if len(first.message) <= 300 else f"{first.message[:150]}...{first.message[-150:]}"
        )
        raise InvalidEvent(f"schema violation at {where}: {message}")
    for name in ("event_id", "content_id", "uploader_id", "media_url", "media_type"):
        if "\x00" in data[name]:
            raise InvalidEvent(f"{name} contains a NUL character")
    return UploadEvent(
        event_id=data["event_id"],
        content_id=data["content_id"],
        uploader_id=data["uploader_id"],
        media_url=data["media_url"],
        media_type=data["media_type"],
        created_at=_created_at(data["created_at"]),
        raw=data,
    )


def _load_json(raw: bytes) -> Any:
    if not raw.strip():
        raise InvalidEvent("not valid JSON: the event is empty")
    if raw.startswith(_UTF8_BOM):
        raise InvalidEvent(
            "not valid JSON: starts with a UTF-8 byte order mark (events are UTF-8 without one)"
        )
    if b"\x00" in raw:
        raise InvalidEvent("not valid JSON: contains NUL bytes (UTF-16 or UTF-32 text? events are UTF-8)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent(f"not valid JSON: not UTF-8 (byte {exc.start}: {exc.reason})") from None
    try:
        data = json.loads(
            text, object_pairs_hook=_object, parse_constant=_constant, parse_float=_finite_float
        )
    except RecursionError:
        raise InvalidEvent(f"not valid JSON: nested more than {MAX_NESTING} levels deep") from None
    except InvalidEvent:
        raise
    except ValueError as exc:  # JSONDecodeError, and integers over sys.get_int_max_str_digits()
        if "integer string conversion" in str(exc):
            raise InvalidEvent(
                f"not valid JSON: a number has more than {sys.get_int_max_str_digits()} digits"
            ) from None
        raise InvalidEvent(f"not valid JSON: {str(exc)[:200]}") from None
    _check_tree(data)
    return data


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):  # parsers disagree on which value wins: refuse
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise InvalidEvent(f"not valid JSON: duplicate key {_quote(key)}")
            seen.add(key)
    return obj


def _constant(name: str) -> Any:
    raise InvalidEvent(f"not valid JSON: {name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InvalidEvent(f"not valid JSON: number {text[:40]} is out of range")
    return value


def _check_tree(data: Any) -> None:
    """Depth at most MAX_NESTING; every key and string encodable as UTF-8.
    Iterative, so that it costs no stack whatever the input."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            _check_unicode(value)
        elif isinstance(value, dict | list):
            if depth > MAX_NESTING:
                raise InvalidEvent(f"not valid JSON: nested more than {MAX_NESTING} levels deep")
            if isinstance(value, dict):
                for key, item in value.items():
                    _check_unicode(key)
                    stack.append((item, depth + 1))
            else:
                stack.extend((item, depth + 1) for item in value)


def _check_unicode(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidEvent(
            f"not valid JSON: {_quote(text)} contains a lone UTF-16 surrogate (at character {exc.start})"
        ) from None


def _created_at(value: str) -> datetime:
    if _RFC3339.fullmatch(value):
        try:
            # fromisoformat takes at most 6 fractional digits and an upper-case T.
            text = re.sub(r"(\.\d{6})\d+", r"\1", value[:10] + "T" + value[11:])
            return datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
        except ValueError:
            pass
    raise InvalidEvent(f"created_at is not an RFC 3339 time with an offset: {_quote(value)}")


def _quote(text: str) -> str:
    return ascii(text[:64]) + ("..." if len(text) > 64 else "")


def _json_type(value: Any) -> str:
    names = {str: "string", int: "number", float: "number", bool: "boolean", list: "array"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def make_upload_event(
    event_id: str, content_id: str, uploader_id: str, media_url: str, media_type: str, **extra: Any
) -> dict[str, Any]:
    """A valid event dict (used by ``moderation publish`` and tests)."""
    from moderation.storage.models import utcnow

    return {
        "schema_version": 1,
        "event_id": event_id,
        "content_id": content_id,
        "uploader_id": uploader_id,
        "media_url": media_url,
        "media_type": media_type,
        "created_at": utcnow().isoformat(),
        **extra,
    }
