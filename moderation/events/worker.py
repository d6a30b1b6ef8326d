"""The consumer loop of ``moderation worker``.

Each record gets exactly one durable outcome before its offset is committed:

- invalid event or media -> a ``dead_letters`` row, then produced to the
  dead-letter topic and acknowledged;
- otherwise -> an ``items`` row (plus decision rows in the outbox) committed to
  the database, then the item's decisions produced and acknowledged.

Records are taken in batches of up to ``CLASSIFY_BATCH_SIZE`` (fewer when
gathering them takes longer than ``CLASSIFY_BATCH_WAIT_MS``): each is fetched,
decoded, hashed and matched, the pictures of the whole batch are classified in
one run per model, then each record's outcome is stored and published in order,
and the offset is committed after the batch, so a slow partition keeps its
progress. A redelivered record finds its row (by ``event_id``, or by source
position for dead letters) and only re-produces what was not yet acknowledged.

Transient failures (database, broker) pause every assigned partition: the
records in hand that have no outcome yet are handed back (the consumer is
rewound to them), nothing more is committed, and the worker keeps polling, so
it stays in its group however long the outage lasts. It probes the dependency
(``SELECT 1``, a broker round trip; events/outage.py) after 0.2 s, doubling to
at most 1 s, and resumes as soon as it answers; the outage is logged when it
begins and then every 30 s at most. Whenever records in hand are
abandoned (an outage, a refused commit, a stop, a rebalance waiting for this
member, half of max.poll.interval gone by) the consumer is rewound to them, so
none is skipped even when the partition stays with this worker. A worker asked
to stop finishes the batch in hand, commits it, settles a rebalance in progress
and leaves the group (``close``), so its partitions move at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import CommitFailedError, IllegalStateError, KafkaError, RebalanceInProgressError
from kafka.structs import OffsetAndMetadata
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from moderation.classify import Scores
from moderation.config import Settings
from moderation.errors import FatalError, InvalidInput, ModerationError, TransientError
from moderation.events.kafka import BrokerUnavailable, LagReporter, leave_on_close, rewind
from moderation.events.outage import Outage, Probe
from moderation.events.uploads import parse_upload_event
from moderation.metrics import Metrics
from moderation.pipeline import Analysis, Pipeline, Prepared
from moderation.storage import deadletters, outbox, outcomes
from moderation.storage.bank_feed import IndexFeeder
from moderation.storage.flood import FloodPolicy

log = logging.getLogger(__name__)

Send = Callable[..., None]
OUTBOX_SWEEP_SECONDS = 5.0
INITIAL_BACKOFF_S = 0.2
MAX_BACKOFF_S = 1.0  # between probes of a dependency that is down (a probe is cheap)
# route -> (action, source) of the decision the pipeline records by itself
AUTOMATIC_DECISIONS = {"auto_remove": ("remove", "hash_match"), "allow": ("allow", "classifier")}


@dataclass
class Staged:
    """One record of a batch: its outcome once it has one, or what the
    classifier needs and then returns."""

    record: Any
    event_id: str | None = None
    outcome: str | None = None
    prepared: Prepared | None = None
    classification: Scores | ModerationError | None = None
    analysis: Analysis | None = None


def is_transient(exc: BaseException) -> bool:
    """Errors worth retrying: our TransientError, and database errors other than
    bad data for this one row."""
    if isinstance(exc, TransientError):
        return True
    return isinstance(exc, DBAPIError) and not isinstance(exc, IntegrityError | DataError)


class Worker:
    def __init__(
        self,
        consumer: KafkaConsumer,
        sessions: sessionmaker[Session],
        pipeline: Pipeline,
        send_decision: Send,
        send_dead_letter: Send,
        metrics: Metrics,
        publish_allow: bool = True,
        bank_refresh_seconds: float = 1.0,
        flood: FloodPolicy | None = None,
        batch_size: int = 8,
        batch_wait_s: float = 0.2,
        settings: Settings | None = None,
        probe: Probe | None = None,
    ) -> None:
        self.consumer = consumer
        self.settings = settings  # queue order of stored items: SLA_HOURS, PRIORITY_POINT_MINUTES
        self.sessions = sessions
        self.pipeline = pipeline
        self.send_decision = send_decision
        self.send_dead_letter = send_dead_letter
        self.metrics = metrics
        self.publish_allow = publish_allow
        self.bank_refresh_seconds = bank_refresh_seconds
        self.flood = flood or FloodPolicy()
        self.batch_size = max(1, batch_size)
        self.batch_wait_s = batch_wait_s
        self.feeder = IndexFeeder(sessions, pipeline.index)
        self.stop_event = threading.Event()
        self.last_loop_at = 0.0
        self._last_refresh = 0.0
        self._last_sweep = 0.0
        self._outage: str | None = None  # the dependency that is down, while paused
        self._resume_at = 0.0
        self.probe = probe  # tells whether a dependency is back; None: retry the work itself
        self._outages = Outage(log, "partitions paused", INITIAL_BACKOFF_S, MAX_BACKOFF_S)
        self._assignment: frozenset[TopicPartition] = frozenset()
        self._polled_at = time.monotonic()
        self._batches_since_poll = 0
        self._lag = LagReporter(consumer, metrics.consumer_lag)

    # -- lifecycle -------------------------------------------------------------
    def run(self) -> None:
        log.info("worker started", extra={"topics": sorted(self.consumer.subscription() or [])})
        try:
            while not self.stop_event.is_set():
                self.last_loop_at = time.monotonic()
                if self._outage is not None:
                    self._wait_out_outage()
                    continue
                if not (self._guard(self.refresh_banks) and self._guard(self.sweep_outbox)):
                    continue
                batch = self._poll(500)
                self._polled_at = time.monotonic()
                self._batches_since_poll = 0
                if batch is None:
                    continue  # the broker is unreachable: paused, retried after a backoff
                self._note_assignment()
                self._handle_polled(batch)
                self._lag.maybe_report()
        finally:
            log.info("worker stopping")

    def stop(self) -> None:
        self.stop_event.set()

    @property
    def outage(self) -> str | None:
        """The dependency ("database" or "broker") the worker is paused for, if any."""
        return self._outage

    def close(self, settle_s: float = 10.0) -> None:
        """Leave the group (after ``run`` returned). A rebalance in progress is
        settled first, with every partition paused, so that this member does not
        leave in the middle of it: a leader leaving mid-rebalance is a
        recoverable hiccup for Apache Kafka but leaves the embedded tansu
        broker's group stuck for good. Costs at most one heartbeat interval when
        no rebalance is in progress (that long to hear of one)."""
        started = time.monotonic()
        try:
            config = getattr(self.consumer, "config", {})
            grace = min(float(config.get("heartbeat_interval_ms", 1000)) / 1000, settle_s)
            while time.monotonic() - started < settle_s:
                self._pause_assigned()
                if time.monotonic() - started >= grace and not self._rebalance_pending():
                    break
                self.consumer.poll(timeout_ms=100)  # paused: returns nothing, takes part in a rebalance
        except Exception as exc:  # noqa: BLE001 - leaving must not fail: the session timeout covers it
            log.warning("could not settle the group before leaving: %s", exc)
        finally:
            leave_on_close(self.consumer)
            self.consumer.close()
            log.info("left the group", extra={"settle_s": round(time.monotonic() - started, 2)})

    def _handle_polled(self, batch: dict[TopicPartition, list[Any]]) -> None:
        """Handle what one poll returned, partition by partition. When a partition
        cannot be finished (stopping, a dependency down, a rebalance), its
        unhandled records and those of the partitions after it are handed back:
        the consumer is rewound to them, so nothing in hand is skipped (a
        partition kept through a rebalance keeps its fetch position)."""
        pending = list(batch.items())
        for index, (tp, records) in enumerate(pending):
            handled, carry_on = self._handle_partition(tp, records)
            if handled < len(records):
                rewind(self.consumer, tp, records[handled].offset)
            if not carry_on:
                for later_tp, later in pending[index + 1 :]:
                    rewind(self.consumer, later_tp, later[0].offset)
                return

    def _handle_partition(self, tp: TopicPartition, records: list[Any]) -> tuple[int, bool]:
        """Handle records in batches, committing after each. Returns how many
        were handled, and whether to carry on with the next partition."""
        position = 0
        while position < len(records):
            if self.stop_event.is_set() or (self._batches_since_poll and self._poll_due()):
                return position, False
            self.last_loop_at = time.monotonic()
            try:
                done = self.handle_batch(records[position:])
            except FatalError:
                raise
            except Exception as exc:
                if not is_transient(exc):
                    raise
                self._enter_outage(exc)
                return position, False
            position += len(done)
            self._batches_since_poll += 1
            if not self._commit(tp, records[position - 1].offset + 1):
                return position, False
            self._outages.cleared()
        return position, True

    def _commit(self, tp: TopicPartition, offset: int) -> bool:
        """Commit ``offset``; False when the partition moved to another worker or
        the broker failed (then the worker pauses and retries)."""
        if tp not in self.consumer.assignment():
            log.warning("partition moved before its offset was committed", extra={"partition": tp.partition})
            return False
        try:
            self.consumer.commit({tp: OffsetAndMetadata(offset, "", -1)})
            return True
        except (CommitFailedError, IllegalStateError, RebalanceInProgressError) as exc:
            # The group is rebalancing or the partition moved. Its next owner (maybe
            # this worker again) redelivers from the last committed offset; outcomes
            # are idempotent, so nothing is lost or doubled. Poll again.
            log.warning("offset commit skipped after a rebalance: %s", exc, extra={"partition": tp.partition})
            return False
        except FatalError:
            raise
        except Exception as exc:  # noqa: BLE001 - the broker, by elimination
            self._enter_outage(exc, "broker")
            return False

    # -- outages ---------------------------------------------------------------
    def _guard(self, fn: Callable[[], Any]) -> bool:
        """Run periodic work; on failure pause and retry later. Fatal errors propagate."""
        try:
            fn()
            return True
        except FatalError:
            raise
        except Exception as exc:  # noqa: BLE001 - transient by elimination
            self._enter_outage(exc)
            return False

    def _enter_outage(self, exc: BaseException, dependency: str | None = None) -> None:
        """Pause every partition and probe the dependency after a pause (0.2 s
        doubling to MAX_BACKOFF_S). Meanwhile the worker keeps polling, so it
        stays in its group, however long the outage; nothing in hand was committed."""
        if dependency is None:
            dependency = "broker" if isinstance(exc, KafkaError | BrokerUnavailable) else "database"
        pause = self._outages.failed(dependency, exc)
        self._outage = dependency
        self._resume_at = time.monotonic() + pause
        self.metrics.retries.labels(dependency).inc()
        self._pause_assigned()

    def _wait_out_outage(self) -> None:
        """Poll (everything paused) until the pause is over, then probe the
        dependency: resume when it answers, else pause again."""
        while not self.stop_event.is_set():
            self.last_loop_at = time.monotonic()
            remaining = self._resume_at - time.monotonic()
            if remaining <= 0:
                if self._dependency_back():
                    break
                continue
            polled = self._poll(max(1, int(min(remaining, 0.5) * 1000)))
            if polled is None:  # the broker is unreachable too: wait, the pause runs on
                self.stop_event.wait(min(remaining, 0.5))
                continue
            for tp, records in polled.items():  # assigned by a rebalance meanwhile, not yet paused
                rewind(self.consumer, tp, records[0].offset)
            self._note_assignment()
            self._pause_assigned()
        self._outage = None
        paused = self.consumer.paused()
        if paused:
            self.consumer.resume(*paused)

    def _dependency_back(self) -> bool:
        """Whether the dependency the worker is paused for answers again (the
        probe; without one, the work itself is the probe). If not, the next
        probe is scheduled."""
        dependency = self._outage or "database"
        if self.probe is not None:
            try:
                self.probe(dependency)
            except FatalError:
                raise
            except Exception as exc:  # noqa: BLE001 - still down
                self._enter_outage(exc, dependency)
                return False
        lasted = self._outages.back()
        if lasted is not None:
            log.info(
                "partitions resumed",
                extra={
                    "dependency": dependency,
                    "outage_s": round(lasted, 1),
                    "attempt": self._outages.failures,
                },
            )
        return True

    def _poll(self, timeout_ms: int) -> dict[TopicPartition, list[Any]] | None:
        """``consumer.poll``; None when the broker cannot be reached (then the
        worker is paused, if it was not already). Other broker errors propagate."""
        try:
            return self.consumer.poll(timeout_ms=timeout_ms)
        except KafkaError as exc:
            if not getattr(exc, "retriable", False):
                raise
            if self._outage is None:
                self._enter_outage(exc, "broker")
            return None

    def _pause_assigned(self) -> None:
        unpaused = self.consumer.assignment() - self.consumer.paused()
        if unpaused:
            self.consumer.pause(*unpaused)

    def _note_assignment(self) -> None:
        assignment = frozenset(self.consumer.assignment())
        if assignment != self._assignment:
            self._assignment = assignment
            log.info(
                "partitions assigned",
                extra={"partitions": sorted(tp.partition for tp in assignment)},
            )

    def _poll_due(self) -> bool:
        """Whether to hand back the rest of what the last poll returned and poll
        again: a rebalance waits for this member, or half of max.poll.interval
        has gone by (slow media, a slow model), so the member is never dropped
        from its group for being busy."""
        config = getattr(self.consumer, "config", {})
        budget_s = float(config.get("max_poll_interval_ms", 300_000)) / 2000
        return time.monotonic() - self._polled_at > budget_s or self._rebalance_pending()

    def _rebalance_pending(self) -> bool:
        """Whether the group coordinator asked this member to rejoin (kafka-python
        internals, read defensively: False if they are not there)."""
        coordinator = getattr(self.consumer, "_coordinator", None)
        need_rejoin = getattr(coordinator, "need_rejoin", None)
        try:
            return bool(need_rejoin()) if callable(need_rejoin) else False
        except Exception:  # noqa: BLE001 - an optimisation only
            return False

    # -- records ---------------------------------------------------------------
    def handle(self, record: Any) -> str:
        """Give one Kafka record its durable outcome; returns the outcome name."""
        return self.handle_batch([record])[0]

    def handle_batch(self, records: Sequence[Any]) -> list[str]:
        """Give the first records (up to ``batch_size``, or as many as were
        gathered within ``batch_wait_s``) their durable outcomes, in order, with
        the pictures of all of them classified in one batch; returns their
        outcome names.

        Transient and fatal errors propagate (the caller retries or stops; what
        was already stored is found again by event id); any other error is that
        record's problem and dead-letters it, so one poison message never stops
        its partition."""
        deadline = time.monotonic() + self.batch_wait_s
        staged: list[Staged] = []
        for record in records[: self.batch_size]:
            staged.append(self._stage(record))
            if time.monotonic() >= deadline or self.stop_event.is_set():
                break
        ready = [s for s in staged if s.prepared is not None]
        for s, verdict in zip(ready, self._classify(ready), strict=True):
            s.classification = verdict
        scored = [s for s in ready if isinstance(s.classification, Scores)]
        analyses = self.pipeline.finish_batch(
            [s.prepared for s in scored if s.prepared is not None],
            [s.classification for s in scored if isinstance(s.classification, Scores)],
        )
        for s, analysis in zip(scored, analyses, strict=True):
            s.analysis = analysis
        stored: list[tuple[int, str, Analysis]] = []
        quarantined: set[int] = set()
        names = [self._finish(s, stored, quarantined) for s in staged]
        if stored:  # the batch's decisions in one round trip to the broker
            self._publish([item_id for item_id, _, _ in stored])
        for _item_id, outcome, analysis in stored:
            self._account(outcome, analysis)
        return names

    def _stage(self, record: Any) -> Staged:
        """Everything before the classifier: duplicate checks, parse, fetch,
        decode, hash, match. Records that need no classifier get their outcome here."""
        with self.sessions() as session:
            earlier = deadletters.find(session, record)
        if earlier is not None:
            return Staged(record, outcome=self._dead_letter_again(earlier.id))
        event_id = None
        try:
            event = parse_upload_event(record.value)
            event_id = event.event_id
            with self.sessions() as session:
                existing = outcomes.find_item_id(session, event.event_id)
            if existing is not None:
                self._publish([existing])
                self.metrics.events_consumed.labels("duplicate").inc()
                return Staged(record, event_id=event_id, outcome="duplicate")
            self.refresh_banks()  # new bank entries match within bank_refresh_seconds
            return Staged(record, event_id=event_id, prepared=self.pipeline.prepare(event))
        except Exception as exc:  # noqa: BLE001 - sorted by _as_failure
            failure = self._as_failure(exc, event_id)
            return Staged(record, event_id=event_id, outcome=self._dead_letter(record, failure, event_id))

    def _classify(self, ready: list[Staged]) -> list[Scores | ModerationError]:
        """One batch for all; if the batch fails for a reason other than a
        transient one, each event alone, so only the culprit is dead-lettered."""
        if not ready:
            return []
        try:
            return list(self.pipeline.classify([s.prepared for s in ready if s.prepared is not None]))
        except Exception as exc:  # noqa: BLE001 - sorted by _as_failure
            failure = self._as_failure(exc, ready[0].event_id)
            if len(ready) == 1:
                return [failure]
        results: list[Scores | ModerationError] = []
        for s in ready:
            try:
                results.extend(self.pipeline.classify([s.prepared] if s.prepared is not None else []))
            except Exception as exc:  # noqa: BLE001 - sorted by _as_failure
                results.append(self._as_failure(exc, s.event_id))
        return results

    def _finish(self, s: Staged, stored: list[tuple[int, str, Analysis]], quarantined: set[int]) -> str:
        """Store the record's outcome (published by the caller, with the rest of
        the batch's), or dead-letter it. ``quarantined`` collects the entries
        flood control quarantined earlier in this batch: an event matched before
        that is matched and routed again, so no further copy is removed on the
        strength of a quarantined entry."""
        if s.outcome is not None:
            return s.outcome
        if isinstance(s.classification, ModerationError):
            return self._dead_letter(s.record, s.classification, s.event_id)
        assert s.analysis is not None
        try:
            analysis = s.analysis
            if quarantined and any(m.entry_id in quarantined for m in analysis.matches):
                analysis = self.pipeline.rematch(analysis)
            item_id, outcome, newly_quarantined = self._persist(analysis)
            quarantined.update(newly_quarantined)
            stored.append((item_id, outcome, analysis))
            return outcome
        except Exception as exc:  # noqa: BLE001 - sorted by _as_failure
            return self._dead_letter(s.record, self._as_failure(exc, s.event_id), s.event_id)

    def _as_failure(self, exc: Exception, event_id: str | None) -> ModerationError:
        """The record's own problem, as the error its dead letter carries;
        transient and fatal errors are re-raised for the caller."""
        if isinstance(exc, InvalidInput):
            return exc
        if isinstance(exc, FatalError) or is_transient(exc):
            raise exc
        if not isinstance(exc, DBAPIError):
            log.exception("unexpected error handling a record", extra={"event_id": event_id}, exc_info=exc)
        return deadletters.unexpected_failure(exc)

    def _persist(self, analysis: Analysis) -> tuple[int, str, list[int]]:
        """Store one outcome (item, automatic decision in the outbox, flood counts);
        returns (item id, outcome name, entries flood control quarantined)."""
        started = time.perf_counter()
        with self.sessions() as session:
            item_id, created, quarantined = outcomes.record_analysis(
                session, analysis, self.publish_allow, self.flood, self.settings
            )
        self.metrics.stage_seconds.labels("persist").observe(time.perf_counter() - started)
        for entry_id in quarantined:
            self.metrics.bank_entries_quarantined.inc()
            log.warning("bank entry quarantined by flood control", extra={"entry_id": entry_id})
        if quarantined:
            # This worker stops acting on the entry with its very next upload;
            # the others follow within BANK_REFRESH_SECONDS. If the refresh fails,
            # the rest of the batch is handed back and handled after it.
            try:
                self.refresh_banks(force=True)
            except Exception as exc:
                self._last_refresh = float("-inf")
                raise TransientError(f"bank refresh after a quarantine failed: {exc}") from exc
        return item_id, analysis.verdict.route.value if created else "duplicate", quarantined

    def _account(self, outcome: str, analysis: Analysis) -> None:
        """Metrics and the log line of one published outcome."""
        automatic = AUTOMATIC_DECISIONS.get(outcome)
        if automatic and (outcome != "allow" or self.publish_allow):
            self.metrics.decisions.labels(*automatic).inc()
        self.metrics.events_consumed.labels(outcome).inc()
        log.info(
            "event processed",
            extra={
                "event_id": analysis.event.event_id,
                "outcome": outcome,
                "priority": analysis.verdict.priority,
                "score": analysis.score,
                "models": analysis.model_version,
                "matches": len(analysis.matches),
            },
        )

    def _publish(self, item_ids: list[int]) -> None:
        started = time.perf_counter()
        outbox.publish_pending(
            self.sessions,
            self.send_decision,
            item_ids=item_ids,
            on_published=lambda _d: self.metrics.decisions_published.inc(),
        )
        self.metrics.stage_seconds.labels("publish").observe(time.perf_counter() - started)

    def _dead_letter(self, record: Any, error: ModerationError, event_id: str | None) -> str:
        with self.sessions() as session:
            row, created = deadletters.record_dead_letter(session, record, error, event_id)
        if not created:
            return self._dead_letter_again(row.id)
        # Counted once stored: a broker outage while producing it must not hide it.
        self.metrics.dead_letters.labels(error.code).inc()
        self.metrics.events_consumed.labels("dead_letter").inc()
        deadletters.publish_pending(self.sessions, self.send_dead_letter, ids=[row.id])
        log.warning(
            "event dead-lettered",
            extra={
                "error_class": error.code,
                "error": str(error)[:300],
                "partition": record.partition,
                "offset": record.offset,
                "event_id": event_id,
            },
        )
        return "dead_letter"

    def _dead_letter_again(self, dead_letter_id: int) -> str:
        deadletters.publish_pending(self.sessions, self.send_dead_letter, ids=[dead_letter_id])
        self.metrics.events_consumed.labels("duplicate").inc()
        return "duplicate"

    # -- periodic work ---------------------------------------------------------
    def refresh_banks(self, force: bool = False) -> int:
        """Apply bank changes made since the last refresh (all entries on the first)."""
        now = time.monotonic()
        if not force and now - self._last_refresh < self.bank_refresh_seconds:
            return 0
        index = self.pipeline.index
        applied = self.feeder.refresh()
        self._last_refresh = now
        self.metrics.bank_index_entries.set(len(index))
        if applied:
            log.info("bank index updated", extra={"applied": applied, "size": len(index)})
        return applied

    def sweep_outbox(self) -> int:
        now = time.monotonic()
        if now - self._last_sweep < OUTBOX_SWEEP_SECONDS:
            return 0
        self._last_sweep = now
        published = outbox.publish_pending(
            self.sessions, self.send_decision, on_published=lambda _d: self.metrics.decisions_published.inc()
        )
        return published + deadletters.publish_pending(self.sessions, self.send_dead_letter)
