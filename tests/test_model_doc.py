"""docs/model.md's numbers: worked by hand, written as literals here, checked against the code.

Every expected number below is an integer literal copied from the hand derivation in
docs/model.md (§5 and §9), never computed by the code under test.  Each literal table is also
parsed back out of docs/model.md (the blocks between ``<!-- model-doc:NAME -->`` markers), so the
document and this test cannot drift apart.

Worked example (docs/model.md §9): 40-bit IPA, 4 KiB granule (3 levels), L = 64; memslots
[1G, 3G) and [3G, 5G); mapped: A = [2G-4M, 2G+4M) 2 MiB THP blocks, B = [3G-64K, 3G) pages,
C = [3G, 3G+6M) pages; munmap [2G-3M, 3G+5M+20K) -> CLEAR [2G-4M, 2G-2M) (the lower edge's THP),
CLEAR [3G+4M, 3G+6M) (the upper edge's block of 4 KiB pages: __split_huge_pmd starts the notifier
before it looks at the PMD), then UNMAP.  Passes in kernel memslot order (highest GPA first):
1 = CLEAR 1 on slot 0, 2 = CLEAR 2 on slot 1, 3 = UNMAP on slot 1, 4 = UNMAP on slot 0.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from s2teardown.core.behaviour import Behaviour
from s2teardown.core.counts import batch_from_layout, count
from s2teardown.core.geometry import Geometry
from s2teardown.core.host import MUNMAP, HostOp
from s2teardown.core.instructions import Features, op_counts
from s2teardown.core.layout import (
    CLEAR,
    UNMAP,
    Extent,
    Invocation,
    Layout,
    Memslot,
    exit_event,
    munmap_event,
)
from s2teardown.core.vocabulary import EVENTS, OPS
from s2teardown.oracle.walker import build_table, run_event, walk

DOC = Path(__file__).resolve().parents[1] / "docs" / "model.md"

K, M, G = 1 << 10, 1 << 20, 1 << 30
STOCK = {"teardown": Behaviour(), "unmap": Behaviour(), "clear": Behaviour()}

# ----------------------------------------------------------------------------------------------
# The hand derivation (docs/model.md §9), as literals.

#: event -> (pass 1, pass 2, pass 3, pass 4, per invocation, total)
PASSES: dict[str, tuple[int, int, int, int, int, int]] = {
    "notifier_call": (0, 0, 0, 0, 3, 3),
    "memslot_visit": (0, 0, 0, 0, 6, 6),  # 2 memslots per notifier call
    "entry_visit": (2, 514, 1_028, 1_028, 0, 2_572),
    "pte_clear": (0, 512, 1_024, 16, 0, 1_552),
    "block_clear": (1, 0, 0, 3, 0, 4),
    "table_clear": (0, 1, 3, 3, 0, 7),  # Tc | Ta, Tb, P3 | P1, T511, P2
    "put_page": (1, 513, 1_027, 22, 0, 1_563),
    "tlb_flush_vmid_ipa": (1, 513, 1_027, 22, 0, 1_563),
    "dcache_flush_call": (1, 512, 1_024, 19, 0, 1_556),
    "dc_civac_line": (32_768, 32_768, 65_536, 99_328, 0, 230_400),
    "table_free": (0, 1, 3, 3, 0, 7),
    "resched_point": (0, 0, 0, 1, 0, 1),
    "flush_remote_tlbs": (0, 0, 0, 0, 0, 0),
}

TOTAL = {
    "notifier_call": 3,
    "memslot_visit": 6,
    "entry_visit": 2_572,
    "pte_clear": 1_552,
    "block_clear": 4,
    "table_clear": 7,
    "put_page": 1_563,
    "tlb_flush_vmid_ipa": 1_563,
    "dcache_flush_call": 1_556,
    "dc_civac_line": 230_400,
    "table_free": 7,
    "resched_point": 1,
}

#: The host's side of the same munmap (unmap_region, docs/model.md §14), by hand:
#: THPs wholly inside [2G-3M, 3G+5M+20K): [2G-2M, 2G+4M) = 3 (zapped, freed, each with its
#: deposited PTE table); the THP at 2G-4M cut: split, its 256 pages from 2G-3M zapped per PTE;
#: pages: B's 16 and C's [3G, 3G+5M+20K) = 1,285 -> 1,301 zapped and freed, 1,557 PTE zaps in
#: all; tables wholly inside: the PTE tables of [3G-2M, 3G), [3G, 3G+2M), [3G+2M, 3G+4M) and
#: the PMD table of [2G, 3G) = 4, + 3 deposited = 7.
HOST = {
    "host_pte_zap": 1_557,
    "host_pmd_zap": 3,
    "host_pmd_split": 1,
    "host_page_free": 1_301,
    "host_folio_free": 3,
    "host_table_free": 7,
    # §14.4 (model version 6): the split's 2 MiB flush (512 page strides), the zap's one flush
    # at the VMA's end (~1 GiB) and the table batch's at tlb_finish_mmu ([2G, 3G + 4M): 514 PMD
    # strides, the PMD table at 2G being in it) each reach MAX_TLBI_OPS: flush_tlb_mm
    "host_tlb_flush_mm": 3,
}

#: event -> (segment 0, segment 1): the only resched point is in pass 4, between its entry-level
#: entries 1 and 2, so segment 0 is passes 1-3 and pass 4's entry 1, segment 1 pass 4's entry 2.
SEGMENTS: dict[str, tuple[int, int]] = {
    "notifier_call": (3, 0),
    "memslot_visit": (6, 0),
    "entry_visit": (1_547, 1_025),  # 2 + 514 + 1,028 + 3 | 1 + 512 + 512
    "pte_clear": (1_536, 16),
    "block_clear": (2, 2),
    "table_clear": (5, 2),
    "put_page": (1_543, 20),
    "tlb_flush_vmid_ipa": (1_543, 20),
    "dcache_flush_call": (1_538, 18),
    "dc_civac_line": (163_840, 66_560),
    "table_free": (5, 2),
    "resched_point": (1, 0),
}

#: primitive operations, nVHE, no repeat-TLBI erratum (summed over phases)
OPS_NVHE = {
    "notifier_call": 3,
    "memslot_visit": 6,
    "entry_visit": 2_572,
    "entry_clear": 1_563,  # 1,552 PTEs + 4 blocks + 7 table entries
    "put_page": 1_563,
    "dsb_ishst": 3_115,  # 1 per TLB-flush call (1,563) + 1 per PTE clear (1,552)
    "dc_civac_line": 230_400,
    "dsb_sy": 1_556,
    "hvc": 1_563,
    "sysreg_write": 4_689,  # 3 per call: VTCR_EL2 + VTTBR_EL2 in, VTTBR_EL2 out
    "isb": 3_126,
    "tlbi_is": 3_126,
    "dsb_ish": 3_126,
    "table_free": 7,
    "resched_point": 1,
}

#: event -> (v5.5, P5, P7, v5.5 with FWB, v5.5 with 128-byte lines); all other events as TOTAL
#: P7 elides the UNMAP's CMOs (passes 3, 4), not the CLEARs' (passes 1, 2: 1 + 512 calls,
#: 32,768 + 32,768 lines); L = 128: 4 x 16,384 + 1,552 x 32 = 115,200 lines.
VARIANTS = {
    "dcache_flush_call": (1_556, 1_556, 513, 0, 1_556),
    "dc_civac_line": (230_400, 230_400, 65_536, 0, 115_200),
}

#: docs/model.md §5: 64 GiB at 1 GiB, fully mapped, 40-bit IPA, v5.5 exit, L = 64.
#: (granule, leaf) -> entry-level entries, leaves, entry_visit, tlb_flush_vmid_ipa, dc_civac_line,
#:                    table_clear, table_free, resched_point, stretch_tlbi, stretch_lines
EXIT_64G: dict[tuple[str, str], tuple[int, ...]] = {
    ("4K", "4K"): (1_024, 16_777_216, 16_811_008, 16_810_048, 1_073_741_824, 32_832, 32_834, 1_023,
                   262_657, 16_777_216),
    ("4K", "2M"): (1_024, 32_768, 33_792, 32_832, 1_073_741_824, 64, 66, 1_023, 513, 16_777_216),
    ("4K", "1G"): (1_024, 64, 1_024, 64, 1_073_741_824, 0, 2, 1_023, 1, 16_777_216),
    ("16K", "16K"): (32_768, 4_194_304, 4_227_072, 4_196_352, 1_073_741_824, 2_048, 2_064, 32_767,
                     2_049, 524_288),
    ("16K", "32M"): (32_768, 2_048, 32_768, 2_048, 1_073_741_824, 0, 16, 32_767, 1, 524_288),
    ("64K", "64K"): (2_048, 1_048_576, 1_050_624, 1_048_704, 1_073_741_824, 128, 129, 2_047, 8_193,
                     8_388_608),
    ("64K", "512M"): (2_048, 128, 2_048, 128, 1_073_741_824, 0, 1, 2_047, 1, 8_388_608),
}
EXIT_64G_COLUMNS = (
    "entry-level entries", "leaves", "entry_visit", "tlb_flush_vmid_ipa", "dc_civac_line",
    "table_clear", "table_free", "resched_point", "stretch_tlbi", "stretch_lines",
)

# ----------------------------------------------------------------------------------------------
# Reading the document


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def doc_table(name: str) -> list[dict[str, str]]:
    """The markdown table between ``<!-- model-doc:name -->`` and ``<!-- /model-doc:name -->``."""
    text = doc_text()
    m = re.search(rf"<!-- model-doc:{re.escape(name)} -->\n(.*?)<!-- /model-doc:{re.escape(name)} -->",
                  text, re.S)
    assert m, f"docs/model.md has no model-doc:{name} block"
    rows = [line.strip() for line in m.group(1).splitlines() if line.strip().startswith("|")]
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    header, sep, *body = cells
    assert all(set(c) <= set("-: ") for c in sep), f"model-doc:{name}: second row is not a rule"
    return [dict(zip(header, row, strict=True)) for row in body]


def num(cell: str) -> int:
    return int(cell.replace(",", "").replace("`", "").strip())


# ----------------------------------------------------------------------------------------------
# The worked example


def example() -> tuple[Layout, tuple[Invocation, ...]]:
    g = Geometry(4096, 40)
    lay = Layout(
        g,
        (Memslot(1 * G, 3 * G), Memslot(3 * G, 5 * G)),
        (
            Extent(2 * G - 4 * M, 2 * G + 4 * M, 2 * M, 0),  # A: 4 THP blocks
            Extent(3 * G - 64 * K, 3 * G, 4 * K, 0),  # B: 16 pages
            Extent(3 * G, 3 * G + 6 * M, 4 * K, 1),  # C: 1,536 pages
        ),
    )
    lay.validate()
    return lay, munmap_event(lay, 2 * G - 3 * M, 3 * G + 5 * M + 20 * K)


def segment_rows(c) -> list:
    """Per-segment event rows of scenario 0, variant 0 (``Segments.events`` or a bare array)."""
    assert c.segments is not None
    segs = c.segments[0][0]
    return list(getattr(segs, "events", segs))


def as_dict(vector) -> dict[str, int]:
    return {e: int(v) for e, v in zip(EVENTS, vector, strict=True) if int(v)}


def full(expected: dict[str, int]) -> dict[str, int]:
    """``expected`` with every other event at 0, nonzero entries only (for dict equality)."""
    assert set(expected) <= set(EVENTS)
    return {e: v for e, v in expected.items() if v}


def test_doc_tables_are_the_hand_derivation() -> None:
    rows = doc_table("worked-example-passes")
    got = {
        r["event"]: tuple(num(r[c]) for c in ("pass 1", "pass 2", "pass 3", "pass 4", "per invocation",
                                               "total"))
        for r in rows
    }
    assert got == PASSES
    segs = {r["event"]: (num(r["segment 0"]), num(r["segment 1"])) for r in doc_table("worked-example-segments")}
    assert segs == SEGMENTS
    ops = {r["op"]: num(r["count"]) for r in doc_table("worked-example-ops-nvhe")}
    assert ops == OPS_NVHE
    var = {
        r["event"]: tuple(num(r[c]) for c in ("v5.5", "P5", "P7", "v5.5 FWB", "v5.5 L=128"))
        for r in doc_table("worked-example-variants")
    }
    assert var == VARIANTS


def test_hand_derivation_adds_up() -> None:
    for event, (p1, p2, p3, p4, inv, total) in PASSES.items():
        assert p1 + p2 + p3 + p4 + inv == total, event
        assert TOTAL.get(event, 0) == total, event
    for event, (s0, s1) in SEGMENTS.items():
        assert s0 + s1 == TOTAL.get(event, 0), event
    # docs/model.md §5 identities: TLBI calls = put_page = leaves + tables; lines = bytes / 64
    assert TOTAL["tlb_flush_vmid_ipa"] == TOTAL["pte_clear"] + TOTAL["block_clear"] + TOTAL["table_clear"]
    assert TOTAL["dc_civac_line"] == (TOTAL["pte_clear"] * 4 * K + TOTAL["block_clear"] * 2 * M) // 64


def test_event_is_two_clears_then_the_unmap() -> None:
    _, event = example()
    assert [(i.kind, i.lo, i.hi) for i in event] == [
        (CLEAR, 2 * G - 4 * M, 2 * G - 2 * M),  # lower edge splits the THP at 2G-4M
        (CLEAR, 3 * G + 4 * M, 3 * G + 6 * M),  # upper edge: order-0 pages, the notifier anyway
        (UNMAP, 2 * G - 3 * M, 3 * G + 5 * M + 20 * K),
    ]


def test_host_side_equals_hand_derivation() -> None:
    lay, event = example()
    host = (HostOp(MUNMAP, 2 * G - 3 * M, 3 * G + 5 * M + 20 * K),)
    r = walk(lay, event, STOCK, fwb=False, cache_line=64, host=host)
    assert as_dict(r.events) == full({**TOTAL, **HOST})
    c = count(batch_from_layout(lay, event, host), [STOCK], fwb=False, cache_line=64)
    assert as_dict(c.events[0, 0]) == full({**TOTAL, **HOST})
    rows = {r["event"]: num(r["count"]) for r in doc_table("worked-example-host")}
    assert rows == HOST


def test_walker_equals_hand_derivation() -> None:
    lay, event = example()
    r = walk(lay, event, STOCK, fwb=False, cache_line=64)
    assert as_dict(r.events) == full(TOTAL)
    assert [as_dict(s) for s in r.segments] == [
        full({e: v[k] for e, v in SEGMENTS.items()}) for k in range(2)
    ]


def test_counts_equal_hand_derivation() -> None:
    lay, event = example()
    c = count(batch_from_layout(lay, event), [STOCK], fwb=False, cache_line=64, with_segments=True)
    assert as_dict(c.events[0, 0]) == full(TOTAL)
    assert [as_dict(s) for s in segment_rows(c)] == [
        full({e: v[k] for e, v in SEGMENTS.items()}) for k in range(2)
    ]


def test_each_pass_with_the_walker() -> None:
    # Run the passes one notifier call at a time on the same table, in the kernel's order: the
    # lower edge's CLEAR (pass 1), the upper edge's CLEAR (pass 2), then the UNMAP's slot-1 part
    # (pass 3), then its slot-0 part (pass 4).  Each call adds 1 notifier call and 2 memslot
    # visits; the rest is the pass column.
    lay, _ = example()
    table = build_table(lay)
    calls = [
        Invocation(CLEAR, 2 * G - 4 * M, 2 * G - 2 * M),
        Invocation(CLEAR, 3 * G + 4 * M, 3 * G + 6 * M),
        Invocation(UNMAP, 3 * G, 3 * G + 5 * M + 20 * K),
        Invocation(UNMAP, 2 * G - 3 * M, 3 * G),
    ]
    for j, inv in enumerate(calls):
        r = run_event(table, lay, (inv,), STOCK, fwb=False, cache_line=64)
        want = {e: v[j] for e, v in PASSES.items()}
        want["notifier_call"] = 1
        want["memslot_visit"] = 2
        assert as_dict(r.events) == full(want), f"pass {j + 1}"
    # nothing survives: CLEAR 2 took Tc's 251 PTEs above the range with its other 261, so
    # pass 3 empties P3 too
    assert table.leaf_count() == {}
    assert table.pages() == []


def test_instruction_expansion_nvhe() -> None:
    lay, event = example()
    c = count(batch_from_layout(lay, event), [STOCK], fwb=False, cache_line=64)
    ops = op_counts(c.events[0, 0], Features(vhe=False, tlbi_repeat=False)).sum(axis=0)
    assert {o: int(n) for o, n in zip(OPS, ops, strict=True) if n} == OPS_NVHE


def test_other_variants_and_machines() -> None:
    from s2teardown.inputs.variants import load_variants

    vs = load_variants()
    cases = [
        (dict(vs.lookup("v5.5").behaviours), False, 64),
        (dict(vs.lookup("P5").behaviours), False, 64),
        (dict(vs.lookup("series").behaviours), False, 64),  # P7
        (STOCK, True, 64),
        (STOCK, False, 128),
    ]
    lay, event = example()
    for k, (behs, fwb, line) in enumerate(cases):
        want = dict(TOTAL)
        for e, values in VARIANTS.items():
            want[e] = values[k]
        w = walk(lay, event, behs, fwb=fwb, cache_line=line)
        c = count(batch_from_layout(lay, event), [behs], fwb=fwb, cache_line=line)
        assert as_dict(w.events) == full(want), k
        assert as_dict(c.events[0, 0]) == full(want), k


# ----------------------------------------------------------------------------------------------
# docs/model.md §5

LEAF = {"4K": 4 * K, "16K": 16 * K, "64K": 64 * K, "2M": 2 * M, "32M": 32 * M, "512M": 512 * M, "1G": G}


def test_doc_exit_table_is_the_literal_table() -> None:
    got = {
        (r["granule"], r["leaf"]): tuple(num(r[c]) for c in EXIT_64G_COLUMNS)
        for r in doc_table("exit-64g")
    }
    assert got == EXIT_64G


@pytest.mark.parametrize("case", sorted(EXIT_64G))
def test_exit_64g_counts(case: tuple[str, str]) -> None:
    granule, leaf = LEAF[case[0]], LEAF[case[1]]
    g = Geometry(granule, 40)
    lay = Layout(g, (Memslot(G, 65 * G),), (Extent(G, 65 * G, leaf, 0),))
    c = count(batch_from_layout(lay, exit_event(lay)), [STOCK], fwb=False, cache_line=64,
              with_segments=True)
    ev = dict(zip(EVENTS, (int(v) for v in c.events[0, 0]), strict=True))
    segs = np.array(segment_rows(c))
    tl, ln = EVENTS.index("tlb_flush_vmid_ipa"), EVENTS.index("dc_civac_line")
    got = (
        g.top_entries,
        ev["pte_clear"] + ev["block_clear"],
        ev["entry_visit"],
        ev["tlb_flush_vmid_ipa"],
        ev["dc_civac_line"],
        ev["table_clear"],
        ev["table_free"],
        ev["resched_point"],
        int(np.max(segs[:, tl])),
        int(np.max(segs[:, ln])),
    )
    assert got == EXIT_64G[case]


def test_doc_states_the_walker_correction() -> None:
    text = doc_text()
    assert "262,656" in text and "**262,657**" in text
    assert "16,810,048" in text and "32,832" in text and "4,196,352" in text and "1,048,704" in text


# ----------------------------------------------------------------------------------------------
# Changelog


def test_changelog_matches_model_version() -> None:
    rows = doc_table("changelog")
    versions = [num(r["model_version"]) for r in rows]
    assert versions == sorted(versions) and versions[0] == 1
    from s2teardown.core.model import MODEL_VERSION
    assert versions[-1] == MODEL_VERSION
