"""A consumer's readiness: its loop, its database and its broker, with a
reason an operator can act on (the probe body never carries driver text)."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

import pytest

from moderation import readiness
from moderation.config import load_settings
from moderation.embedded import free_port
from moderation.events import kafka
from moderation.storage.db import make_engine, make_sessionmaker


@dataclass
class Loop:
    last_loop_at: float
    outage: str | None = None


@pytest.fixture
def sqlite_sessions(sqlite_url):
    return make_sessionmaker(make_engine(sqlite_url))


def test_ready_with_a_live_loop_a_database_and_a_broker(sqlite_sessions, kafka_bootstrap):
    settings = load_settings({}, kafka_bootstrap_servers=kafka_bootstrap)
    ok, detail = readiness.consumer(Loop(time.monotonic()), sqlite_sessions, settings)()
    assert ok and detail == {"loop_alive": True, "database": True, "broker": True}


def test_a_stale_loop_is_not_ready(sqlite_sessions, kafka_bootstrap):
    settings = load_settings({}, kafka_bootstrap_servers=kafka_bootstrap)
    ok, detail = readiness.consumer(Loop(time.monotonic() - 200), sqlite_sessions, settings)()
    assert not ok and detail["error"] == "the consume loop has not run for 2 minutes"


def test_a_paused_loop_is_not_ready_while_the_broker_is_out(sqlite_sessions, kafka_bootstrap):
    settings = load_settings({}, kafka_bootstrap_servers=kafka_bootstrap)
    ok, detail = readiness.consumer(Loop(time.monotonic(), "broker"), sqlite_sessions, settings)()
    assert not ok and detail["broker"] is False and "KAFKA_BOOTSTRAP_SERVERS" in detail["error"]


def test_no_broker_listening_is_not_ready(sqlite_sessions):
    settings = load_settings({}, kafka_bootstrap_servers=f"127.0.0.1:{free_port()}")
    ok, detail = readiness.consumer(Loop(time.monotonic()), sqlite_sessions, settings)()
    assert not ok
    assert detail == {
        "loop_alive": True,
        "database": True,
        "broker": False,
        "error": readiness.BROKER_DOWN,
    }


def test_a_hung_broker_that_still_accepts_connections_is_not_reachable():
    with socket.socket() as listener:  # accepts (the kernel's backlog), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        started = time.monotonic()
        assert not kafka.broker_reachable(load_settings({}, kafka_bootstrap_servers=address), timeout_s=0.5)
        assert time.monotonic() - started < 3


def test_any_answering_bootstrap_broker_is_enough(kafka_bootstrap):
    dead = f"127.0.0.1:{free_port()}"
    assert kafka.broker_reachable(load_settings({}, kafka_bootstrap_servers=f"{dead},{kafka_bootstrap}"))


def test_a_database_that_does_not_answer_is_named_without_driver_text(sqlite_sessions):
    dead = make_sessionmaker(make_engine(f"postgresql://u:secret@127.0.0.1:{free_port()}/x"))
    ok, detail = readiness.database(dead)
    assert not ok and detail == {"database": False, "error": readiness.DATABASE_DOWN}
