"""The host side of a teardown: what the host mm does to the guest's memory, in closed form.

Stage-2 is KVM's copy of the guest's mappings; the host's own page tables map the same memory
in the VMM's address space, and every path that tears Stage-2 down is raised by (or followed
by) the host tearing its own mapping down (docs/model.md §14):

* ``exit_mmap`` (process exit): every VMA zapped (``unmap_vmas``), then every page-table page
  freed (``free_pgtables``), in a full-mm ``mmu_gather``;
* ``munmap``: the range zapped and the page-table pages wholly inside it freed
  (``unmap_region``); an unaligned edge inside a THP first splits it (``__split_vma`` ->
  ``vma_adjust_trans_huge`` -> ``__split_huge_pmd``);
* ``MADV_DONTNEED``: the range zapped (``zap_page_range_single``), page tables kept;
* the OOM reaper (``__oom_reap_task_mm``): each anonymous private VMA zapped (guest RAM: the
  range), page tables kept (``exit_mmap`` frees them later).

Per host page kind the zap is ``zap_pte_range`` per PTE (an order-0 folio: one
``host_pte_zap`` and one ``host_page_free``), ``zap_huge_pmd`` per PMD-mapped THP (one
``host_pmd_zap``, one ``host_folio_free``, and the PTE table deposited with the THP freed:
``zap_deposited_table``), ``__unmap_hugepage_range`` per hugetlb page (``host_hugetlb_zap``,
the page back to the pool: ``host_hugetlb_free``).  A THP only partly inside a range is split
(``host_pmd_split``) and the part inside zapped per PTE; its folio is freed only when its last
page goes (at exit), never by the partial zap.

Conventions (the kernel leaves them to the VMM): the host has faulted in exactly what Stage-2
maps (device extents are not guest RAM and are not the host's to free); the host's backing of an
extent is its Stage-2 leaf (a page: order-0 pages, a PMD block: a THP, or a 2 MiB hugetlb page
when the extent says ``huge`` (``--backing hugetlb-2M``), a PUD block: a 1 GiB hugetlb page), and
the guest RAM is mapped at ``HVA = GPA + a multiple of the largest span here``, so the host's
tables cover the same aligned regions as the guest's addresses.  The host's VMAs are the runs of
adjacent memslots, cut around each run of hugetlb extents of one size (a hugetlbfs VMA of its
own: `host_vmas`).  ``munmap``'s neighbouring VMAs end at the range (the rest of guest RAM), so
``free_pgtables`` frees only tables wholly inside the range.  A hugetlb page is never split
(the kernel refuses a range that cuts one); the OOM reaper skips hugetlb VMAs.

The host's TLB flushes (``flush_tlb_mm``, ``__flush_tlb_range`` and their TLBIs) follow v6.6's
``mmu_gather`` and arm64's code (the comment above `gather_capacity`); they are counted per
scenario by a closed form over runs of entries (one per extent and cut edge) and of page-table
pages (one per region of the next level up), not per entry.

Everything is vectorised over scenarios: ranges are ``(S,)`` arrays, extents ``(S, E)``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Final

import numpy as np
import numpy.typing as npt

from s2teardown.core.geometry import Geometry
from s2teardown.core.intervals import I64, ceil_div, floor_div, to_units, union_length

#: Host operations on guest RAM.
EXIT_MMAP: Final = "exit_mmap"
MUNMAP: Final = "munmap"
MADV_DONTNEED: Final = "madv_dontneed"
OOM_REAP: Final = "oom_reap"
HOST_KINDS: Final[tuple[str, ...]] = (EXIT_MMAP, MUNMAP, MADV_DONTNEED, OOM_REAP)
#: Operations that free page-table pages (``free_pgtables``).
FREES_TABLES: Final[tuple[str, ...]] = (EXIT_MMAP, MUNMAP)
#: Operations over the whole of guest RAM (their range is ignored).
WHOLE: Final[tuple[str, ...]] = (EXIT_MMAP,)


@dataclass(frozen=True)
class HostOp:
    """One host mm operation on guest RAM, over guest-physical ``[lo, hi)`` (``HVA - offset``)."""

    kind: str
    lo: int = 0
    hi: int = 0

    def __post_init__(self) -> None:
        if self.kind not in HOST_KINDS:
            raise ValueError(f"host op {self.kind!r}: expected one of {HOST_KINDS}")


@dataclass(frozen=True)
class HostQuantities:
    """What one host operation does, per scenario (each an ``(S,)`` int64 array)."""

    pte_zap: I64  # present PTEs cleared by zap_pte_range (order-0 pages and split THP pages)
    pmd_zap: I64  # PMD-mapped THPs cleared by zap_huge_pmd
    hugetlb_zap: I64  # hugetlb pages cleared by __unmap_hugepage_range
    pmd_split: I64  # THPs split at an unaligned edge (__split_huge_pmd)
    page_free: I64  # order-0 folios freed
    folio_free: I64  # THP folios freed (order 9 with 4 KiB pages)
    hugetlb_free: I64  # hugetlb folios returned to the pool
    table_free: I64  # page-table pages freed (free_pgtables, and zap_deposited_table per THP)
    srcu_sync: I64  # synchronize_srcu() waits: 2 at exit (__mmu_notifier_release, and
    #                 mmu_notifier_unregister from kvm_destroy_vm), none on the other paths
    tlb_flush_mm: I64  # flush_tlb_mm() calls: TLBI ASIDE1IS, the whole ASID (`tlb_flushes`)
    tlb_flush_range: I64  # __flush_tlb_range() calls that invalidate by address
    tlbi_va: I64  # TLBI VALE1IS / VAE1IS, one per stride, inside those calls
    tlbi_range: I64  # TLBI RVALE1IS / RVAE1IS (FEAT_TLBIRANGE), inside those calls


QUANTITY_NAMES: Final[tuple[str, ...]] = tuple(f.name for f in fields(HostQuantities))
#: The kernel event of each quantity (vocabulary.EVENTS).
EVENT_OF: Final[dict[str, str]] = {
    "pte_zap": "host_pte_zap",
    "pmd_zap": "host_pmd_zap",
    "hugetlb_zap": "host_hugetlb_zap",
    "pmd_split": "host_pmd_split",
    "page_free": "host_page_free",
    "folio_free": "host_folio_free",
    "hugetlb_free": "host_hugetlb_free",
    "table_free": "host_table_free",
    "srcu_sync": "srcu_sync",
    "tlb_flush_mm": "host_tlb_flush_mm",
    "tlb_flush_range": "host_tlb_flush_range",
    "tlbi_va": "host_tlbi_va",
    "tlbi_range": "host_tlbi_range",
}


@dataclass(frozen=True)
class HostExtents:
    """Host-present guest RAM of a batch: the non-device extents, ``(S, E)``, by page kind."""

    lo: I64
    hi: I64
    leaf: I64  # 0: padding or device
    huge: npt.NDArray[np.bool_]  # backed by hugetlbfs pages (a PUD block always is)
    run: I64  # the run of adjacent memslots holding the extent (`layout.vmas`)

    @classmethod
    def of(cls, lo: I64, hi: I64, leaf: I64, dev: np.ndarray, huge: np.ndarray | None = None,
           run: I64 | None = None) -> HostExtents:
        leaf = np.where(dev, 0, leaf)
        h = np.zeros(leaf.shape, dtype=bool) if huge is None else np.asarray(huge, dtype=bool)
        r = np.zeros(leaf.shape, dtype=np.int64) if run is None else run
        return cls(lo, hi, leaf, h & (leaf > 0), r)

    def kind(self, g: Geometry) -> I64:
        """Per extent: 0 none, 1 order-0 pages, 2 THP, 3 hugetlb (PMD or PUD size)."""
        pmd = g.leaf_sizes[1]
        huge = self.huge | (self.leaf > pmd)
        return np.select([self.leaf == 0, self.leaf == g.granule, huge], [0, 1, 3], 2).astype(np.int64)


def _clip(e: HostExtents, leaf: int, lo: I64, hi: I64, sel: npt.NDArray[np.bool_] | None = None
          ) -> tuple[I64, I64]:
    """The parts of the extents of ``leaf`` size (and ``sel``) inside ``[lo, hi)`` (empty: lo >= hi)."""
    sel = (e.leaf == leaf) if sel is None else (sel & (e.leaf == leaf))
    c_lo = np.maximum(e.lo, lo[:, None])
    c_hi = np.minimum(e.hi, hi[:, None])
    return np.where(sel, c_lo, 0), np.where(sel & (c_hi > c_lo), c_hi, 0)


def _blocks(e: HostExtents, leaf: int, lo: I64, hi: I64, sel: npt.NDArray[np.bool_] | None = None
            ) -> tuple[I64, I64]:
    """Blocks of ``leaf`` size wholly inside ``[lo, hi)``, and blocks it cuts (at most 2 each)."""
    c_lo, c_hi = _clip(e, leaf, lo, hi, sel)
    full = np.maximum(floor_div(c_hi, leaf) - ceil_div(c_lo, leaf), 0).sum(axis=-1)
    touched = np.where(c_hi > c_lo, ceil_div(c_hi, leaf) - floor_div(c_lo, leaf), 0).sum(axis=-1)
    return full, touched - full


def _bytes(e: HostExtents, leaf: int, lo: I64, hi: I64, sel: npt.NDArray[np.bool_] | None = None) -> I64:
    c_lo, c_hi = _clip(e, leaf, lo, hi, sel)
    return np.maximum(c_hi - c_lo, 0).sum(axis=-1)  # type: ignore[no-any-return]


def table_spans(g: Geometry) -> tuple[int, ...]:
    """The spans of the host's page-table pages below its top level, smallest first: a PTE table
    covers one PMD block, a PMD table one PUD entry, and so on (4 levels with 4 and 16 KiB
    pages, 3 with 64 KiB: the arm64 host's 48-bit VA, ``CONFIG_ARM64_VA_BITS_48``)."""
    below_top = 3 if g.granule in (4096, 16384) else 2
    e = g.granule // 8
    return tuple(g.granule * e ** (k + 1) for k in range(below_top))


def _regions_with(e: HostExtents, leaves: Sequence[int], span: int, lo: I64, hi: I64,
                  extra: tuple[I64, I64] | None = None) -> I64:
    """``span``-aligned regions wholly inside ``[lo, hi)`` holding an extent of one of ``leaves``
    (or a part of the ``extra`` intervals): the tables of that span a range frees."""
    sel = np.isin(e.leaf, np.array([x for x in leaves if x > 0], dtype=np.int64))
    r_lo, r_hi = to_units(np.where(sel, e.lo, 0), np.where(sel, e.hi, 0), span)
    if extra is not None:
        x_lo, x_hi = to_units(extra[0], extra[1], span)
        r_lo, r_hi = np.concatenate([r_lo, x_lo], axis=-1), np.concatenate([r_hi, x_hi], axis=-1)
    w_lo = ceil_div(lo, span)[:, None]
    w_hi = floor_div(hi, span)[:, None]
    c_lo, c_hi = np.maximum(r_lo, w_lo), np.minimum(r_hi, w_hi)
    empty = c_hi <= c_lo
    return union_length(np.where(empty, -1, c_lo), np.where(empty, -1, c_hi))


def host_quantities(
    g: Geometry,
    e: HostExtents,
    kinds: Sequence[str],
    lo: I64,
    hi: I64,
    *,
    tlbi_range: bool = False,
) -> list[HostQuantities]:
    """The quantities of each host operation of a sequence, in order.

    ``kinds[k]`` runs over ``[lo[:, k], hi[:, k])`` (whole guest RAM for `WHOLE` kinds).  A
    sequence is one operation, or one range operation followed by ``exit_mmap`` (the VMM unmaps
    part of guest RAM, then exits): what the first removed is gone when the exit runs.
    ``tlbi_range``: the CPU has FEAT_TLBIRANGE (the host's TLB flushes, `tlb_flushes`).
    """
    if not kinds:
        return []
    if len(kinds) > 2 or (len(kinds) == 2 and (kinds[1] != EXIT_MMAP or kinds[0] in WHOLE)):
        raise ValueError(f"host sequence {kinds}: one op, or a range op then exit_mmap")
    page, pmd = g.granule, g.leaf_sizes[1]
    n_s = e.lo.shape[0]
    everything_lo = np.zeros(n_s, dtype=np.int64)
    everything_hi = np.full(n_s, np.iinfo(np.int64).max // 4, dtype=np.int64)
    spans = table_spans(g)
    zero = np.zeros(n_s, dtype=np.int64)
    kind_of = e.kind(g)
    thp = kind_of == 2
    huge = kind_of == 3

    def one(kind: str, r_lo: I64, r_hi: I64) -> tuple[HostQuantities, I64, I64]:
        pages = _bytes(e, page, r_lo, r_hi) // page
        thp_full, thp_cut = _blocks(e, pmd, r_lo, r_hi, thp)
        cut_pages = (_bytes(e, pmd, r_lo, r_hi, thp) - thp_full * pmd) // page
        # hugetlb pages wholly inside (munmap and MADV_DONTNEED refuse a range that cuts one:
        # the CLI refuses it first); the OOM reaper skips hugetlb VMAs (__oom_reap_task_mm)
        huge_full = zero
        if kind != OOM_REAP:
            for leaf in g.leaf_sizes[1:]:
                huge_full = huge_full + _blocks(e, leaf, r_lo, r_hi, huge)[0]
        tables = zero
        if kind in FREES_TABLES:
            tables = _tables(r_lo, r_hi, None)
        q = HostQuantities(
            pte_zap=pages + cut_pages,
            pmd_zap=thp_full,
            hugetlb_zap=huge_full,
            pmd_split=thp_cut,
            page_free=pages,
            folio_free=thp_full,
            hugetlb_free=huge_full,
            table_free=tables + thp_full,  # + the PTE table deposited with each THP
            srcu_sync=np.full(n_s, 2 if kind == EXIT_MMAP else 0, dtype=np.int64),
            tlb_flush_mm=zero, tlb_flush_range=zero, tlbi_va=zero, tlbi_range=zero,
        )
        return q, thp_cut, cut_pages

    def _tables(r_lo: I64, r_hi: I64, split: tuple[I64, I64] | None) -> I64:
        # a PTE table per PMD region holding pages (or a split THP); a PMD table per PUD region
        # holding pages or PMD-mapped pages (THP or hugetlb); a PUD table per region of its span
        # holding anything
        t = _regions_with(e, (page,), spans[0], r_lo, r_hi, split)
        if len(spans) > 1:
            t = t + _regions_with(e, (page, pmd), spans[1], r_lo, r_hi, split)
        if len(spans) > 2:
            t = t + _regions_with(e, g.leaf_sizes, spans[2], r_lo, r_hi, split)
        return t

    if len(kinds) == 1:
        kind = kinds[0]
        r_lo, r_hi = (everything_lo, everything_hi) if kind in WHOLE else (lo[:, 0], hi[:, 0])
        q = one(kind, r_lo, r_hi)[0]
        return [_with_flushes(g, e, kind, r_lo, r_hi, q, q.table_free - q.pmd_zap, tlbi_range)]
    # a range op, then exit_mmap over what is left
    first, cut, cut_pages = one(kinds[0], lo[:, 0], hi[:, 0])
    whole, _, _ = one(EXIT_MMAP, everything_lo, everything_hi)
    # the THPs the first op split: their PMD regions now hold a PTE table (the deposited one);
    # exit zaps their remaining pages per PTE and frees each folio when its last page goes
    split_lo, split_hi = _split_blocks(e, pmd, lo[:, 0], hi[:, 0], thp)
    all_tables = _tables(everything_lo, everything_hi, (split_lo, split_hi))
    first_tables = first.table_free - first.pmd_zap
    exit_q = HostQuantities(
        pte_zap=(whole.page_free - first.page_free) + (cut * (pmd // page) - cut_pages),
        pmd_zap=whole.pmd_zap - first.pmd_zap - cut,
        hugetlb_zap=whole.hugetlb_zap - first.hugetlb_zap,
        pmd_split=zero,
        page_free=whole.page_free - first.page_free,
        folio_free=whole.folio_free - first.folio_free,
        hugetlb_free=whole.hugetlb_free - first.hugetlb_free,
        table_free=(all_tables - first_tables) + (whole.pmd_zap - first.pmd_zap - cut),
        srcu_sync=whole.srcu_sync,
        tlb_flush_mm=zero, tlb_flush_range=zero, tlbi_va=zero, tlbi_range=zero,
    )
    first = _with_flushes(g, e, kinds[0], lo[:, 0], hi[:, 0], first, first_tables, tlbi_range)
    exit_q = _with_flushes(g, e, EXIT_MMAP, everything_lo, everything_hi, exit_q,
                           all_tables - first_tables, tlbi_range)
    return [first, exit_q]


def _split_blocks(e: HostExtents, pmd: int, lo: I64, hi: I64, thp: npt.NDArray[np.bool_]
                  ) -> tuple[I64, I64]:
    """The (at most two) THP blocks ``[lo, hi)`` cuts, as intervals ``(S, 2)`` (empty: -1)."""
    out_lo = np.full((lo.shape[0], 2), -1, dtype=np.int64)
    out_hi = np.full((lo.shape[0], 2), -1, dtype=np.int64)
    for k, edge in enumerate((lo, hi)):
        block = floor_div(edge, pmd) * pmd
        unaligned = (edge % pmd) != 0
        inside = (thp & (e.lo <= block[:, None]) & (block[:, None] < e.hi)).any(axis=-1)
        # the range must reach into the block from the edge's side (a non-empty range)
        hit = unaligned & inside & (hi > lo)
        out_lo[:, k] = np.where(hit, block, -1)
        out_hi[:, k] = np.where(hit, block + pmd, -1)
    same = (out_lo[:, 0] == out_lo[:, 1]) & (out_lo[:, 0] >= 0)
    out_lo[:, 1] = np.where(same, -1, out_lo[:, 1])
    out_hi[:, 1] = np.where(same, -1, out_hi[:, 1])
    return out_lo, out_hi


# --- The host's TLB flushes (docs/model.md §14.2) -------------------------------------------
#
# The policy is mm's (mm/mmu_gather.c, include/asm-generic/tlb.h) and arm64's
# (arch/arm64/include/asm/tlb.h, tlbflush.h), modelled at v6.6 for every KVM variant:
#
# * every zapped entry (a PTE, a THP's PMD, a hugetlb page) takes one slot of the mmu_gather
#   and widens its range (``__tlb_adjust_range``); when the last slot fills
#   (``__tlb_remove_page_size`` -> ``tlb_next_batch`` refuses a 20th batch page) the zap forces
#   ``tlb_flush_mmu``: one flush of the range gathered since the last one;
# * ``tlb_end_vma`` flushes what is gathered at the end of each VMA (not in a full-mm gather);
# * each page-table page ``free_pgtables`` frees goes to ``tlb_remove_table``; a full table
#   batch (``tlb_table_flush`` -> ``tlb_table_invalidate``) and ``tlb_finish_mmu`` flush what is
#   gathered (the tables' own addresses, ``pte_free_tlb`` & co: one page each);
# * ``tlb_flush`` (arm64): a full-mm gather (exit_mmap) flushes only after freeing tables, and
#   then the whole ASID (``flush_tlb_mm``); otherwise ``__flush_tlb_range`` with the stride of
#   the smallest level cleared (``tlb_get_unmap_size``: a page, a PMD block, a PUD block; the
#   span of the table freed for table batches);
# * ``__flush_tlb_range``: ``flush_tlb_mm`` when the range reaches ``MAX_TLBI_OPS`` strides
#   without FEAT_TLBIRANGE or ``MAX_TLBI_RANGE_PAGES`` pages with it; otherwise one TLBI per
#   stride, or (FEAT_TLBIRANGE) one TLBI per odd page and one range TLBI per non-zero 5-bit
#   digit of ``pages >> 1`` (``__flush_tlb_range_op``: scale 0 upwards, ``__TLBI_RANGE_NUM``);
# * a THP split (``__split_huge_pmd_locked`` -> ``pmdp_invalidate`` -> ``flush_tlb_range``)
#   flushes its 2 MiB with a page stride: ``flush_tlb_mm`` without FEAT_TLBIRANGE, one range
#   TLBI with it.
#
# MADV_DONTNEED and the OOM reaper gather per VMA (``madvise_walk_vmas``,
# ``__oom_reap_task_mm``); munmap (``unmap_region``) and exit_mmap gather once for all.

#: ``MMU_GATHER_BUNDLE`` (include/asm-generic/tlb.h): the gather's on-stack batch.
MMU_GATHER_BUNDLE: Final = 8
#: ``MAX_GATHER_BATCH_COUNT = 10000UL / MAX_GATHER_BATCH`` (include/asm-generic/tlb.h).
GATHER_SLOTS_LIMIT: Final = 10_000
#: ``MAX_TLBI_RANGE_PAGES = __TLBI_RANGE_PAGES(31, 3)`` (arch/arm64/include/asm/tlbflush.h).
MAX_TLBI_RANGE_PAGES: Final = 32 << 16


def gather_capacity(granule: int) -> int:
    """Entries an mmu_gather holds before a zap must flush (v6.6): ``MMU_GATHER_BUNDLE`` +
    ``MAX_GATHER_BATCH_COUNT`` × ``MAX_GATHER_BATCH``, where ``MAX_GATHER_BATCH`` =
    (PAGE_SIZE − sizeof(struct mmu_gather_batch): 16) / sizeof(void *) (mm/mmu_gather.c,
    include/asm-generic/tlb.h): 9,698 with 4 KiB pages.  (v6.9 reserves one slot per batch for
    a folio's page count, "mm/mmu_gather: add __tlb_remove_folio_pages()": 9,678.)"""
    per_batch = (granule - 16) // 8
    return MMU_GATHER_BUNDLE + (GATHER_SLOTS_LIMIT // per_batch) * per_batch


def table_batch(granule: int) -> int:
    """``MAX_TABLE_BATCH`` = (PAGE_SIZE − sizeof(struct mmu_table_batch): an rcu_head and the
    count, 24) / sizeof(void *) (include/asm-generic/tlb.h): 509 with 4 KiB pages."""
    return (granule - 24) // 8


def range_flush(lo: int, hi: int, stride: int, granule: int, tlbi_range: bool
                ) -> tuple[int, int, int, int]:
    """One arm64 ``__flush_tlb_range`` of ``[lo, hi)`` with ``stride``: (flush_tlb_mm calls,
    by-address calls, TLBI VA ops, range TLBI ops), in closed form."""
    return _rounded_flush(-(-hi // stride) * stride - (lo - lo % stride), stride, granule, tlbi_range)


@functools.lru_cache(maxsize=4096)
def _rounded_flush(span: int, stride: int, granule: int, tlbi_range: bool) -> tuple[int, int, int, int]:
    pages = span // granule
    if (not tlbi_range and span >= (granule // 8) * stride) or pages >= MAX_TLBI_RANGE_PAGES:
        return 1, 0, 0, 0
    if not tlbi_range:
        return 0, 1, span // stride, 0
    digits, rest = 0, pages >> 1  # an odd count first takes one page by a plain TLBI
    while rest:
        digits += (rest & 31) != 0
        rest >>= 5
    return 0, 1, pages & 1, digits


#: One run of entries in gather order: (vma, first address, count, step, bytes each, stride).
_Run = tuple[int, int, int, int, int, int]


def _flush_ranges(runs: Sequence[_Run], cap: int, gather_per_vma: bool
                  ) -> list[tuple[int, int, int, int]]:
    """The flushes a gather of ``cap`` slots makes over ``runs``: (lo, hi, stride, times).

    A flush when the slots fill and at each VMA change (``tlb_end_vma``) and at the end; runs
    of whole gathers inside one run are taken ``cap`` at a time (all alike)."""
    out: list[tuple[int, int, int, int]] = []
    pos = 0
    cur: tuple[int, int, int] | None = None
    vma: int | None = None
    for v, start, n, step, size, stride in runs:
        if n <= 0:
            continue
        if vma is not None and v != vma:
            if cur is not None:
                out.append((*cur, 1))
                cur = None
            if gather_per_vma:
                pos = 0
        vma = v
        i = 0
        while i < n:
            if cur is None and pos % cap == 0 and n - i >= cap:
                k = (n - i) // cap
                first = start + i * step
                out.append((first, first + (cap - 1) * step + size, stride, k))
                i += k * cap
                pos += k * cap
                continue
            take = min(cap - pos % cap, n - i)
            a, z = start + i * step, start + (i + take - 1) * step + size
            cur = (a, z, stride) if cur is None else (min(cur[0], a), max(cur[1], z), min(cur[2], stride))
            i += take
            pos += take
            if pos % cap == 0:
                out.append((*cur, 1))
                cur = None
    if cur is not None:
        out.append((*cur, 1))
    return out


def host_vmas(kind: Sequence[int], run: Sequence[int], leaf: Sequence[int]) -> list[int]:
    """The host VMA of each extent, numbered in address order: each run of adjacent memslots is
    one anonymous VMA, save that hugetlbfs memory is a VMA of its own (one per run of adjacent
    hugetlb extents of one page size); extents of no kind (padding, device) get -1."""
    out: list[int] = []
    key: tuple[int, int] | None = None
    n = -1
    for k, r, lf in zip(kind, run, leaf, strict=True):
        if k == 0:
            out.append(-1)
            continue
        this = (r, lf if k == 3 else 0)
        if this != key:
            n += 1
            key = this
        out.append(n)
    return out


def _zap_runs(g: Geometry, lo: list[int], hi: list[int], leaf: list[int], kind: list[int],
              vma: list[int], r_lo: int, r_hi: int, skip_hugetlb: bool) -> list[_Run]:
    """The entries a zap of ``[r_lo, r_hi)`` clears, in address order, as runs."""
    page, pmd = g.granule, g.leaf_sizes[1]
    out: list[_Run] = []
    for a0, z0, lf, k, v in zip(lo, hi, leaf, kind, vma, strict=True):
        a, z = max(a0, r_lo), min(z0, r_hi)
        if k == 0 or a >= z:
            continue
        if k == 1:
            out.append((v, a, (z - a) // page, page, page, page))
        elif k == 2:
            fb, fe = -(-a // pmd) * pmd, z - z % pmd
            if fb > fe:  # inside one THP, split: its pages in the range per PTE
                out.append((v, a, (z - a) // page, page, page, page))
                continue
            out.append((v, a, (fb - a) // page, page, page, page))
            out.append((v, fb, (fe - fb) // pmd, pmd, pmd, pmd))
            out.append((v, fe, (z - fe) // page, page, page, page))
        elif not skip_hugetlb:
            fb, fe = -(-a // lf) * lf, z - z % lf
            out.append((v, fb, max(fe - fb, 0) // lf, lf, lf, lf))
    return out


def _table_runs(g: Geometry, lo: list[int], hi: list[int], leaf: list[int], r_lo: int, r_hi: int,
                split: Sequence[tuple[int, int]]) -> list[_Run]:
    """The page-table pages ``free_pgtables`` frees over ``[r_lo, r_hi)``, in the order
    ``free_pgd_range`` frees them (each table after every table below it: by the end of the
    region it maps, lower levels first), as runs; each widens the gather by one page."""
    spans = table_spans(g)
    below: list[tuple[int, ...]] = [(g.granule,), (g.granule, g.leaf_sizes[1]), tuple(g.leaf_sizes)]
    pieces: list[tuple[int, int, int, int]] = []  # (end, level, first unit, count)
    for lvl, span in enumerate(spans):
        ivs = sorted([(a // span, -(-z // span)) for a, z, lf in zip(lo, hi, leaf, strict=True)
                      if lf in below[lvl]] + [(a // span, -(-z // span)) for a, z in split])
        w_lo, w_hi = -(-r_lo // span), r_hi // span
        merged: list[list[int]] = []
        for a, z in ivs:
            a, z = max(a, w_lo), min(z, w_hi)
            if a >= z:
                continue
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], z)
            else:
                merged.append([a, z])
        per_up = spans[lvl + 1] // span if lvl + 1 < len(spans) else 0
        for a, z in merged:
            while a < z:  # PTE tables cut at each PMD region (its PMD table comes in between);
                # tables above them one by one (the tables below each come in between)
                b = min(z, (a // per_up + 1) * per_up) if per_up and lvl == 0 else a + 1 if lvl else z
                pieces.append((b * span, lvl, a, b - a))
                a = b
    pieces.sort(key=lambda p: (p[0], p[1]))
    return [(0, u * spans[lvl], n, spans[lvl], g.granule, spans[lvl]) for _, lvl, u, n in pieces]


def _with_flushes(g: Geometry, e: HostExtents, kind: str, lo: I64, hi: I64, q: HostQuantities,
                  gathered_tables: I64, tlbi_range: bool) -> HostQuantities:
    """``q`` with its TLB flushes: per scenario, a closed form over runs of entries (one per
    extent and cut edge) and of page-table pages (one per region of the next level up)."""
    n_s = e.lo.shape[0]
    out = np.zeros((4, n_s), dtype=np.int64)
    kinds = e.kind(g)
    pmd = g.leaf_sizes[1]
    cap_t = table_batch(g.granule)
    for s in range(n_s):
        if kind == EXIT_MMAP:
            # a full-mm gather: no flush while zapping; flush_tlb_mm per table batch and at the end
            out[0, s] = -(-int(gathered_tables[s]) // cap_t)
            continue
        lo_s, hi_s, leaf_s = e.lo[s].tolist(), e.hi[s].tolist(), e.leaf[s].tolist()
        kind_s = kinds[s].tolist()
        vma = host_vmas(kind_s, e.run[s].tolist(), leaf_s)
        r_lo, r_hi = int(lo[s]), int(hi[s])
        flushes = _flush_ranges(_zap_runs(g, lo_s, hi_s, leaf_s, kind_s, vma, r_lo, r_hi,
                                          kind == OOM_REAP),
                                gather_capacity(g.granule), kind in (MADV_DONTNEED, OOM_REAP))
        splits = [(b, b + pmd) for b in {r_lo - r_lo % pmd, r_hi - r_hi % pmd}
                  if r_lo < r_hi and any(k == 2 and a <= b < z for k, a, z in zip(kind_s, lo_s, hi_s, strict=True))
                  and ((b == r_lo - r_lo % pmd and r_lo % pmd) or (b == r_hi - r_hi % pmd and r_hi % pmd))]
        flushes += [(a, z, g.granule, 1) for a, z in splits]
        if kind in FREES_TABLES:
            tables = _table_runs(g, [a for a, k in zip(lo_s, kind_s, strict=True) if k],
                                 [z for z, k in zip(hi_s, kind_s, strict=True) if k],
                                 [lf for lf, k in zip(leaf_s, kind_s, strict=True) if k], r_lo, r_hi, ())
            flushes += _flush_ranges(tables, cap_t, False)
        tot = [0, 0, 0, 0]
        for a, z, stride, times in flushes:
            for k, n in enumerate(range_flush(a, z, stride, g.granule, tlbi_range)):
                tot[k] += times * n
        out[:, s] = tot
    return HostQuantities(**{**{f.name: getattr(q, f.name) for f in fields(q)},
                             "tlb_flush_mm": out[0], "tlb_flush_range": out[1],
                             "tlbi_va": out[2], "tlbi_range": out[3]})
