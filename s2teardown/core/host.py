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
extent is its Stage-2 leaf (a page: order-0 pages, a PMD block: a THP or a hugetlb page, a PUD
block: a 1 GiB hugetlb page), and the guest RAM is mapped at ``HVA = GPA + a multiple of the
largest span here``, so the host's tables cover the same aligned regions as the guest's
addresses.  ``munmap``'s neighbouring VMAs end at the range (the rest of guest RAM), so
``free_pgtables`` frees only tables wholly inside the range.

Everything is vectorised over scenarios: ranges are ``(S,)`` arrays, extents ``(S, E)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Final

import numpy as np

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
}


@dataclass(frozen=True)
class HostExtents:
    """Host-present guest RAM of a batch: the non-device extents, ``(S, E)``, by page kind."""

    lo: I64
    hi: I64
    leaf: I64  # 0: padding or device

    @classmethod
    def of(cls, lo: I64, hi: I64, leaf: I64, dev: np.ndarray) -> HostExtents:
        return cls(lo, hi, np.where(dev, 0, leaf))


def _clip(e: HostExtents, leaf: int, lo: I64, hi: I64) -> tuple[I64, I64]:
    """The parts of the extents of ``leaf`` size inside ``[lo, hi)`` (empty: lo >= hi)."""
    sel = e.leaf == leaf
    c_lo = np.maximum(e.lo, lo[:, None])
    c_hi = np.minimum(e.hi, hi[:, None])
    return np.where(sel, c_lo, 0), np.where(sel & (c_hi > c_lo), c_hi, 0)


def _blocks(e: HostExtents, leaf: int, lo: I64, hi: I64) -> tuple[I64, I64]:
    """Blocks of ``leaf`` size wholly inside ``[lo, hi)``, and blocks it cuts (at most 2 each)."""
    c_lo, c_hi = _clip(e, leaf, lo, hi)
    full = np.maximum(floor_div(c_hi, leaf) - ceil_div(c_lo, leaf), 0).sum(axis=-1)
    touched = np.where(c_hi > c_lo, ceil_div(c_hi, leaf) - floor_div(c_lo, leaf), 0).sum(axis=-1)
    return full, touched - full


def _bytes(e: HostExtents, leaf: int, lo: I64, hi: I64) -> I64:
    c_lo, c_hi = _clip(e, leaf, lo, hi)
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
) -> list[HostQuantities]:
    """The quantities of each host operation of a sequence, in order.

    ``kinds[k]`` runs over ``[lo[:, k], hi[:, k])`` (whole guest RAM for `WHOLE` kinds).  A
    sequence is one operation, or one range operation followed by ``exit_mmap`` (the VMM unmaps
    part of guest RAM, then exits): what the first removed is gone when the exit runs.
    """
    if not kinds:
        return []
    if len(kinds) > 2 or (len(kinds) == 2 and (kinds[1] != EXIT_MMAP or kinds[0] in WHOLE)):
        raise ValueError(f"host sequence {kinds}: one op, or a range op then exit_mmap")
    page, pmd = g.granule, g.leaf_sizes[1]
    pud = g.leaf_sizes[2] if len(g.leaf_sizes) > 2 else 0
    n_s = e.lo.shape[0]
    everything_lo = np.zeros(n_s, dtype=np.int64)
    everything_hi = np.full(n_s, np.iinfo(np.int64).max // 4, dtype=np.int64)
    spans = table_spans(g)
    zero = np.zeros(n_s, dtype=np.int64)

    def one(kind: str, r_lo: I64, r_hi: I64) -> tuple[HostQuantities, I64, I64]:
        pages = _bytes(e, page, r_lo, r_hi) // page
        thp_full, thp_cut = _blocks(e, pmd, r_lo, r_hi)
        cut_pages = (_bytes(e, pmd, r_lo, r_hi) - thp_full * pmd) // page
        huge_full = _blocks(e, pud, r_lo, r_hi)[0] if pud else zero
        # hugetlb ranges must be aligned to the huge page (munmap and madvise refuse others)
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
        )
        return q, thp_cut, cut_pages

    def _tables(r_lo: I64, r_hi: I64, split: tuple[I64, I64] | None) -> I64:
        # a PTE table per PMD region holding pages (or a split THP); a PMD table per PUD region
        # holding pages or THPs; a PUD table per region of its span holding anything
        t = _regions_with(e, (page,), spans[0], r_lo, r_hi, split)
        if len(spans) > 1:
            t = t + _regions_with(e, (page, pmd), spans[1], r_lo, r_hi, split)
        if len(spans) > 2:
            t = t + _regions_with(e, (page, pmd, pud), spans[2], r_lo, r_hi, split)
        return t

    if len(kinds) == 1:
        kind = kinds[0]
        r_lo, r_hi = (everything_lo, everything_hi) if kind in WHOLE else (lo[:, 0], hi[:, 0])
        return [one(kind, r_lo, r_hi)[0]]
    # a range op, then exit_mmap over what is left
    first, cut, cut_pages = one(kinds[0], lo[:, 0], hi[:, 0])
    whole, _, _ = one(EXIT_MMAP, everything_lo, everything_hi)
    # the THPs the first op split: their PMD regions now hold a PTE table (the deposited one);
    # exit zaps their remaining pages per PTE and frees each folio when its last page goes
    split_lo, split_hi = _split_blocks(e, pmd, lo[:, 0], hi[:, 0])
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
    )
    return [first, exit_q]


def _split_blocks(e: HostExtents, pmd: int, lo: I64, hi: I64) -> tuple[I64, I64]:
    """The (at most two) THP blocks ``[lo, hi)`` cuts, as intervals ``(S, 2)`` (empty: -1)."""
    out_lo = np.full((lo.shape[0], 2), -1, dtype=np.int64)
    out_hi = np.full((lo.shape[0], 2), -1, dtype=np.int64)
    for k, edge in enumerate((lo, hi)):
        block = floor_div(edge, pmd) * pmd
        unaligned = (edge % pmd) != 0
        inside = ((e.leaf == pmd) & (e.lo <= block[:, None]) & (block[:, None] < e.hi)).any(axis=-1)
        # the range must reach into the block from the edge's side (a non-empty range)
        hit = unaligned & inside & (hi > lo)
        out_lo[:, k] = np.where(hit, block, -1)
        out_hi[:, k] = np.where(hit, block + pmd, -1)
    same = (out_lo[:, 0] == out_lo[:, 1]) & (out_lo[:, 0] >= 0)
    out_lo[:, 1] = np.where(same, -1, out_lo[:, 1])
    out_hi[:, 1] = np.where(same, -1, out_hi[:, 1])
    return out_lo, out_hi
