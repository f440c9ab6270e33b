"""Names of the A64 instructions the counting plugin reports (Arm ARM, "System instructions").

The plugin (plugin/s2count.c) reports raw 32-bit encodings; this module turns one into a name
such as ``tlbi ipas2e1is``, ``dsb ish``, ``msr vttbr_el2`` or ``hvc``.  Only the classes the
plugin selects are decoded: system instructions (op0..op2, CRn, CRm), HVC/SMC and ERET.
"""

from __future__ import annotations

#: TLBI operations by (op1, CRm, op2) (CRn = 8).
TLBI: dict[tuple[int, int, int], str] = {
    (0, 3, 0): "vmalle1is",
    (0, 3, 1): "vae1is",
    (0, 3, 2): "aside1is",
    (0, 3, 3): "vaae1is",
    (0, 3, 5): "vale1is",
    (0, 3, 7): "vaale1is",
    (0, 7, 0): "vmalle1",
    (0, 2, 1): "rvae1is",
    (0, 2, 5): "rvale1is",
    (4, 0, 1): "ipas2e1is",
    (4, 0, 2): "ripas2e1is",
    (4, 0, 5): "ipas2le1is",
    (4, 0, 6): "ripas2le1is",
    (4, 4, 1): "ipas2e1",
    (4, 3, 4): "alle1is",
    (4, 3, 6): "vmalls12e1is",
    (4, 7, 6): "vmalls12e1",
    (4, 7, 0): "alle2",
    (4, 3, 0): "alle2is",
    (4, 3, 1): "vae2is",
    (4, 3, 5): "vale2is",  # erratum 4118414's extra broadcast TLBI (``tlbi vale2is, xzr``)
}

#: DC / IC operations by (op1, CRm, op2) (CRn = 7).
CACHE: dict[tuple[int, int, int], str] = {
    (3, 14, 1): "dc civac",
    (3, 10, 1): "dc cvac",
    (3, 11, 1): "dc cvau",
    (3, 4, 1): "dc zva",
    (0, 6, 1): "dc ivac",
    (0, 1, 0): "ic ialluis",
    (0, 5, 0): "ic iallu",
    (3, 5, 1): "ic ivau",
}

#: System registers by (op0, op1, CRn, CRm, op2), the ones the teardown path writes.
SYSREG: dict[tuple[int, int, int, int, int], str] = {
    (3, 4, 2, 1, 0): "vttbr_el2",
    (3, 4, 2, 1, 2): "vtcr_el2",
    (3, 4, 1, 1, 0): "hcr_el2",
    (3, 0, 2, 0, 2): "tcr_el1",
    (3, 5, 2, 0, 2): "tcr_el12",
    (3, 0, 1, 0, 0): "sctlr_el1",
    (3, 5, 1, 0, 0): "sctlr_el12",
    (3, 0, 2, 0, 0): "ttbr0_el1",
    (3, 5, 2, 0, 0): "ttbr0_el12",
    (3, 4, 4, 0, 1): "elr_el2",
    (3, 4, 4, 0, 0): "spsr_el2",
    (3, 3, 4, 2, 1): "daif",
    (3, 4, 12, 0, 0): "vbar_el2",
    (3, 4, 1, 1, 2): "cptr_el2",
    (3, 0, 13, 0, 4): "tpidr_el1",
}

_DSB_DOMAIN = {15: "sy", 11: "ish", 10: "ishst", 9: "ishld", 7: "nsh", 6: "nshst", 5: "nshld",
               3: "osh", 2: "oshst", 1: "oshld", 14: "st", 13: "ld"}

#: Registers written to mask or unmask interrupts: not part of the modelled hyp-call frame.
INTERRUPT_MASKS = frozenset({"daif"})


def decode(enc: int) -> str:
    """The name of one instruction encoding (``"other"`` for what the plugin never reports)."""
    if (enc & 0xFFE0001F) == 0xD4000002:
        return "hvc"
    if (enc & 0xFFE0001F) == 0xD4000003:
        return "smc"
    if enc in (0xD69F03E0, 0xD69F0BFF, 0xD69F0FFF):
        return "eret"
    if (enc & 0xFFC00000) != 0xD5000000:
        return "other"
    read = (enc >> 21) & 1
    op0, op1 = (enc >> 19) & 3, (enc >> 16) & 7
    crn, crm, op2 = (enc >> 12) & 15, (enc >> 8) & 15, (enc >> 5) & 7
    if op0 == 0 and crn == 3:
        if op2 == 4:
            return "dsb " + _DSB_DOMAIN.get(crm, f"#{crm}")
        if op2 == 5:
            return "dmb " + _DSB_DOMAIN.get(crm, f"#{crm}")
        if op2 == 6:
            return "isb"
        return f"barrier {crm},{op2}"
    if op0 == 0 and crn == 2:
        return f"hint {crm * 8 + op2}"
    if op0 == 0 and crn == 4:
        return "msr pstate"
    if op0 == 1 and crn == 8 and not read:
        return "tlbi " + TLBI.get((op1, crm, op2), f"s1_{op1}_c8_c{crm}_{op2}")
    if op0 == 1 and crn == 7 and not read:
        return CACHE.get((op1, crm, op2), f"sys s1_{op1}_c7_c{crm}_{op2}")
    if op0 >= 2:
        reg = SYSREG.get((op0, op1, crn, crm, op2), f"s{op0}_{op1}_c{crn}_c{crm}_{op2}")
        return ("mrs " if read else "msr ") + reg
    return "sys other"
