"""The later mainline variants (v5.9 ... v6.19) against counts worked out by hand.

Every expected number is an integer literal derived in the comment next to it from the workload
and the variant's strategies (configs/variants.yaml, docs/model.md "Later
kernels"), never computed by the code under test.  The counts come from the closed forms
(`counts.count` on `workload.uniform_batch`) with the bundled variant rows, and a few from
`api.estimate` / the CLI with bundled machines (graviton3: FWB + TLBIRANGE; d05: neither).

Units: K = 2**10, M = 2**20, G = 2**30, T = 2**40.  Facts used throughout (4 KiB granule,
guest RAM at GPA 1 GiB, 64-byte lines unless said otherwise):

* 40-bit IPA -> 3 levels: 1,024 entry-level entries of 1 GiB in 2 pgd pages; a PMD table holds
  512 entries of 2 MiB; a PTE table 512 entries of 4 KiB.
* 44-bit IPA -> 4 levels: 32 entry-level (L0) entries of 512 GiB in 1 pgd page; a PUD table
  holds 512 entries of 1 GiB.  47-bit: 256 L0 entries (1 pgd page).
* A 2 MiB block is 32,768 lines, a page 64 lines; 4 GiB of blocks = 2**32 / 64 = 67,108,864.
* v6.1+ chunks and v6.19's destroy chunks (`largest_block`) are 1 GiB with 4 KiB pages (32 MiB
  with 16 KiB); each chunk is a separate walk from the entry level, so with 4 levels every
  chunk loads its L0 entry again.
* Range flush of n pages (n < 2**21): ops(n) = (n & 1) + #{s in 0..3 : (n >> (5s + 1)) & 31 != 0};
  one hyp call per at most 2**21 pages.  A 1 GiB chunk is 2**18 pages: only (2**18 >> 16) & 31 = 4
  is non-zero -> 1 op.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from s2teardown import cli
from s2teardown.core.counts import count, range_flush, range_ops
from s2teardown.core.vocabulary import EVENTS
from s2teardown.errors import UserError
from s2teardown.features.estimate import estimate, lock_holds
from s2teardown.inputs import paths
from s2teardown.inputs.machine import load_machine
from s2teardown.inputs.variants import load_variants
from s2teardown.inputs.workload import Workload, uniform_batch

K, M, G, T = 1 << 10, 1 << 20, 1 << 30, 1 << 40
VS = load_variants()

B4K = ((4 * K, 100.0),)
B2M = ((2 * M, 100.0),)
B1G = ((G, 100.0),)


def events(variant: str, w: Workload, *, fwb: bool, tlbi_range: bool = False, cache_line: int = 64) -> dict[str, int]:
    """The non-zero event totals of one bundled variant on one workload."""
    w.check()
    c = count(uniform_batch([w]), [VS.lookup(variant).behaviours], fwb=fwb, tlbi_range=tlbi_range,
              cache_line=cache_line)
    return {e: int(v) for e, v in zip(EVENTS, c.events[0, 0], strict=True) if int(v)}


def segments(variant: str, w: Workload, *, fwb: bool, tlbi_range: bool = False):
    c = count(uniform_batch([w]), [VS.lookup(variant).behaviours], fwb=fwb, tlbi_range=tlbi_range,
              cache_line=64, with_segments=True)
    assert c.segments is not None
    return c.segments[0][0]


def col(segs, event: str) -> list[int]:
    return [int(x) for x in segs.events[:, EVENTS.index(event)]]


# ----------------------------------------------------------------------------------------------
# Shared layouts

#: 4 GiB of 2 MiB blocks at [1G, 5G), one memslot.  40-bit: entry-level entries 1..4 each hold a
#: full PMD table (512 blocks): 2,048 blocks, 4 PMD tables.
W4G2M = dict(vm_bytes=4 * G, backing=B2M)

#: A whole-RAM munmap of W4G2M (edges 1G and 5G are 2 MiB-aligned: no THP-split CLEAR), v5.5
#: semantics: one UNMAP pass over [1G, 5G) on the one memslot.
#:   visits  = 4 entry-level + 4 × 512 PMD entries = 2,052
#:   leaves  = 2,048 blocks; tables freed = the 4 PMD tables
#:   put_page = TLBI calls = 2,048 + 4 = 2,052; CMO: 2,048 calls, 2,048 × 32,768 lines
#:   resched = 4 chunks of 1 GiB − 1 = 3
#: then unmap_region on the host (docs/model.md §14): 2,048 THPs zapped and freed, each with its
#: deposited PTE table, and the 4 PMD tables of [1G, 5G) (the 512 GiB PUD table's region is
#: not wholly inside the range): 2,052 table pages.
HOST_MUNMAP_4G2M = {"host_pmd_zap": 2_048, "host_folio_free": 2_048, "host_table_free": 2_052}
#: The host's TLB flushes of that munmap (model version 6, docs/model.md §14.2): 2,048 gather
#: entries (< 9,698) flush once at tlb_end_vma over [1G, 5G) with a PMD stride: 2,048 strides
#: >= 512 -> flush_tlb_mm; the 4 PMD tables (< 509) once at tlb_finish_mmu over
#: [1G, 4G + 4K) with a PUD stride -> [1G, 5G): 4 strides -> 4 TLBIs by address.
HOST_FLUSH_4G2M = {"host_tlb_flush_mm": 1, "host_tlb_flush_range": 1, "host_tlbi_va": 4}
#: ... with FEAT_TLBIRANGE: both flushes are 2**20 pages (< 2**21): 2**19 = 16 · 32**3, one
#: non-zero 5-bit digit -> one range TLBI each.
HOST_FLUSH_RANGE_4G2M = {"host_tlb_flush_range": 2, "host_tlbi_range": 2}
#: MADV_DONTNEED and the OOM reaper zap and free the same THPs (and their deposited tables) but
#: free no page table (no free_pgtables); their one flush (at the VMA's end) is flush_tlb_mm.
HOST_ZAP_4G2M = {**HOST_MUNMAP_4G2M, "host_table_free": 2_048, "host_tlb_flush_mm": 1}
#: exit_mmap: everything, the PUD table too (2,048 + 4 + 1), and 2 SRCU waits; the 5 tables
#: the full-mm gather frees (the deposited ones go by pte_free): one flush_tlb_mm.
HOST_EXIT_4G2M = {**HOST_MUNMAP_4G2M, "host_table_free": 2_053, "srcu_sync": 2, "host_tlb_flush_mm": 1}
MUNMAP_4G2M = {
    "notifier_call": 1,
    "memslot_visit": 1,
    "entry_visit": 2_052,
    "block_clear": 2_048,
    "table_clear": 4,
    "put_page": 2_052,
    "tlb_flush_vmid_ipa": 2_052,
    "dcache_flush_call": 2_048,
    "dc_civac_line": 67_108_864,
    "table_free": 4,
    "resched_point": 3,
    **HOST_MUNMAP_4G2M,
}


def without(d: dict[str, int], *keys: str) -> dict[str, int]:
    return {k: v for k, v in d.items() if k not in keys}


# ----------------------------------------------------------------------------------------------
# v5.9: cond_resched_lock only when the notifier may block


def test_v59_munmap_keeps_resched_points() -> None:
    w = Workload(**W4G2M, event="munmap")
    assert events("v5.9", w, fwb=False) == {**MUNMAP_4G2M, **HOST_FLUSH_4G2M}
    # and the clear path (blockable) likewise: 3 resched points; MADV_DONTNEED frees the THPs
    # on the host but no page table
    wc = Workload(**W4G2M, event="clear")
    assert events("v5.9", wc, fwb=False) == {**MUNMAP_4G2M, **HOST_ZAP_4G2M}


def test_v59_oom_has_no_resched_point() -> None:
    w = Workload(**W4G2M, event="oom")
    # The OOM reaper's UNMAP is non-blockable: v5.9 drops the 3 resched points, nothing else.
    # The reaper zaps like MADV_DONTNEED: no page table freed (exit_mmap frees them later).
    reaped = {**MUNMAP_4G2M, **HOST_ZAP_4G2M}
    assert events("v5.9", w, fwb=False) == without(reaped, "resched_point")
    # v5.5 rescheduled even there (the bug v5.9 fixed): 3 points.
    assert events("v5.5", w, fwb=False) == reaped


def test_oom_reaper_skips_hugetlb_vmas() -> None:
    # 4K:50,hugetlb-2M:50 over 4 GiB, one memslot: hugetlb pages at [1G, 3G) (largest leaves
    # first), pages at [3G, 5G).  __oom_reap_task_mm skips the hugetlbfs VMA: one non-blockable
    # UNMAP over [3G, 5G) and the host zaps only the pages there — exactly the counts of 2 GiB of
    # pages at [3G, 5G) alone (same 40-bit table, same walk, same host VMA of pages).
    mix = Workload(vm_bytes=4 * G, backing=((4 * K, 50.0), (2 * M, 50.0)), hugetlb=(2 * M,), event="oom")
    pages = Workload(vm_bytes=2 * G, backing=B4K, ram_base=3 * G, event="oom")
    assert events("v6.6", mix, fwb=False) == events("v6.6", pages, fwb=False)
    assert events("v6.6", mix, fwb=False)["host_pte_zap"] == 524_288
    # all hugetlb (2 MiB, or 1 GiB pages): the reaper reaps nothing, Stage-2 keeps its mappings
    assert events("v6.6", Workload(**W4G2M, hugetlb=(2 * M,), event="oom"), fwb=False) == {}
    assert events("v6.6", Workload(vm_bytes=4 * G, backing=B1G, event="oom"), fwb=False) == {}


def test_v59_oom_holds_the_lock_for_the_whole_range() -> None:
    # TLBI calls per segment: each 1 GiB chunk = 512 blocks + its PMD table = 513.
    munmap = segments("v5.9", Workload(**W4G2M, event="munmap"), fwb=False)
    assert col(munmap, "tlb_flush_vmid_ipa") == [513, 513, 513, 513]
    oom = segments("v5.9", Workload(**W4G2M, event="oom"), fwb=False)
    assert col(oom, "tlb_flush_vmid_ipa") == [2_052]
    assert list(oom.lock_held) == [True]


# ----------------------------------------------------------------------------------------------
# v5.10: kvm_pgtable_stage2_destroy on exit; per-entry TLBI (level hint) on munmap


def test_v510_exit_is_a_destroy_walk() -> None:
    w = Workload(**W4G2M, event="exit")
    # Whole IPA, one unlocked walk: visits 1,024 entry-level + 4 × 512 = 3,072; put_page per valid
    # entry = 2,048 blocks + 4 table entries = 2,052; tables freed 4 + 2 pgd pages = 6.
    # No clear, no TLBI, no CMO, no resched.
    want = {
        "notifier_call": 1,
        "entry_visit": 3_072,
        "put_page": 2_052,
        "table_free": 6,
        **HOST_EXIT_4G2M,
    }
    assert events("v5.10", w, fwb=False) == want
    assert events("v5.10", w, fwb=True, tlbi_range=True) == want  # nothing left for FWB to remove
    segs = segments("v5.10", w, fwb=False)
    assert segs.events.shape[0] == 1 and list(segs.lock_held) == [False]


def test_v510_exit_4k_pages() -> None:
    w = Workload(vm_bytes=G, backing=B4K, event="exit")
    # [1G, 2G) of pages: 262,144 PTEs in 512 PTE tables under 1 PMD table.
    # visits 1,024 + 512 + 512 × 512 = 263,680; put_page 262,144 + 512 + 1 = 262,657;
    # tables freed 513 + 2 pgd pages = 515.  Host exit_mmap: 262,144 PTEs zapped and pages
    # freed; 512 PTE tables + 1 PMD table + 1 PUD table; 2 SRCU waits.
    assert events("v5.10", w, fwb=False) == {
        "notifier_call": 1,
        "entry_visit": 263_680,
        "put_page": 262_657,
        "table_free": 515,
        "host_pte_zap": 262_144,
        "host_page_free": 262_144,
        "host_table_free": 514,
        "srcu_sync": 2,
        # the full-mm gather: flush_tlb_mm per 509 tables and at tlb_finish_mmu: 514 -> 2
        "host_tlb_flush_mm": 2,
    }


def test_v510_munmap_then_exit_pays_per_entry_tlbis() -> None:
    # FWB machine (no CMO); v5.10 has no range flush, so TLBIRANGE changes nothing.
    w = Workload(**W4G2M, event="munmap-then-exit")
    # munmap part: MUNMAP_4G2M without the CMO (FWB).  Exit part: a destroy walk of an empty
    # table: 1,024 entry-level visits, the 2 pgd pages, 1 more notifier call.
    assert events("v5.10", w, fwb=True, tlbi_range=True) == {
        "notifier_call": 2,
        "memslot_visit": 1,
        "entry_visit": 3_076,  # 2,052 + 1,024
        "block_clear": 2_048,
        "table_clear": 4,
        "put_page": 2_052,
        "tlb_flush_vmid_ipa": 2_052,
        "table_free": 6,  # 4 + 2
        "resched_point": 3,
        # the host: the munmap's THPs and tables, then exit_mmap frees the PUD table left
        **HOST_MUNMAP_4G2M,
        "host_table_free": 2_053,
        "srcu_sync": 2,
        # the munmap's two range flushes (HOST_FLUSH_RANGE_4G2M); exit's full-mm gather frees
        # the PUD table: one flush_tlb_mm
        **HOST_FLUSH_RANGE_4G2M,
        "host_tlb_flush_mm": 1,
    }
    # the plain exit on the same machine: no TLBI at all
    assert "tlb_flush_vmid_ipa" not in events("v5.10", Workload(**W4G2M), fwb=True, tlbi_range=True)


def test_v510_block_retry_is_one_vmall() -> None:
    # block-retry at the start of a 1 GiB guest of pages: the PTE table of [1G, 1G+2M) is
    # replaced by a block.  v5.10: destroy the subtree (visits 1 entry-level + 1 PMD entry +
    # 512 PTEs = 514; put_page 512 + the table's entry = 513; 1 table freed) and one VMALLS12E1IS.
    w = Workload(vm_bytes=G, backing=B4K, event="block-retry")
    assert events("v5.10", w, fwb=False) == {
        "notifier_call": 1,
        "entry_visit": 514,
        "put_page": 513,
        "table_free": 1,
        "flush_remote_tlbs": 1,
    }
    # v5.5 for contrast: 512 PTE clears, 513 TLBI calls, 512 page cleans of 64 lines.
    assert events("v5.5", w, fwb=False) == {
        "notifier_call": 1,
        "entry_visit": 514,
        "pte_clear": 512,
        "table_clear": 1,
        "put_page": 513,
        "tlb_flush_vmid_ipa": 513,
        "dcache_flush_call": 512,
        "dc_civac_line": 32_768,
        "table_free": 1,
    }


def test_v510_exit_lock_hold_warning_is_unlocked() -> None:
    d05 = load_machine("d05")
    vs = [VS.lookup(n) for n in ("v5.5", "v5.10", "v6.1", "v6.19")]
    w = Workload(vm_bytes=64 * G, backing=B4K, event="exit")
    e = estimate(d05, vs, w)
    stretch = e.breakdown.stretch_ns[0]
    # v5.5: 1 GiB per stretch under mmu_lock; v5.10 and v6.1: the unlocked destroy; all three
    # between 100 ms and 20 s, so only the need_resched latency warning could fire — and it
    # exists from v5.13 on: v5.5 and v5.10 print nothing, v6.1 would (with LATENCY_WARN on).
    # v6.19: 1 GiB of destroy per stretch — below 100 ms on d05.
    assert all(0.1e9 < float(x) < 20e9 for x in stretch[:3]) and float(stretch[3]) < 0.1e9
    assert len(e.warnings) == 1
    (line,) = e.warnings
    assert line.startswith("v6.1: need_resched latency (resched_latency_warn_ms = 100 ms) at 100 ms ")
    assert "mmu_lock not held, preempt=none" in line
    assert "if the LATENCY_WARN sched feature is on (it is off by default)" in line
    assert line.endswith(": sched: CPU N need_resched set for > N ns (N ticks) without schedule")
    assert [(h.variant, h.threshold, h.first_fire_ns) for h in e.lock_holds] == [
        ("v6.1", "need_resched", 100e6)
    ]
    # preempt=full: an unlocked walk is preemptible, and v5.5 (locked) predates the warning
    full = estimate(d05, vs, w, preempt="full")
    assert full.warnings == () and full.lock_holds == ()


def test_lock_hold_thresholds() -> None:
    # every detector a stretch passes, earliest first; the thresholds by hand:
    # need_resched 100 ms, soft lockup 2 × watchdog_thresh, RCU stall 21 s.
    # With watchdog_thresh 5 s: 25 s passes all three; 15 s the soft lockup (10 s) and
    # need_resched, not the RCU stall; 0.2 s only need_resched; 0.05 s nothing.
    h = lock_holds(["a", "b", "c", "d"], [25e9, 15e9, 0.2e9, 0.05e9], [25e9, 0.0, 0.2e9, 0.0],
                   watchdog_thresh_s=5.0)
    assert [(x.variant, x.threshold, x.limit_ns, x.mmu_lock_held) for x in h] == [
        ("a", "need_resched", 100e6, True), ("a", "soft_lockup", 10e9, True),
        ("a", "rcu_stall", 21e9, True),
        ("b", "need_resched", 100e6, False), ("b", "soft_lockup", 10e9, False),
        ("c", "need_resched", 100e6, True),
    ]
    # default watchdog_thresh 10 s: soft lockup at 20 s, so 15 s is only past need_resched
    h = lock_holds(["b"], [15e9], [0.0])
    assert [(x.threshold, x.limit_ns) for x in h] == [("need_resched", 100e6)]
    # a v5.10 kernel has no need_resched warning (v5.13): 15 s trips nothing there
    assert lock_holds(["b"], [15e9], [0.0], kernels=["5.10"]) == []


# ----------------------------------------------------------------------------------------------
# v6.1: lock-break chunk = largest block (1 GiB with 4 KiB pages) whatever the levels


def test_v61_four_level_munmap_chunks_at_1g() -> None:
    w = Workload(**W4G2M, ipa_bits=44, event="munmap")
    # 4 levels: guest [1G, 5G) in L0 entry 0; one PUD table with entries 1..4 -> 4 PMD tables.
    # v6.1: 4 chunks of 1 GiB, each a walk from L0: 1 L0 + 1 PUD + 512 PMD = 514 visits -> 2,056.
    # Tables freed: 4 PMD tables + the PUD table (emptied in the last chunk) = 5.
    # put_page = TLBI = 2,048 + 5 = 2,053; resched = 4 chunks − 1 = 3.
    want = {
        "notifier_call": 1,
        "memslot_visit": 1,
        "entry_visit": 2_056,
        "block_clear": 2_048,
        "table_clear": 5,
        "put_page": 2_053,
        "tlb_flush_vmid_ipa": 2_053,
        "dcache_flush_call": 2_048,
        "dc_civac_line": 67_108_864,
        "table_free": 5,
        "resched_point": 3,
        **HOST_MUNMAP_4G2M,  # the host's own tables: 3 levels below its top, as with 40 bits
        **HOST_FLUSH_4G2M,
    }
    assert events("v6.1", w, fwb=False) == want
    # v5.10 chunks at entry-level entries (512 GiB): one walk, 1 + 4 + 2,048 = 2,053 visits and
    # no resched point at all.
    assert events("v5.10", w, fwb=False) == without({**want, "entry_visit": 2_053}, "resched_point")
    segs = segments("v6.1", w, fwb=False)
    # per chunk: 512 blocks + its PMD table (+ the PUD table in the last) TLBI calls
    assert col(segs, "tlb_flush_vmid_ipa") == [513, 513, 513, 514]


def test_v61_memslot_delete_chunks() -> None:
    # 2 memslots [1G, 3G), [3G, 5G); memslot-delete of slot 0, 44-bit IPA, FWB (no CMO).
    # 2 chunks: 2 × (1 + 1 + 512) = 1,028 visits; 1,024 blocks, 2 PMD tables freed (the PUD
    # table keeps slot 1's tables); TLBI 1,026; resched 1.  No memslot iteration, no host free.
    w = Workload(**W4G2M, ipa_bits=44, memslots=2, event="memslot-delete")
    want = {
        "notifier_call": 1,
        "entry_visit": 1_028,
        "block_clear": 1_024,
        "table_clear": 2,
        "put_page": 1_026,
        "tlb_flush_vmid_ipa": 1_026,
        "table_free": 2,
        "resched_point": 1,
    }
    assert events("v6.1", w, fwb=True) == want
    # v5.10: one walk, 1 + 2 + 1,024 = 1,027 visits, no resched point
    assert events("v5.10", w, fwb=True) == without({**want, "entry_visit": 1_027}, "resched_point")


# ----------------------------------------------------------------------------------------------
# v6.6 / v6.9: FEAT_TLBIRANGE deferred range flush (only with TLBIRANGE and FWB)

#: MUNMAP_4G2M with the v6.6 deferral (TLBIRANGE + FWB): no CMO, no per-entry TLBI (leaves and
#: tables deferred), one range flush per 1 GiB chunk = 4 calls of 1 op each.
V66_DEFERRED_4G2M = {
    **without(MUNMAP_4G2M, "tlb_flush_vmid_ipa", "dcache_flush_call", "dc_civac_line"),
    "range_flush_call": 4,
    "range_tlbi_op": 4,
    **HOST_FLUSH_RANGE_4G2M,
}


def test_v66_deferral_applies_with_tlbirange_and_fwb() -> None:
    w = Workload(**W4G2M, event="munmap")
    assert events("v6.6", w, fwb=True, tlbi_range=True) == V66_DEFERRED_4G2M
    segs = segments("v6.6", w, fwb=True, tlbi_range=True)
    assert col(segs, "range_flush_call") == [1, 1, 1, 1]
    assert col(segs, "tlb_flush_vmid_ipa") == [0, 0, 0, 0]


def test_v66_no_deferral_without_fwb() -> None:
    # TLBIRANGE without FWB: one TLBI per leaf and per table, CMO kept — exactly v5.5's munmap.
    w = Workload(**W4G2M, event="munmap")
    assert events("v6.6", w, fwb=False, tlbi_range=True) == {**MUNMAP_4G2M, **HOST_FLUSH_RANGE_4G2M}
    # FWB without TLBIRANGE: per-entry TLBIs, no CMO, no range flush
    assert events("v6.6", w, fwb=True, tlbi_range=False) == without(
        {**MUNMAP_4G2M, **HOST_FLUSH_4G2M}, "dcache_flush_call", "dc_civac_line")


def test_v69_table_tlbis_are_back() -> None:
    # v6.9 (and 6.6.47): the 4 PMD-table clears are invalidated at once, leaves still deferred.
    w = Workload(**W4G2M, event="munmap")
    assert events("v6.9", w, fwb=True, tlbi_range=True) == {**V66_DEFERRED_4G2M, "tlb_flush_vmid_ipa": 4}
    # ... and without FWB v6.9 is per entry too
    assert events("v6.9", w, fwb=False, tlbi_range=True) == {**MUNMAP_4G2M, **HOST_FLUSH_RANGE_4G2M}


def test_v66_unaligned_munmap_range_ops() -> None:
    # 2 GiB of pages at [1G, 3G); munmap [1G+4K, 2G+12K) (offset 4K, size 1G+8K).  Both edges are
    # unaligned with their 2 MiB blocks inside the VMA (docs/model.md §3): CLEAR [1G, 1G+2M),
    # CLEAR [2G, 2G+2M), then the UNMAP, one memslot visit each.
    #   Each CLEAR: visits 1 + 1 + 512 = 514, 512 PTEs, its PTE table freed (513 put_page), one
    #     range flush of 512 pages: ops(512) = [(512>>6)&31 = 8] = 1.
    #   UNMAP chunks: [1G+4K, 2G) = 262,143 pages, [2G, 2G+12K) = 3 pages.
    #     ops(262,143 = 2**18 − 1): odd -> 1, and fields (n>>1)&31 = 31, (n>>6)&31 = 31,
    #     (n>>11)&31 = 31, (n>>16)&31 = 3 -> 4: 5 ops.   ops(3): 1 + ((3>>1)&31 = 1) = 2 ops.
    #     Chunk 1: 1 + 512 PMD entries (entry 0 now empty) + 511 x 512 PTEs = 262,145 visits;
    #     261,632 PTEs, 511 PTE tables freed, then GiB 1's PMD table, now empty: 512 tables.
    #     Chunk 2: 1 + 1 (PMD entry 0, empty since CLEAR 2) = 2 visits, nothing cleared; GiB 2's
    #     PMD table keeps its other 511 PTE tables.
    #   -> visits 514 + 514 + 262,145 + 2 = 263,175; PTEs 512 + 512 + 261,632 = 262,656; tables
    #   1 + 1 + 512 = 514; put_page 262,656 + 514 = 263,170; range calls 1 + 1 + 2 = 4, ops
    #   1 + 1 + 5 + 2 = 9; resched 1.  The host frees every page of the range (its own mapping
    #   is untouched by the CLEARs, which split no THP here).
    w = Workload(vm_bytes=2 * G, backing=B4K, event="munmap", range=(4 * K, G + 8 * K))
    deferred = {
        "notifier_call": 3,
        "memslot_visit": 3,
        "entry_visit": 263_175,
        "pte_clear": 262_656,
        "table_clear": 514,
        "put_page": 263_170,
        "table_free": 514,
        "resched_point": 1,
        "range_flush_call": 4,
        "range_tlbi_op": 9,
        # the host: 262,146 pages zapped and freed; the PTE tables of [1G+2M, 2G) (511) lie
        # wholly inside the range, [2G, 2G+2M) does not; no 1 GiB region does
        "host_pte_zap": 262_146,
        "host_page_free": 262_146,
        "host_table_free": 511,
        # its TLB flushes (FEAT_TLBIRANGE; range TLBIs = non-zero 5-bit digits of pages >> 1):
        # 262,146 entries = 27 full gathers of 9,698 pages (4,849 = 4·1024 + 23·32 + 17: 3
        # each) + 300 at tlb_end_vma (150 = 4·32 + 22: 2); the 511 PTE tables: a batch of 509
        # (509 × 512 pages: 130,304 = 3·32768 + 31·1024 + 8·32: 3) + 2 at tlb_finish_mmu
        # (1,024 pages: 512 = 16·32: 1) -> 30 calls, 27 × 3 + 2 + 3 + 1 = 87 range TLBIs
        "host_tlb_flush_range": 30,
        "host_tlbi_range": 87,
    }
    assert events("v6.6", w, fwb=True, tlbi_range=True) == deferred
    assert events("v6.9", w, fwb=True, tlbi_range=True) == {**deferred, "tlb_flush_vmid_ipa": 514}
    # no FWB: TLBI per entry 262,656 + 514 = 263,170, CMO of every page (× 64 lines)
    assert events("v6.6", w, fwb=False, tlbi_range=True) == {
        **without(deferred, "range_flush_call", "range_tlbi_op"),
        "tlb_flush_vmid_ipa": 263_170,
        "dcache_flush_call": 262_656,
        "dc_civac_line": 16_809_984,
    }


def test_v66_munmap_with_thp_split_edges() -> None:
    # W4G2M, munmap [1G+1M, 3G+1M) (offset 1M, size 2G): both edges fall inside THPs, so
    # CLEAR [1G, 1G+2M), CLEAR [3G, 3G+2M), then the UNMAP; each call visits the one memslot.
    #   CLEARs: 1 block each, visits 1 + 1 = 2 each, one range flush of 512 pages each:
    #     ops(512) = [(512>>6)&31 = 8] = 1.
    #   UNMAP chunks: [1G+1M, 2G): the blocks of [1G, 2G) minus the one the CLEAR took = 511, PMD
    #     table of GiB 1 emptied (freed), visits 1 + 512 = 513, 261,888 pages:
    #     ops = [(n>>6)&31 = 28] + [(n>>11)&31 = 31] + [(n>>16)&31 = 3] = 3 (n even, (n>>1)&31 = 0).
    #   [2G, 3G): 512 blocks, table freed, visits 513, 2**18 pages -> 1 op.
    #   [3G, 3G+1M): its block went with the CLEAR: 0 blocks, visits 1 + 1 = 2, 256 pages -> 1 op.
    #   -> blocks 1,023, tables 2, visits 1,028, 3 range calls, 5 ops, resched 2.
    #   Host: the 1,023 THPs of [1G+2M, 3G) zapped and freed (+ their deposited tables); the
    #   THPs at 1G and 3G split, their 256 + 256 pages inside the range zapped per PTE, folios
    #   kept; the PMD table of [2G, 3G) freed: 1,023 + 1 table pages.
    w = Workload(**W4G2M, event="munmap", range=(M, 2 * G))
    want = {
        "notifier_call": 3,
        "memslot_visit": 3,
        "entry_visit": 1_032,
        "block_clear": 1_025,
        "table_clear": 2,
        "put_page": 1_027,
        "table_free": 2,
        "resched_point": 2,
        "range_flush_call": 5,
        "range_tlbi_op": 7,
        "host_pmd_zap": 1_023,
        "host_folio_free": 1_023,
        "host_pmd_split": 2,
        "host_pte_zap": 512,
        "host_table_free": 1_024,
        # TLB (FEAT_TLBIRANGE): each split flushes 512 pages (256 = 8·32: 1 range TLBI); the
        # zap's 1,535 entries flush once at tlb_end_vma over 2 GiB (2**19 = 16·32**3: 1); the
        # PMD table of [2G, 3G) at tlb_finish_mmu with a PUD stride: 1 GiB (2**17 = 4·32**3: 1)
        "host_tlb_flush_range": 4,
        "host_tlbi_range": 4,
    }
    assert events("v6.6", w, fwb=True, tlbi_range=True) == want
    assert events("v6.9", w, fwb=True, tlbi_range=True) == {**want, "tlb_flush_vmid_ipa": 2}


def test_v66_memslot_delete_and_reset_defer_too() -> None:
    # memslot-delete of slot 0 (44-bit, as test_v61_memslot_delete_chunks): 2 chunks -> 2 range
    # flushes of 1 op; no TLBI in v6.6, the 2 table clears in v6.9.
    w = Workload(**W4G2M, ipa_bits=44, memslots=2, event="memslot-delete")
    md = {
        "notifier_call": 1,
        "entry_visit": 1_028,
        "block_clear": 1_024,
        "table_clear": 2,
        "put_page": 1_026,
        "table_free": 2,
        "resched_point": 1,
        "range_flush_call": 2,
        "range_tlbi_op": 2,
    }
    assert events("v6.6", w, fwb=True, tlbi_range=True) == md
    assert events("v6.9", w, fwb=True, tlbi_range=True) == {**md, "tlb_flush_vmid_ipa": 2}
    # reset of a 2 GiB guest in 2 memslots [1G, 2G), [2G, 3G): every memslot whole, one pass each
    # (2 memslot visits), one 1 GiB chunk each: 2 × (1 + 512) visits, 1,024 blocks, 2 tables,
    # 2 range flushes, no resched, no host free.
    r = Workload(vm_bytes=2 * G, backing=B2M, memslots=2, event="reset")
    rs = {
        "notifier_call": 1,
        "memslot_visit": 2,
        "entry_visit": 1_026,
        "block_clear": 1_024,
        "table_clear": 2,
        "put_page": 1_026,
        "table_free": 2,
        "range_flush_call": 2,
        "range_tlbi_op": 2,
    }
    assert events("v6.6", r, fwb=True, tlbi_range=True) == rs
    assert events("v6.9", r, fwb=True, tlbi_range=True) == {**rs, "tlb_flush_vmid_ipa": 2}


def test_v66_on_graviton3_via_estimate() -> None:
    # graviton3 has FWB and TLBIRANGE: the v6.6 deferral applies through the machine's features.
    g3 = load_machine("graviton3")
    e = estimate(g3, [VS.lookup("v6.6"), VS.lookup("v6.9")], Workload(**W4G2M, event="munmap"))
    got = [{ev: int(x) for ev, x in zip(EVENTS, e.breakdown.events[0, v], strict=True) if int(x)}
           for v in range(2)]
    assert got == [V66_DEFERRED_4G2M, {**V66_DEFERRED_4G2M, "tlb_flush_vmid_ipa": 4}]
    # d05 has neither: per entry, with CMO
    d05 = load_machine("d05")
    e = estimate(d05, [VS.lookup("v6.6")], Workload(**W4G2M, event="munmap"))
    assert {ev: int(x) for ev, x in zip(EVENTS, e.breakdown.events[0, 0], strict=True) if int(x)} == {
        **MUNMAP_4G2M, **HOST_FLUSH_4G2M}


def test_v66_block_retry_uses_a_range_flush_with_tlbirange() -> None:
    # As test_v510_block_retry_is_one_vmall, but on a TLBIRANGE CPU: one range flush of the
    # 2 MiB block = 512 pages -> 1 call, ops(512) = [(512>>6)&31 = 8] = 1; no VMALLS12E1IS.
    w = Workload(vm_bytes=G, backing=B4K, event="block-retry")
    assert events("v6.6", w, fwb=False, tlbi_range=True) == {
        "notifier_call": 1,
        "entry_visit": 514,
        "put_page": 513,
        "table_free": 1,
        "range_flush_call": 1,
        "range_tlbi_op": 1,
    }


def test_repeat_tlbi_workaround_covers_range_ops() -> None:
    from s2teardown.core.instructions import Features, op_counts
    from s2teardown.core.vocabulary import OPS

    one = np.zeros(len(EVENTS), dtype=np.int64)
    one[EVENTS.index("range_tlbi_op")] = 1
    ops = op_counts(one, Features(vhe=True, tlbi_repeat=True)).sum(axis=0)
    # one range op under the workaround: tlbi; dsb ish; tlbi -> 2 range TLBIs, 1 dsb ish
    assert {o: int(n) for o, n in zip(OPS, ops, strict=True) if n} == {"tlbi_range": 2, "dsb_ish": 1}


def test_range_flush_formula() -> None:
    # 2**18 pages (1 GiB): 1 call, 1 op.  2**21 − 1: odd, fields 31, 31, 31, 31 -> 5 ops.
    # 2**21 = MAX_TLBI_RANGE_PAGES: 1 call, 1 op.  2**21 + 3: 2 calls, 1 + ops(3) = 3 ops.
    # 2**23 (32 GiB): 4 calls, 4 ops.
    assert [int(x) for x in range_ops(np.array([1, 2, 3, 64, 262_144, 2_097_151]))] == [1, 1, 2, 1, 1, 5]
    calls, ops = range_flush(np.array([262_144, 2_097_152, 2_097_155, 8_388_608]))
    assert [int(x) for x in calls] == [1, 1, 2, 4]
    assert [int(x) for x in ops] == [1, 1, 3, 4]


# ----------------------------------------------------------------------------------------------
# v6.19: the destroy walk in 1 GiB chunks with cond_resched()


def test_v619_exit_destroys_in_1g_chunks() -> None:
    w = Workload(**W4G2M, event="exit")
    # As v5.10's destroy (3 levels: a 1 GiB chunk is one entry-level entry, so visits are the
    # same 3,072), plus a cond_resched() between the 1,024 chunks: 1,023.
    want = {
        "notifier_call": 1,
        "entry_visit": 3_072,
        "put_page": 2_052,
        "table_free": 6,
        "resched_point": 1_023,
        **HOST_EXIT_4G2M,
    }
    assert events("v6.19", w, fwb=True, tlbi_range=True) == want
    segs = segments("v6.19", w, fwb=True, tlbi_range=True)
    assert segs.events.shape[0] == 1_024 and not segs.lock_held.any()
    # chunk 1 ([1G, 2G)): 1 entry-level + 512 PMD visits, 512 + 1 put_page
    assert col(segs, "entry_visit")[:3] == [1, 513, 513]
    assert col(segs, "put_page")[:3] == [0, 513, 513]


def test_v619_16k_pages_chunk_at_32m() -> None:
    # 16 KiB pages, 40-bit IPA: 2 levels, 32,768 entry-level entries of 32 MiB in 16 pgd pages.
    # 1 GiB of 32 MiB blocks at [1G, 2G): 32 blocks straight in the entry level, no table.
    # stage2_range_addr_end cuts at the KVM_PGTABLE_MIN_BLOCK_LEVEL block = 32 MiB (not 1 GiB):
    # 32,768 chunks -> 32,767 resched points (a 1 GiB cut would give 1,023).
    w = Workload(vm_bytes=G, backing=((32 * M, 100.0),), granule=16 * K, event="exit")
    v510 = {
        "notifier_call": 1,
        "entry_visit": 32_768,
        "put_page": 32,
        "table_free": 16,
        # host exit_mmap: 32 THPs of 32 MiB zapped and freed, their 32 deposited tables, the
        # PMD table (64 GiB span) and the PUD table (128 TiB span); 2 SRCU waits
        "host_pmd_zap": 32,
        "host_folio_free": 32,
        "host_table_free": 34,
        "srcu_sync": 2,
        # the full-mm gather frees 2 tables (PMD, PUD): one flush_tlb_mm at tlb_finish_mmu
        "host_tlb_flush_mm": 1,
    }
    assert events("v5.10", w, fwb=False) == v510
    assert events("v6.19", w, fwb=False) == {**v510, "resched_point": 32_767}


def test_v619_four_level_64t_guest() -> None:
    # 64 TiB of 1 GiB blocks at [1G, 64T+1G): auto IPA = 47 bits (2**46 = 64T is not enough),
    # 4 levels, 256 L0 entries of 512 GiB, 1 pgd page.  L0 entries 0..128 hold a PUD table
    # (entry 0: blocks 1..511; 1..127 full; 128: one block at 64T) -> 129 PUD tables,
    # 65,536 blocks.
    w = Workload(vm_bytes=64 * T, backing=B1G, event="exit")
    assert w.geometry().ipa_bits == 47 and w.geometry().levels == 4
    # v5.10, one walk: 256 L0 + 129 × 512 PUD entries = 66,304 visits; put_page 65,536 + 129
    # = 65,665; tables 129 + 1 pgd = 130; no resched.
    v510 = {
        "notifier_call": 1,
        "entry_visit": 66_304,
        "put_page": 65_665,
        "table_free": 130,
        # host exit_mmap: 65,536 1 GiB hugetlb pages zapped and back to the pool; the PUD
        # tables of the 129 512 GiB regions they touch; 2 SRCU waits
        "host_hugetlb_zap": 65_536,
        "host_hugetlb_free": 65_536,
        "host_table_free": 129,
        "srcu_sync": 2,
        # the full-mm gather frees the 129 PUD tables (< 509): one flush_tlb_mm
        "host_tlb_flush_mm": 1,
    }
    assert events("v5.10", w, fwb=True, tlbi_range=True) == v510
    # v6.19: 2**47 / 2**30 = 131,072 chunks -> 131,071 resched points.  Each chunk loads its L0
    # entry (131,072) and, while its PUD table exists, one PUD entry: L0 entries 0..127 all
    # 512 chunks (the table goes in the chunk of its last block) = 65,536, entry 128 only its
    # first chunk (the table is freed there) = 1 -> 131,072 + 65,537 = 196,609 visits.
    assert events("v6.19", w, fwb=True, tlbi_range=True) == {
        **v510, "entry_visit": 196_609, "resched_point": 131_071,
    }


# ----------------------------------------------------------------------------------------------
# --kernel: the mainline variant in force at each boundary version

KERNEL_BOUNDARIES = [
    ("5.8", "v5.5"), ("5.9", "v5.9"), ("5.10", "v5.10"), ("6.0", "v5.10"), ("6.1", "v6.1"),
    ("6.5", "v6.2"), ("6.6", "v6.6"), ("6.6.46", "v6.6"), ("6.6.47", "v6.9"), ("6.8", "v6.6"),
    ("6.9", "v6.9"), ("6.18", "v6.9"), ("6.19", "v6.19"),
]


@pytest.mark.parametrize(("version", "name"), KERNEL_BOUNDARIES)
def test_for_kernel_boundaries(version: str, name: str) -> None:
    assert VS.for_kernel(version).name == name


def test_for_kernel_too_old() -> None:
    with pytest.raises(UserError):
        VS.for_kernel("4.19")


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        cli.main(list(argv))
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def test_cli_kernel_boundaries(capsys) -> None:
    for version, name in KERNEL_BOUNDARIES:
        code, out, err = run_cli(capsys, "estimate", "--vm", "1G", "--machine", "d05", "--kernel", version,
                                 "--format", "json")
        assert code == 0, (version, err)
        assert [v["name"] for v in json.loads(out)["variants"]] == [name], version
    code, out, err = run_cli(capsys, "estimate", "--vm", "1G", "--machine", "d05", "--kernel", "4.19")
    assert code == 2 and "--kernel" in err


# ----------------------------------------------------------------------------------------------
# Every path names its notifier event and kernel function

PATH_NAMES = {
    "exit": ("kvm_mmu_notifier_release", "kvm_arch_flush_shadow_all", "kvm_pgtable_stage2_destroy"),
    "munmap": ("MMU_NOTIFY_UNMAP", "kvm_unmap_hva_range", "unmap_stage2_range"),
    "clear": ("MMU_NOTIFY_CLEAR", "kvm_unmap_hva_range"),
    "oom": ("MMU_NOTIFY_UNMAP", "non-blockable", "kvm_unmap_hva_range"),
    "memslot-delete": ("KVM_SET_USER_MEMORY_REGION", "kvm_arch_flush_shadow_memslot"),
    "reset": ("KVM_ARM_VCPU_INIT", "stage2_unmap_vm"),
    "block-retry": ("user_mem_abort", "stage2_set_pmd_huge"),
    "munmap-then-exit": ("munmap", "exit"),
}


def test_every_path_names_its_kernel_functions(capsys) -> None:
    assert set(PATH_NAMES) == set(paths.PATH_NAMES)
    for event, names in PATH_NAMES.items():
        code, out, err = run_cli(capsys, "estimate", "--vm", "2G", "--machine", "graviton3", "--kernel", "6.8",
                                 "--event", event, "--format", "json")
        assert code == 0, (event, err)
        doc = json.loads(out)
        assert doc["workload"]["event"] == event
        for n in names:
            assert n in doc["kernel_path"], (event, n)


def test_lock_hold_warning_in_json_and_table(capsys) -> None:
    argv = ("estimate", "--vm", "64G", "--backing", "4K", "--machine", "d05", "--kernel", "6.1")
    code, out, _ = run_cli(capsys, *argv, "--format", "json")
    assert code == 0
    doc = json.loads(out)
    (warning,) = doc["warnings"]
    assert warning.startswith("v6.1: need_resched latency") and "mmu_lock not held" in warning
    (hold,) = doc["lock_hold_warnings"]
    assert hold["variant"] == "v6.1" and hold["threshold"] == "need_resched"
    assert hold["first_fire_ns"] == 100e6 and hold["on_by_default"] is False
    code, out, _ = run_cli(capsys, *argv)
    assert code == 0 and "mmu_lock not held" in out and "need_resched set for > N ns" in out
