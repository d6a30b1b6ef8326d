"""Bank change feed on PostgreSQL: how long a worker takes to load a large bank,
and how soon a hash added through the database is matchable by a worker.

    .venv/bin/python bench/bank_feed.py [--entries 1000000] [--adds 50]

Creates a fresh database, bulk-loads ``--entries`` random PDQ entries, loads a
worker's index from it (IndexFeeder.load), then ``--adds`` times: commits one new
entry (as the API or a moderator's removal does) and measures the time until a
worker polling every BANK_REFRESH_SECONDS (1 s, like the worker) matches it.
Prints a markdown table. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from scratch_db import scratch_database  # noqa: E402

from moderation.domain import EntrySpec, HashSet  # noqa: E402
from moderation.hashing.index import BankIndex  # noqa: E402
from moderation.storage import banks  # noqa: E402
from moderation.storage.bank_feed import IndexFeeder  # noqa: E402
from moderation.storage.db import make_engine, make_sessionmaker  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--adds", type=int, default=50)
    ap.add_argument("--refresh-seconds", type=float, default=1.0)
    ap.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = ap.parse_args()

    database = ExitStack()
    url = database.enter_context(scratch_database(args.admin_url))
    engine = None
    try:
        engine = make_engine(url)
        sessions = make_sessionmaker(engine)
        rng = np.random.default_rng(0)
        started = time.perf_counter()
        with sessions() as s:
            bank = banks.create_bank(s, "bench", "auto_remove", actor="bench")
            s.commit()
            for start in range(0, args.entries, 100_000):
                n = min(100_000, args.entries - start)
                codes = rng.integers(0, 256, size=(n, 32), dtype=np.uint8)
                banks.add_entries(s, bank, [EntrySpec("pdq", c.tobytes().hex()) for c in codes], added_by="b")
                s.commit()
                log(f"inserted {start + n:,} entries in {time.perf_counter() - started:.0f} s")
        insert_s = time.perf_counter() - started

        index = BankIndex()
        feeder = IndexFeeder(sessions, index)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        started = time.perf_counter()
        feeder.load(progress=lambda n: log(f"loaded {n:,}") if n % 500_000 == 0 else None)
        load_s = time.perf_counter() - started
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        idle = []
        for _ in range(20):
            t = time.perf_counter()
            feeder.refresh()
            idle.append((time.perf_counter() - t) * 1000)

        stop = threading.Event()

        def poll() -> None:  # the worker's loop: refresh every BANK_REFRESH_SECONDS
            while not stop.is_set():
                feeder.refresh()
                stop.wait(args.refresh_seconds)

        thread = threading.Thread(target=poll, daemon=True)
        thread.start()
        latencies = []
        for _ in range(args.adds):
            code = rng.integers(0, 256, size=32, dtype=np.uint8).tobytes().hex()
            with sessions() as s:
                banks.add_entries(s, banks.get_bank(s, "bench"), [EntrySpec("pdq", code)], added_by="b")
                s.commit()
            committed = time.perf_counter()
            probe = HashSet("", "", code, 100)
            while not index.match(probe):
                time.sleep(0.005)
            latencies.append(time.perf_counter() - committed)
            time.sleep(rng.uniform(0, 0.3))
        stop.set()
        thread.join()
        q = statistics.quantiles(latencies, n=100, method="inclusive")
        print(
            f"Bank change feed on PostgreSQL 15, {args.entries:,} PDQ entries, "
            f"refresh every {args.refresh_seconds} s\n"
        )
        print("| measure | value |\n|---|---:|")
        print(f"| bulk insert of the entries (API/import path) | {insert_s:.1f} s |")
        print(f"| worker start: load the index from the database | {load_s:.1f} s |")
        print(f"| worker RSS growth for the loaded index (max RSS) | {rss_after - rss_before:,.0f} MB |")
        print(f"| refresh with nothing new, p50 / max | {statistics.median(idle):.1f} / {max(idle):.1f} ms |")
        print(
            f"| commit to matchable, p50 / p99 / max ({args.adds} adds) | "
            f"{statistics.median(latencies) * 1000:.0f} / {q[98] * 1000:.0f} / "
            f"{max(latencies) * 1000:.0f} ms |"
        )
    finally:
        if engine is not None:
            engine.dispose()
        database.close()


if __name__ == "__main__":
    main()
