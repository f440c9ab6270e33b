"""User paths: the ways a teardown reaches Stage-2 unmap, as ``--event`` names them.

One table.  In the code, "event" means a kernel event the model counts (core.vocabulary.EVENTS);
what a user picks with ``--event`` is a *user path*; what a path runs in the kernel is a list
of *invocation kinds* (core.layout: teardown, unmap, clear, memslot, reset, block_retry).  Light
on purpose (no numpy): ``--help`` reads the choices from here.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PATH_NAMES", "RANGED", "USER_PATHS", "UserPath", "user_path"]

_NOTIFY_UNMAP = (
    "MMU_NOTIFY_UNMAP -> kvm_mmu_notifier_invalidate_range_start -> kvm_unmap_hva_range "
    "(kvm_unmap_gfn_range from ~5.13) -> handle_hva_to_gpa -> unmap_stage2_range per memslot"
)


@dataclass(frozen=True)
class UserPath:
    name: str  #: the ``--event`` value
    kinds: tuple[str, ...]  #: invocation kinds it runs, in order (core.layout)
    ranged: bool  #: whether ``--range`` picks part of guest RAM
    kernel: str  #: the notifier event (or ioctl) and kernel functions it models
    help: str  #: one line for ``--help``


USER_PATHS: tuple[UserPath, ...] = (
    UserPath("exit", ("teardown",), False,
             "exit_mmap -> mmu_notifier_release -> kvm_mmu_notifier_release -> "
             "kvm_arch_flush_shadow_all -> kvm_free_stage2_pgd -> unmap_stage2_range(0, IPA size) "
             "(v5.10+: kvm_pgtable_stage2_destroy)",
             "the process exits (release -> kvm_arch_flush_shadow_all)"),
    UserPath("munmap", ("unmap", "clear"), True,
             "munmap -> __split_vma (unaligned edge: MMU_NOTIFY_CLEAR of its 2 MiB block) -> "
             "unmap_region -> " + _NOTIFY_UNMAP,
             "the VMM unmaps guest RAM (MMU_NOTIFY_UNMAP)"),
    UserPath("clear", ("clear",), True,
             "MMU_NOTIFY_CLEAR (MADV_DONTNEED, THP split, swap-out, migration) -> "
             "kvm_mmu_notifier_invalidate_range_start -> kvm_unmap_hva_range -> unmap_stage2_range",
             "MMU_NOTIFY_CLEAR (MADV_DONTNEED, THP split, swap-out, migration)"),
    UserPath("oom", ("unmap",), True,
             "OOM reaper __oom_reap_task_mm -> MMU_NOTIFY_UNMAP, non-blockable, once per VMA -> "
             "kvm_unmap_hva_range -> unmap_stage2_range",
             "the OOM reaper (non-blockable UNMAP)"),
    UserPath("memslot-delete", ("memslot",), True,
             "KVM_SET_USER_MEMORY_REGION (delete/move) -> kvm_arch_flush_shadow_memslot -> "
             "unmap_stage2_range(slot)",
             "KVM_SET_USER_MEMORY_REGION deletes a memslot"),
    UserPath("reset", ("reset",), False,
             "KVM_ARM_VCPU_INIT after the VM ran -> stage2_unmap_vm -> stage2_unmap_memslot -> "
             "unmap_stage2_range per memslot",
             "vCPU re-init: stage2_unmap_vm"),
    UserPath("block-retry", ("block_retry",), True,
             "user_mem_abort -> stage2_set_pmd_huge: table -> block, unmap_stage2_range(2 MiB) "
             "and retry (P6 elides its CMO)",
             "table -> block in the fault path"),
    UserPath("munmap-then-exit", ("unmap", "clear", "teardown"), True,
             "the VMM munmaps guest RAM (as munmap), then exits (as exit)",
             "munmap, then exit"),
)

_BY_NAME = {p.name: p for p in USER_PATHS}
#: The ``--event`` choices, in the order ``--help`` lists them.
PATH_NAMES: tuple[str, ...] = tuple(_BY_NAME)
#: Paths whose ``--range`` is meaningful (the others cover all of guest RAM or the IPA space).
RANGED: tuple[str, ...] = tuple(p.name for p in USER_PATHS if p.ranged)


def user_path(name: str) -> UserPath:
    """The path called ``name``; KeyError for an unknown one (callers check against PATH_NAMES)."""
    return _BY_NAME[name]
