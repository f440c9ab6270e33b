"""Known differences between the model and the kernel (docs/validation.md lists the same).

Each entry says which cases and which row it covers, the kernel function responsible, and why
the model does not follow the kernel there.  A mismatch not covered here fails the target.
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


KNOWN: tuple[Known, ...] = (
    Known(
        "*/munmap-partial/4k/*", "*",
        "__split_vma -> vma_adjust_trans_huge -> split_huge_pmd_address -> __split_huge_pmd "
        "(mm/huge_memory.c; 6.1, 6.12, 7.2)",
        "the kernel raises a 2 MiB MMU_NOTIFY_CLEAR at each unaligned munmap edge whose PMD "
        "block holds mapped memory even when it is 4 KiB-backed: __split_huge_pmd starts the "
        "notifier before it checks for a huge PMD, so KVM unmaps those whole blocks (measured: "
        "1,536 pages flushed for a 1,024-page munmap).  The model raises the CLEAR for THP edges "
        "only; the fix changes docs/model.md's worked example and is the next change",
    ),
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


def lookup(case: str, op: str) -> str | None:
    for k in KNOWN:
        if fnmatch.fnmatch(case, k.cases) and k.op in (op, "*"):
            return f"{k.function}: {k.reason}"
    return None
