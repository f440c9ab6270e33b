"""v6.2+ table->block retry: the replaced subtree is freed in an RCU callback, the fault holds
mmu_lock for read (issue 12).  Every expected number is worked by hand in the comment beside it.

Kernel (v6.2, Oliver Upton's "KVM: arm64: Parallel stage-2 fault handling"; docs/model.md §13):
``user_mem_abort`` takes ``read_lock(&kvm->mmu_lock)``; the map walker reaches the table entry at
the block's level, ``stage2_map_walk_table_pre`` breaks it (``stage2_try_break_pte``: one
VMID-wide TLBI — a range flush on a TLBIRANGE CPU from v6.6 — and ``put_page`` on the parent
table), installs the block, and passes the unlinked table to ``free_unlinked_table``
(``free_removed_table`` before v6.5) -> ``call_rcu``.  The callback walks it with
``stage2_free_walker`` (one load per entry, one ``put_page`` per valid entry) and frees the page.

So with ``free: rcu`` the totals do not change; the last level's visits and leaves and the
last-level table's ``table_free`` leave the fault's segment (they are in the totals, in no
segment, like the host frees).

Layout used by hand: 40-bit IPA, 4 KiB granule (3 levels: 1 GiB entry-level entries, PMD tables
of 512 × 2 MiB, PTE tables of 512 × 4 KiB).  One memslot [1G, 1G+4M): [1G, 1G+2M) in 4 KiB pages
(PTE table T under entry 0 of the PMD table M of entry-level entry 1), [1G+2M, 1G+4M) one 2 MiB
block at M entry 1 (so M keeps a leaf and is not freed).  Block retry over [1G, 1G+2M).
"""

from __future__ import annotations

import pytest

from s2teardown.core.behaviour import Behaviour
from s2teardown.core.counts import batch_from_layout, count
from s2teardown.core.geometry import Geometry
from s2teardown.core.layout import BLOCK_RETRY, Extent, Invocation, Layout, Memslot
from s2teardown.core.vocabulary import EVENTS, PASS_KINDS
from s2teardown.errors import UserError
from s2teardown.inputs.variants import load_variants
from s2teardown.inputs.workload import Workload, uniform_batch
from s2teardown.oracle.walker import walk

K, M, G = 1 << 10, 1 << 20, 1 << 30
VS = load_variants()

LAY = Layout(Geometry(4096, 40), (Memslot(G, G + 4 * M),),
             (Extent(G, G + 2 * M, 4 * K, 0), Extent(G + 2 * M, G + 4 * M, 2 * M, 0)))
RETRY = (Invocation(BLOCK_RETRY, G, G + 2 * M),)

#: v6.2's block_retry row, field by field (v5.10's destroy + VMALLS12E1IS, v6.2's lock and free)
V62 = Behaviour(walk="destroy", cmo="none", leaf_tlbi="none", table_tlbi="none", final_flush="vmall",
                resched="top_level", resched_when="always", lock="read", free="rcu")
V61 = Behaviour(walk="destroy", cmo="none", leaf_tlbi="none", table_tlbi="none", final_flush="vmall")


def nz(vector) -> dict[str, int]:
    return {e: int(vector[i]) for i, e in enumerate(EVENTS) if int(vector[i])}


def both(lay: Layout, event, beh: Behaviour, *, fwb: bool = False, tlbi_range: bool = False):
    """Walker and closed form for one behaviour on block_retry; they must agree exactly."""
    behs = {k: Behaviour() for k in PASS_KINDS} | {BLOCK_RETRY: beh}
    w = walk(lay, event, behs, fwb=fwb, cache_line=64, tlbi_range=tlbi_range)
    c = count(batch_from_layout(lay, event), [behs], fwb=fwb, cache_line=64, tlbi_range=tlbi_range,
              with_segments=True)
    assert c.segments is not None
    segs = c.segments[0][0]
    assert nz(c.events[0, 0]) == nz(w.events)
    assert [nz(s) for s in segs.events] == [nz(s) for s in w.segments]
    assert segs.lock_held.tolist() == list(w.lock_held_segments)
    return w


# totals of the retry over [1G, 1G+2M), the same inline or deferred:
#   visits   = entry-level entry 1 + M entry 0 + T's 512 PTEs = 514
#   put_page = 512 (T's valid entries) + 1 (T's entry in M) = 513
#   table_free = T = 1;  one VMALLS12E1IS (kvm_call_hyp(__kvm_tlb_flush_vmid))
TOTALS = {"notifier_call": 1, "entry_visit": 514, "put_page": 513, "table_free": 1, "flush_remote_tlbs": 1}


def test_v62_retry_defers_the_subtree_free_by_hand() -> None:
    w = both(LAY, RETRY, V62)
    assert nz(w.events) == TOTALS
    # the fault's one segment (a 2 MiB range in a 1 GiB chunk: no resched point):
    #   the fault entry, the walk down to M entry 0 (2 visits), the break of the table entry
    #   (put_page on M), the VMID-wide flush
    (seg,) = w.segments
    assert nz(seg) == {"notifier_call": 1, "entry_visit": 2, "put_page": 1, "flush_remote_tlbs": 1}
    # the RCU callback: T's 512 entries loaded, 512 references dropped, T freed
    assert nz(w.deferred) == {"entry_visit": 512, "put_page": 512, "table_free": 1}
    # mmu_lock held for read: still a non-preemptible holder
    assert w.lock_held_segments == (True,)


def test_v61_retry_frees_inline_by_hand() -> None:
    w = both(LAY, RETRY, V61)
    assert nz(w.events) == TOTALS
    (seg,) = w.segments
    assert nz(seg) == TOTALS  # everything inside the fault's stretch, under the write lock
    assert nz(w.deferred) == {}


def test_v55_style_unmap_walk_with_rcu_free_by_hand() -> None:
    # Not a kernel that existed (v5.5's unmap walk with v6.2's free), but the rule is the same:
    # the PTE work is the callback's.  No FWB, 64-byte lines:
    #   totals: 512 PTE clears, 512 + 1 TLBI calls, 512 cleans of 64 lines = 32,768 lines
    #   fault:  notifier, 2 visits, T's entry cleared in M (table_clear, its TLBI, put_page)
    #   callback: 512 visits, the 512 PTEs' clear + TLBI + clean + put_page, T's free
    w = both(LAY, RETRY, Behaviour(free="rcu"))
    assert nz(w.events) == {
        "notifier_call": 1, "entry_visit": 514, "pte_clear": 512, "table_clear": 1, "put_page": 513,
        "tlb_flush_vmid_ipa": 513, "dcache_flush_call": 512, "dc_civac_line": 32_768, "table_free": 1,
    }
    (seg,) = w.segments
    assert nz(seg) == {"notifier_call": 1, "entry_visit": 2, "table_clear": 1, "put_page": 1,
                       "tlb_flush_vmid_ipa": 1}
    assert nz(w.deferred) == {"entry_visit": 512, "pte_clear": 512, "put_page": 512,
                              "tlb_flush_vmid_ipa": 512, "dcache_flush_call": 512,
                              "dc_civac_line": 32_768, "table_free": 1}


def test_two_and_four_levels_by_hand() -> None:
    # 32-bit IPA, 4 KiB: 2 levels, 2**32 / 2**21 = 2,048 entry-level entries of 2 MiB (in 4 pgd
    # pages).  Pages at [0, 2M): one PTE table under entry 0.  The retry loads entry 0 (fault)
    # and the PTE table's 512 entries (callback).
    g2 = Geometry(4096, 32)
    assert g2.levels == 2 and g2.span(0) == 2 * M
    lay2 = Layout(g2, (Memslot(0, 4 * M),), (Extent(0, 2 * M, 4 * K, 0), Extent(2 * M, 4 * M, 2 * M, 0)))
    w = both(lay2, (Invocation(BLOCK_RETRY, 0, 2 * M),), V62)
    assert nz(w.segments[0]) == {"notifier_call": 1, "entry_visit": 1, "put_page": 1, "flush_remote_tlbs": 1}
    assert nz(w.deferred) == {"entry_visit": 512, "put_page": 512, "table_free": 1}
    # 44-bit IPA: 4 levels (L0 of 512 GiB, PUD of 1 GiB, PMD of 2 MiB).  Same guest as LAY: the
    # fault loads L0 entry 0, PUD entry 1, PMD entry 0 (3 visits).
    lay4 = Layout(Geometry(4096, 44), LAY.memslots, LAY.extents)
    w = both(lay4, RETRY, V62)
    assert nz(w.segments[0]) == {"notifier_call": 1, "entry_visit": 3, "put_page": 1, "flush_remote_tlbs": 1}
    assert nz(w.deferred) == {"entry_visit": 512, "put_page": 512, "table_free": 1}


def test_v66_range_flush_stays_in_the_fault() -> None:
    # v6.6+: stage2_try_break_pte flushes the replaced table's range: 2 MiB = 512 pages -> one
    # hyp call, ops(512) = [(512 >> 6) & 31 = 8 != 0] = 1.  It is the fault's, not the callback's.
    beh = Behaviour(walk="destroy", cmo="none", leaf_tlbi="none", table_tlbi="none",
                    final_flush="range_or_vmall", lock="read", free="rcu")
    w = both(LAY, RETRY, beh, fwb=True, tlbi_range=True)
    assert nz(w.segments[0]) == {"notifier_call": 1, "entry_visit": 2, "put_page": 1,
                                 "range_flush_call": 1, "range_tlbi_op": 1}
    assert nz(w.deferred) == {"entry_visit": 512, "put_page": 512, "table_free": 1}


# ----------------------------------------------------------------------------------------------
# the bundled rows


def counted(name: str, w: Workload, *, tlbi_range: bool = False):
    c = count(uniform_batch([w]), [VS.lookup(name).behaviours], fwb=False, tlbi_range=tlbi_range,
              cache_line=64, with_segments=True)
    assert c.segments is not None
    return nz(c.events[0, 0]), [nz(s) for s in c.segments[0][0].events], c.segments[0][0].lock_held.tolist()


def test_bundled_rows_v61_inline_v62_rcu() -> None:
    # --event block-retry on a 1 GiB guest of 4 KiB pages (at 1 GiB): the PTE table of
    # [1G, 1G+2M) is replaced.  Totals as test_history's v5.10 case (514 visits, 513 put_page,
    # 1 free, 1 VMALLS12E1IS) for v6.1 and v6.2; v6.2's segment keeps 2 visits and 1 put_page.
    w = Workload(vm_bytes=G, backing=((4 * K, 100.0),), event="block-retry")
    tot61, segs61, lock61 = counted("v6.1", w)
    tot62, segs62, lock62 = counted("v6.2", w)
    assert tot61 == tot62 == TOTALS
    assert segs61 == [TOTALS]
    assert segs62 == [{"notifier_call": 1, "entry_visit": 2, "put_page": 1, "flush_remote_tlbs": 1}]
    assert lock61 == lock62 == [True]
    v62 = VS.lookup("v6.2").behaviours[BLOCK_RETRY]
    assert (v62.lock, v62.free) == ("read", "rcu")
    assert (VS.lookup("v6.1").behaviours[BLOCK_RETRY].free, VS.lookup("v5.10").behaviours[BLOCK_RETRY].lock) \
        == ("inline", "held")
    # every later row inherits it; no other kind is touched
    for name in ("v6.6", "v6.9", "v6.19", "v7.2"):
        assert VS.lookup(name).behaviours[BLOCK_RETRY].free == "rcu", name
        assert all(VS.lookup(name).behaviours[k].free == "inline" for k in PASS_KINDS if k != BLOCK_RETRY)
    # v6.6 on a TLBIRANGE CPU: the range flush of 512 pages is in the fault's segment
    tot66, segs66, _ = counted("v6.6", w, tlbi_range=True)
    assert segs66 == [{"notifier_call": 1, "entry_visit": 2, "put_page": 1, "range_flush_call": 1,
                       "range_tlbi_op": 1}]
    assert tot66 == {**{k: v for k, v in TOTALS.items() if k != "flush_remote_tlbs"},
                     "range_flush_call": 1, "range_tlbi_op": 1}


def test_estimate_stretch_shrinks_total_stays() -> None:
    from s2teardown.features.estimate import estimate
    from s2teardown.inputs.machine import load_machine

    w = Workload(vm_bytes=G, backing=((4 * K, 100.0),), event="block-retry")
    e = estimate(load_machine("d05"), [VS.lookup("v6.1"), VS.lookup("v6.2")], w)
    b = e.breakdown
    assert b.stretch_ns is not None
    s61, s62 = (float(x) for x in b.stretch_ns[0])
    assert s62 < s61
    assert b.time_ns[0, 0].sum() == pytest.approx(b.time_ns[0, 1].sum(), rel=1e-12)


# ----------------------------------------------------------------------------------------------
# the variants file


def test_rcu_free_only_under_block_retry(tmp_path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("schema_version: 1\nvariants:\n  - name: bad\n    base: v6.2\n    unmap: {free: rcu}\n")
    with pytest.raises(UserError) as exc:
        load_variants(f)
    msg = str(exc.value)
    assert "variants[bad].unmap.free" in msg and "only under block_retry" in msg


def test_a_base_less_variant_may_omit_free(tmp_path) -> None:
    # files written before the field existed stay valid: free defaults to inline
    block = ("{walk: unmap, cmo: per_leaf, leaf_tlbi: per_entry, table_tlbi: per_entry, "
             "final_flush: none, resched: top_level, resched_when: always, lock: held}")
    f = tmp_path / "old.yaml"
    f.write_text("schema_version: 1\nvariants:\n  - name: old\n    title: old\n"
                 + "".join(f"    {k}: {block}\n" for k in PASS_KINDS))
    v = load_variants(f).lookup("old")
    assert {b.free for b in v.behaviours.values()} == {"inline"}
    assert v.origin[(BLOCK_RETRY, "free")] == "old"
