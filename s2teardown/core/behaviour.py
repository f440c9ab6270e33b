"""What a kernel variant does on one kind of invocation (teardown, unmap, clear).

A variant (configs/variants.yaml, loaded by `variants.py`) holds one `Behaviour` per invocation
kind.  The fields are the strategies of docs/model.md §8; every count the model makes is gated by
exactly these fields plus the machine's features.  Pure data.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Final

#: Allowed values of each field (the variant schema uses this table, so schema and model agree).
CHOICES: Final[dict[str, tuple[str, ...]]] = {
    # How the walk treats what it finds: "unmap" clears every valid entry and frees a table once
    # the range empties it (v5.5 unmap_stage2_range; v5.10+ kvm_pgtable_stage2_unmap);
    # "destroy" clears nothing, drops one reference per valid entry and frees every table page
    # (v5.10+ kvm_pgtable_stage2_destroy on a detached table: no TLBI, no CMO possible).
    "walk": ("unmap", "destroy"),
    # Cache maintenance of unmapped leaves: v5.5 cleans every non-device leaf
    # (kvm_flush_dcache_pte/pmd/pud); P3+flag / P5 / P7 elide it.  FWB hardware always elides it.
    "cmo": ("per_leaf", "none"),
    # TLB invalidation of a cleared leaf: one kvm_tlb_flush_vmid_ipa per leaf (v5.5), the same
    # with a level hint (v5.10+, same instructions), a deferred range flush per walk chunk
    # (v6.6: only on a CPU with both TLBIRANGE and FWB, stage2_unmap_defer_tlb_flush; otherwise
    # per entry with a level hint), or none (P5 teardown).
    "leaf_tlbi": ("per_entry", "per_entry_level", "range", "none"),
    # TLB invalidation when a table the range emptied is unhooked from its parent: per entry,
    # deferred to the range flush (v6.6.0-6.8, only where the range flush applies), or none.
    "table_tlbi": ("per_entry", "deferred", "none"),
    # One VMID-wide flush (kvm_flush_remote_tlbs) after the walk (P5), nothing, or (v6.6
    # stage2_try_break_pte on a replaced table) kvm_tlb_flush_vmid_range of the invocation's
    # range: range ops on a CPU with TLBIRANGE, one VMID-wide flush without.
    "final_flush": ("none", "vmall", "range_or_vmall"),
    # How the walk is chunked, with a resched point between chunks: each entry-level entry
    # (v5.5 unmap_stage2_range), each largest-block-size chunk (v6.1 stage2_apply_range:
    # 1 GiB / 32 MiB / 512 MiB for 4 / 16 / 64 KiB pages, whatever the levels), each 1 GiB
    # (v6.19 destroy), or one walk with no resched point (v5.10 destroy).
    "resched": ("top_level", "largest_block", "1g", "none"),
    # Whether resched points are taken always (v5.5..v5.8) or only if the notifier may block (v5.9+).
    "resched_when": ("always", "blockable"),
    # Whether the walk holds mmu_lock: exclusively ("held": a spinlock before v5.15, the rwlock
    # for write after), not at all (v5.10's destroy walk runs unlocked on a detached table), or
    # for read (v6.2+ fault path: user_mem_abort takes read_lock(&kvm->mmu_lock) for every
    # stage-2 fault, "KVM: arm64: Handle stage-2 faults in parallel", Oliver Upton, v6.2).
    # A read holder is still non-preemptible (read_lock disables preemption), so "read"
    # segments count as holding mmu_lock; what changes is that other faults run beside it.
    "lock": ("held", "unlocked", "read"),
    # How the subtree under a table entry replaced by a block (block_retry only) is freed:
    # in the fault, under mmu_lock ("inline": v5.5 unmap_stage2_range, v5.10
    # stage2_map_walk_table_pre / stage2_map_walk_leaf), or after an RCU grace period ("rcu":
    # v6.2+ stage2_map_walk_table_pre -> mm_ops->free_removed_table, from v6.5 named
    # free_unlinked_table -> stage2_free_unlinked_table -> call_rcu; the callback walks the
    # unlinked table with stage2_free_walker).  With "rcu" the last-level work (entry visits,
    # leaves, the freeing of last-level tables) is counted in the totals but in no segment.
    "free": ("inline", "rcu"),
}


@dataclass(frozen=True)
class Behaviour:
    walk: str = "unmap"
    cmo: str = "per_leaf"
    leaf_tlbi: str = "per_entry"
    table_tlbi: str = "per_entry"
    final_flush: str = "none"
    resched: str = "top_level"
    resched_when: str = "always"
    lock: str = "held"
    free: str = "inline"

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value not in CHOICES[f.name]:
                raise ValueError(f"{f.name}: expected one of {CHOICES[f.name]}, got {value!r}")


#: v5.5 stock behaviour on every invocation kind.
STOCK: Final[Behaviour] = Behaviour()
