"""The real-kernel validation's pieces, and the model against the kernel's recorded counts.

`validation/kernel/recorded.json` holds what Debian's kernels executed under QEMU on each case
of the matrix (written by `make validate-kernel`, never by the model).  Checking the model
against it needs no QEMU, so every `make test` holds the model to the kernel; a model that
gets one expansion wrong fails here, naming the op.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from s2teardown.core import instructions
from validation.kernel import cases
from validation.kernel.compare import compare
from validation.kernel.isa import decode
from validation.kernel.kernel_counts import in_scope, subtract, sysreg_writes
from validation.kernel.known import lookup
from validation.kernel.model_side import model_counts

RECORDED = Path(__file__).resolve().parent.parent / "validation" / "kernel" / "recorded.json"


@pytest.mark.parametrize(
    ("enc", "name"),
    [
        # encodings assembled by hand from the Arm ARM's SYS/MSR fields (op0 op1 CRn CRm op2 Rt)
        (0xD50C8023, "tlbi ipas2e1is"),  # op0=1 op1=4 CRn=8 CRm=0 op2=1, x3
        (0xD508831F, "tlbi vmalle1is"),  # op0=1 op1=0 CRn=8 CRm=3 op2=0, xzr
        (0xD50C83DF, "tlbi vmalls12e1is"),  # op1=4 CRm=3 op2=6
        (0xD50C8043, "tlbi ripas2e1is"),  # op1=4 CRm=0 op2=2
        (0xD50C83BF, "tlbi vale2is"),  # op1=4 CRm=3 op2=5: erratum 4118414's extra
        (0xD50B7E20, "dc civac"),  # op1=3 CRn=7 CRm=14 op2=1
        (0xD5033B9F, "dsb ish"),
        (0xD5033A9F, "dsb ishst"),
        (0xD5033F9F, "dsb sy"),
        (0xD5033FDF, "isb"),
        (0xD51C2100, "msr vttbr_el2"),  # op0=3 op1=4 CRn=2 CRm=1 op2=0
        (0xD51C2140, "msr vtcr_el2"),
        (0xD5182040, "msr tcr_el1"),
        (0xD51B4220, "msr daif"),
        (0xD53C2100, "mrs vttbr_el2"),
        (0xD4000002, "hvc"),
        (0xD4000042, "hvc"),  # hvc #2
        (0xD69F03E0, "eret"),
        (0xAA1B03FB, "other"),  # the plugin's start marker is no system instruction
    ],
)
def test_decode(enc: int, name: str) -> None:
    assert decode(enc) == name


def test_scope_and_baseline() -> None:
    assert in_scope("__kvm_nvhe___kvm_tlb_flush_vmid_ipa")
    assert in_scope("__tlb_switch_to_guest") and in_scope("enter_vmid_context")
    assert in_scope("dcache_clean_inval_poc") and in_scope("stage2_put_pte")
    assert not in_scope("gic_handle_irq") and not in_scope("arch_timer_set_next_event_phys")
    case = Counter({("f", "isb"): 10, ("g", "dsb ish"): 3})
    base = Counter({("f", "isb"): 4, ("g", "dsb ish"): 5})
    assert subtract(case, base) == Counter({("f", "isb"): 6})
    scope = Counter({"msr vttbr_el2": 2, "msr daif": 7, "msr pstate": 3, "msr tcr_el1": 2, "isb": 9})
    assert sysreg_writes(scope) == 4


def _recorded() -> dict[str, dict[str, int]]:
    if not RECORDED.is_file():
        pytest.skip("no validation/kernel/recorded.json (make validate-kernel writes one)")
    data: dict[str, dict[str, int]] = json.loads(RECORDED.read_text())["cases"]
    return data


def _case(name: str) -> cases.Case:
    kernel, cpu, event, backing, size, slots = name.split("/")
    return cases.Case(kernel, cpu, event, backing, int(size.rstrip("M")), int(slots.rstrip("slot")))


def _attributed(counts: dict[str, int]) -> Counter[tuple[str, str]]:
    out: Counter[tuple[str, str]] = Counter()
    for key, n in counts.items():
        fn, insn = key.split("|", 1)
        out[(fn, insn)] = n
    return out


def _release() -> dict[str, str]:
    data = json.loads(RECORDED.read_text())["kernels"]
    return {series: k["release"] for series, k in data.items()}


def test_model_equals_recorded_kernel_counts() -> None:
    """Every count of every recorded case equals the model's (or is a listed known difference)."""
    rec = _recorded()
    release = _release()
    bad = []
    for name, counts in rec.items():
        c = _case(name)
        _, ev, ops = model_counts(c, release[c.kernel])
        bad += [r for r in compare(name, ev, ops, _attributed(counts), lookup) if not r.ok]
    assert not bad, "\n".join(f"{r.op}: model {r.model}, kernel {r.kernel}, {r.case}" for r in bad[:20])


def test_a_wrong_expansion_fails_naming_the_op(monkeypatch: pytest.MonkeyPatch) -> None:
    """One more ISB per hyp call (a deliberately wrong frame) is caught, and the row says ISB."""
    rec = _recorded()
    release = _release()
    name = next(n for n in rec if "/a72/munmap/4k/" in n)
    real = instructions._hyp_call

    def wrong(f: instructions.Features, fr: instructions.Frame) -> dict[str, int]:
        out = dict(real(f, fr))
        out["isb"] = out.get("isb", 0) + 1
        return out

    monkeypatch.setattr(instructions, "_hyp_call", wrong)
    c = _case(name)
    _, ev, ops = model_counts(c, release[c.kernel])
    bad = [r for r in compare(name, ev, ops, _attributed(rec[name]), lookup) if not r.ok]
    assert [r.op for r in bad] == ["ISB"]
    assert bad[0].model == bad[0].kernel + ev["tlb_flush_vmid_ipa"] > bad[0].kernel
