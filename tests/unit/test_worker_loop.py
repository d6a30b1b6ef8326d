"""The worker's consumer loop against a simulated consumer: outages pause the
partitions and hand records back, failed commits rewind, nothing in hand is
skipped, and a stopping worker settles a rebalance before it leaves. Records are
"handled" by a stand-in for ``handle_batch``; the real one is covered by
tests/integration/test_worker_handle.py and the loop end to end by tests/e2e."""

from __future__ import annotations

import random
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest
from kafka import TopicPartition
from kafka.errors import KafkaConnectionError, RebalanceInProgressError
from prometheus_client import CollectorRegistry
from sqlalchemy.exc import OperationalError

from moderation.events import worker as worker_module
from moderation.events.worker import Worker
from moderation.hashing.index import BankIndex
from moderation.metrics import Metrics

TOPIC = "uploads"


class FakeConsumer:
    """A consumer over an in-memory log: positions, pause, seek, commit, poll."""

    def __init__(self, partitions: dict[int, int], max_records: int = 10) -> None:
        self.log = {TopicPartition(TOPIC, p): n for p, n in partitions.items()}
        self.position = dict.fromkeys(self.log, 0)
        self.committed = dict.fromkeys(self.log, 0)
        self.assigned = set(self.log)
        self.paused_set: set[TopicPartition] = set()
        self.max_records = max_records
        self.polls = 0
        self.seeks: list[tuple[int, int]] = []
        self.commit_error: Any = None  # raised (once) by the next commit
        self.rejoin_polls = 0  # need_rejoin() is True for this many more polls
        self.closed = False
        self.config = {"heartbeat_interval_ms": 50}
        self._coordinator = SimpleNamespace(need_rejoin=lambda: self.rejoin_polls > 0)
        self.injected: dict[TopicPartition, list[Any]] = {}

    def subscription(self) -> set[str]:
        return {TOPIC}

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def paused(self) -> set[TopicPartition]:
        return set(self.paused_set)

    def pause(self, *tps: TopicPartition) -> None:
        self.paused_set.update(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.paused_set.difference_update(tps)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        if tp not in self.assigned:
            raise ValueError("Unassigned partition")
        self.seeks.append((tp.partition, offset))
        self.position[tp] = offset

    def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        if self.commit_error is not None:
            error, self.commit_error = self.commit_error, None
            raise error
        for tp, meta in offsets.items():
            self.committed[tp] = meta.offset

    def poll(self, timeout_ms: int = 0) -> dict[TopicPartition, list[Any]]:
        self.polls += 1
        if self.rejoin_polls:
            self.rejoin_polls -= 1
        if self.injected:
            out, self.injected = self.injected, {}
            for tp, records in out.items():
                self.position[tp] = records[-1].offset + 1
            return out
        out = {}
        for tp in sorted(self.assigned - self.paused_set):
            start, end = self.position[tp], min(self.log[tp], self.position[tp] + self.max_records)
            if start < end:
                out[tp] = [_record(tp.partition, o) for o in range(start, end)]
                self.position[tp] = end
        if not out:
            time.sleep(min(timeout_ms, 5) / 1000)
        return out

    def close(self) -> None:
        self.closed = True


def _record(partition: int, offset: int) -> Any:
    return SimpleNamespace(topic=TOPIC, partition=partition, offset=offset, key=b"k", value=b"{}")


def _database_down() -> OperationalError:
    return OperationalError("SELECT 1", {}, Exception("connection refused"))


class Handler:
    """Stands in for Worker.handle_batch: takes up to ``size`` records, fails on demand."""

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self.handled: list[tuple[int, int]] = []
        self.calls = 0
        self.fail_on: dict[int, BaseException] = {}  # call number -> raised instead

    def __call__(self, records: list[Any]) -> list[str]:
        self.calls += 1
        if self.calls in self.fail_on:
            raise self.fail_on[self.calls]
        taken = records[: self.size]
        self.handled += [(r.partition, r.offset) for r in taken]
        return ["review"] * len(taken)


@pytest.fixture
def make() -> Any:
    def build(consumer: FakeConsumer, handler: Handler) -> Worker:
        worker = Worker(
            consumer=consumer,  # type: ignore[arg-type]
            sessions=None,  # type: ignore[arg-type]
            pipeline=SimpleNamespace(index=BankIndex()),  # type: ignore[arg-type]
            send_decision=lambda *_a: None,
            send_dead_letter=lambda *_a: None,
            metrics=Metrics(CollectorRegistry()),
            batch_size=handler.size,
        )
        worker.handle_batch = handler  # type: ignore[method-assign]
        worker.refresh_banks = lambda force=False: 0  # type: ignore[method-assign]
        worker.sweep_outbox = lambda: 0  # type: ignore[method-assign]
        return worker

    return build


def test_a_database_outage_pauses_everything_and_hands_the_records_back(make):
    consumer = FakeConsumer({0: 10, 1: 5})
    handler = Handler(size=4)
    worker = make(consumer, handler)
    handler.fail_on = {2: _database_down()}  # the second batch fails
    worker._handle_polled(consumer.poll())

    tp0, tp1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)
    assert consumer.committed == {tp0: 4, tp1: 0}  # the first batch only
    assert consumer.position == {tp0: 4, tp1: 0}  # the rest handed back, both partitions
    assert consumer.paused() == {tp0, tp1}
    assert worker._outage == "database"
    assert (
        worker.metrics.registry.get_sample_value(
            "moderation_transient_errors_total", {"dependency": "database"}
        )
        == 1
    )


def test_a_commit_refused_by_a_rebalance_rewinds_what_was_not_handled(make):
    """The partitions stay with this worker through the rebalance and keep their
    fetch position: without the rewind, the records after the failed commit
    (and those of the next partition) would never be handled."""
    consumer = FakeConsumer({0: 10, 1: 5})
    handler = Handler(size=4)
    worker = make(consumer, handler)
    consumer.commit_error = RebalanceInProgressError()
    worker._handle_polled(consumer.poll())

    tp0, tp1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)
    assert handler.handled == [(0, 0), (0, 1), (0, 2), (0, 3)]
    assert consumer.position == {tp0: 4, tp1: 0}
    assert worker._outage is None and not consumer.paused()  # a rebalance is no outage


def test_while_paused_the_worker_keeps_polling_and_resumes_after_the_backoff(make):
    consumer = FakeConsumer({0: 3, 1: 3})
    worker = make(consumer, Handler())
    worker._enter_outage(_database_down())
    newcomer = TopicPartition(TOPIC, 2)
    consumer.log[newcomer] = 5  # assigned by a rebalance during the outage, unpaused, and fetched
    consumer.position[newcomer] = consumer.committed[newcomer] = 0
    consumer.assigned.add(newcomer)
    consumer.injected = {newcomer: [_record(2, 0), _record(2, 1)]}
    started = time.monotonic()
    worker._wait_out_outage()

    assert 0.15 < time.monotonic() - started < 2
    assert consumer.polls >= 2  # stays in the group: polls throughout
    assert (2, 0) in consumer.seeks  # what the rebalance brought is handed back
    assert not consumer.paused() and worker._outage is None


def test_the_backoff_doubles_to_one_second_while_failures_go_on_and_resets_after_a_success(make):
    """Capped at 1 s, so the worker resumes within about a second of the
    dependency's return however long it was gone."""
    consumer = FakeConsumer({0: 3})
    worker = make(consumer, Handler())
    waits = []
    for _ in range(4):
        worker._enter_outage(_database_down())
        waits.append(round(worker._resume_at - time.monotonic(), 1))
    assert waits == [0.2, 0.4, 0.8, 1.0]
    worker._outage = None
    consumer.resume(*consumer.paused())
    worker._handle_polled(consumer.poll())
    assert worker._outages.failures == 0


def test_an_unreachable_broker_on_poll_is_an_outage_not_a_crash(make):
    consumer = FakeConsumer({0: 3})
    worker = make(consumer, Handler())

    def unreachable(timeout_ms: int = 0) -> Any:
        raise KafkaConnectionError("104 ECONNRESET")

    consumer.poll = unreachable  # type: ignore[method-assign]
    assert worker._poll(500) is None
    assert worker._outage == "broker"


def test_random_failures_never_skip_a_record(make, monkeypatch):
    """Transient failures, refused commits and rewinds at random: every record is
    handled, and no offset is committed past a record that was not."""
    monkeypatch.setattr(worker_module, "INITIAL_BACKOFF_S", 0.005)
    monkeypatch.setattr(worker_module, "MAX_BACKOFF_S", 0.02)
    rng = random.Random(5)
    consumer = FakeConsumer({0: 60, 1: 45, 2: 30}, max_records=7)
    handler = Handler(size=3)
    worker = make(consumer, handler)
    violations: list[str] = []
    real_commit = consumer.commit

    def checked_commit(offsets: dict[TopicPartition, Any]) -> None:
        if rng.random() < 0.2:
            raise RebalanceInProgressError()
        if rng.random() < 0.1:
            raise KafkaConnectionError("broker gone")
        for tp, meta in offsets.items():
            missing = set(range(meta.offset)) - {o for p, o in handler.handled if p == tp.partition}
            if missing:
                violations.append(f"{tp.partition}: committed {meta.offset} without {sorted(missing)[:5]}")
        real_commit(offsets)

    def flaky(records: list[Any]) -> list[str]:
        if rng.random() < 0.15:
            raise _database_down()
        return Handler.__call__(handler, records)

    consumer.commit = checked_commit  # type: ignore[method-assign]
    worker.handle_batch = flaky  # type: ignore[method-assign]
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while consumer.committed != consumer.log and time.monotonic() < deadline:
        time.sleep(0.05)
    worker.stop()
    thread.join(5)
    assert consumer.committed == consumer.log
    assert not violations, violations[:3]
    assert {(p, o) for p, o in handler.handled} == {
        (tp.partition, o) for tp, n in consumer.log.items() for o in range(n)
    }


def test_a_stopping_worker_settles_a_rebalance_before_leaving(make):
    consumer = FakeConsumer({0: 3, 1: 3})
    worker = make(consumer, Handler())
    consumer.rejoin_polls = 5
    worker.close(settle_s=5)
    assert consumer.polls >= 5 and consumer.rejoin_polls == 0
    assert consumer.paused() == consumer.assignment()  # nothing fetched while settling
    assert consumer.closed


def test_without_a_rebalance_leaving_costs_one_heartbeat_interval(make):
    consumer = FakeConsumer({0: 3})
    worker = make(consumer, Handler())
    started = time.monotonic()
    worker.close(settle_s=5)
    assert time.monotonic() - started < 0.5
    assert consumer.closed


def test_a_busy_worker_polls_again_before_max_poll_interval_runs_out(make):
    """Slow media or a slow model: after half of max.poll.interval the rest of
    the poll is handed back, so the member never drops out of its group."""
    consumer = FakeConsumer({0: 10, 1: 10})
    consumer.config["max_poll_interval_ms"] = 200
    handler = Handler(size=2)
    worker = make(consumer, handler)

    def slow(records: list[Any]) -> list[str]:
        time.sleep(0.04)
        return Handler.__call__(handler, records)

    worker.handle_batch = slow  # type: ignore[method-assign]
    worker._polled_at = time.monotonic()
    worker._handle_polled(consumer.poll())
    handled = len(handler.handled)
    assert 2 <= handled < 20
    tp0, tp1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)
    assert consumer.position[tp0] + consumer.position[tp1] == handled  # the rest handed back
    assert consumer.committed[tp0] + consumer.committed[tp1] == handled


def test_a_pending_rebalance_is_joined_after_the_batch_in_hand(make):
    consumer = FakeConsumer({0: 10, 1: 10})
    handler = Handler(size=4)
    worker = make(consumer, handler)
    batch = consumer.poll()
    consumer.rejoin_polls = 1  # the coordinator asks this member to rejoin
    worker._handle_polled(batch)
    assert handler.handled == [(0, 0), (0, 1), (0, 2), (0, 3)]
    assert consumer.position == {TopicPartition(TOPIC, 0): 4, TopicPartition(TOPIC, 1): 0}


def test_while_the_probe_fails_nothing_is_retried_and_the_outage_is_logged_once(make, caplog):
    """A long outage costs probes, not batches (no media fetches or classifier
    runs), and one log line; the worker resumes on the first probe that passes."""
    consumer = FakeConsumer({0: 6})
    handler = Handler()
    worker = make(consumer, handler)
    worker._outages.initial_s = worker._outages.max_s = 0.01
    probes: list[str] = []

    def probe(dependency: str) -> None:
        probes.append(dependency)
        if len(probes) < 20:
            raise _database_down()

    worker.probe = probe
    handler.fail_on = {1: _database_down()}
    with caplog.at_level("INFO", logger="moderation.events.worker"):
        worker._handle_polled(consumer.poll())
        assert worker._outage == "database"
        worker._wait_out_outage()

    assert probes == ["database"] * 20
    assert handler.calls == 1  # the batch was not retried while the database was down
    assert worker._outage is None and not consumer.paused()
    messages = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("partitions paused: database unavailable") for m in messages) == 1
    assert messages.count("partitions resumed") == 1
    worker._handle_polled(consumer.poll())
    assert [o for _p, o in handler.handled] == list(range(6))
