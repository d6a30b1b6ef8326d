"""PdqIndex is exact: every answer equals a brute-force scan, through adds, merges and removals."""

from __future__ import annotations

import numpy as np
import pytest

from moderation.hashing import pdq_index
from moderation.hashing.pdq_index import PdqIndex

RNG_SEED = 20240611


def random_codes(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 32), dtype=np.uint8)


def flip(code: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    bits = np.unpackbits(code)
    bits[rng.choice(256, size=k, replace=False)] ^= 1
    return np.packbits(bits)


def flip_bit(code: np.ndarray, bit: int) -> np.ndarray:
    bits = np.unpackbits(code)
    bits[bit] ^= 1
    return np.packbits(bits)


def brute(model: dict[int, np.ndarray], query: np.ndarray, radius: int) -> list[tuple[int, int]]:
    """The exact answer, by scanning every stored code."""
    return brute_arrays(*as_arrays(model), query, radius)


def as_arrays(model: dict[int, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    ids = np.fromiter(model, dtype=np.int64, count=len(model))
    codes = np.stack([model[i] for i in ids.tolist()]) if model else np.zeros((0, 32), dtype=np.uint8)
    return ids, codes


def brute_arrays(ids: np.ndarray, codes: np.ndarray, query: np.ndarray, radius: int) -> list[tuple[int, int]]:
    dists = np.bitwise_count(codes ^ query).sum(axis=1)
    hits = np.flatnonzero(dists <= radius)
    return sorted(zip(ids[hits].tolist(), dists[hits].tolist(), strict=True), key=lambda t: (t[1], t[0]))


def settle(index: PdqIndex) -> None:
    """Run every pending merge step (each add() call runs one)."""
    for _ in range(20):
        index.add(np.zeros(0, dtype=np.int64), np.zeros((0, 32), dtype=np.uint8))


@pytest.fixture
def no_scans(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail on any linear scan, so answers must come from the multi-index tables."""

    def fail(*args: object) -> None:
        raise AssertionError("linear scan used")

    monkeypatch.setattr(pdq_index, "_range_scan", fail)


def test_chunk_keys_cover_every_bit_once() -> None:
    rng = np.random.default_rng(RNG_SEED)
    codes = random_codes(rng, 40)
    for c in range(12):
        assert pdq_index.chunk_keys(codes, c).tolist() == [int(pdq_index.query_keys(x)[c]) for x in codes]
    base = pdq_index.query_keys(codes[0])
    for bit in range(256):
        changed = pdq_index.query_keys(flip_bit(codes[0], bit)) != base
        assert changed.sum() == 1, bit


def test_planted_near_duplicates_at_every_distance_from_the_tables(no_scans: None) -> None:
    rng = np.random.default_rng(RNG_SEED)
    codes = random_codes(rng, 4000)
    ids = np.arange(codes.shape[0], dtype=np.int64) * 3 - 5000  # ids are not row numbers
    index = PdqIndex(delta_limit=100)
    index.add(ids, codes)  # bulk: indexed before add() returns, nothing left to scan
    for k in range(32):
        src = int(rng.integers(codes.shape[0]))
        query = flip(codes[src], k, rng)
        found = index.search(query, 31)
        assert (int(ids[src]), k) in found
        assert found == brute_arrays(ids, codes, query, 31)
        for radius in (0, k - 1, k, 11, 12, 23, 24):
            if 0 <= radius <= 31:
                assert index.search(query, radius) == brute_arrays(ids, codes, query, radius)


def test_nothing_beyond_the_radius() -> None:
    rng = np.random.default_rng(RNG_SEED)
    code = random_codes(rng, 1)[0]
    index = PdqIndex()
    index.add(np.arange(40), np.stack([flip(code, k, rng) for k in range(40)]))
    for radius in (0, 5, 31):
        assert index.search(code, radius) == [(k, k) for k in range(radius + 1)]


def test_random_operations_match_brute_force() -> None:
    """Adds (delta, pending merge, main), replacements, removals and re-adds, checked after each."""
    rng = np.random.default_rng(RNG_SEED)
    index = PdqIndex(delta_limit=150)
    model: dict[int, np.ndarray] = {}
    removed: list[int] = []
    next_id = 0
    for step in range(80):
        op = rng.random()
        if op < 0.55 or not model:
            n = int(rng.choice([1, 7, 60, 200]))
            new_ids = np.arange(next_id, next_id + n)
            next_id += n
            if removed and rng.random() < 0.5:  # re-enable an entry that was removed
                new_ids[0] = removed.pop()
            codes = random_codes(rng, n)
            if model and n > 1:  # near-duplicates of stored codes
                for j in range(0, n, 3):
                    codes[j] = flip(model[int(rng.choice(list(model)))], int(rng.integers(0, 32)), rng)
            index.add(new_ids, codes)
            model.update(zip(new_ids.tolist(), codes, strict=True))
        elif op < 0.7:  # replace the code of live ids
            live = rng.choice(list(model), size=min(5, len(model)), replace=False)
            codes = random_codes(rng, live.size)
            index.add(live, codes)
            model.update(zip(live.tolist(), codes, strict=True))
        else:
            gone = rng.choice(list(model), size=min(int(rng.integers(1, 30)), len(model)), replace=False)
            index.remove([*gone.tolist(), 10**12])  # unknown ids are ignored
            for i in gone.tolist():
                del model[i]
                removed.append(i)
        assert len(index) == len(model), step
        stored = as_arrays(model)
        for _ in range(3):
            src = model[int(rng.choice(list(model)))] if model else random_codes(rng, 1)[0]
            query = flip(src, int(rng.integers(0, 32)), rng)
            radius = int(rng.integers(0, 32))
            assert index.search(query, radius) == brute_arrays(*stored, query, radius), step


def test_a_new_hash_is_matchable_as_soon_as_add_returns() -> None:
    rng = np.random.default_rng(RNG_SEED)
    index = PdqIndex(delta_limit=50)
    index.add(np.arange(3000), random_codes(rng, 3000))
    for i in range(120):  # through the delta, a merge and its pending steps
        code = random_codes(rng, 1)
        index.add(np.array([10_000 + i]), code)
        assert (10_000 + i, 0) in index.search(code[0], 0)
        assert index.search(flip(code[0], 31, rng), 31)[0] == (10_000 + i, 31)


def test_remove_then_re_add_in_every_segment() -> None:
    rng = np.random.default_rng(RNG_SEED)
    index = PdqIndex(delta_limit=100)
    codes = random_codes(rng, 3210)
    index.add(np.arange(3000), codes[:3000])  # bulk: indexed main rows
    index.add(np.arange(3000, 3090), codes[3000:3090])  # delta
    index.add(np.arange(3090, 3110), codes[3090:3110])  # overflows: appended to main, steps pending
    index.add(np.arange(3110, 3120), codes[3110:3120])  # delta again (and one merge step)
    victims = [5, 3010, 3100, 3115]
    index.remove(victims)
    assert len(index) == 3120 - 4
    for i in victims:
        assert all(found != i for found, _ in index.search(codes[i], 31))
    settle(index)
    for i in victims:
        assert all(found != i for found, _ in index.search(codes[i], 31))
    index.add(np.array(victims), codes[victims])  # re-enabled entries
    assert len(index) == 3120
    for i in victims:
        assert index.search(codes[i], 0) == [(i, 0)]
    index.remove(victims)
    index.add(np.arange(4000, 4200), codes[3000:3200] ^ 0xFF)  # a bulk merge in between
    index.add(np.array(victims), codes[victims])  # a second round trip
    settle(index)
    for i in victims:
        assert index.search(codes[i], 0) == [(i, 0)]
    assert len(index) == 3320


def test_duplicate_add_same_code_is_ignored_different_code_replaces() -> None:
    rng = np.random.default_rng(RNG_SEED)
    a, b = random_codes(rng, 2)
    index = PdqIndex()
    index.add(np.array([7, 7]), np.stack([b, a]))  # within one call the last wins
    assert len(index) == 1 and index.search(a, 0) == [(7, 0)] and index.search(b, 0) == []
    index.add(np.array([7]), a[None])
    assert len(index) == 1 and index.search(a, 31) == [(7, 0)]
    index.add(np.array([7]), b[None])
    assert len(index) == 1 and index.search(a, 0) == [] and index.search(b, 0) == [(7, 0)]


def test_duplicate_add_of_a_main_row() -> None:
    rng = np.random.default_rng(RNG_SEED)
    codes = random_codes(rng, 3000)
    index = PdqIndex(delta_limit=100)
    index.add(np.arange(3000), codes)
    footprint = index.memory_bytes()
    index.add(np.arange(3000), codes)  # re-delivery: nothing changes
    assert len(index) == 3000 and index.memory_bytes() == footprint
    new = random_codes(rng, 1)
    index.add(np.array([42]), new)
    assert index.search(codes[42], 0) == [] and index.search(new[0], 0) == [(42, 0)]


def test_equal_codes_sort_by_id() -> None:
    rng = np.random.default_rng(RNG_SEED)
    code = random_codes(rng, 1)
    index = PdqIndex()
    index.add(np.array([9, -3, 4]), np.repeat(code, 3, axis=0))
    assert index.search(code[0], 0) == [(-3, 0), (4, 0), (9, 0)]


def test_skewed_buckets_fall_back_to_a_scan_and_stay_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(RNG_SEED)
    codes = random_codes(rng, 4000)
    codes[:, :12] = 0  # chunk values shared by every code, as near-blank images do
    scans: list[int] = []
    real_scan = pdq_index._range_scan

    def counting_scan(query: np.ndarray, codes: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
        scans.append(codes.shape[0])
        return real_scan(query, codes, radius)

    monkeypatch.setattr(pdq_index, "_range_scan", counting_scan)
    index = PdqIndex()
    index.add(np.arange(4000), codes)
    model = dict(enumerate(codes))
    query = flip(codes[17], 30, rng)
    assert index.search(query, 31) == brute(model, query, 31)
    assert scans == [4000]


def test_search_many_and_the_empty_index() -> None:
    rng = np.random.default_rng(RNG_SEED)
    index = PdqIndex()
    queries = random_codes(rng, 3)
    assert len(index) == 0 and index.search(queries[0], 31) == []
    assert index.search_many(queries, 31) == [[], [], []]
    assert index.search_many(np.zeros((0, 32), dtype=np.uint8), 31) == []
    index.remove([1, 2])
    assert len(index) == 0
    codes = random_codes(rng, 3000)
    index.add(np.arange(3000), codes)
    queries = np.stack([flip(codes[i], i, rng) for i in range(10)])
    assert index.search_many(queries, 31) == [index.search(q, 31) for q in queries]
    assert all((i, i) in found for i, found in enumerate(index.search_many(queries, 31)))


def test_rejects_bad_input() -> None:
    index = PdqIndex(max_radius=20)
    with pytest.raises(ValueError):
        index.search(np.zeros(32, dtype=np.uint8), 21)
    with pytest.raises(ValueError):
        index.search(np.zeros(31, dtype=np.uint8), 5)
    with pytest.raises(ValueError):
        index.add(np.arange(2), np.zeros((3, 32), dtype=np.uint8))


def test_mostly_removed_index_is_rebuilt_smaller_and_stays_exact() -> None:
    rng = np.random.default_rng(RNG_SEED)
    codes = random_codes(rng, 3000)
    index = PdqIndex(delta_limit=100)
    index.add(np.arange(3000), codes)
    index.remove(range(2500))
    index.add(np.arange(5000, 5200), random_codes(rng, 200))  # overflows the delta: rebuild
    settle(index)
    assert len(index) == 700 and index._n == 700
    model = {i: codes[i] for i in range(2500, 3000)}
    for i in (0, 2600, 2999):
        assert index.search(codes[i], 31) == brute(model, codes[i], 31)
