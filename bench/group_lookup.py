"""Near-duplicate lookup (storage/groups.py) with many open items on PostgreSQL.

    .venv/bin/python bench/group_lookup.py [--items 200000] [--queries 200]

Creates a fresh database, bulk-loads ``--items`` open items with random PDQ
hashes and their lookup keys (16 PDQ slices and a SHA-256 prefix each), then
times ``--queries`` lookups of each kind: a new picture with no copy, and a
copy of a queued picture 8 or 24 bits away. Also times ``groups.assign`` (the
lookup plus its 17 inserts, rolled back). Prints a markdown table. Not a test:
nothing is asserted.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg  # noqa: E402
from scratch_db import scratch_database  # noqa: E402
from sqlalchemy import text  # noqa: E402

from moderation.storage import groups  # noqa: E402
from moderation.storage.db import make_engine, make_sessionmaker  # noqa: E402
from moderation.storage.models import Item  # noqa: E402

COLUMNS = (
    "id, event_id, content_id, uploader_id, media_url, media_type, event, sha256, md5, pdq, pdq_quality,"
    " model_version, matches, route, reason, priority, state, tier, created_at"
)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def flip(hex_: str, bits: list[int]) -> str:
    value = int(hex_, 16)
    for b in bits:
        value ^= 1 << b
    return f"{value:064x}"


def load(url: str, count: int, rng: random.Random) -> list[str]:
    """``count`` pending items with random hashes and their lookup keys; returns the PDQ hashes."""
    hashes = [f"{rng.getrandbits(256):064x}" for _ in range(count)]
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY items ({COLUMNS}) FROM STDIN") as copy:
            for i, h in enumerate(hashes, 1):
                sha = hashlib.sha256(h.encode()).hexdigest()
                copy.write_row(
                    (i, f"e{i}", f"c{i}", "u", "http://x", "image/jpeg", "{}", sha, "0" * 32, h, 90, "", "[]")
                    + ("review", "classifier_score", 50, "pending", "moderator", "2026-01-01T00:00:00Z")
                )
        with cur.copy("COPY item_pdq_bands (item_id, band, value) FROM STDIN") as copy:
            for i, h in enumerate(hashes, 1):
                for band, value in enumerate(groups.pdq_slices(h)):
                    copy.write_row((i, band, value))
                copy.write_row(
                    (i, groups.SHA256_BAND, groups.sha256_key(hashlib.sha256(h.encode()).hexdigest()))
                )
        cur.execute("SELECT setval(pg_get_serial_sequence('items', 'id'), %s)", (count,))
        conn.commit()
        conn.autocommit = True
        cur.execute("VACUUM ANALYZE items")
        cur.execute("VACUUM ANALYZE item_pdq_bands")
    return hashes


def probe(pdq_hex: str, n: int) -> Item:
    return Item(
        id=10**12 + n,
        sha256=hashlib.sha256(f"probe{n}".encode()).hexdigest(),
        pdq=pdq_hex,
        pdq_quality=90,
        vpdq=None,
        route="review",
        state="pending",
        matches=[],
    )


def row(name: str, times: list[float], found: int) -> str:
    times = sorted(times)
    p95 = times[int(len(times) * 0.95) - 1]
    return (
        f"| {name} | {statistics.median(times):.2f} | {p95:.2f} | {max(times):.2f} | {found}/{len(times)} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    rng = random.Random(5)
    policy = groups.GroupPolicy()
    with scratch_database(args.admin_url) as url:
        log(f"loading {args.items} open items")
        started = time.perf_counter()
        hashes = load(url, args.items, rng)
        log(f"loaded in {time.perf_counter() - started:.0f} s")
        engine = make_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        sessions = make_sessionmaker(engine)
        with engine.connect() as conn:
            size = conn.execute(text("SELECT pg_total_relation_size('item_pdq_bands')")).scalar_one()
        lines = ["| lookup | median ms | p95 ms | max ms | copy found |", "|---|---|---|---|---|"]
        kinds = {
            "new picture, no copy": lambda n: f"{rng.getrandbits(256):064x}",
            "copy 8 bits away": lambda n: flip(rng.choice(hashes), rng.sample(range(256), 8)),
            "copy 24 bits away": lambda n: flip(rng.choice(hashes), rng.sample(range(256), 24)),
        }
        with sessions() as s:
            for name, make in kinds.items():
                times, found = [], 0
                for n in range(args.queries):
                    item = probe(make(n), n)
                    started = time.perf_counter()
                    copy = groups.nearest_copy(s, item, policy)
                    times.append((time.perf_counter() - started) * 1000)
                    found += copy is not None
                lines.append(row(name, times, found))
            times = []
            for n in range(args.queries):
                item = probe(flip(rng.choice(hashes), rng.sample(range(256), 8)), n)
                item.id = None  # type: ignore[assignment]
                item.event_id, item.content_id, item.uploader_id = f"p{n}", f"p{n}", "u"
                item.media_url, item.media_type, item.event, item.md5 = "http://x", "image/jpeg", {}, "0" * 32
                item.reason, item.priority = "classifier_score", 50
                s.add(item)
                s.flush()
                started = time.perf_counter()
                groups.assign(s, item, policy)
                times.append((time.perf_counter() - started) * 1000)
                s.rollback()
            lines.append(row("groups.assign (lookup + 17 inserts)", times, len(times)))
        engine.dispose()
    print(f"{args.items} open items; item_pdq_bands {size / 2**20:.0f} MiB with its indexes\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
