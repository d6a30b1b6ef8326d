"""Near-duplicate groups of queued items: one decision for many copies.

An item queued for review (or for verification of an automatic removal) gets a
group key when it is recorded (``assign``):

1. ``entry:<id>`` of its strongest flagging bank match (``Item.matches`` is
   ordered strongest first by routing.route). A quarantined entry groups
   nothing: flood control quarantines entries that match too much to vouch
   for similarity.
2. Otherwise the key of an open item (pending or claimed) that is a copy of it:
   the same SHA-256, or a PDQ hash within ``pdq_match_distance`` when both
   hashes have at least ``pdq_min_quality`` (low-quality hashes of flat images
   collide). An open copy without a key gets ``item:<its id>``, shared by both.
3. Otherwise no key: a group of one.

Finding copies among a million open items uses multi-index hashing: each
queued image stores the 16 16-bit slices of its PDQ hash (``ItemPdqBand``
bands 0..15, indexed by band and value) and every queued item the first 32 bits
of its SHA-256 (band 16). Candidates share at least one stored value; their
full distance is then checked here. Two hashes within 15 bits always share a
slice (16 slices, at most 15 differ: pigeonhole); between 16 and 31 bits a
shared slice is likely but not certain, so a few distant copies stay ungrouped.
Rows go when the item is decided (``forget``); lookups also join on the item's
state, so a row left behind never groups anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import delete, func, select, tuple_, update
from sqlalchemy.orm import Session

from moderation.domain import BankAction, ItemState
from moderation.hashing import pdq
from moderation.storage.models import Item, ItemPdqBand

OPEN_STATES = (ItemState.PENDING.value, ItemState.CLAIMED.value)
QUEUED_ROUTES = ("review", "auto_remove")
PDQ_BANDS = 16
SHA256_BAND = 16
# Candidates checked per lookup, those sharing the most slices first: a burst of
# near-identical uploads must not make one insert scan thousands of rows.
CANDIDATE_LIMIT = 200


class Hashed(Protocol):
    """What grouping reads of an item: an ``Item``, or a row of these columns."""

    @property
    def id(self) -> int: ...
    @property
    def sha256(self) -> str: ...
    @property
    def pdq(self) -> str: ...
    @property
    def pdq_quality(self) -> int: ...
    @property
    def vpdq(self) -> str | None: ...
    @property
    def group_key(self) -> str | None: ...


@dataclass(frozen=True)
class GroupPolicy:
    """PDQ_MATCH_DISTANCE and PDQ_MIN_QUALITY, as the worker's routing uses them."""

    pdq_match_distance: int = 31
    pdq_min_quality: int = 50

    @classmethod
    def of(cls, settings: Any) -> GroupPolicy:
        """From Settings, or the worker's RoutingPolicy (both carry these fields)."""
        return cls(settings.pdq_match_distance, settings.pdq_min_quality)


@dataclass(frozen=True)
class Copy:
    """An open item found to be a copy of another: ``distance`` 0 for the same bytes."""

    item_id: int
    group_key: str | None
    distance: int
    same_file: bool


# -- pure --------------------------------------------------------------------------
def pdq_slices(pdq_hex: str) -> list[int]:
    """The 16 16-bit slices of a PDQ hash (band i is hex characters 4i..4i+3)."""
    return [int(pdq_hex[i * 4 : i * 4 + 4], 16) for i in range(PDQ_BANDS)]


def sha256_key(sha256_hex: str) -> int:
    """The first 32 bits of a SHA-256, as a signed 32-bit integer (an INTEGER column)."""
    return int.from_bytes(bytes.fromhex(sha256_hex[:8]), "big", signed=True)


def has_good_pdq(item: Hashed, min_quality: int) -> bool:
    """Still images only: a video's PDQ is one frame's, too weak to call two videos copies."""
    return not item.vpdq and pdq.is_pdq_hex(item.pdq or "") and item.pdq_quality >= min_quality


def lookup_keys(item: Hashed, policy: GroupPolicy) -> list[tuple[int, int]]:
    """(band, value) rows stored for ``item``, and looked up to find its copies."""
    keys: list[tuple[int, int]] = []
    if has_good_pdq(item, policy.pdq_min_quality):
        keys.extend(enumerate(pdq_slices(item.pdq)))
    if item.sha256:
        keys.append((SHA256_BAND, sha256_key(item.sha256)))
    return keys


def entry_key(matches: Sequence[dict[str, Any]]) -> str | None:
    """``entry:<id>`` of the strongest flagging, unquarantined match, if any."""
    for match in matches:
        if match.get("bank_action") != BankAction.ALLOW.value and not match.get("quarantined"):
            return f"entry:{match['entry_id']}"
    return None


def similarity(item: Hashed, other: Hashed, policy: GroupPolicy) -> Copy | None:
    """``other`` as a copy of ``item`` (same bytes, or PDQ within the distance), or None."""
    if item.sha256 and item.sha256 == other.sha256:
        return Copy(other.id, other.group_key, 0, True)
    if has_good_pdq(item, policy.pdq_min_quality) and has_good_pdq(other, policy.pdq_min_quality):
        d = pdq.distance(item.pdq, other.pdq)
        if d <= policy.pdq_match_distance:
            return Copy(other.id, other.group_key, d, False)
    return None


# -- recording -----------------------------------------------------------------------
def assign(session: Session, item: Item, policy: GroupPolicy | None = None) -> str | None:
    """Give a newly recorded queued item its group key and store its lookup keys.
    Runs in the recording transaction, after the item's insert was flushed."""
    if item.route not in QUEUED_ROUTES or item.state != ItemState.PENDING.value:
        return None
    policy = policy or GroupPolicy()
    key = entry_key(item.matches or [])
    if key is None:
        copy = nearest_copy(session, item, policy)
        if copy is not None:
            key = copy.group_key or _share_key(session, copy.item_id)
    item.group_key = key
    session.add_all(
        ItemPdqBand(item_id=item.id, band=band, value=value) for band, value in lookup_keys(item, policy)
    )
    session.flush()
    return key


def _share_key(session: Session, copy_id: int) -> str:
    """Key a keyless open copy ``item:<id>``; a concurrent recording may have keyed it first."""
    key = f"item:{copy_id}"
    session.execute(
        update(Item)
        .where(Item.id == copy_id, Item.group_key.is_(None))
        .values(group_key=key)
        .execution_options(synchronize_session=False)
    )
    return session.scalar(select(Item.group_key).where(Item.id == copy_id)) or key


def candidates(session: Session, item: Hashed, policy: GroupPolicy) -> Sequence[Hashed]:
    """Open items sharing a stored slice or SHA-256 prefix with ``item``, most shared first
    (their hashes and group key only)."""
    keys = lookup_keys(item, policy)
    if not keys:
        return []
    shared = (
        select(ItemPdqBand.item_id, func.count().label("hits"))
        .join(Item, Item.id == ItemPdqBand.item_id)
        .where(
            tuple_(ItemPdqBand.band, ItemPdqBand.value).in_(keys),
            Item.state.in_(OPEN_STATES),
            Item.id != item.id,
        )
        .group_by(ItemPdqBand.item_id)
        .order_by(func.count().desc(), ItemPdqBand.item_id)
        .limit(CANDIDATE_LIMIT)
        .subquery()
    )
    return session.execute(
        select(Item.id, Item.sha256, Item.pdq, Item.pdq_quality, Item.vpdq, Item.group_key)
        .join(shared, shared.c.item_id == Item.id)
        .order_by(shared.c.hits.desc())
    ).all()


def nearest_copy(session: Session, item: Hashed, policy: GroupPolicy) -> Copy | None:
    """The closest open copy of ``item``: same bytes first, then the smallest PDQ
    distance; at equal distance one already in a group, then the oldest."""
    found = [c for c in (similarity(item, other, policy) for other in candidates(session, item, policy)) if c]
    if not found:
        return None
    return min(found, key=lambda c: (c.distance, c.group_key is None, c.item_id))


def forget(session: Session, item_ids: Iterable[int]) -> None:
    """Drop the lookup keys of items that are no longer open (decided or closed)."""
    ids = list(item_ids)
    if ids:
        session.execute(
            delete(ItemPdqBand)
            .where(
                ItemPdqBand.item_id.in_(
                    select(Item.id).where(Item.id.in_(ids), Item.state.not_in(OPEN_STATES))
                )
            )
            .execution_options(synchronize_session=False)
        )


# -- reading -------------------------------------------------------------------------
def open_members(session: Session, key: str, limit: int | None = None) -> list[Item]:
    query = select(Item).where(Item.group_key == key, Item.state.in_(OPEN_STATES)).order_by(Item.id)
    return list(session.scalars(query.limit(limit) if limit else query))


def open_count(session: Session, key: str) -> int:
    return (
        session.scalar(
            select(func.count()).select_from(Item).where(Item.group_key == key, Item.state.in_(OPEN_STATES))
        )
        or 0
    )


def size(session: Session, item: Item) -> int:
    """This item and the open items like it (the item counts even once decided)."""
    if item.group_key is None:
        return 1
    return open_count(session, item.group_key) + (0 if item.state in OPEN_STATES else 1)


def summary(session: Session | None, item: Item) -> dict[str, Any]:
    """``{"key", "size"}`` for the item's JSON and page."""
    return {"key": item.group_key, "size": 1 if session is None else size(session, item)}


def lock_open_members(
    session: Session, key: str, ids: Iterable[int] | None = None, limit: int | None = None
) -> tuple[list[Item], list[int], list[int]]:
    """Open members of group ``key`` (only ``ids`` if given), oldest first:
    up to ``limit`` of them locked FOR UPDATE SKIP LOCKED; the ids of those
    another transaction holds locked (a concurrent decision or claim is working
    on them); and the ids past ``limit``."""
    where = [Item.group_key == key, Item.state.in_(OPEN_STATES)]
    if ids is not None:
        where.append(Item.id.in_(list(ids)))
    everyone = list(session.scalars(select(Item.id).where(*where).order_by(Item.id)))
    first, rest = (everyone[:limit], everyone[limit:]) if limit is not None else (everyone, [])
    if not first:
        return [], [], rest
    locked = list(
        session.scalars(
            select(Item)
            .where(Item.id.in_(first), Item.state.in_(OPEN_STATES))
            .order_by(Item.id)
            .with_for_update(skip_locked=True)
            .execution_options(populate_existing=True)
        )
    )
    got = {m.id for m in locked}
    return locked, [i for i in first if i not in got], rest
