"""A Stage-2 layout (memslots and what each part of them is mapped with) and the unmap event.

This is the common input of the vectorised counts (`counts.py`) and of the literal walker
(`walker.py`).  Everything is in guest-physical bytes.  Pure data, no I/O.

Modelling conventions (docs/model.md, "Layouts"):
* An **extent** is a run ``[lo, hi)`` of guest-physical space mapped uniformly by leaves of one
  size (a page, a PMD block or a PUD block), aligned to that size, inside one memslot.  Space
  covered by no extent is unmapped (a hole).  ``device`` extents are device PTEs (pages only):
  they are unmapped like any PTE but never cleaned (``kvm_is_device_pfn``) nor freed by the host.
* The host's backing of an extent is taken to be its Stage-2 leaf size: a PMD-block extent is a
  THP (or a hugetlb page) on the host, a page extent is order-0 host pages.
* Memslots are mapped at ``userspace_addr = GPA + constant`` (one contiguous host mapping), so a
  munmap range is given directly in guest-physical terms.
* An **event** is the ordered list of notifier calls (`Invocation`) one user-visible action
  raises: process exit raises one release (whole IPA space, no memslot iteration); a munmap
  raises one ``MMU_NOTIFY_UNMAP`` for the range, preceded by one 2 MiB ``MMU_NOTIFY_CLEAR`` per
  range edge that splits a THP (``__split_vma`` -> ``__split_huge_pmd``, mm/huge_memory.c).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from s2teardown.core.geometry import Geometry

#: Invocation kinds; each selects the variant's behaviour block of the same name.
TEARDOWN = "teardown"  # kvm_mmu_notifier_release -> kvm_arch_flush_shadow_all -> kvm_free_stage2_pgd
UNMAP = "unmap"  # MMU_NOTIFY_UNMAP -> kvm_unmap_hva_range -> handle_hva_to_gpa -> unmap_stage2_range
CLEAR = "clear"  # MMU_NOTIFY_CLEAR (THP split, MADV_DONTNEED, ...) -> same functions as UNMAP
MEMSLOT = "memslot"  # KVM_SET_USER_MEMORY_REGION delete/move -> kvm_arch_flush_shadow_memslot
RESET = "reset"  # vCPU re-init after the VM ran -> stage2_unmap_vm: every memslot, whole
BLOCK_RETRY = "block_retry"  # fault path: table -> block, stage2_set_pmd_huge "unmap and retry"
#: Kinds that iterate the memslots (handle_hva_to_gpa, stage2_unmap_vm); the others are given
#: their range directly.
ITERATES_MEMSLOTS = (UNMAP, CLEAR, RESET)


@dataclass(frozen=True)
class Memslot:
    lo: int
    hi: int
    name: str = ""


@dataclass(frozen=True)
class Extent:
    lo: int
    hi: int
    leaf: int  # leaf size in bytes: geometry.leaf_sizes
    slot: int  # index into Layout.memslots
    device: bool = False


@dataclass(frozen=True)
class Invocation:
    """One notifier call (or the release callback) and the guest-physical range it covers."""

    kind: str  # TEARDOWN, UNMAP or CLEAR
    lo: int
    hi: int
    blockable: bool = True  # False for the OOM reaper (non-blockable notifier)


@dataclass(frozen=True)
class Layout:
    geometry: Geometry
    memslots: tuple[Memslot, ...]
    extents: tuple[Extent, ...] = field(default=())

    def validate(self) -> None:
        """Raise ValueError if the layout breaks a convention above (programming error, not user)."""
        g = self.geometry
        prev_hi = -1
        for s in self.memslots:
            if not (0 <= s.lo < s.hi <= g.ipa_size) or s.lo % g.granule or s.hi % g.granule:
                raise ValueError(f"memslot {s} outside the IPA space or not granule-aligned")
            if s.lo < prev_hi:
                raise ValueError("memslots must be sorted and disjoint")
            prev_hi = s.hi
        prev_hi = -1
        for e in self.extents:
            if e.leaf not in g.leaf_sizes:
                raise ValueError(f"extent {e}: leaf {e.leaf} not in {g.leaf_sizes}")
            if e.lo % e.leaf or e.hi % e.leaf or e.lo >= e.hi:
                raise ValueError(f"extent {e}: not aligned to its leaf size or empty")
            if e.device and e.leaf != g.granule:
                raise ValueError(f"extent {e}: device mappings are always pages")
            s = self.memslots[e.slot]
            if not (s.lo <= e.lo and e.hi <= s.hi):
                raise ValueError(f"extent {e} not inside memslot {s}")
            if e.lo < prev_hi:
                raise ValueError("extents must be sorted and disjoint")
            prev_hi = e.hi

    @property
    def mapped_bytes(self) -> int:
        return sum(e.hi - e.lo for e in self.extents)


def exit_event(layout: Layout) -> tuple[Invocation, ...]:
    """Process exit: one release callback over the whole IPA space."""
    return (Invocation(TEARDOWN, 0, layout.geometry.ipa_size),)


def munmap_event(layout: Layout, lo: int, hi: int) -> tuple[Invocation, ...]:
    """munmap of guest-physical ``[lo, hi)``: THP-split CLEARs at unaligned edges, then one UNMAP.

    An edge splits a THP when it is not aligned to the PMD block size and falls inside a
    (non-device) PMD-block extent; the CLEAR covers that whole block.  Two edges in one block
    split it once (the second ``__split_vma`` finds it already split).
    """
    g = layout.geometry
    pmd = g.leaf_sizes[1]
    calls: list[Invocation] = []
    seen: set[int] = set()
    for edge in (lo, hi):
        if edge % pmd == 0:
            continue
        block = edge - edge % pmd
        if block in seen:
            continue
        for e in layout.extents:
            if e.leaf == pmd and not e.device and e.lo <= block < e.hi:
                calls.append(Invocation(CLEAR, block, block + pmd))
                seen.add(block)
                break
    calls.append(Invocation(UNMAP, lo, hi))
    return tuple(calls)
