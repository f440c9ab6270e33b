"""pKVM and nested virtualisation (core/el2.py, docs/model.md §15): hand-worked counts, the literal
oracle (oracle/el2.py) against the vectorised counts, the kernel-version gates and the CLI."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from s2teardown.core.behaviour import Behaviour
from s2teardown.core.counts import batch_from_layout, count, whole_ipa_batch
from s2teardown.core.el2 import HOST_MANAGED, El2Path, path_for
from s2teardown.core.layout import CLEAR, MEMSLOT, TEARDOWN, UNMAP, Invocation, Layout
from s2teardown.core.vocabulary import EVENTS, PASS_KINDS
from s2teardown.inputs.workload import Workload, uniform_batch
from s2teardown.oracle.el2 import nested_walk, pkvm_walk

from .strategies import EXAMPLES, behaviours, events, layouts

STOCK = {k: Behaviour() for k in PASS_KINDS}
G, M, K = 1 << 30, 1 << 20, 1 << 10
REPO = Path(__file__).resolve().parents[1]


def events_of(b, behs=STOCK, path=HOST_MANAGED, fwb=False, line=64) -> dict[str, int]:
    c = count(b, [behs], fwb=fwb, cache_line=line, paths=[path])
    return {e: int(v) for e, v in zip(EVENTS, c.events[0, 0], strict=True) if v}


# -- hand-worked: a protected 1 GiB guest in 4 KiB pages, exit, Linux 7.1+ ------------------------


def test_protected_1g_4k_exit_by_hand() -> None:
    # 1 GiB at 1 GiB: 40-bit IPA (auto), 3 levels, 1,024 pgd entries in 2 pages.
    # P = 1 GiB / 4 KiB = 262,144 pages, each reclaimed by one __pkvm_reclaim_dying_guest_page:
    #   EL2 walks: get_leaf, the guest unmap, the host Stage-2: 3 walks x 3 levels = 9 per page,
    #   plus reclaim_pgtable_pages' walk of the emptied pgd (1,024): 2,359,296 + 1,024;
    #   two entry writes per page (guest leaf, host owner); one EL2 TLBI per page;
    #   poison: 4,096 / 64 = 64 lines zeroed and 64 cleaned per page = 16,777,216 each;
    #   the host: one unpin, one account_locked_vm, one rb_erase + kfree per page.
    # Tables of the page-granular EL2 Stage-2: 512 PTE tables + 1 PMD table, + 2 pgd pages = 515
    # handed back and freed by the host (free_hyp_memcache).  One start, one finalize with its
    # VMID flush.  Nothing of the host-managed walk: no entry_visit, pte_clear, table_free.
    w = Workload(vm_bytes=G, backing=((4 * K, 100.0),), kvm_mode="protected", protected_vm=True)
    w.check()
    b = uniform_batch([w])
    got = events_of(b, path=path_for("protected", True, 0, (7, 1)), fwb=True)
    p = 262_144
    stage2 = {k: v for k, v in got.items() if not k.startswith(("host_", "srcu"))}
    assert stage2 == {
        "notifier_call": 1,
        "pkvm_start_teardown": 1,
        "pkvm_reclaim_call": p,
        "el2_entry_visit": 9 * p + 1_024,
        "el2_entry_clear": 2 * p,
        "el2_tlb_flush_vmid_ipa": p,
        "poison_page": p,
        "poison_line_zero": 64 * p,
        "poison_line_clean": 64 * p,
        "pkvm_page_unpin": p,
        "pkvm_account": p,
        "pkvm_mapping_free": p,
        "pkvm_finalize_call": 1,
        "el2_flush_vmid": 1,
        "hyp_memcache_free": 515,
    }
    # the same guest non-protected (6.14+, no start before 7.1): one unshare per page, no poison
    got = events_of(b, path=path_for("protected", False, 0, (6, 14)))
    assert {k: got.get(k, 0) for k in ("pkvm_unshare_call", "el2_entry_visit", "poison_page",
                                       "pkvm_start_teardown", "pkvm_finalize_call")} == {
        "pkvm_unshare_call": p, "el2_entry_visit": 6 * p + 1_024, "poison_page": 0,
        "pkvm_start_teardown": 0, "pkvm_finalize_call": 1}


def test_protected_vm_ignores_the_notifier_unmap() -> None:
    # A munmap of a protected VM: the notifier entry and memslot visit only; then the exit
    # reclaims every page, the munmapped ones included.
    w = Workload(vm_bytes=64 * M, backing=((4 * K, 100.0),), kvm_mode="protected", protected_vm=True,
                 event="munmap-then-exit", range=(0, 32 * M))
    w.check()
    got = events_of(uniform_batch([w]), path=path_for("protected", True, 0, (7, 2)))
    assert got["notifier_call"] == 2 and got["memslot_visit"] == 1
    assert got["pkvm_reclaim_call"] == 64 * M // (4 * K)
    # non-protected: the munmap unshares its 8,192 pages, the exit the other 8,192
    got = events_of(uniform_batch([w]), path=path_for("protected", False, 0, (7, 2)))
    assert got["pkvm_unshare_call"] == 16_384 and "pkvm_reclaim_call" not in got


# -- hand-worked: two shadow Stage-2 MMUs of 256 MiB each -----------------------------------------

#: One 256 MiB shadow in 4 KiB pages at 1 GiB (40-bit IPA, 3 levels), walked over its WHOLE IPA
#: space with v5.5's unmap walk: 1,024 pgd entries + 512 of the PMD table + 128 PTE tables x 512
#: = 67,072 entries; 65,536 PTEs cleared, each with one TLB flush, one 64-line clean (no FWB) and
#: a put_page; 128 PTE tables and the PMD table emptied: 129 table clears, TLB flushes, frees
#: and put_pages; a resched point between the 1,024 pgd-entry chunks: 1,023.
SHADOW_UNMAP = {
    "entry_visit": 67_072, "pte_clear": 65_536, "table_clear": 129, "put_page": 65_665,
    "tlb_flush_vmid_ipa": 65_665, "dcache_flush_call": 65_536, "dc_civac_line": 4_194_304,
    "table_free": 129, "resched_point": 1_023,
}


def _diff(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: a.get(k, 0) - b.get(k, 0) for k in set(a) | set(b) if a.get(k, 0) != b.get(k, 0)}


def test_two_shadow_mmus_munmap_by_hand() -> None:
    # munmap of all of a 1 GiB guest (aligned: no edge CLEAR): one MMU_NOTIFY_UNMAP, which on a
    # nested guest also unmaps the WHOLE IPA range of both shadows (kvm_nested_s2_unmap) and, from
    # 6.16, runs one kvm_invalidate_vncr_ipa.
    w = Workload(vm_bytes=G, backing=((4 * K, 100.0),), event="munmap", kvm_mode="vhe",
                 shadow_mmus=(256 * M, 256 * M))
    w.check()
    b = uniform_batch([w])
    alone = events_of(b)
    nested = events_of(b, path=path_for("vhe", False, 2, (6, 16)))
    assert _diff(nested, alone) == {**{k: 2 * v for k, v in SHADOW_UNMAP.items()}, "vncr_invalidate": 1}
    # before 6.16 no VNCR invalidation; before 6.11 no nested path at all
    assert "vncr_invalidate" not in events_of(b, path=path_for("vhe", False, 2, (6, 15)))
    assert path_for("vhe", False, 2, (6, 10)) is None


def test_two_shadow_mmus_exit_by_hand() -> None:
    # exit: kvm_arch_flush_shadow_all frees each shadow with a whole kvm_free_stage2_pgd (v5.5:
    # the same walk as above, then its 2 pgd pages) before the canonical one.
    w = Workload(vm_bytes=G, backing=((4 * K, 100.0),), kvm_mode="vhe", shadow_mmus=(256 * M, 256 * M))
    b = uniform_batch([w])
    got = _diff(events_of(b, path=path_for("vhe", False, 2, (7, 2))), events_of(b))
    want = {k: 2 * v for k, v in SHADOW_UNMAP.items()}
    want["table_free"] += 2 * 2
    assert got == want


def test_shadow_mmus_syntax() -> None:
    from s2teardown.inputs.units import parse_shadow_mmus

    assert parse_shadow_mmus("2", G) == (G, G)
    assert parse_shadow_mmus("2:512M", G) == (512 * M, 512 * M)
    assert parse_shadow_mmus("1G,256M", G) == (G, 256 * M)
    with pytest.raises(ValueError):
        parse_shadow_mmus("x", G)
    with pytest.raises(ValueError):
        parse_shadow_mmus("65", G)


# -- the oracle agrees ---------------------------------------------------------------------------


def _ram_pages(lay: Layout) -> int:
    return sum((e.hi - e.lo) // lay.geometry.granule for e in lay.extents if not e.device)


@settings(max_examples=EXAMPLES // 2, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.filter_too_much])
@given(data=st.data())
def test_pkvm_counts_equal_oracle(data: st.DataObject) -> None:
    lay = data.draw(layouts())
    assume(_ram_pages(lay) <= 8192)
    event = tuple(inv for inv in data.draw(events(lay)) if inv.kind in (UNMAP, CLEAR, TEARDOWN))
    if not event:
        event = (Invocation(TEARDOWN, 0, lay.geometry.ipa_size),)
    protected = data.draw(st.booleans(), label="protected")
    start = data.draw(st.booleans(), label="start_teardown")
    line = data.draw(st.sampled_from([64, 128]), label="line")
    path = El2Path(pkvm="protected" if protected else "unshare", start_teardown=start)
    c = count(batch_from_layout(lay, event), [STOCK], fwb=data.draw(st.booleans()), cache_line=line,
              paths=[path])
    got = {e: int(v) for e, v in zip(EVENTS, c.events[0, 0], strict=True)}
    assert got == pkvm_walk(lay, event, protected=protected, start_teardown=start, cache_line=line)


@settings(max_examples=EXAMPLES // 2, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_nested_counts_equal_oracle(data: st.DataObject) -> None:
    lay = data.draw(layouts())
    event = tuple(inv for inv in data.draw(events(lay)) if inv.kind in (UNMAP, CLEAR, MEMSLOT, TEARDOWN))
    if not event:
        event = (Invocation(TEARDOWN, 0, lay.geometry.ipa_size),)
    shadows = data.draw(st.lists(layouts(lay.geometry), min_size=1, max_size=2), label="shadows")
    behs = {k: data.draw(behaviours, label=k) for k in PASS_KINDS}
    fwb = data.draw(st.booleans(), label="fwb")
    tlbi_range = data.draw(st.booleans(), label="tlbi_range")
    vncr = data.draw(st.booleans(), label="vncr")
    calls = [(inv.kind, np.ones(1, dtype=bool), inv.blockable) for inv in event
             if inv.kind in (UNMAP, CLEAR, MEMSLOT, TEARDOWN)]
    b = batch_from_layout(lay, event)
    b = dataclasses.replace(b, shadows=tuple(whole_ipa_batch(batch_from_layout(s, ()), calls)
                                             for s in shadows))
    c = count(b, [behs], fwb=fwb, cache_line=64, tlbi_range=tlbi_range,
              paths=[El2Path(nested=True, vncr=vncr)])
    got = {e: int(v) for e, v in zip(EVENTS, c.events[0, 0], strict=True)}
    want = nested_walk(lay, event, behs, shadows, vncr=vncr, fwb=fwb, cache_line=64,
                       tlbi_range=tlbi_range)
    assert got == want


def test_pkvm_oracle_64m_protected_exit() -> None:
    # the literal oracle on a whole 64 MiB protected guest agrees with the closed forms
    w = Workload(vm_bytes=64 * M, backing=((4 * K, 100.0),), kvm_mode="protected", protected_vm=True)
    from s2teardown.inputs.workload import event_of, host_ops_of, layout_of, memslot_bounds

    b = uniform_batch([w])
    lay, event = layout_of(b, 0, memslot_bounds(w)), event_of(b, 0)
    got = events_of(b, path=El2Path(pkvm="protected", start_teardown=True))
    want = {k: v for k, v in pkvm_walk(lay, event, protected=True, start_teardown=True,
                                        cache_line=64, host=host_ops_of(b, 0)).items() if v}
    assert got == want


# -- gates, CLI ----------------------------------------------------------------------------------


def test_path_gates() -> None:
    assert path_for("protected", True, 0, (7, 0)) is None  # no protected teardown before 7.1
    assert path_for("protected", True, 0, (7, 1)) == El2Path("protected", True)
    assert path_for("protected", False, 0, (6, 13)) == HOST_MANAGED  # host-managed before 6.14
    assert path_for("protected", False, 0, (6, 14)) == El2Path("unshare", False)
    with pytest.raises(ValueError, match="protected-vm"):
        path_for("nvhe", True, 0, (7, 2))
    with pytest.raises(ValueError, match="shadow-mmus"):
        path_for("protected", False, 1, (7, 2))


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "s2teardown", *args], capture_output=True, text=True,
                          cwd=REPO, check=False)


def test_cli_acceptance_protected_exit() -> None:
    r = _cli("estimate", "--vm", "4G", "--machine", "pixel6", "--kvm-mode", "protected",
             "--protected-vm", "--event", "exit", "--kernel", "7.2", "--format", "json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    text = json.dumps(doc)
    for phase in ("el2_reclaim", "poison", "pkvm_host", "el2_finalize"):
        assert phase in text
    r = _cli("estimate", "--vm", "4G", "--machine", "pixel6", "--kvm-mode", "protected",
             "--protected-vm", "--kernel", "6.12")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "7.1" in r.stderr and "Traceback" not in r.stderr
    r = _cli("estimate", "--vm", "4G", "--machine", "pixel6", "--kvm-mode", "protected",
             "--protected-vm", "--kernel", "7.1")  # the v6.19 row, standing for 7.1
    assert r.returncode == 0, r.stderr
    assert "kvm-arm.mode=protected, protected VM" in " ".join(r.stdout.split())


def test_cli_bad_el2_flags() -> None:
    for args in (("--protected-vm",), ("--shadow-mmus", "x"), ("--kvm-mode", "protected", "--shadow-mmus", "2"),
                 ("--kvm-mode", "protected", "--event", "reset")):
        r = _cli("estimate", "--vm", "1G", "--machine", "d05", *args)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr


def test_evaluate_workloads_refuses_el2_workloads() -> None:
    from s2teardown.api import evaluate_workloads, load_machine, load_variants

    w = Workload(vm_bytes=G, kvm_mode="protected", protected_vm=True)
    with pytest.raises(ValueError, match="kvm-mode"):
        evaluate_workloads(load_machine("pixel6"), load_variants().variants[-1:], [w])
