"""`s2teardown explain`: one variant's teardown as a tree, from the path down to instructions.

Built once as plain data (a node: label, count, time_ns, children) from an Estimate's Breakdown,
then rendered as a rich Tree or JSON.  Nothing is recomputed here but sums of the breakdown.
"""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.tree import Tree

from s2teardown.core.instructions import EVENT_PHASE
from s2teardown.core.vocabulary import EVENT_INDEX, EVENTS, OP_INDEX, OPS, PHASE_INDEX, PHASES
from s2teardown.features.estimate import Estimate
from s2teardown.inputs.units import format_int, format_ns

#: The kernel function (v5.5 names; later kernels in brackets) behind each event.
EVENT_FUNCTION = {
    "notifier_call": "notifier callback / path entry (srcu, mmu_lock)",
    "memslot_visit": "handle_hva_to_gpa: one memslot examined",
    "entry_visit": "unmap_stage2_{puds,pmds,ptes}: one entry loaded [kvm_pgtable_walk]",
    "pte_clear": "kvm_set_pte(pte, 0)",
    "block_clear": "pmd_clear / stage2_pud_clear of a block",
    "table_clear": "clear_stage2_{pmd,pud,pgd}_entry: unhook an emptied table",
    "put_page": "put_page(virt_to_page(entry))",
    "tlb_flush_vmid_ipa": "kvm_tlb_flush_vmid_ipa -> __kvm_tlb_flush_vmid_ipa",
    "dcache_flush_call": "kvm_flush_dcache_{pte,pmd,pud} -> __flush_dcache_area",
    "dc_civac_line": "dc civac (one cache line)",
    "table_free": "free_page of a table page (and the pgd pages)",
    "resched_point": "cond_resched_lock(&kvm->mmu_lock) [cond_resched]",
    "flush_remote_tlbs": "kvm_flush_remote_tlbs -> __kvm_tlb_flush_vmid",
    "range_flush_call": "kvm_tlb_flush_vmid_range -> __kvm_tlb_flush_vmid_range",
    "range_tlbi_op": "tlbi ripas2e1is (one range op)",
    "host_pte_zap": "host zap_pte_range: ptep_get_and_clear_full + folio_remove_rmap_pte, one PTE",
    "host_pmd_zap": "host zap_huge_pmd: pmdp_huge_get_and_clear_full + folio_remove_rmap_pmd, one THP",
    "host_hugetlb_zap": "host __unmap_hugepage_range: one hugetlb page",
    "host_pmd_split": "host __split_huge_pmd: a THP the range cuts becomes PTE-mapped",
    "host_page_free": "host: free one order-0 guest page (free_pages_and_swap_cache)",
    "host_folio_free": "host: free one THP folio (order 9)",
    "host_hugetlb_free": "host free_huge_folio: one hugetlb folio back to its pool",
    "host_table_free": "host: free one page-table page (free_pgtables, zap_deposited_table)",
    "srcu_sync": "synchronize_srcu (mmu_notifier_release, mmu_notifier_unregister): a wait",
    "host_tlb_flush_mm": "host flush_tlb_mm: tlbi aside1is, the whole ASID (tlb_flush, __flush_tlb_range)",
    "host_tlb_flush_range": "host __flush_tlb_range by address (tlb_flush_mmu_tlbonly, flush_tlb_range)",
    "host_tlbi_va": "host tlbi vale1is / vae1is (one stride)",
    "host_tlbi_range": "host tlbi rvale1is / rvae1is (one range op)",
    # the EL2 paths (docs/model.md §15): the hypercalls and what EL2 runs inside them
    "pkvm_unshare_call": "EL2 call: HVC __pkvm_host_unshare_guest (pkvm_pgtable_stage2_unmap / _destroy)",
    "pkvm_start_teardown": "EL2 call: HVC __pkvm_start_teardown_vm (pkvm_pgtable_stage2_destroy_range)",
    "pkvm_reclaim_call": "EL2 call: HVC __pkvm_reclaim_dying_guest_page, one page",
    "el2_entry_visit": "EL2: kvm_pgtable walk, one entry (guest or host Stage-2; reclaim_pgtable_pages)",
    "el2_entry_clear": "EL2: guest leaf cleared (kvm_pgtable_stage2_unmap) / host Stage-2 owner set",
    "el2_tlb_flush_vmid_ipa": "EL2: __kvm_tlb_flush_vmid_ipa inside the hypercall (no HVC)",
    "poison_page": "EL2 hyp_poison_page: hyp_fixmap_map / hyp_fixmap_unmap, the clean's dsb sy",
    "poison_line_zero": "EL2 hyp_poison_page: memset 0, one cache line",
    "poison_line_clean": "EL2 hyp_poison_page: kvm_flush_dcache_to_poc, one dc civac (even with FWB)",
    "pkvm_page_unpin": "host unpin_user_pages_dirty_lock, one page",
    "pkvm_account": "host account_locked_vm, one page",
    "pkvm_mapping_free": "host rb_erase + kfree of one struct pkvm_mapping",
    "pkvm_finalize_call": "EL2 call: HVC __pkvm_finalize_teardown_vm [__pkvm_teardown_vm before 7.1]",
    "el2_flush_vmid": "EL2: __kvm_tlb_flush_vmid inside the finalize (no HVC)",
    "hyp_memcache_free": "host free_hyp_memcache: one page the hypervisor handed back",
    "vncr_invalidate": "kvm_nested_s2_unmap -> kvm_invalidate_vncr_ipa (one vCPU)",
}


def explain_tree(e: Estimate, v: int) -> dict[str, Any]:
    b = e.breakdown
    var = e.variants[v]
    ev = b.unique_events[0, b.variant_row[v]]
    price = b.op_prices
    root: dict[str, Any] = {
        "label": f"{e.workload.event if e.workload else e.scenario.name} on {e.machine.name}, "
        f"{var.name} — {var.title}",
        "path": e.extra.get("path", ""),
        "time_ns": float(b.stage2_ns[0, v]),
        "stage2_ns": float(b.stage2_ns[0, v]),
        "host_free_ns": float(b.host_free_ns[0, v]),
        "host_ns": float(b.host_ns[0, v]),
        "end_to_end_ns": float(b.end_to_end_ns[0, v]),
        "wall_ns": float(b.wall_ns[0, v]),
        "children": [],
    }
    for phase in PHASES:
        p = PHASE_INDEX[phase]
        node: dict[str, Any] = {
            "label": phase,
            "time_ns": float(b.time_ns[0, v, p]),
            "note": b.notes.get((v, phase)),
            "children": [],
        }
        for name in EVENTS:
            if EVENT_PHASE[name] != phase or ev[EVENT_INDEX[name]] == 0:
                continue
            n = int(ev[EVENT_INDEX[name]])
            ops = b.expansion[v, EVENT_INDEX[name], p]
            children: list[dict[str, Any]] = [
                {"label": OPS[o], "count": n * int(ops[o]), "unit_ns": float(price[o]),
                 "time_ns": n * int(ops[o]) * float(price[o])}
                for o in range(len(OPS)) if ops[o]
            ]
            node["children"].append(
                {"label": name, "function": EVENT_FUNCTION[name], "count": n,
                 "time_ns": sum(c["time_ns"] for c in children), "children": children}
            )
        root["children"].append(node)
    if b.stretch_ns is not None:
        root["longest_stretch_ns"] = float(b.stretch_ns[0, v])
        root["longest_locked_stretch_ns"] = (
            None if b.stretch_locked is None else float(b.stretch_locked[0, v])
        )
    name = e.variants[v].name
    # every detector the variant's stretch trips, earliest first (docs/model.md §11.5)
    root["lock_holds"] = [{**h.as_dict(), "warning": h.line} for h in e.lock_holds if h.variant == name]
    return root


def explain_rich(data: dict[str, Any]) -> Tree:
    top = Tree(f"[bold]{escape(data['label'])}[/bold]: Stage-2 {format_ns(data['stage2_ns'])}"
               f" + host side {format_ns(data['host_ns'])} = end to end "
               f"{format_ns(data['end_to_end_ns'])} (wall {format_ns(data['wall_ns'])})")
    path = top.add(f"[dim]{escape(data['path'])}[/dim]")
    for ph in data["children"]:
        if ph["time_ns"] == 0 and not ph["children"]:
            if ph["note"]:
                path.add(f"{ph['label']}: 0 ({ph['note']})", style="green")
            continue
        pnode = path.add(f"[bold]{ph['label']}[/bold] {format_ns(ph['time_ns'])}")
        for evn in ph["children"]:
            enode = pnode.add(f"{escape(evn['function'])}  ×{format_int(evn['count'])}  {format_ns(evn['time_ns'])}")
            for op in evn["children"]:
                enode.add(f"[dim]{op['label']} ×{format_int(op['count'])} @ {op['unit_ns']:.4g} ns"
                          f" = {format_ns(op['time_ns'])}[/dim]")
    if "longest_stretch_ns" in data:
        st = top.add(f"longest stretch without a resched point: {format_ns(data['longest_stretch_ns'])}")
        for h in data.get("lock_holds", []):
            gate = "" if h["on_by_default"] else " (if LATENCY_WARN is on; off by default)"
            st.add(f"[yellow]{escape(h['detector'])} at {format_ns(h['first_fire_ns'])}{gate}:[/yellow] "
                   f"{escape(h['message'])}")
    return top


__all__ = ["EVENT_FUNCTION", "explain_rich", "explain_tree", "OP_INDEX"]
