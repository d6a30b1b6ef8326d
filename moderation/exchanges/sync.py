"""Apply an exchange's updates to a bank, and send it the feedback we owe.

Storage stays behind two small protocols that the storage layer implements
(tests/support/exchange_servers.py has the in-memory reference version, and
tests/unit/test_exchange_store_contract.py the expectations both must meet):

- ``ExchangeStore``: the checkpoint per exchange, and ``apply_batch``, which
  stores one batch's upserts, withdrawals and checkpoint in ONE transaction, so
  a crash never leaves a checkpoint ahead of its entries (at worst a batch is
  fetched and applied again, which is harmless: it is idempotent).
- ``FeedbackOutbox``: feedback rows owed to an exchange after moderators'
  decisions, marked once the exchange has them.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from moderation.domain import EntrySpec
from moderation.errors import ModerationError
from moderation.exchanges.client import ExchangeClient, ExchangeRejected, FeedbackClient

log = logging.getLogger(__name__)


class ExchangeStore(Protocol):
    def get_checkpoint(self, exchange: str) -> str | None:
        """The checkpoint stored by the last ``apply_batch`` for ``exchange``, or
        None if it never synced (or was reset to resync from the start)."""
        ...

    def apply_batch(
        self,
        exchange: str,
        bank: str,
        upserts: Sequence[EntrySpec],
        withdrawn: Sequence[str],
        checkpoint: str,
    ) -> tuple[int, int, int]:
        """In one transaction: upsert, withdraw, store ``checkpoint``. Returns
        (added, updated, withdrawn) counts.

        - An upsert whose (signal, value) is not in ``bank`` is added (active):
          counts as added. One that is there gets the new source_ref, case_id and
          note; a ``withdrawn`` entry becomes active again (the exchange lists it
          again); ``disabled`` and ``quarantined`` stay as they are (a local
          decision). It counts as updated only if something changed.
        - Every entry of ``bank`` whose source_ref is in ``withdrawn`` and is
          not already withdrawn becomes ``withdrawn``: counted once per entry.
          Unknown refs are ignored. (NCMEC refs can name several entries.)
        - ``upserts`` and ``withdrawn`` never share a source_ref.
        Raises ``TransientError`` if the database is unavailable; then nothing,
        the checkpoint included, was stored."""
        ...


@dataclass(frozen=True)
class Feedback:
    """One feedback row owed to an exchange: ``blocked`` True when a moderator
    confirmed the match as NCII, False when they found it was not."""

    id: int
    source_ref: str
    blocked: bool
    tags: frozenset[str] = frozenset()


class FeedbackOutbox(Protocol):
    def pending_feedback(self, exchange: str, limit: int) -> list[Feedback]:
        """Unsent, unrejected feedback for ``exchange``, oldest first."""
        ...

    def mark_feedback_sent(self, ids: Sequence[int]) -> None:
        """The exchange has these rows; never send them again."""
        ...

    def mark_feedback_rejected(self, ids: Sequence[int], reason: str) -> None:
        """The exchange refused these rows for good; keep ``reason``, don't resend."""
        ...


@dataclass(frozen=True)
class SyncResult:
    """Totals of one sync run. ``checkpoint`` is the last one stored (the one
    the run started from if it applied nothing)."""

    added: int
    updated: int
    withdrawn: int
    checkpoint: str | None
    skipped: int = 0  # malformed records, each logged
    ignored: int = 0  # signal types or members this bank doesn't take
    batches: int = 0


def sync_exchange(
    client: ExchangeClient,
    store: ExchangeStore,
    bank: str,
    *,
    progress: Callable[[SyncResult], None] | None = None,
) -> SyncResult:
    """Fetch ``client``'s updates since its stored checkpoint and apply them to
    ``bank``, one batch per transaction, until caught up.

    ``progress`` gets the running totals after each applied batch. Errors
    propagate (``TransientError``: retry later; ``ConfigError``: fix the named
    setting); batches applied before the error stay applied, with their
    checkpoint, so the next run resumes after them."""
    exchange = client.name
    checkpoint = store.get_checkpoint(exchange)
    totals = SyncResult(0, 0, 0, checkpoint)
    try:
        for batch in client.fetch_updates(checkpoint):
            added, updated, withdrawn = store.apply_batch(
                exchange, bank, batch.upserts, batch.withdrawn, batch.checkpoint
            )
            if batch.skipped:
                log.warning("%s sync: %d malformed record(s) skipped in this batch", exchange, batch.skipped)
            totals = replace(
                totals,
                added=totals.added + added,
                updated=totals.updated + updated,
                withdrawn=totals.withdrawn + withdrawn,
                checkpoint=batch.checkpoint,
                skipped=totals.skipped + batch.skipped,
                ignored=totals.ignored + batch.ignored,
                batches=totals.batches + 1,
            )
            if progress is not None:
                progress(totals)
    except ModerationError as exc:
        log.warning("%s sync stopped after %d batch(es): %s", exchange, totals.batches, exc)
        raise
    log.info(
        "%s sync into %s: %d added, %d updated, %d withdrawn, %d skipped, %d ignored in %d batch(es)",
        exchange,
        bank,
        totals.added,
        totals.updated,
        totals.withdrawn,
        totals.skipped,
        totals.ignored,
        totals.batches,
    )
    return totals


class FeedbackStatus(enum.StrEnum):
    SENT = "sent"
    REJECTED = "rejected"  # refused for good: don't resend
    DEFERRED = "deferred"  # not sent (exchange unavailable or misconfigured): try again later


@dataclass(frozen=True)
class FeedbackOutcome:
    feedback: Feedback
    status: FeedbackStatus
    error: str = ""
    # The error that stopped sending (the first DEFERRED outcome carries it).
    cause: ModerationError | None = field(default=None, compare=False, repr=False)


def send_pending_feedback(client: FeedbackClient, pending: Iterable[Feedback]) -> list[FeedbackOutcome]:
    """Send each feedback row, in order; one outcome per row, in input order.

    Rows with the same (source_ref, blocked, tags) are sent once and share the
    outcome. A per-row refusal (``ExchangeRejected``) marks that row REJECTED
    and sending goes on. Any other error (unavailable, credentials) stops
    sending: that row and the rest are DEFERRED, the first carrying the error
    as ``cause``. Never raises for exchange errors."""
    rows = list(pending)
    done: dict[tuple[str, bool, frozenset[str]], FeedbackOutcome] = {}
    outcomes: list[FeedbackOutcome] = []
    stopped: ModerationError | None = None
    for row in rows:
        key = (row.source_ref, row.blocked, row.tags)
        if key in done:
            outcomes.append(replace(done[key], feedback=row, cause=None))
            continue
        if stopped is not None:
            outcomes.append(FeedbackOutcome(row, FeedbackStatus.DEFERRED, str(stopped)))
            continue
        try:
            client.send_feedback(row.source_ref, row.blocked, tags=row.tags)
            outcome = FeedbackOutcome(row, FeedbackStatus.SENT)
        except ExchangeRejected as exc:
            log.warning("%s feedback %d rejected: %s", client.name, row.id, exc)
            outcome = FeedbackOutcome(row, FeedbackStatus.REJECTED, str(exc))
        except ModerationError as exc:
            log.warning("%s feedback deferred: %s", client.name, exc)
            stopped = exc
            outcomes.append(FeedbackOutcome(row, FeedbackStatus.DEFERRED, str(exc), cause=exc))
            continue
        done[key] = outcome
        outcomes.append(outcome)
    return outcomes


@dataclass(frozen=True)
class FeedbackResult:
    sent: int
    rejected: int
    deferred: int


def sync_feedback(client: FeedbackClient, outbox: FeedbackOutbox, *, limit: int = 500) -> FeedbackResult:
    """Send up to ``limit`` pending rows and mark them in ``outbox``.

    Sent and rejected rows are marked before the error that stopped sending (if
    any) is re-raised, so nothing delivered is sent twice by the next run unless
    the process dies between sending and marking (delivery is at least once)."""
    outcomes = send_pending_feedback(client, outbox.pending_feedback(client.name, limit))
    sent = [o.feedback.id for o in outcomes if o.status is FeedbackStatus.SENT]
    if sent:
        outbox.mark_feedback_sent(sent)
    rejected: dict[str, list[int]] = {}
    for o in outcomes:
        if o.status is FeedbackStatus.REJECTED:
            rejected.setdefault(o.error, []).append(o.feedback.id)
    for reason, ids in rejected.items():
        outbox.mark_feedback_rejected(ids, reason)
    n_rejected = sum(len(ids) for ids in rejected.values())
    result = FeedbackResult(len(sent), n_rejected, len(outcomes) - len(sent) - n_rejected)
    cause = next((o.cause for o in outcomes if o.cause is not None), None)
    if cause is not None:
        raise cause
    log.info("%s feedback: %d sent, %d rejected", client.name, result.sent, result.rejected)
    return result
