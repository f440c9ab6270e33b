"""A literal simulation of the host mm tearing guest RAM down: the oracle for `core.host`.

It builds the host's page tables for the guest RAM (one dict per level, keyed by the aligned
address each table covers), then runs each operation the way the kernel's code reads, entry by
entry: ``zap_pte_range`` over the present PTEs of each PTE table, ``zap_huge_pmd`` for a THP
wholly inside the range, ``__split_huge_pmd`` then the PTE zap for a THP the range cuts,
``__unmap_hugepage_range`` per hugetlb page, and ``free_pgtables`` over the tables wholly
inside ``[floor, ceiling)``.  A folio is freed when its last mapping goes (a refcount per
folio).  No closed form, no numpy: small layouts only (tests).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from s2teardown.core.geometry import Geometry
from s2teardown.core.host import EXIT_MMAP, FREES_TABLES, WHOLE, HostOp, table_spans
from s2teardown.core.layout import Layout


@dataclass
class _Folio:
    kind: str  # "page" | "thp" | "hugetlb"
    mapped: int  # base pages still mapped


@dataclass
class HostMM:
    """The host's mapping of guest RAM: PTEs, PMD-mapped THPs, hugetlb pages, and tables."""

    g: Geometry
    ptes: dict[int, _Folio] = field(default_factory=dict)  # page address -> its folio
    thp: dict[int, _Folio] = field(default_factory=dict)  # PMD-mapped THP address -> folio
    hugetlb: dict[int, _Folio] = field(default_factory=dict)
    deposited: set[int] = field(default_factory=set)  # THPs with a deposited PTE table
    tables: list[set[int]] = field(default_factory=list)  # per level (PTE tables first): regions
    counts: dict[str, int] = field(default_factory=dict)

    def bump(self, name: str, n: int = 1) -> None:
        if n:
            self.counts[name] = self.counts.get(name, 0) + n


def build_host(layout: Layout) -> HostMM:
    """The host mapping of every non-device extent, as faulted in by the guest's accesses."""
    g = layout.geometry
    mm = HostMM(g, tables=[set() for _ in table_spans(g)])
    spans = table_spans(g)
    pmd = g.leaf_sizes[1]
    for ext in layout.extents:
        if ext.device:
            continue
        addr = ext.lo
        while addr < ext.hi:
            if ext.leaf == g.granule:
                mm.ptes[addr] = _Folio("page", 1)
                levels = range(len(spans))  # a PTE table and everything above it
            elif ext.leaf == pmd:
                mm.thp[addr] = _Folio("thp", pmd // g.granule)
                mm.deposited.add(addr)  # pgtable_trans_huge_deposit at the THP fault
                levels = range(1, len(spans))
            else:
                mm.hugetlb[addr] = _Folio("hugetlb", ext.leaf // g.granule)
                levels = range(2, len(spans))
            for lvl in levels:
                mm.tables[lvl].add(addr - addr % spans[lvl])
            addr += ext.leaf
    return mm


def _zap_page(mm: HostMM, addr: int) -> None:
    folio = mm.ptes.pop(addr)
    mm.bump("pte_zap")
    folio.mapped -= 1
    if folio.mapped == 0:
        mm.bump("page_free" if folio.kind == "page" else "folio_free")


def _split(mm: HostMM, block: int) -> None:
    """__split_huge_pmd: the PMD becomes a PTE table (the deposited one) mapping the same folio."""
    folio = mm.thp.pop(block)
    mm.deposited.discard(block)
    mm.bump("pmd_split")
    for k in range(mm.g.leaf_sizes[1] // mm.g.granule):
        mm.ptes[block + k * mm.g.granule] = folio
    mm.tables[0].add(block)


def run(mm: HostMM, op: HostOp) -> dict[str, int]:
    """Run one operation on ``mm``; the counts it made."""
    g = mm.g
    pmd = g.leaf_sizes[1]
    mm.counts = {}
    lo, hi = (0, 1 << 62) if op.kind in WHOLE else (op.lo, op.hi)
    # munmap's __split_vma, MADV_DONTNEED's zap_pmd_range: a THP the range cuts is split first
    for edge in (lo, hi):
        block = edge - edge % pmd
        if edge % pmd and block in mm.thp and lo < block + pmd and block < hi:
            _split(mm, block)
    for addr in sorted(mm.thp):
        if lo <= addr and addr + pmd <= hi:
            folio = mm.thp.pop(addr)
            mm.bump("pmd_zap")
            if addr in mm.deposited:  # zap_deposited_table
                mm.deposited.discard(addr)
                mm.bump("table_free")
            mm.bump("folio_free")
            folio.mapped = 0
    for addr in sorted(mm.ptes):
        if lo <= addr < hi:
            _zap_page(mm, addr)
    for addr in sorted(mm.hugetlb):
        size = next(e for e in g.leaf_sizes if e > pmd)
        if lo <= addr and addr + size <= hi:
            mm.hugetlb.pop(addr)
            mm.bump("hugetlb_zap")
            mm.bump("hugetlb_free")
    if op.kind == EXIT_MMAP:
        # exit_mmap -> mmu_notifier_release -> __mmu_notifier_release -> synchronize_srcu, and
        # later kvm_destroy_vm -> mmu_notifier_unregister -> synchronize_srcu
        mm.bump("srcu_sync", 2)
    if op.kind in FREES_TABLES:
        for lvl, span in enumerate(table_spans(g)):
            gone = {r for r in mm.tables[lvl] if lo <= r and r + span <= hi}
            mm.tables[lvl] -= gone
            mm.bump("table_free", len(gone))
    return dict(mm.counts)


def host_counts(layout: Layout, ops: Sequence[HostOp]) -> list[dict[str, int]]:
    """The counts of each operation of ``ops``, run in order on the host mapping of ``layout``."""
    mm = build_host(layout)
    out = []
    for op in ops:
        out.append(run(mm, op))
        if op.kind == EXIT_MMAP:
            break
    return out
