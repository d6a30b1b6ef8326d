"""The numbers on the leads' dashboard: queue depth, SLA, throughput, exposure.

Built to stay fast on a large database (a million open items, years of
decisions and audit records):

- Open items are read once, grouped by tier and priority (at most a few hundred
  groups); bands and the oldest age are worked out from the groups.
- SLA counts of open items read the partial index on (tier, due_at) of pending
  items and the (state, ...) index for the few claimed ones.
- Decided history is read only inside its window (24 hours, 7 days). The
  ``decisions`` table has no index on ``created_at``, but rows are inserted in
  time order, so the window's first id is found by bisection on the primary key
  (a few dozen index probes) and the window is then an id range.
- Claim-to-decision times come from the audit log's ``at`` index, 24 hours of it.

Everything is read-only; the functions take ``now`` so tests can pin the clock.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from moderation.domain import Action, ItemState, Source, Tier
from moderation.storage.models import AuditRecord, Decision, ExposureSession, Item, User

BAND_WIDTH = 20
TOP_BAND = 80  # 80-100: the highest priorities share the last band
HOURS = 24
SLA_WINDOW_DAYS = 7
# Rows may be committed a little out of time order (several workers, clock
# skew): the bisection looks this much further back, and the time filter then
# applies the exact window.
ORDER_SLACK = timedelta(hours=1)
CLAIM_LOOKBACK = timedelta(hours=1)  # a decision early in the window may follow an earlier claim


# -- results ---------------------------------------------------------------------------
@dataclass(frozen=True)
class BandCount:
    tier: str
    band: str  # "0-19" ... "80-100"
    count: int


@dataclass(frozen=True)
class HourCount:
    start: datetime
    moderator: int
    automatic: int


@dataclass(frozen=True)
class SlaCounts:
    breached: int  # open items past their deadline now
    near: int  # open items due within ``near_hours``
    near_hours: float
    decided_late: int  # items decided by a moderator after their deadline, last 7 days
    decided_on_time: int


@dataclass
class ModeratorRow:
    username: str
    decisions: int = 0
    active_hours: int = 0  # clock hours of the window with at least one decision
    median_claim_seconds: float | None = None  # claim to decision, from the audit log
    items_viewed: int = 0  # since the last break (the open exposure session)
    revealed_seconds: float = 0.0
    since_break_at: datetime | None = None  # when the open exposure session started
    break_due: bool = False  # a break was prompted and not yet taken
    breaks_today: int = 0

    @property
    def per_hour(self) -> float:
        """Decisions per clock hour worked (hours with at least one decision)."""
        return self.decisions / self.active_hours if self.active_hours else 0.0


@dataclass
class Dashboard:
    now: datetime
    window_start: datetime  # start of the 24 clock hours shown
    bands: list[BandCount]
    claimed: int  # open items under a live claim
    oldest_pending_at: datetime | None
    hours: list[HourCount]
    sla: SlaCounts
    moderators: list[ModeratorRow] = field(default_factory=list)

    @property
    def waiting(self) -> int:
        return sum(b.count for b in self.bands)

    @property
    def oldest_age_seconds(self) -> float | None:
        if self.oldest_pending_at is None:
            return None
        return max((self.now - self.oldest_pending_at).total_seconds(), 0.0)


# -- pure helpers ----------------------------------------------------------------------
def band_of(priority: int) -> str:
    low = min(max(priority, 0) // BAND_WIDTH * BAND_WIDTH, TOP_BAND)
    return f"{low}-100" if low == TOP_BAND else f"{low}-{low + BAND_WIDTH - 1}"


BANDS = tuple(band_of(p) for p in range(0, TOP_BAND + 1, BAND_WIDTH))


def hour_floor(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def claim_to_decision(
    events: Iterable[tuple[str, str, int | None, datetime]], since: datetime
) -> dict[str, list[float]]:
    """Seconds from a moderator's claim of an item to their decision on it, per
    moderator, for decisions at or after ``since``. ``events`` are (actor,
    action, item_id, at) audit records in time order; a decision without an
    earlier claim by the same person (a senior deciding an escalated item) has
    no claim time and is left out."""
    claimed: dict[tuple[str, int], datetime] = {}
    durations: dict[str, list[float]] = {}
    for actor, action, item_id, at in events:
        if item_id is None:
            continue
        if action == "item.claim":
            claimed[(actor, item_id)] = at
        elif action.startswith("decision."):
            start = claimed.pop((actor, item_id), None)
            if start is not None and at >= since:
                durations.setdefault(actor, []).append((at - start).total_seconds())
    return durations


# -- queries ---------------------------------------------------------------------------
def first_id_since(
    session: Session, id_column: InstrumentedAttribute[int], time_column: Any, since: datetime
) -> int | None:
    """The smallest id whose row (or the next existing row) is at or after
    ``since``, for a table whose ids grow with its timestamps; None when no row
    is that recent. O(log(id range)) primary-key probes instead of a scan."""
    low, high = session.execute(select(func.min(id_column), func.max(id_column))).one()
    if high is None:
        return None

    def time_from(start: int) -> tuple[int, datetime]:
        row = session.execute(
            select(id_column, time_column).where(id_column >= start).order_by(id_column).limit(1)
        ).one()
        return int(row[0]), row[1]

    if time_from(high)[1] < since:
        return None
    low, high = int(low), int(high)
    while low < high:
        middle = (low + high) // 2
        found, at = time_from(middle)
        if at >= since:
            high = middle
        else:
            low = found + 1  # ids between middle and found do not exist
    return low


def _hour(session: Session, column: Any) -> Any:
    """SQL for the clock hour (UTC) of a timestamp column."""
    if session.get_bind().dialect.name == "postgresql":
        return func.date_trunc("hour", func.timezone("UTC", column))
    return func.strftime("%Y-%m-%d %H:00:00", column)


def _as_utc(value: Any) -> datetime:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _decisions_since(session: Session, since: datetime) -> ColumnElement[bool] | None:
    """A condition selecting decisions created at or after ``since`` by id range; None: none."""
    first = first_id_since(session, Decision.id, Decision.created_at, since - ORDER_SLACK)
    if first is None:
        return None
    return and_(Decision.id >= first, Decision.created_at >= since)


def queue_bands(session: Session, now: datetime) -> tuple[list[BandCount], int, datetime | None]:
    """Waiting items per tier and priority band (expired claims count as waiting),
    the number under a live claim, and the arrival of the oldest waiting item."""
    waiting = or_(
        Item.state == ItemState.PENDING.value,
        and_(Item.state == ItemState.CLAIMED.value, Item.lease_expires_at < now),
    )
    rows = session.execute(
        select(Item.tier, Item.priority, waiting.label("waiting"), func.count(), func.min(Item.created_at))
        .where(Item.state.in_([ItemState.PENDING.value, ItemState.CLAIMED.value]))
        .group_by(Item.tier, Item.priority, waiting)
    ).all()
    counts: dict[tuple[str, str], int] = {}
    claimed = 0
    oldest: datetime | None = None
    for tier, priority, is_waiting, count, first in rows:
        if not is_waiting:
            claimed += int(count)
            continue
        key = (tier, band_of(int(priority)))
        counts[key] = counts.get(key, 0) + int(count)
        if first is not None:
            first = _as_utc(first)  # SQLite may hand back a string for min()
            oldest = first if oldest is None else min(oldest, first)
    bands = [BandCount(tier, band, n) for (tier, band), n in sorted(counts.items())]
    return bands, claimed, oldest


def decisions_per_hour(
    session: Session, start: datetime, window: ColumnElement[bool] | None
) -> list[HourCount]:
    """Decisions per clock hour from ``start`` (an hour boundary) to now, moderators'
    apart from automatic ones (hash matches, classifier). ``window`` is
    ``_decisions_since(session, start)``."""
    buckets = {start + timedelta(hours=h): [0, 0] for h in range(HOURS)}
    if window is not None:
        hour = _hour(session, Decision.created_at)
        rows = session.execute(
            select(hour, Decision.source, func.count()).where(window).group_by(hour, Decision.source)
        ).all()
        for at, source, count in rows:
            slot = buckets.get(_as_utc(at))
            if slot is not None:
                slot[0 if source == Source.MODERATOR.value else 1] += int(count)
    return [HourCount(at, m, a) for at, (m, a) in sorted(buckets.items())]


def sla_counts(session: Session, now: datetime, near_hours: float) -> SlaCounts:
    near_until = now + timedelta(hours=near_hours)
    breached = near = 0
    tiers = [t.value for t in Tier]
    for state in (ItemState.PENDING.value, ItemState.CLAIMED.value):
        row = session.execute(
            select(
                func.count(case((Item.due_at < now, 1))),
                func.count(case((Item.due_at >= now, 1))),
            ).where(Item.state == state, Item.tier.in_(tiers), Item.due_at < near_until)
        ).one()
        breached += int(row[0])
        near += int(row[1])
    late = on_time = 0
    window = _decisions_since(session, now - timedelta(days=SLA_WINDOW_DAYS))
    if window is not None:
        is_late = (Decision.created_at > Item.due_at).label("late")
        rows = session.execute(
            select(is_late, func.count(func.distinct(Decision.item_id)))
            .join(Item, Item.id == Decision.item_id)
            .where(
                window,
                Decision.source == Source.MODERATOR.value,
                Decision.action != Action.ESCALATE.value,
                Item.due_at.is_not(None),
            )
            .group_by(is_late)
        ).all()
        for was_late, count in rows:
            if was_late:
                late += int(count)
            else:
                on_time += int(count)
    return SlaCounts(breached, near, near_hours, late, on_time)


def moderator_rows(
    session: Session, start: datetime, now: datetime, window: ColumnElement[bool] | None
) -> list[ModeratorRow]:
    """Per person who decided or worked (an exposure session) since ``start``;
    ``window`` is ``_decisions_since(session, start)``."""
    rows: dict[str, ModeratorRow] = {}

    def row(name: str) -> ModeratorRow:
        return rows.setdefault(name, ModeratorRow(name))

    if window is not None:
        hour = _hour(session, Decision.created_at)
        for name, _at, count in session.execute(
            select(Decision.moderator, hour, func.count())
            .where(window, Decision.source == Source.MODERATOR.value, Decision.moderator.is_not(None))
            .group_by(Decision.moderator, hour)
        ):
            r = row(str(name))
            r.decisions += int(count)
            r.active_hours += 1
    events = session.execute(
        select(AuditRecord.actor, AuditRecord.action, AuditRecord.item_id, AuditRecord.at)
        .where(
            AuditRecord.at >= start - CLAIM_LOOKBACK,
            or_(AuditRecord.action == "item.claim", AuditRecord.action.like("decision.%")),
        )
        .order_by(AuditRecord.at, AuditRecord.id)
    ).all()
    for name, durations in claim_to_decision(events, start).items():
        if name in rows:
            rows[name].median_claim_seconds = statistics.median(durations)
    _add_exposure(session, row, start, now)
    return sorted(rows.values(), key=lambda r: (-r.decisions, r.username))


def _add_exposure(session: Session, row: Any, start: datetime, now: datetime) -> None:
    open_sessions = session.execute(
        select(User.username, ExposureSession)
        .select_from(ExposureSession)
        .join(User, User.id == ExposureSession.user_id)
        .where(ExposureSession.ended_at.is_(None), ExposureSession.last_seen_at >= start)
        .order_by(ExposureSession.started_at)
    ).all()
    for name, exposure in open_sessions:
        r = row(str(name))
        r.items_viewed = exposure.items_viewed
        r.revealed_seconds = exposure.revealed_seconds
        r.since_break_at = exposure.started_at
        r.break_due = exposure.break_prompted_at is not None
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    for name, count in session.execute(
        select(User.username, func.count())
        .select_from(ExposureSession)
        .join(User, User.id == ExposureSession.user_id)
        .where(ExposureSession.ended_at >= midnight)
        .group_by(User.username)
    ):
        row(str(name)).breaks_today = int(count)


def dashboard(session: Session, near_hours: float, now: datetime | None = None) -> Dashboard:
    now = now or datetime.now(UTC)
    start = hour_floor(now) - timedelta(hours=HOURS - 1)
    bands, claimed, oldest = queue_bands(session, now)
    window = _decisions_since(session, start)  # one bisection for both of the 24-hour reads
    return Dashboard(
        now=now,
        window_start=start,
        bands=bands,
        claimed=claimed,
        oldest_pending_at=oldest,
        hours=decisions_per_hour(session, start, window),
        sla=sla_counts(session, now, near_hours),
        moderators=moderator_rows(session, start, now, window),
    )


def band_table(bands: Sequence[BandCount]) -> tuple[list[str], dict[str, list[int]]]:
    """Tiers that have waiting items, and per band the count in each of them (chart order)."""
    tiers = [t.value for t in Tier if any(b.tier == t.value for b in bands)]
    tiers += sorted({b.tier for b in bands} - set(tiers))
    table = {band: [0] * len(tiers) for band in BANDS}
    for b in bands:
        table[b.band][tiers.index(b.tier)] += b.count
    return tiers, table
