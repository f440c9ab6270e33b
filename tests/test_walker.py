"""The literal walker (the oracle) against counts worked out by hand.

Every expected number below is a literal, derived in the comment next to it from the layout and
Linux v5.5 virt/kvm/arm/mmu.c (unmap_stage2_range and friends), never computed by the code under
test.  Units: K = 1024, M = 2**20, G = 2**30.  Facts used throughout (4 KiB granule):

* 40-bit IPA -> 3 levels: 1024 entry-level entries of 1 GiB in 2 concatenated pgd pages; a PMD
  table has 512 entries of 2 MiB; a PTE table has 512 entries of 4 KiB.
* 44-bit IPA -> 4 levels: 32 entry-level entries of 512 GiB in 1 pgd page.
* Lines per leaf at 64-byte lines: 4 KiB -> 64; 2 MiB -> 32,768; 1 GiB -> 16,777,216 (2**24).
"""

from __future__ import annotations

import random

import pytest

from s2teardown.core.behaviour import STOCK, Behaviour
from s2teardown.core.geometry import Geometry
from s2teardown.core.host import EXIT_MMAP, HostOp
from s2teardown.core.layout import (
    CLEAR,
    TEARDOWN,
    UNMAP,
    Extent,
    Invocation,
    Layout,
    Memslot,
    exit_event,
    munmap_event,
    vmas,
)
from s2teardown.core.vocabulary import EVENTS
from s2teardown.oracle.walker import (
    DEVICE_LEAF,
    LEAF,
    TablePage,
    WalkResult,
    build_table,
    run_event,
    walk,
)

K = 1 << 10
M = 1 << 20
G = 1 << 30

STOCK_ALL = {TEARDOWN: STOCK, UNMAP: STOCK, CLEAR: STOCK}
# P5 at teardown: no CMO, no per-entry TLBI (leaves and tables), one VMID-wide flush at the end.
P5 = Behaviour(cmo="none", leaf_tlbi="none", table_tlbi="none", final_flush="vmall")

G40 = Geometry(4096, 40)
G44 = Geometry(4096, 44)


def layout(geometry: Geometry, slots: list[tuple[int, int]], extents: list[tuple]) -> Layout:
    """extents: (lo, hi, leaf, slot[, device])."""
    return Layout(
        geometry,
        tuple(Memslot(lo, hi) for lo, hi in slots),
        tuple(Extent(*e) for e in extents),
    )


def as_dict(vector) -> dict[str, int]:
    return {name: int(vector[i]) for i, name in enumerate(EVENTS) if int(vector[i])}


def check(result: WalkResult, expected: dict[str, int]) -> None:
    """Totals equal ``expected`` exactly (unlisted events are 0) and the segments are sound."""
    assert as_dict(result.events) == expected
    # segments sum to the totals
    total = [0] * len(EVENTS)
    for seg in result.segments:
        assert len(seg) == len(EVENTS)
        for i, v in enumerate(seg):
            assert v >= 0
            total[i] += int(v)
    host = {i for i, e in enumerate(EVENTS) if e.startswith("host_") or e == "srcu_sync"}
    for i in host:
        assert total[i] == 0  # host frees happen outside mmu_lock: in no segment
    assert [t for i, t in enumerate(total) if i not in host] == [
        int(v) for i, v in enumerate(result.events) if i not in host
    ]
    # one segment per resched point plus one; each resched point ends its segment
    resched = EVENTS.index("resched_point")
    assert len(result.segments) == int(result.events[resched]) + 1
    assert [int(s[resched]) for s in result.segments] == [1] * (len(result.segments) - 1) + [0]
    assert result.lock_held_segments == (True,) * len(result.segments)


# --------------------------------------------------------------------------------------------
# Process exit (kvm_free_stage2_pgd over the whole IPA space)


def test_exit_64g_of_2m_blocks_stock() -> None:
    # 64 GiB at GPA 1 GiB, 40-bit IPA, all 2 MiB blocks: 64 GiB / 2 MiB = 32,768 PMD blocks in
    # 64 PMD tables (entry-level entries 1..64); no PTE tables.
    lay = layout(G40, [(1 * G, 65 * G)], [(1 * G, 65 * G, 2 * M, 0)])
    r = walk(lay, exit_event(lay), STOCK_ALL, fwb=False, cache_line=64)
    check(
        r,
        {
            "notifier_call": 1,
            "entry_visit": 33_792,  # 1024 entry-level entries + 64 tables * 512
            "block_clear": 32_768,
            "table_clear": 64,  # the 64 PMD tables, emptied
            "put_page": 32_832,  # 32,768 blocks + 64 table entries
            "tlb_flush_vmid_ipa": 32_832,  # 32,768 blocks + 64 PMD tables (docs/model.md §5)
            "dcache_flush_call": 32_768,  # one per block
            "dc_civac_line": 1_073_741_824,  # 32,768 * 32,768 = 2**30 (64 GiB / 64 B)
            "table_free": 66,  # 64 PMD tables + 2 pgd pages
            "resched_point": 1_023,  # 1024 entry-level entries - 1
        },
    )
    segs = [as_dict(s) for s in r.segments]
    assert len(segs) == 1024
    # entry 0 ([0, 1G), empty) opens the walk, after the notifier call
    assert segs[0] == {"notifier_call": 1, "entry_visit": 1, "resched_point": 1}
    # entries 1..64: one full PMD table each, the longest stretches under the lock
    full_gib = {
        "entry_visit": 513,  # 1 + 512
        "block_clear": 512,
        "table_clear": 1,
        "put_page": 513,
        "tlb_flush_vmid_ipa": 513,
        "dcache_flush_call": 512,
        "dc_civac_line": 16_777_216,  # 512 * 32,768
        "table_free": 1,
        "resched_point": 1,
    }
    assert all(s == full_gib for s in segs[1:65])
    # entries 65..1022: empty
    assert all(s == {"entry_visit": 1, "resched_point": 1} for s in segs[65:1023])
    # entry 1023 (empty), then the pgd pages, then the host frees after the notifier returns
    assert segs[1023] == {"entry_visit": 1, "table_free": 2}  # host frees: in no segment


def test_exit_1g_of_2m_blocks_small_version() -> None:
    # 1 GiB at GPA 1 GiB of 2 MiB blocks: 512 blocks in 1 PMD table.
    lay = layout(G40, [(1 * G, 2 * G)], [(1 * G, 2 * G, 2 * M, 0)])
    r = walk(lay, exit_event(lay), STOCK_ALL, fwb=False, cache_line=64)
    check(
        r,
        {
            "notifier_call": 1,
            "entry_visit": 1_536,  # 1024 + 512
            "block_clear": 512,
            "table_clear": 1,
            "put_page": 513,
            "tlb_flush_vmid_ipa": 513,  # 512 + 1
            "dcache_flush_call": 512,
            "dc_civac_line": 16_777_216,  # 512 * 32,768 = 2**24
            "table_free": 3,  # 1 PMD table + 2 pgd pages
            "resched_point": 1_023,
        },
    )


@pytest.mark.parametrize(
    ("cache_line", "lines"),
    [
        (64, 1_073_741_824),  # 64 GiB / 64 B = 2**30
        (128, 536_870_912),  # ThunderX: 64 GiB / 128 B = 2**29
    ],
)
def test_exit_64g_of_1g_blocks(cache_line: int, lines: int) -> None:
    # 64 PUD blocks of 1 GiB, held directly by entry-level entries 1..64 (3 levels: the
    # entry level is the PUD level); no tables below.
    lay = layout(G40, [(1 * G, 65 * G)], [(1 * G, 65 * G, 1 * G, 0)])
    r = walk(lay, exit_event(lay), STOCK_ALL, fwb=False, cache_line=cache_line)
    check(
        r,
        {
            "notifier_call": 1,
            "entry_visit": 1_024,
            "block_clear": 64,
            "put_page": 64,  # on the pgd pages
            "tlb_flush_vmid_ipa": 64,  # docs/model.md §5: 64 with 1 GiB blocks
            "dcache_flush_call": 64,
            "dc_civac_line": lines,
            "table_free": 2,  # only the pgd pages
            "resched_point": 1_023,
        },
    )


def test_exit_1g_of_4k_pages() -> None:
    # 1 GiB at GPA 1 GiB of 4 KiB pages: 262,144 PTEs in 512 PTE tables under 1 PMD table.
    # (64 GiB of 4 KiB pages would be 64 times this: 64 * 262,657 = 16,810,048 TLBI calls, the
    # docs/model.md §5 figure; 16.8 M PTEs is too slow for a unit test.)
    lay = layout(G40, [(1 * G, 2 * G)], [(1 * G, 2 * G, 4 * K, 0)])
    r = walk(lay, exit_event(lay), STOCK_ALL, fwb=False, cache_line=64)
    check(
        r,
        {
            "notifier_call": 1,
            "entry_visit": 263_680,  # 1024 + 512 (PMD table) + 512 * 512 (PTE tables)
            "pte_clear": 262_144,
            "table_clear": 513,  # 512 PTE tables + 1 PMD table
            "put_page": 262_657,  # 262,144 + 513
            "tlb_flush_vmid_ipa": 262_657,  # 262,144 + 512 + 1
            "dcache_flush_call": 262_144,
            "dc_civac_line": 16_777_216,  # 262,144 * 64 = 2**24 (1 GiB / 64 B)
            "table_free": 515,  # 513 tables + 2 pgd pages
            "resched_point": 1_023,
        },
    )
    # the whole 1 GiB is one stretch under the lock (docs/model.md §5 "longest stretch": 262,656 TLBI
    # calls per 1 GiB entry; here + 1 for the PMD table, which this entry also empties)
    longest = max(int(s[EVENTS.index("tlb_flush_vmid_ipa")]) for s in r.segments)
    assert longest == 262_657


def test_exit_four_levels() -> None:
    # 44-bit IPA, 4 levels: 32 entry-level entries of 512 GiB, 1 pgd page.
    # slot 0: [1G, 3G) of 2 MiB blocks -> entry 0 -> PUD table, PUD entries 1 and 2 -> 2 PMD
    #         tables of 512 blocks each.
    # slot 1: [512G, 513G) one 1 GiB block -> entry 1 -> PUD table, PUD entry 0 is the block.
    lay = layout(
        G44,
        [(1 * G, 3 * G), (512 * G, 513 * G)],
        [(1 * G, 3 * G, 2 * M, 0), (512 * G, 513 * G, 1 * G, 1)],
    )
    r = walk(lay, exit_event(lay), STOCK_ALL, fwb=False, cache_line=64)
    check(
        r,
        {
            "notifier_call": 1,
            # 32 + 512 (PUD table of entry 0) + 2 * 512 (PMD tables) + 512 (PUD table of entry 1)
            "entry_visit": 2_080,
            "block_clear": 1_025,  # 1024 PMD blocks + 1 PUD block
            "table_clear": 4,  # 2 PMD tables + 2 PUD tables
            "put_page": 1_029,  # 1025 + 4
            "tlb_flush_vmid_ipa": 1_029,
            "dcache_flush_call": 1_025,
            "dc_civac_line": 50_331_648,  # 1024 * 32,768 + 16,777,216
            "table_free": 5,  # 4 tables + 1 pgd page
            "resched_point": 31,  # 32 - 1
        },
    )


def test_exit_two_levels_16k_granule() -> None:
    # 16 KiB granule, 40-bit IPA -> 2 levels: entry level = PMD level, 32,768 entries of
    # 32 MiB in 16 pgd pages (32,768 * 8 B / 16 KiB); a PTE table has 2048 entries.
    # [1G, 1G+64M): two 32 MiB blocks held by entry-level entries 32 and 33;
    # [1G+64M, 1G+96M): 2048 pages of 16 KiB = one full PTE table under entry 34.
    g = Geometry(16384, 40)
    lay = layout(
        g,
        [(1 * G, 1 * G + 96 * M)],
        [(1 * G, 1 * G + 64 * M, 32 * M, 0), (1 * G + 64 * M, 1 * G + 96 * M, 16 * K, 0)],
    )
    r = walk(lay, exit_event(lay), STOCK_ALL, fwb=False, cache_line=64)
    check(
        r,
        {
            "notifier_call": 1,
            "entry_visit": 34_816,  # 32,768 + 2048
            "pte_clear": 2_048,
            "block_clear": 2,
            "table_clear": 1,  # the PTE table
            "put_page": 2_051,  # 2048 + 2 + 1
            "tlb_flush_vmid_ipa": 2_051,
            "dcache_flush_call": 2_050,
            # 2 * (32 MiB / 64 = 524,288) + 2048 * (16 KiB / 64 = 256) = 1,048,576 + 524,288
            "dc_civac_line": 1_572_864,
            "table_free": 17,  # 1 PTE table + 16 pgd pages
            "resched_point": 32_767,
        },
    )


def test_exit_device_ptes_get_no_cmo_and_no_host_free() -> None:
    # slot 0: [1G, 1G+2M) RAM, 512 pages -> PTE table A (PMD entry 0 of entry 1's PMD table)
    # slot 1: [1G+2M, 1G+2M+64K) device, 16 pages -> PTE table B (PMD entry 1)
    lay = layout(
        G40,
        [(1 * G, 1 * G + 2 * M), (1 * G + 2 * M, 1 * G + 2 * M + 64 * K)],
        [(1 * G, 1 * G + 2 * M, 4 * K, 0), (1 * G + 2 * M, 1 * G + 2 * M + 64 * K, 4 * K, 1, True)],
    )
    r = walk(lay, exit_event(lay), STOCK_ALL, fwb=False, cache_line=64)
    check(
        r,
        {
            "notifier_call": 1,
            "entry_visit": 2_560,  # 1024 + 512 (PMD) + 512 (table A) + 512 (table B)
            "pte_clear": 528,  # 512 + 16
            "table_clear": 3,  # tables A, B and the PMD table
            "put_page": 531,  # 528 + 3
            "tlb_flush_vmid_ipa": 531,  # device PTEs are still invalidated
            "dcache_flush_call": 512,  # RAM pages only
            "dc_civac_line": 32_768,  # 512 * 64
            "table_free": 5,  # 3 + 2 pgd pages
            "resched_point": 1_023,
        },
    )


def test_unmap_device_memslot_only() -> None:
    # Same layout; UNMAP exactly the device slot [1G+2M, 1G+2M+64K).
    lay = layout(
        G40,
        [(1 * G, 1 * G + 2 * M), (1 * G + 2 * M, 1 * G + 2 * M + 64 * K)],
        [(1 * G, 1 * G + 2 * M, 4 * K, 0), (1 * G + 2 * M, 1 * G + 2 * M + 64 * K, 4 * K, 1, True)],
    )
    event = (Invocation(UNMAP, 1 * G + 2 * M, 1 * G + 2 * M + 64 * K),)
    r = walk(lay, event, STOCK_ALL, fwb=False, cache_line=64)
    check(
        r,
        {
            "notifier_call": 1,
            "memslot_visit": 2,  # both slots examined, only slot 1 intersects
            "entry_visit": 18,  # entry 1 + PMD entry 1 + 16 PTEs
            "pte_clear": 16,
            "table_clear": 1,  # table B emptied; the PMD table still holds table A
            "put_page": 17,
            "tlb_flush_vmid_ipa": 17,
            "table_free": 1,
        },
    )


def test_fwb_removes_every_cmo() -> None:
    # The 64 GiB / 2 MiB exit with FEAT_S2FWB: __kvm_flush_dcache_pmd does nothing.
    lay = layout(G40, [(1 * G, 65 * G)], [(1 * G, 65 * G, 2 * M, 0)])
    r = walk(lay, exit_event(lay), STOCK_ALL, fwb=True, cache_line=64)
    check(
        r,
        {
            "notifier_call": 1,
            "entry_visit": 33_792,
            "block_clear": 32_768,
            "table_clear": 64,
            "put_page": 32_832,
            "tlb_flush_vmid_ipa": 32_832,  # TLBIs unchanged
            "table_free": 66,
            "resched_point": 1_023,
        },
    )


def test_p5_teardown_one_vmid_flush_and_nothing_per_entry() -> None:
    lay = layout(G40, [(1 * G, 65 * G)], [(1 * G, 65 * G, 2 * M, 0)])
    r = walk(lay, exit_event(lay), {TEARDOWN: P5}, fwb=False, cache_line=64)
    check(
        r,
        {
            "notifier_call": 1,
            "entry_visit": 33_792,  # walk unchanged
            "block_clear": 32_768,
            "table_clear": 64,
            "put_page": 32_832,
            "table_free": 66,  # frees unchanged
            "resched_point": 1_023,
            "flush_remote_tlbs": 1,  # the one kvm_flush_remote_tlbs
        },
    )
    # the final flush is still under the lock, in the last segment with the pgd free
    assert as_dict(r.segments[-1]) == {
        "entry_visit": 1,
        "flush_remote_tlbs": 1,
        "table_free": 2,
    }


# --------------------------------------------------------------------------------------------
# munmap / MMU_NOTIFY_CLEAR (handle_hva_to_gpa -> unmap_stage2_range per memslot)


def test_partial_unaligned_unmap_clears_whole_blocks() -> None:
    # [1G, 2G) of 2 MiB blocks; UNMAP [1G+1M, 1G+5M) touches PMD entries 0, 1, 2 (blocks
    # [1G, 1G+2M), [1G+2M, 1G+4M), [1G+4M, 1G+6M)), all cleared and cleaned whole.
    lay = layout(G40, [(1 * G, 2 * G)], [(1 * G, 2 * G, 2 * M, 0)])
    table = build_table(lay)
    event = (Invocation(UNMAP, 1 * G + 1 * M, 1 * G + 5 * M),)
    r = run_event(table, lay, event, STOCK_ALL, fwb=False, cache_line=64)
    check(
        r,
        {
            "notifier_call": 1,
            "memslot_visit": 1,
            "entry_visit": 4,  # entry 1 + 3 PMD entries
            "block_clear": 3,
            "put_page": 3,
            "tlb_flush_vmid_ipa": 3,
            "dcache_flush_call": 3,
            "dc_civac_line": 98_304,  # 3 * 32,768: whole blocks, not the 4 MiB asked for
        },
    )
    # the PMD table keeps 509 blocks (refcount 510) and is not freed
    assert table.leaf_count() == {1: 509}
    (pmd_table,) = table.pages()
    assert pmd_table.refcount == 510


def test_partly_covered_table_is_freed_when_emptied() -> None:
    # [1G, 1G+64K): 16 pages, the only entries of one PTE table, itself the only entry of the
    # PMD table under entry 1.  UNMAP [1G, 1G+64K) covers a 64 KiB slice of each table's span,
    # yet empties both, so both are unhooked and freed.
    lay = layout(G40, [(1 * G, 2 * G)], [(1 * G, 1 * G + 64 * K, 4 * K, 0)])
    table = build_table(lay)
    r = run_event(
        table, lay, (Invocation(UNMAP, 1 * G, 1 * G + 64 * K),), STOCK_ALL, fwb=False, cache_line=64
    )
    check(
        r,
        {
            "notifier_call": 1,
            "memslot_visit": 1,
            "entry_visit": 18,  # entry 1 + PMD entry 0 + 16 PTEs
            "pte_clear": 16,
            "table_clear": 2,  # PTE table, then PMD table
            "put_page": 18,  # 16 + 2
            "tlb_flush_vmid_ipa": 18,
            "dcache_flush_call": 16,
            "dc_civac_line": 1_024,  # 16 * 64
            "table_free": 2,  # never the pgd pages on a range unmap
        },
    )
    assert table.pages() == []
    assert [p.refcount for p in table.pgd] == [1, 1]
    assert not table.pgd_freed


def test_munmap_event_clear_then_unmap() -> None:
    # munmap [1G+1M, 1G+5M) of THP-backed [1G, 2G): both edges split a THP, so the event is
    # CLEAR [1G, 1G+2M), CLEAR [1G+4M, 1G+6M), UNMAP [1G+1M, 1G+5M).
    lay = layout(G40, [(1 * G, 2 * G)], [(1 * G, 2 * G, 2 * M, 0)])
    event = munmap_event(lay, 1 * G + 1 * M, 1 * G + 5 * M)
    assert [(i.kind, i.lo, i.hi) for i in event] == [
        (CLEAR, 1 * G, 1 * G + 2 * M),
        (CLEAR, 1 * G + 4 * M, 1 * G + 6 * M),
        (UNMAP, 1 * G + 1 * M, 1 * G + 5 * M),
    ]
    r = walk(lay, event, STOCK_ALL, fwb=False, cache_line=64)
    # CLEAR 1: entry 1 + PMD entry 0: 2 visits, block 0 cleared.
    # CLEAR 2: entry 1 + PMD entry 2: 2 visits, block 2 cleared.
    # UNMAP: entry 1 + PMD entries 0, 1, 2: 4 visits, only block 1 still there.
    check(
        r,
        {
            "notifier_call": 3,
            "memslot_visit": 3,  # 1 slot per invocation
            "entry_visit": 8,  # 2 + 2 + 4
            "block_clear": 3,
            "put_page": 3,
            "tlb_flush_vmid_ipa": 3,
            "dcache_flush_call": 3,
            "dc_civac_line": 98_304,  # 3 * 32,768
        },
    )


def test_munmap_edges_in_4k_pages_raise_clears() -> None:
    # The kernel validation's partial munmap (validation/kernel/cases.py PARTIAL_KIB) on 64 MiB
    # of 4 KiB pages at 1G: munmap [1G+1M+4K, 1G+5M+4K), 1,024 pages.  __split_vma at the lower
    # edge: unaligned, block [1G, 1G+2M) inside the VMA [1G, 1G+64M), host PMD table over
    # [1G, 2G) -> CLEAR; at the upper edge: block [1G+4M, 1G+6M) inside [1G+1M+4K, 1G+64M) ->
    # CLEAR.  __split_huge_pmd raises both before it finds PTE tables, not THPs.
    lay = layout(G40, [(G, G + 64 * M)], [(G, G + 64 * M, 4 * K, 0)])
    event = munmap_event(lay, G + M + 4 * K, G + 5 * M + 4 * K)
    assert [(i.kind, i.lo, i.hi) for i in event] == [
        (CLEAR, G, G + 2 * M),
        (CLEAR, G + 4 * M, G + 6 * M),
        (UNMAP, G + M + 4 * K, G + 5 * M + 4 * K),
    ]
    r = walk(lay, event, STOCK_ALL, fwb=False, cache_line=64)
    # CLEAR 1: entry 1 + PMD entry 0 + 512 PTEs = 514 visits, 512 PTEs, PTE table freed.
    # CLEAR 2: the same at PMD entry 2.  UNMAP: entry 1 + PMD entries 0, 1, 2 (0 and 2 empty now)
    # + 512 PTEs of entry 1 = 516 visits; block [1G+2M, 1G+4M): 512 PTEs, its table freed.
    # TLB flushes 3 x (512 + 1) = 1,539: the 1,536 pages flushed the kernels measured.
    check(
        r,
        {
            "notifier_call": 3,
            "memslot_visit": 3,
            "entry_visit": 1_544,  # 514 + 514 + 516
            "pte_clear": 1_536,
            "table_clear": 3,
            "put_page": 1_539,
            "tlb_flush_vmid_ipa": 1_539,
            "dcache_flush_call": 1_536,
            "dc_civac_line": 98_304,  # 1,536 x 64
            "table_free": 3,
        },
    )


@pytest.mark.parametrize(
    ("lo", "hi", "clears"),
    [
        # both edges in block [1G, 1G+2M), the lower unaligned: the VMA split at the upper edge
        # starts at 1G+8K, above the block's start: one CLEAR (the lower edge's)
        (G + 8 * K, G + 1 * M, [(G, G + 2 * M)]),
        # the lower edge aligned (no split test), the upper in the block starting at it
        (G + 2 * M, G + 3 * M, [(G + 2 * M, G + 4 * M)]),
        # both aligned: no CLEAR
        (G + 2 * M, G + 6 * M, []),
        # the range starts at the VMA's start: __split_vma only at the upper edge
        (G, G + 5 * M, [(G + 4 * M, G + 6 * M)]),
        # the upper edge's block [1G+6M, 1G+8M) straddles the VMA's end 1G+7M: no CLEAR there
        (G + 3 * M, G + 6 * M + 4 * K, [(G + 2 * M, G + 4 * M)]),
        # the range ends at the VMA's end: no split at the upper edge
        (G + 3 * M, G + 7 * M, [(G + 2 * M, G + 4 * M)]),
    ],
)
def test_munmap_edge_rules(lo: int, hi: int, clears: list[tuple[int, int]]) -> None:
    # one 7 MiB VMA of 4 KiB pages at 1G (memslot [1G, 1G+7M), fully mapped)
    lay = layout(G40, [(G, G + 7 * M)], [(G, G + 7 * M, 4 * K, 0)])
    event = munmap_event(lay, lo, hi)
    assert [(i.lo, i.hi) for i in event if i.kind == CLEAR] == clears
    assert event[-1] == Invocation(UNMAP, lo, hi)


def test_munmap_edges_of_two_vmas() -> None:
    # memslots [1G, 1G+3M) and [1G+4M, 1G+8M), not adjacent: two VMAs.  munmap
    # [1G+2M+4K, 1G+6M+4K): __split_vma of [1G, 1G+3M) at 1G+2M+4K, whose block [1G+2M, 1G+4M)
    # pokes out of that VMA: no CLEAR; __split_vma of [1G+4M, 1G+8M) at 1G+6M+4K, block
    # [1G+6M, 1G+8M) inside it: CLEAR.  (One VMA over both memslots would have raised two.)
    lay = layout(G40, [(G, G + 3 * M), (G + 4 * M, G + 8 * M)],
                 [(G, G + 3 * M, 4 * K, 0), (G + 4 * M, G + 8 * M, 4 * K, 1)])
    assert vmas(lay) == [(G, G + 3 * M), (G + 4 * M, G + 8 * M)]
    event = munmap_event(lay, G + 2 * M + 4 * K, G + 6 * M + 4 * K)
    assert [(i.kind, i.lo, i.hi) for i in event] == [
        (CLEAR, G + 6 * M, G + 8 * M),
        (UNMAP, G + 2 * M + 4 * K, G + 6 * M + 4 * K),
    ]
    # adjacent memslots are one VMA (a workload's guest RAM)
    assert vmas(layout(G40, [(G, 2 * G), (2 * G, 3 * G)], [])) == [(G, 3 * G)]


def test_munmap_edge_needs_a_host_pmd_table() -> None:
    # memslot [1G, 3G); munmap [2G+1M, 2G+5M), both edges unaligned, blocks inside the VMA.
    # Nothing mapped in [2G, 3G): no host PMD table there (split_huge_pmd_address stops at the
    # missing PUD entry), so no CLEAR; the UNMAP finds entry-level entry 2 empty: 1 visit.
    lay = layout(G40, [(G, 3 * G)], [(G, G + 4 * M, 4 * K, 0)])
    event = munmap_event(lay, 2 * G + M, 2 * G + 5 * M)
    assert event == (Invocation(UNMAP, 2 * G + M, 2 * G + 5 * M),)
    check(walk(lay, event, STOCK_ALL, fwb=False, cache_line=64),
          {"notifier_call": 1, "memslot_visit": 1, "entry_visit": 1})
    # One THP far away in [2G, 3G) gives the host a PMD table over it: both edges now raise a
    # CLEAR, though their blocks hold nothing.  CLEAR 1: entry 2 + PMD entry 0 (empty) = 2
    # visits; CLEAR 2: entry 2 + PMD entry 2 = 2; UNMAP: entry 2 + PMD entries 0..2 = 4.
    lay = layout(G40, [(G, 3 * G)], [(G, G + 4 * M, 4 * K, 0), (2 * G + 512 * M, 2 * G + 514 * M, 2 * M, 0)])
    event = munmap_event(lay, 2 * G + M, 2 * G + 5 * M)
    assert [(i.kind, i.lo, i.hi) for i in event] == [
        (CLEAR, 2 * G, 2 * G + 2 * M),
        (CLEAR, 2 * G + 4 * M, 2 * G + 6 * M),
        (UNMAP, 2 * G + M, 2 * G + 5 * M),
    ]
    check(walk(lay, event, STOCK_ALL, fwb=False, cache_line=64),
          {"notifier_call": 3, "memslot_visit": 3, "entry_visit": 8})


def test_two_memslots_range_spanning_both() -> None:
    # slot 0: [1G, 2G), slot 1: [2G, 4G), both full of 2 MiB blocks.
    # UNMAP [2G-4M, 3G+4M) (2 MiB-aligned: no THP split) intersects
    #   slot 0 in [2G-4M, 2G): entry 1, PMD entries 510, 511 -> 3 visits, 2 blocks
    #   slot 1 in [2G, 3G+4M): entry 2 whole (1 + 512 visits, 512 blocks, table emptied),
    #                          resched, entry 3 PMD entries 0, 1 (1 + 2 visits, 2 blocks)
    lay = layout(
        G40,
        [(1 * G, 2 * G), (2 * G, 4 * G)],
        [(1 * G, 2 * G, 2 * M, 0), (2 * G, 4 * G, 2 * M, 1)],
    )
    event = munmap_event(lay, 2 * G - 4 * M, 3 * G + 4 * M)
    assert event == (Invocation(UNMAP, 2 * G - 4 * M, 3 * G + 4 * M),)
    r = walk(lay, event, STOCK_ALL, fwb=False, cache_line=64, memslot_order="layout")
    check(
        r,
        {
            "notifier_call": 1,
            "memslot_visit": 2,
            "entry_visit": 519,  # 3 + 513 + 3
            "block_clear": 516,  # 2 + 512 + 2
            "table_clear": 1,  # entry 2's PMD table
            "put_page": 517,
            "tlb_flush_vmid_ipa": 517,
            "dcache_flush_call": 516,
            "dc_civac_line": 16_908_288,  # 516 * 32,768
            "table_free": 1,
            "resched_point": 1,  # between entries 2 and 3 of slot 1's pass
        },
    )
    # layout order: slot 0 first.  Both memslot visits happen before the resched point.
    assert [as_dict(s) for s in r.segments] == [
        {
            "notifier_call": 1,
            "memslot_visit": 2,
            "entry_visit": 516,  # 3 + 513
            "block_clear": 514,  # 2 + 512
            "table_clear": 1,
            "put_page": 515,
            "tlb_flush_vmid_ipa": 515,
            "dcache_flush_call": 514,
            "dc_civac_line": 16_842_752,  # 514 * 32,768
            "table_free": 1,
            "resched_point": 1,
        },
        {
            "entry_visit": 3,
            "block_clear": 2,
            "put_page": 2,
            "tlb_flush_vmid_ipa": 2,
            "dcache_flush_call": 2,
            "dc_civac_line": 65_536,  # 2 * 32,768
        },
    ]
    # v5.5's own memslot order (highest GPA first): slot 1's pass runs first, so slot 0's
    # visit and pass land after the resched point.  Same totals.
    rk = walk(lay, event, STOCK_ALL, fwb=False, cache_line=64, memslot_order="kernel")
    assert as_dict(rk.events) == as_dict(r.events)
    assert [as_dict(s) for s in rk.segments] == [
        {
            "notifier_call": 1,
            "memslot_visit": 1,
            "entry_visit": 513,
            "block_clear": 512,
            "table_clear": 1,
            "put_page": 513,
            "tlb_flush_vmid_ipa": 513,
            "dcache_flush_call": 512,
            "dc_civac_line": 16_777_216,  # 512 * 32,768
            "table_free": 1,
            "resched_point": 1,
        },
        {
            "memslot_visit": 1,
            "entry_visit": 6,  # 3 (rest of slot 1) + 3 (slot 0)
            "block_clear": 4,
            "put_page": 4,
            "tlb_flush_vmid_ipa": 4,
            "dcache_flush_call": 4,
            "dc_civac_line": 131_072,  # 4 * 32,768
        },
    ]


def test_unmap_four_levels_frees_pud_table() -> None:
    # The 4-level layout; UNMAP [512G, 513G) = slot 1: entry 1, PUD entry 0 (the 1 GiB block).
    # The PUD table is then empty: clear_stage2_pgd_entry unhooks and frees it.
    lay = layout(
        G44,
        [(1 * G, 3 * G), (512 * G, 513 * G)],
        [(1 * G, 3 * G, 2 * M, 0), (512 * G, 513 * G, 1 * G, 1)],
    )
    r = walk(lay, (Invocation(UNMAP, 512 * G, 513 * G),), STOCK_ALL, fwb=False, cache_line=64)
    check(
        r,
        {
            "notifier_call": 1,
            "memslot_visit": 2,
            "entry_visit": 2,
            "block_clear": 1,
            "table_clear": 1,  # the PUD table
            "put_page": 2,
            "tlb_flush_vmid_ipa": 2,
            "dcache_flush_call": 1,
            "dc_civac_line": 16_777_216,  # 2**24
            "table_free": 1,
        },
    )


@pytest.mark.parametrize(
    ("behaviour", "blockable", "resched"),
    [
        (STOCK, True, 1),
        (STOCK, False, 1),  # v5.5 reschedules even for a non-blockable notifier (OOM reaper)
        (Behaviour(resched_when="blockable"), True, 1),
        (Behaviour(resched_when="blockable"), False, 0),  # v5.9 behaviour
        (Behaviour(resched="none"), True, 0),
    ],
)
def test_resched_gating(behaviour: Behaviour, blockable: bool, resched: int) -> None:
    # UNMAP [1G, 3G) of 2 MiB blocks: 2 entry-level entries, each a full PMD table.
    lay = layout(G40, [(1 * G, 3 * G)], [(1 * G, 3 * G, 2 * M, 0)])
    event = (Invocation(UNMAP, 1 * G, 3 * G, blockable=blockable),)
    r = walk(lay, event, {UNMAP: behaviour}, fwb=False, cache_line=64)
    expected = {
        "notifier_call": 1,
        "memslot_visit": 1,
        "entry_visit": 1_026,  # 2 + 2 * 512
        "block_clear": 1_024,
        "table_clear": 2,
        "put_page": 1_026,
        "tlb_flush_vmid_ipa": 1_026,
        "dcache_flush_call": 1_024,
        "dc_civac_line": 33_554_432,  # 1024 * 32,768
        "table_free": 2,
    }
    if resched:
        expected["resched_point"] = resched
    check(r, expected)


def test_clear_frees_nothing_on_host_and_p5_unmap_flush() -> None:
    # CLEAR of [1G, 1G+4M) (2 blocks) with a P5-like behaviour on the clear path: the final
    # flush applies to unmap/clear invocations too, after the memslot loop.
    lay = layout(G40, [(1 * G, 2 * G)], [(1 * G, 2 * G, 2 * M, 0)])
    r = walk(lay, (Invocation(CLEAR, 1 * G, 1 * G + 4 * M),), {CLEAR: P5}, fwb=False, cache_line=64)
    check(
        r,
        {
            "notifier_call": 1,
            "memslot_visit": 1,
            "entry_visit": 3,  # entry 1 + 2 PMD entries
            "block_clear": 2,
            "put_page": 2,
            "flush_remote_tlbs": 1,
        },
    )


# --------------------------------------------------------------------------------------------
# The table itself


def test_build_table_refcounts_and_full_teardown() -> None:
    lay = layout(G40, [(1 * G, 2 * G)], [(1 * G, 2 * G, 4 * K, 0)])
    table = build_table(lay)
    # pgd page 0 holds entry 1 (the PMD table): refcount 1 + 1; page 1 holds nothing
    assert [p.refcount for p in table.pgd] == [2, 1]
    pages = table.pages()
    assert len(pages) == 513  # 1 PMD table + 512 PTE tables
    pmd = table.pgd[0].entries[1]
    assert isinstance(pmd, TablePage) and pmd.level == 1 and pmd.refcount == 513  # 1 + 512
    assert all(p.refcount == 513 for p in pages if p.level == 2)  # 1 + 512 PTEs each
    assert table.leaf_count() == {2: 262_144}
    assert all(e is LEAF for p in pages if p.level == 2 for e in p.entries)

    run_event(table, lay, exit_event(lay), STOCK_ALL, fwb=False, cache_line=64)
    # everything unhooked, every reference dropped, pgd handed back
    assert table.pages() == []
    assert [p.refcount for p in table.pgd] == [1, 1]
    assert all(e is None for p in table.pgd for e in p.entries)
    assert table.pgd_freed


def test_build_table_device_and_pud_blocks() -> None:
    lay = layout(
        G40,
        [(1 * G, 3 * G), (3 * G, 3 * G + 64 * K)],
        [
            (1 * G, 2 * G, 1 * G, 0),
            (2 * G, 3 * G, 2 * M, 0),
            (3 * G, 3 * G + 64 * K, 4 * K, 1, True),
        ],
    )
    table = build_table(lay)
    assert table.pgd[0].entries[1] is LEAF  # PUD block at the entry level
    assert table.pgd[0].refcount == 4  # entries 1 (block), 2 and 3 (tables)
    assert table.leaf_count() == {0: 1, 1: 512, 2: 16}
    pmd3 = table.pgd[0].entries[3]
    assert isinstance(pmd3, TablePage)
    pte = pmd3.entries[0]
    assert isinstance(pte, TablePage)
    assert pte.entries[:16] == [DEVICE_LEAF] * 16 and pte.refcount == 17


# --------------------------------------------------------------------------------------------
# Later strategies that leave this case unchanged (the full history is in test_walker_history.py)


@pytest.mark.parametrize(
    "behaviour",
    [
        Behaviour(leaf_tlbi="range"),  # no TLBIRANGE+FWB here: per entry with a level hint
        Behaviour(table_tlbi="deferred"),  # nothing to defer to: per entry
        Behaviour(resched="largest_block"),  # 1 GiB = the 40-bit entry-level entry
        Behaviour(resched="1g"),
        Behaviour(lock="unlocked"),  # same counts, but no segment holds mmu_lock
    ],
)
def test_later_strategies_same_counts_on_3_level_4k(behaviour: Behaviour) -> None:
    # The 1 GiB of 2 MiB blocks exit of test_exit_1g_of_2m_blocks_small_version: every one of
    # these strategies, on a CPU without TLBIRANGE or FWB, makes exactly the v5.5 counts.
    lay = layout(G40, [(1 * G, 2 * G)], [(1 * G, 2 * G, 2 * M, 0)])
    r = walk(lay, exit_event(lay), {TEARDOWN: behaviour}, fwb=False, cache_line=64)
    assert as_dict(r.events) == {
        "notifier_call": 1,
        "entry_visit": 1_536,  # 1024 + 512
        "block_clear": 512,
        "table_clear": 1,
        "put_page": 513,
        "tlb_flush_vmid_ipa": 513,  # 512 + 1
        "dcache_flush_call": 512,
        "dc_civac_line": 16_777_216,  # 512 * 32,768 = 2**24
        "table_free": 3,  # 1 PMD table + 2 pgd pages
        "resched_point": 1_023,
    }
    assert len(r.segments) == 1_024
    assert r.lock_held_segments == (behaviour.lock == "held",) * 1_024


def test_bad_inputs_raise() -> None:
    lay = layout(G40, [(1 * G, 2 * G)], [(1 * G, 2 * G, 2 * M, 0)])
    with pytest.raises(ValueError, match="no behaviour"):
        walk(lay, exit_event(lay), {UNMAP: STOCK}, fwb=False, cache_line=64)
    with pytest.raises(ValueError, match="follow a teardown"):
        walk(lay, exit_event(lay) * 2, STOCK_ALL, fwb=False, cache_line=64)
    with pytest.raises(ValueError, match="aligned"):
        walk(lay, (Invocation(UNMAP, 1 * G + 1, 2 * G),), STOCK_ALL, fwb=False, cache_line=64)
    with pytest.raises(ValueError, match="whole IPA"):
        walk(lay, (Invocation(TEARDOWN, 1 * G, 2 * G),), STOCK_ALL, fwb=False, cache_line=64)
    with pytest.raises(ValueError, match="cache_line"):
        walk(lay, exit_event(lay), STOCK_ALL, fwb=False, cache_line=48)
    with pytest.raises(ValueError, match="memslot_order"):
        walk(lay, exit_event(lay), STOCK_ALL, fwb=False, cache_line=64, memslot_order="sorted")


# --------------------------------------------------------------------------------------------
# Identities that must hold for any layout (seeded random layouts, not hand-worked numbers)


def _random_layout(rng: random.Random, g: Geometry) -> Layout:
    """A few memslots in the low 8 GiB, each filled with aligned runs of random leaf sizes."""
    slots: list[tuple[int, int]] = []
    extents: list[tuple] = []
    pmd = g.leaf_sizes[1]
    cursor = pmd * rng.randrange(0, 8)
    for slot_no in range(rng.randrange(1, 4)):
        lo = cursor
        hi = lo + pmd * rng.randrange(1, 700)
        slots.append((lo, hi))
        addr = lo
        while addr < hi:
            leaf = rng.choice([s for s in g.leaf_sizes if addr % s == 0 and addr + s <= hi])
            run = min(hi - addr, leaf * rng.randrange(1, 40))
            run -= run % leaf
            if rng.random() < 0.7:  # leave holes too
                device = leaf == g.granule and rng.random() < 0.2
                extents.append((addr, addr + run, leaf, slot_no, device))
            addr += run
        cursor = hi + pmd * rng.randrange(0, 3)
    return layout(g, slots, extents)


@pytest.mark.parametrize("seed", range(6))
def test_identities_on_random_layouts(seed: int) -> None:
    rng = random.Random(seed)
    g = Geometry(4096, rng.choice([36, 40, 44]))
    lay = _random_layout(rng, g)
    table = build_table(lay)
    tables = len(table.pages())
    leaves = table.leaf_count()
    pages = leaves.get(g.levels - 1, 0)
    blocks = sum(n for level, n in leaves.items() if level != g.levels - 1)
    device = sum(e.hi - e.lo for e in lay.extents if e.device) // g.granule
    r = run_event(table, lay, exit_event(lay), STOCK_ALL, fwb=False, cache_line=64,
                  host=[HostOp(EXIT_MMAP)])
    c = {name: int(v) for name, v in zip(EVENTS, r.events, strict=True)}
    assert c["pte_clear"] == pages and c["block_clear"] == blocks
    assert c["table_clear"] == tables  # a teardown empties every table
    assert c["put_page"] == pages + blocks + tables
    assert c["tlb_flush_vmid_ipa"] == pages + blocks + tables
    assert c["dcache_flush_call"] == pages - device + blocks
    assert c["dc_civac_line"] * 64 == lay.mapped_bytes - device * g.granule
    assert c["table_free"] == tables + g.pgd_pages
    assert c["resched_point"] == g.top_entries - 1
    # exit_mmap frees every host page and folio behind a leaf (1 GiB blocks: hugetlb pages)
    assert c["host_page_free"] == c["host_pte_zap"] == pages - device
    assert c["host_folio_free"] + c["host_hugetlb_free"] == blocks
    assert table.pages() == [] and all(p.refcount == 1 for p in table.pgd)
    check(r, {k: v for k, v in c.items() if v})

    # The same layout unmapped memslot by memslot, then torn down: every leaf and table goes
    # exactly once overall, and the range unmaps never free the pgd pages.
    table = build_table(lay)
    event = tuple(Invocation(UNMAP, s.lo, s.hi) for s in lay.memslots) + exit_event(lay)
    r = run_event(table, lay, event, STOCK_ALL, fwb=False, cache_line=64)
    c2 = {name: int(v) for name, v in zip(EVENTS, r.events, strict=True)}
    for name in (
        "pte_clear",
        "block_clear",
        "table_clear",
        "put_page",
        "tlb_flush_vmid_ipa",
        "dcache_flush_call",
        "dc_civac_line",
        "table_free",
    ):
        assert c2[name] == c[name], name
    assert c2["memslot_visit"] == len(lay.memslots) ** 2
    assert c2["notifier_call"] == len(lay.memslots) + 1
