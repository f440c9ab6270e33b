"""The oracle of the EL2 paths: pKVM's mapping tree and a nested guest's shadow Stage-2s, literally.

It shares no code with `core.el2` / `core.counts`: the pKVM guest is a literal tree of mappings
(one per guest RAM page, the ``struct pkvm_mapping`` rb-tree of arch/arm64/kvm/pkvm.c) and a
literal set of EL2 table pages; every hypercall is executed page by page, every event bumped one
at a time.  The shadow Stage-2s are real tables (`walker.Stage2Table`) walked by the walker's
own machinery over their whole IPA space.  docs/model.md §15 names the kernel functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from s2teardown.core.behaviour import Behaviour
from s2teardown.core.host import EVENT_OF as HOST_EVENT_OF
from s2teardown.core.host import HostOp
from s2teardown.core.layout import CLEAR, MEMSLOT, TEARDOWN, UNMAP, Invocation, Layout
from s2teardown.core.vocabulary import EVENT_INDEX, EVENTS
from s2teardown.oracle.host import host_counts
from s2teardown.oracle.walker import _Run, build_table, range_flush_counts, walk


class _Pkvm:
    """A pKVM guest: its mapping tree, its EL2 table pages, and the events counted so far."""

    def __init__(self, layout: Layout) -> None:
        g = layout.geometry
        self.g = g
        self.mappings: dict[int, bool] = {}  # gfn -> mapped (the rb-tree; insertion in GPA order)
        self.tables: set[tuple[int, int]] = set()  # (level, index) of each EL2 table page
        for e in sorted(layout.extents, key=lambda x: x.lo):
            if e.device:
                continue  # device memory is not in a pKVM guest's mapping tree (docs/model.md §15)
            for addr in range(e.lo, e.hi, g.granule):
                self.mappings[addr // g.granule] = True
                for level in range(1, g.levels):
                    self.tables.add((level, addr // g.span(level - 1)))
        self.events = [0] * len(EVENTS)

    def bump(self, name: str, n: int = 1) -> None:
        self.events[EVENT_INDEX[name]] += n

    def el2_walk(self) -> None:
        """One walk from the pgd down to a page at EL2: one entry loaded per level."""
        for _ in range(self.g.levels):
            self.bump("el2_entry_visit")

    def unshare(self, gfn: int) -> None:
        """pkvm_pgtable_stage2_unmap / _destroy: one __pkvm_host_unshare_guest, then rb_erase +
        kfree of the mapping."""
        self.bump("pkvm_unshare_call")
        self.el2_walk()  # the guest's Stage-2 walked down to the page ...
        self.bump("el2_entry_clear")  # ... its leaf cleared
        self.bump("el2_tlb_flush_vmid_ipa")  # ... and invalidated
        self.el2_walk()  # the host Stage-2 entry of the page ...
        self.bump("el2_entry_clear")  # ... written back to "owned by the host"
        self.bump("pkvm_mapping_free")
        del self.mappings[gfn]

    def reclaim(self, gfn: int, cache_line: int) -> None:
        """One __pkvm_reclaim_dying_guest_page and the host's unpin / account / free."""
        self.bump("pkvm_reclaim_call")
        self.el2_walk()  # kvm_pgtable_get_leaf
        self.bump("poison_page")  # hyp_poison_page: fixmap map ...
        for _ in range(0, self.g.granule, cache_line):
            self.bump("poison_line_zero")  # ... memset 0 ...
        for _ in range(0, self.g.granule, cache_line):
            self.bump("poison_line_clean")  # ... and clean to the PoC, FWB or not
        self.el2_walk()  # the guest leaf unmapped ...
        self.bump("el2_entry_clear")
        self.bump("el2_tlb_flush_vmid_ipa")
        self.el2_walk()  # the page handed back in the host Stage-2
        self.bump("el2_entry_clear")
        self.bump("pkvm_page_unpin")
        self.bump("pkvm_account")
        self.bump("pkvm_mapping_free")
        del self.mappings[gfn]

    def unmap_range(self, lo: int, hi: int) -> None:
        for gfn in [x for x in self.mappings if lo <= x * self.g.granule < hi]:
            self.unshare(gfn)

    def teardown(self, protected: bool, start_teardown: bool, cache_line: int) -> None:
        if start_teardown:
            self.bump("pkvm_start_teardown")
        for gfn in list(self.mappings):
            if protected:
                self.reclaim(gfn, cache_line)
            else:
                self.unshare(gfn)
        # kvm_arch_destroy_vm -> pkvm_destroy_hyp_vm -> the finalize hypercall
        self.bump("pkvm_finalize_call")
        self.bump("el2_flush_vmid")
        for _ in range(self.g.top_entries):
            self.bump("el2_entry_visit")  # reclaim_pgtable_pages: the emptied pgd walked
        for _ in range(len(self.tables) + self.g.pgd_pages):
            self.bump("hyp_memcache_free")  # free_hyp_memcache: every table page, the pgd's


def pkvm_walk(
    layout: Layout,
    event: Sequence[Invocation],
    *,
    protected: bool,
    start_teardown: bool,
    cache_line: int,
    host: Sequence[HostOp] = (),
) -> dict[str, int]:
    """A pKVM guest's events for ``event``: the notifier entries and memslot visits of the
    ordinary path, then per invocation the mapping tree's work (a protected VM ignores the
    notifier unmaps; its exit reclaims every page), and the host mm's own operations."""
    vm = _Pkvm(layout)
    for inv in event:
        vm.bump("notifier_call")
        if inv.kind in (UNMAP, CLEAR):
            for slot in layout.memslots:  # handle_hva_to_gpa still visits every memslot
                vm.bump("memslot_visit")
                lo, hi = max(inv.lo, slot.lo), min(inv.hi, slot.hi)
                if lo < hi and not protected:
                    vm.unmap_range(lo, hi)
        elif inv.kind == TEARDOWN:
            vm.teardown(protected, start_teardown, cache_line)
        else:
            raise ValueError(f"the {inv.kind} path is not modelled under pKVM")
    for counts in host_counts(layout, host):
        for name, n in counts.items():
            vm.bump(HOST_EVENT_OF[name], n)
    return {name: vm.events[i] for i, name in enumerate(EVENTS)}


def shadow_walk(
    shadow: Layout,
    event: Sequence[Invocation],
    behaviours: Mapping[str, Behaviour],
    *,
    fwb: bool,
    cache_line: int,
    tlbi_range: bool = False,
) -> dict[str, int]:
    """One shadow Stage-2's events for the canonical ``event``: every notifier unmap and memslot
    flush walks its WHOLE IPA space (kvm_nested_s2_unmap), the exit frees it
    (kvm_arch_flush_shadow_all -> kvm_free_stage2_pgd).  No notifier entry or memslot visit of its
    own (those are the canonical call's)."""
    g = shadow.geometry
    table = build_table(shadow)
    run = _Run(table, (), fwb=fwb, cache_line=cache_line, tlbi_range=tlbi_range)
    for inv in event:
        if inv.kind not in (UNMAP, CLEAR, MEMSLOT, TEARDOWN):
            continue
        b = behaviours[inv.kind]
        run.set_behaviour(b, Invocation(inv.kind, 0, g.ipa_size, inv.blockable))
        run.run_pass(0, g.ipa_size)
        if b.final_flush == "vmall" or (b.final_flush == "range_or_vmall" and not tlbi_range):
            run.seg[EVENT_INDEX["flush_remote_tlbs"]] += 1
        elif b.final_flush == "range_or_vmall":
            calls, ops = range_flush_counts(g.ipa_size // g.granule)
            run.seg[EVENT_INDEX["range_flush_call"]] += calls
            run.seg[EVENT_INDEX["range_tlbi_op"]] += ops
        if inv.kind == TEARDOWN:
            run.seg[EVENT_INDEX["table_free"]] += g.pgd_pages
    total = np.array(run.deferred, dtype=np.int64)
    for s in run.segments:
        total += np.array(s, dtype=np.int64)
    return {name: int(total[i]) for i, name in enumerate(EVENTS)}


def nested_walk(
    layout: Layout,
    event: Sequence[Invocation],
    behaviours: Mapping[str, Behaviour],
    shadows: Sequence[Layout],
    *,
    vncr: bool,
    fwb: bool,
    cache_line: int,
    tlbi_range: bool = False,
    host: Sequence[HostOp] = (),
) -> dict[str, int]:
    """A nested guest's events: the canonical walk (`walker.walk`), every shadow's
    (`shadow_walk`), and one ``vncr_invalidate`` per kvm_nested_s2_unmap call."""
    res = walk(layout, event, behaviours, fwb=fwb, cache_line=cache_line, tlbi_range=tlbi_range,
               host=host)
    out = {name: int(res.events[i]) for i, name in enumerate(EVENTS)}
    for shadow in shadows:
        for name, n in shadow_walk(shadow, event, behaviours, fwb=fwb, cache_line=cache_line,
                                   tlbi_range=tlbi_range).items():
            out[name] += n
    if vncr:
        out["vncr_invalidate"] += sum(1 for inv in event if inv.kind in (UNMAP, CLEAR, MEMSLOT))
    return out


__all__ = ["nested_walk", "pkvm_walk", "shadow_walk"]
