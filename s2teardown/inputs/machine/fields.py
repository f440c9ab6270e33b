"""The machine-file field table: every field of every section with its type, unit, meaning,
default and range.  Validation, defaults, the JSON Schema and docs/machine-format.md all
come from this one table (`load`, `reference`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from s2teardown.core.vocabulary import OPS
from s2teardown.inputs.machine.derive import CORE_CLASSES

#: The version of the file format this code reads.
SCHEMA_VERSION: Final = 1
#: What changed in each version (printed when a file's ``schema_version`` does not match).
CHANGES_SINCE: Final[dict[int, str]] = {
    1: "first version: topology, features, placement, parameters and optional prices, "
    "every value a {value, source, min, max, note} mapping",
}

#: Sections of a machine file, in order.  ``prices`` is optional.
GROUPS: Final[tuple[str, ...]] = ("topology", "features", "placement", "parameters", "prices")
#: Top-level keys.
TOP_KEYS: Final[tuple[str, ...]] = ("schema_version", "name", "description", *GROUPS)
#: Keys of one value mapping.
ENTRY_KEYS: Final[tuple[str, ...]] = ("value", "source", "min", "max", "note")
#: Kinds of source, i.e. the first word of ``source``.
SOURCE_KINDS: Final[dict[str, str]] = {
    "sourced": "read in a named source (`sourced: WikiChip Hi1616`)",
    "derived": "arithmetic on sourced values (`derived: 5 + 2*150/50`)",
    "calibrated": "fitted to measurements (`calibrated: P0 cover letter, 64 GiB in 9 s`)",
    "assumed": "a judgement with the range it may take (`assumed`, or `assumed: why`); "
    "a physical parameter needs `min` and `max`",
}
SOURCE_RE = re.compile(r"^(?:(sourced|derived|calibrated)\s*:\s*\S.*|(assumed)\b.*)$", re.S)

PLACEMENT_TOLERANCE: Final = 1e-9
#: Largest magnitude of a real-valued field (ns, GHz, fractions, ...).  Far beyond any real
#: machine (1e15 ns is 11 days per operation), and small enough that counts × prices, their
#: sums and their squares (uncertainty) stay finite: a bigger value would turn into inf/NaN.
MAX_REAL: Final = 1e15


class _Sentinel:
    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


#: ``Field.default`` of a field that must be given.
REQUIRED: Final = _Sentinel("REQUIRED")
#: ``Field.default`` of an optional field with no value when absent (a derived price).
DERIVED: Final = _Sentinel("DERIVED")

DEFAULT_SOURCE = "assumed: format default (docs/machine-format.md)"


@dataclass(frozen=True)
class Field:
    """One row of the field table."""

    group: str
    name: str
    type: str  # "int" | "float" | "choice" | "feature"
    unit: str  # "" | "ns" | "bytes" | "GHz" | "fraction"
    meaning: str
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    choices: tuple[Any, ...] | None = None
    default: Any = REQUIRED
    default_min: float | None = None
    default_max: float | None = None
    #: An ``assumed`` value must carry ``min`` and ``max`` (a physical parameter).
    ranged: bool = False

    @property
    def qualified(self) -> str:
        return f"{self.group}.{self.name}"

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def numeric(self) -> bool:
        return self.type in ("int", "float")

    def allowed(self) -> str:
        """The allowed values, in words (used in errors and docs)."""
        if self.type == "feature":
            return "true, false or 'unknown'"
        if self.choices is not None:
            return "one of " + ", ".join(
                repr(c) if isinstance(c, str) else str(c) for c in self.choices
            )
        what = "an integer" if self.type == "int" else "a finite number"
        lo, hi = self.minimum, self.maximum
        if lo is not None and hi is not None:
            return f"{what} in [{format_number(lo)}, {format_number(hi)}]"
        if lo is not None:
            return f"{what} {'>' if self.exclusive_minimum else '>='} {format_number(lo)}"
        return what

    def short_range(self) -> str:
        """The allowed values, for the docs table."""
        if self.type == "feature":
            return "true · false · unknown"
        if self.choices is not None:
            return " · ".join(str(c) for c in self.choices)
        lo, hi = self.minimum, self.maximum
        if lo is not None and hi is not None:
            return f"{format_number(lo)} … {format_number(hi)}"
        if lo is not None:
            return f"{'>' if self.exclusive_minimum else '≥'} {format_number(lo)}"
        return "any"


def format_number(x: float) -> str:
    if float(x).is_integer() and abs(x) < 1e16:
        return str(int(x))
    return repr(float(x))


def _f(group: str, name: str, type_: str, unit: str, meaning: str, **kw: Any) -> Field:
    return Field(group, name, type_, unit, meaning, **kw)


def _ns(
    name: str, meaning: str, default: float | None = None, lo: float = 0.0, hi: float = 0.0
) -> Field:
    if default is None:
        return Field("parameters", name, "float", "ns", meaning, minimum=0.0, ranged=True)
    return Field(
        "parameters",
        name,
        "float",
        "ns",
        meaning,
        minimum=0.0,
        ranged=True,
        default=float(default),
        default_min=lo,
        default_max=hi,
    )


def _feature(name: str, meaning: str) -> Field:
    return Field("features", name, "feature", "", meaning, default="unknown")


def _fraction(name: str, meaning: str) -> Field:
    return Field("placement", name, "float", "fraction", meaning, minimum=0.0, maximum=1.0)


#: How each priced operation (ops.OPS) is derived from the parameters (docs and prices.py).
OP_DERIVATION: Final[dict[str, str]] = {
    "notifier_call": "notifier_call_ns",
    "memslot_visit": "memslot_visit_ns",
    "entry_visit": "entry_visit_ns",
    "entry_clear": "entry_clear_ns",
    "put_page": "put_page_ns",
    "dsb_ishst": "dsb_ishst_ns",
    "dc_civac_line": "dc_civac_local_ns + dc_civac_node_extra_ns × same_socket"
    " + (2 · interconnect_latency_ns / cmo_outstanding) × (remote_socket"
    " + [coherence = snoop and sockets > 1] × (local_node + same_socket))",
    "dsb_sy": "dsb_sy_ns",
    "hvc": "hvc_ns",
    "sysreg_write": "sysreg_write_ns",
    "isb": "isb_ns",
    "tlbi_is": "tlbi_base_ns + tlbi_per_pe_ns × sockets × cores_per_socket"
    " + 2 · interconnect_latency_ns × [sockets > 1]",
    "dsb_ish": "dsb_ish_ns",
    "tlbi_vmall": "tlbi_is + tlbi_vmall_extra_ns",
    "tlbi_range": "tlbi_is + tlbi_range_extra_ns",
    "table_free": "table_free_ns",
    "resched_point": "resched_point_ns",
    "host_page_free": "host_page_free_ns",
    "host_folio_free": "host_folio_free_ns",
    "host_pmd_split": "host_pmd_split_ns",
    "host_hugetlb_free": "host_hugetlb_free_ns",
    "srcu_grace_period": "srcu_grace_period_ns",
    "line_zero": "entry_clear_ns",
    "slab_free": "entry_clear_ns + put_page_ns",
}
#: Operations priced by exactly one parameter.
ONE_TO_ONE: Final[dict[str, str]] = {
    op: f for op, f in OP_DERIVATION.items() if re.fullmatch(r"[a-z_]+_ns", f)
}

_MACHINE_FIELDS: tuple[Field, ...] = (
    # --- topology ---------------------------------------------------------------------------
    _f(
        "topology",
        "sockets",
        "int",
        "",
        "Sockets (packages). More than one puts the "
        "interconnect on the path of remote lines and of every broadcast TLBI.",
        minimum=1,
    ),
    _f(
        "topology",
        "cores_per_socket",
        "int",
        "",
        "Cores per socket: the PEs a broadcast TLBI "
        "must reach are sockets × cores_per_socket (SMT threads share their core's TLB and are "
        "not counted).",
        minimum=1,
    ),
    _f(
        "topology",
        "numa_nodes_per_socket",
        "int",
        "",
        "NUMA nodes (memory homes) per socket; with 1, placement.same_socket must be 0.",
        minimum=1,
        default=1,
    ),
    _f(
        "topology",
        "freq_ghz",
        "float",
        "GHz",
        "Core clock. Informational: every price is in ns.",
        minimum=0.0,
        exclusive_minimum=True,
    ),
    _f(
        "topology",
        "memory_bytes",
        "int",
        "bytes",
        "Installed memory: the largest guest the machine can hold.",
        minimum=1,
    ),
    _f(
        "topology",
        "llc_bytes",
        "int",
        "bytes",
        "Last-level cache per socket: bounds how much "
        "of a guest's memory can still be dirty in a cache.",
        minimum=1,
    ),
    _f(
        "topology",
        "core_class",
        "choice",
        "",
        "The core's microarchitecture: its per-clock throughput on kernel code prices the "
        "software operations a file leaves out (docs/model.md §7.1).",
        choices=tuple(CORE_CLASSES),
        default=DERIVED,
    ),
    _f(
        "topology",
        "dram_latency_ns",
        "float",
        "ns",
        "Idle load-to-use latency of a DRAM access: the cache lines the software operations "
        "wait for (docs/model.md §7.1).",
        minimum=0.0,
        exclusive_minimum=True,
        ranged=True,
        default=DERIVED,
    ),
    _f(
        "topology",
        "cache_line_bytes",
        "int",
        "bytes",
        "Data-cache line (CTR_EL0.DminLine): one DC CIVAC per line of mapped memory.",
        choices=(32, 64, 128, 256),
    ),
    _f(
        "topology",
        "coherence",
        "choice",
        "",
        "snoop: the maintenance of every uncached line "
        "crosses to the other socket(s) even when the line is homed locally; directory: only "
        "lines homed on another socket cross.",
        choices=("snoop", "directory"),
    ),
    _f(
        "topology",
        "cmo_outstanding",
        "float",
        "",
        "DC CIVAC operations one CPU keeps in "
        "flight: divides the round trip a line that crosses sockets pays.",
        minimum=1.0,
        ranged=True,
    ),
    _f(
        "topology",
        "tlbi_concurrency_slope",
        "float",
        "",
        "Concurrency (s2teardown plan): each further CPU issuing broadcast TLBIs at the same "
        "time adds this fraction of one TLBI's completion to every TLBI (DVM messages queue).",
        minimum=0.0,
        ranged=True,
        default=0.5,
        default_min=0.0,
        default_max=2.0,
    ),
    _f(
        "topology",
        "coherence_lines_per_us",
        "float",
        "lines/µs",
        "Concurrency (s2teardown plan): cache-maintenance operations the whole system's coherent "
        "interconnect resolves per microsecond; teardowns running at once share it.",
        minimum=0.0,
        exclusive_minimum=True,
        ranged=True,
        default=2000.0,
        default_min=500.0,
        default_max=8000.0,
    ),
    # --- features ---------------------------------------------------------------------------
    _feature(
        "vhe",
        "FEAT_VHE (ARMv8.1), host at EL2: no HVC per hyp call. unknown: "
        "taken as absent (nVHE, an HVC per call).",
    ),
    _feature(
        "s2fwb",
        "FEAT_S2FWB (ARMv8.4): Stage-2 forces write-back, so KVM does no data-"
        "cache maintenance. unknown: taken as absent (DC CIVAC per line).",
    ),
    _feature(
        "tlbi_range",
        "FEAT_TLBIRANGE (ARMv8.4): range TLBIs (KVM uses them from Linux "
        "v6.6). unknown: taken as absent.",
    ),
    _feature(
        "tlbi_repeat",
        "The CPU needs the old ARM64_WORKAROUND_REPEAT_TLBI (Qualcomm Falkor E1009, "
        "Cortex-A76 r0p0-r3p0 erratum 1286807): every broadcast TLBI is issued twice (counts "
        "double, not prices). unknown: taken as absent.",
    ),
    _feature(
        "tlbi_sync_erratum",
        "The CPU has erratum 4118414's class, 'Broken broadcast TLBI completion' (Neoverse "
        "N1/N2/V1/V2/V3, Cortex-A76 and later cores): kernels that carry the workaround "
        "(__repeat_tlbi_sync) add one TLBI and one DSB ISH after each completing DSB. unknown: "
        "taken as absent.",
    ),
    _feature(
        "speculative_at",
        "The CPU needs ARM64_WORKAROUND_SPECULATIVE_AT (Cortex-A55/A57/A72/A76 errata 1165522, "
        "1319367, 1530923): an nVHE guest-context switch also writes TCR_EL1 and adds ISBs. "
        "unknown: taken as absent.",
    ),
    # --- placement --------------------------------------------------------------------------
    _fraction(
        "local_node",
        "Default fraction of guest memory homed on the tearing-down CPU's "
        "own NUMA node (a workload may override placement).",
    ),
    _fraction("same_socket", "Default fraction homed on another NUMA node of the same socket."),
    _fraction("remote_socket", "Default fraction homed on another socket; 0 on one socket."),
    # --- parameters (θ) ---------------------------------------------------------------------
    _ns(
        "interconnect_latency_ns",
        "ONE-WAY latency of a coherence message between sockets "
        "(a round trip is twice it). 0 only on a single socket.",
    ),
    _ns("dc_civac_local_ns", "DC CIVAC per line, pipelined, line homed on the CPU's own node."),
    _ns(
        "dc_civac_node_extra_ns",
        "Extra per line homed on another node of the same socket.",
        2,
        0,
        10,
    ),
    _ns("dsb_sy_ns", "DSB SY ending each __flush_dcache_area call.", 50, 10, 500),
    _ns(
        "tlbi_base_ns",
        "Broadcast TLBI including its completion, beyond the per-PE term, on a single socket.",
    ),
    _ns(
        "tlbi_per_pe_ns",
        "Added to a broadcast TLBI per PE in the inner-shareable domain "
        "(sockets × cores_per_socket).",
    ),
    _ns(
        "tlbi_vmall_extra_ns",
        "Extra for TLBI VMALLS12E1IS (whole VMID) over a one-entry TLBI.",
        2500,
        400,
        9400,
    ),
    _ns(
        "tlbi_range_extra_ns",
        "Extra for one range TLBI (RIPAS2E1IS) over a one-entry TLBI.",
        50,
        0,
        500,
    ),
    _ns(
        "dsb_ish_ns",
        "DSB ISH after TLBIs, beyond the completion the TLBI price includes.",
        20,
        5,
        100,
    ),
    _ns("dsb_ishst_ns", "DSB ISHST after clearing a PTE (kvm_set_pte).", 10, 2, 50),
    _ns("isb_ns", "ISB.", 10, 2, 50),
    _ns(
        "sysreg_write_ns", "One system-register write (VTTBR_EL2 on the TLB-flush path).", 10, 2, 50
    ),
    _ns("hvc_ns", "nVHE host -> EL2 HVC round trip (not the much heavier full guest exit)."),
    _ns(
        "notifier_call_ns",
        "One MMU-notifier callback into KVM (srcu, mmu_lock, bookkeeping).",
        300,
        100,
        1000,
    ),
    _ns("memslot_visit_ns", "One memslot examined by handle_hva_to_gpa.", 10, 2, 100),
    _ns("entry_visit_ns", "Loading one page-table entry in the walk (empty or not).", 10, 5, 40),
    _ns("entry_clear_ns", "Clearing one leaf or table entry.", 10, 5, 40),
    _ns("put_page_ns", "put_page on the table page that held a cleared entry.", 20, 10, 80),
    _ns("table_free_ns", "Freeing one emptied table page.", 300, 100, 500),
    _ns("resched_point_ns", "One cond_resched_lock() that does not reschedule.", 20, 5, 200),
    _ns("host_page_free_ns", "The host frees one order-0 guest page (exit_mmap).", 150, 50, 500),
    _ns(
        "host_folio_free_ns",
        "The host frees one THP folio (order 9 with 4 KiB pages).",
        2000,
        1000,
        5000,
    ),
    _ns(
        "host_pmd_split_ns",
        "The host splits one PMD-mapped THP into PTEs (__split_huge_pmd: one PTE written per page).",
        3000,
        1000,
        10000,
    ),
    _ns(
        "host_hugetlb_free_ns",
        "The host returns one hugetlb folio to its pool (free_huge_folio; no buddy free).",
        500,
        200,
        2000,
    ),
    _ns(
        "srcu_grace_period_ns",
        "One synchronize_srcu() on the MMU-notifier SRCU: a wall-clock wait, no CPU "
        "(mmu_notifier_release and mmu_notifier_unregister each wait one at exit).",
        100000,
        10000,
        20000000,
    ),
)

_PRICE_FIELDS: tuple[Field, ...] = tuple(
    Field(
        "prices",
        op,
        "float",
        "ns",
        f"Explicit price of one `{op}`, replacing its derivation: {OP_DERIVATION[op]}.",
        minimum=0.0,
        ranged=True,
        default=DERIVED,
    )
    for op in OPS
)

#: The field table: every field of every section, in file order.
FIELDS: Final[tuple[Field, ...]] = _MACHINE_FIELDS + _PRICE_FIELDS
BY_GROUP: Final[dict[str, dict[str, Field]]] = {
    g: {f.name: f for f in FIELDS if f.group == g} for g in GROUPS
}
#: The physical parameters θ, in the fixed order of the linear model.
THETA_FIELDS: Final[tuple[str, ...]] = tuple(BY_GROUP["parameters"])
_VALUE_GROUPS: Final[tuple[str, ...]] = GROUPS[:-1]
BY_NAME: Final[dict[str, Field]] = {
    f.name: f for g in _VALUE_GROUPS for f in BY_GROUP[g].values()
}

if set(OP_DERIVATION) != set(OPS):  # pragma: no cover - guards edits of ops.py
    raise ImportError("machine.OP_DERIVATION must describe exactly ops.OPS")
if len(BY_NAME) != sum(len(BY_GROUP[g]) for g in _VALUE_GROUPS):  # pragma: no cover
    raise ImportError("field names must be unique across topology/features/placement/parameters")


