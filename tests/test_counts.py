"""Exact counts of the vectorised model against integer literals worked by hand (docs/model.md §5).

Every expected number is derived in the comment beside it; none comes from the code under test.
"""

from __future__ import annotations

import pytest

from s2teardown.core.behaviour import Behaviour
from s2teardown.core.counts import count
from s2teardown.core.vocabulary import EVENTS
from s2teardown.inputs.workload import Workload, uniform_batch

K, M, G = 1 << 10, 1 << 20, 1 << 30
STOCK = {k: Behaviour() for k in ("teardown", "unmap", "clear")}
P5 = {**STOCK, "teardown": Behaviour(cmo="none", leaf_tlbi="none", table_tlbi="none", final_flush="vmall")}


def events(w: Workload, behs=STOCK, *, fwb: bool = False, line: int = 64) -> dict[str, int]:
    w.check()
    c = count(uniform_batch([w]), [behs], fwb=fwb, cache_line=line)
    return {e: int(v) for e, v in zip(EVENTS, c.events[0, 0], strict=True) if v}


def test_64g_4k_leaves_exit() -> None:
    ev = events(Workload(64 * G, backing=((4 * K, 100.0),)))
    # 64 GiB / 4 KiB = 16,777,216 PTEs; PTE tables 64 GiB / 2 MiB = 32,768; PMD tables 64
    assert ev["pte_clear"] == 16_777_216
    assert ev["tlb_flush_vmid_ipa"] == 16_810_048  # 16,777,216 + 32,768 + 64 (docs/model.md §5)
    assert ev["dc_civac_line"] == 2**30  # 64 GiB / 64 B
    assert ev["dcache_flush_call"] == 16_777_216
    assert ev["table_clear"] == 32_832  # tables freed by the walk
    assert ev["table_free"] == 32_834  # + the 2 pgd pages (1024 entries × 8 B)
    assert ev["resched_point"] == 1023  # 1024 entry-level entries of 1 GiB, minus 1
    assert ev["put_page"] == 16_810_048


def test_64g_2m_blocks_exit() -> None:
    ev = events(Workload(64 * G))
    assert ev["block_clear"] == 32_768
    assert ev["tlb_flush_vmid_ipa"] == 32_832  # 32,768 blocks + 64 PMD tables
    assert ev["dc_civac_line"] == 2**30
    assert ev["entry_visit"] == 33_792  # 1024 top entries + 64 tables × 512 entries
    assert ev["host_folio_free"] == 32_768


def test_64g_1g_blocks_exit() -> None:
    ev = events(Workload(64 * G, backing=((G, 100.0),)))
    assert ev["tlb_flush_vmid_ipa"] == 64  # one per PUD block, no table below the pgd
    assert ev["dc_civac_line"] == 2**30
    assert ev["table_free"] == 2  # only the pgd pages
    assert ev["entry_visit"] == 1024


def test_four_level_ipa() -> None:
    ev = events(Workload(64 * G, backing=((4 * K, 100.0),), ipa_bits=44))
    # 44 bits, 4 KiB: (44-8)//9 = 4 levels; L0 entries of 512 GiB, 2^44/2^39 = 32 of them.
    # One PUD table more than the 3-level case; the 32 L0 entries fit in 1 pgd page.
    assert ev["tlb_flush_vmid_ipa"] == 16_810_049
    assert ev["table_free"] == 32_834  # 32,768 + 64 + 1 + 1 pgd page
    assert ev["resched_point"] == 31
    assert ev["entry_visit"] == 16_810_528  # 32 + 512 + 64·512 + 32,768·512


def test_partial_unaligned_munmap_2m() -> None:
    # Range [1G+3M+4K, 3G+3M+4K) of 2 MiB blocks; guest RAM at 1 GiB.
    w = Workload(64 * G, event="munmap", range=(3 * M + 4 * K, 2 * G))
    ev = events(w)
    # Both edges are inside THP blocks: 2 CLEARs + 1 UNMAP notifier calls.
    assert ev["notifier_call"] == 3
    assert ev["memslot_visit"] == 3  # one memslot, visited by each call
    # Blocks touched: from [1G+2M, 1G+4M) (index 1) to [3G+2M, 3G+4M) (index 1025): 1,025,
    # each cleared whole even where the range covers it only partly.
    assert ev["block_clear"] == 1025
    # PMD tables: [1G,2G) keeps block 0, [3G,4G) keeps all but 2 blocks; only [2G,3G) empties.
    assert ev["table_clear"] == 1
    assert ev["tlb_flush_vmid_ipa"] == 1026
    assert ev["dc_civac_line"] == 1025 * 32_768  # 2 MiB / 64 B per block
    assert ev["resched_point"] == 2  # UNMAP spans entry-level entries 1, 2, 3
    assert ev["host_folio_free"] == 1023  # the 2 split THPs are not freed by the UNMAP


def test_device_ptes_are_not_cleaned() -> None:
    w = Workload(G, backing=((4 * K, 100.0),), device_fraction=0.25)
    ev = events(w)
    # 1 GiB = 262,144 pages: 65,536 device (256 MiB), 196,608 RAM
    assert ev["pte_clear"] == 262_144
    assert ev["dcache_flush_call"] == 196_608
    assert ev["dc_civac_line"] == 196_608 * 64  # 4 KiB / 64 B
    assert ev["tlb_flush_vmid_ipa"] == 262_657  # + 512 PTE tables + 1 PMD table
    assert ev["host_page_free"] == 196_608


def test_two_memslots_range_spanning_both() -> None:
    # 2 GiB in two 1 GiB memslots at 1G and 2G; munmap [1G+512M, 2G+512M): 2 passes.
    w = Workload(2 * G, memslots=2, event="munmap", range=(512 * M, G))
    ev = events(w)
    assert ev["notifier_call"] == 1  # both edges 2 MiB-aligned: no THP split
    assert ev["memslot_visit"] == 2
    assert ev["block_clear"] == 512  # 256 in each memslot
    assert "table_clear" not in ev  # both PMD tables keep blocks outside the range
    assert ev["tlb_flush_vmid_ipa"] == 512
    assert "resched_point" not in ev  # each pass lies in one entry-level entry
    assert ev["entry_visit"] == 514  # per pass: 1 top entry + 256 PMD entries


def test_fwb_removes_every_cmo() -> None:
    ev = events(Workload(4 * G, backing=((4 * K, 100.0),)), fwb=True)
    assert "dc_civac_line" not in ev and "dcache_flush_call" not in ev
    assert ev["tlb_flush_vmid_ipa"] == 4 * 262_657


def test_p5_teardown_one_flush_no_per_entry_work() -> None:
    ev = events(Workload(64 * G), P5)
    assert ev["flush_remote_tlbs"] == 1
    assert "tlb_flush_vmid_ipa" not in ev and "dc_civac_line" not in ev
    assert ev["table_free"] == 66  # frees unchanged: 64 PMD tables + 2 pgd pages


@pytest.mark.parametrize(
    ("line", "lines"),
    [(64, 2**30), (128, 2**29)],  # ThunderX: 128-byte lines halve the DC CIVACs
)
def test_cache_line_size(line: int, lines: int) -> None:
    assert events(Workload(64 * G), line=line)["dc_civac_line"] == lines


@pytest.mark.parametrize(
    ("granule", "small", "blocks", "resched"),
    [
        # docs/model.md §5 other granules, 64 GiB, 40-bit IPA
        (16 * K, 4_196_352, 2_048, 32_767),  # 4 Mi pages + 2048 tables; 32 MiB blocks
        (64 * K, 1_048_704, 128, 2_047),  # 1 Mi pages + 128 tables; 512 MiB blocks
    ],
)
def test_other_granules(granule: int, small: int, blocks: int, resched: int) -> None:
    pages = events(Workload(64 * G, backing=((granule, 100.0),), granule=granule, ram_base=2 * G))
    assert pages["tlb_flush_vmid_ipa"] == small
    assert pages["resched_point"] == resched
    block = 32 * M if granule == 16 * K else 512 * M
    blk = events(Workload(64 * G, backing=((block, 100.0),), granule=granule, ram_base=2 * G))
    assert blk["tlb_flush_vmid_ipa"] == blocks
