"""Totals and segments: `count` over a batch, and the stretches between resched points."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

from s2teardown.core.behaviour import Behaviour
from s2teardown.core.counts.batch import N_EVENTS, Batch, slice_batch
from s2teardown.core.counts.chunked import chunk_run_quantities, chunk_runs, range_events
from s2teardown.core.counts.coefficients import (
    QUANTITIES,
    invocation_coefficients,
    invocation_columns,
    invocation_events,
    pass_coefficients,
    segment_coefficients,
)
from s2teardown.core.counts.quantities import (
    Extents,
    PassQuantities,
    chunks_spanned,
    pass_quantities_chunked,
    range_flush_applies,
    range_flush_columns,
    resched_active,
    walk_chunk,
)
from s2teardown.core.host import EVENT_OF as HOST_EVENT_OF
from s2teardown.core.host import QUANTITY_NAMES as HOST_QUANTITIES
from s2teardown.core.host import HostExtents, host_quantities
from s2teardown.core.intervals import (
    I64,
    compact,
    concat_last,
)
from s2teardown.core.layout import (
    ITERATES_MEMSLOTS,
)
from s2teardown.core.vocabulary import EVENT_INDEX

# ----------------------------------------------------------------------------------------------
# Totals and segments


@dataclass(frozen=True)
class Segments:
    """Event counts between consecutive resched points, in execution order (host frees and a
    v6.2+ block retry's RCU-deferred subtree free excluded).

    Run-length form: segment ``k`` of ``rows`` stands for ``repeat[k]`` identical consecutive
    segments (the interior chunks of a long run), and a cycle ``(first, n, times)`` says that
    segments ``first .. first+n-1`` (the chunks of one table's worth of guest) occur ``times``
    times in a row.  `events` and `lock_held` expand both.
    """

    rows: I64  # (K, N_EVENTS)
    lock_rows: npt.NDArray[np.bool_]  # (K,) False as soon as an unlocked chunk-walk is in it
    repeat: I64  # (K,)
    cycles: tuple[tuple[int, int, int], ...] = ()

    def order(self) -> npt.NDArray[np.intp]:
        """Indices into ``rows`` of the segments in execution order, cycles unrolled."""
        idx: list[int] = []
        k = 0
        starts = {first: (n, times) for first, n, times in self.cycles}
        while k < self.rows.shape[0]:
            n, times = starts.get(k, (1, 1))
            idx.extend(list(range(k, k + n)) * times)
            k += n
        return np.repeat(np.array(idx, dtype=np.intp), self.repeat[idx])

    @property
    def events(self) -> I64:
        return self.rows[self.order()]

    @property
    def lock_held(self) -> npt.NDArray[np.bool_]:
        return self.lock_rows[self.order()]


def expand_linear(columns: I64, coefficients: I64) -> I64:
    """Events (S, U, EVENTS) of quantity columns (S, C) and coefficients (U, C, EVENTS): the
    integer product, term by non-zero coefficient (exact; a handful of terms per set)."""
    terms = np.nonzero(coefficients)
    if terms[0].size > 256:  # many quantity columns (passes over hundreds of memslots)
        return np.tensordot(columns, coefficients, axes=([1], [1]))
    out = np.zeros((columns.shape[0], coefficients.shape[0], N_EVENTS), dtype=np.int64)
    for u, c, e in zip(*terms, strict=True):
        out[:, u, e] += columns[:, c] * coefficients[u, c, e]
    return out


def linear_from_events(events: I64) -> tuple[I64, I64]:
    """The trivial linear form of explicit events (S, U, EVENTS): every event count its own column."""
    n_s, n_u, n_e = events.shape
    coefficients = np.zeros((n_u, n_u * n_e, n_e), dtype=np.int64)
    for u in range(n_u):
        coefficients[u, u * n_e : (u + 1) * n_e, :] = np.eye(n_e, dtype=np.int64)
    return events.reshape(n_s, n_u * n_e), coefficients


@dataclass(frozen=True)
class Counts:
    """Event totals per distinct behaviour set, in linear form; variants sharing a set share a
    row.  ``unique[s, u] = columns[s] @ coefficients[u]``."""

    columns: I64  # (S, C) structural quantities
    coefficients: I64  # (U, C, N_EVENTS)
    variant_row: npt.NDArray[np.intp]  # (V,) row of `unique` for each variant
    segments: tuple[tuple[Segments, ...], ...] | None  # [scenario][variant]

    @cached_property
    def unique(self) -> I64:
        """(S, U, N_EVENTS): exact totals per behaviour set."""
        return expand_linear(self.columns, self.coefficients)

    @property
    def events(self) -> I64:
        """(S, V, N_EVENTS): materialised on demand (large for big batches)."""
        return self.unique[:, self.variant_row]


class _Linear:
    """Columns of quantities, each computed once (by key), and coefficients per behaviour set."""

    def __init__(self, n_sets: int) -> None:
        self.index: dict[tuple[object, ...], range] = {}  # key -> its column indices
        self.arrays: list[I64] = []
        self.terms: list[tuple[int, int, I64]] = []  # (set, column, coefficient row)
        self.n_sets = n_sets

    def __contains__(self, key: tuple[object, ...]) -> bool:
        return key in self.index

    def put(self, key: tuple[object, ...], arrays: Sequence[I64]) -> None:
        """Columns for ``key`` (computed once: callers test ``key in`` first)."""
        self.index[key] = range(len(self.arrays), len(self.arrays) + len(arrays))
        self.arrays.extend(arrays)

    def columns(self, key: tuple[object, ...]) -> list[int]:
        return list(self.index[key])

    def add(self, u: int, cols: list[int], coefficients: I64) -> None:
        """Set ``u`` gets ``coefficients`` (len(cols), EVENTS) on the columns ``cols``."""
        for c, row in zip(cols, coefficients.reshape(len(cols), N_EVENTS), strict=True):
            if row.any():
                self.terms.append((u, c, row))

    def result(self, n_s: int) -> tuple[I64, I64]:
        columns = np.empty((n_s, len(self.arrays)), dtype=np.int64)
        for c, a in enumerate(self.arrays):
            columns[:, c] = a
        coefficients = np.zeros((self.n_sets, len(self.arrays), N_EVENTS), dtype=np.int64)
        for u, c, row in self.terms:
            coefficients[u, c] += row
        return columns, coefficients


def behaviour_sets(
    b: Batch, variants: Sequence[Mapping[str, Behaviour]]
) -> tuple[list[dict[str, Behaviour]], npt.NDArray[np.intp]]:
    """The distinct behaviour sets over the batch's invocation kinds, and each variant's set."""
    kinds = tuple(dict.fromkeys(b.inv_kind))
    keys = [tuple(v[k] for k in kinds) for v in variants]
    uniq = list(dict.fromkeys(keys))
    row = np.array([uniq.index(k) for k in keys], dtype=np.intp)
    return [dict(zip(kinds, u, strict=True)) for u in uniq], row


def count(
    b: Batch,
    variants: Sequence[Mapping[str, Behaviour]],
    *,
    fwb: bool,
    cache_line: int,
    tlbi_range: bool = False,
    with_segments: bool = False,
) -> Counts:
    """Exact event totals for every scenario and variant (and optionally the segments).

    Variants whose behaviours agree on every invocation kind of the batch are counted once.
    Pass quantities are computed once and shared; a walk chunked finer than an entry-level
    entry (4 levels with 1 GiB chunks) differs only in its visits (`pass_quantities_chunked`).  All in
    closed form: no loop over scenarios, chunks or tables (the segments do loop, per scenario).
    """
    g = b.geometry
    behs, row = behaviour_sets(b, variants)
    lin = _Linear(len(behs))
    ext = Extents(b, 0)
    n_e = b.ext_lo.shape[1]
    prev_lo = np.zeros((b.size, n_e, 0), dtype=np.int64)
    prev_hi = np.zeros((b.size, n_e, 0), dtype=np.int64)
    kw = {"fwb": fwb, "tlbi_range": tlbi_range, "cache_line": cache_line}
    for i in range(len(b.inv_kind)):
        lin.put(("invocation", i), invocation_columns(b, i))
        for u, behaviours in enumerate(behs):
            lin.add(u, lin.columns(("invocation", i)),
                    invocation_coefficients(b, i, behaviours[b.inv_kind[i]], tlbi_range=tlbi_range))
    flush = np.zeros((2, N_EVENTS), dtype=np.int64)
    flush[0, EVENT_INDEX["range_flush_call"]] = 1
    flush[1, EVENT_INDEX["range_tlbi_op"]] = 1
    resched = np.zeros((1, N_EVENTS), dtype=np.int64)
    resched[0, EVENT_INDEX["resched_point"]] = 1
    for j, i in enumerate(b.pass_inv):
        kind = b.inv_kind[i]
        lo, hi = b.pass_lo[:, j], b.pass_hi[:, j]
        # chunk sizes finer than an entry-level entry: the same quantities but the visits
        walks = {walk_chunk(g, behaviours[kind]) for behaviours in behs}
        finer = sorted(c for c in walks if c is not None and c < g.span(0))
        if bool((hi > lo).any()):
            q, new_lo, new_hi, chunked = pass_quantities_chunked(g, ext, prev_lo, prev_hi, lo, hi, finer)
        else:  # empty in every scenario (a memslot the range misses): nothing, state unchanged
            zero = np.zeros(b.size, dtype=np.int64)
            q, new_lo, new_hi = PassQuantities(zero, zero, zero, zero, zero, zero, zero, zero), prev_lo, prev_hi
            chunked = {c: zero for c in finer}
        lin.put(("pass", j), [getattr(q, f) for f in QUANTITIES])
        for c, visits in chunked.items():
            lin.put(("pass", j, c), [q.pte, q.pte_dev, q.pmd, q.pud, q.freed, visits])
        for u, behaviours in enumerate(behs):
            beh = behaviours[kind]
            chunk = walk_chunk(g, beh)
            key: tuple[object, ...] = ("pass", j) if chunk not in finer else ("pass", j, chunk)
            lin.add(u, lin.columns(key), pass_coefficients(g, beh, kind=kind, **kw))
            if range_flush_applies(beh, fwb=fwb, tlbi_range=tlbi_range):
                key = ("range", j, chunk)
                if key not in lin:
                    lin.put(key, list(range_flush_columns(g, lo, hi, chunk)))
                lin.add(u, lin.columns(key), flush)
            if chunk is not None and resched_active(beh, b.inv_blockable[i]):
                key = ("resched", j, chunk)
                if key not in lin:
                    lin.put(key, [np.maximum(chunks_spanned(lo, hi, chunk) - 1, 0)])
                lin.add(u, lin.columns(key), resched)
        prev_lo, prev_hi = compact(new_lo, new_hi)
    if b.host_kind and b.host_lo is not None and b.host_hi is not None:
        # the host mm's own work: the same for every behaviour set (the host side does not
        # depend on KVM's variant), in no segment (it runs outside mmu_lock)
        hq = host_quantities(g, HostExtents.of(b.ext_lo, b.ext_hi, b.ext_leaf, b.ext_dev),
                             b.host_kind, b.host_lo, b.host_hi)
        for k, hop in enumerate(hq):
            lin.put(("host", k), [getattr(hop, f) for f in HOST_QUANTITIES])
            for u in range(len(behs)):
                lin.add(u, lin.columns(("host", k)), _HOST_COEFFICIENTS)
    segs = None
    if with_segments:
        per_s = []
        for s in range(b.size):
            passes = _ChunkedPasses(slice_batch(b, s, s + 1), behs)
            done = [
                _segments_one(b, s, beh, fwb=fwb, tlbi_range=tlbi_range, cache_line=cache_line,
                              passes=passes)
                for beh in behs
            ]
            per_s.append(tuple(done[r] for r in row))
        segs = tuple(per_s)
    columns, coefficients = lin.result(b.size)
    return Counts(columns, coefficients, row, segs)


#: One host quantity is one host event (core/host.py EVENT_OF).
_HOST_COEFFICIENTS = np.zeros((len(HOST_QUANTITIES), N_EVENTS), dtype=np.int64)
for _k, _name in enumerate(HOST_QUANTITIES):
    _HOST_COEFFICIENTS[_k, EVENT_INDEX[HOST_EVENT_OF[_name]]] = 1


class _ChunkedPasses:
    """One scenario's passes, split into representative chunks for every chunk size its
    behaviour sets walk with: per pass, all of them are evaluated at once and shared."""

    def __init__(self, one: Batch, behs: Sequence[Mapping[str, Behaviour]]) -> None:
        g = one.geometry
        self.one = one
        ext = Extents(one, 0)
        ext_c = Extents(one, 1)
        n_e = one.ext_lo.shape[1]
        prev_lo = np.zeros((1, n_e, 0), dtype=np.int64)
        prev_hi = np.zeros((1, n_e, 0), dtype=np.int64)
        self.cache: dict[tuple[int, int], tuple[I64, I64, I64, I64, I64]] = {}
        for j, i in enumerate(one.pass_inv):
            lo, hi = one.pass_lo[:, j], one.pass_hi[:, j]
            if int(hi[0]) > int(lo[0]):
                kind = one.inv_kind[i]
                sizes = sorted({walk_chunk(g, beh[kind]) or g.ipa_size for beh in behs})
                # a chunk size the pass fits in walks it whole: chunk_run_quantities' first
                one_walk = {c for c in sizes if int(chunks_spanned(lo, hi, c)[0]) == 1}
                split = [c for c in sizes if c not in one_walk]
                runs = [chunk_runs(one, j, c) for c in split]
                whole, parts = chunk_run_quantities(g, ext_c, prev_lo, prev_hi, lo, hi,
                                                       [r[:2] for r in runs])
                for c, r, qm in zip(split, runs, parts, strict=True):
                    self.cache[(j, c)] = (*r, qm)
                ones = np.ones((1, 1), dtype=np.int64)
                for c in one_walk:
                    self.cache[(j, c)] = (lo[:, None], hi[:, None], ones, ones, whole[:, None, :])
                x_lo, x_hi = ext.clip(lo, hi)  # an empty pass leaves the coverage as it is
                prev_lo, prev_hi = compact(concat_last(prev_lo, x_lo[..., None]),
                                           concat_last(prev_hi, x_hi[..., None]))

    def runs(self, j: int, chunk: int) -> tuple[I64, I64, I64, I64, I64]:
        """(c_lo, c_hi, mult, times) of `chunk_runs` and the quantity matrix (1, K, 8)."""
        return self.cache[(j, chunk)]


def _segments_one(
    b: Batch,
    s: int,
    behaviours: Mapping[str, Behaviour],
    *,
    fwb: bool,
    tlbi_range: bool,
    cache_line: int,
    passes: _ChunkedPasses | None = None,
) -> Segments:
    """Event counts between consecutive resched points for scenario ``s``, in execution order.

    Host-side frees happen after the lock is dropped (exit_mmap) and belong to no segment; so
    does the work of a v6.2+ block retry's RCU-deferred subtree free (`segment_coefficients`).
    ``passes`` shares the chunked passes between the behaviour sets of one scenario.
    """
    g = b.geometry
    if passes is None:
        passes = _ChunkedPasses(slice_batch(b, s, s + 1), [behaviours])
    one = passes.one
    blocks: list[I64] = []  # blocks of rows of events, in execution order
    unlocked: list[npt.NDArray[np.bool_]] = []  # per row: a chunk-walk run without mmu_lock
    breaks: list[npt.NDArray[np.bool_]] = []  # per row: a resched point follows it
    mults: list[I64] = []  # per row: identical consecutive segments it stands for
    cycled: list[I64] = []  # per row: times its region's chunks repeat (1: no cycle)

    def add(rows: I64, free: bool = False, brk: npt.NDArray[np.bool_] | None = None,
            mult: I64 | None = None, times: I64 | None = None) -> None:
        rows = rows.reshape(-1, N_EVENTS)
        blocks.append(rows)
        unlocked.append(np.full(rows.shape[0], free))
        breaks.append(np.zeros(rows.shape[0], dtype=bool) if brk is None else brk)
        mults.append(np.ones(rows.shape[0], dtype=np.int64) if mult is None else mult)
        cycled.append(np.ones(rows.shape[0], dtype=np.int64) if times is None else times)

    def single(event: str) -> I64:
        row = np.zeros(N_EVENTS, dtype=np.int64)
        row[EVENT_INDEX[event]] = 1
        return row

    for i, kind in enumerate(one.inv_kind):
        if not one.inv_present[0, i]:
            continue
        beh = behaviours[kind]
        walk_unlocked = beh.lock == "unlocked"
        add(single("notifier_call"))
        for j in (j for j, ii in enumerate(one.pass_inv) if ii == i):
            if one.pass_slot[j] >= 0 and kind in ITERATES_MEMSLOTS:
                add(single("memslot_visit"))
            lo, hi = one.pass_lo[0, j : j + 1], one.pass_hi[0, j : j + 1]
            if int(hi[0]) <= int(lo[0]):
                continue
            chunk = walk_chunk(g, beh) or g.ipa_size
            c_lo, c_hi, mult, times, qm = passes.runs(j, chunk)
            # a deferred (RCU) free leaves the segments but not the totals (segment_coefficients)
            ev = (qm @ segment_coefficients(g, beh, fwb=fwb, tlbi_range=tlbi_range, cache_line=cache_line,
                                            kind=kind))[0]
            if range_flush_applies(beh, fwb=fwb, tlbi_range=tlbi_range):
                ev = ev + range_events(g, c_lo, c_hi)[0]
            keep = mult[0] > 0
            ev, m, t = ev[keep], mult[0][keep], times[0][keep]
            n = int(chunks_spanned(lo, hi, chunk)[0])
            if int((m * t).sum()) != n or m[0] != 1 or m[-1] != 1 or t[0] != 1 or t[-1] != 1:
                raise RuntimeError(f"chunk runs cover {int((m * t).sum())} chunks of {n}")
            active = resched_active(beh, one.inv_blockable[i]) and walk_chunk(g, beh) is not None
            if active:
                # a resched point after every chunk but the pass's last; an interior run of m
                # identical chunks is m identical segments
                ev[:-1, EVENT_INDEX["resched_point"]] += 1
                brk = np.ones(len(m), dtype=bool)
                brk[-1] = False
                add(ev, walk_unlocked, brk, m, t)
            else:
                add((ev * (m * t)[:, None]).sum(axis=0), walk_unlocked)
        tail = invocation_events(one, i, beh, tlbi_range=tlbi_range)[0]
        tail[EVENT_INDEX["notifier_call"]] = 0
        tail[EVENT_INDEX["memslot_visit"]] = 0
        if tail.any():
            add(tail)
    if not blocks:
        return Segments(np.zeros((1, N_EVENTS), dtype=np.int64), np.ones(1, dtype=bool),
                        np.ones(1, dtype=np.int64))
    arr = np.concatenate(blocks)
    brk_all = np.concatenate(breaks)
    free_all = np.concatenate(unlocked)
    mult_all = np.concatenate(mults)
    times_all = np.concatenate(cycled)
    # segment k = rows starts[k] .. ends[k]-1; sums as differences of a running total.  A row
    # standing for several chunks is always a segment of its own (breaks on both sides).
    starts = np.concatenate([[0], np.flatnonzero(brk_all[:-1]) + 1])
    ends = np.append(starts[1:], arr.shape[0])
    run = np.concatenate([np.zeros((1, N_EVENTS), dtype=np.int64), np.cumsum(arr, axis=0)])
    run_free = np.concatenate([[0], np.cumsum(free_all)])
    repeat = np.where(ends - starts == 1, mult_all[starts], 1)
    # a cycle: consecutive rows of one repeated region, each a segment of its own (a chunk with a
    # resched point on both sides: never the first or the last chunk of its pass)
    cycles: list[tuple[int, int, int]] = []
    seg_of_row = {int(r): k for k, r in enumerate(starts)}
    r = 0
    while r < len(times_all):
        if times_all[r] == 1:
            r += 1
            continue
        e = r
        while e < len(times_all) and times_all[e] == times_all[r]:
            e += 1
        if any(x not in seg_of_row for x in range(r, e + 1) if x < arr.shape[0]):
            raise RuntimeError("a repeated region's chunks are not segments of their own")
        cycles.append((seg_of_row[r], e - r, int(times_all[r])))
        r = e
    return Segments(run[ends] - run[starts], (run_free[ends] - run_free[starts]) == 0, repeat,
                    tuple(cycles))
