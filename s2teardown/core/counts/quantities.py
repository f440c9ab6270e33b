"""Structural quantities of one pass given the table state before it (docs/model.md §4)."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from s2teardown.core.behaviour import Behaviour
from s2teardown.core.counts.batch import ONE_GIB, Batch
from s2teardown.core.geometry import Geometry
from s2teardown.core.intervals import (
    I64,
    ceil_div,
    complement_within,
    concat_last,
    floor_div,
    to_units,
    union_length,
)

# ----------------------------------------------------------------------------------------------
# Structural quantities of one pass given the state before it


@dataclass(frozen=True)
class PassQuantities:
    """What one pass (or one chunk of a pass) does; arrays have the batch shape."""

    pte: I64  # non-device PTEs cleared
    pte_dev: I64  # device PTEs cleared
    pmd: I64  # PMD blocks cleared
    pud: I64  # PUD blocks cleared
    freed: I64  # table pages emptied and freed (all levels)
    visits: I64  # entries loaded (all levels)
    # the part of ``visits`` and ``freed`` at the last level (PTE tables): what a v6.2+ block
    # retry frees in an RCU callback (`segment_coefficients`); only the segments use them
    last_visits: I64
    last_freed: I64


class Extents:
    """Extent arrays broadcast to a batch shape ``(S, *mid, E)``; leaf-unit bounds precomputed."""

    def __init__(self, b: Batch, mid: int) -> None:
        shape = (b.size,) + (1,) * mid + (b.ext_lo.shape[1],)
        self.lo = b.ext_lo.reshape(shape)
        self.hi = b.ext_hi.reshape(shape)
        self.leaf = b.ext_leaf.reshape(shape)
        self.dev = b.ext_dev.reshape(shape)
        self.valid = self.leaf > 0
        self.unit = np.where(self.valid, self.leaf, 1)
        self.shift = np.frexp(self.unit)[1].astype(np.int64) - 1  # log2: leaves are powers of two
        self.a = np.right_shift(self.lo, self.shift)
        self.b = np.where(self.valid, np.right_shift(self.hi, self.shift), self.a)
        self.hi_valid = np.where(self.valid, self.hi, 0)  # a padding extent clips to nothing
        self._classes: I64 | None = None
        # (..., E, 4): lo, hi (0 for padding), leaf, device; and 1 where a shift moves the value
        self.packed = np.stack([np.where(self.valid, self.lo, 0), self.hi_valid, self.leaf,
                                self.dev.astype(np.int64)], axis=-1)
        zero = np.zeros_like(self.leaf)
        self.movable = np.stack([self.valid.astype(np.int64)] * 2 + [zero, zero], axis=-1)

    def window(self, e0: int, e1: int) -> Extents:
        """The extents ``e0 .. e1-1`` only (views): a pass or a chunk-walk that touches no
        table holding another extent needs only these (`ExtentWindows`)."""
        w = object.__new__(Extents)
        for name in ("lo", "hi", "leaf", "dev", "valid", "unit", "shift", "a", "b", "hi_valid"):
            setattr(w, name, getattr(self, name)[..., e0:e1])
        for name in ("_classes", "packed", "movable"):
            v = getattr(self, name)
            setattr(w, name, None if v is None else v[..., e0:e1, :])
        return w

    def clip(self, lo: I64, hi: I64) -> tuple[I64, I64]:
        """``[lo, hi)`` (batch shape) intersected with each extent, in leaf units, outward
        (an empty intersection, ``x >= y``, is the empty interval of `to_units`)."""
        x = np.maximum(lo[..., None], self.lo)
        y = np.minimum(hi[..., None], self.hi_valid)
        return to_units(x, y, self.unit, self.shift)

    def classes(self, g: Geometry) -> I64:
        """(..., E, 4): 1 where an extent's leaves are PTEs, device PTEs, PMD or PUD blocks."""
        if self._classes is None:
            page = self.valid & (self.leaf == g.granule)
            pud = g.leaf_sizes[2] if len(g.leaf_sizes) > 2 else -1
            self._classes = np.stack(
                [page & ~self.dev, page & self.dev, self.leaf == g.leaf_sizes[1], self.leaf == pud], axis=-1
            ).astype(np.int64)
        return self._classes


class ExtentWindows:
    """Which extents a pass ``[lo, hi)`` can concern: those inside the largest tables it
    touches (tables at level 1 span ``span(0)``; every smaller table, leaf and chunk-walk of it
    lies inside one of them).  A pass's quantities over these extents equal those over all
    (the others' leaves, tables and states are outside and unchanged), so a pass over one of
    512 memslots costs what it costs over one, not 512 times that: the work stays linear in the
    number of memslots."""

    def __init__(self, b: Batch) -> None:
        self.t0 = b.geometry.span(0)
        valid = b.ext_leaf > 0
        self.lo = np.where(valid, b.ext_lo, np.iinfo(np.int64).max)  # padding: never inside
        self.hi = np.where(valid, b.ext_hi, np.iinfo(np.int64).min)
        self.n = int(b.ext_lo.shape[1])
        # one scenario (an estimate): the valid extents' bounds as sorted lists, for bisect
        self._one: tuple[list[int], list[int], list[int]] | None = None
        if b.size == 1:
            idx = np.flatnonzero(valid[0])
            self._one = (idx.tolist(), b.ext_lo[0, idx].tolist(), b.ext_hi[0, idx].tolist())

    def of(self, lo: I64, hi: I64) -> tuple[int, int]:
        """``(e0, e1)``: the extents ``e0 .. e1-1`` (at least one, when there is one) cover every
        extent any scenario's pass ``[lo, hi)`` (shape (S,) or (S, K)) can concern."""
        if self._one is not None and lo.size == 1:
            x_lo, x_hi = int(lo.flat[0]), int(hi.flat[0])
            idx, e_lo, e_hi = self._one
            if x_hi > x_lo and idx:
                w_lo, w_hi = x_lo // self.t0 * self.t0, -(-x_hi // self.t0) * self.t0
                first = bisect.bisect_right(e_hi, w_lo)  # extents are sorted and disjoint
                last = bisect.bisect_left(e_lo, w_hi)
                if last > first:
                    return idx[first], idx[last - 1] + 1
            return 0, min(1, self.n)
        lo2 = lo.reshape(lo.shape[0], -1)
        hi2 = hi.reshape(hi.shape[0], -1)
        live = hi2 > lo2
        big = np.iinfo(np.int64).max
        w_lo = np.where(live, floor_div(lo2, self.t0) * self.t0, big).min(axis=1)
        w_hi = np.where(live, ceil_div(hi2, self.t0) * self.t0, -1).max(axis=1)
        mask = (self.hi > w_lo[:, None]) & (self.lo < w_hi[:, None])
        cols = np.flatnonzero(mask.any(axis=0))
        if cols.size == 0:
            return 0, min(1, self.n)
        return int(cols[0]), int(cols[-1]) + 1


@lru_cache(maxsize=64)
def _levels(g: Geometry) -> tuple[I64, I64, I64, I64]:
    """Per level 1 .. levels-1: the span of its tables (``span(k-1)``), of its entries
    (``span(k)``), and their log2 — read-only arrays, once per geometry."""
    t = np.array(g.spans[:-1], dtype=np.int64)
    entry = np.array(g.spans[1:], dtype=np.int64)
    t_shift = np.array([x.bit_length() - 1 for x in g.spans[:-1]], dtype=np.int64)
    e_shift = np.array([x.bit_length() - 1 for x in g.spans[1:]], dtype=np.int64)
    for a in (t, entry, t_shift, e_shift):
        a.setflags(write=False)
    return t, entry, t_shift, e_shift


def _survivor_slots(ext: Extents, pieces: tuple[I64, I64], g: Geometry) -> tuple[I64, I64]:
    """Per level, the slots of its tables (``T = span(k-1)``) holding a surviving leaf, from
    the surviving ``pieces`` (`complement_within`, leaf units): intervals on the last axis, a
    leading axis over the levels 1 .. levels-1."""
    p_lo, p_hi = pieces  # (..., E, q + 1)
    t_all, _, t_shift, _ = _levels(g)
    per = (-1,) + (1,) * p_lo.ndim
    t, k = t_all.reshape(per), t_shift.reshape(per)
    small = ext.valid[..., None] & (ext.leaf[..., None] < t)  # only smaller leaves sit in a table
    unit = ext.unit[..., None]
    s_lo, s_hi = to_units(np.where(small, p_lo * unit, 0), np.where(small, p_hi * unit, 0), t, k)
    flat = s_lo.shape[:-2] + (s_lo.shape[-2] * s_lo.shape[-1],)
    return s_lo.reshape(flat), s_hi.reshape(flat)


def pass_quantities(
    g: Geometry, ext: Extents, prev_lo: I64, prev_hi: I64, lo: I64, hi: I64
) -> tuple[PassQuantities, I64, I64]:
    """Quantities of the pass ``[lo, hi)`` after the passes ``prev`` (leaf units, ``(..., E, q)``).

    Returns the quantities and the coverage including this pass.  The table levels are one more
    array axis (not a loop): 3 and 4 levels cost the same number of numpy calls.
    """
    q, new_lo, new_hi, _ = pass_quantities_chunked(g, ext, prev_lo, prev_hi, lo, hi, ())
    return q, new_lo, new_hi


def pass_quantities_chunked(
    g: Geometry,
    ext: Extents,
    prev_lo: I64,
    prev_hi: I64,
    lo: I64,
    hi: I64,
    chunks: Sequence[int],
) -> tuple[PassQuantities, I64, I64, dict[int, I64]]:
    """`pass_quantities`, and the visits of the same pass walked in aligned chunk-walks of each
    size in ``chunks`` (each ``< span(0)``); its other quantities are those of one walk.

    Each chunk-walk loads its entry-level entry, and at level ``k`` the entries of its range
    whose table exists when it starts.  A table no larger than a chunk lies in one chunk, so
    that chunk finds it as one walk does.  A larger table (span ``T > chunk``) exists at the
    start of chunk ``c`` iff it holds a leaf that survived the earlier passes and is not yet
    removed: a leaf outside the pass, or one in chunk ``c`` or later (a leaf is no larger than a
    chunk, so the chunk holding it removes it).  So a surviving piece ``[p, q)`` keeps the
    chunks from its table's start, ``floor_T(p)``, to the chunk holding its last leaf alive, and
    a piece left of ``lo`` the rest of its last table too.  Visits at that level are the alive
    chunks (or, with entries smaller than a chunk, their entries) inside the pass.
    """
    c_lo, c_hi = ext.clip(lo, hi)
    new_lo = concat_last(prev_lo, c_lo[..., None])
    new_hi = concat_last(prev_hi, c_hi[..., None])
    removed = union_length(new_lo, new_hi, normalised=True) - union_length(prev_lo, prev_hi, normalised=True)
    by_class = np.einsum("...e,...ek->...k", removed, ext.classes(g))  # PTEs, device PTEs, PMDs, PUDs
    pte, pte_dev, pmd, pud = (by_class[..., k] for k in range(4))

    nonempty = hi > lo
    top = np.where(nonempty, ceil_div(hi, g.span(0)) - floor_div(lo, g.span(0)), 0)
    # levels 1 .. levels-1: a table at level k spans span(k-1) and holds entries of span(k)
    t, entry, t_shift, e_shift = _levels(g)
    per_level = (-1,) + (1,) * lo.ndim
    ratio = np.left_shift(1, t_shift - e_shift).reshape(per_level)
    # survivor pieces come extent by extent in address order: already sorted
    pieces = complement_within(ext.a, ext.b, prev_lo, prev_hi)
    b_lo, b_hi = _survivor_slots(ext, pieces, g)
    before = union_length(b_lo, b_hi, presorted=True, normalised=True)  # (levels - 1, ...)
    if bool(np.all(lo <= 0)) and bool(np.all(hi >= g.ipa_size)):
        # a pass over the whole IPA space (a teardown) leaves no survivor: skip computing them
        freed_per_level = before
        level_visits = before * ratio
    else:
        a_lo, a_hi = _survivor_slots(ext, complement_within(ext.a, ext.b, new_lo, new_hi), g)
        freed_per_level = before - union_length(a_lo, a_hi, presorted=True, normalised=True)
        # entries of each level inside the pass whose table exists when the pass starts:
        # |X ∩ S|, the survivors' slots clipped to the pass (still sorted)
        x_lo, x_hi = to_units(lo, hi, entry.reshape(per_level), e_shift.reshape(per_level))
        in_lo = np.maximum(b_lo * ratio[..., None], x_lo[..., None])
        in_hi = np.minimum(b_hi * ratio[..., None], x_hi[..., None])
        level_visits = union_length(in_lo, in_hi, presorted=True)
    q = PassQuantities(pte, pte_dev, pmd, pud, freed_per_level.sum(axis=0), top + level_visits.sum(axis=0),
                       level_visits[-1], freed_per_level[-1])
    chunked: dict[int, I64] = {}
    if chunks:
        # one scenario (an estimate): plain integers beat numpy's per-call overhead several times
        visits_of = _chunked_visits_one if lo.shape == (1,) else _chunked_visits
        for chunk in chunks:
            chunked[chunk] = visits_of(g, ext, pieces, lo, hi, level_visits, chunk)
    return q, new_lo, new_hi, chunked


def _chunked_visits(
    g: Geometry, ext: Extents, pieces: tuple[I64, I64], lo: I64, hi: I64, level_visits: I64, chunk: int
) -> I64:
    """`pass_quantities_chunked`'s visits of the chunk-walks of ``chunk`` bytes, on arrays."""
    t, entry, t_shift, e_shift = _levels(g)
    nonempty = hi > lo
    x_lo, x_hi = np.where(nonempty, lo, 0), np.where(nonempty, hi, 0)
    shared = sum(1 for span in g.spans[:-1] if span > chunk)  # the tables larger than a chunk
    visits = chunks_spanned(x_lo, x_hi, chunk) + level_visits[shared:].sum(axis=0)
    if not shared:
        return visits  # type: ignore[no-any-return]
    unit = ext.unit[..., None]
    pb_lo, pb_hi = pieces[0] * unit, pieces[1] * unit  # surviving pieces in bytes
    lo_leaf = floor_div(lo[..., None, None], unit, ext.shift[..., None]) * unit  # its leaf's start
    # (every leaf is smaller than these tables: a leaf is no larger than a chunk; an empty piece,
    # [-1, -1) in leaf units, gives an empty interval below)
    per = (-1,) + (1,) * pb_lo.ndim
    tt, tk = t[:shared].reshape(per), t_shift[:shared].reshape(per)
    start = floor_div(pb_lo, tt, tk) * tt
    # alive to the chunk holding the last leaf; a piece's leaves left of lo: its last table
    alive_hi = ceil_div(pb_hi, chunk) * chunk
    left_end = np.minimum(pb_hi, lo_leaf)
    alive_hi = np.where(left_end > pb_lo, np.maximum(alive_hi, ceil_div(left_end, tt, tk) * tt), alive_hi)
    a_lo = np.maximum(start, x_lo[..., None, None])
    a_hi = np.minimum(alive_hi, x_hi[..., None, None])
    live = a_hi > a_lo
    cu = np.minimum(entry[:shared], chunk).reshape(per)
    ck = np.minimum(e_shift[:shared], chunk.bit_length() - 1).reshape(per)
    # in units of an entry (or of a chunk, for entries larger than one), outward; a dead interval
    # becomes [0, 0), which the union ignores
    v_lo = np.where(live, floor_div(a_lo, cu, ck), 0)
    v_hi = np.where(live, ceil_div(a_hi, cu, ck), 0)
    flat = v_lo.shape[:-2] + (v_lo.shape[-2] * v_lo.shape[-1],)
    # pieces come extent by extent in address order, their table starts too: sorted
    return visits + union_length(v_lo.reshape(flat), v_hi.reshape(flat), presorted=True).sum(axis=0)  # type: ignore[no-any-return]


def _chunked_visits_one(
    g: Geometry, ext: Extents, pieces: tuple[I64, I64], lo: I64, hi: I64, level_visits: I64, chunk: int
) -> I64:
    """`_chunked_visits` of a one-scenario batch, the same arithmetic on Python integers
    (`test_chunked_visits_one_equals_arrays` checks the two against each other)."""
    spans = g.spans
    shared = sum(1 for span in spans[:-1] if span > chunk)
    visits = int(level_visits[shared:].sum())
    x_lo, x_hi = int(lo[0]), int(hi[0])
    if x_hi <= x_lo:
        return np.array([visits], dtype=np.int64)
    visits += -(-x_hi // chunk) - x_lo // chunk
    units = ext.unit.reshape(-1).tolist()
    p_lo, p_hi = pieces[0][0].tolist(), pieces[1][0].tolist()  # (E, q + 1) of the one scenario
    for k in range(shared):
        table, cu = spans[k], min(spans[k + 1], chunk)
        alive: list[tuple[int, int]] = []
        for unit, los, his in zip(units, p_lo, p_hi, strict=True):
            lo_leaf = x_lo // unit * unit
            for a, z in zip(los, his, strict=True):
                if z <= a:
                    continue
                b_lo, b_hi = a * unit, z * unit
                end = -(-b_hi // chunk) * chunk
                left_end = min(b_hi, lo_leaf)
                if left_end > b_lo:
                    end = max(end, -(-left_end // table) * table)
                s_, e_ = max(b_lo // table * table, x_lo), min(end, x_hi)
                if e_ > s_:
                    alive.append((s_ // cu, -(-e_ // cu)))
        run = None
        for s_, e_ in sorted(alive):
            start = s_ if run is None else max(s_, run)
            visits += max(e_ - start, 0)
            run = e_ if run is None else max(run, e_)
    return np.array([visits], dtype=np.int64)


def range_flush_columns(g: Geometry, lo: I64, hi: I64, chunk: int | None) -> tuple[I64, I64]:
    """(hyp calls, TLBI ops) of one range flush per chunk-walk of the passes ``[lo, hi)``: the
    first and the last chunk may be partial, the ones between are whole."""
    if chunk is None:
        return range_flush(np.where(hi > lo, (hi - lo) // g.granule, 0))
    n = chunks_spanned(lo, hi, chunk)
    first_hi = np.minimum(hi, (floor_div(lo, chunk) + 1) * chunk)
    last_lo = np.maximum(lo, floor_div(hi - 1, chunk) * chunk)
    pages_first = np.where(n > 0, (first_hi - lo) // g.granule, 0)
    pages_last = np.where(n > 1, (hi - last_lo) // g.granule, 0)
    c1, o1 = range_flush(pages_first)
    c2, o2 = range_flush(pages_last)
    cm, om = range_flush(np.full_like(lo, chunk // g.granule))
    middle = np.maximum(n - 2, 0)
    calls: I64 = np.asarray(c1 + c2 + middle * cm, dtype=np.int64)
    ops: I64 = np.asarray(o1 + o2 + middle * om, dtype=np.int64)
    return calls, ops


def chunks_spanned(lo: I64, hi: I64, chunk: int) -> I64:
    """Aligned ``chunk``-byte blocks a (possibly empty) range touches."""
    return np.where(hi > lo, ceil_div(hi, chunk) - floor_div(lo, chunk), 0)


def walk_chunk(g: Geometry, behaviour: Behaviour) -> int | None:
    """Bytes per separate walk of a pass (a resched point may sit between two); None: one walk."""
    if behaviour.resched == "top_level":
        return g.top_entry_size
    if behaviour.resched == "largest_block":
        return g.min_block_chunk
    if behaviour.resched == "1g":
        return ONE_GIB
    return None


def resched_active(behaviour: Behaviour, blockable: bool) -> bool:
    return behaviour.resched != "none" and (behaviour.resched_when == "always" or blockable)


def range_flush_applies(behaviour: Behaviour, *, fwb: bool, tlbi_range: bool) -> bool:
    """v6.6 ``stage2_unmap_defer_tlb_flush``: defer to a range flush only with TLBIRANGE and FWB
    (and only in an unmap walk: a destroy walk invalidates nothing)."""
    return behaviour.walk == "unmap" and behaviour.leaf_tlbi == "range" and fwb and tlbi_range


#: MAX_TLBI_RANGE_PAGES = __TLBI_RANGE_PAGES(31, 3) (arch/arm64/include/asm/tlbflush.h)
MAX_TLBI_RANGE_PAGES = 1 << 21


def range_ops(pages: I64) -> I64:
    """TLBI instructions ``__flush_s2_tlb_range_op`` issues for ``pages`` (< 2**21) pages:
    one single-page TLBI if the count is odd, then one range op per non-zero 5-bit digit."""
    n = np.asarray(pages, dtype=np.int64)
    ops = n & 1
    for scale in range(4):
        ops = ops + (((n >> (5 * scale + 1)) & 31) != 0)
    return np.where(n > 0, ops, 0)


def range_flush(pages: I64) -> tuple[I64, I64]:
    """(hyp calls, TLBI ops) of ``kvm_tlb_flush_vmid_range`` over ``pages`` pages: one
    ``__kvm_tlb_flush_vmid_range`` call per at most 2**21 pages, a full one being one op."""
    n = np.asarray(pages, dtype=np.int64)
    full, rest = n // MAX_TLBI_RANGE_PAGES, n % MAX_TLBI_RANGE_PAGES
    return full + (rest > 0), full + range_ops(rest)


