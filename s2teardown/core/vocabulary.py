"""The vocabulary of the model: phases, kernel call events, and primitive operations.

Two levels of counting (docs/model.md):

* **kernel events** (`EVENTS`): what the Stage-2 walk does, in the kernel's own terms — one
  `kvm_tlb_flush_vmid_ipa` call, one `__flush_dcache_area` call, one DC CIVAC line, one table page
  freed ... These are exact integers that depend on the layout, the unmap ranges and the variant's
  behaviour, never on prices.  Both the vectorised model (`counts.py`) and the literal walker
  (`walker.py`) produce them, per phase, and the tests demand they agree exactly.
* **primitive operations** (`OPS`): instructions and routines with a price — an HVC round trip,
  one broadcast TLBI, one `dsb ish` ...  `instructions.py` expands each kernel event into
  operations according to the machine's features (VHE, repeat-TLBI erratum).

A phase groups events; every event belongs to exactly one phase for a given call site, and the
count tables are indexed ``[phase, event]`` so that the same event (for instance a TLB-flush call
after a table is freed vs after a leaf is cleared) can be charged to different phases.
"""

from __future__ import annotations

from typing import Final

#: Phases of a teardown, in the order they are shown (docs/architecture.md; docs/model.md §1).
PHASES: Final[tuple[str, ...]] = (
    "notifier",  # MMU-notifier entry: srcu, mmu_lock, bookkeeping; or the ioctl/exit entry
    "memslots",  # handle_hva_to_gpa: one visit per memslot per notifier call
    "walk",  # loading page-table entries (including empty ones) in the range
    "clear",  # clearing leaf and table entries, put_page on the table page
    "cmo",  # __flush_dcache_area: DC CIVAC per line + dsb sy per call
    "tlbi",  # per-entry (or range) TLB invalidation hyp calls
    "table_free",  # freeing emptied table pages (and the pgd pages at teardown)
    "resched",  # cond_resched_lock() points
    "final_flush",  # one VMID-wide invalidation after the walk (P5)
    "host_free",  # host mm freeing the guest's pages in exit_mmap — outside Stage-2
)

#: Phases that are part of Stage-2 work (the host-side free is reported separately).
STAGE2_PHASES: Final[tuple[str, ...]] = PHASES[:-1]

#: Kernel events counted by the model and the walker.
EVENTS: Final[tuple[str, ...]] = (
    "notifier_call",  # one invalidate_range_start / release callback into KVM
    "memslot_visit",  # one memslot examined by handle_hva_to_gpa (munmap) or by the path
    "entry_visit",  # one page-table entry loaded by the walk (empty or not)
    "pte_clear",  # kvm_set_pte(pte, 0): WRITE_ONCE + dsb ishst
    "block_clear",  # pmd_clear / stage2_pud_clear of a block entry (no barrier: entry invalid)
    "table_clear",  # clearing a table entry whose table the range emptied
    "put_page",  # put_page on the table page that held a cleared entry
    "tlb_flush_vmid_ipa",  # kvm_tlb_flush_vmid_ipa() call (HVC on nVHE)
    "dcache_flush_call",  # __flush_dcache_area() call: ends in one dsb sy
    "dc_civac_line",  # one DC CIVAC (one cache line)
    "table_free",  # one table page freed (free_page / stage2_p*d_free, or a pgd page)
    "resched_point",  # one cond_resched_lock() / cond_resched() call
    "flush_remote_tlbs",  # kvm_flush_remote_tlbs(): one __kvm_tlb_flush_vmid (VMALLS12E1IS)
    "range_flush_call",  # one range-invalidation hyp call (FEAT_TLBIRANGE, v6.6+)
    "range_tlbi_op",  # one TLBI RIPAS2E1IS instruction within a range flush
    "host_page_free",  # host frees one order-0 guest page (4 KiB-leaf backing)
    "host_folio_free",  # host frees one compound guest folio (THP / hugetlb backing)
)

#: Priced primitive operations.
OPS: Final[tuple[str, ...]] = (
    "notifier_call",
    "memslot_visit",
    "entry_visit",
    "entry_clear",
    "put_page",
    "dsb_ishst",
    "dc_civac_line",
    "dsb_sy",
    "hvc",
    "sysreg_write",
    "isb",
    "tlbi_is",  # one broadcast TLBI (IPAS2E1IS / VMALLE1IS), completion included
    "dsb_ish",
    "tlbi_vmall",  # one TLBI VMALLS12E1IS (whole VMID), completion included
    "tlbi_range",  # one TLBI RIPAS2E1IS (range), completion included
    "table_free",
    "resched_point",
    "host_page_free",
    "host_folio_free",
)

PHASE_INDEX: Final[dict[str, int]] = {p: i for i, p in enumerate(PHASES)}
EVENT_INDEX: Final[dict[str, int]] = {e: i for i, e in enumerate(EVENTS)}
OP_INDEX: Final[dict[str, int]] = {o: i for i, o in enumerate(OPS)}

#: Invocation kinds a variant describes separately (the behaviour blocks of configs/variants.yaml).
PASS_KINDS: Final[tuple[str, ...]] = ("teardown", "unmap", "clear", "memslot", "reset", "block_retry")
