"""Claiming from a large review queue on PostgreSQL: claim-next latency, decisions
per second and double claims with many moderators at once.

    .venv/bin/python bench/claim_queue.py [--items 1000000] [--claimers 50] [--seconds 60]
                                          [--think-ms 0] [--skip-rate 0.02]

Creates a fresh database, bulk-loads ``--items`` pending items with COPY (a
realistic spread of tiers, priorities, report reasons and arrival times over
the last 47 hours, scheduled by queue.schedule's rules, so about a tenth are
near their deadline), prints the plans of the claim's candidate queries, then
runs ``--claimers`` moderator processes, each with its own connection, for
``--seconds``: claim the next item (queue.claim_next_item, audited and committed
as the console does it), wait ``--think-ms``, then allow it through
review.decide, or skip it (``--skip-rate``). Prints claim-next latency
percentiles, claims and decisions per second, and double claims, counted from
the claims log (an item claimed again without having been skipped) and from
the decisions table (an item decided twice). Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import random
import statistics
import sys
import time
from collections import Counter
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg  # noqa: E402
from scratch_db import scratch_database  # noqa: E402
from sqlalchemy import create_engine  # noqa: E402

from moderation import queue_policy, review  # noqa: E402
from moderation.config import Settings  # noqa: E402
from moderation.storage import audit, queue  # noqa: E402
from moderation.storage.db import make_sessionmaker, normalise_url  # noqa: E402
from moderation.storage.models import Item, User, utcnow  # noqa: E402

SETTINGS = Settings()  # SLA_HOURS ncii=48,default=48, SLA_NEAR_HOURS 6, PRIORITY_POINT_MINUTES 15
LEASE_SECONDS = SETTINGS.claim_lease_seconds
COLUMNS = (
    "event_id, content_id, uploader_id, media_url, media_type, event, sha256, md5, pdq, pdq_quality,"
    " score, model_version, matches, route, reason, priority, state, tier, created_at, due_at, rank_at"
)
# (share, tier): most work is in the main queue; moderators never see senior/restricted.
TIERS = (
    (0.94, "moderator"),
    (0.03, "second_review"),
    (0.01, "appeal"),
    (0.015, "senior"),
    (0.005, "restricted"),
)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _pick(rng: random.Random, table: tuple[tuple[float, str], ...]) -> str:
    x = rng.random()
    for share, value in table:
        if x < share:
            return value
        x -= share
    return table[-1][1]


def _row(n: int, rng: random.Random, now: Any, sla: dict[str, float]) -> str:
    kind = rng.random()
    if kind < 0.10:  # a bank match not confident enough to auto-remove
        route, reason, priority = "review", "bank_match_review", rng.randint(70, 100)
    elif kind < 0.25:  # removed automatically, queued for verification
        route, reason, priority = "auto_remove", "bank_match_auto_remove", 40
    else:  # the classifier's flags
        route, reason, priority = "review", "classifier_score", rng.randint(10, 60)
    report = "ncii" if rng.random() < 0.25 else None
    created = now - timedelta(seconds=rng.uniform(0, 47 * 3600))
    due = queue_policy.due_at(created, queue_policy.sla_hours(sla, report, reason))
    rank = queue_policy.rank_at(created, priority, SETTINGS.priority_point_minutes)
    event = json.dumps({"report_reason": report} if report else {})
    score = f"{rng.uniform(0.6, 1):.3f}" if reason == "classifier_score" else "\\N"
    tier = _pick(rng, TIERS)
    return (
        f"bench-{n}\tc{n}\tu{n % 5000}\thttps://media.example/{n}.jpg\timage/jpeg\t{event}\t"
        f"{'a' * 64}\t{'b' * 32}\t{'c' * 64}\t90\t{score}\tbench\t[]\t{route}\t{reason}\t{priority}\t"
        f"pending\t{tier}\t{created.isoformat()}\t{due.isoformat()}\t{rank.isoformat()}\n"
    )


def load_items(url: str, count: int) -> float:
    rng = random.Random(0)
    now = utcnow()
    sla = queue_policy.parse_sla_hours(SETTINGS.sla_hours)
    started = time.perf_counter()
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY items ({COLUMNS}) FROM STDIN") as copy:
            for start in range(0, count, 50_000):
                buf = io.StringIO()
                for n in range(start, min(count, start + 50_000)):
                    buf.write(_row(n, rng, now, sla))
                copy.write(buf.getvalue())
                if (start + 50_000) % 200_000 == 0:
                    log(f"copied {start + 50_000:,} items")
        conn.commit()
    elapsed = time.perf_counter() - started
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE items")
        conn.execute("CHECKPOINT")  # the load's writes are not flushed during the run
    return elapsed


def add_users(url: str, n: int) -> list[int]:
    engine = create_engine(normalise_url(url))
    try:
        with make_sessionmaker(engine)() as s:
            made = [User(username=f"mod{i}", password_hash="x", role="moderator") for i in range(n)]
            s.add_all(made)
            s.commit()
            return [u.id for u in made]
    finally:
        engine.dispose()


def explain(url: str, user_id: int) -> list[str]:
    """The claim's candidate queries for one moderator, as PostgreSQL runs them."""
    engine = create_engine(normalise_url(url))
    lines = []
    try:
        with engine.connect() as conn:
            near_q, rank_q = queue._candidates("moderator", user_id, utcnow() + timedelta(hours=6))
            for name, query in (("near deadline", near_q), ("by rank", rank_q)):
                compiled = query.limit(1).with_for_update(skip_locked=True).compile(engine)
                plan = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS) {compiled}", compiled.params)
                lines.append(f"-- {name}")
                lines.extend(row[0] for row in plan)
                conn.rollback()
    finally:
        engine.dispose()
    return lines


def claimer(
    url: str, user_id: int, window: tuple[float, float, float], think_ms: float, skip_rate: float, out: Any
) -> None:
    """One moderator: claim, think, decide (allow) or skip, from ``window[0]``
    until ``window[2]``; latencies and rates count from ``window[1]`` (after the warm-up)."""
    start_at, measure_from, stop_at = window
    engine = create_engine(normalise_url(url), pool_size=1, max_overflow=0, pool_pre_ping=True)
    sessions = make_sessionmaker(engine)
    rng = random.Random(user_id)
    latencies: list[float] = []
    claims: list[int] = []
    skips: list[int] = []
    counted = Counter[str]()
    failures: list[str] = []
    with sessions() as s:
        user = s.get(User, user_id)
        assert user is not None
        s.expunge(user)
    while time.monotonic() < start_at:
        time.sleep(0.01)
    while time.monotonic() < stop_at:
        measured = time.monotonic() >= measure_from
        try:
            with sessions() as s:
                me = s.merge(user, load=False)
                t0 = time.perf_counter()
                item = queue.claim_next_item(s, me, LEASE_SECONDS, settings=SETTINGS)
                if item is not None:
                    audit.record(s, me.username, "item.claim", item.id)
                s.commit()
                if measured:
                    latencies.append(time.perf_counter() - t0)
                item_id = None if item is None else item.id
            if item_id is None:
                counted["empty"] += 1
                time.sleep(0.05)
                continue
            claims.append(item_id)
            counted["claims"] += measured
            if think_ms:
                time.sleep(rng.expovariate(1 / think_ms) / 1000)
            with sessions() as s:
                me = s.merge(user, load=False)
                found = s.get(Item, item_id, with_for_update=True)
                assert found is not None
                if rng.random() < skip_rate:
                    queue.skip(s, found, me)
                    audit.record(s, me.username, "item.skip", item_id)
                    s.commit()
                    skips.append(item_id)
                else:
                    review.decide(s, found, me, "allow", "not_violating")
                    s.commit()
                    counted["decided"] += 1
                    counted["decisions"] += measured
        except Exception as exc:  # noqa: BLE001 - reported, never hidden
            failures.append(f"{type(exc).__name__}: {str(exc)[:200]}")
    engine.dispose()
    out.put(dict(latencies=latencies, claims=claims, skips=skips, counted=counted, failures=failures))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--claimers", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=60, help="measured, after the warm-up")
    ap.add_argument("--warmup", type=float, default=5, help="seconds run first and not measured")
    ap.add_argument("--think-ms", type=float, default=0.0, help="mean review time per item (exponential)")
    ap.add_argument("--skip-rate", type=float, default=0.02)
    ap.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = ap.parse_args()

    with ExitStack() as stack:
        url = stack.enter_context(scratch_database(args.admin_url))
        url = url.replace("postgresql+psycopg://", "postgresql://")
        log(f"loading {args.items:,} items")
        load_s = load_items(url, args.items)
        log(f"loaded in {load_s:.1f} s")
        user_ids = add_users(url, args.claimers)
        for line in explain(url, user_ids[0]):
            log(line)

        ctx = mp.get_context("fork")
        out = ctx.Queue()
        start_at = time.monotonic() + 3 + args.claimers * 0.02
        window = (start_at, start_at + args.warmup, start_at + args.warmup + args.seconds)
        procs = [
            ctx.Process(target=claimer, args=(url, u, window, args.think_ms, args.skip_rate, out))
            for u in user_ids
        ]
        for p in procs:
            p.start()
        log(f"{args.claimers} claimers: {args.warmup:g} s warm-up, then {args.seconds:g} s measured")
        results = [out.get(timeout=args.warmup + args.seconds + 300) for _ in procs]
        for p in procs:
            p.join()
        for line in explain(url, user_ids[0]):  # after the run: the walks still touch a few pages
            log(line)
        print(report(args, load_s, results, url))


def report(args: Any, load_s: float, results: list[dict[str, Any]], url: str) -> str:
    latencies = sorted(x for r in results for x in r["latencies"])
    counted = sum((r["counted"] for r in results), Counter[str]())
    claims = Counter(i for r in results for i in r["claims"])
    skips = Counter(i for r in results for i in r["skips"])
    failures = Counter(f for r in results for f in r["failures"])
    # Nothing expires during a run (the lease outlives it): an item claimed again
    # without having been skipped was handed to two moderators at once.
    double_claims = sum(max(0, n - 1 - skips[i]) for i, n in claims.items())
    with psycopg.connect(url) as conn:
        twice = "SELECT count(*) FROM (SELECT item_id FROM decisions GROUP BY item_id HAVING count(*) > 1) d"
        decided_twice = conn.execute(twice).fetchone()[0]  # type: ignore[index]
        decided_rows = conn.execute("SELECT count(*) FROM items WHERE state = 'decided'").fetchone()[0]  # type: ignore[index]
    q = statistics.quantiles(latencies, n=100, method="inclusive")

    def ms(v: float) -> str:
        return f"{v * 1000:.1f}"

    lines = [
        f"\nClaim queue on PostgreSQL 15: {args.items:,} pending items,",
        f"{args.claimers} claimers (processes, one connection each),",
        f"{args.seconds:g} s measured after {args.warmup:g} s warm-up, think time {args.think_ms:g} ms,",
        f"skip rate {args.skip_rate:g}\n",
        "| measure | value |",
        "|---|---:|",
        f"| bulk load (COPY) of the items, then VACUUM ANALYZE | {load_s:.1f} s |",
        f"| claim-next p50 / p95 / p99 / max | {ms(q[49])} / {ms(q[94])} / {ms(q[98])} / "
        f"{ms(latencies[-1])} ms |",
        f"| claims/s | {counted['claims'] / args.seconds:.0f} |",
        f"| decisions/s | {counted['decisions'] / args.seconds:.0f} |",
        f"| skips (whole run) | {sum(skips.values())} |",
        f"| double claims (claims log) / items decided twice (decisions table) | "
        f"{double_claims} / {decided_twice} |",
        f"| decided items in the database / decisions made (whole run) | "
        f"{decided_rows} / {counted['decided']} |",
        f"| empty claims / errors | {counted['empty']} / {sum(failures.values())} |",
    ]
    lines += [f"\nerror x{n}: {failure}" for failure, n in failures.most_common(5)]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
