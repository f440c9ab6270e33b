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

K = 1 << 10
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


def test_partial_munmap_with_4k_pages_equals_the_kernel_without_a_known_entry() -> None:
    """The partial munmap of 4 KiB-backed guest RAM (cases.PARTIAL_KIB: [1G+1M+4K, 1G+5M+4K),
    1,024 pages), worked by hand (docs/model.md §9, "The real-kernel case"): both edges are
    unaligned and their 2 MiB blocks lie inside the VMA, so __split_huge_pmd raises CLEAR
    [1G, 1G+2M) and CLEAR [1G+4M, 1G+6M) (512 PTEs + their PTE table each: 513 TLB-flush calls),
    then the UNMAP clears the one block still mapped, [1G+2M, 1G+4M) (513): 1,539 calls, 1,536
    CMO calls of 4 KiB / 64 = 64 lines, 3 notifier calls.  The recorded kernels executed exactly
    that, and no known-difference entry covers these cases any more (on `max`, 6.12 and 7.2,
    only the LPA2 range-flush entry does)."""
    rec = _recorded()
    release = _release()
    names = [n for n in rec if "/munmap-partial/4k/" in n]
    assert len(names) == 27  # 3 kernels x 3 CPUs x 3 shapes
    for name in names:
        c = _case(name)
        assert c.range_bytes == (1028 * K, 4096 * K)
        _, ev, ops = model_counts(c, release[c.kernel])
        lpa2 = c.cpu == "max" and c.kernel != "6.1"
        assert ev["notifier_call"] == 3, name
        if lpa2:  # v6.9 / v7.2 with FWB + TLBIRANGE: each pass ends in one range flush, and only
            # the 3 emptied PTE tables get a per-IPA TLBI
            assert ev["tlb_flush_vmid_ipa"] == 3 and ev["range_flush_call"] == 3, name
        else:
            assert ev["tlb_flush_vmid_ipa"] == 3 * (512 + 1), name
        if c.cpu != "max":  # no FWB: one CMO per page
            assert ev["dcache_flush_call"] == 1_536 and ev["dc_civac_line"] == 1_536 * 64, name
            assert rec[name]["dcache_clean_inval_poc|dsb sy"] == 1_536, name
            assert rec[name]["dcache_clean_inval_poc|dc civac"] == 98_304, name
        for r in compare(name, ev, ops, _attributed(rec[name]), lookup):
            assert r.equal or (lpa2 and r.known and "LPA2" in r.known), (r.op, r.model, r.kernel, name)
        kernel_calls = sum(n for k, n in rec[name].items()
                           if k.endswith("__kvm_tlb_flush_vmid_ipa|tlbi ipas2e1is"))
        assert kernel_calls == (1_539 if not lpa2 else 3), name  # LPA2 + FWB: 3 table TLBIs
        assert lookup(name, "tlb_flush_vmid_ipa calls") is None or lpa2, name


def test_known_list_names_no_partial_munmap_4k_gap() -> None:
    from validation.kernel.known import KNOWN

    assert all("4k" not in k.cases for k in KNOWN)
    assert lookup("6.1/a72/munmap-partial/4k/64M/1slot", "*") is None


# --- the host side: host mm function entries against the model's host events -----------------


def test_function_entries_are_unique_names_only(tmp_path: Path) -> None:
    from validation.kernel import host_side
    from validation.kernel.symbols import Symbols

    kallsyms = ("ffff800008010000 _stext\nffff800008020000 zap_huge_pmd\n"
                "ffff800008030000 free_pages\nffff800008040000 free_pages\n")
    syms = Symbols(kallsyms, b"")
    assert syms.entry("zap_huge_pmd") == 0xFFFF800008020000
    assert syms.entry("free_pages") is None  # two static functions share the name
    assert syms.entry("zap_pte_range") is None  # inlined: no symbol
    path = host_side.write_functions(tmp_path / "funcs.txt", syms)
    assert path.read_text() == "ffff800008020000 zap_huge_pmd\n"
    case = {"funcs": {"zap_huge_pmd": 33, "synchronize_srcu": 1}}
    base = {"funcs": {"zap_huge_pmd": 1, "synchronize_srcu": 2}}
    assert host_side.calls(case, base) == {"synchronize_srcu": 0, "zap_huge_pmd": 32}


def _host_expected(series: str, events: dict[str, int]) -> dict[str, int]:
    from validation.kernel import host_side

    return {r.op: r.model(events) for r in host_side.ROWS if series in r.series}


def test_host_rows_of_a_partial_thp_munmap_worked_by_hand() -> None:
    """munmap of [1 MiB + 4 KiB, 5 MiB + 4 KiB) of 64 MiB of THP-backed guest RAM (cases.PARTIAL_KIB).

    The 2 MiB blocks: [0, 2M) and [4M, 6M) are cut (both edges unaligned), [2M, 4M) lies wholly
    inside.  Host side: 1 THP zapped by zap_huge_pmd and freed (its deposited PTE table with it),
    2 THPs split by __split_huge_pmd, whose pages inside the range are zapped per PTE:
    (2M - 1M - 4K) / 4K = 255 and (5M + 4K - 4M) / 4K = 257, 512 PTEs; the cut folios stay
    (still partly mapped).  No page-table page lies wholly inside the range but [2M, 4M), whose
    PMD entry was the THP's: free_pgtables frees nothing.  No SRCU wait (not an exit).

    Kernel function entries this predicts: 6.1 calls vm_normal_page per present PTE (512) and
    page_remove_rmap per PTE and per THP (513), frees the THP through free_transhuge_page (1);
    from v6.9 one PTE batch per folio: vm_normal_page and folio_remove_rmap_ptes once per cut
    piece (2), folio_remove_rmap_pmd for the zapped THP and each split (3), and 511 tail pages
    freed (free_tail_page_prepare)."""
    rec_kernel = {"6.1": "6.1.0-57-cloud-arm64", "6.12": "6.12.117+deb13-cloud-arm64"}
    case = cases.Case("6.1", "a72", "munmap-partial", "thp", 64, 1)
    _, ev, _ = model_counts(case, rec_kernel["6.1"])
    host = {k: v for k, v in ev.items() if k.startswith("host_") or k == "srcu_sync"}
    assert host == {"host_pte_zap": 512, "host_pmd_zap": 1, "host_hugetlb_zap": 0,
                    "host_pmd_split": 2, "host_page_free": 0, "host_folio_free": 1,
                    "host_hugetlb_free": 0, "host_table_free": 1, "srcu_sync": 0,
                    # the host's flushes (model version 6, docs/model.md §14.2), a72 (no
                    # FEAT_TLBIRANGE): each split flushes its 2 MiB with a page stride, 512
                    # strides, so the whole ASID (2); the VMA's end flushes the 4 MiB range,
                    # 1,024 strides, the whole ASID again (1); no table batch (the deposited
                    # table is pte_free'd directly): 3 flush_tlb_mm, nothing by address
                    "host_tlb_flush_mm": 3, "host_tlb_flush_range": 0, "host_tlbi_va": 0,
                    "host_tlbi_range": 0}
    assert _host_expected("6.1", ev) == {
        "zap_huge_pmd calls": 1, "__split_huge_pmd calls": 2, "vm_normal_page calls": 512,
        "page_remove_rmap calls": 513, "tlb_remove_table calls": 0, "synchronize_srcu calls": 0,
        "free_transhuge_page calls": 1}
    assert _host_expected("6.12", ev) == {
        "zap_huge_pmd calls": 1, "__split_huge_pmd calls": 2, "vm_normal_page calls": 2,
        "folio_remove_rmap_ptes calls": 2, "folio_remove_rmap_pmd calls": 3,
        "tlb_remove_table calls": 0, "synchronize_srcu calls": 0,
        "free_tail_page_prepare calls": 511, "__page_cache_release calls": 1}
    # 7.2: the same rows as 6.12 but __page_cache_release (not every folio freed is on the LRU)
    assert set(_host_expected("7.2", ev)) == set(_host_expected("6.12", ev)) - {
        "__page_cache_release calls"}


def test_host_rows_of_a_4k_exit_worked_by_hand() -> None:
    """Exit with 64 MiB of 4 KiB pages at GPA 1 GiB: 16,384 PTEs zapped and pages freed; the
    page-table pages freed by free_pgtables are the 32 PTE tables, the PMD table of [1G, 2G) and
    the PUD table of [0, 512G) (docs/model.md §14.2): 34; 2 SRCU waits (__mmu_notifier_release,
    mmu_notifier_unregister from kvm_destroy_vm)."""
    from validation.kernel import host_side
    from validation.kernel.known import lookup_host

    case = cases.Case("6.12", "a76", "exit", "4k", 64, 1)
    _, ev, _ = model_counts(case, "6.12.117+deb13-cloud-arm64")
    want = _host_expected("6.12", ev)
    assert want["vm_normal_page calls"] == 16_384 and want["tlb_remove_table calls"] == 34
    assert want["synchronize_srcu calls"] == 2 and want["zap_huge_pmd calls"] == 0
    # the kernel also tears down the VMM's own mappings: a bounded excess is a known difference
    calls = {"vm_normal_page": 16_384 + 145, "folio_remove_rmap_ptes": 16_384 + 144,
             "tlb_remove_table": 34 + 7, "synchronize_srcu": 2,
             "__page_cache_release.part.0": 16_384 + 8}
    res = host_side.compare_host(case.name, "6.12", ev, calls, lookup_host)
    assert all(r.ok for r in res) and {r.op for r in res if not r.equal} == {
        "vm_normal_page calls", "folio_remove_rmap_ptes calls", "tlb_remove_table calls",
        "__page_cache_release calls"}
    # fewer than the model, or far more, is not explained by the VMM's own memory
    for bad in ({**calls, "vm_normal_page": 16_000}, {**calls, "tlb_remove_table": 34 + 40},
                {**calls, "synchronize_srcu": 3}):
        res = host_side.compare_host(case.name, "6.12", ev, bad, lookup_host)
        assert len([r for r in res if not r.ok]) == 1


def test_known_host_differences_are_exact_where_they_say_so() -> None:
    from validation.kernel.known import lookup_host

    assert lookup_host("6.1/a72/munmap-partial/4k/64M/1slot", "__split_huge_pmd calls", 2)
    assert lookup_host("6.1/a72/munmap-partial/4k/64M/1slot", "__split_huge_pmd calls", 3) is None
    assert lookup_host("6.1/a72/munmap-partial/thp/64M/1slot", "__split_huge_pmd calls", 2) is None
    assert lookup_host("7.2/max/clear/4k/256M/2slot", "tlb_remove_table calls", 128)
    assert lookup_host("6.12/max/clear/4k/256M/2slot", "tlb_remove_table calls", 128) is None
    # the Stage-2 LPA2 entry covers no host row
    assert lookup_host("7.2/max/munmap-partial/thp/64M/1slot", "zap_huge_pmd calls", 1) is None


def test_model_equals_recorded_host_calls() -> None:
    """Every host count of every recorded case equals the model's (or a bounded known difference)."""
    from validation.kernel import host_side
    from validation.kernel.known import lookup_host

    if not RECORDED.is_file():
        pytest.skip("no validation/kernel/recorded.json")
    data = json.loads(RECORDED.read_text())
    if "host_calls" not in data:
        pytest.skip("recorded.json predates the host-side comparison")
    release = _release()
    from validation.kernel.model_side import model_ram

    bad, n = [], 0
    layouts = data.get("host_layout", {})
    for name, calls in data["host_calls"].items():
        c = _case(name)
        _, ev, _ = model_counts(c, release[c.kernel])
        extra = host_side.layout_correction(c.event, model_ram(c), layouts.get(name))
        res = host_side.compare_host(name, c.kernel, ev, calls, lookup_host, extra)
        n += len(res)
        bad += [r for r in res if not r.ok]
    assert n > 0
    assert not bad, "\n".join(f"{r.op}: model {r.model}, kernel {r.kernel}, {r.case}" for r in bad[:20])


def test_upper_tables_of_a_munmap_follow_the_real_layout() -> None:
    """free_pgd_range's PMD (1 GiB) and PUD (512 GiB) tables for one VMA between its neighbours.

    The model's convention (guest RAM at GPA 1 GiB, neighbours at the range's ends) frees none
    for 256 MiB.  Measured on 6.12 (`max`, THP, 256 MiB): guest RAM at 0xffff7f000000, the
    mapping below ending at 0x35254000 (the heap), the one above at 0xffff8f000000.  The range
    crosses 0xffff80000000: the PMD table of [0xffff40000000, 0xffff80000000) lies wholly above
    the floor and below the ceiling rounded down to 1 GiB, so it is freed (kernel 1, model 0 +
    1); the one above reaches past the ceiling.  With the mapping below ending at the range
    (6.1's slack VMA) nothing is freed."""
    from validation.kernel.host_side import layout_correction, upper_tables

    g, m = 1 << 30, 1 << 20
    assert upper_tables(g, g + 256 * m, g, g + 256 * m) == 0
    hva = 0xFFFF7F000000
    assert upper_tables(hva, hva + 256 * m, 0x35254000, hva + 256 * m) == 1
    assert upper_tables(hva, hva + 256 * m, hva, hva + 256 * m) == 0
    # not crossing: the region's PMD table reaches past the ceiling
    assert upper_tables(0xFFFF85400000, 0xFFFF95400000, 0x26E9F000, 0xFFFF95400000) == 0
    # no neighbour at all: every table of the range goes (a PMD table and the PUD table)
    assert upper_tables(g, g + 256 * m, 0, 0) == 2
    layout = {"hva": hva, "floor": 0x35254000, "ceiling": hva + 256 * m}
    assert layout_correction("munmap", (g, g + 256 * m), layout) == 1
    assert layout_correction("munmap-partial", (g, g + 256 * m), layout) == 0
    assert layout_correction("munmap", (g, g + 256 * m), None) == 0
