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
