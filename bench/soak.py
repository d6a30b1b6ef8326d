"""Soak: crashes and rebalances for as long as you like, then the ledger.

    .venv/bin/python bench/soak.py [--duration 300] [--events 20000] [--kill-interval 5]
        [--workers 2] [--max-workers 3] [--classifier fixed:0.9|real] [--admin-url URL]

Starts the embedded broker (or uses KAFKA_BOOTSTRAP_SERVERS), a fresh PostgreSQL
database (default: 127.0.0.1:5432) and ``--workers`` `moderation worker`
processes. For ``--duration`` seconds it streams ``--events`` upload events (a
mix that yields review, allow, auto_remove through banks, and dead letters
through bad records and missing media), and every ``--kill-interval`` seconds
(jittered, and once events are flowing again) does one of: SIGKILL a worker and
start it again, add a worker (up to ``--max-workers``), SIGTERM one (down to
one). Then it waits for every event to
have its outcome and prints the figures as a markdown table, as
tests/e2e/test_faults.py does: sent, outcomes, lost, duplicated in the database,
decisions, deliveries on the decisions topic, duplicate deliveries, faults and
time to recover. Exits 1 if anything was lost or doubled.

``--classifier real`` runs the default ONNX models (CLASSIFIER_MODEL's default):
events then go to review or allow by score, and both are accepted for them.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scratch_db import scratch_database  # noqa: E402

from moderation.config import Settings, load_settings  # noqa: E402
from moderation.embedded import EmbeddedBroker  # noqa: E402
from moderation.events import kafka  # noqa: E402
from moderation.storage.db import make_engine, make_sessionmaker  # noqa: E402
from tests.support.fault_ledger import (  # noqa: E402
    CLASSIFIER,
    Streamer,
    audit,
    build_workload,
    outcome_count,
    read_topic,
    table,
    wait_for_outcomes,
)
from tests.support.http import MediaServer  # noqa: E402
from tests.support.worker_process import WorkerPool, worker_env  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=300.0, help="seconds of streaming and faults")
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--kill-interval", type=float, default=5.0, help="mean seconds between faults")
    ap.add_argument("--workers", type=int, default=2, help="workers at the start")
    ap.add_argument("--max-workers", type=int, default=3)
    ap.add_argument("--classifier", default=CLASSIFIER, help="CLASSIFIER_MODEL, or 'real' for the default")
    ap.add_argument("--session-timeout-ms", type=int, default=3000)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--logs", default="", help="folder for the workers' logs (default: a temporary one)")
    args = ap.parse_args()
    rng = random.Random(args.seed)

    with ExitStack() as stack:
        url = stack.enter_context(scratch_database(args.admin_url))
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")
        if not bootstrap:
            bootstrap = stack.enter_context(EmbeddedBroker()).bootstrap
        media = MediaServer()
        stack.callback(media.close)
        engine = make_engine(url)
        stack.callback(engine.dispose)
        sessions = make_sessionmaker(engine)
        logs = Path(args.logs) if args.logs else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        logs.mkdir(parents=True, exist_ok=True)
        suffix = uuid.uuid4().hex[:6]
        classifier = Settings().classifier_model if args.classifier == "real" else args.classifier
        settings = load_settings(
            {},
            database_url=url,
            kafka_bootstrap_servers=bootstrap,
            uploads_topic=f"soak-uploads-{suffix}",
            decisions_topic=f"soak-decisions-{suffix}",
            dlq_topic=f"soak-dlq-{suffix}",
            consumer_group=f"soak-{suffix}",
            kafka_session_timeout_ms=args.session_timeout_ms,
            classifier_model=classifier,
            flood_max_matches=0,
            media_allowed_hosts="127.0.0.1",
            bank_refresh_seconds=1.0,
            onnx_threads=1,
        )
        kafka.ensure_topics(settings, partitions=args.partitions)
        workload = build_workload(sessions, media, args.events, seed=args.seed)
        log(f"{workload.sent} records ({dict(workload.counts())}); logs in {logs}")

        started = time.monotonic()
        pool = stack.enter_context(WorkerPool(worker_env(settings), logs))
        for _ in range(args.workers):
            pool.add()
        stream = Streamer(bootstrap, settings.uploads_topic, workload.records, seconds=args.duration).start()
        faults = {"kill": 0, "add": 0, "term": 0}
        last_fault = time.monotonic()
        next_report = time.monotonic() + 10
        while time.monotonic() - started < args.duration:
            time.sleep(rng.uniform(0.5, 1.5) * args.kill_interval)
            # strike while events are being handled, not while the group still
            # rebalances after the last fault (unless the stream is drained)
            seen = outcome_count(sessions)
            deadline = time.monotonic() + 30
            while outcome_count(sessions) == seen and time.monotonic() < deadline and seen < workload.sent:
                time.sleep(0.1)
            alive = pool.alive()
            action = rng.choice(["kill", "kill", "add", "term"])
            if action == "add" and len(alive) >= args.max_workers:
                action = "term"
            if action == "term" and len(alive) <= 1:
                action = "add" if len(alive) < args.max_workers else "kill"
            if action == "kill" and alive:
                victim = rng.choice(alive)
                victim.kill()
                time.sleep(rng.uniform(0.0, 1.0))
                victim.start()
            elif action == "add":
                dead = pool.dead()
                (dead[0].start() if dead else pool.add())
            elif action == "term" and alive:
                code = rng.choice(alive).terminate(timeout=60)
                if code != 0:
                    log(f"a worker exited with {code} on SIGTERM")
            faults[action] += 1
            last_fault = time.monotonic()
            if time.monotonic() >= next_report:
                next_report = time.monotonic() + 10
                elapsed = time.monotonic() - started
                log(
                    f"{elapsed:.0f}s: sent {stream.sent}, outcomes {outcome_count(sessions)}, "
                    f"workers alive {len(pool.alive())}, faults {faults}"
                )
        stream.join(timeout=max(60.0, args.duration))
        if not pool.alive():
            pool.add()
        log(f"streaming done; waiting for {workload.sent} outcomes")
        try:
            recover = time.monotonic() - last_fault + wait_for_outcomes(sessions, workload.sent, timeout=600)
        except AssertionError as exc:
            log(f"{exc}\n{pool.tails()}")
            recover = float("nan")
        accept = {"review": {"review", "allow"}} if args.classifier == "real" else None
        figures = audit(
            "soak (crash + rebalance)",
            sessions,
            workload,
            read_topic(bootstrap, settings.decisions_topic),
            accept=accept,
        )
        figures.faults = sum(faults.values())
        figures.recover_s = recover
        figures.elapsed_s = time.monotonic() - started
        figures.extra = {**faults, "processes": len(pool.workers), "starts": pool.starts}
        pool.stop_all()
    print(table([figures]))
    for problem in figures.problems[:20]:
        print(f"- {problem}")
    return 0 if figures.ok else 1


if __name__ == "__main__":
    sys.exit(main())
