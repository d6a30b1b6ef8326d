"""The in-memory bank index every worker matches against.

- SHA-256 / MD5: exact lookups in a dict.
- PDQ: ``PdqIndex`` (faiss-backed, exact at the search radius). The upload's
  PDQ and its variants (rotations, mirror images, trimmed borders) are all
  looked up; the best variant per entry is reported.
- vPDQ: every frame hash of every banked video sits in a second ``PdqIndex``; a
  video matches an entry when the share of its (deduplicated) frames within the
  bank's distance of some frame of the entry reaches the bank's ``vpdq_share``
  (python-threatexchange's vPDQ rule), so a clip cut from a banked video matches.

It is kept current by ``apply`` (fed from the change feed in
storage/bank_feed.py): adding, re-enabling, quarantining or removing one entry
touches only that entry, so a new hash is matchable as soon as a worker applies
the change (within ``BANK_REFRESH_SECONDS``). Per-bank thresholds and enabled
flags are read at match time, so a bank change needs no rebuild either.
Thread-safe: one lock around every read and write.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from moderation.domain import BankConfig, EntryState, EntryStatus, HashSet, Match
from moderation.hashing import pdq
from moderation.hashing.pdq_index import PdqIndex

log = logging.getLogger(__name__)

_ABSENT, _ACTIVE, _QUARANTINED = 0, 1, 2


class _GrowableArray:
    """An id-indexed numpy array that grows as larger ids arrive."""

    def __init__(self, dtype: type) -> None:
        self.data: np.ndarray = np.zeros(1024, dtype=dtype)

    def ensure(self, top: int) -> None:
        if top >= len(self.data):
            grown = np.zeros(max(top + 1, len(self.data) * 2), dtype=self.data.dtype)
            grown[: len(self.data)] = self.data
            self.data = grown

    def get(self, i: int) -> int:
        return int(self.data[i]) if i < len(self.data) else 0


@dataclass
class _Video:
    frame_ids: np.ndarray  # ids in the frame index


class BankIndex:
    def __init__(self, pdq_match_distance: int = 31) -> None:
        self.pdq_match_distance = pdq_match_distance
        self._lock = threading.Lock()
        self._banks: dict[int, BankConfig] = {}
        self._state = _GrowableArray(np.uint8)
        self._bank_of = _GrowableArray(np.int32)
        self._exact: dict[tuple[str, str], set[int]] = {}
        self._exact_key: dict[int, tuple[str, str]] = {}
        self._pdq = PdqIndex(max_radius=31)
        self._frames = PdqIndex(max_radius=31)
        self._frame_entry = _GrowableArray(np.int64)
        self._videos: dict[int, _Video] = {}
        self._next_frame_id = 1
        self._size = 0

    def __len__(self) -> int:
        return self._size

    # -- updates ----------------------------------------------------------------------
    def set_banks(self, banks: Iterable[BankConfig]) -> None:
        with self._lock:
            self._banks = {b.bank_id: b for b in banks}

    def apply(self, entries: Iterable[EntryState]) -> int:
        """Bring entries to their given state; returns how many became matchable."""
        added = 0
        new_pdq: dict[int, np.ndarray] = {}  # added to the PDQ index in one call, at the end
        with self._lock:
            for e in entries:
                present = self._state.get(e.entry_id) != _ABSENT
                if not e.matchable:
                    if present:
                        self._remove(e.entry_id, new_pdq)
                    continue
                if present:
                    self._state.data[e.entry_id] = (
                        _QUARANTINED if e.status is EntryStatus.QUARANTINED else _ACTIVE
                    )
                    continue
                if not self._add(e, new_pdq):
                    continue
                added += 1
            if new_pdq:
                self._pdq.add(np.fromiter(new_pdq, dtype=np.int64), np.stack(list(new_pdq.values())))
        return added

    def _add(self, e: EntryState, new_pdq: dict[int, np.ndarray]) -> bool:
        if e.signal == "pdq":
            if not pdq.is_pdq_hex(e.value):
                log.warning("bank entry %d skipped: malformed PDQ hash", e.entry_id)
                return False
            new_pdq[e.entry_id] = pdq.hex_to_bytes(e.value)
        elif e.signal == "vpdq":
            if not self._add_video(e):
                return False
        elif e.signal in ("sha256", "md5"):
            key = (e.signal, e.value.lower())
            self._exact.setdefault(key, set()).add(e.entry_id)
            self._exact_key[e.entry_id] = key
        else:
            log.warning("bank entry %d skipped: unknown signal %r", e.entry_id, e.signal)
            return False
        self._state.ensure(e.entry_id)
        self._bank_of.ensure(e.entry_id)
        self._state.data[e.entry_id] = _QUARANTINED if e.status is EntryStatus.QUARANTINED else _ACTIVE
        self._bank_of.data[e.entry_id] = e.bank_id
        self._size += 1
        return True

    def _add_video(self, e: EntryState) -> bool:
        from moderation.hashing import video

        try:
            hexes = sorted(video.frame_hashes(video.parse(e.value)))  # deduplicated, quality >= 50
        except Exception:
            log.warning("bank entry %d skipped: malformed vPDQ value", e.entry_id)
            return False
        if not hexes:
            return False
        ids = np.arange(self._next_frame_id, self._next_frame_id + len(hexes), dtype=np.int64)
        self._next_frame_id += len(hexes)
        self._frame_entry.ensure(int(ids[-1]))
        self._frame_entry.data[ids] = e.entry_id
        self._frames.add(ids, np.stack([pdq.hex_to_bytes(h) for h in hexes]))
        self._videos[e.entry_id] = _Video(ids)
        return True

    def _remove(self, entry_id: int, pending: dict[int, np.ndarray]) -> None:
        self._state.data[entry_id] = _ABSENT
        self._size -= 1
        key = self._exact_key.pop(entry_id, None)
        if key is not None:
            ids = self._exact.get(key, set())
            ids.discard(entry_id)
            if not ids:
                self._exact.pop(key, None)
            return
        video = self._videos.pop(entry_id, None)
        if video is not None:
            self._frames.remove(int(i) for i in video.frame_ids)
            return
        if pending.pop(entry_id, None) is None:  # not added in this same batch
            self._pdq.remove([entry_id])

    # -- lookups ----------------------------------------------------------------------
    def _match(self, entry_id: int, signal: str, distance: int, **extra: object) -> Match | None:
        state = self._state.get(entry_id)
        bank = self._banks.get(self._bank_of.get(entry_id))
        if state == _ABSENT or bank is None or not bank.enabled:
            return None
        if signal in ("pdq", "vpdq") and distance > bank.pdq_distance:
            return None
        return Match(
            bank.name,
            bank.action,
            entry_id,
            signal,
            distance,
            quarantined=state == _QUARANTINED,
            **extra,  # type: ignore[arg-type]
        )

    def _radius(self) -> int:
        enabled = [b.pdq_distance for b in self._banks.values() if b.enabled]
        return min(max(enabled, default=0), self.pdq_match_distance)

    def match(self, hashes: HashSet) -> list[Match]:
        """Every bank entry matching these hashes, best (smallest distance) first;
        one match per entry (its best PDQ variant)."""
        found: dict[int, Match] = {}
        with self._lock:
            for signal in ("sha256", "md5"):
                for entry_id in sorted(self._exact.get((signal, getattr(hashes, signal)), ())):
                    m = self._match(entry_id, signal, 0)
                    if m is not None:
                        found[entry_id] = m
            radius = self._radius()
            variants = {"original": hashes.pdq, **hashes.pdq_variants}
            variants = {k: v for k, v in variants.items() if pdq.is_pdq_hex(v)}
            if variants and len(self._pdq):
                names = list(variants)
                codes = np.stack([pdq.hex_to_bytes(variants[n]) for n in names])
                for name, hits in zip(names, self._pdq.search_many(codes, radius), strict=True):
                    for entry_id, dist in hits:
                        best = found.get(entry_id)
                        if best is not None and best.distance <= dist:
                            continue
                        quality = hashes.variant_quality.get(name, hashes.pdq_quality)
                        m = self._match(entry_id, "pdq", dist, variant=name, quality=quality)
                        if m is not None:
                            found[entry_id] = m
            if hashes.vpdq_frames and len(self._frames):
                for m in self._match_video(hashes.vpdq_frames, radius):
                    found[m.entry_id] = m
        return sorted(found.values(), key=lambda m: (m.distance, m.entry_id))

    def _match_video(self, frames: tuple[str, ...], radius: int) -> list[Match]:
        query = sorted({f for f in frames if pdq.is_pdq_hex(f)})
        if not query:
            return []
        codes = np.stack([pdq.hex_to_bytes(h) for h in query])
        matched_query: dict[int, set[int]] = {}
        worst: dict[int, int] = {}
        for qi, hits in enumerate(self._frames.search_many(codes, radius)):
            for frame_id, dist in hits:
                entry_id = self._frame_entry.get(frame_id)
                bank = self._banks.get(self._bank_of.get(entry_id))
                if bank is None or dist > bank.pdq_distance:
                    continue
                matched_query.setdefault(entry_id, set()).add(qi)
                worst[entry_id] = max(worst.get(entry_id, 0), dist)
        out = []
        for entry_id, qs in matched_query.items():
            video = self._videos.get(entry_id)
            bank = self._banks.get(self._bank_of.get(entry_id))
            if video is None or bank is None:
                continue
            # python-threatexchange's rule: the share of the upload's frames found in
            # the entry decides, so a clip cut from a banked video matches too.
            share = len(qs) / len(query)
            if share >= bank.vpdq_share:
                m = self._match(entry_id, "vpdq", worst[entry_id], share=share, frames=len(qs))
                if m is not None:
                    out.append(m)
        return out
