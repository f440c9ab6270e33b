"""The oracle: a literal, slow, obviously-correct simulation of the Stage-2 unmap and destroy walks.

This module builds a real (synthetic) Stage-2 page table from a `Layout` and then executes an
event (a sequence of `Invocation`) against it, one page-table entry at a time, counting every
kernel event of `ops.EVENTS`.  It exists only to check the closed-form model (`counts.py`); it
shares no code with it and must never be imported by it.

The base is Linux v5.5; every later strategy of `behaviour.Behaviour` is simulated by switching
individual kernel actions on or off and by changing how a pass is chunked.

Kernel references (Linux v5.5, arm64; paths as of that release):

* virt/kvm/arm/mmu.c
  - ``unmap_stage2_range``: loops over the entry-level entries of ``[start, start + size)``;
    after every entry that is not the last one, ``cond_resched_lock(&kvm->mmu_lock)``.
  - ``unmap_stage2_puds`` / ``unmap_stage2_pmds``: load every entry of the table that
    intersects the range; a block is cleared (``stage2_pud_clear`` / ``pmd_clear``), then
    ``kvm_tlb_flush_vmid_ipa``, then ``kvm_flush_dcache_pud`` / ``_pmd`` of the *whole* block,
    then ``put_page`` on the table page; a table entry recurses one level down.  After the loop,
    if the table the loop walked is now empty (``stage2_p*d_table_empty``: page refcount 1),
    ``clear_stage2_p*d_entry`` unhooks it from its parent.
  - ``unmap_stage2_ptes``: per valid PTE ``kvm_set_pte(pte, 0)``, ``kvm_tlb_flush_vmid_ipa``,
    ``kvm_flush_dcache_pte`` unless ``kvm_is_device_pfn``, ``put_page``; then the same
    emptiness check (``stage2_pte_table_empty``) and ``clear_stage2_pmd_entry``.
  - ``clear_stage2_{pgd,pud,pmd}_entry``: clear the parent entry, ``kvm_tlb_flush_vmid_ipa``,
    free the child table page, ``put_page`` the parent's table page.
  - ``kvm_free_stage2_pgd`` (via ``kvm_arch_flush_shadow_all``): ``unmap_stage2_range`` over
    the whole IPA space under ``mmu_lock``, then the entry-level pages are freed one by one
    (``free_pages_exact``).
  - ``kvm_unmap_hva_range`` -> ``handle_hva_to_gpa``: every memslot is examined; each one that
    intersects the notifier's range gets one ``kvm_unmap_hva_handler`` ->
    ``unmap_stage2_range`` over the intersection.
  - ``kvm_arch_flush_shadow_memslot``: one ``unmap_stage2_range`` over the slot, no iteration.
  - ``stage2_unmap_vm`` (vCPU re-init): ``kvm_for_each_memslot`` -> ``stage2_unmap_memslot``.
  - ``stage2_set_pmd_huge``: a table where a block is wanted is unmapped
    (``unmap_stage2_range`` over the PMD block) and the fault retried.
  - ``stage2_get_pud`` / ``stage2_get_pmd`` / ``stage2_set_pte``: every entry installed in a
    table page takes a ``get_page`` on that page, so a table page's refcount is
    1 + number of valid entries.
* arch/arm64/include/asm/stage2_pgtable.h: levels the IPA size does not need are *folded*
  (``stage2_pgd_none`` returns 0, ``stage2_pud_offset`` returns the pgd pointer itself,
  ``stage2_pud_addr_end`` returns ``end``, ``stage2_pud_table_empty`` returns false ...), so a
  folded level loads nothing of its own and the walk touches each real entry exactly once.
  This module therefore models only the real levels, ``geometry.levels`` of them.
* arch/arm64/include/asm/kvm_mmu.h: ``__kvm_flush_dcache_{pte,pmd,pud}`` do nothing when the
  CPU has FEAT_S2FWB; otherwise one ``__flush_dcache_area`` call over the leaf, one DC CIVAC
  per cache line (arch/arm64/mm/cache.S).
* virt/kvm/kvm_main.c: ``kvm_mmu_notifier_release`` and
  ``kvm_mmu_notifier_invalidate_range_start`` are the entry points (one ``notifier_call`` each).

Later kernels (arch/arm64/kvm/mmu.c and arch/arm64/kvm/hyp/pgtable.c):

* v5.10 ``kvm_pgtable_stage2_destroy`` (``walk="destroy"``): ``stage2_free_walker`` visits
  every entry like the unmap walker but clears nothing: ``put_page`` per valid entry and, after
  a table's children (``KVM_PGTABLE_WALK_TABLE_POST``), the child table page is freed.  It runs
  after ``kvm_free_stage2_pgd`` has detached the table, outside ``mmu_lock``
  (``lock="unlocked"``), with no TLBI and no CMO.
* v6.1 ``stage2_apply_range``: the range is cut at ``stage2_range_addr_end`` boundaries
  (multiples of ``kvm_granule_size(KVM_PGTABLE_MIN_BLOCK_LEVEL)``: 1 GiB / 32 MiB / 512 MiB for
  4 / 16 / 64 KiB pages, ``resched="largest_block"``); each piece is a separate
  ``kvm_pgtable_stage2_unmap`` walk from the entry level, with ``cond_resched_rwlock_write``
  between pieces.  v5.5..v5.10 cut at entry-level entries (``resched="top_level"``).
* v6.19 ``stage2_destroy_range``: the destroy walk cut the same way (``stage2_range_addr_end``)
  with ``cond_resched()`` between pieces; ``resched="1g"`` is that cut for 4 KiB pages (with
  16 / 64 KiB pages the kernel cuts at 32 / 512 MiB, i.e. ``"largest_block"``).
* v6.6 ``kvm_pgtable_stage2_unmap``: when ``stage2_unmap_defer_tlb_flush`` (TLBIRANGE and FWB)
  the per-entry ``__kvm_tlb_flush_vmid_ipa`` is skipped and, after each walk,
  ``kvm_tlb_flush_vmid_range`` issues one ``__kvm_tlb_flush_vmid_range`` hyp call per at most
  ``MAX_TLBI_RANGE_PAGES`` (2**21) pages; at EL2 ``__flush_s2_tlb_range_op`` decomposes the
  page count into TLBI operations (`range_tlbi_ops`).  v6.6.0..v6.8 skip the TLBI of emptied
  table entries too (``table_tlbi="deferred"``).

Modelling conventions that the kernel does not fix (see also `walk`):

* A *pass* is one call of the range function (``unmap_stage2_range``, one memslot of
  ``handle_hva_to_gpa``, the teardown's whole-IPA walk ...).  It is cut into *chunks* by the
  ``resched`` field; each chunk is a separate walk from the entry level.  Resched points come
  only between the chunks of one pass (never between passes or invocations), so segments are
  split only there; the lock drop between two invocations of one event does not start one.
* A table is freed by the chunk-walk that leaves it with no valid entry (post-order check at the
  end of the walk of its sub-range), in ``unmap`` and in ``destroy`` walks alike; a freed table
  is not walked again (its parent entry is empty).  For a single whole-IPA destroy walk this is
  exactly ``stage2_free_walker``; for a chunked destroy it is what a correct chunked destroy
  must do (a table spanning several chunks is freed by the last one that reaches it).
* The host's own work on guest RAM (``host_*`` events: zaps, frees, page-table frees) is
  counted by the literal host simulation (`oracle.host`) for the host operations given to
  `walk`; it runs outside ``mmu_lock``: in the totals, in no segment.
* Memslots are examined in v5.5's array order by default (highest base GFN first,
  ``update_memslots`` in virt/kvm/kvm_main.c); ``memslot_order="layout"`` uses the layout's.
  The order decides which pass frees a table shared by two memslots, so it changes the split
  between segments and, when a freed table is not walked again, the entry visits.
* Lock flags: a segment is reported as holding ``mmu_lock`` unless some chunk-walk of an
  invocation whose behaviour has ``lock="unlocked"`` ran in it (so a segment that also holds
  locked work, e.g. the tail of a previous invocation, is reported unlocked).  ``lock="read"``
  (the v6.2+ fault path, ``read_lock(&kvm->mmu_lock)``) holds it: a read holder is not
  preemptible either.
* v6.2+ table->block retry (``free="rcu"``, block_retry invocations only):
  ``stage2_map_walk_table_pre`` breaks the table entry (TLBI, ``put_page`` on the parent) and
  hands the unlinked table to ``free_unlinked_table`` -> ``call_rcu``; the RCU callback walks it
  (``kvm_pgtable_stage2_free_unlinked`` with ``stage2_free_walker``: a load per entry, a
  ``put_page`` per valid one) and frees the page.  Here everything done at the last level
  (``unmap_ptes``: visits and leaves) and the ``table_free`` of a last-level table are counted
  into a deferred vector: in the totals, in no segment (like the host frees).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeAlias

import numpy as np
import numpy.typing as npt

from s2teardown.core.behaviour import Behaviour
from s2teardown.core.geometry import Geometry
from s2teardown.core.host import EVENT_OF as HOST_EVENT_OF
from s2teardown.core.host import HostOp
from s2teardown.core.layout import (
    BLOCK_RETRY,
    ITERATES_MEMSLOTS,
    MEMSLOT,
    RESET,
    TEARDOWN,
    Invocation,
    Layout,
    Memslot,
)
from s2teardown.core.vocabulary import EVENT_INDEX, EVENTS
from s2teardown.oracle.host import host_counts

# Event indices (positions in ops.EVENTS).
_NOTIFIER_CALL: Final = EVENT_INDEX["notifier_call"]
_MEMSLOT_VISIT: Final = EVENT_INDEX["memslot_visit"]
_ENTRY_VISIT: Final = EVENT_INDEX["entry_visit"]
_PTE_CLEAR: Final = EVENT_INDEX["pte_clear"]
_BLOCK_CLEAR: Final = EVENT_INDEX["block_clear"]
_TABLE_CLEAR: Final = EVENT_INDEX["table_clear"]
_PUT_PAGE: Final = EVENT_INDEX["put_page"]
_TLB_FLUSH_VMID_IPA: Final = EVENT_INDEX["tlb_flush_vmid_ipa"]
_DCACHE_FLUSH_CALL: Final = EVENT_INDEX["dcache_flush_call"]
_DC_CIVAC_LINE: Final = EVENT_INDEX["dc_civac_line"]
_TABLE_FREE: Final = EVENT_INDEX["table_free"]
_RESCHED_POINT: Final = EVENT_INDEX["resched_point"]
_FLUSH_REMOTE_TLBS: Final = EVENT_INDEX["flush_remote_tlbs"]
_RANGE_FLUSH_CALL: Final = EVENT_INDEX["range_flush_call"]
_RANGE_TLBI_OP: Final = EVENT_INDEX["range_tlbi_op"]

#: A valid leaf descriptor (page or block) mapping normal memory.  The leaf's size is implied
#: by the level of the table that holds it.
LEAF: Final = "leaf"
#: A valid page descriptor mapping a device pfn (``kvm_is_device_pfn``): never cleaned, never
#: freed by the host.  Device mappings are always pages.
DEVICE_LEAF: Final = "device-leaf"

MEMSLOT_ORDERS: Final = ("layout", "kernel")

#: ``MAX_TLBI_RANGE_PAGES`` (arch/arm64/include/asm/tlbflush.h): ``__TLBI_RANGE_PAGES(31, 3)``.
MAX_TLBI_RANGE_PAGES: Final = 1 << 21

GIB: Final = 1 << 30


def range_tlbi_ops(pages: int) -> int:
    """TLBI instructions ``__flush_s2_tlb_range_op`` issues for ``pages`` pages (0 < pages < 2**21).

    arch/arm64/include/asm/tlbflush.h ``__flush_tlb_range_op`` with FEAT_TLBIRANGE: an odd page
    count first takes one single-page TLBI; the (even) rest is covered by one range TLBI per
    non-zero 5-bit field ``(pages >> (5 * scale + 1)) & 31`` for scale 0..3.
    """
    if not 0 < pages < MAX_TLBI_RANGE_PAGES:
        raise ValueError(f"range flush of {pages} pages: expected 1..{MAX_TLBI_RANGE_PAGES - 1}")
    return (pages & 1) + sum(1 for scale in range(4) if (pages >> (5 * scale + 1)) & 31)


def range_flush_counts(pages: int) -> tuple[int, int]:
    """(hyp calls, TLBI ops) of ``kvm_tlb_flush_vmid_range`` over ``pages`` pages.

    One ``__kvm_tlb_flush_vmid_range`` call per at most ``MAX_TLBI_RANGE_PAGES`` pages.  Every
    chunk of the chunked strategies is far below that (at most 1 GiB); only an unchunked
    (``resched="none"``) pass of 8 GiB or more with 4 KiB pages needs several calls.  A full
    2**21-page call is one range TLBI at scale 3, num 31 (the arithmetic of v6.9+; v6.6..v6.8
    mis-encode that exact size, which no chunked walk reaches).
    """
    if pages <= 0:
        raise ValueError(f"range flush of {pages} pages")
    full, rest = divmod(pages, MAX_TLBI_RANGE_PAGES)
    calls = full + (1 if rest else 0)
    ops = full + (range_tlbi_ops(rest) if rest else 0)
    return calls, ops


class TablePage:
    """One page-table page: its entries and its ``struct page`` refcount.

    ``entries[i]`` is ``None`` (invalid), `LEAF` / `DEVICE_LEAF`, or the child `TablePage` a
    table descriptor points to.  ``refcount`` starts at 1 (the allocation) and every valid entry
    holds one more reference, exactly as the kernel's ``get_page`` / ``put_page`` pairs do.
    """

    __slots__ = ("level", "entries", "refcount")

    def __init__(self, level: int, n_entries: int) -> None:
        self.level = level
        self.entries: list[Entry] = [None] * n_entries
        self.refcount = 1

    def valid_entries(self) -> int:
        return sum(1 for e in self.entries if e is not None)


Entry: TypeAlias = "str | TablePage | None"


class Stage2Table:
    """A Stage-2 page table: the concatenated entry-level pages and everything below them.

    The entry level (level 0) has ``geometry.top_entries`` entries laid out over
    ``geometry.pgd_pages`` pages (``kvm_alloc_stage2_pgd`` allocates them with
    ``alloc_pages_exact`` so that each page has its own refcount); entry ``i`` lives in page
    ``i // entries_per_table``.
    """

    def __init__(self, geometry: Geometry) -> None:
        self.geometry = geometry
        per_page = min(geometry.entries_per_table, geometry.top_entries)
        self.pgd: list[TablePage] = [TablePage(0, per_page) for _ in range(geometry.pgd_pages)]
        if per_page * len(self.pgd) != geometry.top_entries:
            raise AssertionError("entry level does not fill its pages")  # geometry invariant
        self.pgd_freed = False  # set by a teardown (kvm_free_stage2_pgd)

    # -- addressing ------------------------------------------------------------------------

    def pgd_slot(self, addr: int) -> tuple[TablePage, int]:
        """The entry-level page and index of the entry covering ``addr`` (``stage2_pgd_index``)."""
        g = self.geometry
        if not 0 <= addr < g.ipa_size:
            raise ValueError(f"address {addr:#x} outside the {g.ipa_bits}-bit IPA space")
        global_index = addr // g.span(0)
        page = self.pgd[global_index // len(self.pgd[0].entries)]
        return page, global_index % len(page.entries)

    def index_of(self, table: TablePage, addr: int) -> int:
        """Index in ``table`` of the entry covering ``addr`` (``p*d_index``)."""
        return (addr // self.geometry.span(table.level)) % len(table.entries)

    # -- building --------------------------------------------------------------------------

    def table_for(self, addr: int, level: int) -> TablePage:
        """The table page at ``level`` that holds the entry for ``addr``, created on demand.

        Mirrors ``stage2_get_pud`` / ``stage2_get_pmd`` / ``stage2_set_pte``: a missing table is
        allocated, its parent entry is populated and the parent page takes a reference.
        """
        page, index = self.pgd_slot(addr)
        for lvl in range(level):
            entry = page.entries[index]
            if entry is None:
                child = TablePage(lvl + 1, self.geometry.entries_per_table)
                page.entries[index] = child
                page.refcount += 1  # get_page(virt_to_page(parent entry))
                entry = child
            elif not isinstance(entry, TablePage):
                raise ValueError(
                    f"{addr:#x}: a level-{level} leaf would sit under a level-{lvl} block"
                )
            page = entry
            index = self.index_of(page, addr)
        return page

    def install_extent(self, lo: int, hi: int, leaf: int, device: bool) -> None:
        """Install every leaf of ``[lo, hi)`` (``(hi - lo) / leaf`` of them, ``leaf``-aligned)."""
        g = self.geometry
        level = g.leaf_level(leaf)
        marker = DEVICE_LEAF if device else LEAF
        addr = lo
        while addr < hi:
            table = self.table_for(addr, level)
            coverage = g.span(level) * len(table.entries)  # IPA bytes the table page maps
            chunk_end = min(hi, addr - addr % coverage + coverage)
            entries = table.entries
            first = self.index_of(table, addr)
            for i in range(first, first + (chunk_end - addr) // leaf):
                if entries[i] is not None:
                    raise ValueError(f"overlapping mappings near {addr:#x}")
                entries[i] = marker
                table.refcount += 1  # get_page on the table page holding the new entry
            addr = chunk_end

    # -- inspection (tests) ----------------------------------------------------------------

    def pages(self) -> list[TablePage]:
        """Every table page below the entry level, depth first."""
        out: list[TablePage] = []
        stack = [e for p in self.pgd for e in p.entries if isinstance(e, TablePage)]
        while stack:
            t = stack.pop()
            out.append(t)
            stack.extend(e for e in t.entries if isinstance(e, TablePage))
        return out

    def leaf_count(self) -> dict[int, int]:
        """Valid leaves by level (device and normal together)."""
        counts: dict[int, int] = {}
        for t in self.pgd + self.pages():
            n = sum(1 for e in t.entries if e is LEAF or e is DEVICE_LEAF)
            if n:
                counts[t.level] = counts.get(t.level, 0) + n
        return counts


def build_table(layout: Layout) -> Stage2Table:
    """Build the Stage-2 table a layout describes: every leaf of every extent, tables on demand."""
    layout.validate()
    table = Stage2Table(layout.geometry)
    for e in layout.extents:
        table.install_extent(e.lo, e.hi, e.leaf, e.device)
    return table


@dataclass(frozen=True, eq=False)
class WalkResult:
    """Kernel-event counts of one event (`ops.EVENTS` order, int64).

    ``segments[k]`` counts the events between resched points ``k - 1`` and ``k`` in execution
    order (a resched point belongs to the segment it ends); they sum to ``events`` less the
    host-side frees and less ``deferred``.
    ``lock_held_segments[k]`` says whether ``mmu_lock`` was held during segment ``k``: False as
    soon as a chunk-walk of an ``lock="unlocked"`` invocation ran in it.
    ``deferred`` counts the work of RCU callbacks (a v6.2+ block retry's unlinked subtree):
    in ``events``, in no segment.
    """

    events: npt.NDArray[np.int64]
    segments: tuple[npt.NDArray[np.int64], ...]
    lock_held_segments: tuple[bool, ...]
    deferred: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(len(EVENTS), dtype=np.int64))

    def count(self, event: str) -> int:
        return int(self.events[EVENT_INDEX[event]])


def chunk_size(b: Behaviour, g: Geometry) -> int | None:
    """The chunk a pass is cut into under ``b.resched`` (None: the whole pass is one chunk)."""
    sizes: dict[str, int | None] = {
        "top_level": g.top_entry_size,  # v5.5 unmap_stage2_range: one entry-level entry
        "largest_block": g.min_block_chunk,  # v6.1 stage2_range_addr_end
        "1g": GIB,
        "none": None,
    }
    return sizes[b.resched]


class _Run:
    """Executes invocations against one `Stage2Table`, counting events into segments."""

    def __init__(
        self,
        table: Stage2Table,
        memslots: Sequence[Memslot],
        *,
        fwb: bool,
        cache_line: int,
        tlbi_range: bool,
    ) -> None:
        g = table.geometry
        if cache_line <= 0 or cache_line & (cache_line - 1) or g.granule % cache_line:
            raise ValueError(
                f"cache_line must be a power of two dividing the granule, got {cache_line}"
            )
        self.table = table
        self.memslots = memslots
        self.g = g
        self.fwb = fwb
        self.tlbi_range = tlbi_range
        self.cache_line = cache_line
        self.last_level = g.levels - 1
        self.segments: list[list[int]] = [[0] * len(EVENTS)]
        self.seg = self.segments[0]  # the current segment
        self.unlocked: list[bool] = [False]  # per segment: an unlocked chunk-walk ran in it
        self.host = [0] * len(EVENTS)  # host-side frees: counted in totals, in no segment
        self.deferred = [0] * len(EVENTS)  # RCU-deferred subtree frees: totals, no segment
        # Per-invocation state, set by `set_behaviour`.
        self.behaviour = Behaviour()
        self.chunk: int | None = g.top_entry_size
        self.resched_active = False
        self.destroy = False  # kvm_pgtable_stage2_destroy: drop references, clear nothing
        self.leaf_tlbi = True  # one kvm_tlb_flush_vmid_ipa per cleared leaf
        self.table_tlbi = True  # one kvm_tlb_flush_vmid_ipa per emptied table
        self.range_flush = False  # one kvm_tlb_flush_vmid_range per chunk-walk
        self.cmo = True  # kvm_flush_dcache_* per cleared (non-device) leaf
        self.rcu_free = False  # v6.2+ block retry: the last-level subtree freed via call_rcu

    def set_behaviour(self, b: Behaviour, inv: Invocation) -> None:
        """Derive the per-invocation switches from the behaviour and the machine's features."""
        self.behaviour = b
        self.chunk = chunk_size(b, self.g)
        self.resched_active = b.resched != "none" and (
            b.resched_when == "always" or inv.blockable
        )
        self.destroy = b.walk == "destroy"
        unmap = not self.destroy
        # v6.6 stage2_unmap_defer_tlb_flush: only with both TLBIRANGE and FWB; otherwise the
        # per-entry TLBI with a level hint (per_entry_level).
        self.range_flush = unmap and b.leaf_tlbi == "range" and self.tlbi_range and self.fwb
        self.leaf_tlbi = unmap and b.leaf_tlbi != "none" and not self.range_flush
        self.table_tlbi = unmap and (
            b.table_tlbi == "per_entry" or (b.table_tlbi == "deferred" and not self.range_flush)
        )
        self.cmo = unmap and b.cmo == "per_leaf" and not self.fwb
        # v6.2+ stage2_map_walk_table_pre -> free_unlinked_table -> call_rcu (block retry only)
        self.rcu_free = inv.kind == BLOCK_RETRY and b.free == "rcu"

    # -- segments --------------------------------------------------------------------------

    def resched_point(self) -> None:
        """``cond_resched_lock(&kvm->mmu_lock)`` / ``cond_resched()``: counted in the segment it
        ends."""
        self.seg[_RESCHED_POINT] += 1
        self.seg = [0] * len(EVENTS)
        self.segments.append(self.seg)
        self.unlocked.append(False)

    # -- invocations -----------------------------------------------------------------------

    def invoke(self, inv: Invocation, b: Behaviour, memslot_order: str) -> None:
        g = self.g
        if self.table.pgd_freed:
            # kvm_mmu_notifier_release is the last callback: the notifier is then unhooked.
            raise ValueError("no invocation can follow a teardown (the notifier is gone)")
        if inv.lo % g.granule or inv.hi % g.granule or not 0 <= inv.lo < inv.hi <= g.ipa_size:
            raise ValueError(
                f"{inv}: range empty, outside the IPA space or not aligned to the "
                f"{g.granule}-byte granule"
            )
        self.set_behaviour(b, inv)
        self.seg[_NOTIFIER_CALL] += 1  # the callback, the ioctl or the fault-path entry

        if inv.kind == TEARDOWN:
            # kvm_mmu_notifier_release -> kvm_arch_flush_shadow_all -> kvm_free_stage2_pgd
            if (inv.lo, inv.hi) != (0, g.ipa_size):
                raise ValueError(f"{inv}: a teardown always covers the whole IPA space")
            self.run_pass(0, g.ipa_size)
        elif inv.kind in ITERATES_MEMSLOTS:
            # UNMAP / CLEAR: kvm_unmap_hva_range -> handle_hva_to_gpa, one pass per intersection;
            # RESET: stage2_unmap_vm -> stage2_unmap_memslot, one pass over each whole memslot.
            slots = self.memslots
            order = list(range(len(slots)))
            if memslot_order == "kernel":
                order.sort(key=lambda i: slots[i].lo, reverse=True)
            for i in order:
                slot = slots[i]
                self.seg[_MEMSLOT_VISIT] += 1
                if inv.kind == RESET:
                    if slot.lo < inv.hi and inv.lo < slot.hi:
                        self.run_pass(slot.lo, slot.hi)
                    continue
                lo, hi = max(inv.lo, slot.lo), min(inv.hi, slot.hi)
                if lo < hi:
                    self.run_pass(lo, hi)  # kvm_unmap_hva_handler
        elif inv.kind in (MEMSLOT, BLOCK_RETRY):
            # kvm_arch_flush_shadow_memslot over the slot; stage2_set_pmd_huge over one block.
            self.run_pass(inv.lo, inv.hi)
        else:
            raise ValueError(f"unknown invocation kind {inv.kind!r}")

        if b.final_flush == "vmall" or (b.final_flush == "range_or_vmall" and not self.tlbi_range):
            self.seg[_FLUSH_REMOTE_TLBS] += 1  # kvm_flush_remote_tlbs, after the walk
        elif b.final_flush == "range_or_vmall" and (inv.hi - inv.lo) // g.granule > 0:
            # kvm_tlb_flush_vmid_range(mmu, addr, size) over the invocation's range
            calls, ops = range_flush_counts((inv.hi - inv.lo) // g.granule)
            self.seg[_RANGE_FLUSH_CALL] += calls
            self.seg[_RANGE_TLBI_OP] += ops
        if inv.kind == TEARDOWN:
            self.seg[_TABLE_FREE] += g.pgd_pages  # free_pages_exact(pgd): one page at a time
            self.table.pgd_freed = True


    # -- passes and chunks -----------------------------------------------------------------

    def run_pass(self, start: int, end: int) -> None:
        """One pass over ``[start, end)``: its chunks, each a walk from the entry level.

        v5.5 ``unmap_stage2_range`` (chunk = one entry-level entry), v6.1 ``stage2_apply_range``
        (chunk = ``stage2_range_addr_end``), v6.19 ``stage2_destroy_range`` or one unchunked walk.
        After each chunk-walk, the deferred range flush (v6.6); between chunks, a resched point.
        """
        size = self.chunk
        addr = start
        while True:
            nxt = end if size is None else min(addr - addr % size + size, end)
            self.walk_chunk(addr, nxt)
            if self.range_flush:
                # kvm_pgtable_stage2_unmap -> kvm_tlb_flush_vmid_range(mmu, addr, size)
                calls, ops = range_flush_counts((nxt - addr) // self.g.granule)
                self.seg[_RANGE_FLUSH_CALL] += calls
                self.seg[_RANGE_TLBI_OP] += ops
            if self.behaviour.lock == "unlocked":
                self.unlocked[-1] = True
            if nxt == end:
                break
            if self.resched_active:
                self.resched_point()
            addr = nxt

    def walk_chunk(self, start: int, end: int) -> None:
        """One walk from the entry level over ``[start, end)``: every entry-level entry it spans
        (``stage2_pgd_addr_end``; ``_kvm_pgtable_walk`` over the concatenated pgd pages)."""
        span0 = self.g.span(0)
        addr = start
        while addr < end:
            nxt = min(addr - addr % span0 + span0, end)
            page, index = self.table.pgd_slot(addr)
            self.unmap_entry(page, index, addr, nxt)
            addr = nxt

    # -- the walk (virt/kvm/arm/mmu.c; hyp/pgtable.c stage2_unmap_walker / stage2_free_walker)

    def unmap_entry(self, table: TablePage, index: int, addr: int, end: int) -> None:
        """Load one entry covering ``[addr, end)`` and unmap (or destroy) what it maps there.

        The body of the loops of ``unmap_stage2_puds`` / ``unmap_stage2_pmds`` (and the
        entry-level loop of ``unmap_stage2_range``, whose folded levels load nothing more).
        """
        self.seg[_ENTRY_VISIT] += 1
        entry = table.entries[index]
        if entry is None:
            return
        if isinstance(entry, TablePage):
            deferred = self.rcu_free and entry.level == self.last_level
            if entry.level == self.last_level:
                if deferred:
                    # the RCU callback walks the unlinked table: its counts go to `deferred`
                    # (no resched point can fall inside one table's walk)
                    live, self.seg = self.seg, self.deferred
                    self.unmap_ptes(entry, addr, end)
                    self.seg = live
                else:
                    self.unmap_ptes(entry, addr, end)
            else:
                self.unmap_table(entry, addr, end)
            # stage2_p*_table_empty at the end of the child's loop (post-order)
            if entry.refcount == 1:
                self.clear_table_entry(table, index, deferred_free=deferred)
        else:
            self.clear_leaf(table, index, entry)

    def unmap_table(self, table: TablePage, start: int, end: int) -> None:
        """``unmap_stage2_puds`` / ``unmap_stage2_pmds``: every entry of ``table`` in the range."""
        span = self.g.span(table.level)
        index = self.table.index_of(table, start)
        addr = start
        while True:
            nxt = min(addr - addr % span + span, end)  # stage2_p*d_addr_end
            self.unmap_entry(table, index, addr, nxt)
            index += 1
            addr = nxt
            if addr == end:
                break

    def unmap_ptes(self, table: TablePage, start: int, end: int) -> None:
        """``unmap_stage2_ptes``: load every PTE of ``table`` in ``[start, end)``, clear the valid.

        Per valid PTE, in kernel order: ``kvm_set_pte(pte, 0)``, ``kvm_tlb_flush_vmid_ipa``,
        ``kvm_flush_dcache_pte`` unless ``kvm_is_device_pfn``, ``put_page`` (`clear_leaf`).
        """
        entries = table.entries
        seg = self.seg
        first = self.table.index_of(table, start)
        for index in range(first, first + (end - start) // self.g.granule):
            seg[_ENTRY_VISIT] += 1
            entry = entries[index]
            if entry is None:
                continue
            if isinstance(entry, TablePage):
                raise AssertionError("a table page below the last level")
            self.clear_leaf(table, index, entry)

    def clear_leaf(self, table: TablePage, index: int, entry: str) -> None:
        """A valid leaf found by ``unmap_stage2_puds`` / ``_pmds`` (a block) or ``_ptes``.

        The whole leaf goes, even when the range covers only part of it.  A destroy walk only
        drops the reference (``stage2_free_walker``: ``put_page(ptep)``); the entry is then
        marked invalid here only so that the simulation knows it is gone.
        """
        level = table.level
        size = self.g.span(level)
        is_page = level == self.last_level
        seg = self.seg
        device = entry is DEVICE_LEAF
        table.entries[index] = None
        if not self.destroy:
            seg[_PTE_CLEAR if is_page else _BLOCK_CLEAR] += 1  # kvm_set_pte(0) / p*d_clear
            if self.leaf_tlbi:
                seg[_TLB_FLUSH_VMID_IPA] += 1  # kvm_tlb_flush_vmid_ipa
            if self.cmo and not (is_page and device):
                seg[_DCACHE_FLUSH_CALL] += 1  # kvm_flush_dcache_p*d -> __flush_dcache_area
                seg[_DC_CIVAC_LINE] += size // self.cache_line
        table.refcount -= 1
        seg[_PUT_PAGE] += 1  # put_page(virt_to_page(entry))

    def clear_table_entry(self, table: TablePage, index: int, *, deferred_free: bool = False) -> None:
        """``clear_stage2_{pgd,pud,pmd}_entry``: unhook and free a table the walk emptied.

        A destroy walk frees the child (``put_page`` of the child page) and drops the parent's
        reference, without clearing the entry or invalidating anything.  ``deferred_free``: the
        page is freed by the RCU callback (v6.2+ block retry), outside the segment.
        """
        seg = self.seg
        table.entries[index] = None
        if not self.destroy:
            seg[_TABLE_CLEAR] += 1  # stage2_pgd_clear / stage2_pud_clear / pmd_clear
            if self.table_tlbi:
                seg[_TLB_FLUSH_VMID_IPA] += 1  # kvm_tlb_flush_vmid_ipa
        # stage2_pud_free / stage2_pmd_free / free_page; v6.2+ retry: the callback's put_page
        (self.deferred if deferred_free else seg)[_TABLE_FREE] += 1
        table.refcount -= 1
        seg[_PUT_PAGE] += 1  # put_page(virt_to_page(parent entry))


def run_event(
    table: Stage2Table,
    layout: Layout,
    event: Sequence[Invocation],
    behaviours: Mapping[str, Behaviour],
    *,
    fwb: bool,
    cache_line: int,
    memslot_order: str = "kernel",
    tlbi_range: bool = False,
    host: Sequence[HostOp] = (),
) -> WalkResult:
    """Execute ``event`` against an existing ``table`` (mutated in place) and count events.

    ``layout`` supplies the memslots ``handle_hva_to_gpa`` / ``stage2_unmap_vm`` iterate over.
    See `walk`.
    """
    if memslot_order not in MEMSLOT_ORDERS:
        raise ValueError(f"memslot_order must be one of {MEMSLOT_ORDERS}, got {memslot_order!r}")
    if table.geometry != layout.geometry:
        raise ValueError("table and layout have different geometries")
    picked: list[tuple[Invocation, Behaviour]] = []
    for inv in event:
        if inv.kind not in behaviours:
            raise ValueError(f"no behaviour for invocation kind {inv.kind!r}")
        picked.append((inv, behaviours[inv.kind]))

    run = _Run(table, layout.memslots, fwb=fwb, cache_line=cache_line, tlbi_range=tlbi_range)
    for inv, b in picked:
        run.invoke(inv, b, memslot_order)
    for counts in host_counts(layout, host, tlbi_range):  # the host mm's own work, after the notifiers
        for name, n in counts.items():
            run.host[EVENT_INDEX[HOST_EVENT_OF[name]]] += n

    segments = tuple(np.array(s, dtype=np.int64) for s in run.segments)
    events = np.array(run.host, dtype=np.int64) + np.array(run.deferred, dtype=np.int64)
    for segment in segments:
        events += segment
    return WalkResult(
        events=events,
        segments=segments,
        lock_held_segments=tuple(not u for u in run.unlocked),
        deferred=np.array(run.deferred, dtype=np.int64),
    )


def walk(
    layout: Layout,
    event: Sequence[Invocation],
    behaviours: Mapping[str, Behaviour],
    *,
    fwb: bool,
    cache_line: int,
    memslot_order: str = "kernel",
    tlbi_range: bool = False,
    host: Sequence[HostOp] = (),
) -> WalkResult:
    """Build the layout's Stage-2 table and execute ``event`` on it, counting kernel events.

    ``behaviours`` maps each invocation kind the event uses (``ops.PASS_KINDS``) to its
    `Behaviour`.  ``fwb``: the CPU has FEAT_S2FWB (no Stage-2 CMO).  ``cache_line``: the D-cache
    line size in bytes (one DC CIVAC per line).  ``memslot_order``: "layout" (tuple order) or
    "kernel" (v5.5 ``kvm_for_each_memslot`` order: highest base GFN first).  ``tlbi_range``: the
    CPU has FEAT_TLBIRANGE (with FWB it enables ``leaf_tlbi="range"``).

    Per invocation: one ``notifier_call``; then the passes of its kind --
    a teardown: one over ``[0, ipa_size)``; unmap / clear: every memslot visited, one pass per
    non-empty intersection; reset: every memslot visited, one pass over each whole memslot that
    intersects the range; memslot / block_retry: one pass over the range, no memslot visited.
    Each pass is cut into chunks (`chunk_size`), each walked from the entry level, followed by
    the range flush if it applies, with a resched point between chunks when the behaviour's
    resched is active for the invocation.  Then (P5) one ``flush_remote_tlbs``; a teardown then
    frees the ``pgd_pages`` entry-level pages.  Finally ``host``, the host mm's own operations
    on guest RAM, run in order on the literal host simulation (`oracle.host.host_counts`).
    """
    return run_event(
        build_table(layout),
        layout,
        event,
        behaviours,
        fwb=fwb,
        cache_line=cache_line,
        memslot_order=memslot_order,
        tlbi_range=tlbi_range,
        host=host,
    )


def walk_counts(
    layout: Layout,
    event: Sequence[Invocation],
    behaviours: Mapping[str, Behaviour],
    *,
    fwb: bool,
    cache_line: int,
    tlbi_range: bool = False,
    host: Sequence[HostOp] = (),
) -> dict[str, int]:
    """`walk`'s totals as a plain ``{event name: count}`` dict (handy in tests and reports)."""
    result = walk(layout, event, behaviours, fwb=fwb, cache_line=cache_line, tlbi_range=tlbi_range,
                  host=host)
    return {name: int(result.events[i]) for i, name in enumerate(EVENTS)}
