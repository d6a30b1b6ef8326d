"""PdqIndex against a faiss brute-force scan: build, memory, latency, recall, add-to-matchable.

    .venv/bin/python bench/pdq_index.py [--sizes 1000000,10000000] [--queries 1000] [--seed 0]
        [--radius 31] [--build-batch 0]

For each size: random 256-bit codes, of which --queries are planted near-duplicates
(a copy of another stored code with k random bits flipped, k = 0..radius in turn). Each
query is the source code of one planted copy; a query recalls its plant when the
plant comes back at distance k. Both PdqIndex and the brute-force scan (faiss
IndexBinaryFlat.range_search, one query at a time) answer the same queries at
--radius in the same run; every PdqIndex answer is also compared with brute force.
Then: single adds until matchable; one add that overflows the delta, lookups while
its merge steps are pending, and each step (run by an empty add()). Timings are wall
clock on a shared machine: the load average is printed with the table. Progress goes
to stderr, a markdown table to stdout. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from moderation.hashing.pdq_index import PdqIndex  # noqa: E402

MB = 1 << 20


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def rss_bytes(field: str = "VmRSS") -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def flip_bits(code: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    bits = np.unpackbits(code)
    bits[rng.choice(bits.size, size=k, replace=False)] ^= 1
    return np.packbits(bits)


def make_data(
    n: int, queries: int, radius: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Codes (n, 32) with planted copies in the last ``queries`` rows; their sources; the flip counts."""
    codes = rng.integers(0, 256, size=(n, 32), dtype=np.uint8)
    sources = rng.choice(n - queries, size=queries, replace=False)
    flips = np.arange(queries) % (radius + 1)
    for j, (src, k) in enumerate(zip(sources, flips, strict=True)):
        codes[n - queries + j] = flip_bits(codes[src], int(k), rng)
    return codes, codes[sources].copy(), flips


@dataclass
class Lookups:
    results: list[list[tuple[int, int]]]
    wall: np.ndarray  # seconds per lookup
    cpu: np.ndarray  # CPU seconds of this thread per lookup: the wall time less waits for a core
    total: float

    @property
    def per_second(self) -> float:
        return len(self.results) / self.total


def timed_lookups(search: Callable[[np.ndarray], list[tuple[int, int]]], queries: np.ndarray) -> Lookups:
    out = Lookups([], np.zeros(len(queries)), np.zeros(len(queries)), 0.0)
    start = time.perf_counter()
    for i, q in enumerate(queries):
        t, c = time.perf_counter(), time.thread_time()
        out.results.append(search(q))
        out.wall[i], out.cpu[i] = time.perf_counter() - t, time.thread_time() - c
    out.total = time.perf_counter() - start
    return out


def recall(results: list[list[tuple[int, int]]], planted_ids: np.ndarray, flips: np.ndarray) -> float:
    hits = sum((int(p), int(k)) in set(r) for r, p, k in zip(results, planted_ids, flips, strict=True))
    return hits / len(results)


def add_to_matchable(index: PdqIndex, codes: np.ndarray, first_id: int) -> np.ndarray:
    """Seconds from add() of each code to search() returning it, one code at a time."""
    out = np.zeros(len(codes))
    for i, code in enumerate(codes):
        t = time.perf_counter()
        index.add(np.array([first_id + i]), code[None])
        while (first_id + i, 0) not in index.search(code, 0):
            pass
        out[i] = time.perf_counter() - t
    return out


def brute_force_lookups(codes: np.ndarray, ids: np.ndarray, queries: np.ndarray, radius: int) -> Lookups:
    """Like timed_lookups, scanning every code with faiss; the scan's copy of the codes is freed on return."""
    faiss.omp_set_num_threads(1)
    flat = faiss.IndexBinaryFlat(256)
    flat.add(codes)

    def search(q: np.ndarray) -> list[tuple[int, int]]:
        _, dist, rows = flat.range_search(q[None], radius + 1)  # faiss: strictly below radius
        return sorted(
            zip(ids[rows].tolist(), dist.astype(int).tolist(), strict=True), key=lambda t: (t[1], t[0])
        )

    return timed_lookups(search, queries)


def pct(seconds: np.ndarray, q: float) -> str:
    return f"{np.percentile(seconds, q) * 1000:.2f}"


def pcts(seconds: np.ndarray) -> str:
    return " / ".join(pct(seconds, q) for q in (50, 90, 99))


def run_size(n: int, queries: int, radius: int, batch: int, rng: np.random.Generator) -> dict[str, str]:
    log(f"n={n:,}: generating codes")
    codes, query_codes, flips = make_data(n, queries, radius, rng)
    ids = np.arange(n, dtype=np.int64) + 1_000_000_000  # ids need not be row numbers
    planted_ids = ids[n - queries :]

    log(f"n={n:,}: building PdqIndex ({'one add() call' if not batch else f'add() batches of {batch:,}'})")
    base = rss_bytes()
    peak_ok = reset_peak_rss()
    t = time.perf_counter()
    index = PdqIndex(max_radius=radius)
    step = batch or n
    for s in range(0, n, step):  # batches bigger than the delta are indexed before add() returns
        index.add(ids[s : s + step], codes[s : s + step])
        log(f"  added {min(s + step, n):,}/{n:,} ({time.perf_counter() - t:.1f}s)")
    build_s = time.perf_counter() - t
    rss = rss_bytes() - base
    peak = rss_bytes("VmHWM") - base if peak_ok else -1
    build_bytes = index.memory_bytes()

    log(f"n={n:,}: {queries} PdqIndex lookups at radius {radius}")
    ours = timed_lookups(lambda q: index.search(q, radius), query_codes)

    log(f"n={n:,}: brute force (IndexBinaryFlat range_search, one OpenMP thread like PdqIndex)")
    brute = brute_force_lookups(codes, ids, query_codes, radius)
    same = sum(a == b for a, b in zip(ours.results, brute.results, strict=True))

    log(f"n={n:,}: add-to-matchable")
    fresh = rng.integers(0, 256, size=(200, 32), dtype=np.uint8)
    single = add_to_matchable(index, fresh, first_id=1)
    # An add that overflows the delta appends it to the main segment and queues the merge
    # steps; each later add() runs one step. Time that add, lookups while steps are pending,
    # and each step.
    limit = index.delta_limit
    bulk = rng.integers(0, 256, size=(limit, 32), dtype=np.uint8)
    t = time.perf_counter()
    index.add(np.arange(limit) + 1000, bulk)
    merged = all((1000 + j, 0) in index.search(bulk[j], 0) for j in (0, limit - 1))
    overflow_s = time.perf_counter() - t
    pending = timed_lookups(lambda q: index.search(q, radius), query_codes[:200])
    steps = []
    for _ in range(20):
        t = time.perf_counter()
        index.add(np.zeros(0, dtype=np.int64), np.zeros((0, 32), dtype=np.uint8))
        steps.append(time.perf_counter() - t)
    after = timed_lookups(lambda q: index.search(q, radius), query_codes)
    rss_after = rss_bytes() - base

    ms = 1000.0
    return {
        "stored hashes": f"{n:,}",
        "build (s)": f"{build_s:.1f}",
        "RSS after build (MB)": f"{rss / MB:,.0f}",
        "peak RSS during build (MB)": f"{peak / MB:,.0f}" if peak_ok else "n/a",
        "memory_bytes() after build / after the merge (MB)": f"{build_bytes / MB:,.0f} / "
        f"{index.memory_bytes() / MB:,.0f}",
        "RSS after the merge (MB)": f"{rss_after / MB:,.0f}",
        "PdqIndex lookups/s": f"{ours.per_second:,.0f}",
        "PdqIndex p50 / p90 / p99 latency (ms)": pcts(ours.wall),
        "PdqIndex p50 / p90 / p99 CPU time per lookup (ms)": pcts(ours.cpu),
        f"PdqIndex recall of planted (d <= {radius})": f"{recall(ours.results, planted_ids, flips):.2%}",
        "brute force lookups/s": f"{brute.per_second:,.1f}",
        "brute force p50 / p90 / p99 latency (ms)": pcts(brute.wall),
        "brute force recall of planted": f"{recall(brute.results, planted_ids, flips):.2%}",
        "answers identical to brute force": f"{same}/{queries}",
        "speed-up vs brute force (lookups/s)": f"{ours.per_second / brute.per_second:,.0f}x",
        "add-to-matchable p50 / max, 200 single adds (ms)": f"{pct(single, 50)} / {single.max() * ms:.2f}",
        f"add-to-matchable, {limit:,}-row add that overflows the delta (ms)": f"{overflow_s * ms:.0f}"
        + ("" if merged else " (NOT MATCHED)"),
        "lookup p50 / p90 / p99 while merge steps pend (ms)": pcts(pending.wall),
        "merge: slowest step / all steps (ms)": f"{max(steps) * ms:.0f} / {sum(steps) * ms:.0f}",
        "recall of planted after the merge": f"{recall(after.results, planted_ids, flips):.2%}",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000000,10000000", help="comma-separated numbers of stored hashes")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--radius", type=int, default=31)
    ap.add_argument("--build-batch", type=int, default=0, help="rows per add() while building; 0: one call")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    rng = np.random.default_rng(args.seed)
    threads = faiss.omp_get_max_threads()
    columns = [run_size(n, args.queries, args.radius, args.build_batch, rng) for n in sizes]
    print(
        f"PdqIndex vs brute force, radius {args.radius}, {args.queries} queries, seed {args.seed}; "
        f"{os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f} at the end), "
        f"faiss {faiss.__version__} (brute force on 1 of {threads} OpenMP threads), numpy {np.__version__}\n"
    )
    print("| metric | " + " | ".join(c["stored hashes"] for c in columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for key in columns[0]:
        if key != "stored hashes":
            print(f"| {key} | " + " | ".join(c[key] for c in columns) + " |")


if __name__ == "__main__":
    main()
