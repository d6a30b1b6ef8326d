"""NCMEC hash sharing sync, through python-threatexchange's client
(threatexchange/exchanges/clients/ncmec/hash_api.py, ``NCMECHashAPI``).

The API (as that client calls it), under ``base_url`` (one of
``NCMECEnvironment``'s URLs, default https://report.cybertip.org/hashsharing),
with HTTP basic auth:

- ``GET v2/entries?from=<ISO 8601 UTC>&to=<ISO 8601 UTC>`` -> XML
  ``<queryResult>`` with ``<images maxTimestamp=..>`` and ``<videos ..>`` holding
  ``<image>``/``<video>`` entries (``<id>``, ``<member id=..>``,
  ``<classification>``, ``<fingerprints>`` with ``<md5>``, ``<pdq>``, ``<sha1>``,
  ``<pdna>`` ...) and ``<deletedImage>``/``<deletedVideo>`` tombstones, plus
  ``<paging><next>/v2/entries?from=..&to=..&start=..&size=..&max=..</next>``
  while more pages remain; the next page is ``GET <base_url><next>``.

Entries are not returned in time order, so a time window counts as done only
once every page of it has been read. Mapping: each entry's ``md5`` and ``pdq``
fingerprints become entries with ``source_ref`` ``<member id>-<entry id>`` (the
key threatexchange uses; several fingerprints share it) and ``case_id`` the entry
id; other fingerprints are ignored. A tombstone withdraws every entry with its
``source_ref``.

Checkpoint (JSON): ``{"v": 1, "from": <unix s>}`` once every window up to
``from`` is read; mid-window also ``"to"``, ``"next"`` (the paging path) and
``"next_at"``. NCMEC says paging URLs must not be kept long: one older than
``paging_max_age_s`` is dropped and the window is read again from its start.

python-threatexchange's own ``get_entries`` formats times as local time with a
"Z" suffix (hash_api._date_format), which skips entries on hosts not running in
UTC; this module sends real UTC times through the client's ``_get`` instead.
"""

from __future__ import annotations

import json
import logging
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from threatexchange.exchanges.clients.ncmec.hash_api import (
    NCMECEndpoint,
    NCMECEntryUpdate,
    NCMECEnvironment,
    NCMECHashAPI,
    _XMLWrapper,
)

from moderation.domain import EntrySpec
from moderation.errors import ConfigError, TransientError
from moderation.exchanges.client import Batch, http_adapter, readable_checkpoint, translate_http_errors
from moderation.hashing.signals import FIELD_LIMITS, make_entry

log = logging.getLogger(__name__)

ENV_URL = "NCMEC_API_URL"
ENV_USERNAME = "NCMEC_USERNAME"
ENV_PASSWORD = "NCMEC_PASSWORD"

_SIGNALS = {"md5": "md5", "pdq": "pdq"}
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


class NCMECExchange:
    """Incremental NCMEC sync (``fetch_updates``); see the module docstring.

    Reads time windows of at most ``window_s`` seconds from the checkpoint up to
    a few seconds before now. ``only_member_ids``, if given, keeps only entries
    those ESPs contributed (tombstones always pass). Missing credentials raise
    ``ConfigError`` at construction."""

    name = "ncmec"

    def __init__(
        self,
        *,
        username: str,
        password: str,
        base_url: str = NCMECEnvironment.Industry.value,
        start_timestamp: int = 0,
        window_s: int = 30 * 24 * 3600,
        only_member_ids: Collection[int] = (),
        paging_max_age_s: float = 12 * 3600,
        timeout_s: float = 60,
        retries: int = 4,
        backoff_s: float = 0.2,
        clock: Callable[[], float] = time.time,
    ) -> None:
        missing = [n for n, v in ((ENV_USERNAME, username), (ENV_PASSWORD, password)) if not v]
        if missing:
            raise ConfigError(f"NCMEC sync needs {' and '.join(missing)}")
        self._api = _Client(
            username, password, base_url.rstrip("/"), lambda: http_adapter(timeout_s, retries, backoff_s)
        )
        self._start = start_timestamp
        self._window = max(1, window_s)
        self._members = frozenset(only_member_ids)
        self._paging_max_age = paging_max_age_s
        self._clock = clock

    def fetch_updates(self, checkpoint: str | None) -> Iterator[Batch]:
        """One batch per page, window after window, until a few seconds before now."""
        state = _Checkpoint.parse(checkpoint, self._start)
        now = int(self._clock())
        until = now - 5  # entries land out of order: leave the last seconds for next time
        start, end, next_ = state.start, state.end, ""
        if state.next and now - state.next_at <= self._paging_max_age:
            next_ = state.next
        elif state.next:
            log.info(
                "NCMEC paging URL in the checkpoint has expired; rereading the window from %s", _utc(start)
            )
        while next_ or start < until:
            if not next_:
                end = min(until, start + self._window)
            updates, next_, skipped = self._page(start, end, next_)
            upserts, withdrawn, bad, ignored = _convert(updates, self._members)
            if next_:
                after = _Checkpoint(start, end, next_, now)
            else:
                start = end
                after = _Checkpoint(start)
            yield Batch(upserts, withdrawn, after.dump(), skipped + bad, ignored)

    def _page(self, start: int, end: int, next_: str) -> tuple[list[NCMECEntryUpdate], str, int]:
        with translate_http_errors(
            "NCMEC entries", credentials=f"{ENV_USERNAME} and {ENV_PASSWORD}", url_setting=ENV_URL
        ):
            try:
                if next_:
                    root = self._api._get(NCMECEndpoint.entries, next_=next_)
                else:
                    root = self._api._get(NCMECEndpoint.entries, **{"from": _utc(start), "to": _utc(end)})
            except ET.ParseError as exc:
                raise TransientError(f"NCMEC entries: the response was not XML ({exc})") from exc
        return _parse_page(root)


class _Client(NCMECHashAPI):
    """NCMECHashAPI at any base URL (it only takes an ``NCMECEnvironment``) and
    with our timeout and retry policy."""

    def __init__(self, username: str, password: str, base_url: str, new_adapter: Callable[[], HTTPAdapter]):
        super().__init__(username, password, NCMECEnvironment.Industry)
        self._base_url = base_url
        self._new_adapter = new_adapter

    def _get_session(self) -> requests.Session:
        session = super()._get_session()
        session.mount(self._base_url, self._new_adapter())
        return session


def _parse_page(root: ET.Element) -> tuple[list[NCMECEntryUpdate], str, int]:
    """(entries, next paging path or "", malformed entries skipped)."""
    xml = _XMLWrapper(root)
    updates: list[NCMECEntryUpdate] = []
    skipped = 0
    for group in (xml.maybe("images"), xml.maybe("videos")):
        for child in group:
            try:
                updates.append(NCMECEntryUpdate.from_xml(child))
            except Exception as exc:  # any shape the parser chokes on is one bad record, not a failed sync
                excerpt = ET.tostring(child.element, encoding="unicode")[:200]
                log.warning(
                    "NCMEC record skipped (%s: %s): %s", type(exc).__name__, exc, " ".join(excerpt.split())
                )
                skipped += 1
    next_ = (xml.maybe("paging", "next").element.text or "").strip()
    return updates, next_, skipped


def _convert(
    updates: list[NCMECEntryUpdate], members: frozenset[int]
) -> tuple[tuple[EntrySpec, ...], tuple[str, ...], int, int]:
    """(upserts, withdrawn refs, skipped, ignored); the last record of an entry wins."""
    latest: dict[str, list[EntrySpec] | None] = {}
    skipped = ignored = 0
    for update in updates:
        ref = f"{update.member_id}-{update.id.strip()}"
        if not update.id.strip() or len(ref) > FIELD_LIMITS["source_ref"]:
            log.warning("NCMEC record skipped: unusable id %r", update.id[:80])
            skipped += 1
            continue
        if update.deleted:
            latest[ref] = None
            continue
        if members and update.member_id not in members:
            ignored += 1
            continue
        specs: list[EntrySpec] = []
        supported = False
        for kind, value in update.fingerprints.items():
            signal = _SIGNALS.get(kind.lower())
            if signal is None:
                continue
            supported = True
            try:
                specs.append(
                    make_entry(
                        signal,
                        value,
                        source_ref=ref,
                        case_id=update.id.strip()[: FIELD_LIMITS["case_id"]],
                        note=_note(update),
                        added_by="ncmec",
                    )
                )
            except ValueError as exc:
                log.warning("NCMEC record %s skipped %s: %s", ref[:100], kind, exc)
                skipped += 1
        if not supported:
            ignored += 1
        elif specs:
            latest[ref] = specs
    upserts = tuple(spec for specs_ in latest.values() if specs_ for spec in specs_)
    withdrawn = tuple(ref for ref, specs_ in latest.items() if specs_ is None)
    return upserts, withdrawn, skipped, ignored


def _note(update: NCMECEntryUpdate) -> str:
    note = f"NCMEC {update.entry_type.value} from member {update.member_id}"
    return note + (f", classification {update.classification}" if update.classification else "")


def _utc(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime(_TIME_FORMAT)


@dataclass(frozen=True)
class _Checkpoint:
    start: int
    end: int = 0
    next: str = ""
    next_at: int = 0

    @classmethod
    def parse(cls, text: str | None, default_start: int) -> _Checkpoint:
        if text is None:
            return cls(default_start)
        with readable_checkpoint(text, "NCMEC"):
            raw = json.loads(text)
            state = cls(
                int(raw["from"]),
                int(raw.get("to") or 0),
                str(raw.get("next") or ""),
                int(raw.get("next_at") or 0),
            )
        if state.next and not state.end:
            return cls(state.start)
        return state

    def dump(self) -> str:
        data: dict[str, Any] = {"v": 1, "from": self.start}
        if self.next:
            data.update(to=self.end, next=self.next, next_at=self.next_at)
        return json.dumps(data)
