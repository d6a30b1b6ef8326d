"""In-process bank index: exact lookups for cryptographic hashes, a linear
Hamming scan for PDQ. Entries are applied incrementally (by increasing entry id)
so a worker picks up a new bank entry within one refresh interval without
rebuilding anything. Adding an entry id that is already present is a no-op, so
the change feed may re-read a trailing window of ids: on PostgreSQL a smaller id
can commit after a larger one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from moderation.domain import BankAction, HashSet, Match
from moderation.hashing import pdq

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexEntry:
    entry_id: int
    bank: str
    bank_action: BankAction
    signal: str
    value: str


class BankIndex:
    def __init__(self, pdq_match_distance: int = 31) -> None:
        self.pdq_match_distance = pdq_match_distance
        self._lock = threading.Lock()
        self._exact: dict[tuple[str, str], list[IndexEntry]] = {}
        self._pdq_entries: list[IndexEntry] = []
        self._pdq_packed = np.zeros((0, 32), dtype=np.uint8)
        self.last_entry_id = 0
        self._seen: set[int] = set()

    def __len__(self) -> int:
        return sum(len(v) for v in self._exact.values()) + len(self._pdq_entries)

    def add(self, entries: Iterable[IndexEntry]) -> int:
        new_pdq: list[IndexEntry] = []
        count = 0
        with self._lock:
            for e in entries:
                if e.entry_id in self._seen:
                    continue
                self._seen.add(e.entry_id)
                self.last_entry_id = max(self.last_entry_id, e.entry_id)
                if e.signal == "pdq":
                    if not pdq.is_pdq_hex(e.value):
                        log.warning("bank entry %d skipped: malformed PDQ hash", e.entry_id)
                        continue
                    new_pdq.append(e)
                else:
                    self._exact.setdefault((e.signal, e.value.lower()), []).append(e)
                count += 1
            if new_pdq:
                packed = np.stack([pdq.hex_to_bytes(e.value) for e in new_pdq])
                self._pdq_packed = np.concatenate([self._pdq_packed, packed])
                self._pdq_entries.extend(new_pdq)
        return count

    def match(self, hashes: HashSet) -> list[Match]:
        """Every bank entry matching these hashes, best (smallest distance) first."""
        found: list[Match] = []
        with self._lock:
            for signal in ("sha256", "md5"):
                for e in self._exact.get((signal, getattr(hashes, signal)), ()):
                    found.append(Match(e.bank, e.bank_action, e.entry_id, signal, 0))
            dists = pdq.distances(pdq.hex_to_bytes(hashes.pdq), self._pdq_packed)
            for i in np.flatnonzero(dists <= self.pdq_match_distance):
                e = self._pdq_entries[int(i)]
                found.append(Match(e.bank, e.bank_action, e.entry_id, "pdq", int(dists[i])))
        found.sort(key=lambda m: (m.distance, m.entry_id))
        return found
