"""Stage-2 page-table geometry: granule and IPA size -> levels, entry spans, block sizes.

Kernel references (Linux v5.5, arm64):
* ``stage2_pgtable_levels(ipa) = ARM64_HW_PGTABLE_LEVELS(ipa - 4)`` and
  ``ARM64_HW_PGTABLE_LEVELS(va) = (va - 4) / (PAGE_SHIFT - 3)``
  (arch/arm64/include/asm/stage2_pgtable.h, arch/arm64/include/asm/pgtable-hwdef.h);
  ``kvm_arm_setup_stage2`` raises fewer than 2 levels to 2 (arch/arm64/kvm/reset.c).
* The entry level may concatenate up to 16 tables; its pages are allocated together
  (``alloc_pages_exact(stage2_pgd_size(kvm))`` in virt/kvm/arm/mmu.c ``kvm_alloc_stage2_pgd``).
* Stage-2 uses the host's ``PAGE_SIZE`` as its granule; PMD blocks exist for every granule,
  PUD (1 GiB) blocks only with 4 KiB pages and at least 3 levels (``stage2_pud_huge`` needs a
  real PMD level).

Levels are numbered from the top: level 0 is the entry level, level ``levels - 1`` holds the
page (PTE) entries.  All functions are pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

GRANULES: tuple[int, ...] = (4096, 16384, 65536)
MIN_IPA_BITS = 32
MAX_IPA_BITS = 48
DEFAULT_IPA_BITS = 40  # KVM_PHYS_SHIFT (arch/arm64/include/asm/kvm_mmu.h, v5.5)


@dataclass(frozen=True)
class Geometry:
    """The shape of one Stage-2 page table."""

    granule: int  # bytes: 4096, 16384 or 65536
    ipa_bits: int  # 32..48

    def __post_init__(self) -> None:
        if self.granule not in GRANULES:
            raise ValueError(f"granule must be one of {GRANULES}, got {self.granule}")
        if not MIN_IPA_BITS <= self.ipa_bits <= MAX_IPA_BITS:
            raise ValueError(f"ipa_bits must be {MIN_IPA_BITS}..{MAX_IPA_BITS}, got {self.ipa_bits}")

    @cached_property
    def page_shift(self) -> int:
        return self.granule.bit_length() - 1

    @cached_property
    def bits_per_level(self) -> int:
        """Index bits resolved by one level (a table page holds 2**bits entries of 8 bytes)."""
        return self.page_shift - 3

    @cached_property
    def entries_per_table(self) -> int:
        return 1 << self.bits_per_level

    @cached_property
    def levels(self) -> int:
        return max(2, (self.ipa_bits - 8) // self.bits_per_level)

    @cached_property
    def spans(self) -> tuple[int, ...]:
        """Bytes of IPA space covered by one entry at each level, entry level first."""
        n = self.levels
        return tuple(1 << (self.page_shift + (n - 1 - k) * self.bits_per_level) for k in range(n))

    def span(self, level: int) -> int:
        """Bytes of IPA space covered by one entry at ``level`` (0 = entry level)."""
        if not 0 <= level < self.levels:
            raise ValueError(f"level {level} outside 0..{self.levels - 1}")
        return self.spans[level]

    @cached_property
    def ipa_size(self) -> int:
        return 1 << self.ipa_bits

    @cached_property
    def top_entry_size(self) -> int:
        return self.span(0)

    @cached_property
    def top_entries(self) -> int:
        return self.ipa_size // self.top_entry_size

    @cached_property
    def pgd_pages(self) -> int:
        """Pages of the entry-level table (concatenated tables), freed only at teardown."""
        return max(1, (self.top_entries * 8 + self.granule - 1) // self.granule)

    @cached_property
    def leaf_sizes(self) -> tuple[int, ...]:
        """Mappable leaf sizes, smallest first: page, PMD block, and (4 KiB, >=3 levels) PUD block."""
        sizes = [self.granule, self.span(self.levels - 2)]
        if self.granule == 4096 and self.levels >= 3:
            sizes.append(self.span(self.levels - 3))
        return tuple(sizes)

    def leaf_level(self, leaf: int) -> int:
        """The level at which a leaf of ``leaf`` bytes lives."""
        for level in range(self.levels):
            if self.span(level) == leaf:
                if leaf not in self.leaf_sizes:
                    break
                return level
        raise ValueError(f"{leaf} bytes is not a leaf size of this geometry {self.leaf_sizes}")

    @cached_property
    def largest_block(self) -> int:
        """The largest block mapping this geometry can hold."""
        return self.leaf_sizes[-1]

    @cached_property
    def min_block_chunk(self) -> int:
        """v6.1's lock-break chunk, the block size at KVM_PGTABLE_MIN_BLOCK_LEVEL for the granule:
        1 GiB, 32 MiB or 512 MiB for 4, 16 or 64 KiB pages, whatever the number of levels
        (``stage2_range_addr_end``, arch/arm64/kvm/mmu.c, v6.1)."""
        return {4096: 1 << 30, 16384: 32 << 20, 65536: 512 << 20}[self.granule]


def auto_ipa_bits(top_of_guest: int) -> int:
    """The IPA size QEMU would ask for: 40 bits unless the guest needs more, then the smallest fit.

    ``top_of_guest`` is the highest guest-physical address used plus one (bytes).
    """
    bits = DEFAULT_IPA_BITS
    while (1 << bits) < top_of_guest:
        bits += 1
    return bits
