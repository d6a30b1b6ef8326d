"""Exact Hamming-radius index for PDQ hashes (256 bits, stored as 32 packed bytes).

Multi-index hashing (Norouzi et al.): the 256 bits are cut into 12 chunks (four of
22 bits, eight of 21). If two hashes differ in at most ``r = 12q + a`` bits, then by
pigeonhole one of the first ``a + 1`` chunks differs in at most ``q`` bits or one of
the others in at most ``q - 1``. Probing each chunk's table with every value within
that many flips of the query's chunk therefore finds every stored hash within ``r``;
each candidate is then checked with its full distance (faiss ``hammings``). At
``r = 31`` that is about 1,950 bucket probes and, for uniform hashes, about 7
candidates per 10,000 stored hashes.

Layout. The "main" segment (numpy) holds per chunk a CSR table (bucket offsets,
2^w + 1 int32, and row numbers sorted by chunk value, int32), plus each row's code,
id and liveness, and the ids sorted for lookups: about 100 bytes per hash, 134 MB of
offsets and 1/16 spare capacity. New hashes land in a "delta" buffer scanned with
faiss's ``hamming_range_search``, so an add is matchable as soon as ``add()`` returns.

Merging, never a rebuild. An add that would overflow the delta (``delta_limit``
rows) appends the delta's live rows and the batch to the main rows, which takes
milliseconds, and queues 13 merge steps: insert the new rows into one chunk table
(a sort of the new rows and one pass over the table, ~0.1-0.2 s at 10M rows), or
into the id index. Every later ``add()`` or ``remove()`` call, an empty ``add()``
included, runs one step, so no call blocks for long. Until every table has taken the
new rows, searches also scan them linearly (at most twice ``delta_limit`` rows). Steps
still queued when the delta overflows again run at once. A batch bigger than
``delta_limit`` (a bulk load) is indexed before ``add()`` returns: load a bank in one
call or in big batches, as each merge costs a pass over the main tables. Growing the
spare capacity copies the main arrays (briefly twice their memory). Removal only
marks rows dead; once the dead outnumber half the live rows, the next overflow
rebuilds the main segment without them (seconds per million rows, synchronous).

Skew guard. Real PDQ hashes are not uniform: a popular chunk value (flat or
near-blank images) makes a big bucket. Lookups stay exact whatever the skew, but
when the probed buckets hold more than 1/32 of the main rows, or the radius is 48 or
more, the query scans the main codes linearly with faiss instead, so no lookup costs
much more than a brute-force scan (a random gather costs ~30 times a scanned row).

Not thread-safe: ``add`` and ``remove`` need exclusive access (they replace arrays
that searches read). ``search`` and ``search_many`` only read, so they may run
concurrently with each other, e.g. under the read side of a readers-writer lock.
faiss calls run on the calling thread only (OpenMP threads set to 1 for the call).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterable, Iterator
from functools import cache

import faiss
import numpy as np

CODE_BYTES = 32
_CHUNK_BITS = (22, 22, 22, 22, 21, 21, 21, 21, 21, 21, 21, 21)
_NCHUNK = len(_CHUNK_BITS)
_CHUNK_START = tuple(sum(_CHUNK_BITS[:c]) for c in range(_NCHUNK))
_OFFSET_START = tuple(sum((1 << w) + 1 for w in _CHUNK_BITS[:c]) for c in range(_NCHUNK))
_OFFSET_LEN = sum((1 << w) + 1 for w in _CHUNK_BITS)
_MAX_PROBE_FLIPS = 3  # C(22, 4) = 7,315 probes per chunk: from radius 48 on, scan instead
_ID_STEP = -1  # merge step that indexes the new rows' ids
_SCAN_FRACTION = 32  # scan when the probed buckets hold more than 1/_SCAN_FRACTION of the rows


@cache
def _flip_masks(width: int, flips: int) -> np.ndarray:
    """Every ``width``-bit mask with at most ``flips`` bits set (read-only)."""
    masks = [0]
    for k in range(1, flips + 1):
        masks += [sum(1 << b for b in bits) for bits in itertools.combinations(range(width), k)]
    out = np.array(masks, dtype=np.int64)
    out.flags.writeable = False
    return out


def chunk_keys(codes: np.ndarray, chunk: int) -> np.ndarray:
    """Value (int64) of one chunk of each code in ``codes`` (n, 32) uint8; bit 0 is the top bit of byte 0."""
    start, width = _CHUNK_START[chunk], _CHUNK_BITS[chunk]
    lo, hi = start // 8, (start + width - 1) // 8
    val = np.zeros(codes.shape[0], dtype=np.int64)
    for b in range(lo, hi + 1):
        val <<= 8
        val |= codes[:, b]
    return (val >> (8 * (hi + 1) - start - width)) & ((1 << width) - 1)


def query_keys(code: np.ndarray) -> np.ndarray:
    """All chunk values of one code (32,), equal to :func:`chunk_keys` but cheaper for one code."""
    x = int.from_bytes(code.tobytes(), "big")
    return np.array(
        [(x >> (256 - s - w)) & ((1 << w) - 1) for s, w in zip(_CHUNK_START, _CHUNK_BITS, strict=True)],
        dtype=np.int64,
    )


@contextlib.contextmanager
def _one_omp_thread() -> Iterator[None]:
    # One query gains nothing from OpenMP, and on a busy machine its threads wait for
    # cores (11 ms instead of 0.25 ms to scan 65k codes on 2 loaded cores). The OpenMP
    # setting belongs to the calling thread, so other threads are not affected.
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(threads)


def _range_scan(query: np.ndarray, codes: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of C-contiguous ``codes`` (n, 32) uint8 within ``radius`` of ``query``, and their distances."""
    if codes.shape[0] == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    res = faiss.RangeSearchResult(1)
    faiss.hamming_range_search(  # type: ignore[attr-defined]
        faiss.swig_ptr(query), faiss.swig_ptr(codes), 1, codes.shape[0], radius + 1, CODE_BYTES, res
    )  # faiss keeps distances strictly below its radius
    found = int(faiss.rev_swig_ptr(res.lims, 2)[1])
    if not found:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    rows = faiss.rev_swig_ptr(res.labels, found).copy()
    return rows, faiss.rev_swig_ptr(res.distances, found).astype(np.int64)


def _hammings(query: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Distances (int32) from ``query`` to each row of C-contiguous ``codes`` (n, 32) uint8."""
    out = np.empty(codes.shape[0], dtype=np.int32)
    if codes.shape[0]:
        faiss.hammings(  # type: ignore[attr-defined]
            faiss.swig_ptr(query), faiss.swig_ptr(codes), 1, codes.shape[0], CODE_BYTES, faiss.swig_ptr(out)
        )
    return out


class PdqIndex:
    """Exact radius search over PDQ hashes, updated incrementally (see the module docstring).

    Every ``search`` with ``radius <= max_radius`` returns every live stored hash
    within ``radius`` (100% recall) and nothing beyond it. Adding an id that is
    already live with the same code is a no-op (re-delivery is harmless); with a
    different code the new code replaces the old one. Ids are any int64.
    """

    def __init__(self, max_radius: int = 31, *, delta_limit: int = 65536) -> None:
        if not 0 <= max_radius <= 256:
            raise ValueError(f"max_radius must be in 0..256, got {max_radius}")
        if delta_limit < 1:
            raise ValueError("delta_limit must be positive")
        self.max_radius = max_radius
        self.delta_limit = delta_limit
        self._plans: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._live = 0
        self._dead = 0
        self._reset_main()
        self._reset_delta()

    def _reset_main(self) -> None:
        self._n = 0  # rows in the main segment, dead ones included
        self._cap = 0  # rows allocated
        self._words = np.zeros((0, CODE_BYTES // 8), dtype=np.uint64)  # codes, as uint64 for fast gathers
        self._row_ids = np.zeros(0, dtype=np.int64)
        self._alive = np.zeros(0, dtype=bool)
        # Chunk c's table covers rows [0, table_rows[c]): table = perm[c*cap : c*cap + table_rows[c]],
        # sorted by chunk value; bucket k is table[offsets[_OFFSET_START[c] + k] : ...[... + k + 1]].
        self._perm = np.zeros(0, dtype=np.int32)
        self._offsets = np.zeros(_OFFSET_LEN, dtype=np.int32)
        self._table_rows = [0] * _NCHUNK
        # Ids of rows [0, id_rows_covered), sorted (an id repeats if re-added after removal), and
        # of the rows after that, which a merge has yet to index.
        self._id_index = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int32))
        self._id_rows_covered = 0
        self._pending_ids = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int32))
        self._steps: list[int] = []  # merge steps left: chunk numbers, then _ID_STEP

    def _reset_delta(self) -> None:
        self._d_codes = np.zeros((self.delta_limit, CODE_BYTES), dtype=np.uint8)
        self._d_ids = np.zeros(self.delta_limit, dtype=np.int64)
        self._d_alive = np.zeros(self.delta_limit, dtype=bool)
        self._d_count = 0
        self._d_pos: dict[int, int] = {}

    def __len__(self) -> int:
        return self._live

    def memory_bytes(self) -> int:
        """Bytes of the arrays (spare capacity included) plus ~100 bytes per delta entry's dict slot."""
        arrays = (
            self._words,
            self._row_ids,
            self._alive,
            self._perm,
            self._offsets,
            *self._id_index,
            *self._pending_ids,
            self._d_codes,
            self._d_ids,
            self._d_alive,
        )
        return sum(a.nbytes for a in arrays) + 100 * len(self._d_pos)

    # -- updates -------------------------------------------------------------

    def add(self, ids: np.ndarray, codes: np.ndarray) -> None:
        """Store ``codes`` (n, 32) uint8 under ``ids`` (n,) int64; matchable when this returns.

        Within one call the last occurrence of an id wins. Also runs one step of a
        pending merge (even when ``ids`` is empty), see the module docstring.
        """
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        codes = np.ascontiguousarray(codes, dtype=np.uint8)
        if codes.shape != (ids.size, CODE_BYTES):
            raise ValueError(f"codes must have shape ({ids.size}, {CODE_BYTES}), got {codes.shape}")
        self._merge_step()
        if ids.size == 0:
            return
        if ids.size > 1 and not np.all(np.diff(np.sort(ids))):
            _, last_rev = np.unique(ids[::-1], return_index=True)
            keep = np.sort(ids.size - 1 - last_rev)
            ids, codes = ids[keep], codes[keep]
        fresh = np.ones(ids.size, dtype=bool)
        if self._n:
            rows = self._main_rows(ids)
            present = np.flatnonzero(rows >= 0)
            rows = rows[present]
            same = (self._words[rows] == codes.view(np.uint64)[present]).all(axis=1)
            fresh[present[same]] = False
            self._kill_main_rows(rows[~same])
        if self._d_pos:
            live_ids = self._d_ids[: self._d_count][self._d_alive[: self._d_count]]
            for i in np.flatnonzero(np.isin(ids, live_ids)).tolist():
                if np.array_equal(self._d_codes[self._d_pos[int(ids[i])]], codes[i]):
                    fresh[i] = False
                else:
                    self._drop_delta(int(ids[i]))
        if not fresh.all():
            ids, codes = ids[fresh], codes[fresh]
        if self._d_count + ids.size > self.delta_limit:
            self._start_merge(ids, codes)
            return
        start, stop = self._d_count, self._d_count + ids.size
        self._d_codes[start:stop] = codes
        self._d_ids[start:stop] = ids
        self._d_alive[start:stop] = True
        self._d_pos.update(zip(ids.tolist(), range(start, stop), strict=True))
        self._d_count = stop
        self._live += ids.size

    def remove(self, ids: Iterable[int]) -> None:
        """Forget these ids (unknown ones are ignored): never returned again unless re-added.

        Also runs one step of a pending merge, like :meth:`add`.
        """
        self._merge_step()
        wanted = np.fromiter((int(i) for i in ids), dtype=np.int64)
        for id_ in wanted.tolist():
            if id_ in self._d_pos:
                self._drop_delta(id_)
        rows = self._main_rows(wanted)
        self._kill_main_rows(np.unique(rows[rows >= 0]))

    def _drop_delta(self, id_: int) -> None:
        self._d_alive[self._d_pos.pop(id_)] = False
        self._live -= 1

    def _kill_main_rows(self, rows: np.ndarray) -> None:
        self._alive[rows] = False
        self._live -= rows.size
        self._dead += rows.size

    def _main_rows(self, ids: np.ndarray) -> np.ndarray:
        """The live main row of each id, or -1."""
        out = _live_rows(*self._id_index, ids, self._alive)
        if self._pending_ids[0].size:
            missing = np.flatnonzero(out < 0)
            out[missing] = _live_rows(*self._pending_ids, ids[missing], self._alive)
        return out

    # -- merging the delta into the main segment ----------------------------

    def _start_merge(self, ids: np.ndarray, codes: np.ndarray) -> None:
        """Append the live delta and these rows to the main segment and queue the steps indexing them.

        Steps still queued from the previous merge run first. A batch bigger than the
        delta (a bulk load), or a rebuild, is indexed before this returns.
        """
        while self._steps:
            self._merge_step()
        bulk = ids.size > self.delta_limit
        live = self._d_alive[: self._d_count]
        if live.any():  # (no copy of a bulk batch when the delta is empty)
            ids = np.concatenate([self._d_ids[: self._d_count][live], ids])
            codes = np.concatenate([self._d_codes[: self._d_count][live], codes])
        self._live -= int(live.sum())  # counted again below
        self._reset_delta()
        if self._dead > max(self._live // 2, self.delta_limit):  # mostly dead: rebuild without them
            alive = self._alive[: self._n]
            ids = np.concatenate([self._row_ids[: self._n][alive], ids])
            codes = np.concatenate([self._words[: self._n][alive].view(np.uint8), codes])
            self._live -= int(alive.sum())
            self._dead = 0
            self._reset_main()
            bulk = True
        d, n = ids.size, self._n
        self._reserve(n + d)
        self._words[n : n + d] = codes.view(np.uint64)
        self._row_ids[n : n + d] = ids
        self._alive[n : n + d] = True
        self._n = n + d
        self._live += d
        self._steps = [*range(_NCHUNK), _ID_STEP]
        if bulk:
            while self._steps:
                self._merge_step()
        else:
            order = np.argsort(ids, kind="stable")
            self._pending_ids = (ids[order], (order + n).astype(np.int32))

    def _merge_step(self) -> None:
        """Index the rows appended by the last merge in one more chunk table, or in the id index."""
        if not self._steps:
            return
        step = self._steps.pop(0)
        lo, n = (self._id_rows_covered if step == _ID_STEP else self._table_rows[step]), self._n
        if step == _ID_STEP:
            order = np.argsort(self._row_ids[lo:n], kind="stable")
            new_ids, new_rows = self._row_ids[lo:n][order], (order + lo).astype(np.int32)
            del order
            self._id_index = _insert_sorted(*self._id_index, new_ids, new_rows) if lo else (new_ids, new_rows)
            self._id_rows_covered = n
            self._pending_ids = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int32))
            return
        # Each new row goes to the end of its bucket: one pass over the table's old rows.
        c, base = step, step * self._cap
        block = self._offsets[_OFFSET_START[c] : _OFFSET_START[c] + (1 << _CHUNK_BITS[c]) + 1]
        packed = chunk_keys(self._words[lo:n].view(np.uint8), c)
        packed <<= 32  # sorting (key, row) pairs groups rows by key, 3x faster than an argsort
        packed |= np.arange(lo, n, dtype=np.int64)
        packed.sort()
        keys = packed >> 32
        packed &= 0xFFFFFFFF  # the rows
        keys += 1
        where = block[keys]  # int32 (rows < 2**31), to spare memory in bulk loads
        keys -= 1
        where += np.arange(packed.size, dtype=np.int32)  # positions in the grown table
        table = self._perm[base : base + n]
        if lo:
            old = table[:lo].copy()
            keep = np.ones(n, dtype=bool)
            keep[where] = False
            table[keep] = old
        table[where] = packed
        _shift_offsets(block, keys)
        self._table_rows[c] = n

    def _reserve(self, rows: int) -> None:
        if rows <= self._cap:
            return
        cap = rows + max(self.delta_limit, rows // 16)
        if cap >= 2**31:  # row numbers and bucket offsets are int32
            raise OverflowError("PdqIndex holds fewer than 2**31 rows")
        n, old = self._n, self._cap
        self._words = _grown(self._words, n, cap)
        self._row_ids = _grown(self._row_ids, n, cap)
        self._alive = _grown(self._alive, n, cap)
        perm = np.zeros(_NCHUNK * cap, dtype=np.int32)
        for c, size in enumerate(self._table_rows):
            perm[c * cap : c * cap + size] = self._perm[c * old : c * old + size]
        self._perm, self._cap = perm, cap

    # -- search --------------------------------------------------------------

    def search(self, code: np.ndarray, radius: int) -> list[tuple[int, int]]:
        """(id, distance) of every live hash within ``radius`` of ``code`` (32,), by (distance, id)."""
        if not 0 <= radius <= self.max_radius:
            raise ValueError(f"radius must be in 0..{self.max_radius}, got {radius}")
        query = np.ascontiguousarray(code, dtype=np.uint8).reshape(-1)
        if query.size != CODE_BYTES:
            raise ValueError(f"a PDQ code has {CODE_BYTES} bytes, got {query.size}")
        with _one_omp_thread():
            rows, dists = self._search_main(query, radius)
            ids = self._row_ids[rows]
            if self._d_count:
                d_rows, d_dists = _range_scan(query, self._d_codes[: self._d_count], radius)
                live = self._d_alive[d_rows]
                ids = np.concatenate([ids, self._d_ids[d_rows[live]]])
                dists = np.concatenate([dists, d_dists[live]])
        order = np.lexsort((ids, dists))
        return list(zip(ids[order].tolist(), dists[order].tolist(), strict=True))

    def search_many(self, codes: np.ndarray, radius: int) -> list[list[tuple[int, int]]]:
        """:meth:`search` for each row of ``codes`` (q, 32), in order."""
        queries = np.asarray(codes, dtype=np.uint8).reshape(-1, CODE_BYTES)
        return [self.search(code, radius) for code in queries]

    def _plan(self, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per probe: chunk, flip mask and offset block start (pigeonhole split, module doc)."""
        if radius not in self._plans:
            q, a = divmod(radius, _NCHUNK)
            plan: list[tuple[int, np.ndarray]] = [
                (c, _flip_masks(w, q if c <= a else q - 1)) for c, w in enumerate(_CHUNK_BITS) if c <= a or q
            ]
            self._plans[radius] = (
                np.concatenate([np.full(m.size, c, np.int64) for c, m in plan]),
                np.concatenate([m for _, m in plan]),
                np.concatenate([np.full(m.size, _OFFSET_START[c], np.int64) for c, m in plan]),
            )
        return self._plans[radius]

    def _search_main(self, query: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
        n, covered = self._n, min(self._table_rows)  # rows [covered, n) await a merge step
        if n == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        all_codes = self._words[:n].view(np.uint8)
        if radius // _NCHUNK > _MAX_PROBE_FLIPS:
            return self._live_only(*_range_scan(query, all_codes, radius))
        chunk, mask, start = self._plan(radius)
        probe = (query_keys(query)[chunk] ^ mask) + start
        begin = self._offsets[probe]
        length = self._offsets[probe + 1] - begin
        begin = begin + chunk * self._cap  # into the flat perm
        total = int(length.sum())
        if total * _SCAN_FRACTION > n or chunk.size > covered:
            return self._live_only(*_range_scan(query, all_codes, radius))
        ends = np.cumsum(length)
        cand = self._perm[np.arange(total) + np.repeat(begin - (ends - length), length)]
        d = _hammings(query, np.take(self._words, cand, axis=0).view(np.uint8))
        hit = np.flatnonzero(d <= radius)
        rows, dists = cand[hit].astype(np.int64), d[hit].astype(np.int64)
        if covered < n:
            p_rows, p_dists = _range_scan(query, all_codes[covered:], radius)
            rows, dists = np.concatenate([rows, p_rows + covered]), np.concatenate([dists, p_dists])
        if rows.size > 1:  # a row can sit in several chunk tables
            rows, first = np.unique(rows, return_index=True)
            dists = dists[first]
        return self._live_only(rows, dists)

    def _live_only(self, rows: np.ndarray, dists: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        live = self._alive[rows]
        return rows[live], dists[live]


def _live_rows(sorted_ids: np.ndarray, rows: np.ndarray, ids: np.ndarray, alive: np.ndarray) -> np.ndarray:
    """For each of ``ids``, its live row per the sorted (id, row) pairs, or -1."""
    out = np.full(ids.size, -1, dtype=np.int64)
    if sorted_ids.size == 0 or ids.size == 0:
        return out
    lo = np.searchsorted(sorted_ids, ids, side="left")
    hi = np.searchsorted(sorted_ids, ids, side="right")
    single = np.flatnonzero(hi - lo == 1)
    found = rows[lo[single]]
    out[single] = np.where(alive[found], found, -1)
    for i in np.flatnonzero(hi - lo > 1):  # re-added after a removal: the dead rows remain
        for row in rows[lo[i] : hi[i]]:
            if alive[row]:
                out[i] = row
    return out


def _grown(array: np.ndarray, used: int, rows: int) -> np.ndarray:
    """A zeroed array of ``rows`` rows that starts with the first ``used`` rows of ``array``."""
    out = np.zeros((rows, *array.shape[1:]), dtype=array.dtype)
    out[:used] = array[:used]
    return out


def _shift_offsets(block: np.ndarray, new_keys: np.ndarray) -> None:
    """Grow bucket offsets ``block`` for rows with ``new_keys`` (sorted) added: one pass over the tail."""
    if new_keys.size == 0:
        return
    last = np.append(np.flatnonzero(np.diff(new_keys)), new_keys.size - 1)  # last row of each key
    totals = last + 1  # new rows with a key up to this one
    bounds = np.append(new_keys[last] + 1, block.size)
    if last.size <= 1024:  # a few slices beat building a full-size increment
        edges = bounds.tolist()
        for j, total in enumerate(totals.tolist()):
            block[edges[j] : edges[j + 1]] += total
    else:
        block[bounds[0] :] += np.repeat(totals.astype(np.int32), np.diff(bounds))


def _insert_sorted(
    keys: np.ndarray, values: np.ndarray, new_keys: np.ndarray, new_values: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Merge sorted ``new_keys`` (with their values) into sorted ``keys``; returns new arrays."""
    where = np.searchsorted(keys, new_keys, side="right") + np.arange(new_keys.size)
    out_keys = np.empty(keys.size + new_keys.size, dtype=keys.dtype)
    out_values = np.empty(out_keys.size, dtype=values.dtype)
    keep = np.ones(out_keys.size, dtype=bool)
    keep[where] = False
    out_keys[keep], out_values[keep] = keys, values
    out_keys[where], out_values[where] = new_keys, new_values
    return out_keys, out_values
