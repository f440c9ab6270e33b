"""Known differences between the model and the kernel (docs/validation.md lists the same).

Each entry says which cases and which row it covers, the kernel function responsible, and why
the model does not follow the kernel there.  A mismatch not covered here fails the target.  An
entry with ``excess`` covers a difference only when kernel - model lies in that range: the
mechanism named accounts for exactly that much, and a larger difference still fails.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass


@dataclass(frozen=True)
class Known:
    cases: str  # fnmatch pattern over case names: kernel/cpu/event/backing/size/memslots
    op: str  # the row (compare.ROWS op), or "*"
    function: str  # the kernel function (and version) responsible
    reason: str
    excess: tuple[int, int] | None = None  # accepted kernel - model (inclusive), None: any


KNOWN: tuple[Known, ...] = (
    Known(
        "6.12/max/munmap-partial/*", "*",
        "__flush_tlb_range_op (arch/arm64/include/asm/tlbflush.h, v6.9+ with FEAT_LPA2)",
        "with LPA2 (QEMU max, CONFIG_ARM64_LPA2) a range flush whose start is not 64 KiB-aligned "
        "first issues single-page TLBI IPAS2E1IS until it is (up to 15), and one more range op; "
        "the model's range flush counts pages only, not the start's alignment (not modelled yet)",
    ),
    Known(
        "7.2/max/munmap-partial/*", "*",
        "__flush_tlb_range_op (arch/arm64/include/asm/tlbflush.h, v6.9+ with FEAT_LPA2)",
        "as 6.12: LPA2's 64 KiB start alignment of range TLBIs is not modelled yet",
    ),
)


#: The VMM's own memory: at exit, exit_mmap tears down every VMA of the guest program, not only
#: guest RAM (its static binary's data and bss, heap, stack, vDSO data, the vCPU's kvm_run
#: page) - 143 to 145 present PTEs, 7 or 8 page-table pages and 8 LRU folios measured on the
#: three kernels, whatever the guest's size.  The model counts guest RAM only (docs/model.md
#: §14.2), so at exit the kernel may exceed it by a bounded amount, never fall below it.
_OWN = ("exit_mmap -> unmap_vmas / free_pgtables over the VMM's other VMAs (mm/mmap.c, "
        "6.1 / 6.12 / 7.2)")
_OWN_WHY = ("the guest program's own mappings (binary, heap, stack, vDSO, kvm_run) are torn "
            "down by the same exit; the model counts guest RAM only")

HOST_KNOWN: tuple[Known, ...] = (
    *(Known("*/exit/*", op, _OWN, _OWN_WHY, (0, 256)) for op in (
        "vm_normal_page calls", "page_remove_rmap calls", "folio_remove_rmap_ptes calls",
        "__page_cache_release calls")),
    Known("*/exit/*", "tlb_remove_table calls", _OWN, _OWN_WHY, (0, 16)),
    Known("*/munmap-partial/4k/*", "__split_huge_pmd calls",
          "__split_vma -> vma_adjust_trans_huge -> split_huge_pmd_address (mm/huge_memory.c, "
          "6.1 / 6.12 / 7.2)",
          "enters __split_huge_pmd at each unaligned edge whose 2 MiB block lies in the VMA, "
          "whatever backs it (the same call that raises the Stage-2 edge CLEAR, docs/model.md "
          "§3); with 4 KiB pages it finds no huge PMD and splits nothing: host_pmd_split is 0",
          (2, 2)),
    *(Known(f"7.2/*/clear/4k/{size}M/*", "tlb_remove_table calls",
            "zap_pte_range's PT_RECLAIM path (madvise_dontneed_single_vma sets "
            "zap_details.reclaim_pt; mm/madvise.c, mm/memory.c, 7.2 with CONFIG_PT_RECLAIM)",
            "MADV_DONTNEED of 2 MiB or more frees each PTE table it leaves empty; the model "
            "frees no page table on clear (docs/model.md §14.1: 'arm64 later')",
            (size // 2, size // 2)) for size in (64, 256)),
)


def lookup(case: str, op: str) -> str | None:
    """The known-difference entry covering Stage-2 row ``op`` of ``case``."""
    return _find(KNOWN, case, op, None)


def lookup_host(case: str, op: str, excess: int) -> str | None:
    """The entry covering host row ``op`` of ``case`` whose kernel - model is ``excess``."""
    return _find(HOST_KNOWN, case, op, excess)


def _find(entries: tuple[Known, ...], case: str, op: str, excess: int | None) -> str | None:
    for k in entries:
        if not (fnmatch.fnmatch(case, k.cases) and k.op in (op, "*")):
            continue
        if k.excess is not None and (excess is None or not k.excess[0] <= excess <= k.excess[1]):
            continue
        return f"{k.function}: {k.reason}"
    return None
