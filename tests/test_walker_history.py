"""The literal walker on the later kernel strategies, against counts worked out by hand.

Every expected number below is a literal derived in the comment next to it from the layout and
the strategy's definition (s2teardown/oracle/walker.py, behaviour.py CHOICES), never computed by the
code under test.  Units: K = 1024, M = 2**20, G = 2**30.  Facts used throughout (4 KiB granule):

* 40-bit IPA -> 3 levels: 1024 entry-level entries of 1 GiB in 2 pgd pages; PMD tables of 512
  entries of 2 MiB; PTE tables of 512 entries of 4 KiB.
* 44-bit IPA -> 4 levels: 32 entry-level (L0) entries of 512 GiB in 1 pgd page; PUD tables of
  512 entries of 1 GiB; then PMD and PTE tables as above.
* Chunks: "top_level" = one entry-level entry; "largest_block" = 1 GiB with 4 KiB pages (32 MiB
  with 16 KiB); "1g" = 1 GiB; "none" = the whole pass.  Each chunk is a separate walk from the
  entry level, so with 4 levels every 1 GiB chunk visits its L0 entry again.
* Lines per leaf at 64-byte lines: 4 KiB -> 64; 2 MiB -> 32,768.
* Range flush of n pages: ops(n) = (n & 1) + #{scale in 0..3 : (n >> (5*scale + 1)) & 31 != 0}.
"""

from __future__ import annotations

import pytest

from s2teardown.core.behaviour import STOCK, Behaviour
from s2teardown.core.geometry import Geometry
from s2teardown.core.layout import (
    BLOCK_RETRY,
    MEMSLOT,
    RESET,
    TEARDOWN,
    UNMAP,
    Extent,
    Invocation,
    Layout,
    Memslot,
    exit_event,
)
from s2teardown.core.vocabulary import EVENTS
from s2teardown.oracle.walker import (
    WalkResult,
    build_table,
    range_flush_counts,
    range_tlbi_ops,
    run_event,
    walk,
)

K = 1 << 10
M = 1 << 20
G = 1 << 30

G40 = Geometry(4096, 40)
G44 = Geometry(4096, 44)

# v5.10 exit: detached table destroyed without the lock, no TLBI, no CMO, no resched.
V510_DESTROY = Behaviour(
    walk="destroy",
    cmo="none",
    leaf_tlbi="none",
    table_tlbi="none",
    resched="none",
    lock="unlocked",
)
# v6.6.0..v6.8 munmap: deferred range flush, table TLBIs deferred too, v6.1 chunks.
V66_UNMAP = Behaviour(
    leaf_tlbi="range", table_tlbi="deferred", resched="largest_block", resched_when="blockable"
)


def layout(geometry: Geometry, slots: list[tuple[int, int]], extents: list[tuple]) -> Layout:
    """extents: (lo, hi, leaf, slot[, device])."""
    return Layout(
        geometry,
        tuple(Memslot(lo, hi) for lo, hi in slots),
        tuple(Extent(*e) for e in extents),
    )


def as_dict(vector) -> dict[str, int]:
    return {name: int(vector[i]) for i, name in enumerate(EVENTS) if int(vector[i])}


def check(result: WalkResult, expected: dict[str, int], *, locked: tuple[bool, ...] | None = None):
    """Totals equal ``expected`` (unlisted events are 0); segments sum to the totals less the host
    frees, one per resched point plus one, each resched point ending its segment; lock flags
    equal ``locked`` (default: all held)."""
    assert as_dict(result.events) == expected
    host = {i for i, e in enumerate(EVENTS) if e.startswith("host_") or e == "srcu_sync"}
    total = [0] * len(EVENTS)
    for seg in result.segments:
        for i, v in enumerate(seg):
            assert v >= 0
            total[i] += int(v)
    for i in range(len(EVENTS)):
        assert total[i] == (0 if i in host else int(result.events[i])), EVENTS[i]
    resched = EVENTS.index("resched_point")
    assert len(result.segments) == int(result.events[resched]) + 1
    assert [int(s[resched]) for s in result.segments] == [1] * (len(result.segments) - 1) + [0]
    if locked is None:
        locked = (True,) * len(result.segments)
    assert result.lock_held_segments == locked


# --------------------------------------------------------------------------------------------
# (1) v6.1 chunks on a 4-level IPA: the L0 entry is visited once per chunk


# 44-bit IPA, [1G, 3G) of 4 KiB pages: L0 entry 0 -> PUD table P; P entries 1 and 2 -> PMD
# tables M1, M2; each holds 512 PTE tables of 512 pages.  524,288 PTEs, 1,024 PTE tables.
PAGES_2G = layout(G44, [(1 * G, 3 * G)], [(1 * G, 3 * G, 4 * K, 0)])

# One 1 GiB chunk [kG, (k+1)G) of that layout, k = 1 or 2: L0 entry 0, P entry k, the 512
# entries of Mk, the 512 * 512 = 262,144 PTEs -> 1 + 1 + 512 + 262,144 = 262,658 visits;
# 262,144 PTEs cleared; 512 PTE tables and Mk emptied (513 tables).
CHUNK_1G_PAGES = {
    "entry_visit": 262_658,
    "pte_clear": 262_144,
    "table_clear": 513,
    "put_page": 262_657,  # 262,144 + 513
    "tlb_flush_vmid_ipa": 262_657,
    "dcache_flush_call": 262_144,
    "dc_civac_line": 16_777_216,  # 262,144 * 64
    "table_free": 513,
}


def test_largest_block_chunks_on_four_levels() -> None:
    table = build_table(PAGES_2G)
    event = (Invocation(UNMAP, 1 * G, 3 * G),)
    r = run_event(
        table,
        PAGES_2G,
        event,
        {UNMAP: Behaviour(resched="largest_block")},
        fwb=False,
        cache_line=64,
    )
    # Chunks [1G, 2G) and [2G, 3G): one resched point between them.  P still holds M2 after the
    # first chunk; the second chunk empties it too, so P is freed there (514 tables).
    check(
        r,
        {
            "notifier_call": 1,
            "memslot_visit": 1,
            "entry_visit": 525_316,  # 2 * 262,658 (L0 entry 0 visited twice)
            "pte_clear": 524_288,
            "table_clear": 1_027,  # 1024 PTE tables + M1 + M2 + P
            "put_page": 525_315,  # 524,288 + 1027
            "tlb_flush_vmid_ipa": 525_315,
            "dcache_flush_call": 524_288,
            "dc_civac_line": 33_554_432,  # 524,288 * 64
            "table_free": 1_027,
            "resched_point": 1,
        },
    )
    first, second = (as_dict(s) for s in r.segments)
    assert first == {"notifier_call": 1, "memslot_visit": 1, **CHUNK_1G_PAGES, "resched_point": 1}
    assert second == {
        **CHUNK_1G_PAGES,
        "table_clear": 514,  # 512 PTE tables + M2 + P (the PUD table, freed in chunk 2)
        "put_page": 262_658,  # 262,144 + 514
        "tlb_flush_vmid_ipa": 262_658,
        "table_free": 514,
    }
    assert table.pages() == [] and table.pgd[0].refcount == 1


def test_top_level_chunk_on_four_levels_is_one_walk() -> None:
    # v5.5 on the same unmap: the L0 entry spans 512 GiB, so the pass is one chunk: L0 entry 0
    # visited once, no resched point, everything else as above.
    r = walk(PAGES_2G, (Invocation(UNMAP, 1 * G, 3 * G),), {UNMAP: STOCK}, fwb=False, cache_line=64)
    check(
        r,
        {
            "notifier_call": 1,
            "memslot_visit": 1,
            "entry_visit": 525_315,  # 1 + 2 * (1 + 512 + 262,144)
            "pte_clear": 524_288,
            "table_clear": 1_027,
            "put_page": 525_315,
            "tlb_flush_vmid_ipa": 525_315,
            "dcache_flush_call": 524_288,
            "dc_civac_line": 33_554_432,
            "table_free": 1_027,
        },
    )


# --------------------------------------------------------------------------------------------
# (2) The destroy walk (v5.10 unchunked, v6.19 in 1 GiB chunks)


def test_destroy_in_1g_chunks_on_four_levels() -> None:
    # Exit of PAGES_2G with a destroy walk in 1 GiB chunks (v6.19-like).  The other fields are
    # left at v5.5's per-entry TLBI and per-leaf CMO: a destroy does neither, whatever they say.
    b = Behaviour(walk="destroy", resched="1g", lock="unlocked")
    r = walk(PAGES_2G, exit_event(PAGES_2G), {TEARDOWN: b}, fwb=False, cache_line=64)
    # 2**44 / 2**30 = 16,384 chunks, each visiting its L0 entry:
    #   chunk 0 [0, 1G): L0 entry 0 + P entry 0 (empty) = 2 visits; P keeps M1, M2.
    #   chunks 1 and 2: 1 + 262,657 visits each, as CHUNK_1G_PAGES; chunk 2 frees P.
    #   chunks 3..511: L0 entry 0, now empty: 1 visit each; chunks 512..16,383: L0 entries
    #   1..31, empty: 1 visit each.
    # entry visits: 2 + 2 * 262,658 + 16,381 * 1 = 541,699.
    check(
        r,
        {
            "notifier_call": 1,
            "entry_visit": 541_699,
            "put_page": 525_315,  # 524,288 leaves + 1024 PTE tables + M1 + M2 + P
            "table_free": 1_028,  # 1027 tables + 1 pgd page
            "resched_point": 16_383,  # between the 16,384 chunks
        },
        locked=(False,) * 16_384,  # the destroy walk never holds mmu_lock
    )
    segs = [as_dict(s) for s in r.segments]
    assert segs[0] == {"notifier_call": 1, "entry_visit": 2, "resched_point": 1}
    assert segs[1] == {
        "entry_visit": 262_658,
        "put_page": 262_657,
        "table_free": 513,
        "resched_point": 1,
    }
    assert segs[2] == {
        "entry_visit": 262_658,
        "put_page": 262_658,
        "table_free": 514,
        "resched_point": 1,
    }
    assert all(s == {"entry_visit": 1, "resched_point": 1} for s in segs[3:16_383])
    assert segs[16_383] == {"entry_visit": 1, "table_free": 1}  # L0 entry 31, then the pgd


def test_destroy_unchunked_v510() -> None:
    # v5.10: the same destroy as one walk: the 32 L0 entries, all 512 entries of P, and below
    # P entries 1 and 2 the same 512 + 262,144 visits each.
    r = walk(PAGES_2G, exit_event(PAGES_2G), {TEARDOWN: V510_DESTROY}, fwb=False, cache_line=64)
    check(
        r,
        {
            "notifier_call": 1,
            "entry_visit": 525_856,  # 32 + 512 + 2 * (512 + 262,144)
            "put_page": 525_315,
            "table_free": 1_028,
        },
        locked=(False,),
    )


# --------------------------------------------------------------------------------------------
# (3) The deferred range flush (v6.6): only with both TLBIRANGE and FWB

# 40-bit IPA, [1G, 4G) of 2 MiB blocks: entry-level entries 1, 2, 3 -> PMD tables of 512
# blocks.  UNMAP of all of it in 1 GiB chunks: 3 chunks of 1 + 512 visits, 512 blocks and one
# emptied PMD table each.
BLOCKS_3G = layout(G40, [(1 * G, 4 * G)], [(1 * G, 4 * G, 2 * M, 0)])
BLOCKS_3G_COMMON = {
    "notifier_call": 1,
    "memslot_visit": 1,
    "entry_visit": 1_539,  # 3 * 513
    "block_clear": 1_536,
    "table_clear": 3,
    "put_page": 1_539,  # 1536 + 3
    "table_free": 3,
    "resched_point": 2,
}


def test_range_flush_applies_with_tlbirange_and_fwb() -> None:
    r = walk(
        BLOCKS_3G,
        (Invocation(UNMAP, 1 * G, 4 * G),),
        {UNMAP: V66_UNMAP},
        fwb=True,
        cache_line=64,
        tlbi_range=True,
    )
    # Each chunk is 1 GiB = 262,144 = 2**18 pages: even (0); scale 0: (2**17) & 31 = 0;
    # scale 1: (2**12) & 31 = 0; scale 2: (2**7 = 128) & 31 = 0; scale 3: (2**2 = 4) & 31 = 4
    # -> one range TLBI.  No per-leaf TLBI; the table TLBIs are deferred to the range flush;
    # FWB: no CMO.
    check(r, {**BLOCKS_3G_COMMON, "range_flush_call": 3, "range_tlbi_op": 3})
    chunk = {
        "entry_visit": 513,
        "block_clear": 512,
        "table_clear": 1,
        "put_page": 513,
        "table_free": 1,
        "range_flush_call": 1,
        "range_tlbi_op": 1,
    }
    assert [as_dict(s) for s in r.segments] == [
        {"notifier_call": 1, "memslot_visit": 1, **chunk, "resched_point": 1},
        {**chunk, "resched_point": 1},
        chunk,
    ]


def test_range_flush_v69_keeps_table_tlbi() -> None:
    # v6.9 / 6.6.47: the table entries get their TLBI again (3 of them); leaves still deferred.
    b = Behaviour(leaf_tlbi="range", table_tlbi="per_entry", resched="largest_block")
    r = walk(
        BLOCKS_3G,
        (Invocation(UNMAP, 1 * G, 4 * G),),
        {UNMAP: b},
        fwb=True,
        cache_line=64,
        tlbi_range=True,
    )
    check(
        r, {**BLOCKS_3G_COMMON, "tlb_flush_vmid_ipa": 3, "range_flush_call": 3, "range_tlbi_op": 3}
    )


@pytest.mark.parametrize(
    ("fwb", "tlbi_range", "cmo"),
    [
        # TLBIRANGE without FWB: no deferral; per-entry TLBI with a level hint, and the CMO
        # of every block: 1536 calls of 32,768 lines = 50,331,648.
        (False, True, {"dcache_flush_call": 1_536, "dc_civac_line": 50_331_648}),
        # FWB without TLBIRANGE: no deferral either; FWB still removes the CMO.
        (True, False, {}),
    ],
)
def test_range_flush_does_not_apply(fwb: bool, tlbi_range: bool, cmo: dict[str, int]) -> None:
    r = walk(
        BLOCKS_3G,
        (Invocation(UNMAP, 1 * G, 4 * G),),
        {UNMAP: V66_UNMAP},
        fwb=fwb,
        cache_line=64,
        tlbi_range=tlbi_range,
    )
    # 1536 blocks + 3 emptied tables ("deferred" has nothing to defer to) = 1539 TLBI calls.
    check(r, {**BLOCKS_3G_COMMON, "tlb_flush_vmid_ipa": 1_539, **cmo})


# --------------------------------------------------------------------------------------------
# (4) Range flushes of partial chunks


def test_range_flush_of_a_partial_chunk_1537_pages() -> None:
    # [1G, 1G+8M) of 4 KiB pages: PTE tables T0..T3 under PMD entries 0..3 of entry 1's PMD
    # table.  UNMAP [1G, 1G+6M+4K) = 1536 + 1 = 1537 pages, inside the chunk [1G, 2G): one
    # chunk.  Visits: entry 1, PMD entries 0..3, T0..T2 whole (3 * 512), T3 entry 0 = 1542.
    # T0..T2 emptied; T3 keeps 511 PTEs, so the PMD table stays.
    # ops(1537): 1537 = 1024 + 512 + 1: odd -> 1; (1537 >> 1) & 31 = 768 & 31 = 0;
    # (1537 >> 6) & 31 = 24 -> 1; (1537 >> 11) = 0; (1537 >> 16) = 0.  ops = 2.
    lay = layout(G40, [(1 * G, 2 * G)], [(1 * G, 1 * G + 8 * M, 4 * K, 0)])
    r = walk(
        lay,
        (Invocation(UNMAP, 1 * G, 1 * G + 6 * M + 4 * K),),
        {UNMAP: V66_UNMAP},
        fwb=True,
        cache_line=64,
        tlbi_range=True,
    )
    check(
        r,
        {
            "notifier_call": 1,
            "memslot_visit": 1,
            "entry_visit": 1_542,
            "pte_clear": 1_537,
            "table_clear": 3,
            "put_page": 1_540,  # 1537 + 3
            "table_free": 3,
            "range_flush_call": 1,
            "range_tlbi_op": 2,
        },
    )


def test_range_flush_with_every_scale() -> None:
    # [1G, 1G+64K): 16 pages in PTE table T0 under PMD entry 0 of entry 1.  UNMAP of
    # n = 65,536 + 2048 + 64 + 2 + 1 = 67,651 pages = [1G, 1G+264M+268K): one chunk.
    # ops: odd -> 1; fields (n >> 1), (n >> 6), (n >> 11), (n >> 16) & 31 hold bits 1, 6, 11,
    # 16 of n: 1, 1, 1, 1 -> 4.  ops = 5.
    # Visits: entry 1 + PMD entries 0..132 (264M / 2M = 132 whole + 1 partial = 133) + T0's
    # 512 entries = 646.  T0 and then the PMD table are emptied.
    lay = layout(G40, [(1 * G, 2 * G)], [(1 * G, 1 * G + 64 * K, 4 * K, 0)])
    hi = 1 * G + 264 * M + 268 * K
    assert (hi - 1 * G) // (4 * K) == 67_651
    r = walk(
        lay,
        (Invocation(UNMAP, 1 * G, hi),),
        {UNMAP: V66_UNMAP},
        fwb=True,
        cache_line=64,
        tlbi_range=True,
    )
    check(
        r,
        {
            "notifier_call": 1,
            "memslot_visit": 1,
            "entry_visit": 646,
            "pte_clear": 16,
            "table_clear": 2,
            "put_page": 18,
            "table_free": 2,
            "range_flush_call": 1,
            "range_tlbi_op": 5,
        },
    )


def test_range_flush_on_every_chunk_even_if_empty() -> None:
    # Nothing mapped.  UNMAP [1G-8K, 1G+12K) straddles the 1 GiB chunk boundary:
    #   chunk [1G-8K, 1G): entry 0, n = 2: (2 >> 1) & 31 = 1 -> 1 op;
    #   chunk [1G, 1G+12K): entry 1, n = 3: odd -> 1, (3 >> 1) & 31 = 1 -> 1; 2 ops.
    lay = layout(G40, [(1 * G - 2 * M, 1 * G + 2 * M)], [])
    r = walk(
        lay,
        (Invocation(UNMAP, 1 * G - 8 * K, 1 * G + 12 * K),),
        {UNMAP: V66_UNMAP},
        fwb=True,
        cache_line=64,
        tlbi_range=True,
    )
    check(
        r,
        {
            "notifier_call": 1,
            "memslot_visit": 1,
            "entry_visit": 2,
            "range_flush_call": 2,
            "range_tlbi_op": 3,
            "resched_point": 1,
        },
    )
    assert [as_dict(s) for s in r.segments] == [
        {
            "notifier_call": 1,
            "memslot_visit": 1,
            "entry_visit": 1,
            "range_flush_call": 1,
            "range_tlbi_op": 1,
            "resched_point": 1,
        },
        {"entry_visit": 1, "range_flush_call": 1, "range_tlbi_op": 2},
    ]


def test_unchunked_range_flush_is_split_at_max_tlbi_range_pages() -> None:
    # An (empty) exit of the 40-bit IPA with the range flush and no chunking: one pass of
    # 2**40 / 2**12 = 2**28 pages -> kvm_tlb_flush_vmid_range makes 2**28 / 2**21 = 128 calls of
    # MAX_TLBI_RANGE_PAGES pages, one range TLBI each (scale 3, num 31).
    lay = layout(G40, [(1 * G, 2 * G)], [])
    b = Behaviour(leaf_tlbi="range", resched="none")
    r = walk(lay, exit_event(lay), {TEARDOWN: b}, fwb=True, cache_line=64, tlbi_range=True)
    check(
        r,
        {
            "notifier_call": 1,
            "entry_visit": 1_024,
            "table_free": 2,  # the pgd pages
            "range_flush_call": 128,
            "range_tlbi_op": 128,
        },
    )


@pytest.mark.parametrize(
    ("pages", "ops"),
    [
        (1, 1),  # odd: one single-page TLBI
        (2, 1),  # (2 >> 1) & 31 = 1
        (3, 2),
        (64, 1),  # (64 >> 6) & 31 = 1
        (2_048, 1),  # 2**11: scale 2
        (8_192, 1),  # 512 MiB of 64 KiB pages: (8192 >> 11) & 31 = 4
        (262_144, 1),  # 2**18: scale 3 field = 4
        (1_537, 2),
        (67_651, 5),
        (2_097_151, 5),  # 2**21 - 1: odd + four fields of 31
    ],
)
def test_range_tlbi_ops(pages: int, ops: int) -> None:
    assert range_tlbi_ops(pages) == ops


def test_range_flush_counts() -> None:
    assert range_flush_counts(262_144) == (1, 1)
    assert range_flush_counts(2_097_152) == (1, 1)  # exactly MAX_TLBI_RANGE_PAGES
    assert range_flush_counts(2_097_155) == (2, 3)  # 2**21 (1 op) + 3 (2 ops)
    with pytest.raises(ValueError):
        range_tlbi_ops(2_097_152)
    with pytest.raises(ValueError):
        range_flush_counts(0)


def test_16k_granule_largest_block_is_32m() -> None:
    # 16 KiB granule, 44-bit IPA -> (44 - 8) // 11 = 3 levels: entry-level entries of 64 GiB,
    # level-1 entries of 32 MiB (the blocks), PTE tables of 2048 pages of 16 KiB.
    # [1G, 1G+128M): four 32 MiB blocks in entries 32..35 of the level-1 table under entry 0.
    g = Geometry(16384, 44)
    lay = layout(g, [(1 * G, 1 * G + 128 * M)], [(1 * G, 1 * G + 128 * M, 32 * M, 0)])
    event = (Invocation(UNMAP, 1 * G, 1 * G + 128 * M),)
    common = {
        "notifier_call": 1,
        "memslot_visit": 1,
        "block_clear": 4,
        "table_clear": 1,  # the level-1 table, emptied by the last block
        "put_page": 5,
        "tlb_flush_vmid_ipa": 5,
        "dcache_flush_call": 4,
        "dc_civac_line": 2_097_152,  # 4 * (32 MiB / 64 B = 524,288)
        "table_free": 1,
    }
    # v6.1: 32 MiB chunks -> 4 walks of (entry 0 + one level-1 entry), 3 resched points.
    r = walk(lay, event, {UNMAP: Behaviour(resched="largest_block")}, fwb=False, cache_line=64)
    check(r, {**common, "entry_visit": 8, "resched_point": 3})
    # v5.5 (one 64 GiB entry) and "1g" ([1G, 2G) holds the range): one walk, 1 + 4 visits.
    for resched in ("top_level", "1g"):
        r = walk(lay, event, {UNMAP: Behaviour(resched=resched)}, fwb=False, cache_line=64)
        check(r, {**common, "entry_visit": 5})


# --------------------------------------------------------------------------------------------
# (5) The other paths: memslot delete, vCPU reset, table -> block retry

# slot 0 [1G, 1G+4M): [1G, 1G+2M) of 4 KiB pages (PTE table T under PMD entry 0 of entry 1's
# PMD table M) and one 2 MiB block at M entry 1.  slot 1 [2G, 2G+2M): one 2 MiB block at PMD
# entry 0 of entry 2's PMD table M2.
PATHS = layout(
    G40,
    [(1 * G, 1 * G + 4 * M), (2 * G, 2 * G + 2 * M)],
    [
        (1 * G, 1 * G + 2 * M, 4 * K, 0),
        (1 * G + 2 * M, 1 * G + 4 * M, 2 * M, 0),
        (2 * G, 2 * G + 2 * M, 2 * M, 1),
    ],
)
PATHS_BEHAVIOURS = {MEMSLOT: STOCK, RESET: STOCK, BLOCK_RETRY: STOCK}
# slot 0 whole: entry 1, M entries 0 and 1, T's 512 PTEs = 515 visits; 512 PTEs and 1 block
# cleared; T then M emptied.
SLOT0 = {
    "entry_visit": 515,
    "pte_clear": 512,
    "block_clear": 1,
    "table_clear": 2,
    "put_page": 515,  # 513 + 2
    "tlb_flush_vmid_ipa": 515,
    "dcache_flush_call": 513,
    "dc_civac_line": 65_536,  # 512 * 64 + 32,768
    "table_free": 2,
}


@pytest.mark.parametrize(("final_flush", "flushes"), [("none", 0), ("vmall", 1)])
def test_memslot_delete(final_flush: str, flushes: int) -> None:
    # kvm_arch_flush_shadow_memslot: one pass over the slot, no memslot iteration, no host free.
    behaviours = {MEMSLOT: Behaviour(final_flush=final_flush)}
    r = walk(
        PATHS, (Invocation(MEMSLOT, 1 * G, 1 * G + 4 * M),), behaviours, fwb=False, cache_line=64
    )
    expected = {"notifier_call": 1, **SLOT0}
    if flushes:
        expected["flush_remote_tlbs"] = flushes
    check(r, expected)


def test_reset_walks_every_memslot_whole() -> None:
    # stage2_unmap_vm over [0, 2**40): both slots visited; slot 1 (2 visits: entry 2, M2 entry
    # 0; 1 block; M2 emptied), then slot 0 (SLOT0).  No host frees.
    r = walk(
        PATHS, (Invocation(RESET, 0, G40.ipa_size),), PATHS_BEHAVIOURS, fwb=False, cache_line=64
    )
    check(
        r,
        {
            "notifier_call": 1,
            "memslot_visit": 2,
            "entry_visit": 517,  # 2 + 515
            "pte_clear": 512,
            "block_clear": 2,
            "table_clear": 3,  # M2, T, M
            "put_page": 517,  # 514 + 3
            "tlb_flush_vmid_ipa": 517,
            "dcache_flush_call": 514,
            "dc_civac_line": 98_304,  # 512 * 64 + 2 * 32,768
            "table_free": 3,
        },
    )


def test_reset_takes_the_whole_intersecting_memslot() -> None:
    # A reset over [2G, 2G+4K) still walks the whole of slot 1 (its 2 MiB block goes), and
    # nothing of slot 0.
    r = walk(
        PATHS,
        (Invocation(RESET, 2 * G, 2 * G + 4 * K),),
        PATHS_BEHAVIOURS,
        fwb=False,
        cache_line=64,
    )
    check(
        r,
        {
            "notifier_call": 1,
            "memslot_visit": 2,
            "entry_visit": 2,
            "block_clear": 1,
            "table_clear": 1,
            "put_page": 2,
            "tlb_flush_vmid_ipa": 2,
            "dcache_flush_call": 1,
            "dc_civac_line": 32_768,
            "table_free": 1,
        },
    )


def test_block_retry() -> None:
    # stage2_set_pmd_huge finds T where a block should go: unmap [1G, 1G+2M) and retry.
    # entry 1, M entry 0, T's 512 PTEs = 514 visits; T emptied (M keeps its block).
    r = walk(
        PATHS,
        (Invocation(BLOCK_RETRY, 1 * G, 1 * G + 2 * M),),
        PATHS_BEHAVIOURS,
        fwb=False,
        cache_line=64,
    )
    check(
        r,
        {
            "notifier_call": 1,
            "entry_visit": 514,
            "pte_clear": 512,
            "table_clear": 1,
            "put_page": 513,
            "tlb_flush_vmid_ipa": 513,
            "dcache_flush_call": 512,
            "dc_civac_line": 32_768,  # 512 * 64
            "table_free": 1,
        },
    )


# --------------------------------------------------------------------------------------------
# (6) Lock flags

# 40-bit IPA, [1G, 3G) of 2 MiB blocks: entries 1 and 2 -> full PMD tables.
BLOCKS_2G = layout(G40, [(1 * G, 3 * G)], [(1 * G, 3 * G, 2 * M, 0)])
FULL_ENTRY = {  # one entry-level entry of BLOCKS_2G: 1 + 512 visits, 512 blocks, 1 table
    "entry_visit": 513,
    "block_clear": 512,
    "table_clear": 1,
    "put_page": 513,
    "tlb_flush_vmid_ipa": 513,
    "dcache_flush_call": 512,
    "dc_civac_line": 16_777_216,  # 512 * 32,768
    "table_free": 1,
}


def test_unlocked_destroy_exit() -> None:
    # v5.10 exit: 1024 entries + 2 * 512 = 2048 visits; a reference per block and per table;
    # 2 PMD tables + 2 pgd pages freed; one segment, without mmu_lock.
    r = walk(BLOCKS_2G, exit_event(BLOCKS_2G), {TEARDOWN: V510_DESTROY}, fwb=False, cache_line=64)
    check(
        r,
        {
            "notifier_call": 1,
            "entry_visit": 2_048,
            "put_page": 1_026,  # 1024 + 2
            "table_free": 4,
        },
        locked=(False,),
    )


def test_munmap_then_exit_lock_flags() -> None:
    # munmap of everything (v5.10 munmap: held, resched per entry), then the v5.10 exit.
    # The unmap ends its first segment at the resched point after entry 1; its entry 2 shares
    # the second segment with the whole (unlocked) destroy walk, which finds every entry empty
    # (1024 visits) and frees only the 2 pgd pages.
    event = (Invocation(UNMAP, 1 * G, 3 * G), *exit_event(BLOCKS_2G))
    r = walk(BLOCKS_2G, event, {UNMAP: STOCK, TEARDOWN: V510_DESTROY}, fwb=False, cache_line=64)
    check(
        r,
        {
            "notifier_call": 2,
            "memslot_visit": 1,
            "entry_visit": 2_050,  # 2 * 513 + 1024
            "block_clear": 1_024,
            "table_clear": 2,
            "put_page": 1_026,
            "tlb_flush_vmid_ipa": 1_026,
            "dcache_flush_call": 1_024,
            "dc_civac_line": 33_554_432,
            "table_free": 4,  # 2 PMD tables + 2 pgd pages
            "resched_point": 1,
        },
        locked=(True, False),
    )
    assert [as_dict(s) for s in r.segments] == [
        {"notifier_call": 1, "memslot_visit": 1, **FULL_ENTRY, "resched_point": 1},
        {**FULL_ENTRY, "notifier_call": 1, "entry_visit": 1_537, "table_free": 3},
    ]


def test_unlocked_unmap_every_segment_unlocked() -> None:
    # An unmap whose behaviour says "unlocked" (not a real kernel, but expressible): both of its
    # chunk-walks run without the lock, so both segments are reported unlocked.
    r = walk(
        BLOCKS_2G,
        (Invocation(UNMAP, 1 * G, 3 * G),),
        {UNMAP: Behaviour(lock="unlocked")},
        fwb=False,
        cache_line=64,
    )
    check(
        r,
        {
            "notifier_call": 1,
            "memslot_visit": 1,
            "entry_visit": 1_026,
            "block_clear": 1_024,
            "table_clear": 2,
            "put_page": 1_026,
            "tlb_flush_vmid_ipa": 1_026,
            "dcache_flush_call": 1_024,
            "dc_civac_line": 33_554_432,
            "table_free": 2,
            "resched_point": 1,
        },
        locked=(False, False),
    )
