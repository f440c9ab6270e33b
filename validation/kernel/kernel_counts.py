"""From the plugin's windows to per-case kernel counts, attributed to functions.

A window is the list of (encoding, address, executions) the plugin wrote when the case's stop
marker ran.  Every address is attributed to a kernel function (`symbols.Symbols.attribute`);
what the model prices is what the KVM Stage-2 path executes, so only instructions in the
functions of `in_scope` are counted, after subtracting the same (function, instruction) counts
of a baseline window that ran no teardown.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from .isa import INTERRUPT_MASKS, decode
from .symbols import KERNEL_HALF, Symbols

#: Functions of KVM's Stage-2 teardown path: the hyp code (nVHE ``__kvm_nvhe_*``), every KVM
#: function (arch/arm64/kvm, virt/kvm: names with ``kvm`` or ``stage2``), and the arm64 cache
#: routine the CMO calls (arch/arm64/mm/cache.S ``dcache_clean_inval_poc``, v5.14+;
#: ``__flush_dcache_area`` before).
_SCOPE = re.compile(
    r"^__kvm_nvhe_|kvm|stage2|^__tlb_switch_to_|^(enter|exit)_vmid_context$|^__load_stage2"
    r"|^dcache_clean_inval_poc$|^__flush_dcache_area$"
)


def in_scope(function: str) -> bool:
    return bool(_SCOPE.search(function))


Attributed = Counter[tuple[str, str]]  # (function, instruction) -> executions


def attribute(window: Mapping[str, Any], syms: Symbols) -> Attributed:
    """(function, instruction name) -> executions of one window."""
    counts = [(int(e, 16), int(p, 16), int(n)) for e, p, n in window["counts"]]
    low = [(p, e) for e, p, _ in counts if p < KERNEL_HALF]
    syms.calibrate_text([(p, e) for e, p, _ in counts if p >= KERNEL_HALF])
    hyp = syms.calibrate_hyp(low)
    out: Attributed = Counter()
    for enc, pc, n in counts:
        name = decode(enc)
        if name.startswith(("mrs ", "hint ")):
            continue
        out[(syms.attribute(pc, hyp), name)] += n
    return out


def subtract(case: Attributed, baseline: Attributed) -> Attributed:
    """Per (function, instruction): the case's executions less the baseline's, never below 0."""
    out: Attributed = Counter()
    for key, n in case.items():
        d = n - baseline.get(key, 0)
        if d > 0:
            out[key] = d
    return out


def scoped(counts: Attributed) -> Counter[str]:
    """Instruction name -> executions inside the KVM Stage-2 path."""
    out: Counter[str] = Counter()
    for (fn, name), n in counts.items():
        if in_scope(fn):
            out[name] += n
    return out


def in_functions(counts: Attributed, suffixes: Sequence[str], name: str) -> int:
    """Executions of instruction ``name`` in functions whose name ends with one of ``suffixes``."""
    return sum(n for (fn, nm), n in counts.items() if nm == name and fn.endswith(tuple(suffixes)))


def sysreg_writes(scope: Counter[str]) -> int:
    """MSR to a system register (interrupt-mask writes are not part of the modelled frame)."""
    return sum(n for nm, n in scope.items()
               if nm.startswith("msr ") and nm != "msr pstate" and nm[4:] not in INTERRUPT_MASKS)
