"""A literal simulation of the host mm tearing guest RAM down: the oracle for `core.host`.

It builds the host's page tables for the guest RAM (one dict per level, keyed by the aligned
address each table covers), then runs each operation the way the kernel's code reads, entry by
entry: ``zap_pte_range`` over the present PTEs of each PTE table, ``zap_huge_pmd`` for a THP
wholly inside the range, ``__split_huge_pmd`` then the PTE zap for a THP the range cuts,
``__unmap_hugepage_range`` per hugetlb page, and ``free_pgtables`` over the tables wholly
inside ``[floor, ceiling)``, walked as ``free_pgd_range`` walks them.  A folio is freed when its
last mapping goes (a refcount per folio).  Every entry zapped and every table freed goes through
a literal ``mmu_gather`` (its batch pages filled slot by slot, its range widened, flushed when
the last batch fills, at each VMA's end, per table batch and at the finish) and each flush runs
arm64's ``__flush_tlb_range`` loop instruction by instruction.  No closed form, no numpy:
small layouts only (tests).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from s2teardown.core.geometry import Geometry
from s2teardown.core.host import (
    EXIT_MMAP,
    FREES_TABLES,
    MADV_DONTNEED,
    OOM_REAP,
    WHOLE,
    HostOp,
    table_spans,
)
from s2teardown.core.layout import Layout, vmas


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
    hugetlb: dict[int, tuple[_Folio, int]] = field(default_factory=dict)  # address -> (folio, size)
    deposited: set[int] = field(default_factory=set)  # THPs with a deposited PTE table
    tables: list[set[int]] = field(default_factory=list)  # per level (PTE tables first): regions
    vma: list[tuple[int, int, str]] = field(default_factory=list)  # VMAs: [first, last entry), kind
    counts: dict[str, int] = field(default_factory=dict)

    def bump(self, name: str, n: int = 1) -> None:
        if n:
            self.counts[name] = self.counts.get(name, 0) + n

    def vma_of(self, addr: int) -> int:
        return next(i for i, (lo, hi, _) in enumerate(self.vma) if lo <= addr < hi)


def build_host(layout: Layout) -> HostMM:
    """The host mapping of every non-device extent, as faulted in by the guest's accesses.

    VMAs: each run of adjacent memslots is one anonymous VMA, cut around each run of hugetlb
    extents of one page size (no other memory between them), a hugetlbfs VMA of its own."""
    g = layout.geometry
    mm = HostMM(g, tables=[set() for _ in table_spans(g)])
    spans = table_spans(g)
    pmd = g.leaf_sizes[1]
    for run_lo, run_hi in vmas(layout):
        for ext in layout.extents:  # the host entries of each VMA lie between its first and last
            if ext.device or not run_lo <= ext.lo < run_hi:
                continue
            what = f"hugetlb-{ext.leaf}" if ext.hugetlb or ext.leaf > pmd else "anon"
            if mm.vma and mm.vma[-1][2] == what and run_lo <= mm.vma[-1][0]:
                mm.vma[-1] = (mm.vma[-1][0], ext.hi, what)
            else:
                mm.vma.append((ext.lo, ext.hi, what))
    for ext in layout.extents:
        if ext.device:
            continue
        addr = ext.lo
        while addr < ext.hi:
            if ext.leaf == g.granule:
                mm.ptes[addr] = _Folio("page", 1)
                levels = range(len(spans))  # a PTE table and everything above it
            elif ext.leaf == pmd and not ext.hugetlb:
                mm.thp[addr] = _Folio("thp", pmd // g.granule)
                mm.deposited.add(addr)  # pgtable_trans_huge_deposit at the THP fault
                levels = range(1, len(spans))
            else:  # hugetlb_fault -> huge_pte_alloc: a PMD (2 MiB) or PUD (1 GiB) entry
                mm.hugetlb[addr] = (_Folio("hugetlb", ext.leaf // g.granule), ext.leaf)
                levels = range(1 if ext.leaf == pmd else 2, len(spans))
            for lvl in levels:
                mm.tables[lvl].add(addr - addr % spans[lvl])
            addr += ext.leaf
    return mm


def gather_batch(granule: int) -> int:
    """``MAX_GATHER_BATCH``: slots of one batch page, (PAGE_SIZE − 16) / sizeof(void *)."""
    return (granule - 16) // 8


def gather_batch_count(granule: int) -> int:
    """``MAX_GATHER_BATCH_COUNT``: batch pages a gather may allocate, 10,000 / MAX_GATHER_BATCH."""
    return 10_000 // gather_batch(granule)


def table_batch(granule: int) -> int:
    """``MAX_TABLE_BATCH``: tables of one table batch, (PAGE_SIZE − 24) / sizeof(void *)."""
    return (granule - 24) // 8


@dataclass
class _Gather:
    """A literal ``struct mmu_gather`` (v6.6): the on-stack bundle, batch pages allocated up to
    ``MAX_GATHER_BATCH_COUNT``, the range and the cleared-level flags, the table batch."""

    mm: HostMM
    fullmm: bool
    tlbi_range: bool
    batches: list[list[int]] = field(default_factory=list)  # [nr, max] per batch, local first
    active: int = 0
    start: int = 1 << 62
    end: int = 0
    cleared: set[int] = field(default_factory=set)  # sizes cleared: pages, PMDs, PUDs, P4Ds
    freed_tables: bool = False
    table_nr: int | None = None

    def __post_init__(self) -> None:
        self.batches = [[0, 8]]  # MMU_GATHER_BUNDLE

    def _adjust(self, addr: int, size: int, level_size: int) -> None:
        self.start, self.end = min(self.start, addr), max(self.end, addr + size)
        self.cleared.add(level_size)

    def remove_entry(self, addr: int, size: int) -> bool:
        """tlb_remove_tlb_entry & co, then __tlb_remove_page_size: True when the gather is full."""
        self._adjust(addr, size, size)
        b = self.batches[self.active]
        b[0] += 1
        if b[0] == b[1]:
            if self.active + 1 < len(self.batches):
                self.active += 1
            elif len(self.batches) - 1 == gather_batch_count(self.mm.g.granule):
                return True
            else:
                self.batches.append([0, gather_batch(self.mm.g.granule)])
                self.active += 1
        return False

    def flush_tlbonly(self) -> None:
        if not self.cleared and not self.freed_tables:
            return
        if self.fullmm:
            if self.freed_tables:
                self.mm.bump("tlb_flush_mm")
        else:
            stride = min(self.cleared)  # tlb_get_unmap_size: the smallest level cleared
            _flush_tlb_range(self.mm, self.start, self.end, stride, self.tlbi_range)
        self.start, self.end = 1 << 62, 0
        self.cleared = set()
        self.freed_tables = False

    def flush_mmu(self) -> None:
        self.flush_tlbonly()
        self.table_flush()
        for b in self.batches:
            b[0] = 0
        self.active = 0

    def remove_table(self, addr: int, level: int) -> None:
        """pte_free_tlb / pmd_free_tlb / pud_free_tlb -> tlb_remove_table."""
        spans = table_spans(self.mm.g)
        self._adjust(addr, self.mm.g.granule, spans[level])
        self.freed_tables = True
        self.table_nr = (self.table_nr or 0) + 1
        if self.table_nr == table_batch(self.mm.g.granule):
            self.table_flush()

    def table_flush(self) -> None:
        if self.table_nr is not None:
            self.flush_tlbonly()  # tlb_table_invalidate
            self.table_nr = None

    def end_vma(self) -> None:
        if not self.fullmm:
            self.flush_tlbonly()


def _flush_tlb_range(mm: HostMM, start: int, end: int, stride: int, tlbi_range: bool) -> None:
    """arm64 __flush_tlb_range (v6.6), literally: the loop of __flush_tlb_range_op."""
    page = mm.g.granule
    start, end = start - start % stride, -(-end // stride) * stride
    pages = (end - start) // page
    if (not tlbi_range and end - start >= (page // 8) * stride) or pages >= (31 + 1) << (5 * 3 + 1):
        mm.bump("tlb_flush_mm")
        return
    mm.bump("tlb_flush_range")
    scale = 0
    while pages > 0:
        if not tlbi_range or pages % 2 == 1:
            mm.bump("tlbi_va")
            pages -= stride // page
            continue
        num = ((pages >> (5 * scale + 1)) & 31) - 1
        if num >= 0:
            mm.bump("tlbi_range")
            pages -= (num + 1) << (5 * scale + 1)
        scale += 1


def _zap_page(mm: HostMM, addr: int) -> None:
    folio = mm.ptes.pop(addr)
    mm.bump("pte_zap")
    folio.mapped -= 1
    if folio.mapped == 0:
        mm.bump("page_free" if folio.kind == "page" else "folio_free")


def _split(mm: HostMM, block: int, tlbi_range: bool) -> None:
    """__split_huge_pmd: the PMD becomes a PTE table (the deposited one) mapping the same folio;
    pmdp_invalidate flushes the block (flush_tlb_range: a page stride)."""
    folio = mm.thp.pop(block)
    mm.deposited.discard(block)
    mm.bump("pmd_split")
    _flush_tlb_range(mm, block, block + mm.g.leaf_sizes[1], mm.g.granule, tlbi_range)
    for k in range(mm.g.leaf_sizes[1] // mm.g.granule):
        mm.ptes[block + k * mm.g.granule] = folio
    mm.tables[0].add(block)


def run(mm: HostMM, op: HostOp, tlbi_range: bool = False) -> dict[str, int]:
    """Run one operation on ``mm``; the counts it made."""
    g = mm.g
    pmd = g.leaf_sizes[1]
    mm.counts = {}
    lo, hi = (0, 1 << 62) if op.kind in WHOLE else (op.lo, op.hi)
    # munmap's __split_vma, MADV_DONTNEED's zap_pmd_range: a THP the range cuts is split first
    for edge in (lo, hi):
        block = edge - edge % pmd
        if edge % pmd and block in mm.thp and lo < block + pmd and block < hi:
            _split(mm, block, tlbi_range)
    # every entry in the range, in address order, VMA by VMA (the OOM reaper skips hugetlb VMAs)
    entries: list[tuple[int, str, int]] = []
    entries += [(a, "thp", pmd) for a in mm.thp if lo <= a and a + pmd <= hi]
    entries += [(a, "pte", g.granule) for a in mm.ptes if lo <= a < hi]
    if op.kind != OOM_REAP:
        entries += [(a, "hugetlb", size) for a, (_, size) in mm.hugetlb.items() if lo <= a and a + size <= hi]
    entries.sort()
    tlb = _Gather(mm, fullmm=op.kind == EXIT_MMAP, tlbi_range=tlbi_range)
    vma: int | None = None
    for addr, what, size in entries:
        v = mm.vma_of(addr)
        if vma is not None and v != vma:
            tlb.end_vma()
            if op.kind in (MADV_DONTNEED, OOM_REAP):  # a gather per VMA
                tlb.flush_mmu()
                tlb = _Gather(mm, fullmm=False, tlbi_range=tlbi_range)
        vma = v
        if what == "thp":
            folio = mm.thp.pop(addr)
            mm.bump("pmd_zap")
            if addr in mm.deposited:  # zap_deposited_table: pte_free, not through the gather
                mm.deposited.discard(addr)
                mm.bump("table_free")
            mm.bump("folio_free")
            folio.mapped = 0
        elif what == "pte":
            _zap_page(mm, addr)
        else:
            mm.hugetlb.pop(addr)
            mm.bump("hugetlb_zap")
            mm.bump("hugetlb_free")
        if tlb.remove_entry(addr, size):
            tlb.flush_mmu()
    if vma is not None:
        tlb.end_vma()
    if op.kind == EXIT_MMAP:
        # exit_mmap -> mmu_notifier_release -> __mmu_notifier_release -> synchronize_srcu, and
        # later kvm_destroy_vm -> mmu_notifier_unregister -> synchronize_srcu
        mm.bump("srcu_sync", 2)
    if op.kind in FREES_TABLES:
        _free_pgtables(mm, tlb, lo, hi)
    tlb.flush_mmu()  # tlb_finish_mmu
    return dict(mm.counts)


def _free_pgtables(mm: HostMM, tlb: _Gather, lo: int, hi: int) -> None:
    """free_pgd_range, recursively: below each table first, then the table (wholly inside)."""
    spans = table_spans(mm.g)

    def walk(level: int, region_lo: int, region_hi: int) -> None:
        for r in sorted(x for x in mm.tables[level] if region_lo <= x < region_hi):
            if level > 0:
                walk(level - 1, r, r + spans[level])
            if lo <= r and r + spans[level] <= hi:
                mm.tables[level].discard(r)
                mm.bump("table_free")
                tlb.remove_table(r, level)

    top = len(spans) - 1
    walk(top, 0, 1 << 62)


def host_counts(layout: Layout, ops: Sequence[HostOp], tlbi_range: bool = False) -> list[dict[str, int]]:
    """The counts of each operation of ``ops``, run in order on the host mapping of ``layout``."""
    mm = build_host(layout)
    out = []
    for op in ops:
        out.append(run(mm, op, tlbi_range))
        if op.kind == EXIT_MMAP:
            break
    return out
