"""The host side of a case: entries of host mm functions the plugin counted, against the model.

The plugin counts executions of given entry addresses (``funcs=``: one line "address name" per
function); an entry executes once per call of a function that is not inlined.  `FUNCTIONS` are
the host mm (and SRCU) functions looked up in each kernel's ``/proc/kallsyms``; one that a
kernel inlines, or whose name several static functions share, is simply not counted there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .compare import Result
from .symbols import Symbols

#: Functions whose entries the plugin counts (every kernel of the matrix: those it has).
FUNCTIONS: tuple[str, ...] = (
    "zap_huge_pmd", "__split_huge_pmd", "split_huge_pmd_address", "vm_normal_page",
    "page_remove_rmap", "folio_remove_rmap_ptes", "folio_remove_rmap_pmd", "deferred_split_folio",
    "tlb_remove_table", "tlb_remove_table_rcu", "tlb_remove_table_sync_one", "pte_free_defer",
    "free_pgtables", "free_pgd_range", "unmap_page_range", "unmap_vmas", "zap_page_range_single",
    "tlb_flush_mmu", "tlb_finish_mmu", "tlb_batch_pages_flush", "__tlb_batch_free_encoded_pages",
    "__tlb_remove_page_size", "__tlb_remove_folio_pages", "tlb_flush_rmaps",
    "free_pages_and_swap_cache", "release_pages", "folios_put_refs", "free_unref_page_list",
    "free_unref_folios", "free_unref_page", "free_unref_page_commit", "free_pages_prepare",
    "free_tail_page_prepare", "__free_pages_ok", "free_one_page", "free_one_page.constprop.0",
    "__free_one_page", "free_pcppages_bulk", "free_transhuge_page", "free_compound_page",
    "destroy_large_folio", "__folio_put", "__free_pages", "free_pages", "free_frozen_pages",
    "__free_frozen_pages", "__mem_cgroup_uncharge_list", "__mem_cgroup_uncharge_folios",
    "__page_cache_release.part.0", "__pte_offset_map", "__pte_offset_map_lock", "pmd_install",
    "synchronize_srcu", "synchronize_srcu_expedited", "__synchronize_srcu",
    "__mmu_notifier_release", "mmu_notifier_unregister", "kvm_destroy_vm", "exit_mmap",
)


def entries(syms: Symbols) -> dict[str, int]:
    """name -> entry address of every function of `FUNCTIONS` this kernel has (not inlined)."""
    out = {}
    for name in FUNCTIONS:
        addr = syms.entry(name)
        if addr is not None:
            out[name] = addr
    return out


def write_functions(path: Path, syms: Symbols) -> Path:
    """The plugin's ``funcs=`` file for one kernel."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{a:x} {n}\n" for n, a in entries(syms).items()))
    return path


def calls(window: Mapping[str, object], baseline: Mapping[str, object]) -> dict[str, int]:
    """Function -> calls in the case's window, less the baseline window's (never below 0)."""
    got = window.get("funcs", {})
    base = baseline.get("funcs", {})
    assert isinstance(got, dict) and isinstance(base, dict)
    return {n: max(int(c) - int(base.get(n, 0)), 0) for n, c in sorted(got.items())}


#: 2^9 - 1: the tail pages of a THP (order 9 with 4 KiB pages), one free_tail_page_prepare each
THP_TAILS = 511

Events = Mapping[str, int]
Calls = Mapping[str, int]


@dataclass(frozen=True)
class HostRow:
    """One host-side count: the model's number (from its host events, docs/model.md §14.2) and
    the kernel's (function entries), on the kernel series where the function is observable."""

    op: str
    series: tuple[str, ...]  # kernel series (cases.Case.kernel) whose build has the function
    model: Callable[[Events], int]
    kernel: Callable[[Calls], int]
    how: str  # the kernel function, version and why its calls are this count


def _calls(*names: str) -> Callable[[Calls], int]:
    return lambda c: sum(int(c.get(n, 0)) for n in names)


ALL = ("6.1", "6.12", "7.2")

ROWS: tuple[HostRow, ...] = (
    HostRow("zap_huge_pmd calls", ALL, lambda e: e["host_pmd_zap"], _calls("zap_huge_pmd"),
            "zap_pmd_range calls zap_huge_pmd once per PMD-mapped THP wholly inside the zap "
            "(mm/memory.c, 6.1 / 6.12 / 7.2): host_pmd_zap"),
    HostRow("__split_huge_pmd calls", ALL, lambda e: e["host_pmd_split"],
            _calls("__split_huge_pmd"),
            "__split_vma -> vma_adjust_trans_huge -> split_huge_pmd_address enters "
            "__split_huge_pmd once per unaligned munmap edge (mm/huge_memory.c, 6.1 / 6.12 / "
            "7.2): host_pmd_split, the THPs a range cuts"),
    HostRow("vm_normal_page calls", ("6.1",), lambda e: e["host_pte_zap"],
            _calls("vm_normal_page"),
            "6.1 zap_pte_range calls vm_normal_page once per present PTE (mm/memory.c): "
            "host_pte_zap"),
    HostRow("vm_normal_page calls", ("6.12", "7.2"),
            lambda e: e["host_page_free"] + e["host_pmd_split"], _calls("vm_normal_page"),
            "from v6.9 zap_present_ptes calls vm_normal_page once per batch of PTEs mapping one "
            "folio (folio_pte_batch, mm/memory.c): one per order-0 page (host_page_free), one "
            "per piece of a cut THP inside the range (one PTE table each: host_pmd_split)"),
    HostRow("page_remove_rmap calls", ("6.1",),
            lambda e: e["host_pte_zap"] + e["host_pmd_zap"], _calls("page_remove_rmap"),
            "6.1 zap_pte_range calls page_remove_rmap per present PTE, zap_huge_pmd once per "
            "THP (mm/memory.c, mm/huge_memory.c): host_pte_zap + host_pmd_zap"),
    HostRow("folio_remove_rmap_ptes calls", ("6.12", "7.2"),
            lambda e: e["host_page_free"] + e["host_pmd_split"], _calls("folio_remove_rmap_ptes"),
            "zap_present_folio_ptes calls folio_remove_rmap_ptes once per PTE batch of one folio "
            "(mm/memory.c, v6.9+): host_page_free + host_pmd_split"),
    HostRow("folio_remove_rmap_pmd calls", ("6.12", "7.2"),
            lambda e: e["host_pmd_zap"] + e["host_pmd_split"], _calls("folio_remove_rmap_pmd"),
            "zap_huge_pmd per THP zapped, and __split_huge_pmd_locked per THP split (the PMD "
            "mapping it replaces by PTEs; mm/huge_memory.c, 6.12 / 7.2): host_pmd_zap + "
            "host_pmd_split"),
    HostRow("tlb_remove_table calls", ALL,
            lambda e: e["host_table_free"] - e["host_pmd_zap"], _calls("tlb_remove_table"),
            "free_pgtables -> free_pgd_range frees each page-table page through arm64's "
            "__pte_free_tlb / __pmd_free_tlb / __pud_free_tlb -> tlb_remove_table (asm/tlb.h, "
            "mm/mmu_gather.c): host_table_free less the THPs' deposited tables (zap_deposited_table "
            "-> pte_free, no tlb_remove_table)"),
    HostRow("synchronize_srcu calls", ALL, lambda e: e["srcu_sync"], _calls("synchronize_srcu"),
            "__mmu_notifier_release and mmu_notifier_unregister (from kvm_destroy_vm) each call "
            "synchronize_srcu (mm/mmu_notifier.c): srcu_sync; a memslot change waits in "
            "synchronize_srcu_expedited, another function"),
    HostRow("free_transhuge_page calls", ("6.1",), lambda e: e["host_folio_free"],
            _calls("free_transhuge_page"),
            "6.1 release_pages -> __put_compound_page -> destroy_compound_page calls the THP "
            "destructor free_transhuge_page once per THP folio freed (mm/swap.c, "
            "mm/huge_memory.c): host_folio_free"),
    HostRow("free_tail_page_prepare calls", ("6.12", "7.2"),
            lambda e: THP_TAILS * e["host_folio_free"], _calls("free_tail_page_prepare"),
            "free_unref_folios -> free_pages_prepare calls free_tail_page_prepare once per tail "
            "page of a compound page freed (mm/page_alloc.c, 6.12 / 7.2): 511 per THP, "
            "511 x host_folio_free"),
    HostRow("__page_cache_release calls", ("6.12",),
            lambda e: e["host_page_free"] + e["host_folio_free"],
            _calls("__page_cache_release.part.0"),
            "6.12 folios_put_refs calls __page_cache_release per folio freed; its out-of-line "
            "part (.part.0) runs for a folio on the LRU, which every guest folio is after "
            "unmap_region's / exit_mmap's / zap_page_range_single's lru_add_drain (mm/swap.c, "
            "mm/mmap.c, mm/memory.c): host_page_free + host_folio_free"),
)


#: Spans of the page-table pages above the PTE level of the arm64 host (4 KiB pages, 48-bit VA,
#: 4 levels): a PMD table maps 1 GiB, a PUD table 512 GiB.
UPPER_TABLE_SPANS = (1 << 30, 1 << 39)


def upper_tables(lo: int, hi: int, floor: int, ceiling: int) -> int:
    """PMD and PUD tables `free_pgd_range` frees when the only VMA between ``floor`` (the end of
    the mapping below, 0: none) and ``ceiling`` (the start of the one above, 0: none) is
    ``[lo, hi)``, 2 MiB-aligned.

    mm/memory.c (6.1 / 6.12 / 7.2): ``free_pmd_range`` frees the PMD table under a PUD entry
    when the 1 GiB-aligned start of that entry's region is at or above ``floor`` and the part
    walked ends at or below ``ceiling`` rounded down to 1 GiB (a ``ceiling`` of 0 is no limit;
    one that rounds down to 0 frees nothing); ``free_pud_range`` does the same for the PUD
    table with 512 GiB."""
    n = 0
    for span in UPPER_TABLE_SPANS:
        mask = ~(span - 1)
        top = ceiling & mask
        if ceiling and not top:
            continue
        r = lo & mask
        while r < hi:
            walked_end = min(hi, r + span)
            if r >= floor and (not ceiling or walked_end <= top):
                n += 1
            r += span
    return n


def layout_correction(case_event: str, ram: tuple[int, int], layout: Mapping[str, int] | None
                      ) -> int:
    """Page-table pages a whole munmap frees beyond the model's convention (guest RAM at
    ``HVA = GPA + k * 512 GiB``, its neighbours' VMAs ending at the range: docs/model.md
    §14.2), from where the host actually mapped it and its neighbours (``layout``: ``hva``,
    ``floor``, ``ceiling`` as the guest program printed them).  Guest RAM lands where ASLR puts
    it; 6.12 and 7.2 align an anonymous mapping whose length is a multiple of 2 MiB to 2 MiB
    (``__get_unmapped_area`` -> ``thp_get_unmapped_area``; 6.1 does not, measured), so the
    program's 2 MiB-aligning slack leaves no VMA just below guest RAM there, and a munmap that
    crosses a 1 GiB boundary frees the PMD table of the region below it."""
    if case_event != "munmap" or not layout:
        return 0
    hva, size = layout["hva"], ram[1] - ram[0]
    real = upper_tables(hva, hva + size, layout["floor"], layout["ceiling"])
    return real - upper_tables(ram[0], ram[1], ram[0], ram[1])


def compare_host(case: str, series: str, events: Events, calls_: Calls,
                 known: Callable[[str, str, int], str | None] = lambda case, op, d: None,
                 tables_extra: int = 0) -> list[Result]:
    """The host rows of one case (those observable on its kernel series); ``tables_extra``:
    the `layout_correction` of its page-table pages."""
    out = []
    for row in ROWS:
        if series not in row.series:
            continue
        model, kern = int(row.model(events)), int(row.kernel(calls_))
        if row.op == "tlb_remove_table calls":
            model += tables_extra
        k = None if model == kern else known(case, row.op, kern - model)
        out.append(Result(case, row.op, "host", model, kern, k))
    return out
