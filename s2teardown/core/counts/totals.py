"""Totals and segments: `count` over a batch, and the stretches between resched points."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

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
    ExtentWindows,
    PassQuantities,
    chunks_spanned,
    pass_quantities_chunked,
    range_flush_applies,
    range_flush_columns,
    resched_active,
    walk_chunk,
)
from s2teardown.core.el2 import (
    HOST_MANAGED,
    PKVM_KINDS,
    SHADOW_UNMAP_KINDS,
    El2Path,
    finalize_events,
    pkvm_quantities,
    reclaim_events,
    unshare_events,
)
from s2teardown.core.geometry import Geometry
from s2teardown.core.host import EVENT_OF as HOST_EVENT_OF
from s2teardown.core.host import QUANTITY_NAMES as HOST_QUANTITIES
from s2teardown.core.host import HostExtents, host_quantities
from s2teardown.core.intervals import (
    I64,
    compact,
    concat_last,
    floor_div,
)
from s2teardown.core.layout import (
    ITERATES_MEMSLOTS,
    TEARDOWN,
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

    def accumulate(self, key: tuple[object, ...], arrays: Sequence[I64]) -> None:
        """Add ``arrays`` to the columns of ``key`` (put them, the first time)."""
        if key not in self.index:
            self.put(key, arrays)
            return
        for c, a in zip(self.index[key], arrays, strict=True):
            self.arrays[c] = self.arrays[c] + a

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
    b: Batch, variants: Sequence[Mapping[str, Behaviour]], paths: Sequence[El2Path] | None = None
) -> tuple[list[dict[str, Behaviour]], npt.NDArray[np.intp], list[El2Path]]:
    """The distinct behaviour sets over the batch's invocation kinds (and EL2 paths, core/el2.py),
    each variant's set, and each set's EL2 path."""
    kinds = tuple(dict.fromkeys(b.inv_kind))
    el2 = list(paths) if paths is not None else [HOST_MANAGED] * len(variants)
    keys = [(tuple(v[k] for k in kinds), p) for v, p in zip(variants, el2, strict=True)]
    uniq = list(dict.fromkeys(keys))
    row = np.array([uniq.index(k) for k in keys], dtype=np.intp)
    return [dict(zip(kinds, u[0], strict=True)) for u in uniq], row, [u[1] for u in uniq]


def count(
    b: Batch,
    variants: Sequence[Mapping[str, Behaviour]],
    *,
    fwb: bool,
    cache_line: int,
    tlbi_range: bool = False,
    with_segments: bool = False,
    paths: Sequence[El2Path] | None = None,
) -> Counts:
    """Exact event totals for every scenario and variant (and optionally the segments).

    Variants whose behaviours agree on every invocation kind of the batch are counted once.
    Pass quantities are computed once and shared; a walk chunked finer than an entry-level
    entry (4 levels with 1 GiB chunks) differs only in its visits (`pass_quantities_chunked`).  All in
    closed form: no loop over scenarios, chunks or tables (the segments do loop, per scenario).

    ``paths`` gives each variant's EL2 path (core/el2.py; default: the host-managed Stage-2 of
    every variant).  A pKVM path replaces the canonical walk (only the notifier entry and the
    memslot visits stay), a nested one adds the shadow Stage-2s' walks; neither has segments
    (``segments`` is None when any variant takes one).
    """
    g = b.geometry
    behs, row, el2 = behaviour_sets(b, variants, paths)
    host_walk = [not p.replaces_stage2 for p in el2]  # the set walks the canonical Stage-2
    lin = _Linear(len(behs))
    ext = Extents(b, 0)
    windows = ExtentWindows(b)
    cover = _Coverage(b)
    memo: dict[tuple[object, ...], tuple[PassQuantities, dict[int, I64], I64, I64]] = {}
    # one scenario (an estimate): its chunked passes (the segments) go along with the totals
    along = _ChunkedPasses(b, behs, run=False) if with_segments and b.size == 1 else None
    align = _align(g, behs)
    per_pass: dict[int, list[tuple[object, ...]]] = {}  # invocation -> its range/resched columns
    finer_of: dict[str, list[int]] = {}
    kw = {"fwb": fwb, "tlbi_range": tlbi_range, "cache_line": cache_line}
    for i in range(len(b.inv_kind)):
        lin.put(("invocation", i), invocation_columns(b, i))
        for u, behaviours in enumerate(behs):
            inv = invocation_coefficients(b, i, behaviours[b.inv_kind[i]], tlbi_range=tlbi_range)
            if not host_walk[u]:  # pKVM: the notifier entry and the memslot visits only
                if b.inv_kind[i] not in PKVM_KINDS:
                    raise ValueError(f"kvm-mode: the {b.inv_kind[i]} path is not modelled under pKVM")
                inv = inv * _ENTRY_ONLY
            lin.add(u, lin.columns(("invocation", i)), inv)
    flush = np.zeros((2, N_EVENTS), dtype=np.int64)
    flush[0, EVENT_INDEX["range_flush_call"]] = 1
    flush[1, EVENT_INDEX["range_tlbi_op"]] = 1
    resched = np.zeros((1, N_EVENTS), dtype=np.int64)
    resched[0, EVENT_INDEX["resched_point"]] = 1
    # The passes of one invocation (one per memslot) share their coefficients: their columns
    # are summed, so the linear form has a few columns per invocation, not per memslot.
    for j, i in enumerate(b.pass_inv):
        kind = b.inv_kind[i]
        lo, hi = b.pass_lo[:, j], b.pass_hi[:, j]
        first = ("pass", i) not in lin
        if not first and not bool((hi > lo).any()):
            continue  # empty in every scenario (a memslot the range misses): adds nothing
        # chunk sizes finer than an entry-level entry: the same quantities but the visits
        if kind not in finer_of:
            walks = {walk_chunk(g, behaviours[kind]) for behaviours in behs}
            finer_of[kind] = sorted(c for c in walks if c is not None and c < g.span(0))
        finer = finer_of[kind]
        if bool((hi > lo).any()):
            e0, e1 = windows.of(lo, hi)  # the extents this pass can concern (linear work)
            p_lo, p_hi = cover.window(e0, e1)
            ext_w = ext.window(e0, e1)
            if b.size == 1:  # an estimate: passes equal but for a shift are computed once
                core, base, base_u = _relative(align, ext_w, p_lo, p_hi, lo, hi)
                if along is not None:
                    along.step(j, core, base, base_u, ext_w, p_lo, p_hi, cover, windows)
                shape_key = (core, tuple(finer))
                hit = memo.get(shape_key)
                if hit is None:
                    q, new_lo, new_hi, chunked = pass_quantities_chunked(g, ext_w, p_lo, p_hi, lo,
                                                                         hi, finer)
                    memo[shape_key] = (q, chunked, *_shifted(new_lo, new_hi, -base_u))
                else:
                    q, chunked, r_lo, r_hi = hit
                    new_lo, new_hi = _shifted(r_lo, r_hi, base_u)
            else:
                q, new_lo, new_hi, chunked = pass_quantities_chunked(g, ext_w, p_lo, p_hi, lo, hi,
                                                                     finer)
            cover.update(e0, e1, new_lo, new_hi)
        else:  # empty in every scenario: nothing, state unchanged
            zero = np.zeros(b.size, dtype=np.int64)
            q = PassQuantities(zero, zero, zero, zero, zero, zero, zero, zero)
            chunked = {c: zero for c in finer}
        lin.accumulate(("pass", i), [getattr(q, f) for f in QUANTITIES])
        for c, visits in chunked.items():
            lin.accumulate(("pass", i, c), [q.pte, q.pte_dev, q.pmd, q.pud, q.freed, visits])
        if first:  # the invocation's columns get their coefficients once, per behaviour set
            extra: dict[tuple[object, ...], list[I64]] = {}
            for u, behaviours in enumerate(behs):
                if not host_walk[u]:
                    continue  # pKVM: the host walks no Stage-2 (core/el2.py)
                beh = behaviours[kind]
                chunk = walk_chunk(g, beh)
                key: tuple[object, ...] = ("pass", i) if chunk not in finer else ("pass", i, chunk)
                lin.add(u, lin.columns(key), pass_coefficients(g, beh, kind=kind, **kw))
                if range_flush_applies(beh, fwb=fwb, tlbi_range=tlbi_range):
                    key = ("range", i, chunk)
                    if key not in extra:
                        extra[key] = list(range_flush_columns(g, lo, hi, chunk))
                        lin.put(key, extra[key])
                    lin.add(u, lin.columns(key), flush)
                if chunk is not None and resched_active(beh, b.inv_blockable[i]):
                    key = ("resched", i, chunk)
                    if key not in extra:
                        extra[key] = [np.maximum(chunks_spanned(lo, hi, chunk) - 1, 0)]
                        lin.put(key, extra[key])
                    lin.add(u, lin.columns(key), resched)
            per_pass[i] = list(extra)
            continue
        for key in per_pass[i]:  # this pass's range flushes and resched points
            if key[0] == "range":
                lin.accumulate(key, list(range_flush_columns(g, lo, hi, key[2])))  # type: ignore[arg-type]
            else:
                lin.accumulate(key, [np.maximum(chunks_spanned(lo, hi, key[2]) - 1, 0)])  # type: ignore[arg-type]
    if b.host_kind and b.host_lo is not None and b.host_hi is not None:
        # the host mm's own work: the same for every behaviour set (the host side does not
        # depend on KVM's variant), in no segment (it runs outside mmu_lock)
        hq = host_quantities(g, HostExtents.of(b.ext_lo, b.ext_hi, b.ext_leaf, b.ext_dev,
                                               b.ext_huge, b.ext_run),
                             b.host_kind, b.host_lo, b.host_hi, tlbi_range=tlbi_range)
        for k, hop in enumerate(hq):
            lin.put(("host", k), [getattr(hop, f) for f in HOST_QUANTITIES])
            for u in range(len(behs)):
                lin.add(u, lin.columns(("host", k)), _HOST_COEFFICIENTS)
    _el2_columns(b, lin, variants, row, el2, fwb=fwb, cache_line=cache_line, tlbi_range=tlbi_range)
    segs = None
    if with_segments and all(p == HOST_MANAGED for p in el2):
        per_s = []
        for s in range(b.size):
            passes = along if along is not None else _ChunkedPasses(slice_batch(b, s, s + 1), behs)
            done = [
                _segments_one(b, s, beh, fwb=fwb, tlbi_range=tlbi_range, cache_line=cache_line,
                              passes=passes)
                for beh in behs
            ]
            per_s.append(tuple(done[r] for r in row))
        segs = tuple(per_s)
    columns, coefficients = lin.result(b.size)
    return Counts(columns, coefficients, row, segs)


#: pKVM keeps only these events of an invocation's own (the notifier entry, the memslot visits).
_ENTRY_ONLY = np.zeros(N_EVENTS, dtype=np.int64)
_ENTRY_ONLY[[EVENT_INDEX["notifier_call"], EVENT_INDEX["memslot_visit"]]] = 1


def _event_row(events: Mapping[str, int], times: int = 1) -> I64:
    row = np.zeros((1, N_EVENTS), dtype=np.int64)
    for name, n in events.items():
        row[0, EVENT_INDEX[name]] = n * times
    return row


def _el2_columns(b: Batch, lin: _Linear, variants: Sequence[Mapping[str, Behaviour]],
                 row: npt.NDArray[np.intp], el2: Sequence[El2Path], *, fwb: bool, cache_line: int,
                 tlbi_range: bool) -> None:
    """The EL2 paths' columns and coefficients (core/el2.py, docs/model.md §15): the pKVM
    mapping tree's hypercalls, and the shadow Stage-2s of a nested guest."""
    g = b.geometry
    if any(p.pkvm != "none" for p in el2):
        if cache_line <= 0 or g.granule % cache_line:
            raise ValueError(f"a cache line of {cache_line} bytes does not divide the granule")
        q = pkvm_quantities(g, b.ext_lo, b.ext_hi, b.ext_leaf, b.ext_dev, b.inv_present,
                            b.pass_lo, b.pass_hi, b.pass_inv)
        teardowns = [i for i, k in enumerate(b.inv_kind) if k == TEARDOWN]
        once = np.zeros(b.size, dtype=np.int64)
        for i in teardowns:
            once = once + b.inv_present[:, i].astype(np.int64)
        lin.put(("pkvm", "pages"), list(q.pages))
        lin.put(("pkvm", "exit"), [once, once * q.ram_pages, once * (q.tables + q.pgd_pages),
                                   once * q.top_entries])
        c_pages = lin.columns(("pkvm", "pages"))
        c_once, c_ram, c_tables, c_top = lin.columns(("pkvm", "exit"))
        lines = g.granule // cache_line
        for u, p in enumerate(el2):
            if p.pkvm == "none":
                continue
            if p.pkvm == "unshare":  # every page an invocation removes: one unshare HVC
                per_page = _event_row(unshare_events(g.levels))
                for i, c in enumerate(c_pages):
                    if b.inv_kind[i] in PKVM_KINDS:
                        lin.add(u, [c], per_page)
            else:  # protected: notifier unmaps ignored; the exit reclaims every page
                lin.add(u, [c_ram], _event_row(reclaim_events(g.levels, lines)))
            lin.add(u, [c_once], _event_row(finalize_events(p)))
            lin.add(u, [c_tables], _event_row({"hyp_memcache_free": 1}))
            lin.add(u, [c_top], _event_row({"el2_entry_visit": 1}))
    if not b.shadows or not any(p.nested for p in el2):
        return
    rep = [int(np.flatnonzero(row == u)[0]) for u in range(len(el2))]  # a variant of each set
    drop = np.ones(N_EVENTS, dtype=np.int64)
    drop[[EVENT_INDEX["notifier_call"], EVENT_INDEX["memslot_visit"]]] = 0  # the canonical's
    for k, sb in enumerate(b.shadows):
        sc = count(sb, variants, fwb=fwb, cache_line=cache_line, tlbi_range=tlbi_range)
        lin.put(("shadow", k), [sc.columns[:, c] for c in range(sc.columns.shape[1])])
        cols = lin.columns(("shadow", k))
        for u, p in enumerate(el2):
            if p.nested:
                lin.add(u, cols, sc.coefficients[sc.variant_row[rep[u]]] * drop)
    for i, kind in enumerate(b.inv_kind):  # one kvm_invalidate_vncr_ipa per kvm_nested_s2_unmap
        if kind in SHADOW_UNMAP_KINDS:
            for u, p in enumerate(el2):
                if p.vncr:
                    lin.add(u, lin.columns(("invocation", i))[:1], _event_row({"vncr_invalidate": 1}))


#: One host quantity is one host event (core/host.py EVENT_OF).
_HOST_COEFFICIENTS = np.zeros((len(HOST_QUANTITIES), N_EVENTS), dtype=np.int64)
for _k, _name in enumerate(HOST_QUANTITIES):
    _HOST_COEFFICIENTS[_k, EVENT_INDEX[HOST_EVENT_OF[_name]]] = 1


class _Coverage:
    """What the passes so far removed, per extent, in leaf units: intervals ``(S, E, q)`` on the
    last axis, updated a window of extents at a time (a pass changes only its own window's)."""

    def __init__(self, b: Batch) -> None:
        self.lo = np.zeros((b.size, b.ext_lo.shape[1], 0), dtype=np.int64)
        self.hi = np.zeros((b.size, b.ext_lo.shape[1], 0), dtype=np.int64)

    def window(self, e0: int, e1: int) -> tuple[I64, I64]:
        return self.lo[:, e0:e1], self.hi[:, e0:e1]

    def update(self, e0: int, e1: int, new_lo: I64, new_hi: I64) -> None:
        """Extents ``e0 .. e1-1`` now have the coverage ``new`` (their old one and more)."""
        live = new_hi > new_lo
        cols = live.reshape(-1, live.shape[-1]).any(axis=0)
        if not cols.all():  # columns empty everywhere go (cheap), then, if need be, the rest
            new_lo, new_hi = new_lo[..., cols], new_hi[..., cols]
        if new_lo.shape[-1] > self.lo.shape[-1]:
            new_lo, new_hi = compact(new_lo, new_hi)
        width = new_lo.shape[-1]
        if width > self.lo.shape[-1]:
            pad = np.full(self.lo.shape[:-1] + (width - self.lo.shape[-1],), -1, dtype=np.int64)
            self.lo = np.concatenate([self.lo, pad], axis=-1)
            self.hi = np.concatenate([self.hi, pad], axis=-1)
        self.lo[:, e0:e1, :width] = new_lo
        self.hi[:, e0:e1, :width] = new_hi
        self.lo[:, e0:e1, width:] = -1
        self.hi[:, e0:e1, width:] = -1


def _align(g: Geometry, behs: Sequence[Mapping[str, Behaviour]]) -> int:
    """The shift `_relative` keys passes by: the largest tables' span, or a larger chunk-walk."""
    chunks = (walk_chunk(g, beh) for behaviours in behs for beh in behaviours.values())
    return max([g.span(0), *(c for c in chunks if c is not None and c < g.ipa_size)])


def _relative(align: int, ext: Extents, cov_lo: I64, cov_hi: I64, lo: I64,
              hi: I64) -> tuple[tuple[object, ...], I64, I64]:
    """A pass as seen from the ``align``-aligned address below it: a key equal for two passes
    whose extents (``ext``, a window), coverage and bounds differ only by such a shift, and the
    shift (bytes, (S,)) and the extents' shift in leaf units ((S, w)).

    Every unit of the counts (leaves, tables, entries, chunk-walks) divides ``align``, so the
    quantities of two such passes are equal and their coverages differ by the shift: uniform
    memslots make most passes of an unmap across hundreds of them one of a few."""
    live = hi > lo
    base = np.where(live, floor_div(lo, align) * align, 0)
    base_u = np.right_shift(base[:, None], ext.shift)  # (S, w): a padding extent has unit 1
    live_c = cov_hi > cov_lo
    parts = (
        np.where(live, lo - base, 0), np.where(live, hi - base, 0),
        ext.packed - base[:, None, None] * ext.movable,
        np.where(live_c, cov_lo - base_u[..., None], -1), np.where(live_c, cov_hi - base_u[..., None], -1),
    )
    key = (tuple(x.shape for x in parts), b"".join(x.tobytes() for x in parts))
    return key, base, base_u


def _shifted(lo: I64, hi: I64, by: I64) -> tuple[I64, I64]:
    """Coverage intervals ``(S, w, q)`` moved by ``by`` ((S, w), leaf units); empty ones stay -1."""
    live = hi > lo
    return np.where(live, lo + by[..., None], -1), np.where(live, hi + by[..., None], -1)


class _ChunkedPasses:
    """One scenario's passes, split into representative chunks for every chunk size its
    behaviour sets walk with: per pass, all of them are evaluated at once and shared.

    ``run=False``: the passes are given one by one (`step`), as `count` goes through them."""

    def __init__(self, one: Batch, behs: Sequence[Mapping[str, Behaviour]], *,
                 run: bool = True) -> None:
        g = one.geometry
        self.one = one
        self.behs = behs
        self.ext_c = Extents(one, 1)
        #: per pass, its chunk runs (bounds relative to a shift) and the shift
        self.cache: dict[int, tuple[dict[int, tuple[I64, I64, I64, I64, I64]], I64]] = {}
        #: per pass, the number of the distinct pass (up to a shift) it is: equal numbers, equal
        #: chunk quantities (`_segments_one` reuses what it made of them)
        self.token: dict[int, int] = {}
        self._memo: dict[tuple[object, ...],
                         tuple[int, dict[int, tuple[I64, I64, I64, I64, I64]], I64, I64]] = {}
        self._every = np.concatenate([one.pass_lo[0], one.pass_hi[0]])
        self._order = np.concatenate([np.arange(one.pass_lo.shape[1])] * 2)
        if not run:
            return
        ext = Extents(one, 0)
        windows = ExtentWindows(one)
        cover = _Coverage(one)
        align = _align(g, behs)
        for j in range(len(one.pass_inv)):
            lo, hi = one.pass_lo[:, j], one.pass_hi[:, j]
            if int(hi[0]) > int(lo[0]):
                e0, e1 = windows.of(lo, hi)
                p_lo, p_hi = cover.window(e0, e1)
                ext_w = ext.window(e0, e1)
                core, base, base_u = _relative(align, ext_w, p_lo, p_hi, lo, hi)
                cover.update(e0, e1, *self.step(j, core, base, base_u, ext_w, p_lo, p_hi, cover,
                                                 windows))

    def step(self, j: int, core: tuple[object, ...], base: I64, base_u: I64, ext_w: Extents,
             p_lo: I64, p_hi: I64, cover: _Coverage,
             windows: ExtentWindows) -> tuple[I64, I64]:
        """Pass ``j`` (non-empty), seen as `_relative` sees it, before the coverage takes it in:
        its chunk runs, and the coverage of its window after it."""
        one, g = self.one, self.one.geometry
        lo, hi = one.pass_lo[:, j], one.pass_hi[:, j]
        kind = one.inv_kind[one.pass_inv[j]]
        sizes = sorted({walk_chunk(g, beh[kind]) or g.ipa_size for beh in self.behs})
        # chunk_runs breaks at the edges of the earlier passes inside this one
        every = self._every
        edges = every[(self._order < j) & (every >= lo[0]) & (every <= hi[0])]
        key = (core, tuple(sizes), np.unique(edges - lo[0]).tobytes())
        hit = self._memo.get(key)
        if hit is None:
            entries = self._evaluate(j, sizes, self.ext_c, cover, windows)
            shift = -base[:, None]
            x_lo, x_hi = ext_w.clip(lo, hi)
            r_lo, r_hi = _shifted(concat_last(p_lo, x_lo[..., None]),
                                  concat_last(p_hi, x_hi[..., None]), -base_u)
            self._memo[key] = (len(self._memo),
                               {c: (e[0] + np.where(e[2] > 0, shift, 0),
                                    e[1] + np.where(e[2] > 0, shift, 0), *e[2:])
                                for c, e in entries.items()}, r_lo, r_hi)
            hit = self._memo[key]
        self.token[j] = hit[0]
        self.cache[j] = (hit[1], base[:, None])
        return _shifted(hit[2], hit[3], base_u)

    def _evaluate(self, j: int, sizes: Sequence[int], ext_c: Extents, cover: _Coverage,
                  windows: ExtentWindows) -> dict[int, tuple[I64, I64, I64, I64, I64]]:
        """Pass ``j``'s chunk runs and quantities for each chunk size in ``sizes``."""
        one, g = self.one, self.one.geometry
        lo, hi = one.pass_lo[:, j], one.pass_hi[:, j]
        # a chunk size the pass fits in walks it whole: chunk_run_quantities' first
        one_walk = {c for c in sizes if int(chunks_spanned(lo, hi, c)[0]) == 1}
        split = [c for c in sizes if c not in one_walk]
        runs = [chunk_runs(one, j, c) for c in split]
        whole, parts = chunk_run_quantities(g, ext_c, cover.lo, cover.hi, lo, hi,
                                            [r[:2] for r in runs], windows)
        out: dict[int, tuple[I64, I64, I64, I64, I64]] = {}
        for c, r, qm in zip(split, runs, parts, strict=True):
            out[c] = (*r, qm)
        ones = np.ones((1, 1), dtype=np.int64)
        for c in one_walk:
            out[c] = (lo[:, None], hi[:, None], ones, ones, whole[:, None, :])
        return out

    def runs(self, j: int, chunk: int) -> tuple[I64, I64, I64, I64, I64]:
        """(c_lo, c_hi, mult, times) of `chunk_runs` and the quantity matrix (1, K, 8)."""
        entries, shift = self.cache[j]
        c_lo, c_hi, mult, times, qm = entries[chunk]
        moved = np.where(mult > 0, shift, 0)
        return c_lo + moved, c_hi + moved, mult, times, qm


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

    one_row = (np.zeros(1, dtype=bool), np.ones(1, dtype=np.int64))  # (no break, once)
    flags = {f: np.full(1, f) for f in (False, True)}

    def add(rows: I64, free: bool = False, brk: npt.NDArray[np.bool_] | None = None,
            mult: I64 | None = None, times: I64 | None = None) -> None:
        rows = rows.reshape(-1, N_EVENTS)
        n = rows.shape[0]
        blocks.append(rows)
        unlocked.append(flags[free] if n == 1 else np.full(n, free))
        breaks.append((one_row[0] if n == 1 else np.zeros(n, dtype=bool)) if brk is None else brk)
        mults.append((one_row[1] if n == 1 else np.ones(n, dtype=np.int64)) if mult is None else mult)
        cycled.append((one_row[1] if n == 1 else np.ones(n, dtype=np.int64)) if times is None
                      else times)

    singles: dict[str, I64] = {}

    def single(event: str) -> I64:
        if event not in singles:
            row = np.zeros(N_EVENTS, dtype=np.int64)
            row[EVENT_INDEX[event]] = 1
            singles[event] = row
        return singles[event]

    # passes equal up to a shift (`_ChunkedPasses.token`) of one invocation kind give equal rows
    made: dict[tuple[object, ...], tuple[Any, ...]] = {}

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
            token = passes.token.get(j)
            done = (token, chunk, kind, one.inv_blockable[i])
            if token is not None and done in made:
                add(*made[done])
                continue
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
                made[done] = (ev, walk_unlocked, brk, m, t)
            else:
                made[done] = ((ev * (m * t)[:, None]).sum(axis=0), walk_unlocked)
            add(*made[done])
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
