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

from s2teardown.core.counts.batch import Batch, batch_from_layout, slice_batch, whole_ipa_batch
from s2teardown.core.counts.quantities import (
    PassQuantities,
    pass_quantities,
    range_flush,
    range_ops,
)
from s2teardown.core.counts.totals import Counts, Segments, count, expand_linear, linear_from_events

__all__ = [
    "Batch", "Counts", "PassQuantities", "Segments", "batch_from_layout", "count", "expand_linear",
    "linear_from_events", "pass_quantities", "range_flush", "range_ops", "slice_batch",
    "whole_ipa_batch",
]
