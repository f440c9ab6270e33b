"""EL2 teardown paths: Protected KVM (pKVM) and nested virtualisation's shadow Stage-2s.

Two families of arm64 VMs tear down along paths other than the host-managed Stage-2 walk
(docs/model.md §15 derives every count here from the kernel functions, with versions):

* **pKVM** (``kvm-arm.mode=protected``).  From Linux 6.14 a pKVM guest's Stage-2 lives at EL2;
  the host keeps one ``struct pkvm_mapping`` per page in an rb-tree and reaches the hypervisor
  through ``KVM_PGT_FN`` (arch/arm64/kvm/pkvm.c).  A *non-protected* VM's mappings are dropped
  one HVC ``__pkvm_host_unshare_guest`` per mapping (EL2: the guest leaf cleared and invalidated,
  the host Stage-2's page state set back), then ``rb_erase`` + ``kfree`` — at exit
  (``pkvm_pgtable_stage2_destroy``) and on every notifier unmap (``pkvm_pgtable_stage2_unmap``).
  A *protected* VM (Linux 7.1) is torn down with ``__pkvm_start_teardown_vm`` once, then per page
  ``__pkvm_reclaim_dying_guest_page`` (EL2 looks the page up, ``hyp_poison_page`` zeroes it and
  cleans it to the PoC even with FWB, unmaps it from the guest and hands it back to the host),
  and per page on the host ``unpin_user_pages_dirty_lock``, ``account_locked_vm``, ``rb_erase``,
  ``kfree``; notifier unmaps are ignored for a protected VM.  ``kvm_arch_destroy_vm`` ->
  ``pkvm_destroy_hyp_vm`` then makes one finalize HVC (``__pkvm_finalize_teardown_vm``;
  ``__pkvm_teardown_vm`` before 7.1): one ``__kvm_tlb_flush_vmid``, ``reclaim_pgtable_pages``
  (EL2 walk of the emptied guest Stage-2) and the host's ``free_hyp_memcache`` of the table pages.
* **Nested virtualisation** (arch/arm64/kvm/nested.c): ``kvm_arch_flush_shadow_all`` frees every
  shadow Stage-2 (``kvm->arch.nested_mmus[i]``, each a whole ``kvm_free_stage2_pgd``) before the
  canonical one, and every notifier unmap (``kvm_unmap_gfn_range``) and memslot flush
  (``kvm_arch_flush_shadow_memslot``) calls ``kvm_nested_s2_unmap``: the WHOLE IPA range of every
  valid shadow, then ``kvm_invalidate_vncr_ipa``.  The shadows' own walks are the ordinary
  Stage-2 counts (their `Batch` rides on the canonical one, `counts.totals` folds them in).

The model maps a pKVM guest page by page (``pkvm_pgtable_stage2_map`` accepts PAGE_SIZE only in
the 6.14 code it derives from): one mapping per guest RAM page, whatever ``--backing`` says.
Pure: arrays in, arrays out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from s2teardown.core.geometry import Geometry
from s2teardown.core.intervals import I64, to_units, union_length
from s2teardown.core.layout import CLEAR, MEMSLOT, TEARDOWN, UNMAP

#: ``kvm-arm.mode`` values the model knows (``--kvm-mode``).
KVM_MODES: Final[tuple[str, ...]] = ("nvhe", "vhe", "protected")

#: The first mainline release with each path (docs/model.md §15.1).
#: "KVM: arm64: Plumb the pKVM MMU in KVM" and the ``__pkvm_host_share_guest`` /
#: ``__pkvm_host_unshare_guest`` hypercalls (Quentin Perret, KVM/arm64 updates for 6.14).
PKVM_GUEST_S2: Final[tuple[int, int]] = (6, 14)
#: "KVM: arm64: Split teardown hypercall into two phases", "Introduce
#: __pkvm_reclaim_dying_guest_page()", "Hook up reclaim hypercall to
#: pkvm_pgtable_stage2_destroy()" (Will Deacon, merged for 7.1).
PKVM_PROTECTED_TEARDOWN: Final[tuple[int, int]] = (7, 1)
#: Shadow Stage-2 MMUs: ``kvm->arch.nested_mmus``, ``kvm_nested_s2_unmap`` and the shadows freed
#: by ``kvm_arch_flush_shadow_all`` ("KVM: arm64: nv: Shadow stage-2 page table handling",
#: Marc Zyngier, merged for 6.11).
NESTED_S2: Final[tuple[int, int]] = (6, 11)
#: ``kvm_invalidate_vncr_ipa`` from ``kvm_nested_s2_unmap`` ("KVM: arm64: nv: Handle VNCR_EL2
#: invalidation from MMU notifiers", Marc Zyngier, merged for 6.16).
NESTED_VNCR: Final[tuple[int, int]] = (6, 16)

#: Invocation kinds whose kernel path calls ``kvm_nested_s2_unmap`` (kvm_unmap_gfn_range,
#: kvm_arch_flush_shadow_memslot).
SHADOW_UNMAP_KINDS: Final[tuple[str, ...]] = (UNMAP, CLEAR, MEMSLOT)
#: Invocation kinds the shadow Stage-2s follow: the notifier unmaps, and the exit.
SHADOW_KINDS: Final[tuple[str, ...]] = (*SHADOW_UNMAP_KINDS, TEARDOWN)
#: Invocation kinds a pKVM estimate models (vCPU reset, the fault path's block retry and a
#: memslot delete of a protected VM are not modelled under pKVM).
PKVM_KINDS: Final[tuple[str, ...]] = (TEARDOWN, UNMAP, CLEAR)


@dataclass(frozen=True)
class El2Path:
    """Which EL2 path one variant's kernel takes for the workload (`path_for`).

    ``pkvm``: "none" (the host-managed Stage-2 of the ordinary model, also a pKVM guest before
    6.14), "unshare" (a non-protected pKVM VM, 6.14+), "protected" (a protected VM, 7.1+).
    """

    pkvm: str = "none"
    start_teardown: bool = False  # the 7.1 split: __pkvm_start_teardown_vm before the reclaim
    nested: bool = False  # shadow Stage-2s are walked and freed
    vncr: bool = False  # kvm_nested_s2_unmap ends in kvm_invalidate_vncr_ipa

    @property
    def replaces_stage2(self) -> bool:
        """The canonical Stage-2 is not walked by the host: the pKVM mapping tree replaces it."""
        return self.pkvm != "none"


#: The ordinary model: no EL2 path.
HOST_MANAGED: Final[El2Path] = El2Path()


def path_for(mode: str, protected: bool, shadows: int, release: tuple[int, ...] | None) -> El2Path | None:
    """The path a kernel ``release`` takes (None: unknown, taken as the newest), or None if that
    kernel has no path for the workload (a protected VM before 7.1, shadow MMUs before 6.11)."""
    if mode not in KVM_MODES:
        raise ValueError(f"kvm-mode: expected one of {', '.join(KVM_MODES)}")
    if protected and mode != "protected":
        raise ValueError("protected-vm: expected --kvm-mode protected (a protected VM needs pKVM)")
    if shadows and mode != "vhe":
        raise ValueError("shadow-mmus: expected a VHE host (--kvm-mode vhe on a machine with VHE): "
                         "nested virtualisation runs with KVM at EL2, neither nVHE nor pKVM")
    at = tuple(release[:2]) if release else (99, 99)
    if protected and at < PKVM_PROTECTED_TEARDOWN:
        return None
    if shadows and at < NESTED_S2:
        return None
    pkvm = "none"
    if mode == "protected" and at >= PKVM_GUEST_S2:
        pkvm = "protected" if protected else "unshare"
    return El2Path(
        pkvm=pkvm,
        start_teardown=pkvm != "none" and at >= PKVM_PROTECTED_TEARDOWN,
        nested=shadows > 0,
        vncr=shadows > 0 and at >= NESTED_VNCR,
    )


@dataclass(frozen=True)
class PkvmQuantities:
    """What the pKVM path of one batch does, per scenario (each ``(S,)`` int64)."""

    pages: tuple[I64, ...]  # guest RAM pages each invocation removes (its passes, page-granular)
    ram_pages: I64  # every guest RAM page mapped (a protected VM's exit reclaims them all)
    tables: I64  # table pages below the pgd of the page-granular EL2 Stage-2 of guest RAM
    pgd_pages: I64  # the pgd's pages
    top_entries: I64  # entries of the pgd: reclaim_pgtable_pages' walk of the emptied Stage-2


def pkvm_quantities(
    g: Geometry,
    ext_lo: I64,
    ext_hi: I64,
    ext_leaf: I64,
    ext_dev: np.ndarray,
    inv_present: np.ndarray,
    pass_lo: I64,
    pass_hi: I64,
    pass_inv: tuple[int, ...],
) -> PkvmQuantities:
    """The closed forms of docs/model.md §15.2 over a batch's arrays (extents ``(S, E)``,
    passes ``(S, J)``).  An invocation removes the guest RAM pages inside its passes that no
    earlier invocation removed: ``|U_i ∩ RAM| - |U_{i-1} ∩ RAM|`` with ``U_i`` the union of the
    passes of invocations ``0..i`` (extents are page-aligned, so bytes / granule are pages)."""
    n_s = ext_lo.shape[0]
    ram = (ext_leaf > 0) & ~np.asarray(ext_dev, dtype=bool)
    r_lo = np.where(ram, ext_lo, 0)[:, :, None]  # (S, E, 1)
    r_hi = np.where(ram, ext_hi, 0)[:, :, None]
    n_inv = inv_present.shape[1]
    pages: list[I64] = []
    before = np.zeros(n_s, dtype=np.int64)
    cols: list[int] = []
    for i in range(n_inv):
        cols.extend(j for j, ii in enumerate(pass_inv) if ii == i)
        if cols:
            p_lo = np.where(inv_present[:, [pass_inv[j] for j in cols]], pass_lo[:, cols], 0)[:, None, :]
            p_hi = np.where(inv_present[:, [pass_inv[j] for j in cols]], pass_hi[:, cols], 0)[:, None, :]
            c_lo = np.maximum(p_lo, r_lo)
            c_hi = np.minimum(p_hi, r_hi)
            covered = union_length(c_lo, c_hi).sum(axis=-1)  # (S,)
        else:
            covered = np.zeros(n_s, dtype=np.int64)
        pages.append((covered - before) // g.granule)
        before = covered
    ram_bytes = np.maximum(r_hi - r_lo, 0)[:, :, 0].sum(axis=-1)
    tables = np.zeros(n_s, dtype=np.int64)
    for level in range(1, g.levels):  # a table at `level` spans one entry of `level - 1`
        u_lo, u_hi = to_units(r_lo[:, :, 0], r_hi[:, :, 0], g.span(level - 1))
        tables = tables + union_length(u_lo, u_hi)
    return PkvmQuantities(
        pages=tuple(pages),
        ram_pages=ram_bytes // g.granule,
        tables=tables,
        pgd_pages=np.full(n_s, g.pgd_pages, dtype=np.int64),
        top_entries=np.full(n_s, g.top_entries, dtype=np.int64),
    )


#: Per page, what each path's call does, in kernel events (docs/model.md §15.2).  ``L`` stands
#: for the Stage-2 levels, ``LINES`` for the cache lines of a page.
def unshare_events(levels: int) -> dict[str, int]:
    """One ``__pkvm_host_unshare_guest`` (non-protected VM, one page): the HVC; at EL2 the guest
    leaf's walk and clear and its ``__kvm_tlb_flush_vmid_ipa``, and the host Stage-2 entry's walk
    and write (the page shared -> owned); on the host ``rb_erase`` + ``kfree`` of the mapping."""
    return {"pkvm_unshare_call": 1, "el2_entry_visit": 2 * levels, "el2_entry_clear": 2,
            "el2_tlb_flush_vmid_ipa": 1, "pkvm_mapping_free": 1}


def reclaim_events(levels: int, lines: int) -> dict[str, int]:
    """One ``__pkvm_reclaim_dying_guest_page`` (protected VM, one page) and the host's part: the
    HVC; at EL2 ``kvm_pgtable_get_leaf`` (a walk), ``hyp_poison_page`` (fixmap map, zero and
    clean every line to the PoC, fixmap unmap), the guest leaf's unmap (walk, clear, TLBI), the
    host Stage-2 entry given back (walk, write); on the host the page unpinned dirty
    (``unpin_user_pages_dirty_lock``), ``account_locked_vm``, ``rb_erase`` + ``kfree``."""
    return {"pkvm_reclaim_call": 1, "el2_entry_visit": 3 * levels, "el2_entry_clear": 2,
            "el2_tlb_flush_vmid_ipa": 1, "poison_page": 1, "poison_line_zero": lines,
            "poison_line_clean": lines, "pkvm_page_unpin": 1, "pkvm_account": 1,
            "pkvm_mapping_free": 1}


def finalize_events(path: El2Path) -> dict[str, int]:
    """Once per exit: ``__pkvm_start_teardown_vm`` (7.1+) and the finalize HVC with its one
    ``__kvm_tlb_flush_vmid`` at EL2 (the table pages and the pgd walk are per quantity)."""
    out = {"pkvm_finalize_call": 1, "el2_flush_vmid": 1}
    if path.start_teardown:
        out["pkvm_start_teardown"] = 1
    return out
