"""Kernel events -> priced primitive operations, per phase, for a machine's features and a
kernel's frame.

Each kernel event (`ops.EVENTS`) runs a fixed instruction sequence that depends only on the
machine features that change the code path (VHE: no HVC, a different VMID switch; the CPU errata
of `Features`) and on the kernel era (`Frame`, `FRAMES`; docs/model.md §6.1, checked against
real kernels by `make validate-kernel`).  The v5.5 sources:

* ``kvm_set_pte`` (arch/arm64/include/asm/kvm_mmu.h): ``WRITE_ONCE`` then ``dsb(ishst)``; block
  and table entries are cleared with ``pmd_clear``/``pud_clear``, which issue no barrier for an
  invalid entry (arch/arm64/include/asm/pgtable.h ``set_pmd``/``set_pud``).
* ``kvm_tlb_flush_vmid_ipa`` -> ``kvm_call_hyp(__kvm_tlb_flush_vmid_ipa)``
  (arch/arm64/kvm/hyp/tlb.c): ``dsb ishst``; VMID switch (VTTBR, and HCR_EL2.TGE on VHE) + ``isb``;
  ``tlbi ipas2e1is``; ``dsb ish``; ``tlbi vmalle1is``; ``dsb ish``; ``isb``; switch back.  One HVC
  on nVHE; ``kvm_call_hyp`` adds an ``isb`` on VHE.  Net (docs/model.md §6): 2 broadcast TLBIs,
  1 ``dsb ishst`` + 2 ``dsb ish``, 2 ISBs on nVHE / 4 on VHE; system-register writes:
  ``__load_guest_stage2`` writes VTCR_EL2 and VTTBR_EL2, VTTBR is reset on the way out (nVHE 3),
  plus HCR_EL2 in and out on VHE (5).  The speculative-AT workaround adds to this
  (`Features.speculative_at`); VPIPT's ``ic ialluis`` is not modelled.
* ``kvm_flush_remote_tlbs`` -> ``__kvm_tlb_flush_vmid``: ``dsb ishst``; switch + ``isb``;
  ``tlbi vmalls12e1is``; ``dsb ish``; ``isb``; switch back.
* ``__flush_dcache_area`` (arch/arm64/mm/cache.S): one ``dc civac`` per line, then ``dsb sy``.
* The repeat-TLBI workaround (``__tlbi`` with ARM64_WORKAROUND_REPEAT_TLBI; NVIDIA Grace):
  each TLBI instruction is followed by ``dsb ish`` and repeated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from s2teardown.core.vocabulary import EVENT_INDEX, EVENTS, OP_INDEX, OPS, PHASE_INDEX, PHASES

F64 = npt.NDArray[np.float64]

#: The phase each event is charged to.
EVENT_PHASE: dict[str, str] = {
    "notifier_call": "notifier",
    "memslot_visit": "memslots",
    "entry_visit": "walk",
    "pte_clear": "clear",
    "block_clear": "clear",
    "table_clear": "clear",
    "put_page": "clear",
    "tlb_flush_vmid_ipa": "tlbi",
    "dcache_flush_call": "cmo",
    "dc_civac_line": "cmo",
    "table_free": "table_free",
    "resched_point": "resched",
    "flush_remote_tlbs": "final_flush",
    "range_flush_call": "tlbi",
    "range_tlbi_op": "tlbi",
    "host_pte_zap": "host_zap",
    "host_pmd_zap": "host_zap",
    "host_hugetlb_zap": "host_zap",
    "host_pmd_split": "host_zap",
    "host_page_free": "host_free",
    "host_folio_free": "host_free",
    "host_hugetlb_free": "host_free",
    "host_table_free": "host_free",
    "srcu_sync": "wait",
    "host_tlb_flush_mm": "host_zap",
    "host_tlb_flush_range": "host_zap",
    "host_tlbi_va": "host_zap",
    "host_tlbi_range": "host_zap",
    # pKVM and nested virtualisation (core/el2.py, docs/model.md §15)
    "pkvm_unshare_call": "el2_reclaim",
    "pkvm_start_teardown": "el2_reclaim",
    "pkvm_reclaim_call": "el2_reclaim",
    "el2_entry_visit": "el2_reclaim",
    "el2_entry_clear": "el2_reclaim",
    "el2_tlb_flush_vmid_ipa": "el2_reclaim",
    "poison_page": "poison",
    "poison_line_zero": "poison",
    "poison_line_clean": "poison",
    "pkvm_page_unpin": "pkvm_host",
    "pkvm_account": "pkvm_host",
    "pkvm_mapping_free": "pkvm_host",
    "pkvm_finalize_call": "el2_finalize",
    "el2_flush_vmid": "el2_finalize",
    "hyp_memcache_free": "el2_finalize",
    "vncr_invalidate": "notifier",
}


@dataclass(frozen=True)
class Features:
    """The machine features and CPU errata that change instruction counts."""

    vhe: bool = False
    tlbi_repeat: bool = False  # old ARM64_WORKAROUND_REPEAT_TLBI: every TLBI doubled
    speculative_at: bool = False  # ARM64_WORKAROUND_SPECULATIVE_AT (1165522, 1319367, 1530923)
    tlbi_sync_erratum: bool = False  # erratum 4118414 class: "Broken broadcast TLBI completion"


@dataclass(frozen=True)
class Frame:
    """What one kernel era's code executes around the events (docs/model.md §3.1).

    Read from the sources named on each era in `FRAMES`, and checked against Debian's 6.1.192,
    6.12.117 and 7.2.13 running KVM under QEMU (docs/validation.md).
    """

    name: str
    since: tuple[int, ...]  # first mainline release with this frame
    #: ``kvm_set_pte`` ends in ``dsb ishst`` (v5.5 virt/kvm/arm/mmu.c); from v5.10 the
    #: kvm_pgtable walkers clear an entry with a plain ``WRITE_ONCE`` (arch/arm64/kvm/hyp/pgtable.c
    #: ``kvm_set_invalid_pte``, later ``kvm_clear_pte``): no barrier per cleared entry
    pte_clear_dsb: bool
    #: the barrier opening a TLB hyp call: ``dsb ishst`` (``__kvm_tlb_flush_vmid_ipa`` to 6.x),
    #: ``dsb ish`` on nVHE once ``enter_vmid_context`` took over (measured 6.12, 7.2)
    nvhe_entry_dsb: str
    #: nVHE ``exit_vmid_context`` ends with an unconditional ``isb`` (measured 6.12, 7.2: 3 ISBs
    #: per call without the speculative-AT workaround, 4 with it; before: 2 and 4)
    nvhe_exit_isb: bool
    #: VHE ``__tlb_switch_to_host`` also reloads VTTBR_EL2 (measured 6.1: 2 writes per call);
    #: ``exit_vmid_context`` does not (6.12, 7.2: 1 write)
    vhe_vttbr_restore: bool
    #: the kernel carries erratum 4118414's workaround (``__repeat_tlbi_sync``): on an affected
    #: CPU, one more ``tlbi vale2is, xzr; dsb ish`` after each hyp call's completing DSB.
    #: Stable backports put it in every maintained series (5.10.262, 6.1.192, 6.12.117+, 7.2);
    #: the frames of v5.10 on describe those maintained releases
    tlbi_sync_workaround: bool


#: Kernel eras, oldest first (`frame_for` picks the newest whose ``since`` is not after a
#: version).  docs/model.md §3.1 gives each count's source.
FRAMES: tuple[Frame, ...] = (
    Frame("v5.5", (5, 5), pte_clear_dsb=True, nvhe_entry_dsb="ishst", nvhe_exit_isb=False,
          vhe_vttbr_restore=True, tlbi_sync_workaround=False),
    Frame("v5.10", (5, 10), pte_clear_dsb=False, nvhe_entry_dsb="ishst", nvhe_exit_isb=False,
          vhe_vttbr_restore=True, tlbi_sync_workaround=True),
    Frame("v6.9", (6, 9), pte_clear_dsb=False, nvhe_entry_dsb="ish", nvhe_exit_isb=True,
          vhe_vttbr_restore=False, tlbi_sync_workaround=True),
)

#: The frame every variant without a known kernel version gets (the series' base).
DEFAULT_FRAME: Frame = FRAMES[0]


def frame_for(version: tuple[int, ...]) -> Frame:
    """The frame of a mainline kernel version (major, minor, ...)."""
    out = FRAMES[0]
    for fr in FRAMES:
        if tuple(version[:2]) >= fr.since:
            out = fr
    return out


def _hyp_call(f: Features, fr: Frame) -> dict[str, int]:
    """The common frame of a TLB-maintenance hyp call: entry, VMID switch in and out.

    ``__load_stage2`` (``__load_guest_stage2`` in v5.5) writes VTCR_EL2 and VTTBR_EL2; the way
    out reloads the host's VTTBR_EL2 (nVHE ``__load_host_stage2``; VHE to 6.x only).
    """
    if f.vhe:
        # kvm_call_hyp's isb, the isb after HCR_EL2.TGE is cleared, the flush's final isb, the
        # isb after HCR_EL2 is restored: 4.  VTCR + VTTBR + HCR in, HCR (+ VTTBR) out
        out = {"isb": 4, "sysreg_write": 4 + (1 if fr.vhe_vttbr_restore else 0)}
        if f.speculative_at:
            # TCR_EL12 (EPD bits) and SCTLR_EL12.M set on the way in and restored on the way
            # out (4 writes), one more isb  [read from the 6.12/7.2 Images' disassembly; no
            # emulated CPU of the matrix has both VHE and this erratum]
            out = _merge(out, {"isb": 1, "sysreg_write": 4})
        return _merge(out, {"dsb_ishst": 1})
    # nVHE: one HVC (and its ERET); VTCR + VTTBR in, VTTBR out; the isb after the switch in
    # (replaced, under the speculative-AT workaround, by an isb after the TCR_EL1 write and one
    # at the end of __load_stage2) and the flush's final isb
    # (plus the unconditional exit isb of the v6.9 frame, which then stands in for one of the
    # workaround's two: 3 ISBs without it and 4 with it, against 2 and 4 before)
    out = {"hvc": 1, "isb": 3 if fr.nvhe_exit_isb else 2, "sysreg_write": 3}
    if f.speculative_at:
        # TCR_EL1 written in (EPD0/EPD1 set) and restored out, with their isbs
        out = _merge(out, {"isb": 1 if fr.nvhe_exit_isb else 2, "sysreg_write": 2})
    return _merge(out, {f"dsb_{fr.nvhe_entry_dsb}": 1})


def _tlbi(op: str, n: int, f: Features) -> dict[str, int]:
    """``n`` TLBI instructions each followed by its ``dsb ish``, with the repeat workaround."""
    if f.tlbi_repeat:
        return {op: 2 * n, "dsb_ish": 2 * n}
    return {op: n, "dsb_ish": n}


def _sync(f: Features, fr: Frame) -> dict[str, int]:
    """Erratum 4118414's workaround: one broadcast ``tlbi vale2is, xzr`` and ``dsb ish`` after
    the hyp call's completing DSB (measured: one per call on Cortex-A76, 6.1/6.12/7.2)."""
    if f.tlbi_sync_erratum and fr.tlbi_sync_workaround:
        return {"tlbi_is": 1, "dsb_ish": 1}
    return {}


def _merge(*parts: dict[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in parts:
        for k, v in p.items():
            out[k] = out.get(k, 0) + v
    return out


def _without_hvc(ops: dict[str, int]) -> dict[str, int]:
    """A hyp-call frame as run from inside a hypercall at EL2: the same, less its HVC."""
    return {k: v for k, v in ops.items() if k != "hvc"}


def event_ops(f: Features, fr: Frame = DEFAULT_FRAME) -> dict[str, dict[str, int]]:
    """For each event, the operations one occurrence executes under one kernel frame."""
    tlb_ipa = _merge(_hyp_call(f, fr), _tlbi("tlbi_is", 2, f), _sync(f, fr))
    flush_vmid = _merge(_hyp_call(f, fr), _tlbi("tlbi_vmall", 1, f), _sync(f, fr))
    # __kvm_tlb_flush_vmid_range: the range ops (counted per op below), dsb ish, vmalle1is
    range_call = _merge(_hyp_call(f, fr), {"dsb_ish": 1}, _tlbi("tlbi_is", 1, f), _sync(f, fr))
    return {
        "notifier_call": {"notifier_call": 1},
        "memslot_visit": {"memslot_visit": 1},
        "entry_visit": {"entry_visit": 1},
        "pte_clear": {"entry_clear": 1, "dsb_ishst": 1} if fr.pte_clear_dsb else {"entry_clear": 1},
        "block_clear": {"entry_clear": 1},
        "table_clear": {"entry_clear": 1},
        "put_page": {"put_page": 1},
        "tlb_flush_vmid_ipa": tlb_ipa,
        "dcache_flush_call": {"dsb_sy": 1},
        "dc_civac_line": {"dc_civac_line": 1},
        "table_free": {"table_free": 1},
        "resched_point": {"resched_point": 1},
        "flush_remote_tlbs": flush_vmid,
        "range_flush_call": range_call,
        # __flush_s2_tlb_range_op issues each op with __tlbi(): the repeat workaround applies
        "range_tlbi_op": {"tlbi_range": 2, "dsb_ish": 1} if f.tlbi_repeat else {"tlbi_range": 1},
        # the host's zap of one entry is the same three steps as Stage-2's: load the entry,
        # clear it, drop a reference (the folio's mapcount and refcount: folio_remove_rmap_*)
        "host_pte_zap": {"entry_visit": 1, "entry_clear": 1, "put_page": 1},
        "host_pmd_zap": {"entry_visit": 1, "entry_clear": 1, "put_page": 1},
        "host_hugetlb_zap": {"entry_visit": 1, "entry_clear": 1, "put_page": 1},
        "host_pmd_split": {"host_pmd_split": 1},
        "host_page_free": {"host_page_free": 1},
        "host_folio_free": {"host_folio_free": 1},
        "host_hugetlb_free": {"host_hugetlb_free": 1},
        "host_table_free": {"table_free": 1},  # a page-table page back to the buddy allocator
        "srcu_sync": {"srcu_grace_period": 1},
        # the host's TLB flushes (arch/arm64/include/asm/tlbflush.h): flush_tlb_mm is
        # dsb ishst; TLBI ASIDE1IS (one broadcast TLBI, priced as one); dsb ish.  A range flush
        # is dsb ishst ... dsb ish around its TLBIs, counted apart; __tlbi() repeats each TLBI
        # under the repeat erratum, with a dsb ish between (KPTI's __tlbi_user twin: not modelled)
        "host_tlb_flush_mm": _merge({"dsb_ishst": 1}, _tlbi("tlbi_is", 1, f)),
        "host_tlb_flush_range": {"dsb_ishst": 1, "dsb_ish": 1},
        "host_tlbi_va": {"tlbi_is": 2, "dsb_ish": 1} if f.tlbi_repeat else {"tlbi_is": 1},
        "host_tlbi_range": {"tlbi_range": 2, "dsb_ish": 1} if f.tlbi_repeat else {"tlbi_range": 1},
        # pKVM (docs/model.md §15.3): a hypercall is one HVC round trip; the TLB maintenance it
        # runs at EL2 is the hyp-call frame without its HVC (already at EL2)
        "pkvm_unshare_call": {"hvc": 1},
        "pkvm_start_teardown": {"hvc": 1},
        "pkvm_reclaim_call": {"hvc": 1},
        "el2_entry_visit": {"entry_visit": 1},
        "el2_entry_clear": {"entry_clear": 1},
        "el2_tlb_flush_vmid_ipa": _without_hvc(tlb_ipa),
        # hyp_fixmap_map / hyp_fixmap_unmap: a fixmap PTE written twice, then dsb ishst, one
        # `tlbi vale2is` (measured: one per poisoned page, 7.2 under QEMU, docs/model.md §15.5),
        # its dsb, isb; the clean's dsb sy
        "poison_page": {"entry_clear": 2, "dsb_ishst": 1, "tlbi_is": 1, "dsb_ish": 1, "isb": 1,
                        "dsb_sy": 1},
        "poison_line_zero": {"line_zero": 1},
        "poison_line_clean": {"dc_civac_line": 1},
        # unpin_user_pages_dirty_lock: the folio marked dirty (a flag write) and its pin dropped
        "pkvm_page_unpin": {"put_page": 1, "entry_clear": 1},
        "pkvm_account": {"put_page": 1},  # account_locked_vm: one atomic on mm->pinned_vm
        "pkvm_mapping_free": {"slab_free": 1},
        "pkvm_finalize_call": {"hvc": 1},
        "el2_flush_vmid": _without_hvc(flush_vmid),
        "hyp_memcache_free": {"table_free": 1},  # a page back to the buddy allocator
        "vncr_invalidate": {"entry_visit": 1},  # one vCPU's VNCR pseudo-TLB checked
    }


def expansion(f: Features, fr: Frame = DEFAULT_FRAME) -> npt.NDArray[np.int64]:
    """Tensor X[event, phase, op]: ops per occurrence of each event, at the event's phase."""
    x = np.zeros((len(EVENTS), len(PHASES), len(OPS)), dtype=np.int64)
    for ev, ops in event_ops(f, fr).items():
        for op, n in ops.items():
            x[EVENT_INDEX[ev], PHASE_INDEX[EVENT_PHASE[ev]], OP_INDEX[op]] = n
    return x


def op_counts(
    events: npt.NDArray[np.int64], f: Features, fr: Frame = DEFAULT_FRAME
) -> npt.NDArray[np.int64]:
    """Exact operation counts ``[..., phase, op]`` from event counts ``[..., event]``."""
    return np.einsum("...e,epo->...po", events, expansion(f, fr))  # type: ignore[no-any-return]
