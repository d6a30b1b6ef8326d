"""StopNCII.org hash list sync and feedback, through python-threatexchange's
client (threatexchange/exchanges/clients/stopncii/api.py, ``StopNCIIAPI``).

The API (as that client calls it), under ``base_url`` (default
https://api.stopncii.org/v1), every request carrying the headers
``Ocp-Apim-Subscription-Key: <subscription key>`` and
``x-functions-key: <the endpoint's function key>``:

- ``GET FetchHashes?startTimestamp=<unix s>&pageSize=<n>[&nextPageToken=<t>]``
  -> ``{count, nextPageToken, nextSetTimestamp, hasMoreRecords, hashRecords}``.
  Each record is the current snapshot of one hash: ``signalType`` (ImagePDQ,
  VideoMD5, ...), ``hashValue``, ``hashStatus`` (Received, Active, Withdrawn,
  Deleted), ``caseNumbers`` {case id: status}, ``CSPFeedbacks``. ``count`` is
  the number of records in the page; the client drops (and logs) records it
  can't parse, so ``count - len(hashRecords)`` of them were malformed.
- ``POST SubmitFeedback`` with ``{"count": 1, "hashFeedbacks": [{"hashValue",
  "feedbackValue": "Blocked" | "NotBlocked", "tags": [...]}]}``.

Mapping: ImagePDQ -> ``pdq``, VideoMD5 -> ``md5``; other signal types are
ignored. ``source_ref`` is ``<signalType>:<hashValue>`` (the hash is StopNCII's
only id for it, and feedback needs both). A record whose ``hashStatus`` is
Withdrawn or Deleted, or whose cases are all Withdrawn/Deleted, is a withdrawal:
StopNCII requires partners to stop using those hashes. ``case_id`` holds the
record's live case numbers (comma-separated, as many as fit).

Checkpoint (JSON): ``{"v": 1, "start": <startTimestamp>}`` once caught up,
where ``start`` is the last page's ``nextSetTimestamp``; mid-paging it also holds
``"token"`` (the next page token) and ``"token_at"`` (when it was issued).
Page tokens are short-lived: one older than ``page_token_max_age_s``, or one
that StopNCII refuses with HTTP 400, is dropped and the fetch restarts from
``start``. Records are snapshots, so fetching some twice is harmless.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any

import dacite
import requests
from requests.adapters import HTTPAdapter
from threatexchange.exchanges.clients.stopncii.api import (
    FetchHashesResponse,
    StopNCIIAPI,
    StopNCIICaseStatus,
    StopNCIICSPFeedbackValue,
    StopNCIIEndpoint,
    StopNCIIHashRecord,
    StopNCIISignalType,
)

from moderation.domain import EntrySpec
from moderation.errors import ConfigError, TransientError
from moderation.exchanges.client import (
    Batch,
    ExchangeRejected,
    http_adapter,
    readable_checkpoint,
    translate_http_errors,
)
from moderation.exchanges.entries import join_within
from moderation.hashing.signals import FIELD_LIMITS, make_entry

log = logging.getLogger(__name__)

ENV_URL = "STOPNCII_API_URL"
ENV_SUBSCRIPTION_KEY = "STOPNCII_SUBSCRIPTION_KEY"
ENV_FETCH_KEY = "STOPNCII_FETCH_FUNCTION_KEY"
ENV_FEEDBACK_KEY = "STOPNCII_FEEDBACK_FUNCTION_KEY"

_SIGNALS = {StopNCIISignalType.ImagePDQ: "pdq", StopNCIISignalType.VideoMD5: "md5"}
_GONE = (StopNCIICaseStatus.Withdrawn, StopNCIICaseStatus.Deleted)


class StopNCIIExchange:
    """Incremental StopNCII sync (``fetch_updates``) and feedback
    (``send_feedback``); see the module docstring for the API and checkpoint.

    Keys come from the environment variables named in ``ENV_*`` (read by
    moderation.config, never here). Missing fetch credentials raise
    ``ConfigError`` at construction; a missing feedback key raises it on the
    first ``send_feedback``."""

    name = "stopncii"

    def __init__(
        self,
        *,
        subscription_key: str,
        fetch_function_key: str,
        feedback_function_key: str = "",
        base_url: str = StopNCIIAPI.BASE_URL,
        page_size: int = 800,
        start_timestamp: int = StopNCIIAPI.DEFAULT_START_TIME,
        page_token_max_age_s: float = 3600,
        timeout_s: float = 60,
        retries: int = 4,
        backoff_s: float = 0.2,
        clock: Callable[[], float] = time.time,
    ) -> None:
        missing = [
            n
            for n, v in ((ENV_SUBSCRIPTION_KEY, subscription_key), (ENV_FETCH_KEY, fetch_function_key))
            if not v
        ]
        if missing:
            raise ConfigError(f"StopNCII sync needs {' and '.join(missing)}")
        keys = {StopNCIIEndpoint.SubmitFeedback: feedback_function_key} if feedback_function_key else {}
        self._api = _Client(
            subscription_key,
            fetch_function_key,
            keys,
            base_url.rstrip("/"),
            lambda: http_adapter(timeout_s, retries, backoff_s),
        )
        self._has_feedback_key = bool(feedback_function_key)
        self._page_size = page_size
        self._start = start_timestamp
        self._token_max_age = page_token_max_age_s
        self._clock = clock

    def fetch_updates(self, checkpoint: str | None) -> Iterator[Batch]:
        """Pages of changes since ``checkpoint``, one batch per page, until
        StopNCII says there are no more records."""
        state = _Checkpoint.parse(checkpoint, self._start)
        token = state.token if state.token and self._clock() - state.token_at <= self._token_max_age else ""
        if state.token and not token:
            log.info("StopNCII page token from the checkpoint has expired; restarting from %d", state.start)
        resuming = bool(token)
        while True:
            try:
                page = self._fetch_page(state.start, token, resuming)
            except _TokenRefused:
                log.warning("StopNCII refused the stored page token; restarting from %d", state.start)
                token, resuming = "", False
                continue
            resuming = False
            upserts, withdrawn, skipped, ignored = _convert(page.hashRecords)
            if page.count <= self._page_size:  # a per-page count: the client dropped (and logged) the rest
                skipped += max(0, page.count - len(page.hashRecords))
            if page.hasMoreRecords:
                if not page.nextPageToken:
                    raise TransientError("StopNCII FetchHashes: hasMoreRecords without a nextPageToken")
                token = page.nextPageToken
                next_state = _Checkpoint(state.start, token, int(self._clock()))
            else:
                next_state = _Checkpoint(max(state.start, page.nextSetTimestamp))
            yield Batch(upserts, withdrawn, next_state.dump(), skipped, ignored)
            if not page.hasMoreRecords:
                return

    def send_feedback(self, source_ref: str, blocked: bool, *, tags: Collection[str] = ()) -> None:
        """Report a reviewed match: Blocked (it is NCII) or NotBlocked.
        ``source_ref`` is as this module makes it (``ImagePDQ:<hex>``)."""
        signal_type, value = parse_source_ref(source_ref)
        if not self._has_feedback_key:
            raise ConfigError(f"StopNCII feedback needs {ENV_FEEDBACK_KEY}")
        verdict = StopNCIICSPFeedbackValue.Blocked if blocked else StopNCIICSPFeedbackValue.NotBlocked
        with translate_http_errors(
            "StopNCII SubmitFeedback",
            credentials=f"{ENV_SUBSCRIPTION_KEY} and {ENV_FEEDBACK_KEY}",
            url_setting=ENV_URL,
            client_error=ExchangeRejected,
        ):
            try:
                self._api.submit_feedback(signal_type, value, verdict, set(tags))
            except requests.exceptions.JSONDecodeError:
                pass  # raise_for_status passed: delivered, with a body that isn't JSON

    def _fetch_page(self, start: int, token: str, resuming: bool) -> FetchHashesResponse:
        with translate_http_errors(
            "StopNCII FetchHashes",
            credentials=f"{ENV_SUBSCRIPTION_KEY} and {ENV_FETCH_KEY}",
            url_setting=ENV_URL,
        ):
            try:
                return self._api.fetch_hashes(
                    page_size=self._page_size, start_timestamp=start, next_page=token
                )
            except requests.HTTPError as exc:
                if resuming and exc.response is not None and exc.response.status_code == 400:
                    raise _TokenRefused from exc
                raise
            except (dacite.DaciteError, KeyError, TypeError, AttributeError) as exc:
                raise TransientError(f"StopNCII FetchHashes: malformed page ({exc})") from exc


def parse_source_ref(source_ref: str) -> tuple[StopNCIISignalType, str]:
    """(signal type, hash) of a StopNCII ``source_ref``; raises ExchangeRejected
    for one this module can't have made."""
    type_name, _, value = source_ref.partition(":")
    try:
        signal_type = StopNCIISignalType(type_name)
    except ValueError:
        raise ExchangeRejected(f"not a StopNCII source_ref: {source_ref[:80]!r}") from None
    if not value:
        raise ExchangeRejected(f"not a StopNCII source_ref: {source_ref[:80]!r}")
    return signal_type, value


class _TokenRefused(Exception):
    pass


class _Client(StopNCIIAPI):
    """StopNCIIAPI with our timeout and retry policy (its own retries 5xx
    for ~1.5 s with a 60 s timeout, and can't be configured)."""

    def __init__(
        self,
        subscription_key: str,
        fetch_function_key: str,
        function_keys: dict[StopNCIIEndpoint, str],
        base_url: str,
        new_adapter: Callable[[], HTTPAdapter],
    ) -> None:
        super().__init__(subscription_key, fetch_function_key, function_keys, base_url)
        self._new_adapter = new_adapter

    def _get_session(self, endpoint: StopNCIIEndpoint) -> requests.Session:
        session: requests.Session = super()._get_session(endpoint)
        session.mount(self._base_url, self._new_adapter())
        return session


@dataclass(frozen=True)
class _Checkpoint:
    start: int
    token: str = ""
    token_at: int = 0

    @classmethod
    def parse(cls, text: str | None, default_start: int) -> _Checkpoint:
        if text is None:
            return cls(default_start)
        with readable_checkpoint(text, "StopNCII"):
            raw = json.loads(text)
            return cls(int(raw["start"]), str(raw.get("token") or ""), int(raw.get("token_at") or 0))

    def dump(self) -> str:
        data: dict[str, Any] = {"v": 1, "start": self.start}
        if self.token:
            data.update(token=self.token, token_at=self.token_at)
        return json.dumps(data)


def _convert(records: list[StopNCIIHashRecord]) -> tuple[tuple[EntrySpec, ...], tuple[str, ...], int, int]:
    """(upserts, withdrawn refs, skipped, ignored) of one page. The last record
    for a hash wins: each is a full snapshot."""
    latest: dict[str, EntrySpec | None] = {}
    skipped = ignored = 0
    for record in records:
        value = record.hashValue.strip().lower()
        ref = f"{record.signalType.value}:{value}"
        if not value or len(ref) > FIELD_LIMITS["source_ref"]:
            log.warning("StopNCII record skipped: unusable hash value %r", record.hashValue[:80])
            skipped += 1
            continue
        if _is_withdrawn(record):
            latest[ref] = None
            continue
        signal = _SIGNALS.get(record.signalType)
        if signal is None:
            ignored += 1
            continue
        try:
            latest[ref] = make_entry(
                signal,
                value,
                source_ref=ref,
                case_id=join_within(_live_cases(record), FIELD_LIMITS["case_id"]),
                note=_note(record),
                added_by="stopncii",
            )
        except ValueError as exc:
            log.warning("StopNCII record %s skipped: %s", ref[:100], exc)
            skipped += 1
    upserts = tuple(spec for spec in latest.values() if spec is not None)
    withdrawn = tuple(ref for ref, spec in latest.items() if spec is None)
    return upserts, withdrawn, skipped, ignored


def _is_withdrawn(record: StopNCIIHashRecord) -> bool:
    if record.hashStatus in _GONE:
        return True
    cases = record.caseNumbers.values()
    return bool(cases) and all(status in _GONE for status in cases)


def _live_cases(record: StopNCIIHashRecord) -> list[str]:
    return sorted(case for case, status in record.caseNumbers.items() if status not in _GONE)


def _note(record: StopNCIIHashRecord) -> str:
    """Status, case count and other platforms' feedback (+blocked, -not blocked)."""
    votes = sorted(
        ("+" if f.feedbackValue is StopNCIICSPFeedbackValue.Blocked else "-") + (f.source or "?")
        for f in record.CSPFeedbacks
        if f.feedbackValue in (StopNCIICSPFeedbackValue.Blocked, StopNCIICSPFeedbackValue.NotBlocked)
    )
    note = f"StopNCII {record.hashStatus.value}, {len(_live_cases(record))} case(s)"
    return note + (f", feedback {' '.join(votes)}" if votes else "")
