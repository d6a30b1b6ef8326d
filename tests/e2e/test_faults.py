"""Fault injection: crashes, broker and database outages, rebalances, graceful
shutdown and backpressure, with `moderation worker` processes on the real
broker and PostgreSQL. Every run ends with the same ledger (tests/support/
fault_ledger.py): each record has exactly one outcome, no item has two automatic
decisions, every decision reached the decisions topic (repeats allowed only as
the same idempotency key). The figures of each scenario are printed as a table
at the end of the module and attached to the test report (``record_property``).

Events are cheap on purpose (small pictures, a fixed classifier score, banks for
allow and auto_remove), so that thousands flow in seconds on two cores.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest

from moderation.config import Settings
from moderation.events import kafka
from tests.support.brokers import ProxiedBroker
from tests.support.fault_ledger import (
    CLASSIFIER,
    Figures,
    Streamer,
    Workload,
    audit,
    build_workload,
    outcome_count,
    publish_all,
    read_topic,
    table,
    wait_for_outcomes,
)
from tests.support.http import http_get
from tests.support.tcp_proxy import TcpProxy
from tests.support.worker_process import WorkerPool, WorkerProcess, worker_env

pytestmark = pytest.mark.e2e

SESSION_MS = 3000
PARTITIONS = 6
BROKER_OUTAGE_S = 6.0
FIGURES: list[Figures] = []


@pytest.fixture(scope="module", autouse=True)
def _print_figures(request: pytest.FixtureRequest) -> Iterator[None]:
    """The figures of every scenario of this module, as one table at its end."""
    yield
    if not FIGURES:
        return
    text = "\nfault-injection figures\n" + table(FIGURES) + "\n"
    capture = request.config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        with capture.global_and_fixture_disabled():
            print(text)
    else:
        print(text)


@pytest.fixture
def report(record_property: Callable[[str, Any], None]) -> Callable[[Figures], None]:
    def add(figures: Figures) -> None:
        FIGURES.append(figures)
        record_property("figures", figures.row())
        print(figures.row())

    return add


def _settings(settings_factory: Callable[..., Settings], **overrides: Any) -> Settings:
    values: dict[str, Any] = dict(
        classifier_model=CLASSIFIER,
        flood_max_matches=0,
        kafka_session_timeout_ms=SESSION_MS,
        kafka_max_poll_records=20,
        media_allowed_hosts="127.0.0.1",
        bank_refresh_seconds=0.5,
    )
    values.update(overrides)
    settings = settings_factory(**values)
    kafka.ensure_topics(settings, partitions=PARTITIONS)
    return settings


def _wait(predicate: Callable[[], Any], timeout: float, what: str, pool: WorkerPool | None = None) -> float:
    started = time.monotonic()
    while time.monotonic() < started + timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"{what} not within {timeout}s" + (f"\n{pool.tails()}" if pool else ""))


def _log_time(record: dict[str, Any]) -> float:
    return datetime.strptime(record["ts"], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _assignments(worker: WorkerProcess) -> list[tuple[float, list[int]]]:
    """(time, partitions) of each assignment the worker logged."""
    return [
        (_log_time(r), list(r["partitions"]))
        for r in worker.log_lines()
        if r.get("msg") == "partitions assigned"
    ]


POLL_TIMEOUT = re.compile(r"poll timeout has expired|max_poll_interval", re.IGNORECASE)


# -- 1. crashes -----------------------------------------------------------------------
def test_sigkill_at_random_moments_loses_and_doubles_nothing(
    settings_factory, sessions, media_server, kafka_bootstrap, tmp_path, report
):
    settings = _settings(settings_factory, kafka_session_timeout_ms=2000)
    workload = build_workload(sessions, media_server, 2000, seed=1)
    rng = random.Random(20261128)
    started = time.monotonic()
    with WorkerPool(worker_env(settings), tmp_path) as pool:
        pool.add()
        pool.add()
        stream = Streamer(kafka_bootstrap, settings.uploads_topic, workload.records, seconds=12).start()
        last_fault = time.monotonic()
        while pool.kills < 10 or stream.alive:
            # Kill while events are being handled, not while the group rebalances
            # after the last kill: wait for some progress, then a random moment.
            goal = outcome_count(sessions) + rng.randint(1, 40)
            _wait(lambda g=goal: outcome_count(sessions) >= g, 30, "progress between kills", pool)
            time.sleep(rng.uniform(0.0, 0.5))
            victims = pool.alive() if rng.random() < 0.2 else [rng.choice(pool.alive())]
            for victim in victims:  # sometimes every worker at once
                victim.kill()
            time.sleep(rng.uniform(0.0, 0.6))
            for victim in victims:
                victim.start()
            last_fault = time.monotonic()
        stream.join()
        backlog = workload.sent - outcome_count(sessions)
        since_fault = time.monotonic() - last_fault
        try:
            recover = since_fault + wait_for_outcomes(sessions, workload.sent, timeout=150)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{pool.tails()}") from None
        figures = audit(
            "crash (SIGKILL)", sessions, workload, read_topic(kafka_bootstrap, settings.decisions_topic)
        )
        figures.faults = pool.kills
        figures.recover_s = recover
        figures.elapsed_s = time.monotonic() - started
        figures.extra = {"workers": 2, "starts": pool.starts, "backlog_at_last_fault": backlog}
        figures.extra.update(workload.counts())
    report(figures)
    figures.assert_ok()
    assert figures.faults >= 10


PROBES = ("/healthz", "/readyz")


# -- 2. broker outage -------------------------------------------------------------------
def test_broker_outage_cut_and_hung_loses_nothing(settings_factory, sessions, media_server, tmp_path, report):
    with ProxiedBroker(tmp_path / "tansu.log") as broker:
        settings = _settings(settings_factory, kafka_bootstrap_servers=broker.bootstrap)
        workload = build_workload(sessions, media_server, 600, seed=2)
        thirds = [workload.records[i::3] for i in range(3)]
        started = time.monotonic()
        resumed: dict[str, float] = {}
        with WorkerPool(worker_env(settings), tmp_path) as pool:
            pool.add()
            done = 0
            for phase, outage in enumerate(("cut", "hung", None)):
                publish_all(broker.bootstrap, settings.uploads_topic, thirds[phase])
                target = done + len(thirds[phase])
                _wait(
                    lambda d=done: outcome_count(sessions) >= d + 40, 60, "progress before the outage", pool
                )
                if outage is None:
                    break
                if outage == "cut":
                    broker.proxy.cut()
                else:
                    broker.freeze()
                time.sleep(BROKER_OUTAGE_S)
                during = outcome_count(sessions)
                # /readyz reflects the broker (kafka-python itself polls on quietly),
                # while /healthz, the process alone, stays 200: no restart for an outage.
                probes = {(path, http_get(w.base_url + path)[0]) for w in pool.workers for path in PROBES}
                assert probes == {("/healthz", 200), ("/readyz", 503)}, (outage, probes, pool.tails())
                if outage == "cut":
                    broker.proxy.restore()
                else:
                    broker.thaw()
                restored = time.monotonic()
                # progress resumes: new outcomes (there are records left, published before the outage)
                resumed[outage] = _wait(
                    lambda n=during, t=target: outcome_count(sessions) > n or outcome_count(sessions) >= t,
                    90,
                    f"progress after the broker {outage}",
                    pool,
                )
                wait_for_outcomes(sessions, target, timeout=90)
                resumed[f"{outage}_drained"] = time.monotonic() - restored
                _wait(
                    lambda: all(http_get(w.base_url + "/readyz")[0] == 200 for w in pool.workers),
                    30,
                    "ready again after the broker came back",
                    pool,
                )
                done = target
            recover = wait_for_outcomes(sessions, workload.sent, timeout=90)
            figures = audit(
                f"broker outage (cut {BROKER_OUTAGE_S:.0f} s, hung {BROKER_OUTAGE_S:.0f} s)",
                sessions,
                workload,
                read_topic(broker.bootstrap, settings.decisions_topic),
            )
            assert all(w.alive for w in pool.workers), pool.tails()
        figures.faults = 2
        figures.recover_s = max(resumed["cut_drained"], resumed["hung_drained"], recover)
        figures.elapsed_s = time.monotonic() - started
        figures.extra = {k: f"{v:.1f}s" for k, v in resumed.items()}
    report(figures)
    figures.assert_ok()


# -- 2b. broker replaced ------------------------------------------------------------------
def _decision_keys(sessions: Any) -> tuple[set[str], set[str]]:
    """(every decision's idempotency key, those of decisions marked published)."""
    from sqlalchemy import select

    from moderation.storage.models import Decision

    with sessions() as s:
        rows = s.execute(select(Decision.idempotency_key, Decision.published_at)).all()
    return {k for k, _p in rows}, {k for k, p in rows if p is not None}


def test_a_replaced_broker_is_rejoined_and_unacknowledged_decisions_are_republished(
    settings_factory, sessions, media_server, tmp_path, report
):
    """The broker is killed mid-stream and a new, empty one starts at the same
    address; its topics are created again (as an operator would). The workers
    stay up (the new broker knows neither their producer ids nor their group),
    handle every event published to the new broker once, and produce to it every
    stored decision the dead broker had not acknowledged. What the dead broker
    held (acknowledged decisions, events not yet consumed) is gone with it."""
    mix = {"review": 0.55, "allow": 0.2, "auto_remove": 0.15, "dead_letter": 0.1}  # no position-keyed records
    with ProxiedBroker(tmp_path / "tansu.log") as broker:
        settings = _settings(settings_factory, kafka_bootstrap_servers=broker.bootstrap)
        workload = build_workload(sessions, media_server, 600, mix=mix, seed=7)
        before, after = workload.records[:300], workload.records[300:]
        after_ids = {json.loads(v)["event_id"] for _k, v in after}
        started = time.monotonic()
        with WorkerPool(worker_env(settings), tmp_path) as pool:
            pool.add()
            pool.add()
            publish_all(broker.bootstrap, settings.uploads_topic, before)
            _wait(lambda: outcome_count(sessions) >= 100, 60, "progress before the replacement", pool)
            broker.kill()
            replaced_at = time.monotonic()
            time.sleep(1.0)  # an acknowledgement received before the kill is marked published by now
            stored_keys, acknowledged_by_old = _decision_keys(sessions)
            stored_before = _event_ids(sessions)
            broker.start_empty()
            kafka.ensure_topics(settings, partitions=PARTITIONS)
            publish_all(broker.bootstrap, settings.uploads_topic, after)
            first_new = _wait(
                lambda: bool(_event_ids(sessions) & after_ids), 90, "an outcome from the new broker", pool
            )
            _wait(lambda: after_ids <= _event_ids(sessions), 120, "every new event handled", pool)
            recover = wait_for_outcomes(sessions, outcome_count(sessions), timeout=60)
            handled = _event_ids(sessions)
            assert all(w.alive for w in pool.workers), pool.tails()
        # the ledger: every new event and every event handled before, once; every
        # stored decision on a broker, the dead one or the new one
        gone = {eid for eid in workload.expected if eid not in handled}
        assert not gone & after_ids
        audited = Workload(workload.records, {e: k for e, k in workload.expected.items() if e in handled})
        delivered_before = [_Delivered(key) for key in acknowledged_by_old]
        new_topic = read_topic(broker.bootstrap, settings.decisions_topic)
        scenario = "broker replaced (empty, same address)"
        figures = audit(scenario, sessions, audited, delivered_before + new_topic)
        on_new = {json.loads(r.value)["idempotency_key"] for r in new_topic}
    figures.faults = 1
    figures.recover_s = time.monotonic() - replaced_at
    figures.elapsed_s = time.monotonic() - started
    figures.extra = {
        "handled_before_replacement": len(stored_before & set(workload.expected)),
        "events_lost_with_old_broker": len(gone),
        "decisions_acked_by_old_broker": len(acknowledged_by_old),
        "unacked_at_replacement": len(stored_keys - acknowledged_by_old),
        "of_which_on_new_broker": len((stored_keys - acknowledged_by_old) & on_new),
        "first_new_outcome_s": round(first_new, 1),
        "drained_s": round(recover, 1),
    }
    report(figures)
    figures.assert_ok()


class _Delivered:
    """A decision record the dead broker acknowledged (for ``audit``)."""

    def __init__(self, key: str) -> None:
        self.value = json.dumps({"idempotency_key": key}).encode()


def _event_ids(sessions: Any) -> set[str]:
    from sqlalchemy import select

    from moderation.storage.models import DeadLetter, Item

    with sessions() as s:
        items = set(s.scalars(select(Item.event_id)))
        dead = set(s.scalars(select(DeadLetter.event_id).where(DeadLetter.event_id.is_not(None))))
    return items | dead


# -- 3. database outage -------------------------------------------------------------------
def test_database_outage_pauses_partitions_and_keeps_the_group(
    settings_factory, sessions, db_url, media_server, kafka_bootstrap, tmp_path, report
):
    with TcpProxy("127.0.0.1", 5432) as proxy:
        proxied = re.sub(r"@[^/]+/", f"@127.0.0.1:{proxy.port}/", db_url)
        settings = _settings(settings_factory, database_url=proxied)
        workload = build_workload(sessions, media_server, 700, seed=3)
        max_poll_ms = 4000
        env = worker_env(settings, FAULTS_CONSUMER_CONFIG={"max_poll_interval_ms": max_poll_ms})
        started = time.monotonic()
        with WorkerPool(env, tmp_path) as pool:
            first, second = pool.add(), pool.add()
            _wait(lambda: _assignments(first) and _assignments(second), 60, "both workers assigned", pool)
            publish_all(kafka_bootstrap, settings.uploads_topic, workload.records)
            _wait(lambda: outcome_count(sessions) >= 150, 60, "progress before the outage", pool)
            assignments_before = len(_assignments(first)) + len(_assignments(second))
            cut_at = time.time() - 0.001  # log times have millisecond precision
            proxy.cut()
            # Over three times max.poll.interval, and long enough that a backoff
            # doubling from 0.2 s would next retry 10 s after the database returned.
            outage_s = 15.0
            time.sleep(outage_s / 2)
            during = [
                http_get(w.base_url + path)[0] for w in pool.workers for path in ("/healthz", "/readyz")
            ]
            time.sleep(outage_s / 2)
            stuck = outcome_count(sessions)
            proxy.restore()
            resumed = _wait(lambda: outcome_count(sessions) > stuck, 60, "progress after the outage", pool)
            recover = wait_for_outcomes(sessions, workload.sent, timeout=90)
            figures = audit(
                f"database outage ({outage_s:.0f} s, max.poll.interval {max_poll_ms / 1000:.0f} s)",
                sessions,
                workload,
                read_topic(kafka_bootstrap, settings.decisions_topic),
            )
            lines = pool.log_lines()
            paused = [
                r
                for r in lines
                if r.get("msg", "").startswith("partitions paused") and _log_time(r) >= cut_at
            ]
            expired = [r for r in lines if POLL_TIMEOUT.search(r.get("msg", ""))]
            assignments_after = len(_assignments(first)) + len(_assignments(second))
            assert all(w.alive for w in pool.workers), pool.tails()
        figures.faults = 1
        figures.recover_s = resumed + recover
        figures.elapsed_s = time.monotonic() - started
        figures.extra = {
            "first_outcome_after_return_s": round(resumed, 1),
            "drained_s": round(recover, 1),
            "pause_logs": len(paused),
            "rebalances_during": assignments_after - assignments_before,
            "probes_during(healthz,readyz)": during,
        }
    report(figures)
    figures.assert_ok()
    assert paused, "the workers should log that they paused their partitions"
    assert len(paused) <= 2 * len(pool.workers), f"the outage should be logged once, not per retry: {paused}"
    # The dependency is probed at least every second (docs/reliability.md: within
    # 2 s); 5 s leaves room for a loaded machine.
    assert resumed < 5.0, f"the first outcome came {resumed:.1f} s after the database returned"
    assert not expired, f"a worker exceeded max.poll.interval: {expired[:2]}"
    assert assignments_after == assignments_before, "the outage must not cost the group membership"
    assert during == [200, 503, 200, 503], "alive but not ready while the database is down"


# -- 3b. hung database ----------------------------------------------------------------------
def test_a_hung_database_is_reported_as_an_outage_and_healthz_stays_up(
    settings_factory, sessions, db_url, media_server, kafka_bootstrap, tmp_path, report
):
    """PostgreSQL accepts connections and answers nothing (a frozen server, a
    partition behind a proxy: TCP acknowledges, so neither keepalives nor
    tcp_user_timeout fire, and the server never sees the statement to time it
    out). The worker gives up waiting after DATABASE_STATEMENT_TIMEOUT_MS plus
    5 s, logs the outage once, stays in its group with /healthz 200 throughout
    (no restart), and handles everything once when the database answers again."""
    statement_ms = 2000
    hang_s = 20.0
    with TcpProxy("127.0.0.1", 5432) as proxy:
        proxied = re.sub(r"@[^/]+/", f"@127.0.0.1:{proxy.port}/", db_url)
        settings = _settings(
            settings_factory, database_url=proxied, database_statement_timeout_ms=statement_ms
        )
        workload = build_workload(sessions, media_server, 400, seed=8)
        started = time.monotonic()
        with WorkerPool(worker_env(settings), tmp_path) as pool:
            worker = pool.add()
            publish_all(kafka_bootstrap, settings.uploads_topic, workload.records)
            _wait(lambda: outcome_count(sessions) >= 100, 60, "progress before the hang", pool)
            proxy.cut("hang")
            hung_at, hung_wall = time.monotonic(), time.time()
            healthz: list[int] = []
            reported_s: float | None = None
            while time.monotonic() - hung_at < hang_s:
                healthz.append(http_get(worker.base_url + "/healthz")[0])
                if reported_s is None and _outage_logs(worker, hung_wall):
                    reported_s = time.monotonic() - hung_at
                time.sleep(0.5)
            stuck = outcome_count(sessions)
            outage_logs = _outage_logs(worker, hung_wall)
            proxy.restore()
            resumed = _wait(lambda: outcome_count(sessions) > stuck, 60, "progress after the hang", pool)
            recover = wait_for_outcomes(sessions, workload.sent, timeout=120)
            figures = audit(
                f"hung database ({hang_s:.0f} s, statement timeout {statement_ms / 1000:.0f} s)",
                sessions,
                workload,
                read_topic(kafka_bootstrap, settings.decisions_topic),
            )
            assert worker.alive, pool.tails()
    figures.faults = 1
    figures.recover_s = resumed + recover
    figures.elapsed_s = time.monotonic() - started
    figures.extra = {
        "outage_logged_after_s": None if reported_s is None else round(reported_s, 1),
        "outage_log_lines": len(outage_logs),
        "healthz_200": f"{healthz.count(200)}/{len(healthz)}",
        "first_outcome_after_return_s": round(resumed, 1),
    }
    report(figures)
    figures.assert_ok()
    # At most the statement timeout plus 5 s for a statement in flight, then 5 s
    # to connect again (connect_timeout): about 12 s; 30 s leaves room for a loaded machine.
    assert reported_s is not None and reported_s < 30, f"no outage logged within 30 s: {pool.tails()}"
    assert len(outage_logs) <= 2, f"the outage should be logged once, not per retry: {outage_logs}"
    assert set(healthz) == {200}, f"/healthz must stay 200 while the database hangs: {healthz}"


def _outage_logs(worker: WorkerProcess, since_wall: float) -> list[dict[str, Any]]:
    return [
        r
        for r in worker.log_lines()
        if r.get("msg", "").startswith("partitions paused: database") and _log_time(r) >= since_wall
    ]


# -- 4. rebalances ----------------------------------------------------------------------
def test_workers_joining_and_leaving_mid_stream(
    settings_factory, sessions, media_server, kafka_bootstrap, tmp_path, report
):
    settings = _settings(settings_factory)
    workload = build_workload(sessions, media_server, 1200, seed=4)
    rng = random.Random(4)
    started = time.monotonic()
    with WorkerPool(worker_env(settings), tmp_path) as pool:
        pool.add()
        stream = Streamer(kafka_bootstrap, settings.uploads_topic, workload.records, seconds=12).start()
        changes = 0
        plan = ["add", "add", "term", "add", "kill", "term", "add"]
        for step in plan:
            time.sleep(rng.uniform(1.2, 2.4))
            alive = pool.alive()
            if step == "add" or len(alive) < 2:
                dead = pool.dead()
                (dead[0].start() if dead and rng.random() < 0.5 else pool.add())
            elif step == "term":
                assert rng.choice(alive).terminate(timeout=30) == 0
            else:
                rng.choice(alive).kill()
            changes += 1
        last_change = time.monotonic()
        stream.join()
        backlog = workload.sent - outcome_count(sessions)
        try:
            recover = time.monotonic() - last_change + wait_for_outcomes(sessions, workload.sent, timeout=120)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{pool.tails()}") from None
        figures = audit(
            "rebalance (join/leave)",
            sessions,
            workload,
            read_topic(kafka_bootstrap, settings.decisions_topic),
        )
        figures.faults = changes
        figures.recover_s = recover
        figures.elapsed_s = time.monotonic() - started
        figures.extra = {
            "processes": len(pool.workers),
            "starts": pool.starts,
            "alive_at_end": len(pool.alive()),
            "backlog_at_last_change": backlog,
        }
    report(figures)
    figures.assert_ok()


# -- 5. graceful shutdown -------------------------------------------------------------------
def test_sigterm_hands_partitions_over_well_within_the_session_timeout(
    settings_factory, sessions, media_server, kafka_bootstrap, tmp_path, report
):
    session_ms = 10_000
    settings = _settings(settings_factory, kafka_session_timeout_ms=session_ms)
    workload = build_workload(sessions, media_server, 300, seed=5)
    env = worker_env(settings, FAULTS_CLASSIFIER_DELAY_S=0.15)  # a batch is in flight most of the time
    started = time.monotonic()
    with WorkerPool(env, tmp_path) as pool:
        leaving, staying = pool.add(), pool.add()
        _wait(
            lambda: (
                len({p for w in pool.workers for _t, ps in _assignments(w)[-1:] for p in ps}) == PARTITIONS
                and all(_assignments(w) and _assignments(w)[-1][1] for w in pool.workers)
            ),
            60,
            "both workers assigned",
            pool,
        )
        publish_all(kafka_bootstrap, settings.uploads_topic, workload.records)
        _wait(lambda: outcome_count(sessions) >= 100, 60, "progress", pool)
        sent_at = time.time()
        code = leaving.terminate(timeout=30)
        exit_s = time.time() - sent_at
        handover = _wait(
            lambda: any(len(ps) == PARTITIONS and t >= sent_at for t, ps in _assignments(staying)),
            session_ms / 1000,
            "the staying worker holding every partition",
            pool,
        )
        takeover_at = next(t for t, ps in _assignments(staying) if len(ps) == PARTITIONS and t >= sent_at)
        recover = wait_for_outcomes(sessions, workload.sent, timeout=90)
        _status, metrics = http_get(staying.base_url + "/metrics")
        redelivered = _sample(metrics, 'moderation_events_consumed_total{outcome="duplicate"}')
        figures = audit(
            "graceful shutdown (SIGTERM)",
            sessions,
            workload,
            read_topic(kafka_bootstrap, settings.decisions_topic),
        )
        lines = leaving.log_lines()
    figures.faults = 1
    figures.recover_s = recover
    figures.elapsed_s = time.monotonic() - started
    figures.extra = {
        "exit_s": round(exit_s, 2),
        "handover_s": round(takeover_at - sent_at, 2),
        "session_timeout_s": session_ms / 1000,
        "redelivered": int(redelivered),
    }
    report(figures)
    figures.assert_ok()
    assert code == 0, leaving.log_tail()
    assert any(r.get("msg") == "worker stopping" for r in lines)
    # tansu answers a rejoin after about half the session timeout (Apache Kafka: at once)
    assert takeover_at - sent_at < session_ms / 1000, (handover, takeover_at - sent_at)
    assert redelivered == 0, "a graceful stop commits what it finished: nothing is handled twice"


def _sample(metrics: str, name: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


# -- 6. backpressure ------------------------------------------------------------------------
def test_a_slow_classifier_does_not_grow_memory_while_the_topic_is_full(
    settings_factory, sessions, media_server, kafka_bootstrap, tmp_path, report
):
    settings = _settings(settings_factory, kafka_max_poll_records=50)
    workload = build_workload(sessions, media_server, 1200, seed=6)
    # ~6 KiB records, ~7 MiB on the topic: the bytes are in the keys, which the
    # worker reads but does not store, so that draining the topic stays quick.
    workload.records = [(k + b"#" + b"k" * 6144, v) for k, v in workload.records]
    publish_all(kafka_bootstrap, settings.uploads_topic, workload.records)
    started = time.monotonic()
    slow = WorkerProcess(
        worker_env(settings, FAULTS_CLASSIFIER_DELAY_S=0.3), tmp_path / "slow.log", "slow"
    ).start()
    try:
        _wait(lambda: outcome_count(sessions) >= 20, 60, "the slow worker started")
        samples: list[tuple[float, int, int]] = []
        sample_started = time.monotonic()
        while time.monotonic() - sample_started < 12:
            samples.append((time.monotonic() - sample_started, slow.rss_kib(), outcome_count(sessions)))
            time.sleep(0.5)
        stopped_at = time.monotonic()
        assert slow.terminate(timeout=30) == 0, slow.log_tail()
        slow_exit = time.monotonic() - stopped_at
    finally:
        slow.stop()
    handled_slowly = samples[-1][2]
    third = len(samples) // 3
    early = max(rss for _t, rss, _n in samples[:third])
    late = max(rss for _t, rss, _n in samples[-third:])
    rate = (samples[-1][2] - samples[0][2]) / (samples[-1][0] - samples[0][0])

    fast = WorkerProcess(worker_env(settings), tmp_path / "fast.log", "fast").start()
    try:
        recover = wait_for_outcomes(sessions, workload.sent, timeout=90)
    finally:
        fast.stop()
    figures = audit(
        "backpressure (slow classifier)",
        sessions,
        workload,
        read_topic(kafka_bootstrap, settings.decisions_topic),
    )
    figures.faults = 1
    figures.recover_s = recover
    figures.elapsed_s = time.monotonic() - started
    figures.extra = {
        "rss_first_third_max_MiB": round(early / 1024, 1),
        "rss_last_third_max_MiB": round(late / 1024, 1),
        "rss_min_MiB": round(min(rss for _t, rss, _n in samples) / 1024, 1),
        "slow_rate_ev_s": round(rate, 1),
        "backlog_when_sampled": workload.sent - handled_slowly,
        "slow_exit_s": round(slow_exit, 2),
    }
    report(figures)
    figures.assert_ok()
    assert workload.sent - handled_slowly > 600, "the topic should still hold most events while sampling"
    assert late <= early * 1.05 + 8 * 1024, f"RSS grew from {early} KiB to {late} KiB: {samples}"


# -- 7. a crash-looping peer ------------------------------------------------------------------
CRASH_LOOP_S = 25.0
KILL_EVERY_S = 5.0
ALONE_S = 6.0


def _consumed(worker: WorkerProcess) -> float:
    """Records the worker gave an outcome so far (its moderation_events_consumed_total)."""
    _status, metrics = http_get(worker.base_url + "/metrics")
    return sum(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("moderation_events_consumed_total{")
    )


def _longest_stall(worker: WorkerProcess, since_wall: float, until_wall: float) -> float:
    """The longest time between two outcomes the worker logged in the window."""
    times = [since_wall, until_wall] + [
        _log_time(r)
        for r in worker.log_lines()
        if r.get("msg") in ("event processed", "event dead-lettered")
        and since_wall <= _log_time(r) <= until_wall
    ]
    times.sort()
    return max(b - a for a, b in zip(times, times[1:], strict=False))


# Dynamic membership measured the same or worse (docs/reliability.md); the suite
# runs the configuration the manifests deploy.
@pytest.mark.parametrize("membership", ["static"])
def test_a_crash_looping_peer_leaves_the_healthy_worker_working(
    settings_factory, sessions, media_server, kafka_bootstrap, tmp_path, report, membership
):
    """One worker runs alone, then beside a peer that is SIGKILLed every 5 s and
    started again at once, for 25 s (the issue: the survivor handled nothing for
    50 s). Measured: the healthy worker's throughput during the crash loop
    against its throughput alone, and its longest stall. Static membership
    (KAFKA_GROUP_INSTANCE_ID, KIP-345) is the remedy on Apache Kafka: a member
    back under its id within the session timeout rejoins without a rebalance.
    The target, half the throughput kept, is asserted on such a broker; the
    embedded tansu 0.6.0 rebalances on every restart whatever the membership
    (docs/reliability.md), so there the figure is reported and the shortfall
    marked as an expected failure, never hidden."""
    session_ms = Settings().kafka_session_timeout_ms  # the production default
    settings = _settings(settings_factory, kafka_session_timeout_ms=session_ms)
    mix = {"review": 0.55, "allow": 0.2, "auto_remove": 0.15, "dead_letter": 0.1}  # no position-keyed records
    workload = build_workload(sessions, media_server, 3000, mix=mix, seed=11)
    publish_all(kafka_bootstrap, settings.uploads_topic, workload.records)

    def env(name: str) -> dict[str, str]:
        instance = {"KAFKA_GROUP_INSTANCE_ID": name} if membership == "static" else {}
        return {**worker_env(settings), **instance}

    started = time.monotonic()
    healthy = WorkerProcess(env("healthy"), tmp_path / "healthy.log", "healthy").start()
    peer = WorkerProcess(env("peer"), tmp_path / "peer.log", "peer")
    try:
        _wait(lambda: healthy.alive and _consumed(healthy) >= 100, 90, "the healthy worker under way")
        first, first_at = _consumed(healthy), time.monotonic()
        time.sleep(ALONE_S)
        alone = (_consumed(healthy) - first) / (time.monotonic() - first_at)

        loop_wall, loop_at, before = time.time(), time.monotonic(), _consumed(healthy)
        peer.start()
        while time.monotonic() - loop_at < CRASH_LOOP_S:
            time.sleep(KILL_EVERY_S)
            peer.kill()
            peer.start()
        during = (_consumed(healthy) - before) / (time.monotonic() - loop_at)
        stall = _longest_stall(healthy, loop_wall, time.time())
        peer.kill()
        assert healthy.alive, healthy.log_tail()
        # the healthy worker's outbox sweep publishes what the killed peer stored
        wait_for_outcomes(sessions, outcome_count(sessions), timeout=60)
        assert healthy.terminate(timeout=30) == 0, healthy.log_tail()
        wait_for_outcomes(sessions, outcome_count(sessions), timeout=10)
        handled = _event_ids(sessions)
        audited = Workload(workload.records, {e: k for e, k in workload.expected.items() if e in handled})
        figures = audit(
            f"crash-looping peer ({membership} membership)",
            sessions,
            audited,
            read_topic(kafka_bootstrap, settings.decisions_topic),
        )
    finally:
        peer.stop()
        healthy.stop()
    ratio = during / alone
    figures.faults = peer.kills
    figures.elapsed_s = time.monotonic() - started
    figures.extra = {
        "alone_ev_s": round(alone, 1),
        "crash_loop_ev_s": round(during, 1),
        "kept": f"{ratio:.0%}",
        "longest_stall_s": round(stall, 1),
        "session_timeout_s": session_ms / 1000,
    }
    report(figures)
    figures.assert_ok()
    assert figures.outcomes > 0 and peer.kills >= 4
    # Never the 50 s without an outcome: at most a few rebalances in a row.
    assert stall < 3 * session_ms / 1000, f"the healthy worker handled nothing for {stall:.1f} s"
    if ratio < 0.5:
        embedded = not os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if embedded or membership == "dynamic":
            pytest.xfail(
                f"kept {ratio:.0%} of its throughput ({during:.1f} vs {alone:.1f} events/s alone) "
                f"with {membership} membership on "
                + ("the embedded tansu broker, which rebalances on every restart" if embedded else "Kafka")
            )
        raise AssertionError(f"kept {ratio:.0%} of its throughput, under the 50% target")
