"""The host side (core.host) against hand-worked counts and the literal host simulation
(oracle.host) on random layouts: exact, per operation (docs/model.md §14)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s2teardown.core import host as core_host
from s2teardown.core.counts import batch_from_layout
from s2teardown.core.geometry import Geometry
from s2teardown.core.host import (
    EXIT_MMAP,
    MADV_DONTNEED,
    MUNMAP,
    OOM_REAP,
    QUANTITY_NAMES,
    HostExtents,
    HostOp,
    host_quantities,
)
from s2teardown.core.layout import Extent, Layout, Memslot
from s2teardown.oracle import host as oracle_host
from s2teardown.oracle.host import host_counts

from .strategies import EXAMPLES, layouts, ranges

K, M, G = 1 << 10, 1 << 20, 1 << 30


def model(layout: Layout, ops: list[HostOp], tlbi_range: bool = False) -> list[dict[str, int]]:
    b = batch_from_layout(layout, (), ops)
    e = HostExtents.of(b.ext_lo, b.ext_hi, b.ext_leaf, b.ext_dev, b.ext_huge, b.ext_run)
    assert b.host_lo is not None and b.host_hi is not None
    out = host_quantities(layout.geometry, e, [op.kind for op in ops], b.host_lo, b.host_hi,
                          tlbi_range=tlbi_range)
    return [{f: int(getattr(q, f)[0]) for f in QUANTITY_NAMES if int(getattr(q, f)[0])} for q in out]


def _layout(*extents: tuple[int, int, int], slot: tuple[int, int] = (G, 5 * G)) -> Layout:
    g = Geometry(4096, 40)
    lay = Layout(g, (Memslot(*slot),), tuple(Extent(lo, hi, leaf, 0) for lo, hi, leaf in extents))
    lay.validate()
    return lay


def test_exit_of_one_gib_of_4k_pages_by_hand() -> None:
    lay = _layout((G, 2 * G, 4 * K))
    # 262,144 PTEs zapped and freed; free_pgtables: 512 PTE tables + 1 PMD table + 1 PUD table
    # a full-mm gather flushes no range; flush_tlb_mm once per 509 tables (tlb_table_flush) and
    # once in tlb_finish_mmu: 514 = 509 + 5 -> 2
    want = {"pte_zap": 262_144, "page_free": 262_144, "table_free": 512 + 1 + 1, "srcu_sync": 2,
            "tlb_flush_mm": 2}
    assert model(lay, [HostOp(EXIT_MMAP)]) == [want] == host_counts(lay, [HostOp(EXIT_MMAP)])


def test_exit_of_one_gib_of_thp_by_hand() -> None:
    lay = _layout((G, 2 * G, 2 * M))
    # 512 zap_huge_pmd, 512 order-9 folios freed, 512 deposited PTE tables + PMD + PUD tables
    # the deposited tables go by pte_free, not the gather: 2 tables gathered, one flush_tlb_mm
    want = {"pmd_zap": 512, "folio_free": 512, "table_free": 512 + 1 + 1, "srcu_sync": 2,
            "tlb_flush_mm": 1}
    assert model(lay, [HostOp(EXIT_MMAP)]) == [want] == host_counts(lay, [HostOp(EXIT_MMAP)])


def test_munmap_cutting_two_thps_then_exit_by_hand() -> None:
    lay = _layout((G, G + 8 * M, 2 * M))  # 4 THPs
    ops = [HostOp(MUNMAP, G + 1 * M, G + 5 * M), HostOp(EXIT_MMAP)]
    # munmap [1 MiB, 5 MiB): THP 0 and THP 2 cut (split; 256 + 256 pages zapped per PTE, folios
    # kept), THP 1 [2, 4) MiB whole: zapped, freed, its deposited table freed; no table region
    # (2 MiB, 1 GiB, 512 GiB) lies wholly inside the range
    # TLB: each split flushes its 2 MiB with a page stride: 512 strides = MAX_TLBI_OPS ->
    # flush_tlb_mm (2); the zap's 513 entries (< 9,698) flush at tlb_end_vma over
    # [1 MiB, 5 MiB) with a page stride: 1,024 strides -> flush_tlb_mm (3); no table batch
    first = {"pte_zap": 512, "pmd_split": 2, "pmd_zap": 1, "folio_free": 1, "table_free": 1,
             "tlb_flush_mm": 3}
    # exit: 256 + 256 remaining pages of the split THPs per PTE (their folios freed), THP 3
    # whole (+ its deposited table); tables: 2 PTE tables of the split THPs + PMD + PUD tables
    # (4 gathered: one flush_tlb_mm)
    then = {"pte_zap": 512, "pmd_zap": 1, "folio_free": 3, "table_free": 1 + 2 + 1 + 1, "srcu_sync": 2,
            "tlb_flush_mm": 1}
    assert model(lay, ops) == [first, then] == host_counts(lay, ops)
    # FEAT_TLBIRANGE: a split is 512 pages, 512 >> 1 = 256 = 8·32: one range TLBI; the zap's
    # 1,024 pages, 1,024 >> 1 = 512 = 16·32: one; exit's full-mm flush is flush_tlb_mm still
    first_r = {**{k: v for k, v in first.items() if k != "tlb_flush_mm"}, "tlb_flush_range": 3,
               "tlbi_range": 3}
    assert model(lay, ops, True) == [first_r, then] == host_counts(lay, ops, True)


def test_dontneed_keeps_page_tables_and_oom_reap_zaps_everything() -> None:
    lay = _layout((G, G + 4 * M, 4 * K), (G + 4 * M, G + 8 * M, 2 * M))
    ops = [HostOp(MADV_DONTNEED, G, G + 8 * M)]
    # one VMA, 1,026 entries: one flush at its end over 8 MiB, page stride: 2,048 strides ->
    # flush_tlb_mm
    want = {"pte_zap": 1024, "page_free": 1024, "pmd_zap": 2, "folio_free": 2, "table_free": 2,
            "tlb_flush_mm": 1}
    assert model(lay, ops) == [want] == host_counts(lay, ops)
    ops = [HostOp(OOM_REAP, G, G + 8 * M)]
    assert model(lay, ops) == [want] == host_counts(lay, ops)


def test_device_extents_are_not_the_hosts() -> None:
    g = Geometry(4096, 40)
    lay = Layout(g, (Memslot(G, 2 * G),), (Extent(G, G + 64 * K, 4 * K, 0, True),))
    assert model(lay, [HostOp(EXIT_MMAP)]) == [{"srcu_sync": 2}] == host_counts(lay, [HostOp(EXIT_MMAP)])


@st.composite
def host_ops(draw: st.DrawFn, lay: Layout) -> list[HostOp]:
    kind = draw(st.sampled_from([EXIT_MMAP, OOM_REAP, MUNMAP, MADV_DONTNEED, "munmap-then-exit"]))
    if kind == EXIT_MMAP:
        return [HostOp(kind)]
    lo, hi = draw(ranges(lay))
    if kind == "munmap-then-exit":
        return [HostOp(MUNMAP, lo, hi), HostOp(EXIT_MMAP)]
    return [HostOp(kind, lo, hi)]


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.data())
def test_closed_form_equals_the_literal_host(data: st.DataObject) -> None:
    lay = data.draw(layouts())
    ops = data.draw(host_ops(lay))
    tlbi_range = data.draw(st.booleans())
    assert model(lay, ops, tlbi_range) == host_counts(lay, ops, tlbi_range)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.data())
def test_closed_form_equals_the_literal_host_with_small_batches(data: st.DataObject) -> None:
    """The same with a gather of 8 + k × 5 slots and table batches of 1..4: random layouts then
    fill gathers and table batches often, across VMAs, cut THPs and hugetlb pages."""
    k, tables = data.draw(st.integers(0, 3)), data.draw(st.integers(1, 4))
    lay = data.draw(layouts())
    ops = data.draw(host_ops(lay))
    tlbi_range = data.draw(st.booleans())
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(oracle_host, "gather_batch", lambda granule: 5)
        mp.setattr(oracle_host, "gather_batch_count", lambda granule: k)
        mp.setattr(oracle_host, "table_batch", lambda granule: tables)
        mp.setattr(core_host, "gather_capacity", lambda granule: 8 + 5 * k)
        mp.setattr(core_host, "table_batch", lambda granule: tables)
        assert model(lay, ops, tlbi_range) == host_counts(lay, ops, tlbi_range)


def test_refuses_sequences_it_does_not_model() -> None:
    lay = _layout((G, 2 * G, 2 * M))
    with pytest.raises(ValueError):
        model(lay, [HostOp(EXIT_MMAP), HostOp(MUNMAP, G, 2 * G)])


def test_munmap_flushes_per_full_gather_and_per_table_batch_by_hand() -> None:
    lay = _layout((G, 3 * G, 4 * K))
    ops = [HostOp(MUNMAP, G, 3 * G)]
    # 524,288 PTEs in one VMA: a flush per 9,698 (8 + 19 × 510) entries: 54 full gathers
    # (523,692) and 596 left at tlb_end_vma; each spans >= 512 page strides -> flush_tlb_mm: 55.
    # free_pgtables frees 1,024 PTE tables + the PMD tables of [1G, 2G) and [2G, 3G) = 1,026, in
    # free_pgd_range's order (512 PTE tables, PMD table at 1G, 512 PTE tables, PMD table at 2G):
    #   batch 1 (509 PTE tables): [1G, 1G + 509 × 2M), stride 2M: 509 strides -> 509 TLBIs;
    #   batch 2 (3 PTE, PMD at 1G, 505 PTE): [1G, 2G + 505 × 2M): 1,017 strides -> flush_tlb_mm;
    #   tlb_finish_mmu (7 PTE, PMD at 2G): [2G, 3G): 512 strides -> flush_tlb_mm.
    want = {"pte_zap": 524_288, "page_free": 524_288, "table_free": 1026,
            "tlb_flush_mm": 55 + 2, "tlb_flush_range": 1, "tlbi_va": 509}
    assert model(lay, ops) == [want] == host_counts(lay, ops)
    # FEAT_TLBIRANGE: range TLBIs = non-zero base-32 digits of pages >> 1 (pages even throughout):
    #   9,698 pages: 4,849 = 4·1024 + 23·32 + 17 -> 3 (× 54); 596: 298 = 9·32 + 10 -> 2;
    #   batch 1: 509 × 512 pages: 130,304 = 3·32768 + 31·1024 + 8·32 -> 3;
    #   batch 2: 1,017 × 512 pages: 260,352 = 7·32768 + 30·1024 + 8·32 -> 3;
    #   finish: 262,144 pages: 131,072 = 4·32768 -> 1.   54 × 3 + 2 + 3 + 3 + 1 = 171.
    want_r = {"pte_zap": 524_288, "page_free": 524_288, "table_free": 1026,
              "tlb_flush_range": 55 + 3, "tlbi_range": 171}
    assert model(lay, ops, True) == [want_r] == host_counts(lay, ops, True)


def test_hugetlb_2m_by_hand() -> None:
    g = Geometry(4096, 40)
    lay = Layout(g, (Memslot(G, 5 * G),), (Extent(G, G + 8 * M, 2 * M, 0, hugetlb=True),))
    # exit: 4 hugetlb pages zapped and back to the pool, no deposited table, no PTE table: the
    # PMD and PUD tables (2 gathered: one flush_tlb_mm)
    want = {"hugetlb_zap": 4, "hugetlb_free": 4, "table_free": 2, "srcu_sync": 2, "tlb_flush_mm": 1}
    assert model(lay, [HostOp(EXIT_MMAP)]) == [want] == host_counts(lay, [HostOp(EXIT_MMAP)])
    # munmap of the 4 pages: one flush at tlb_end_vma, [1G, 1G + 8M) with a PMD stride: 4
    # strides -> 4 TLBIs (FEAT_TLBIRANGE: 2,048 pages, 1,024 = 1·1024 -> one range TLBI)
    ops = [HostOp(MUNMAP, G, G + 8 * M)]
    want = {"hugetlb_zap": 4, "hugetlb_free": 4, "tlb_flush_range": 1, "tlbi_va": 4}
    assert model(lay, ops) == [want] == host_counts(lay, ops)
    want_r = {"hugetlb_zap": 4, "hugetlb_free": 4, "tlb_flush_range": 1, "tlbi_range": 1}
    assert model(lay, ops, True) == [want_r] == host_counts(lay, ops, True)
    # the OOM reaper skips hugetlb VMAs
    ops = [HostOp(OOM_REAP, G, G + 8 * M)]
    assert model(lay, ops) == [{}] == host_counts(lay, ops)


def test_dontneed_gathers_per_vma_by_hand() -> None:
    g = Geometry(4096, 40)
    lay = Layout(g, (Memslot(G, 5 * G),), (Extent(G, G + 2 * M, 4 * K, 0),
                                            Extent(G + 2 * M, G + 6 * M, 2 * M, 0, hugetlb=True)))
    ops = [HostOp(MADV_DONTNEED, G, G + 6 * M)]
    # the anonymous VMA: 512 PTEs, flushed at its end over 2 MiB, page stride: 512 strides ->
    # flush_tlb_mm; the hugetlbfs VMA (its own gather): 2 pages, PMD stride: 2 TLBIs
    want = {"pte_zap": 512, "page_free": 512, "hugetlb_zap": 2, "hugetlb_free": 2,
            "tlb_flush_mm": 1, "tlb_flush_range": 1, "tlbi_va": 2}
    assert model(lay, ops) == [want] == host_counts(lay, ops)
