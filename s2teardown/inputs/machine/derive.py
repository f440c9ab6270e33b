"""Software prices that follow the machine (docs/model.md §7.1).

The per-entry, put_page, table-free, notifier and host-free prices are kernel code: a run of
instructions and, for some, a cache line that has to come from DRAM.  A machine file that
states its core class (``topology.core_class``) and its DRAM latency
(``topology.dram_latency_ns``) and leaves such a price out gets it from

    price = cycles / (freq_ghz × ipc) + lines × dram_latency_ns

where ``cycles`` (instructions' worth of core time at the Cortex-A72's throughput) and ``lines``
(cache misses whose latency the code waits for) are per operation, fixed here, and anchored to
the D05: its clock (2.4 GHz), its core (Cortex-A72, ipc 1) and an assumed 120 ns DRAM latency
reproduce the format's default of each price, which is the D05's stated value.  The range of a
derived price is the D05's default range scaled by the same factor.  Pure arithmetic: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class CoreClass:
    """Per-clock throughput on kernel code relative to the Cortex-A72 (``ipc``), assumed."""

    ipc: float
    low: float
    high: float
    note: str


#: Core classes (topology.core_class).  Assumed: no public per-clock figure exists for page-table
#: and allocator code; the values order the cores as their pipelines do (in-order dual issue
#: < 3-wide A57/A72 < 4-wide A76/N1 < wide V1/V2/X1) and stay below Arm's SPEC-based
#: generation-on-generation claims, because pointer-chasing kernel code gains less than SPEC.
CORE_CLASSES: Final[dict[str, CoreClass]] = {
    "cortex-a53": CoreClass(0.5, 0.4, 0.7, "in-order, dual issue"),
    "cortex-a55": CoreClass(0.55, 0.4, 0.75, "in-order, dual issue"),
    "cortex-a57": CoreClass(0.85, 0.7, 1.0, "3-wide out-of-order, A72's predecessor"),
    "cortex-a72": CoreClass(1.0, 1.0, 1.0, "the reference (the D05's core)"),
    "cortex-a76": CoreClass(1.3, 1.1, 1.6, "4-wide out-of-order"),
    "cortex-x1": CoreClass(1.6, 1.3, 2.0, "5-wide out-of-order"),
    "neoverse-n1": CoreClass(1.3, 1.1, 1.6, "the Cortex-A76's server sibling"),
    "neoverse-v1": CoreClass(1.6, 1.3, 2.0, "the Cortex-X1's server sibling"),
    "neoverse-v2": CoreClass(1.75, 1.4, 2.2, "a V1 successor (Armv9)"),
    "thunderx": CoreClass(0.5, 0.4, 0.7, "Cavium's in-order dual-issue core"),
    "vulcan": CoreClass(1.0, 0.8, 1.3, "ThunderX2's 4-wide out-of-order core"),
    "skylark": CoreClass(0.9, 0.7, 1.1, "X-Gene 3 (eMAG), 4-wide out-of-order"),
    "taishan-v110": CoreClass(1.1, 0.9, 1.4, "Kunpeng 920's 4-wide out-of-order core"),
}

#: The anchor: the D05 (Hi1616: Cortex-A72 at 2.4 GHz, WikiChip Hi1616) and its DRAM latency,
#: assumed (no public figure; the sourced figures of its era: ThunderX 103 ns, AnandTech 10353;
#: Graviton2 81 ns, AnandTech 15578).
ANCHOR_FREQ_GHZ: Final = 2.4
ANCHOR_CORE: Final = "cortex-a72"
ANCHOR_DRAM_NS: Final = 120.0


@dataclass(frozen=True)
class SoftwareCost:
    """One price's DRAM lines waited for per operation, and why (assumed)."""

    lines: float
    why: str


#: The prices derived from the machine, with the DRAM lines each waits for (assumed).  The
#: core cycles follow from the anchor: (D05 price − lines × 120 ns) × 2.4 GHz.
SOFTWARE_COSTS: Final[dict[str, SoftwareCost]] = {
    "notifier_call_ns": SoftwareCost(0.5, "srcu, mmu_lock and struct kvm lines, half of them cold"),
    "memslot_visit_ns": SoftwareCost(0.0, "a memslot array the walk keeps hot"),
    "entry_visit_ns": SoftwareCost(
        1 / 32, "a table page read in order: 8 entries per 64-byte line, a quarter of the "
        "lines' latency not hidden by the prefetcher"),
    "entry_clear_ns": SoftwareCost(0.0, "the line the visit loaded"),
    "put_page_ns": SoftwareCost(0.0, "the struct page of the table page, hot across its entries"),
    "table_free_ns": SoftwareCost(1.0, "the freed table page's struct page and free-list line"),
    "resched_point_ns": SoftwareCost(0.0, "a flag test and a lock check, hot"),
    "host_page_free_ns": SoftwareCost(0.5, "the guest page's struct page, read in order"),
    "host_folio_free_ns": SoftwareCost(
        8.0, "512 struct pages streamed (free_tail_page_prepare), mostly prefetched"),
    "host_pmd_split_ns": SoftwareCost(8.0, "a PTE table written and 512 struct pages streamed"),
    "host_hugetlb_free_ns": SoftwareCost(1.0, "the folio's struct page and the pool's list"),
}


def cycles(param: str, anchor_ns: float) -> float:
    """Core cycles (at the reference ipc) of ``param`` whose D05 price is ``anchor_ns``."""
    c = SOFTWARE_COSTS[param]
    return (anchor_ns - c.lines * ANCHOR_DRAM_NS) * ANCHOR_FREQ_GHZ / CORE_CLASSES[ANCHOR_CORE].ipc


def derived_price(param: str, anchor_ns: float, *, freq_ghz: float, core_class: str,
                  dram_latency_ns: float) -> float:
    """The price of ``param`` on a machine: its cycles at the machine's clock and core class,
    plus its DRAM lines at the machine's latency."""
    c = SOFTWARE_COSTS[param]
    ipc = CORE_CLASSES[core_class].ipc
    return cycles(param, anchor_ns) / (freq_ghz * ipc) + c.lines * dram_latency_ns


def derivation_text(param: str, anchor_ns: float, *, freq_ghz: float, core_class: str,
                    dram_latency_ns: float) -> str:
    """The ``source`` of a derived price: its arithmetic, in one line."""
    c = SOFTWARE_COSTS[param]
    ipc = CORE_CLASSES[core_class].ipc
    return (f"derived: {cycles(param, anchor_ns):g} cycles / ({freq_ghz:g} GHz × ipc {ipc:g}, "
            f"{core_class}) + {c.lines:g} DRAM lines × {dram_latency_ns:g} ns "
            "(docs/model.md §7.1)")
