"""A Stage-2 layout (memslots and what each part of them is mapped with) and the unmap event.

This is the common input of the vectorised counts (`counts.py`) and of the literal walker
(`walker.py`).  Everything is in guest-physical bytes.  Pure data, no I/O.

Modelling conventions (docs/model.md, "Layouts"):
* An **extent** is a run ``[lo, hi)`` of guest-physical space mapped uniformly by leaves of one
  size (a page, a PMD block or a PUD block), aligned to that size, inside one memslot.  Space
  covered by no extent is unmapped (a hole).  ``device`` extents are device PTEs (pages only):
  they are unmapped like any PTE but never cleaned (``kvm_is_device_pfn``) nor freed by the host.
* The host's backing of an extent is taken to be its Stage-2 leaf size: a PMD-block extent is a
  THP on the host, or a 2 MiB hugetlb page when ``hugetlb`` is set; a PUD block is a 1 GiB
  hugetlb page; a page extent is order-0 host pages (core/host.py).
* Memslots are mapped at ``userspace_addr = GPA + constant`` (one contiguous host mapping), so a
  munmap range is given directly in guest-physical terms.
* Each run of adjacent memslots (one's end is the next one's start) is **one VMA** of the host
  (anonymous memory; a workload's memslots are one run, guest RAM), and the host populated
  exactly what the layout maps (every extent, device pages included: their host PTEs sit in the
  same tables), so the host has a PMD table wherever an extent lies in that table's span
  (`host_pmd_table_span`).  The constant between GPA and host address is a multiple of that span.
* An **event** is the ordered list of notifier calls (`Invocation`) one user-visible action
  raises: process exit raises one release (whole IPA space, no memslot iteration); a munmap
  raises one ``MMU_NOTIFY_UNMAP`` for the range, preceded by one PMD-block ``MMU_NOTIFY_CLEAR``
  per range edge that ``__split_vma`` hands to ``__split_huge_pmd`` (`munmap_event`), whatever
  backs that block.
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
    hugetlb: bool = False  # a block backed by hugetlbfs pages on the host (else a THP; PUD: always)


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
            if e.hugetlb and e.leaf == g.granule:
                raise ValueError(f"extent {e}: hugetlb pages are blocks")
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


def host_pmd_table_span(g: Geometry) -> int:
    """Bytes one host PMD table maps: PMD block x entries per table (4 KiB pages: 1 GiB; 16 KiB:
    64 GiB; 64 KiB: 4 TiB).  ``split_huge_pmd_address`` reaches the PMD entry only when the entry
    above it is present (v5.5: ``pgd_present`` / ``p4d_present`` / ``pud_present``; later
    ``mm_find_pmd`` returns NULL otherwise): a host with 48-bit VA, where that entry is a real
    PUD (4 KiB) or the pgd entry above a folded PUD (64 KiB)."""
    return g.leaf_sizes[1] * g.entries_per_table


def split_edge(layout: Layout, edge: int, vma_lo: int, vma_hi: int) -> bool:
    """Does ``__split_vma`` at ``edge`` of the VMA ``[vma_lo, vma_hi)`` start a notifier?

    ``vma_adjust_trans_huge`` -> ``split_huge_pmd_if_needed`` (mm/huge_memory.c; the same test
    open-coded in v5.5's ``vma_adjust_trans_huge``): the edge is not PMD-aligned and the
    PMD block holding it lies inside the VMA being split (``range_in_vma``); then
    ``split_huge_pmd_address`` finds the PMD entry if the host has a PMD table there, and
    ``__split_huge_pmd`` calls ``mmu_notifier_invalidate_range_start`` over the whole block
    **before** it looks at the PMD: a THP is split, a PTE table is left as it is, the CLEAR is
    raised either way.
    """
    g = layout.geometry
    pmd = g.leaf_sizes[1]
    if not vma_lo < edge < vma_hi or edge % pmd == 0:
        return False
    block = edge - edge % pmd
    if block < vma_lo or block + pmd > vma_hi:
        return False
    span = host_pmd_table_span(g)
    t_lo = edge - edge % span
    return any(e.lo < t_lo + span and t_lo < e.hi for e in layout.extents)


def munmap_event(layout: Layout, lo: int, hi: int) -> tuple[Invocation, ...]:
    """munmap of guest-physical ``[lo, hi)``: PMD-block CLEARs at the edges, then one UNMAP.

    ``__do_munmap`` (v5.5; ``do_vmi_align_munmap`` / ``vms_gather_munmap_vmas`` later) splits
    the VMA holding ``lo`` if ``lo`` is strictly inside it, then the VMA holding ``hi`` if
    ``hi`` is strictly inside it — by then starting at ``lo`` if it is the same VMA; each split
    raises one CLEAR over the edge's PMD block under `split_edge`'s condition.  So an upper
    edge whose block begins below ``lo`` (both edges in one block, ``lo`` unaligned) raises
    nothing: one CLEAR for that block, not two.  Then ``unmap_region`` -> ``unmap_vmas`` raises
    the UNMAP of the whole range.
    """
    pmd = layout.geometry.leaf_sizes[1]
    calls: list[Invocation] = []
    for v_lo, v_hi in vmas(layout):
        for edge, bottom in ((lo, v_lo), (hi, max(v_lo, lo))):
            if split_edge(layout, edge, bottom, v_hi):
                block = edge - edge % pmd
                calls.append(Invocation(CLEAR, block, block + pmd))
    calls.append(Invocation(UNMAP, lo, hi))
    return tuple(calls)


def vmas(layout: Layout) -> list[tuple[int, int]]:
    """The host VMAs: each run of adjacent memslots, ``[first start, last end)``, in GPA order."""
    out: list[tuple[int, int]] = []
    for m in layout.memslots:
        if out and out[-1][1] == m.lo:
            out[-1] = (out[-1][0], m.hi)
        else:
            out.append((m.lo, m.hi))
    return out
