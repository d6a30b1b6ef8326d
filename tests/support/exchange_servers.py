"""Loopback fakes of the StopNCII and NCMEC hash APIs, as python-threatexchange's
clients call them, and an in-memory ExchangeStore / FeedbackOutbox.

Each server listens on 127.0.0.1 (port 0), records every request (method,
path, query, headers, body) in ``requests``, and can fail on demand:
``fail_next(status, times)`` answers the next requests with that status.
"""

from __future__ import annotations

import base64
import copy
import json
import threading
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from moderation.domain import EntrySpec
from moderation.errors import TransientError
from moderation.exchanges.sync import Feedback

_Response = tuple[int, dict[str, str], bytes]


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # without the query
    query: dict[str, str]  # last value of each parameter
    headers: dict[str, str]  # keys lowercased
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1; subclasses implement ``handle``."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self._failures: list[tuple[int, str]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                url = urllib.parse.urlsplit(self.path)
                query = {
                    k: v[-1] for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items()
                }
                request = RecordedRequest(
                    self.command, url.path, query, {k.lower(): v for k, v in self.headers.items()}, body
                )
                with outer.lock:
                    outer.requests.append(request)
                    failure = outer._failures.pop(0) if outer._failures else None
                    if failure is not None:
                        status, headers, payload = (
                            failure[0],
                            {"Content-Type": "text/plain"},
                            failure[1].encode(),
                        )
                    else:
                        status, headers, payload = outer.handle(request)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = _serve
            do_POST = _serve
            do_PUT = _serve

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    @property
    def root(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> LoopbackServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fail_next(self, status: int, times: int = 1, body: str = "injected failure") -> None:
        with self.lock:
            self._failures.extend([(status, body)] * times)

    def handle(self, request: RecordedRequest) -> _Response:
        raise NotImplementedError


def _json(status: int, payload: Any) -> _Response:
    return status, {"Content-Type": "application/json"}, json.dumps(payload).encode()


# -- StopNCII -----------------------------------------------------------------------------------------
class StopNCIIServer(LoopbackServer):
    """``GET /v1/FetchHashes`` and ``POST /v1/SubmitFeedback``.

    Records live in ``records`` (hash value -> record dict in the API's shape).
    A fetch returns the records with ``startTimestamp <= lastModtimestamp < now``
    sorted by time, ``pageSize`` per page, and ``nextSetTimestamp = now``; page
    tokens are opaque and bound to their startTimestamp (HTTP 400 otherwise).
    Feedback bodies land in ``feedback``."""

    def __init__(
        self, subscription_key: str = "sub-key", fetch_key: str = "fetch-key", feedback_key: str = "fb-key"
    ):
        super().__init__()
        self.keys = {"FetchHashes": fetch_key, "SubmitFeedback": feedback_key}
        self.subscription_key = subscription_key
        self.records: dict[str, dict[str, Any]] = {}
        self.now = 1_700_000_000
        self.feedback: list[dict[str, Any]] = []
        self.refuse_feedback_for: set[str] = set()
        self.feedback_response = b"{}"

    @property
    def url(self) -> str:
        return self.root + "/v1"

    def add(
        self,
        hash_value: str,
        *,
        signal_type: str = "ImagePDQ",
        status: str = "Active",
        cases: dict[str, str] | None = None,
        ts: int | None = None,
        feedbacks: list[dict[str, Any]] | None = None,
    ) -> None:
        self.records[hash_value] = {
            "lastModtimestamp": self.now - 1 if ts is None else ts,
            "signalType": signal_type,
            "hashValue": hash_value,
            "hashStatus": status,
            "caseNumbers": cases if cases is not None else {f"case-{hash_value[:6]}": status},
            "CSPFeedbacks": feedbacks or [],
        }

    def add_raw(self, key: str, record: dict[str, Any]) -> None:
        self.records[key] = record

    def set_status(self, hash_value: str, status: str, *, cases: str | None = None) -> None:
        record = self.records[hash_value]
        record["hashStatus"] = status
        if cases is not None:
            record["caseNumbers"] = {case: cases for case in record["caseNumbers"]}
        record["lastModtimestamp"] = self.now - 1

    def handle(self, request: RecordedRequest) -> _Response:
        endpoint = request.path.removeprefix("/v1/")
        if endpoint not in self.keys:
            return _json(404, {"error": "no such endpoint"})
        if (
            request.headers.get("ocp-apim-subscription-key") != self.subscription_key
            or request.headers.get("x-functions-key") != self.keys[endpoint]
        ):
            return _json(
                401, {"statusCode": 401, "message": "Access denied due to invalid subscription key."}
            )
        if endpoint == "FetchHashes" and request.method == "GET":
            return self._fetch(request.query)
        if endpoint == "SubmitFeedback" and request.method == "POST":
            body = request.json()
            if any(f["hashValue"] in self.refuse_feedback_for for f in body["hashFeedbacks"]):
                return _json(400, {"message": "unknown hash"})
            self.feedback.append(body)
            return 200, {"Content-Type": "application/json"}, self.feedback_response
        return _json(405, {"error": "method not allowed"})

    def _fetch(self, query: dict[str, str]) -> _Response:
        start, size = int(query["startTimestamp"]), int(query["pageSize"])
        until, offset = self.now, 0
        if "nextPageToken" in query:
            try:
                token = json.loads(base64.urlsafe_b64decode(query["nextPageToken"]))
            except ValueError:
                token = {}
            if token.get("start") != start:
                return _json(400, {"message": "invalid continuation token"})
            until, offset = token["until"], token["offset"]
        matching = sorted(
            (r for r in self.records.values() if start <= r.get("lastModtimestamp", 0) < until),
            key=lambda r: (r.get("lastModtimestamp", 0), str(r.get("hashValue"))),
        )
        page = matching[offset : offset + size]
        more = offset + size < len(matching)
        token_text = None
        if more:
            raw = json.dumps({"start": start, "until": until, "offset": offset + size}).encode()
            token_text = base64.urlsafe_b64encode(raw).decode()
        return _json(
            200,
            {
                "count": len(page),
                "nextPageToken": token_text,
                "nextSetTimestamp": until,
                "hasMoreRecords": more,
                "hashRecords": page,
            },
        )


# -- NCMEC --------------------------------------------------------------------------------------------
_NS = "https://hashsharing.ncmec.org/hashsharing/v2"


def _parse_time(text: str) -> int:
    text = text.replace(".000Z", "Z")
    return int(datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp())


def _format_time(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class NCMECServer(LoopbackServer):
    """``GET /hashsharing/v2/entries`` with HTTP basic auth.

    ``entries`` maps (member id, entry id) to the entry's current state; a
    query returns those with ``from <= timestamp < to`` in insertion order,
    ``page_size`` per page, with a ``<paging><next>`` path while more remain.
    ``raw_entries`` adds verbatim XML (to test malformed records)."""

    def __init__(self, username: str = "esp-user", password: str = "esp-pass", page_size: int = 2):
        super().__init__()
        self.username, self.password = username, password
        self.page_size = page_size
        self.entries: dict[tuple[int, str], dict[str, Any]] = {}
        self.raw_entries: list[tuple[str, int, str]] = []  # (images|videos, timestamp, xml)

    @property
    def url(self) -> str:
        return self.root + "/hashsharing"

    def add(
        self,
        entry_id: str,
        ts: int,
        *,
        member_id: int = 42,
        kind: str = "image",
        fingerprints: dict[str, str] | None = None,
        classification: str = "A1",
    ) -> None:
        self.entries.pop((member_id, entry_id), None)  # an update moves it to the end
        self.entries[member_id, entry_id] = {
            "id": entry_id,
            "member_id": member_id,
            "kind": kind,
            "deleted": False,
            "ts": ts,
            "fingerprints": fingerprints or {},
            "classification": classification,
        }

    def delete(self, entry_id: str, ts: int, *, member_id: int = 42) -> None:
        entry = self.entries.pop((member_id, entry_id))
        self.entries[member_id, entry_id] = {**entry, "deleted": True, "ts": ts, "fingerprints": {}}

    def handle(self, request: RecordedRequest) -> _Response:
        expected = "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        if request.headers.get("authorization") != expected:
            return (
                401,
                {"Content-Type": "text/html", "WWW-Authenticate": 'Basic realm="hashsharing"'},
                b"denied",
            )
        if request.path != "/hashsharing/v2/entries" or request.method != "GET":
            return 404, {"Content-Type": "text/plain"}, b"not found"
        start_ts, end_ts = _parse_time(request.query["from"]), _parse_time(request.query["to"])
        first = int(request.query.get("start", "1"))
        size = int(request.query.get("size", str(self.page_size)))
        rows: list[tuple[str, int, ET.Element]] = [
            (e["kind"] + "s", e["ts"], self._entry_xml(e)) for e in self.entries.values()
        ]
        rows += [(group, ts, ET.fromstring(text)) for group, ts, text in self.raw_entries]
        rows = [r for r in rows if start_ts <= r[1] < end_ts]
        page = rows[first - 1 : first - 1 + size]
        root = ET.Element("queryResult", xmlns=_NS)
        for group in ("images", "videos"):
            members = [(ts, el) for g, ts, el in page if g == group]
            if members:
                holder = ET.SubElement(
                    root,
                    group,
                    count=str(len(members)),
                    maxTimestamp=_format_time(max(ts for ts, _ in members)),
                )
                holder.extend(el for _, el in members)
        if first - 1 + size < len(rows):
            params = {
                "from": request.query["from"],
                "to": request.query["to"],
                "start": first + size,
                "size": size,
                "max": len(rows),
            }
            ET.SubElement(ET.SubElement(root, "paging"), "next").text = (
                "/v2/entries?" + urllib.parse.urlencode(params)
            )
        body = b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n' + ET.tostring(root)
        return 200, {"Content-Type": "application/xml"}, body

    @staticmethod
    def _entry_xml(entry: dict[str, Any]) -> ET.Element:
        tag = ("deleted" + entry["kind"].capitalize()) if entry["deleted"] else entry["kind"]
        el = ET.Element(tag)
        ET.SubElement(el, "member", id=str(entry["member_id"])).text = f"Member {entry['member_id']}"
        ET.SubElement(el, "timestamp").text = _format_time(entry["ts"])
        ET.SubElement(el, "id").text = entry["id"]
        if not entry["deleted"]:
            ET.SubElement(el, "classification").text = entry["classification"]
            prints = ET.SubElement(el, "fingerprints")
            for kind, value in entry["fingerprints"].items():
                ET.SubElement(prints, kind).text = value
        return el


# -- in-memory store ----------------------------------------------------------------------------------
@dataclass
class StoredEntry:
    source_ref: str
    case_id: str
    note: str
    added_by: str
    status: str = "active"


@dataclass
class _FeedbackRow:
    exchange: str
    feedback: Feedback
    state: str = "pending"  # pending | sent | rejected
    reason: str = ""


@dataclass
class InMemoryExchangeStore:
    """The reference ExchangeStore + FeedbackOutbox (moderation/exchanges/sync.py).
    ``apply_batch`` works on a copy and swaps it in at the end: all or nothing.
    ``fail_apply`` makes the next apply_batch raise TransientError."""

    entries: dict[tuple[str, str, str], StoredEntry] = field(default_factory=dict)  # (bank, signal, value)
    checkpoints: dict[str, str] = field(default_factory=dict)
    feedback_rows: list[_FeedbackRow] = field(default_factory=list)
    fail_apply: bool = False

    def get_checkpoint(self, exchange: str) -> str | None:
        return self.checkpoints.get(exchange)

    def apply_batch(
        self,
        exchange: str,
        bank: str,
        upserts: Sequence[EntrySpec],
        withdrawn: Sequence[str],
        checkpoint: str,
    ) -> tuple[int, int, int]:
        if self.fail_apply:
            self.fail_apply = False
            raise TransientError("database unavailable (injected)")
        assert not {u.source_ref for u in upserts} & set(withdrawn), "a batch names a ref twice"
        entries = copy.deepcopy(self.entries)
        added = updated = gone = 0
        for spec in upserts:
            key = (bank, spec.signal, spec.value)
            row = entries.get(key)
            if row is None:
                entries[key] = StoredEntry(spec.source_ref, spec.case_id, spec.note, spec.added_by)
                added += 1
                continue
            before = copy.copy(row)
            row.source_ref, row.case_id, row.note = spec.source_ref, spec.case_id, spec.note
            if row.status == "withdrawn":
                row.status = "active"
            updated += row != before
        refs = set(withdrawn)
        for (entry_bank, _, _), row in entries.items():
            if entry_bank == bank and row.source_ref in refs and row.status != "withdrawn":
                row.status = "withdrawn"
                gone += 1
        self.entries = entries
        self.checkpoints[exchange] = checkpoint
        return added, updated, gone

    # test helpers, outside the protocols (a SQL store's test harness offers the same)
    def fail_next_apply(self) -> None:
        self.fail_apply = True

    def bank(self, bank: str) -> dict[tuple[str, str], StoredEntry]:
        return {(s, v): row for (b, s, v), row in self.entries.items() if b == bank}

    def set_status(self, bank: str, signal: str, value: str, status: str) -> None:
        self.entries[bank, signal, value].status = status

    def add_feedback(self, exchange: str, source_ref: str, blocked: bool) -> int:
        row_id = len(self.feedback_rows) + 1
        self.feedback_rows.append(_FeedbackRow(exchange, Feedback(row_id, source_ref, blocked)))
        return row_id

    def feedback_state(self, row_id: int) -> tuple[str, str]:
        row = self.feedback_rows[row_id - 1]
        return row.state, row.reason

    # FeedbackOutbox
    def pending_feedback(self, exchange: str, limit: int) -> list[Feedback]:
        rows = [r.feedback for r in self.feedback_rows if r.exchange == exchange and r.state == "pending"]
        return rows[:limit]

    def mark_feedback_sent(self, ids: Sequence[int]) -> None:
        for row_id in ids:
            self.feedback_rows[row_id - 1].state = "sent"

    def mark_feedback_rejected(self, ids: Sequence[int], reason: str) -> None:
        for row_id in ids:
            row = self.feedback_rows[row_id - 1]
            row.state, row.reason = "rejected", reason
