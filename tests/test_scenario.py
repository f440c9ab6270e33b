"""Scenario files: the bundled examples, counts against the walker, a hand-worked count, the
mapping shorthand, the event forms, bad input (FILE:LINE: field), schema and docs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from s2teardown.core.behaviour import Behaviour
from s2teardown.core.counts import batch_from_layout, count
from s2teardown.core.host import EXIT_MMAP, MUNMAP, HostOp
from s2teardown.core.layout import CLEAR, TEARDOWN, UNMAP, Extent, Invocation, Layout, munmap_event
from s2teardown.core.vocabulary import EVENTS
from s2teardown.errors import UserError
from s2teardown.inputs.bundled import bundled_dir, bundled_names
from s2teardown.inputs.scenario import (
    CHANGES_SINCE,
    EVENT_FORMS,
    GEOMETRY_KEYS,
    INVOCATION_KEYS,
    MAPPING_KEYS,
    MEMSLOT_KEYS,
    REGION_KEYS,
    SCHEMA_VERSION,
    TOP_KEYS,
    Scenario,
    load_scenario,
    scenario_from_text,
    scenario_schema,
)
from s2teardown.inputs.yamlio import sha256_of
from s2teardown.oracle.walker import walk, walk_counts

REPO = Path(__file__).resolve().parent.parent
K, M, G = 1 << 10, 1 << 20, 1 << 30
KINDS = ("teardown", "unmap", "clear")
STOCK = {k: Behaviour() for k in KINDS}
# P5's teardown (no CMO, no per-entry TLBI, one VMID flush); P7-like unmap/clear (no CMO,
# resched only when the notifier may block).
ELIDED = {
    "teardown": Behaviour(cmo="none", leaf_tlbi="none", table_tlbi="none", final_flush="vmall"),
    "unmap": Behaviour(cmo="none", resched_when="blockable"),
    "clear": Behaviour(cmo="none", resched_when="blockable"),
}
BEHAVIOURS = {"v5.5": STOCK, "elided": ELIDED}


def vector_counts(lay: Layout, event: tuple[Invocation, ...], behs: dict[str, Behaviour],
                  host: tuple[HostOp, ...] = ()) -> list[int]:
    c = count(batch_from_layout(lay, event, host), [behs], fwb=False, cache_line=64)
    return [int(x) for x in c.events[0, 0]]


def walker_counts(lay: Layout, event: tuple[Invocation, ...], behs: dict[str, Behaviour]) -> list[int]:
    return [int(x) for x in walk(lay, event, behs, fwb=False, cache_line=64).events]


# --- the bundled scenarios ------------------------------------------------------------------

BUNDLED = ("qemu-virt", "thp-dirty-log")


def test_bundled_scenarios_are_listed() -> None:
    assert set(BUNDLED) <= set(bundled_names("scenarios"))


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_scenario_loads_and_validates(name: str) -> None:
    s = load_scenario(name)
    assert isinstance(s, Scenario)
    assert s.name == name
    assert s.path is not None and Path(s.path).name == f"{name}.yaml"
    assert s.sha256 == sha256_of(s.path)
    assert s.text is not None and s.text.startswith("#")
    s.layout.validate()
    assert s.event and s.event == tuple(i for st in s.steps for i in st.invocations)
    json.dumps(s.as_dict())
    # the same file by path, and by name with the suffix
    assert load_scenario(s.path).layout == s.layout
    assert load_scenario(f"{name}.yaml").event == s.event


@pytest.mark.parametrize("behaviour", list(BEHAVIOURS))
@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_counts_equal_walker(name: str, behaviour: str) -> None:
    s = load_scenario(name)
    behs = BEHAVIOURS[behaviour]
    got = vector_counts(s.layout, s.event, behs)
    want = walker_counts(s.layout, s.event, behs)
    assert dict(zip(EVENTS, got, strict=True)) == dict(zip(EVENTS, want, strict=True))


def test_qemu_virt_layout() -> None:
    s = load_scenario("qemu-virt")
    lay = s.layout
    assert (lay.geometry.granule, lay.geometry.ipa_bits) == (4096, 40)
    assert [m.name for m in lay.memslots] == ["flash0", "flash1", "pci-bar0", "ram"]
    assert [(m.lo, m.hi - m.lo) for m in lay.memslots] == [
        (0, 64 * M), (64 * M, 64 * M), (256 * M, 16 * M), (G, 8 * G)]
    assert s.device_bytes == 16 * M
    # flash: 4 MiB + 1 MiB of pages; RAM: 64 MiB + 256 MiB of pages, the rest 2 MiB blocks
    # but its last 512 MiB; the BAR: 16 MiB of device pages
    assert s.mapped_by_leaf() == {4096: 4 * M + 1 * M + 16 * M + 320 * M,
                                  2 * M: 8 * G - 320 * M - 512 * M}
    assert all(e.device == (e.slot == 2) for e in lay.extents)
    assert s.event == (Invocation(TEARDOWN, 0, 1 << 40),)
    assert s.event_form == "exit"


def test_thp_dirty_log_event() -> None:
    s = load_scenario("thp-dirty-log")
    ram = s.layout.memslots[0]
    assert (ram.lo, ram.hi - ram.lo) == (G, 16 * G)
    assert s.layout.geometry.ipa_bits == 40  # auto
    assert s.mapped_by_leaf()[2 * M] > 0.98 * 16 * G
    lo, hi = G + 8 * G + M + 4 * K, G + 12 * G + 64 * M + 12 * K
    # the start splits the THP it falls in; the end falls in 4 KiB pages, its block
    # [13G+64M, 13G+66M) inside the VMA [lo, 17G) split there, with a host PMD table over
    # [13G, 14G): __split_huge_pmd raises the CLEAR of that block too (it splits nothing)
    assert s.event == (Invocation(CLEAR, G + 8 * G, G + 8 * G + 2 * M),
                       Invocation(CLEAR, G + 12 * G + 64 * M, G + 12 * G + 66 * M),
                       Invocation(UNMAP, lo, hi))
    assert s.event == munmap_event(s.layout, lo, hi)
    assert s.event_form == "munmap" and len(s.steps) == 1


# --- hand-worked counts ---------------------------------------------------------------------

TINY = """\
schema_version: 1
name: tiny
geometry: {granule_bytes: 4096, ipa_bits: 40}
memslots:
  - name: ram
    gpa_bytes: 0x40000000
    size_bytes: 4194304
    regions:
      - {size_bytes: 16384, leaf_bytes: 4096}
      - {offset_bytes: 2097152, size_bytes: 2097152, leaf_bytes: 2097152}
"""


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in counts.items() if v}


def test_hand_worked_exit() -> None:
    # 4 KiB granule, 40-bit IPA: 3 levels; 1024 entry-level entries of 1 GiB (2 pgd pages of
    # 512 entries), 512 entries per table.  Memslot [1 GiB, 1 GiB + 4 MiB): 4 pages at its
    # start (one PTE table under PMD entry 0), one 2 MiB block at PMD entry 1.
    # Teardown of [0, 1 TiB), v5.5, no FWB, 64-byte lines:
    #   entry_visit  = 1024 (entry level) + 512 (the PMD table) + 512 (the PTE table) = 2048
    #   resched      = 1024 - 1 = 1023 (after every entry-level entry but the last)
    #   pte_clear 4, block_clear 1; each leaf: 1 TLB flush, 1 dcache flush call, 1 put_page
    #   dc_civac     = 4 * 4096/64 + 2 MiB/64 = 256 + 32768 = 33024
    #   the PTE table, then the PMD table empty: 2 table_clear, each 1 TLB flush, 1 put_page
    #   table_free   = 2 (tables) + 2 (pgd pages) = 4
    #   put_page = tlb_flush = 5 + 2 = 7
    # then exit_mmap on the host: 4 PTEs zapped and 4 pages freed, 1 THP zapped and freed;
    #   tables: the THP's deposited PTE table + the PTE table of [1 GiB, +2 MiB) + the PMD
    #   table of the 1 GiB region + the PUD table of the 512 GiB region = 4; 2 SRCU waits;
    #   the full-mm gather frees 3 of them (the deposited one goes by pte_free): one
    #   flush_tlb_mm at tlb_finish_mmu (model version 6)
    s = scenario_from_text(TINY + "event: exit\n", "tiny.yaml")
    assert s.host == (HostOp(EXIT_MMAP),)
    expected = {
        "notifier_call": 1, "entry_visit": 2048, "pte_clear": 4, "block_clear": 1,
        "table_clear": 2, "put_page": 7, "tlb_flush_vmid_ipa": 7, "dcache_flush_call": 5,
        "dc_civac_line": 33024, "table_free": 4, "resched_point": 1023,
        "host_pte_zap": 4, "host_page_free": 4, "host_pmd_zap": 1, "host_folio_free": 1,
        "host_table_free": 4, "srcu_sync": 2, "host_tlb_flush_mm": 1,
    }
    assert nonzero(walk_counts(s.layout, s.event, STOCK, fwb=False, cache_line=64, host=s.host)) == expected
    assert nonzero(dict(zip(EVENTS, vector_counts(s.layout, s.event, STOCK, s.host), strict=True))) == expected


def test_hand_worked_unaligned_munmap() -> None:
    # munmap [1 GiB + 8 KiB, 1 GiB + 3 MiB) of the VMA [1 GiB, 1 GiB + 4 MiB) (docs/model.md §3):
    # the start 1G+8K is unaligned, its block [1G, 1G+2M) inside the VMA: CLEAR [1G, 1G+2M)
    # although it holds pages, not a THP; the end 1G+3M is unaligned, its block [1G+2M, 1G+4M)
    # inside [1G+8K, 1G+4M) (the VMA split there): CLEAR [1G+2M, 1G+4M) (splits the THP); UNMAP.
    #   CLEAR 1: 1 notifier call, 1 memslot visit; 1 entry-level + 1 PMD entry + all 512 PTE
    #          entries visited = 514; PTEs 0..3 cleared (4 TLB flushes, 4 dcache calls, 4 x 64
    #          lines, 4 put_page); the PTE table empties: clear, TLB flush, free, put_page.  The
    #          PMD table still holds the block: not freed.
    #   CLEAR 2: 1 notifier call, 1 memslot visit; 1 entry-level + 1 PMD entry = 2 visits; the
    #          block goes whole (1 block_clear, 1 TLB flush, 1 dcache call, 32768 lines, 1
    #          put_page); the PMD table empties: clear, TLB flush, free, put_page.
    #   UNMAP: 1 notifier call, 1 memslot visit; entry-level entry 1 is empty: 1 visit.
    #   entry_visit = 514 + 2 + 1 = 517; put_page = TLB flushes = 4 + 1 + 1 + 1 = 7;
    #   lines = 256 + 32768 = 33024.
    # Then unmap_region on the host (docs/model.md §14): pages 2 and 3 zapped and freed (the
    #   host's PMD there maps a PTE table: the CLEAR split nothing); the THP the end cuts split
    #   (1) and its 256 pages below 1 GiB + 3 MiB zapped per PTE, its folio kept; no table
    #   region lies wholly inside the range: 258 PTE zaps, 2 page frees, 1 split.  TLB (model
    #   version 6): the split flushes its 2 MiB with a page stride, 512 strides: flush_tlb_mm;
    #   the 258 gathered entries flush at the VMA's end over [1G+8K, 1G+3M), 766 page strides
    #   (>= 512): flush_tlb_mm.
    s = scenario_from_text(
        TINY + "event: {munmap: {gpa_bytes: 0x40002000, size_bytes: 3137536}}\n", "tiny.yaml")
    assert s.event == (Invocation(CLEAR, G, G + 2 * M), Invocation(CLEAR, G + 2 * M, G + 4 * M),
                       Invocation(UNMAP, G + 8 * K, G + 3 * M))
    expected = {
        "notifier_call": 3, "memslot_visit": 3, "entry_visit": 517, "pte_clear": 4,
        "block_clear": 1, "table_clear": 2, "put_page": 7, "tlb_flush_vmid_ipa": 7,
        "dcache_flush_call": 5, "dc_civac_line": 33024, "table_free": 2,
        "host_pte_zap": 258, "host_page_free": 2, "host_pmd_split": 1, "host_tlb_flush_mm": 2,
    }
    assert s.host == (HostOp(MUNMAP, G + 8 * K, G + 3 * M),)
    assert nonzero(walk_counts(s.layout, s.event, STOCK, fwb=False, cache_line=64, host=s.host)) == expected
    assert nonzero(dict(zip(EVENTS, vector_counts(s.layout, s.event, STOCK, s.host), strict=True))) == expected


# --- shorthand, defaults and event forms ----------------------------------------------------


def one_slot(slot: str, event: str = "exit", geometry: str = "{granule_bytes: 4096}") -> str:
    return (f"schema_version: 1\nname: t\ngeometry: {geometry}\nmemslots:\n"
            f"  - {slot}\nevent: {event}\n")


def test_mapping_shorthand_falls_back_at_unaligned_edges() -> None:
    s = scenario_from_text(one_slot(
        "{name: a, gpa_bytes: 0x100000, size_bytes: 0x500000, "
        "mapping: [{leaf_bytes: 2097152, percent: 100}]}"))
    assert s.layout.extents == (Extent(M, 2 * M, 4096, 0), Extent(2 * M, 6 * M, 2 * M, 0))


def test_mapping_shorthand_shares_and_holes() -> None:
    # 1 GiB at 1 GiB: [1 GiB block share 50 %: nothing 1 GiB-aligned fits in 512 MiB, so 2 MiB
    # blocks], 25 % hole, 25 % device pages
    s = scenario_from_text(one_slot(
        "{name: a, gpa_bytes: 0x40000000, size_bytes: 0x40000000, mapping: ["
        "{leaf_bytes: 1073741824, percent: 50}, {hole: true, percent: 25}, "
        "{leaf_bytes: 4096, percent: 25, device: true}]}"))
    assert s.layout.extents == (
        Extent(G, G + 512 * M, 2 * M, 0),
        Extent(G + 768 * M, 2 * G, 4096, 0, True),
    )


def test_mapping_shorthand_rounds_to_the_granule() -> None:
    # 1/3 of 3 MiB + 4 KiB is not whole pages: the cut is rounded down, the last share ends at the end
    s = scenario_from_text(one_slot(
        "{name: a, gpa_bytes: 0, size_bytes: 3149824, mapping: ["
        "{leaf_bytes: 4096, percent: 33.3}, {hole: true, percent: 33.4}, "
        "{leaf_bytes: 4096, percent: 33.3}]}"))
    (a, b) = s.layout.extents
    assert a.lo == 0 and a.hi == 3149824 * 333 // 1000 // 4096 * 4096
    assert b.hi == 3149824 and b.lo == 3149824 * 667 // 1000 // 4096 * 4096


def test_regions_default_offsets_and_empty_memslot() -> None:
    text = (
        "schema_version: 1\nname: t\ngeometry: {granule_bytes: 16384, ipa_bits: 36}\n"
        "memslots:\n"
        "  - {name: a, gpa_bytes: 0, size_bytes: 0x4000000, regions: []}\n"
        "  - name: b\n    gpa_bytes: 0x4000000\n    size_bytes: 0x8000000\n    regions:\n"
        "      - {size_bytes: 32768, leaf_bytes: 16384}\n"
        "      - {hole: true, size_bytes: 0x1ff8000}\n"
        "      - {size_bytes: 0x4000000, leaf_bytes: 33554432}\n"
        "event: exit\n"
    )
    s = scenario_from_text(text)
    assert s.layout.extents == (
        Extent(64 * M, 64 * M + 32 * K, 16384, 1),
        Extent(96 * M, 160 * M, 32 * M, 1),
    )
    assert vector_counts(s.layout, s.event, STOCK) == walker_counts(s.layout, s.event, STOCK)


def test_auto_ipa_keeps_memslots_below_the_top() -> None:
    # a memslot ending at exactly 1 TiB needs 41 bits (v5.5 refuses one reaching the top)
    s = scenario_from_text(one_slot(
        "{name: a, gpa_bytes: 0xffc0000000, size_bytes: 0x40000000, regions: []}"))
    assert s.layout.geometry.ipa_bits == 41
    s = scenario_from_text(one_slot(
        "{name: a, gpa_bytes: 0x40000000, size_bytes: 0x40000000, regions: []}"))
    assert s.layout.geometry.ipa_bits == 40


def test_unmaps_split_each_thp_once() -> None:
    slot = ("{name: ram, gpa_bytes: 0x40000000, size_bytes: 0x40000000, "
            "mapping: [{leaf_bytes: 2097152, percent: 100}]}")
    event = ("{unmaps: [{name: first, gpa_bytes: 0x40100000, size_bytes: 0x200000}, "
             "{name: second, gpa_bytes: 0x40300000, size_bytes: 0x200000}]}")
    s = scenario_from_text(one_slot(slot, event))
    assert [st.name for st in s.steps] == ["first", "second"]
    # first: splits [1G, 1G+2M) and [1G+2M, 1G+4M); second: [1G+2M, 1G+4M) was touched by the
    # first, so only [1G+4M, 1G+6M) is split
    assert s.event == (
        Invocation(CLEAR, G, G + 2 * M), Invocation(CLEAR, G + 2 * M, G + 4 * M),
        Invocation(UNMAP, G + M, G + 3 * M),
        Invocation(CLEAR, G + 4 * M, G + 6 * M), Invocation(UNMAP, G + 3 * M, G + 5 * M),
    )
    assert s.event_form == "unmaps"
    for behs in BEHAVIOURS.values():
        assert vector_counts(s.layout, s.event, behs) == walker_counts(s.layout, s.event, behs)


def test_explicit_invocations() -> None:
    slot = ("{name: ram, gpa_bytes: 0x40000000, size_bytes: 0x40000000, "
            "mapping: [{leaf_bytes: 2097152, percent: 60}, {leaf_bytes: 4096, percent: 40}]}")
    event = ("{invocations: [{kind: clear, gpa_bytes: 0x40000000, size_bytes: 0x10000000}, "
             "{kind: unmap, gpa_bytes: 0x0, size_bytes: 0x50000000, blockable: false}, "
             "{kind: teardown}]}")
    s = scenario_from_text(one_slot(slot, event))
    assert s.event == (
        Invocation(CLEAR, G, G + 256 * M), Invocation(UNMAP, 0, G + 256 * M, False),
        Invocation(TEARDOWN, 0, 1 << 40),
    )
    assert len(s.steps) == 3 and s.event_form == "invocations"
    for behs in BEHAVIOURS.values():
        assert vector_counts(s.layout, s.event, behs) == walker_counts(s.layout, s.event, behs)


def test_load_scenario_from_a_path(tmp_path: Path) -> None:
    f = tmp_path / "mine.yaml"
    f.write_text(TINY + "event: exit\n", encoding="utf-8")
    s = load_scenario(f)
    assert s.path == str(f) and s.sha256 == sha256_of(f) and s.name == "tiny"
    f.write_text(TINY.replace("size_bytes: 16384", "size_bytes: 16385") + "event: exit\n",
                 encoding="utf-8")
    with pytest.raises(UserError) as info:
        load_scenario(f)
    assert str(info.value).startswith(f"{f}:9: memslots[0].regions[0].size_bytes: ")


def test_unknown_bundled_name_suggests() -> None:
    with pytest.raises(UserError) as info:
        load_scenario("qemu-vrt", flag="--scenario")
    msg = str(info.value)
    assert msg.startswith("--scenario: expected an existing file or a bundled scenario name")
    assert "did you mean 'qemu-virt'?" in msg
    assert info.value.exit_code == 2


# --- bad input ------------------------------------------------------------------------------

BASE = """\
schema_version: 1
name: base
description: a test scenario
geometry:
  granule_bytes: 4096
  ipa_bits: 40
memslots:
  - name: flash
    gpa_bytes: 0
    size_bytes: 67108864
    mapping:
      - {leaf_bytes: 4096, percent: 50}
      - {hole: true, percent: 50}
  - name: ram
    gpa_bytes: 0x40000000
    size_bytes: 1073741824
    regions:
      - {offset_bytes: 0, size_bytes: 2097152, leaf_bytes: 4096}
      - {size_bytes: 1069547520, leaf_bytes: 2097152}
      - {hole: true, size_bytes: 2097152}
event:
  munmap: {gpa_bytes: 0x40001000, size_bytes: 8388608}
"""


def mutate(*pairs: str) -> str:
    text = BASE
    for old, new in zip(pairs[::2], pairs[1::2], strict=True):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


INVOCATIONS = "event:\n  invocations:\n    - {kind: teardown}\n    - {kind: unmap, gpa_bytes: 0, size_bytes: 4096}\n"

CASES: list[tuple[str, str, str]] = [
    ("unknown top-level key", mutate("description:", "descripton:"),
     "s.yaml:3: descripton: expected one of schema_version, name, description, geometry, "
     "memslots, event, got unknown key 'descripton' (did you mean 'description'?)"),
    ("unknown region key", mutate("size_bytes: 2097152, leaf_bytes: 4096}", "size_bytes: 2097152, leaf_byte: 4096}"),
     "s.yaml:18: memslots[1].regions[0].leaf_byte: expected one of offset_bytes, size_bytes, "
     "leaf_bytes, hole, device, got unknown key 'leaf_byte' (did you mean 'leaf_bytes'?)"),
    ("unknown memslot key", mutate("    gpa_bytes: 0\n", "    gpa: 0\n"),
     "s.yaml:9: memslots[0].gpa: expected one of name, gpa_bytes, size_bytes, regions, mapping, "
     "got unknown key 'gpa' (did you mean 'gpa_bytes'?)"),
    ("unknown event form", mutate("  munmap:", "  munmapp:"),
     "s.yaml:22: event.munmapp: expected one of munmap, unmaps, invocations, got unknown key "
     "'munmapp' (did you mean 'munmap'?)"),
    ("misspelt exit", mutate("event:\n  munmap: {gpa_bytes: 0x40001000, size_bytes: 8388608}\n",
                             "event: exti\n"),
     "s.yaml:21: event: expected 'exit' or a mapping with one of munmap, unmaps, invocations, "
     "got string 'exti' (did you mean 'exit'?)"),
    ("wrong schema_version", mutate("schema_version: 1", "schema_version: 2"),
     "s.yaml:1: schema_version: expected 1, got 2 (the file is for a newer s2teardown"),
    ("missing event", mutate("event:\n  munmap: {gpa_bytes: 0x40001000, size_bytes: 8388608}\n", ""),
     "s.yaml:1: event: expected an event"),
    ("granule not allowed", mutate("granule_bytes: 4096", "granule_bytes: 8192"),
     "s.yaml:5: geometry.granule_bytes: expected one of 4096, 16384, 65536, got 8192"),
    ("ipa_bits out of range", mutate("ipa_bits: 40", "ipa_bits: 50"),
     "s.yaml:6: geometry.ipa_bits: expected 'auto' or an integer in [32, 48], got 50"),
    ("ipa_bits misspelt auto", mutate("ipa_bits: 40", "ipa_bits: atuo"),
     "s.yaml:6: geometry.ipa_bits: expected 'auto' or an integer in [32, 48], got string 'atuo' "
     "(did you mean 'auto'?)"),
    ("size string", mutate("size_bytes: 1073741824", "size_bytes: 1G"),
     "s.yaml:16: memslots[1].size_bytes: expected a size in bytes (an integer > 0), got string "
     "'1G' (write plain bytes, 1073741824; no size strings)"),
    ("float bytes", mutate("size_bytes: 67108864", "size_bytes: 67108864.0"),
     "s.yaml:10: memslots[0].size_bytes: expected a size in bytes (an integer > 0), got "
     "67108864.0 (write 67108864 without a decimal point)"),
    ("negative size", mutate("size_bytes: 67108864", "size_bytes: -4096"),
     "s.yaml:10: memslots[0].size_bytes: expected a size in bytes (an integer > 0), got -4096"),
    ("boolean address", mutate("    gpa_bytes: 0\n", "    gpa_bytes: true\n"),
     "s.yaml:9: memslots[0].gpa_bytes: expected a guest-physical address in bytes (an integer "
     ">= 0), got true (a boolean)"),
    ("memslot not granule-aligned", mutate("gpa_bytes: 0x40000000", "gpa_bytes: 0x40000800"),
     "s.yaml:15: memslots[1].gpa_bytes: expected a multiple of the 4096-byte granule, got "
     "0x40000800"),
    ("memslots overlap", mutate("gpa_bytes: 0x40000000", "gpa_bytes: 0x02000000"),
     "s.yaml:15: memslots[1].gpa_bytes: expected a base at or above 0x4000000 (64 MiB), where "
     "memslots[0] 'flash' ends"),
    ("duplicate memslot name", mutate("- name: ram", "- name: flash"),
     "s.yaml:14: memslots[1].name: expected a name no other memslot has, got 'flash' again"),
    ("memslot reaching the top of the IPA space",
     mutate("ipa_bits: 40", "ipa_bits: 32", "size_bytes: 1073741824", "size_bytes: 3221225472"),
     "s.yaml:16: memslots[1].size_bytes: expected a memslot ending below 0x100000000 (4 GiB), "
     "the top of the 32-bit IPA space"),
    ("memslot above the largest IPA space",
     mutate("ipa_bits: 40", "ipa_bits: auto", "gpa_bytes: 0x40000000", "gpa_bytes: 0xffffc0000000"),
     "s.yaml:16: memslots[1].size_bytes: expected a memslot ending below 0x1000000000000 "
     "(256 TiB), the largest (48-bit) IPA space"),
    ("both regions and mapping",
     mutate("    regions:\n", "    mapping: [{leaf_bytes: 4096, percent: 100}]\n    regions:\n"),
     "s.yaml:14: memslots[1]: expected exactly one of regions (explicit) or mapping (shorthand), "
     "got both"),
    ("region not aligned to its leaf",
     mutate("{offset_bytes: 0, size_bytes: 2097152, leaf_bytes: 4096}",
            "{offset_bytes: 0, size_bytes: 1048576, leaf_bytes: 4096}"),
     "s.yaml:19: memslots[1].regions[1].offset_bytes: expected a start aligned to the "
     "2097152-byte leaf size (gpa_bytes + offset_bytes a multiple of 2097152), got GPA "
     "0x40100000 (offset 1048576); without offset_bytes it starts where regions[0] ends"),
    ("regions overlap",
     mutate("{size_bytes: 1069547520, leaf_bytes: 2097152}",
            "{offset_bytes: 1048576, size_bytes: 1069547520, leaf_bytes: 2097152}"),
     "s.yaml:19: memslots[1].regions[1].offset_bytes: expected an offset >= 2097152, where "
     "regions[0] ends"),
    ("region outside its memslot",
     mutate("{hole: true, size_bytes: 2097152}", "{hole: true, size_bytes: 4194304}"),
     "s.yaml:20: memslots[1].regions[2].size_bytes: expected a region inside memslot 'ram' "
     "(offset + size <= 1073741824), got offset 1071644672 + size 4194304 = 1075838976"),
    ("block straddling the memslot end",
     mutate("{size_bytes: 1069547520, leaf_bytes: 2097152}",
            "{size_bytes: 1073741824, leaf_bytes: 2097152}"),
     "s.yaml:19: memslots[1].regions[1].size_bytes: expected a region inside memslot 'ram' "
     "(offset + size <= 1073741824), got offset 2097152 + size 1073741824 = 1075838976 "
     "(a block may not straddle a memslot edge)"),
    ("leaf size not of the geometry",
     mutate("size_bytes: 2097152, leaf_bytes: 4096}", "size_bytes: 2097152, leaf_bytes: 8192}"),
     "s.yaml:18: memslots[1].regions[0].leaf_bytes: expected a leaf size of this geometry "
     "(4096, 2097152, 1073741824), got 8192"),
    ("1 GiB block with 2 levels",
     mutate("ipa_bits: 40", "ipa_bits: 34",
            "{offset_bytes: 0, size_bytes: 2097152, leaf_bytes: 4096}",
            "{offset_bytes: 0, size_bytes: 1073741824, leaf_bytes: 1073741824}"),
     "s.yaml:18: memslots[1].regions[0].leaf_bytes: expected a leaf size of this geometry "
     "(4096, 2097152), got 1073741824 (no 1 GiB blocks with 2 levels (34-bit IPA))"),
    ("device block", mutate("{size_bytes: 1069547520, leaf_bytes: 2097152}",
                            "{size_bytes: 1069547520, leaf_bytes: 2097152, device: true}"),
     "s.yaml:19: memslots[1].regions[1].device: expected device mappings only on 4096-byte pages"),
    ("hole with a leaf size", mutate("{hole: true, size_bytes: 2097152}",
                                     "{hole: true, size_bytes: 2097152, leaf_bytes: 4096}"),
     "s.yaml:20: memslots[1].regions[2].leaf_bytes: expected no leaf size in a hole"),
    ("region with neither leaf nor hole", mutate("{hole: true, size_bytes: 2097152}",
                                                 "{size_bytes: 2097152}"),
     "s.yaml:20: memslots[1].regions[2].leaf_bytes: expected a leaf size (4096, 2097152, "
     "1073741824) or hole: true, got neither"),
    ("percentages not summing to 100", mutate("{hole: true, percent: 50}", "{hole: true, percent: 40}"),
     "s.yaml:11: memslots[0].mapping: expected percentages summing to 100, got 50 + 40 = 90"),
    ("percent out of range", mutate("{hole: true, percent: 50}", "{hole: true, percent: .nan}"),
     "s.yaml:13: memslots[0].mapping[1].percent: expected a percentage of the memslot in (0, 100], "
     "got nan"),
    ("munmap outside the IPA space",
     mutate("gpa_bytes: 0x40001000, size_bytes: 8388608", "gpa_bytes: 0xffffff0000, size_bytes: 1048576"),
     "s.yaml:22: event.munmap.size_bytes: expected a range ending inside the 40-bit IPA space"),
    ("munmap not granule-aligned",
     mutate("gpa_bytes: 0x40001000, size_bytes: 8388608", "gpa_bytes: 0x40000800, size_bytes: 8388608"),
     "s.yaml:22: event.munmap.gpa_bytes: expected a multiple of the 4096-byte granule, got 0x40000800"),
    ("munmap without a size",
     mutate("gpa_bytes: 0x40001000, size_bytes: 8388608", "gpa_bytes: 0x40001000"),
     "s.yaml:22: event.munmap.size_bytes: expected a size in bytes (required), got no 'size_bytes'"),
    ("teardown not last",
     mutate("event:\n  munmap: {gpa_bytes: 0x40001000, size_bytes: 8388608}\n", INVOCATIONS),
     "s.yaml:23: event.invocations[0].kind: expected a teardown only as the last invocation"),
    ("teardown with a range",
     mutate("event:\n  munmap: {gpa_bytes: 0x40001000, size_bytes: 8388608}\n",
            "event:\n  invocations:\n    - {kind: teardown, gpa_bytes: 0}\n"),
     "s.yaml:23: event.invocations[0].gpa_bytes: expected no range on a teardown"),
    ("unknown invocation kind",
     mutate("event:\n  munmap: {gpa_bytes: 0x40001000, size_bytes: 8388608}\n",
            "event:\n  invocations:\n    - {kind: unmpa, gpa_bytes: 0, size_bytes: 4096}\n"),
     "s.yaml:23: event.invocations[0].kind: expected one of unmap, clear, teardown, got string "
     "'unmpa' (did you mean 'unmap'?)"),
    ("blockable not a boolean",
     mutate("event:\n  munmap: {gpa_bytes: 0x40001000, size_bytes: 8388608}\n",
            "event:\n  invocations:\n    - {kind: unmap, gpa_bytes: 0, size_bytes: 4096, blockable: no}\n"),
     "s.yaml:23: event.invocations[0].blockable: expected true or false, got string 'no' "
     "('no' is a string here (YAML 1.2); write true or false)"),
    ("duplicate unmap name",
     mutate("event:\n  munmap: {gpa_bytes: 0x40001000, size_bytes: 8388608}\n",
            "event:\n  unmaps:\n    - {name: a, gpa_bytes: 0, size_bytes: 4096}\n"
            "    - {name: a, gpa_bytes: 8192, size_bytes: 4096}\n"),
     "s.yaml:24: event.unmaps[1].name: expected a name no other unmap has, got 'a' again"),
    ("YAML tag", mutate("name: base", "name: !!python/object:os.system base"),
     "s.yaml:2: name: expected a plain value (YAML tags are not supported)"),
    ("duplicate key", mutate("  ipa_bits: 40\n", "  ipa_bits: 40\n  ipa_bits: 41\n"),
     "s.yaml:7: geometry.ipa_bits: expected each key once, got a second 'ipa_bits' (first on line 6)"),
    ("not a mapping", "- 1\n- 2\n", "s.yaml:1: expected a mapping of scenario fields, got a list"),
    ("empty file", "", "s.yaml:1: expected a YAML document, got an empty file"),
]


def error_of(text: str, name: str = "s.yaml") -> UserError:
    with pytest.raises(UserError) as info:
        scenario_from_text(text, name)
    return info.value


def test_base_text_is_valid() -> None:
    s = scenario_from_text(BASE, "s.yaml")
    assert [m.name for m in s.layout.memslots] == ["flash", "ram"]
    assert s.layout.extents[0] == Extent(0, 32 * M, 4096, 0)


@pytest.mark.parametrize(("case", "text", "start"), CASES, ids=[c[0] for c in CASES])
def test_bad_scenario_text(case: str, text: str, start: str) -> None:
    err = error_of(text)
    msg = str(err)
    assert "\n" not in msg
    assert err.exit_code == 2
    assert msg.startswith(start), f"{case}: {msg}"
    # every message names the file and a line; all but whole-document ones name the field
    assert re.match(r"^s\.yaml:\d+: ", msg), msg


def test_bad_input_table_is_large_enough() -> None:
    assert len(CASES) >= 12
    assert sum(1 for _, _, start in CASES if "did you mean" in start) >= 5


def test_errors_name_the_field_path() -> None:
    fields = {re.match(r"^s\.yaml:\d+: ([^:]+): ", start) for _, _, start in CASES}
    named = {m.group(1) for m in fields if m is not None}
    assert {"geometry.ipa_bits", "memslots[1].regions[1].offset_bytes", "event.munmap.gpa_bytes",
            "memslots[0].mapping"} <= named


# --- schema, docs, version ------------------------------------------------------------------


def test_schema_shape() -> None:
    schema = scenario_schema()
    json.dumps(schema)
    assert schema["properties"]["schema_version"] == {"const": SCHEMA_VERSION,
                                                     "description": "Format version."}
    assert set(schema["properties"]) == set(TOP_KEYS)
    assert set(schema["properties"]["geometry"]["properties"]) == set(GEOMETRY_KEYS)
    defs = schema["$defs"]
    assert set(defs["memslot"]["properties"]) == set(MEMSLOT_KEYS)
    assert set(defs["region"]["properties"]) == set(REGION_KEYS)
    assert set(defs["share"]["properties"]) == set(MAPPING_KEYS)
    assert set(defs["invocation"]["properties"]) == set(INVOCATION_KEYS)
    assert SCHEMA_VERSION in CHANGES_SINCE


def test_schema_accepts_bundled_and_rejects_bad() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from s2teardown.inputs.yamlio import load_yaml, load_yaml_text

    schema = scenario_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for name in BUNDLED:
        data = json.loads(json.dumps(load_yaml(bundled_dir("scenarios") / f"{name}.yaml")))
        assert list(validator.iter_errors(data)) == [], name
    shape_errors = {"unknown top-level key", "unknown region key", "unknown memslot key",
                    "unknown event form", "misspelt exit", "wrong schema_version",
                    "missing event", "granule not allowed", "ipa_bits out of range",
                    "size string", "negative size", "boolean address", "both regions and mapping",
                    "hole with a leaf size", "region with neither leaf nor hole",
                    "teardown with a range", "unknown invocation kind", "blockable not a boolean",
                    "not a mapping"}
    for case, text, _ in CASES:
        if case in shape_errors:
            data = json.loads(json.dumps(load_yaml_text(text, "s.yaml")))
            assert list(validator.iter_errors(data)), case


def doc_text() -> str:
    return (REPO / "docs" / "scenario-format.md").read_text(encoding="utf-8")


def test_doc_example_loads_and_agrees_with_the_walker() -> None:
    block = re.search(r"```yaml\n(.*?)```", doc_text(), re.S)
    assert block is not None
    s = scenario_from_text(block.group(1), "doc-example.yaml")
    assert [m.name for m in s.layout.memslots] == ["flash0", "bar0", "ram"]
    assert [i.kind for i in s.event] == [CLEAR, CLEAR, UNMAP]
    assert vector_counts(s.layout, s.event, STOCK) == walker_counts(s.layout, s.event, STOCK)


def test_doc_mentions_every_key_and_form() -> None:
    doc = doc_text()
    in_code = set(re.findall(r"[a-z_0-9]+", " ".join(re.findall(r"`([^`\n]+)`", doc))))
    for key in (*TOP_KEYS, *GEOMETRY_KEYS, *MEMSLOT_KEYS, *REGION_KEYS, *MAPPING_KEYS,
                *INVOCATION_KEYS, *EVENT_FORMS):
        assert key in in_code, key
    # the error quoted in the doc is the one the loader gives
    quoted = next(line.strip() for line in doc.splitlines() if line.strip().startswith("s.yaml:19:"))
    case = next(c for c in CASES if c[0] == "region not aligned to its leaf")
    assert quoted == str(error_of(case[1]))
