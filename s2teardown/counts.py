"""Exact kernel-event counts of a Stage-2 unmap, in closed form, vectorised over scenarios.

The model (docs/model.md derives each line from Linux v5.5 ``virt/kvm/arm/mmu.c``):

* An event is a sequence of *passes*, each one call of ``unmap_stage2_range(addr, end)``:
  a teardown pass covers the whole IPA space; an unmap/clear notifier call makes one pass per
  memslot the range intersects (``handle_hva_to_gpa``).  Passes run in order and the table state
  carries from one to the next.
* Leaves: a pass removes every still-mapped leaf that *intersects* its range (a partly covered
  block is cleared whole).  Per extent, the leaves removed by pass ``j`` are
  ``|C_j| - |C_{j-1}|`` where ``C_j`` is the union, in leaf units, of passes ``0..j`` clipped to
  the extent and rounded outward to leaves.
* Tables: a table page at level ``k`` (spanning ``T = span(k-1)``) exists while at least one leaf
  under it survives; the page is freed by the pass that removes its last leaf
  (``kvm_pte_table_empty`` / ``stage2_pmd_table_empty`` / ``stage2_pud_table_empty`` after the
  loop).  So ``freed_j = |S_{j-1}| - |S_j|``, with ``S_j`` the set of T-slots holding a surviving
  leaf (only leaves smaller than ``T`` can sit in a table at level ``k``).
* Walk: the pass loads every entry-level entry it spans, and at level ``k >= 1`` every entry in
  its range whose table exists when the pass starts: ``|X| + |S| - |X ∪ S|`` in level-``k``
  entries, where ``X`` is the pass range rounded outward.
* Resched points: ``cond_resched_lock`` after every chunk but the last of each pass.

All of these are unions of intervals (`intervals.py`): integer numpy arithmetic, no loop over
pages or tables.  The longest stretch between resched points needs each chunk's counts; that
uses the same functions with a chunk axis (`segments`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
import numpy.typing as npt

from .behaviour import Behaviour
from .geometry import Geometry
from .intervals import (
    I64,
    ceil_div,
    compact,
    complement_within,
    concat_last,
    floor_div,
    to_units,
    union_length,
)
from .layout import (
    BLOCK_RETRY,
    FREES_HOST_PAGES,
    ITERATES_MEMSLOTS,
    RESET,
    TEARDOWN,
    Invocation,
    Layout,
)
from .ops import EVENT_INDEX, EVENTS

N_EVENTS = len(EVENTS)
ONE_GIB = 1 << 30


@dataclass(frozen=True)
class Batch:
    """S scenarios sharing one geometry and one shape of event (the same invocation kinds).

    Extents are padded with ``leaf == 0``; an invocation absent from a scenario has
    ``inv_present == False`` and empty passes.
    """

    geometry: Geometry
    ext_lo: I64  # (S, E)
    ext_hi: I64  # (S, E)
    ext_leaf: I64  # (S, E), 0 = padding
    ext_dev: npt.NDArray[np.bool_]  # (S, E)
    n_memslots: I64  # (S,)
    inv_kind: tuple[str, ...]  # (I,)
    inv_blockable: tuple[bool, ...]  # (I,)
    inv_present: npt.NDArray[np.bool_]  # (S, I)
    inv_lo: I64  # (S, I) the range each invocation was called with
    inv_hi: I64  # (S, I)
    pass_lo: I64  # (S, J)
    pass_hi: I64  # (S, J)
    pass_inv: tuple[int, ...]  # (J,) invocation index of each pass
    pass_slot: tuple[int, ...]  # (J,) memslot index (-1 for a teardown pass)

    @property
    def size(self) -> int:
        return int(self.ext_lo.shape[0])


def batch_from_layout(layout: Layout, event: Sequence[Invocation]) -> Batch:
    """A batch of one scenario from an explicit layout and event."""
    g = layout.geometry
    ext = layout.extents
    e_lo = np.array([[e.lo for e in ext]], dtype=np.int64).reshape(1, len(ext))
    e_hi = np.array([[e.hi for e in ext]], dtype=np.int64).reshape(1, len(ext))
    e_leaf = np.array([[e.leaf for e in ext]], dtype=np.int64).reshape(1, len(ext))
    e_dev = np.array([[e.device for e in ext]], dtype=bool).reshape(1, len(ext))
    p_lo: list[int] = []
    p_hi: list[int] = []
    p_inv: list[int] = []
    p_slot: list[int] = []
    for i, inv in enumerate(event):
        if inv.kind not in ITERATES_MEMSLOTS:
            # teardown: the whole IPA space; memslot delete, block retry: their own range
            whole = inv.kind == TEARDOWN
            p_lo.append(0 if whole else inv.lo)
            p_hi.append(g.ipa_size if whole else inv.hi)
            p_inv.append(i)
            p_slot.append(-1)
            continue
        # handle_hva_to_gpa walks the memslot array, kept sorted by base GFN, highest first
        # (update_memslots, virt/kvm/kvm_main.c, v5.5)
        for m, s in sorted(enumerate(layout.memslots), key=lambda ms: ms[1].lo, reverse=True):
            if inv.kind == RESET:  # stage2_unmap_vm: every intersecting memslot, whole
                hit = inv.lo < s.hi and s.lo < inv.hi
                p_lo.append(s.lo if hit else 0)
                p_hi.append(s.hi if hit else 0)
            else:
                p_lo.append(max(inv.lo, s.lo))
                p_hi.append(min(inv.hi, s.hi))
            p_inv.append(i)
            p_slot.append(m)
    return Batch(
        geometry=g,
        ext_lo=e_lo,
        ext_hi=e_hi,
        ext_leaf=e_leaf,
        ext_dev=e_dev,
        n_memslots=np.array([len(layout.memslots)], dtype=np.int64),
        inv_kind=tuple(inv.kind for inv in event),
        inv_blockable=tuple(inv.blockable for inv in event),
        inv_present=np.ones((1, len(event)), dtype=bool),
        inv_lo=np.array([[inv.lo for inv in event]], dtype=np.int64).reshape(1, len(event)),
        inv_hi=np.array([[inv.hi for inv in event]], dtype=np.int64).reshape(1, len(event)),
        pass_lo=np.array([p_lo], dtype=np.int64).reshape(1, len(p_lo)),
        pass_hi=np.array([p_hi], dtype=np.int64).reshape(1, len(p_hi)),
        pass_inv=tuple(p_inv),
        pass_slot=tuple(p_slot),
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


class _Extents:
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


def _survivor_slots(ext: _Extents, pieces: tuple[I64, I64], g: Geometry) -> tuple[I64, I64]:
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
    g: Geometry, ext: _Extents, prev_lo: I64, prev_hi: I64, lo: I64, hi: I64
) -> tuple[PassQuantities, I64, I64]:
    """Quantities of the pass ``[lo, hi)`` after the passes ``prev`` (leaf units, ``(..., E, q)``).

    Returns the quantities and the coverage including this pass.  The table levels are one more
    array axis (not a loop): 3 and 4 levels cost the same number of numpy calls.
    """
    q, new_lo, new_hi, _ = pass_quantities_chunked(g, ext, prev_lo, prev_hi, lo, hi, ())
    return q, new_lo, new_hi


def pass_quantities_chunked(
    g: Geometry,
    ext: _Extents,
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
    g: Geometry, ext: _Extents, pieces: tuple[I64, I64], lo: I64, hi: I64, level_visits: I64, chunk: int
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
    g: Geometry, ext: _Extents, pieces: tuple[I64, I64], lo: I64, hi: I64, level_visits: I64, chunk: int
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


# ----------------------------------------------------------------------------------------------
# Events from quantities and behaviour: a linear map
#
# Every event count is an integer combination of a few structural quantities (the six of
# PassQuantities, per pass or chunk-run; an invocation's presence and memslot visits; the resched
# points and range flushes of a chunked pass).  ``count`` therefore returns the quantities as
# columns (S, C) and, per behaviour set, the integer coefficients (C, EVENTS); events are their
# product, and a cost is the product with prices folded into the coefficients first (model.py).

#: The fields of PassQuantities, in the order of the rows of `pass_coefficients`.
QUANTITIES: tuple[str, ...] = ("pte", "pte_dev", "pmd", "pud", "freed", "visits")
_PTE, _DEV, _PMD, _PUD, _FREED, _VISITS = range(len(QUANTITIES))
_LEAVES = [_PTE, _DEV, _PMD, _PUD]
#: The quantities of a chunk in the segments (rows of `segment_coefficients`): the totals' six,
#: then the last-level parts that a deferred (RCU) free takes out of the fault's stretch.
SEGMENT_QUANTITIES: tuple[str, ...] = (*QUANTITIES, "last_visits", "last_freed")
_LAST_VISITS, _LAST_FREED = len(QUANTITIES), len(QUANTITIES) + 1


def quantity_matrix(q: PassQuantities, names: tuple[str, ...] = QUANTITIES) -> I64:
    """The quantities ``names`` (default: `QUANTITIES`) stacked on a last axis, in that order."""
    return np.stack([getattr(q, f) for f in names], axis=-1)


@lru_cache(maxsize=4096)
def pass_coefficients(
    g: Geometry,
    behaviour: Behaviour,
    *,
    fwb: bool,
    tlbi_range: bool,
    cache_line: int,
    kind: str,
) -> I64:
    """(QUANTITIES, EVENTS): the kernel events of a pass or chunk per unit of each quantity,
    without per-invocation ones (the range flush of a deferring variant is added by the caller).
    Computed once per argument set (cached; the array is read-only).

    A cache line divides every granule, so the DC CIVAC count of a leaf is its size / line.
    """
    ix = EVENT_INDEX
    a = np.zeros((len(QUANTITIES), N_EVENTS), dtype=np.int64)
    a[_VISITS, ix["entry_visit"]] = 1
    a[[*_LEAVES, _FREED], ix["put_page"]] = 1  # the leaf's table page, the emptied table's parent
    a[_FREED, ix["table_free"]] = 1
    if kind in FREES_HOST_PAGES:
        a[_PTE, ix["host_page_free"]] = 1
        a[[_PMD, _PUD], ix["host_folio_free"]] = 1
    if behaviour.walk == "destroy":
        a.setflags(write=False)
        return a  # kvm_pgtable_stage2_destroy: references dropped, tables freed, nothing cleared
    a[[_PTE, _DEV], ix["pte_clear"]] = 1
    a[[_PMD, _PUD], ix["block_clear"]] = 1
    a[_FREED, ix["table_clear"]] = 1
    deferred = range_flush_applies(behaviour, fwb=fwb, tlbi_range=tlbi_range)
    tlb = ix["tlb_flush_vmid_ipa"]
    if behaviour.leaf_tlbi != "none" and not deferred:
        a[_LEAVES, tlb] += 1
    if behaviour.table_tlbi == "per_entry" or (behaviour.table_tlbi == "deferred" and not deferred):
        a[_FREED, tlb] += 1
    if behaviour.cmo == "per_leaf" and not fwb:
        if cache_line <= 0 or g.granule % cache_line:
            raise ValueError(f"a cache line of {cache_line} bytes does not divide the granule")
        a[[_PTE, _PMD, _PUD], ix["dcache_flush_call"]] = 1  # device PTEs are not flushed
        a[_PTE, ix["dc_civac_line"]] = g.granule // cache_line
        a[_PMD, ix["dc_civac_line"]] = g.leaf_sizes[1] // cache_line
        if len(g.leaf_sizes) > 2:
            a[_PUD, ix["dc_civac_line"]] = g.leaf_sizes[2] // cache_line
    a.setflags(write=False)
    return a


def rcu_deferred(behaviour: Behaviour, kind: str) -> bool:
    """Whether the pass's last-level work is freed in an RCU callback, outside the fault's
    stretch: only a v6.2+ table->block retry (``free: rcu``).  ``stage2_map_walk_table_pre``
    breaks the table entry (its TLBI and the ``put_page`` on the parent stay in the fault), then
    ``free_unlinked_table`` -> ``call_rcu``; the callback (``kvm_pgtable_stage2_free_unlinked``,
    ``stage2_free_walker``) loads the subtree's entries, drops a reference per valid one and
    frees the table page."""
    return kind == BLOCK_RETRY and behaviour.free == "rcu"


@lru_cache(maxsize=4096)
def segment_coefficients(
    g: Geometry,
    behaviour: Behaviour,
    *,
    fwb: bool,
    tlbi_range: bool,
    cache_line: int,
    kind: str,
) -> I64:
    """(SEGMENT_QUANTITIES, EVENTS): `pass_coefficients` as charged to the segments.

    The same rows, plus two for the last-level parts of visits and frees.  Where the free is
    deferred to RCU (`rcu_deferred`) the work of the unlinked last-level tables leaves the
    segment: every event of a PTE (the callback's ``put_page`` per valid entry; in an unmap walk
    also its clear, TLBI and CMO), the entry visits of the last level, and the freeing of a
    last-level table (its ``table_free``; the ``put_page`` on its parent, the table entry's
    clear and TLBI stay).  They stay in the totals (`pass_coefficients`), like the host frees.
    """
    a = np.zeros((len(SEGMENT_QUANTITIES), N_EVENTS), dtype=np.int64)
    a[: len(QUANTITIES)] = pass_coefficients(g, behaviour, fwb=fwb, tlbi_range=tlbi_range,
                                             cache_line=cache_line, kind=kind)
    if rcu_deferred(behaviour, kind):
        a[[_PTE, _DEV]] = 0
        a[_LAST_VISITS, EVENT_INDEX["entry_visit"]] = -1
        a[_LAST_FREED, EVENT_INDEX["table_free"]] = -1
    a.setflags(write=False)
    return a


def invocation_columns(b: Batch, i: int) -> tuple[I64, I64, I64, I64]:
    """(present, memslots visited, range-flush calls, range TLBI ops) of invocation ``i``, per
    scenario; the last two are those of one ``kvm_tlb_flush_vmid_range`` over its range."""
    present = b.inv_present[:, i].astype(np.int64)
    pages = np.where(b.inv_present[:, i], (b.inv_hi[:, i] - b.inv_lo[:, i]) // b.geometry.granule, 0)
    calls, ops = range_flush(np.maximum(pages, 0))
    return present, present * b.n_memslots, calls, ops


def invocation_coefficients(b: Batch, i: int, behaviour: Behaviour, *, tlbi_range: bool = False) -> I64:
    """(4, EVENTS): events charged once per invocation, per unit of `invocation_columns`: the
    entry call, the memslot visits, the final flush (one VMID-wide, or a range flush of the
    invocation's range on a TLBIRANGE CPU), the pgd pages."""
    ix = EVENT_INDEX
    a = np.zeros((4, N_EVENTS), dtype=np.int64)
    a[0, ix["notifier_call"]] = 1
    if b.inv_kind[i] in ITERATES_MEMSLOTS:
        a[1, ix["memslot_visit"]] = 1
    if behaviour.final_flush == "vmall" or (behaviour.final_flush == "range_or_vmall" and not tlbi_range):
        a[0, ix["flush_remote_tlbs"]] = 1
    elif behaviour.final_flush == "range_or_vmall":
        a[2, ix["range_flush_call"]] = 1
        a[3, ix["range_tlbi_op"]] = 1
    if b.inv_kind[i] == TEARDOWN:
        a[0, ix["table_free"]] = b.geometry.pgd_pages
    return a


def invocation_events(b: Batch, i: int, behaviour: Behaviour, *, tlbi_range: bool = False) -> I64:
    """Events charged once per invocation (S, EVENTS)."""
    columns = np.stack(invocation_columns(b, i), axis=-1)
    return columns @ invocation_coefficients(b, i, behaviour, tlbi_range=tlbi_range)


# ----------------------------------------------------------------------------------------------
# Chunked passes


def chunk_runs(b: Batch, j: int, chunk: int) -> tuple[I64, I64, I64, I64]:
    """The chunk-walks of pass ``j``, compressed: (S, K) bounds of representative chunks, how
    many consecutive identical chunks each stands for (``mult``), and how many times the region
    holding it repeats (``times``).

    Between two breakpoints — extent edges, the edges of this and earlier passes, and the edges
    of tables larger than a chunk — every chunk but the first and the last has the same leaves,
    the same tables and the same table states, so one of them is evaluated for all.  The edges
    of the smallest such table (``t_min``) split a stretch between two other breakpoints into
    a head, identical whole ``t_min`` regions and a tail: the first whole region stands for all
    of them (``times``), so the work does not grow with the size of the guest.  Chunks are listed
    in address order; ``mult`` is 0 for padding.  A chunk stands for ``mult · times`` chunks.
    """
    g = b.geometry
    big = sorted(g.span(k - 1) for k in range(1, g.levels) if g.span(k - 1) > chunk)
    t_min = big[0] if big else None
    reps: list[list[tuple[int, int, int]]] = []  # per scenario: (chunk index, mult, times)
    # plain Python lists: this loop runs per scenario (segments, tests), on a handful of values
    ext_lo, ext_hi, ext_leaf = b.ext_lo.tolist(), b.ext_hi.tolist(), b.ext_leaf.tolist()
    pass_lo, pass_hi = b.pass_lo[:, : j + 1].tolist(), b.pass_hi[:, : j + 1].tolist()
    for s in range(b.size):
        lo, hi = pass_lo[s][j], pass_hi[s][j]
        if hi <= lo:
            reps.append([])
            continue
        pts = {lo, hi, *pass_lo[s][:j], *pass_hi[s][:j]}
        pts.update(x for x, leaf in zip(ext_lo[s], ext_leaf[s], strict=True) if leaf > 0)
        pts.update(x for x, leaf in zip(ext_hi[s], ext_leaf[s], strict=True) if leaf > 0)
        for t in big[1:]:  # edges of the larger tables: few (at most IPA / t each)
            pts.update(range(-(-lo // t) * t, hi, t))
        edges = sorted(p for p in pts if lo <= p <= hi)
        pieces: list[tuple[int, int, int]] = []  # (start, end, times)
        for p, q in zip(edges, edges[1:], strict=False):
            if q <= p:
                continue
            if t_min is None:
                pieces.append((p, q, 1))
                continue
            first, last = (p // t_min + 1) * t_min, ((q - 1) // t_min) * t_min
            if first > last:  # no t_min edge inside
                pieces.append((p, q, 1))
                continue
            pieces.append((p, first, 1))
            if last > first:
                pieces.append((first, first + t_min, (last - first) // t_min))
            pieces.append((last, q, 1))
        chosen: dict[int, tuple[int, int]] = {}
        for p, q, n_regions in pieces:
            cf, cl = p // chunk, (q - 1) // chunk
            chosen[cf] = (1, n_regions)
            chosen[cl] = (1, n_regions)
            if cl - cf >= 2 and cf + 1 not in chosen:
                chosen[cf + 1] = (cl - cf - 1, n_regions)
        reps.append([(c, m, t) for c, (m, t) in sorted(chosen.items())])
    width = max(1, max((len(r) for r in reps), default=1))
    table = np.array([r + [(0, 0, 0)] * (width - len(r)) for r in reps], dtype=np.int64)
    table = table.reshape(b.size, width, 3)
    idx, mult, times = table[..., 0], table[..., 1], table[..., 2]
    p_lo = b.pass_lo[:, j : j + 1]
    p_hi = b.pass_hi[:, j : j + 1]
    c_lo = np.where(mult > 0, np.maximum(idx * chunk, p_lo), 0)
    c_hi = np.where(mult > 0, np.minimum((idx + 1) * chunk, p_hi), 0)
    return c_lo, c_hi, mult, times


def chunk_quantities(
    g: Geometry, ext: _Extents, prev_lo: I64, prev_hi: I64, lo: I64, c_lo: I64, c_hi: I64
) -> PassQuantities:
    """Quantities of chunk-walks ``[c_lo, c_hi)`` (S, K) of the passes starting at ``lo`` (S,).

    Chunk ``c`` starts from the coverage before the pass plus ``[lo, start of c)``: a table the
    chunk empties is freed there, and a table an earlier chunk freed is not walked again.
    ``ext`` has one middle axis (the chunks); ``prev`` has shape (S, 1, E, q).
    """
    done_lo, done_hi = ext.clip(np.broadcast_to(lo[:, None], c_lo.shape), np.maximum(c_lo, lo[:, None]))
    p_lo = concat_last(prev_lo, done_lo[..., None])
    p_hi = concat_last(prev_hi, done_hi[..., None])
    q, _, _ = pass_quantities(g, ext, p_lo, p_hi, c_lo, c_hi)
    return q


def chunk_run_quantities(
    g: Geometry,
    ext: _Extents,
    prev_lo: I64,
    prev_hi: I64,
    lo: I64,
    hi: I64,
    runs: Sequence[tuple[I64, I64]],
) -> tuple[I64, list[I64]]:
    """The whole passes ``[lo, hi)`` (S,) and their chunk-walks ``runs`` (each (S, K_i) bounds)
    in one evaluation: the whole pass is one more chunk, with nothing of the pass done before
    it.  Returns the quantity matrices in `SEGMENT_QUANTITIES` order, (S, 8) and one (S, K_i, 8)
    per run."""
    c_lo = np.concatenate([lo[:, None], *(r[0] for r in runs)], axis=1)
    c_hi = np.concatenate([hi[:, None], *(r[1] for r in runs)], axis=1)
    qm = quantity_matrix(chunk_quantities(g, ext, prev_lo[:, None], prev_hi[:, None], lo, c_lo, c_hi),
                         SEGMENT_QUANTITIES)
    ends = np.cumsum([1, *(r[0].shape[1] for r in runs)])
    return qm[:, 0, :], [qm[:, a:z, :] for a, z in zip(ends[:-1], ends[1:], strict=True)]


def _range_events(g: Geometry, c_lo: I64, c_hi: I64) -> I64:
    """One range flush per chunk-walk (even an empty-handed one), with its TLBI range ops."""
    ev = np.zeros(c_lo.shape + (N_EVENTS,), dtype=np.int64)
    calls, ops = range_flush(np.where(c_hi > c_lo, (c_hi - c_lo) // g.granule, 0))
    ev[..., EVENT_INDEX["range_flush_call"]] = calls
    ev[..., EVENT_INDEX["range_tlbi_op"]] = ops
    return ev


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
    ext = _Extents(b, 0)
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


_HOST = (EVENT_INDEX["host_page_free"], EVENT_INDEX["host_folio_free"])


class _ChunkedPasses:
    """One scenario's passes, split into representative chunks for every chunk size its
    behaviour sets walk with: per pass, all of them are evaluated at once and shared."""

    def __init__(self, one: Batch, behs: Sequence[Mapping[str, Behaviour]]) -> None:
        g = one.geometry
        self.one = one
        ext = _Extents(one, 0)
        ext_c = _Extents(one, 1)
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
                ev = ev + _range_events(g, c_lo, c_hi)[0]
            keep = mult[0] > 0
            ev, m, t = ev[keep], mult[0][keep], times[0][keep]
            n = int(chunks_spanned(lo, hi, chunk)[0])
            if int((m * t).sum()) != n or m[0] != 1 or m[-1] != 1 or t[0] != 1 or t[-1] != 1:
                raise RuntimeError(f"chunk runs cover {int((m * t).sum())} chunks of {n}")
            ev[:, list(_HOST)] = 0
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


def slice_batch(b: Batch, lo: int, hi: int) -> Batch:
    """Scenarios ``lo..hi-1`` of a batch (views, no copy)."""
    return Batch(
        geometry=b.geometry,
        ext_lo=b.ext_lo[lo:hi],
        ext_hi=b.ext_hi[lo:hi],
        ext_leaf=b.ext_leaf[lo:hi],
        ext_dev=b.ext_dev[lo:hi],
        n_memslots=b.n_memslots[lo:hi],
        inv_kind=b.inv_kind,
        inv_blockable=b.inv_blockable,
        inv_present=b.inv_present[lo:hi],
        inv_lo=b.inv_lo[lo:hi],
        inv_hi=b.inv_hi[lo:hi],
        pass_lo=b.pass_lo[lo:hi],
        pass_hi=b.pass_hi[lo:hi],
        pass_inv=b.pass_inv,
        pass_slot=b.pass_slot,
    )
