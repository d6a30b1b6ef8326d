"""The leads' dashboard queries (storage/stats.py) on a large PostgreSQL database.

    .venv/bin/python bench/dashboard.py [--open 200000] [--decided 400000] [--runs 5]

Creates a fresh database and fills it with SQL (generate_series): ``--open``
open items (random tier, priority, arrival over 3 days, SLA deadlines),
``--decided`` decided items with one decision each spread over 60 days in id
order (half automatic), 24 hours of claim and decision audit records for 20
moderators, and their exposure sessions; then VACUUM ANALYZE, as autovacuum
would. Then times each dashboard query and the whole dashboard (median of
``--runs``). Prints a markdown table. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scratch_db import scratch_database  # noqa: E402
from sqlalchemy import text  # noqa: E402

from moderation.storage import stats  # noqa: E402
from moderation.storage.db import make_engine, make_sessionmaker  # noqa: E402

ITEM_COLUMNS = (
    "event_id, content_id, uploader_id, media_url, media_type, event, sha256, md5, pdq, pdq_quality,"
    " model_version, matches, route, reason, priority, state, tier, created_at, due_at, rank_at, decided_at"
)
TIERS = (
    "(ARRAY['moderator','moderator','moderator','moderator','second_review','appeal','senior','restricted'])"
)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load(session: Any, open_items: int, decided: int, now: datetime) -> None:
    common = (
        "'{}'::json, repeat('a', 64), repeat('b', 32), repeat('0', 64), 90, 'm1', '[]'::json, 'review',"
        " 'classifier_score'"
    )
    # Decided history first (older ids), in time order, then the open items.
    session.execute(
        text(
            f"INSERT INTO items ({ITEM_COLUMNS}) SELECT 'd' || g, 'c' || g, 'u', 'http://x', 'image/jpeg', "
            f"{common}, (g % 101), 'decided', 'moderator', "
            ":now - interval '60 days' + g * (interval '60 days' / :n) - interval '1 hour', "
            ":now - interval '60 days' + g * (interval '60 days' / :n) + interval '47 hours' "
            "- (g % 3) * interval '24 hours', "
            "NULL, :now - interval '60 days' + g * (interval '60 days' / :n) "
            "FROM generate_series(1, :n) AS g"
        ),
        {"n": decided, "now": now},
    )
    session.execute(
        text(
            "INSERT INTO decisions (idempotency_key, item_id, content_id, action, source, reason, moderator, "
            "payload, created_at) SELECT 'k' || i.id, i.id, i.content_id, "
            "CASE WHEN i.id % 7 = 0 THEN 'allow' ELSE 'remove' END, "
            "CASE WHEN i.id % 2 = 0 THEN 'hash_match' ELSE 'moderator' END, 'ncii', "
            "CASE WHEN i.id % 2 = 0 THEN NULL ELSE 'mod' || (i.id % 20) END, '{}'::json, i.decided_at "
            "FROM items i WHERE i.state = 'decided' ORDER BY i.id"
        )
    )
    session.execute(
        text(
            f"INSERT INTO items ({ITEM_COLUMNS}) SELECT 'o' || g, 'oc' || g, 'u', 'http://x', 'image/jpeg', "
            f"{common}, (random() * 100)::int, "
            "CASE WHEN g % 500 = 0 THEN 'claimed' ELSE 'pending' END, "
            f"{TIERS}[1 + (g % 8)], "
            ":now - random() * interval '72 hours', NULL, NULL, NULL FROM generate_series(1, :n) AS g"
        ),
        {"n": open_items, "now": now},
    )
    session.execute(
        text(
            "UPDATE items SET due_at = created_at + interval '48 hours', "
            "rank_at = created_at - priority * interval '1 minute', "
            "lease_expires_at = CASE WHEN state = 'claimed' THEN :now + interval '5 minutes' END "
            "WHERE state IN ('pending', 'claimed')"
        ),
        {"now": now},
    )
    # A day of audit records: per moderator decision in the last 24 h, a claim a minute before it.
    session.execute(
        text(
            "INSERT INTO audit_log (at, actor, action, item_id, details) "
            "SELECT at, actor, action, item_id, '{}'::json FROM ("
            " SELECT d.created_at - interval '1 minute' AS at, d.moderator AS actor, 'item.claim' AS action,"
            "  d.item_id, d.id, 0 AS k FROM decisions d WHERE d.source = 'moderator'"
            "  AND d.created_at >= :now - interval '25 hours'"
            " UNION ALL"
            " SELECT d.created_at, d.moderator, 'decision.' || d.action, d.item_id, d.id, 1 FROM decisions d"
            "  WHERE d.source = 'moderator' AND d.created_at >= :now - interval '25 hours'"
            ") AS e ORDER BY at, k"
        ),
        {"now": now},
    )
    session.execute(
        text(
            "INSERT INTO users (username, password_hash, role, active, created_at, failed_logins, "
            "session_version, preferences) SELECT 'mod' || g, 'x', 'moderator', true, :now, 0, 0, '{}'::json "
            "FROM generate_series(0, 19) AS g"
        ),
        {"now": now},
    )
    session.execute(
        text(
            "INSERT INTO exposure_sessions (user_id, started_at, last_seen_at, items_viewed, "
            "revealed_seconds, ended_at) SELECT u.id, :now - (b + 1) * interval '2 hours', "
            ":now - b * interval '2 hours', 40, 120, "
            "CASE WHEN b = 0 THEN NULL ELSE :now - b * interval '2 hours' END "
            "FROM users u CROSS JOIN generate_series(0, 3) AS b"
        ),
        {"now": now},
    )
    session.commit()


def timed(fn: Callable[[], Any], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--open", type=int, default=200_000)
    ap.add_argument("--decided", type=int, default=400_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = ap.parse_args()
    now = datetime.now(UTC)
    with scratch_database(args.admin_url) as url:
        engine = make_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        sessions = make_sessionmaker(engine)
        started = time.perf_counter()
        with sessions() as s:
            load(s, args.open, args.decided, now)
            counts = s.execute(
                text(
                    "SELECT (SELECT count(*) FROM items), (SELECT count(*) FROM decisions), "
                    "(SELECT count(*) FROM audit_log)"
                )
            ).one()
        log(f"loaded in {time.perf_counter() - started:.1f} s: items, decisions, audit = {tuple(counts)}")
        # As autovacuum would have by now: statistics and the visibility map.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
        start = stats.hour_floor(now) - timedelta(hours=stats.HOURS - 1)
        with sessions() as s:
            rows = [
                ("queue depth by tier and band, oldest", lambda: stats.queue_bands(s, now)),
                ("SLA: open breached / near, decided late (7 d)", lambda: stats.sla_counts(s, now, 6)),
                ("decisions per hour (24 h)", lambda: stats.decisions_per_hour(s, start)),
                (
                    "per moderator (decisions, claim times, exposure)",
                    lambda: stats.moderator_rows(s, start, now),
                ),
                (
                    "first decision id of the 7-day window (bisection)",
                    lambda: stats._decisions_since(s, now - timedelta(days=7)),
                ),
                ("whole dashboard", lambda: stats.dashboard(s, 6, now=now)),
            ]
            print(
                f"\n{args.open} open items, {counts[0]} items, {counts[1]} decisions, "
                f"{counts[2]} audit records\n"
            )
            print("| query | median ms |")
            print("| --- | ---: |")
            for name, fn in rows:
                print(f"| {name} | {timed(fn, args.runs):.1f} |")
        engine.dispose()


if __name__ == "__main__":
    main()
