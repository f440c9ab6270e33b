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
    "el2_reclaim",  # pKVM hypercalls per page and their EL2 page-table work (core/el2.py)
    "poison",  # pKVM hyp_poison_page: a protected VM's page zeroed and cleaned to the PoC
    "pkvm_host",  # pKVM host bookkeeping per page: unpin, account_locked_vm, rb_erase + kfree
    "el2_finalize",  # pKVM finalize: VMID flush, the EL2 tables handed back and freed by the host
    "host_zap",  # host mm: zap_pte_range / zap_huge_pmd / hugetlb unmap, THP splits, the host's
    #              TLB flushes (core/host.py)
    "host_free",  # host mm: folios and page-table pages freed — outside Stage-2
    "wait",  # wall-clock waits that spend no CPU (synchronize_srcu): in the wall time only
)

#: The host's own work on the guest's memory (core/host.py): outside Stage-2.
HOST_PHASES: Final[tuple[str, ...]] = ("host_zap", "host_free")
#: The EL2 paths' own phases (pKVM, core/el2.py): zero unless a workload runs under pKVM.
EL2_PHASES: Final[tuple[str, ...]] = ("el2_reclaim", "poison", "pkvm_host", "el2_finalize")
#: Time the teardown waits without spending CPU: part of the wall time, of no CPU total.
WAIT_PHASES: Final[tuple[str, ...]] = ("wait",)
#: Phases that are part of Stage-2 work (the host side and the waits are reported separately).
STAGE2_PHASES: Final[tuple[str, ...]] = tuple(
    p for p in PHASES if p not in HOST_PHASES and p not in WAIT_PHASES)

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
    "host_pte_zap",  # host zap_pte_range clears one present PTE (rmap, refcount)
    "host_pmd_zap",  # host zap_huge_pmd clears one PMD-mapped THP
    "host_hugetlb_zap",  # host __unmap_hugepage_range clears one hugetlb page
    "host_pmd_split",  # host __split_huge_pmd: a THP cut by the range becomes PTE-mapped
    "host_page_free",  # host frees one order-0 guest page
    "host_folio_free",  # host frees one THP folio
    "host_hugetlb_free",  # host returns one hugetlb folio to its pool (free_huge_folio)
    "host_table_free",  # host frees one page-table page (free_pgtables, zap_deposited_table)
    "srcu_sync",  # one synchronize_srcu() on the MMU-notifier SRCU (a wait, no CPU)
    "host_tlb_flush_mm",  # host flush_tlb_mm(): dsb ishst, TLBI ASIDE1IS, dsb ish
    "host_tlb_flush_range",  # host __flush_tlb_range() by address: dsb ishst ... dsb ish
    "host_tlbi_va",  # one TLBI VALE1IS / VAE1IS of a host range flush
    "host_tlbi_range",  # one TLBI RVALE1IS / RVAE1IS of a host range flush (FEAT_TLBIRANGE)
    "pkvm_unshare_call",  # HVC __pkvm_host_unshare_guest: one page of a non-protected pKVM VM
    "pkvm_start_teardown",  # HVC __pkvm_start_teardown_vm (7.1+), once per exit
    "pkvm_reclaim_call",  # HVC __pkvm_reclaim_dying_guest_page: one page of a protected VM
    "el2_entry_visit",  # one page-table entry (guest or host Stage-2) loaded at EL2
    "el2_entry_clear",  # one page-table entry written at EL2 (guest leaf cleared, host owner set)
    "el2_tlb_flush_vmid_ipa",  # __kvm_tlb_flush_vmid_ipa run at EL2 inside a hypercall (no HVC)
    "poison_page",  # hyp_poison_page: fixmap map + unmap and the clean's closing dsb sy
    "poison_line_zero",  # one cache line of the page zeroed
    "poison_line_clean",  # one DC CIVAC of the page (cleaned to the PoC even with FWB)
    "pkvm_page_unpin",  # unpin_user_pages_dirty_lock of one page
    "pkvm_account",  # account_locked_vm for one page
    "pkvm_mapping_free",  # rb_erase + kfree of one struct pkvm_mapping
    "pkvm_finalize_call",  # HVC __pkvm_finalize_teardown_vm (__pkvm_teardown_vm before 7.1)
    "el2_flush_vmid",  # the finalize's __kvm_tlb_flush_vmid at EL2 (no HVC)
    "hyp_memcache_free",  # the host frees one page the hypervisor handed back (free_hyp_memcache)
    "vncr_invalidate",  # kvm_invalidate_vncr_ipa after a kvm_nested_s2_unmap (one vCPU checked)
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
    "host_pmd_split",
    "host_hugetlb_free",
    "srcu_grace_period",  # one SRCU grace period waited for
    "line_zero",  # one cache line zeroed (hyp_poison_page's memset)
    "slab_free",  # rb_erase + kfree of a small object (struct pkvm_mapping)
)

PHASE_INDEX: Final[dict[str, int]] = {p: i for i, p in enumerate(PHASES)}
EVENT_INDEX: Final[dict[str, int]] = {e: i for i, e in enumerate(EVENTS)}
OP_INDEX: Final[dict[str, int]] = {o: i for i, o in enumerate(OPS)}

#: Invocation kinds a variant describes separately (the behaviour blocks of configs/variants.yaml).
PASS_KINDS: Final[tuple[str, ...]] = ("teardown", "unmap", "clear", "memslot", "reset", "block_retry")
