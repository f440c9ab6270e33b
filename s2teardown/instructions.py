"""Kernel events -> priced primitive operations, per phase, for a machine's features.

Each kernel event (`ops.EVENTS`) runs a fixed instruction sequence that depends only on the
features that change the code path: VHE (no HVC; a different VMID switch) and the repeat-TLBI
erratum workaround (every ``tlbi`` becomes ``tlbi; dsb ish; tlbi``).  Sources (Linux v5.5):

* ``kvm_set_pte`` (arch/arm64/include/asm/kvm_mmu.h): ``WRITE_ONCE`` then ``dsb(ishst)``; block
  and table entries are cleared with ``pmd_clear``/``pud_clear``, which issue no barrier for an
  invalid entry (arch/arm64/include/asm/pgtable.h ``set_pmd``/``set_pud``).
* ``kvm_tlb_flush_vmid_ipa`` -> ``kvm_call_hyp(__kvm_tlb_flush_vmid_ipa)``
  (arch/arm64/kvm/hyp/tlb.c): ``dsb ishst``; VMID switch (VTTBR, and HCR_EL2.TGE on VHE) + ``isb``;
  ``tlbi ipas2e1is``; ``dsb ish``; ``tlbi vmalle1is``; ``dsb ish``; ``isb``; switch back.  One HVC
  on nVHE; ``kvm_call_hyp`` adds an ``isb`` on VHE.  Net (DOMAIN.md §3): 2 broadcast TLBIs,
  1 ``dsb ishst`` + 2 ``dsb ish``, 2 ISBs on nVHE / 4 on VHE; system-register writes: VTTBR in
  and out on nVHE (2), VTTBR and HCR_EL2 in and out on VHE (4).  CPU-errata paths (1165522,
  1319367, VPIPT ``ic ialluis``) are not modelled [assumed: they add a few ISBs/sysreg writes].
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

from .ops import EVENT_INDEX, EVENTS, OP_INDEX, OPS, PHASE_INDEX, PHASES

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
    "host_page_free": "host_free",
    "host_folio_free": "host_free",
}


@dataclass(frozen=True)
class Features:
    """The machine features that change instruction counts."""

    vhe: bool = False
    tlbi_repeat: bool = False


def _hyp_call(f: Features) -> dict[str, int]:
    """The common frame of a TLB-maintenance hyp call: entry, VMID switch in and out."""
    if f.vhe:
        # kvm_call_hyp's isb, the switch-in isb(s), the final isb: 4 (DOMAIN.md §3); VTTBR and
        # HCR_EL2 written on the way in and restored on the way out: 4
        return {"isb": 4, "sysreg_write": 4}
    return {"hvc": 1, "isb": 2, "sysreg_write": 2}


def _tlbi(op: str, n: int, f: Features) -> dict[str, int]:
    """``n`` TLBI instructions each followed by its ``dsb ish``, with the repeat workaround."""
    if f.tlbi_repeat:
        return {op: 2 * n, "dsb_ish": 2 * n}
    return {op: n, "dsb_ish": n}


def _merge(*parts: dict[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in parts:
        for k, v in p.items():
            out[k] = out.get(k, 0) + v
    return out


def event_ops(f: Features) -> dict[str, dict[str, int]]:
    """For each event, the operations one occurrence executes."""
    tlb_ipa = _merge(_hyp_call(f), {"dsb_ishst": 1}, _tlbi("tlbi_is", 2, f))
    flush_vmid = _merge(_hyp_call(f), {"dsb_ishst": 1}, _tlbi("tlbi_vmall", 1, f))
    range_call = _merge(_hyp_call(f), {"dsb_ishst": 1, "dsb_ish": 1}, _tlbi("tlbi_is", 1, f))
    return {
        "notifier_call": {"notifier_call": 1},
        "memslot_visit": {"memslot_visit": 1},
        "entry_visit": {"entry_visit": 1},
        "pte_clear": {"entry_clear": 1, "dsb_ishst": 1},
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
        "host_page_free": {"host_page_free": 1},
        "host_folio_free": {"host_folio_free": 1},
    }


def expansion(f: Features) -> npt.NDArray[np.int64]:
    """Tensor X[event, phase, op]: ops per occurrence of each event, at the event's phase."""
    x = np.zeros((len(EVENTS), len(PHASES), len(OPS)), dtype=np.int64)
    for ev, ops in event_ops(f).items():
        for op, n in ops.items():
            x[EVENT_INDEX[ev], PHASE_INDEX[EVENT_PHASE[ev]], OP_INDEX[op]] = n
    return x


def op_counts(events: npt.NDArray[np.int64], f: Features) -> npt.NDArray[np.int64]:
    """Exact operation counts ``[..., phase, op]`` from event counts ``[..., event]``."""
    return np.einsum("...e,epo->...po", events, expansion(f))  # type: ignore[no-any-return]
