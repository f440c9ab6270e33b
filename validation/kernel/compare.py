"""Model against kernel, op by op: the rows of the validation table.

Each row names one count, how the model gets it (an event of `s2teardown.core.vocabulary.EVENTS` or an
operation of `s2teardown.core.vocabulary.OPS`, summed over phases) and how the kernel's window gives it
(instructions attributed to functions, `kernel_counts`).  Structural rows count kernel calls
and cache lines; instruction rows count every barrier, ISB, system-register write, HVC and
ERET the Stage-2 path executed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .kernel_counts import Attributed, in_functions, scoped, sysreg_writes

KernelFn = Callable[[Attributed, Counter[str]], int]


@dataclass(frozen=True)
class Row:
    op: str  # the row's name in the table
    kind: str  # "structural" | "instruction"
    model_event: str | None  # an s2teardown event ...
    model_op: str | None  # ... or an operation (summed over phases)
    kernel: KernelFn
    how: str  # how the kernel value is read (docs/validation.md)


def _scope(name: str) -> KernelFn:
    return lambda a, s: s.get(name, 0)


def _fn(suffixes: tuple[str, ...], name: str) -> KernelFn:
    return lambda a, s: in_functions(a, suffixes, name)


_BROADCAST = ("tlbi ipas2e1is", "tlbi vmalle1is", "tlbi vale2is")

ROWS: tuple[Row, ...] = (
    Row("tlb_flush_vmid_ipa calls", "structural", "tlb_flush_vmid_ipa", None,
        _fn(("__kvm_tlb_flush_vmid_ipa",), "tlbi ipas2e1is"),
        "TLBI IPAS2E1IS executed in __kvm_tlb_flush_vmid_ipa (one per call)"),
    Row("flush_remote_tlbs calls", "structural", "flush_remote_tlbs", None,
        _fn(("__kvm_tlb_flush_vmid",), "tlbi vmalls12e1is"),
        "TLBI VMALLS12E1IS executed in __kvm_tlb_flush_vmid"),
    Row("range flush calls", "structural", "range_flush_call", None,
        _fn(("__kvm_tlb_flush_vmid_range",), "tlbi vmalle1is"),
        "TLBI VMALLE1IS executed in __kvm_tlb_flush_vmid_range (one per call)"),
    Row("range TLBIs", "structural", "range_tlbi_op", None, _scope("tlbi ripas2e1is"),
        "TLBI RIPAS2E1IS in the Stage-2 path"),
    Row("dcache_clean_inval_poc calls", "structural", "dcache_flush_call", None,
        _fn(("dcache_clean_inval_poc", "__flush_dcache_area"), "dsb sy"),
        "DSB SY ending dcache_clean_inval_poc (one per call)"),
    Row("DC CIVAC lines", "structural", "dc_civac_line", None, _scope("dc civac"),
        "DC CIVAC in the Stage-2 path"),
    Row("broadcast TLBIs", "instruction", None, "tlbi_is",
        lambda a, s: sum(s.get(n, 0) for n in _BROADCAST),
        "TLBI IPAS2E1IS + VMALLE1IS + VALE2IS (erratum 4118414's extra) in the path"),
    Row("TLBI VMALLS12E1IS", "instruction", None, "tlbi_vmall", _scope("tlbi vmalls12e1is"),
        "in the Stage-2 path"),
    Row("TLBI RIPAS2E1IS", "instruction", None, "tlbi_range", _scope("tlbi ripas2e1is"),
        "in the Stage-2 path"),
    Row("DSB ISHST", "instruction", None, "dsb_ishst", _scope("dsb ishst"), "in the Stage-2 path"),
    Row("DSB ISH", "instruction", None, "dsb_ish", _scope("dsb ish"), "in the Stage-2 path"),
    Row("DSB SY", "instruction", None, "dsb_sy", _scope("dsb sy"), "in the Stage-2 path"),
    Row("ISB", "instruction", None, "isb", _scope("isb"), "in the Stage-2 path"),
    Row("sysreg writes", "instruction", None, "sysreg_write", lambda a, s: sysreg_writes(s),
        "MSR to a system register in the path (DAIF/PSTATE interrupt masking excluded)"),
    Row("HVC", "instruction", None, "hvc", _scope("hvc"), "in the Stage-2 path (nVHE)"),
    Row("ERET", "instruction", None, "hvc", _scope("eret"),
        "ERET in hyp code: one per HVC (the model's hvc op is the round trip)"),
)


@dataclass(frozen=True)
class Result:
    case: str
    op: str
    kind: str
    model: int
    kernel: int
    known: str | None = None  # the known-difference entry that explains a mismatch

    @property
    def equal(self) -> bool:
        return self.model == self.kernel

    @property
    def ok(self) -> bool:
        return self.equal or self.known is not None


def compare(case: str, events: Mapping[str, int], ops: Mapping[str, int], attributed: Attributed,
            known: Callable[[str, str], str | None] = lambda case, op: None) -> list[Result]:
    scope = scoped(attributed)
    out = []
    for row in ROWS:
        model = events[row.model_event] if row.model_event else ops[row.model_op or ""]
        kern = row.kernel(attributed, scope)
        k = None if model == kern else known(case, row.op)
        out.append(Result(case, row.op, row.kind, int(model), int(kern), k))
    return out
