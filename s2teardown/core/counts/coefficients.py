"""Kernel events from quantities and behaviour: a linear map (docs/model.md §5)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from s2teardown.core.behaviour import Behaviour
from s2teardown.core.counts.batch import N_EVENTS, Batch
from s2teardown.core.counts.quantities import PassQuantities, range_flush, range_flush_applies
from s2teardown.core.geometry import Geometry
from s2teardown.core.intervals import (
    I64,
)
from s2teardown.core.layout import (
    BLOCK_RETRY,
    ITERATES_MEMSLOTS,
    TEARDOWN,
)
from s2teardown.core.vocabulary import EVENT_INDEX

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


