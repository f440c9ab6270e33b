"""Machine descriptions: one declarative field table drives validation, defaults, the JSON
Schema and the markdown reference (docs/machine-format.md).

A machine file (configs/machines/*.yaml) holds ``schema_version``, ``name``, ``description``
and the sections ``topology``, ``features``, ``placement``, ``parameters`` and optionally
``prices``.  Every value in a section is a mapping::

    interconnect_latency_ns: {value: 150, source: assumed, min: 80, max: 300, note: "..."}

whose ``source`` starts with ``sourced:``, ``derived:``, ``calibrated:`` or ``assumed`` (the
*kind*).  An assumed physical parameter carries the range it may take (``min``/``max``).
Each problem is one :class:`~s2teardown.errors.UserError` line
``FILE:LINE: section.field: expected ..., got ...``.

Public API: :data:`FIELDS`, :data:`THETA_FIELDS`, :class:`Field`, :class:`Param`,
:class:`Machine`, :func:`load_machine`, :func:`machine_from_text`, :func:`json_schema`,
:func:`machine_format_markdown`; ``python -m s2teardown.machine`` prints the markdown.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from .errors import UserError, describe
from .ops import OPS
from .resources import resolve_config
from .yamlio import (
    YamlDocument,
    check_name,
    check_schema_version,
    did_you_mean,
    line_of,
    one_line_text,
    read_yaml,
    read_yaml_text,
)

__all__ = [
    "CHANGES_SINCE",
    "FIELDS",
    "GROUPS",
    "ONE_TO_ONE",
    "OP_DERIVATION",
    "SCHEMA_VERSION",
    "SOURCE_KINDS",
    "THETA_FIELDS",
    "Field",
    "Machine",
    "Param",
    "json_schema",
    "load_machine",
    "machine_format_markdown",
    "machine_from_text",
]

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
_SOURCE_RE = re.compile(r"^(?:(sourced|derived|calibrated)\s*:\s*\S.*|(assumed)\b.*)$", re.S)

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

_DEFAULT_SOURCE = "assumed: format default (docs/machine-format.md)"


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
            return f"{what} in [{_num(lo)}, {_num(hi)}]"
        if lo is not None:
            return f"{what} {'>' if self.exclusive_minimum else '>='} {_num(lo)}"
        return what

    def short_range(self) -> str:
        """The allowed values, for the docs table."""
        if self.type == "feature":
            return "true · false · unknown"
        if self.choices is not None:
            return " · ".join(str(c) for c in self.choices)
        lo, hi = self.minimum, self.maximum
        if lo is not None and hi is not None:
            return f"{_num(lo)} … {_num(hi)}"
        if lo is not None:
            return f"{'>' if self.exclusive_minimum else '≥'} {_num(lo)}"
        return "any"


def _num(x: float) -> str:
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
        "The host frees one compound THP/hugetlb guest folio.",
        2000,
        1000,
        5000,
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
_BY_GROUP: Final[dict[str, dict[str, Field]]] = {
    g: {f.name: f for f in FIELDS if f.group == g} for g in GROUPS
}
#: The physical parameters θ, in the fixed order of the linear model.
THETA_FIELDS: Final[tuple[str, ...]] = tuple(_BY_GROUP["parameters"])
_VALUE_GROUPS: Final[tuple[str, ...]] = GROUPS[:-1]
_BY_NAME: Final[dict[str, Field]] = {
    f.name: f for g in _VALUE_GROUPS for f in _BY_GROUP[g].values()
}

if set(OP_DERIVATION) != set(OPS):  # pragma: no cover - guards edits of ops.py
    raise ImportError("machine.OP_DERIVATION must describe exactly ops.OPS")
if len(_BY_NAME) != sum(len(_BY_GROUP[g]) for g in _VALUE_GROUPS):  # pragma: no cover
    raise ImportError("field names must be unique across topology/features/placement/parameters")


# ---------------------------------------------------------------------------------------------
# the validated result


Value = bool | int | float | str


@dataclass(frozen=True)
class Param:
    """One validated value with its provenance.  ``line`` is None for defaults and what-ifs."""

    name: str
    value: Value
    source: str
    kind: str  # "sourced" | "derived" | "calibrated" | "assumed"
    min: float | None
    max: float | None
    note: str | None
    line: int | None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"value": self.value, "source": self.source, "kind": self.kind}
        if self.min is not None:
            out["min"] = self.min
        if self.max is not None:
            out["max"] = self.max
        if self.note is not None:
            out["note"] = self.note
        return out


@dataclass(frozen=True)
class Machine:
    """A validated machine description.  Sections map field names to :class:`Param`, in table
    order, with defaults filled in; ``prices`` holds only the explicitly given prices."""

    name: str
    description: str
    topology: Mapping[str, Param]
    features: Mapping[str, Param]
    placement: Mapping[str, Param]
    parameters: Mapping[str, Param]
    prices: Mapping[str, Param]
    path: str | None = None
    sha256: str | None = None
    text: str | None = None

    # -- lookup --------------------------------------------------------------------------------
    def section(self, group: str) -> Mapping[str, Param]:
        if group not in GROUPS:
            raise KeyError(group)
        sec: Mapping[str, Param] = getattr(self, group)
        return sec

    def param(self, field: str) -> Param:
        """The :class:`Param` of ``field`` (``sockets`` or ``topology.sockets``; prices only
        qualified, ``prices.hvc``).  KeyError if there is none."""
        if "." in field:
            group, name = field.split(".", 1)
            return self.section(group)[name]
        f = _BY_NAME.get(field)
        if f is None:
            raise KeyError(field)
        return self.section(f.group)[field]

    def value(self, field: str) -> Any:
        """The value of ``field``; features give True, False or ``"unknown"``."""
        return self.param(field).value

    def number(self, field: str) -> float:
        """The value of a numeric field as a float."""
        v = self.param(field).value
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise TypeError(f"{field} is not numeric")
        return float(v)

    def feature(self, name: str) -> bool:
        """Whether a feature is present; ``unknown`` counts as absent (see unknown_features)."""
        return self.features[name].value is True

    def unknown_features(self) -> list[str]:
        return [n for n, p in self.features.items() if p.value == "unknown"]

    def param_kind(self, field: str) -> str:
        return self.param(field).kind

    @property
    def pes(self) -> int:
        """PEs in the inner-shareable domain: sockets × cores_per_socket."""
        return int(self.number("sockets")) * int(self.number("cores_per_socket"))

    def theta(self) -> tuple[float, ...]:
        """The parameter values in THETA_FIELDS order."""
        return tuple(self.number(f) for f in THETA_FIELDS)

    def theta_bounds(self) -> tuple[tuple[float, float], ...]:
        """(min, max) of each parameter in THETA_FIELDS order; a point if no range is given."""
        out = []
        for f in THETA_FIELDS:
            p = self.parameters[f]
            v = self.number(f)
            out.append((v if p.min is None else p.min, v if p.max is None else p.max))
        return tuple(out)

    def assumed_fields(self) -> list[str]:
        """Qualified names of every value resting on an assumption (including defaults)."""
        return [
            f"{g}.{n}" for g in GROUPS for n, p in self.section(g).items() if p.kind == "assumed"
        ]

    @property
    def source_name(self) -> str:
        """What errors name as the file."""
        return self.path if self.path is not None else self.name

    def as_dict(self) -> dict[str, Any]:
        """A plain, JSON-ready description (for embedding in output files)."""
        out: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "name": self.name,
            "description": self.description,
        }
        for g in GROUPS:
            out[g] = {n: p.as_dict() for n, p in self.section(g).items()}
        out["path"] = self.path
        out["sha256"] = self.sha256
        return out

    # -- what-if -------------------------------------------------------------------------------
    def replace_parameter(self, name: str, value: float, source: str | None = None) -> Machine:
        """A copy with one physical value changed (a what-if): a parameter (``hvc_ns`` or
        ``parameters.hvc_ns``), ``cmo_outstanding``, or an explicit price (``prices.hvc``).
        The new value is a point (min = max = value), its source says what it replaced."""
        group, key = _what_if_target(name)
        f = _BY_GROUP[group][key]
        checked = _check_value(f, value, None, None, f.qualified)
        old = self.section(group).get(key)
        if source is None:
            was = "derived" if old is None else f"{old.value}, {old.source}"
            source = f"assumed: what-if (was {was})"
        kind = _source_kind(source, None, None, f.qualified)
        num = float(checked)
        new = Param(key, checked, source, kind, num, num, None if old is None else old.note, None)
        sec = dict(self.section(group))
        sec[key] = new
        if group == "prices":
            sec = {op: sec[op] for op in OPS if op in sec}
        changes: dict[str, Any] = {group: MappingProxyType(sec)}
        out = dataclasses.replace(self, **changes)
        _cross_check(out, None)
        return out


def _what_if_target(name: str) -> tuple[str, str]:
    if name.startswith("prices.") and name[7:] in _BY_GROUP["prices"]:
        return "prices", name[7:]
    key = name[len("parameters.") :] if name.startswith("parameters.") else name
    if key in _BY_GROUP["parameters"]:
        return "parameters", key
    key = name[len("topology.") :] if name.startswith("topology.") else name
    if key == "cmo_outstanding":
        return "topology", key
    names = [*THETA_FIELDS, "cmo_outstanding", *(f"prices.{op}" for op in OPS)]
    raise UserError(
        None,
        None,
        None,
        "a parameter (e.g. interconnect_latency_ns), cmo_outstanding or prices.<op>",
        describe(name),
        did_you_mean(name, names),
    )


# ---------------------------------------------------------------------------------------------
# validation


def _check_value(f: Field, raw: Any, file: str | None, line: int | None, where: str) -> Value:
    """``raw`` checked against ``f``'s type and range; the value with its type normalised."""

    def bad(hint: str | None = None) -> UserError:
        return UserError(file, line, where, f.allowed(), describe(raw), hint)

    if f.type == "feature":
        if raw is True or raw is False or raw == "unknown":
            return raw  # type: ignore[no-any-return]
        hint = did_you_mean(raw, ["true", "false", "unknown"]) if isinstance(raw, str) else None
        raise bad(hint)
    if f.type == "choice":
        choices = f.choices or ()
        if isinstance(raw, str) and raw in choices:
            return raw
        strs = [c for c in choices if isinstance(c, str)]
        raise bad(did_you_mean(raw, strs) if isinstance(raw, str) else None)
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise bad()
    if f.type == "int":
        if not isinstance(raw, int):
            if math.isfinite(raw) and float(raw).is_integer():
                raise bad(f"write {int(raw)} without a decimal point")
            raise bad()
        num: int | float = raw
    else:
        num = float(raw)  # a YAML integer fits in 64 bits (yamlio), so this cannot overflow
        if not math.isfinite(num):
            raise bad()
        if abs(num) > MAX_REAL:
            raise UserError(
                file, line, where, f"{f.allowed()}, at most {MAX_REAL:g}", describe(raw)
            )
    if f.choices is not None and num not in f.choices:
        raise bad()
    if f.minimum is not None and (num <= f.minimum if f.exclusive_minimum else num < f.minimum):
        raise bad()
    if f.maximum is not None and num > f.maximum:
        raise bad()
    return num


def _source_kind(source: Any, file: str | None, line: int | None, where: str) -> str:
    if isinstance(source, str):
        m = _SOURCE_RE.match(source.strip())
        if m:
            return m.group(1) or m.group(2)
    hint = None
    if isinstance(source, str) and source.strip():
        head = re.split(r"[\s:(]", source.strip(), maxsplit=1)[0]
        best = did_you_mean(head, list(SOURCE_KINDS))
        if best is not None:
            hint = best
        elif head in ("sourced", "derived", "calibrated"):
            hint = f"write '{head}: <where the number comes from>'"
    raise UserError(
        file,
        line,
        where,
        "a source: 'sourced: <where>', 'derived: <how>', 'calibrated: <against what>' or 'assumed'",
        describe(source),
        hint,
    )


def _unknown_key(
    file: str, line: int | None, where: str, key: Any, known: list[str], what: str
) -> UserError:
    expected = f"one of {', '.join(known)}" if len(known) <= 10 else f"a {what} field"
    return UserError(file, line, where, expected, f"unknown key {key!r}", did_you_mean(key, known))


def _entry(f: Field, raw: Any, file: str, keyline: int | None) -> Param:
    where = f.qualified
    if not isinstance(raw, dict):
        raise UserError(
            file,
            keyline,
            where,
            "a mapping {value: ..., source: ...}",
            describe(raw),
            None if isinstance(raw, dict) else f"write {{value: {_yaml_scalar(raw)}, source: ...}}",
        )
    for k in raw:
        if k not in ENTRY_KEYS:
            raise _unknown_key(
                file, line_of(raw, k, keyline), f"{where}.{k}", k, list(ENTRY_KEYS), "value"
            )
    if "value" not in raw:
        raise UserError(file, keyline, where, "a 'value' key", "none")
    if "source" not in raw:
        raise UserError(
            file,
            keyline,
            f"{where}.source",
            "a source: 'sourced: <where>', 'derived: <how>', 'calibrated: <against what>' "
            "or 'assumed'",
            "none",
        )
    vline = line_of(raw, "value", keyline)
    value = _check_value(f, raw["value"], file, vline, where)
    sline = line_of(raw, "source", keyline)
    kind = _source_kind(raw["source"], file, sline, f"{where}.source")
    source = str(raw["source"]).strip()
    bounds: dict[str, float | None] = {"min": None, "max": None}
    for b in ("min", "max"):
        if b not in raw:
            continue
        bline = line_of(raw, b, keyline)
        if not f.numeric:
            raise UserError(
                file,
                bline,
                f"{where}.{b}",
                f"no {b} (only numbers have ranges)",
                describe(raw[b]),
            )
        bounds[b] = float(_check_value(f, raw[b], file, bline, f"{where}.{b}"))
    lo, hi = bounds["min"], bounds["max"]
    if lo is not None and hi is not None and lo > hi:
        raise UserError(
            file,
            line_of(raw, "min", keyline),
            f"{where}.min",
            f"min <= max ({_num(hi)})",
            _num(lo),
        )
    if f.numeric and not isinstance(value, bool):
        num = float(value)
        if lo is not None and num < lo:
            raise UserError(file, vline, where, f"a value >= min ({_num(lo)})", _num(num))
        if hi is not None and num > hi:
            raise UserError(file, vline, where, f"a value <= max ({_num(hi)})", _num(num))
    if kind == "assumed" and f.ranged and (lo is None or hi is None):
        missing = (
            "neither min nor max"
            if lo is None and hi is None
            else ("no min" if lo is None else "no max")
        )
        raise UserError(
            file,
            keyline,
            where,
            "min and max for an assumed value (the range it may take)",
            missing,
        )
    note = raw.get("note")
    if note is not None and not isinstance(note, str):
        raise UserError(
            file, line_of(raw, "note", keyline), f"{where}.note", "a string", describe(note)
        )
    return Param(f.name, value, source, kind, lo, hi, note, keyline)


def _yaml_scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return repr(v)
    return "..."


def _default(f: Field) -> Param:
    lo = f.default_min
    hi = f.default_max
    return Param(
        f.name, f.default, _DEFAULT_SOURCE, "assumed", lo, hi, "not given in the file", None
    )


def _section(data: Mapping[str, Any], group: str, file: str) -> dict[str, Param]:
    fields = _BY_GROUP[group]
    top_line = line_of(data, group, 1)
    if group not in data:
        if group == "prices":
            return {}
        raise UserError(file, 1, group, f"a {group}: section (required)", f"no {group!r}")
    raw = data[group]
    if not isinstance(raw, dict):
        raise UserError(file, top_line, group, f"a mapping of {group} fields", describe(raw))
    for k in raw:
        if k not in fields:
            raise _unknown_key(
                file, line_of(raw, k, top_line), f"{group}.{k}", k, list(fields), group
            )
    out: dict[str, Param] = {}
    for name, f in fields.items():
        if name in raw:
            out[name] = _entry(f, raw[name], file, line_of(raw, name, top_line))
        elif f.required:
            raise UserError(
                file,
                top_line,
                f.qualified,
                f"a value ({f.allowed()}; required)",
                f"no {name!r} in {group}",
            )
        elif f.default is not DERIVED:
            out[name] = _default(f)
    return out


def _check_version(data: Mapping[str, Any], file: str) -> None:
    check_schema_version(data, file, SCHEMA_VERSION, CHANGES_SINCE)


def _plain_string(data: Mapping[str, Any], key: str, file: str, required: bool) -> str:
    if key not in data:
        if required:
            raise UserError(file, 1, key, "a non-empty string (required)", f"no {key!r}")
        return ""
    v = data[key]
    line = line_of(data, key, 1)
    if not isinstance(v, str) or (required and not v.strip()):
        raise UserError(
            file,
            line,
            key,
            "a non-empty string" if required else "a string",
            describe(v),
        )
    # the name is a table cell and part of messages; the description one line of a header
    return check_name(v, file, line, key) if required else one_line_text(v, file, line, key)


def _cross_check(m: Machine, file: str | None, placement_line: int | None = None) -> None:
    """Rules across fields (also re-run after a what-if)."""
    name = m.source_name if file is None else file
    sockets = int(m.number("sockets"))
    nodes = int(m.number("numa_nodes_per_socket"))
    pl = m.placement
    total = sum(float(p.value) for p in pl.values())
    if abs(total - 1.0) > PLACEMENT_TOLERANCE:
        first = placement_line
        if first is None:
            first = min((p.line for p in pl.values() if p.line is not None), default=None)
        terms = " + ".join(_num(float(p.value)) for p in pl.values())
        raise UserError(
            name, first, "placement", "fractions summing to 1", f"{terms} = {total:.12g}"
        )
    if sockets == 1 and float(pl["remote_socket"].value) != 0.0:
        p = pl["remote_socket"]
        raise UserError(
            name,
            p.line,
            "placement.remote_socket",
            "0 on a single-socket machine",
            describe(p.value),
        )
    if nodes == 1 and float(pl["same_socket"].value) != 0.0:
        p = pl["same_socket"]
        raise UserError(
            name,
            p.line,
            "placement.same_socket",
            "0 with one NUMA node per socket",
            describe(p.value),
        )
    ic = m.parameters["interconnect_latency_ns"]
    if sockets > 1 and float(ic.value) == 0.0:
        raise UserError(
            name,
            ic.line,
            "parameters.interconnect_latency_ns",
            f"a latency > 0 on a {sockets}-socket machine",
            "0",
        )


def _build(doc: YamlDocument, path: str | None) -> Machine:
    file = doc.name
    data = doc.data
    if not isinstance(data, dict):
        raise UserError(file, 1, None, "a mapping of machine fields", describe(data))
    _check_version(data, file)
    for k in data:
        if k not in TOP_KEYS:
            raise _unknown_key(file, line_of(data, k, 1), str(k), k, list(TOP_KEYS), "top-level")
    name = _plain_string(data, "name", file, required=True)
    description = _plain_string(data, "description", file, required=False)
    sections = {g: _section(data, g, file) for g in GROUPS}
    m = Machine(
        name=name,
        description=description,
        topology=MappingProxyType(sections["topology"]),
        features=MappingProxyType(sections["features"]),
        placement=MappingProxyType(sections["placement"]),
        parameters=MappingProxyType(sections["parameters"]),
        prices=MappingProxyType(sections["prices"]),
        path=path,
        sha256=doc.sha256,
        text=doc.text,
    )
    _cross_check(m, file, line_of(data, "placement"))
    return m


def load_machine(name_or_path: str | Path, *, flag: str | None = None) -> Machine:
    """Load and validate a machine file, or a bundled machine by name (``d05``)."""
    path = resolve_config(name_or_path, "machines", flag=flag)
    doc = read_yaml(path)
    return _build(doc, str(path))


def machine_from_text(text: str, name: str = "<string>") -> Machine:
    """Validate machine YAML ``text``; errors name ``name`` as the file."""
    return _build(read_yaml_text(text, name), None)


# ---------------------------------------------------------------------------------------------
# JSON Schema


def _value_schema(f: Field) -> dict[str, Any]:
    if f.type == "feature":
        return {"enum": [True, False, "unknown"]}
    if f.choices is not None:
        return {"enum": list(f.choices)}
    s: dict[str, Any] = {"type": "integer" if f.type == "int" else "number"}
    if f.minimum is not None:
        s["exclusiveMinimum" if f.exclusive_minimum else "minimum"] = f.minimum
    if f.maximum is not None:
        s["maximum"] = f.maximum
    return s


def _entry_schema(f: Field) -> dict[str, Any]:
    props: dict[str, Any] = {
        "value": _value_schema(f),
        "source": {"$ref": "#/$defs/source"},
    }
    if f.numeric:
        bound = _value_schema(f)
        bound["type"] = "number"
        props["min"] = bound
        props["max"] = dict(bound)
    props["note"] = {"type": "string"}
    unit = f" [{f.unit}]" if f.unit else ""
    s: dict[str, Any] = {
        "description": f"{f.meaning}{unit}",
        "type": "object",
        "properties": props,
        "required": ["value", "source"],
        "additionalProperties": False,
    }
    if f.default is not REQUIRED and f.default is not DERIVED:
        s["default"] = {"value": f.default, "source": _DEFAULT_SOURCE}
    if f.ranged:
        s["if"] = {"properties": {"source": {"pattern": "^assumed"}}}
        s["then"] = {"required": ["min", "max"]}
    return s


def json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of the machine file format."""
    props: dict[str, Any] = {
        "schema_version": {"const": SCHEMA_VERSION, "description": "Format version."},
        "name": {"type": "string", "minLength": 1, "description": "Short machine name."},
        "description": {"type": "string", "description": "One-line description."},
    }
    for g in GROUPS:
        fields = _BY_GROUP[g]
        props[g] = {
            "type": "object",
            "properties": {n: _entry_schema(f) for n, f in fields.items()},
            "required": [n for n, f in fields.items() if f.required],
            "additionalProperties": False,
        }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:s2teardown:machine:{SCHEMA_VERSION}",
        "title": "s2teardown machine description",
        "type": "object",
        "properties": props,
        "required": ["schema_version", "name", "topology", "features", "placement", "parameters"],
        "additionalProperties": False,
        "$defs": {
            "source": {
                "type": "string",
                "pattern": r"^\s*(?:(?:sourced|derived|calibrated)\s*:\s*\S|assumed\b)",
                "description": "; ".join(f"{k}: {v}" for k, v in SOURCE_KINDS.items()),
            }
        },
    }


# ---------------------------------------------------------------------------------------------
# markdown reference


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def _default_text(f: Field) -> str:
    if f.default is REQUIRED:
        return "required"
    if f.default is DERIVED:
        return "derived"
    if f.type == "feature":
        return str(f.default)
    if f.default_min is not None and f.default_max is not None:
        return f"{_num(f.default)} ({_num(f.default_min)} … {_num(f.default_max)})"
    return _num(f.default) if isinstance(f.default, int | float) else str(f.default)


_EXAMPLE = """\
schema_version: 1
name: d05
description: "Huawei D05: 2 x Hi1616 (Cortex-A72)"
topology:
  sockets: {value: 2, source: "sourced: WikiChip Hi1616; hip07.dtsi"}
  coherence: {value: directory, source: assumed, note: "home-node directory; not published"}
  cmo_outstanding: {value: 50, source: assumed, min: 20, max: 100}
  # ...
features:
  vhe: {value: false, source: "sourced: Cortex-A72 is ARMv8.0"}
  # ...
placement:
  local_node: {value: 0.25, source: "assumed: spread over 4 nodes"}
  same_socket: {value: 0.25, source: "assumed: spread over 4 nodes"}
  remote_socket: {value: 0.5, source: "assumed: spread over 4 nodes"}
parameters:
  interconnect_latency_ns: {value: 150, source: assumed, min: 80, max: 300}
  dc_civac_local_ns: {value: 5, source: assumed, min: 3, max: 8}
  # ...
prices:            # optional
  hvc: {value: 140, source: "calibrated: kvm-unit-tests hypercall loop"}
"""


def machine_format_markdown() -> str:
    """docs/machine-format.md (generated; a test keeps the committed file equal to this)."""
    out: list[str] = []
    w = out.append
    w(f"# Machine description format (schema_version {SCHEMA_VERSION})")
    w("")
    w(
        "<!-- Generated by `python -m s2teardown.machine > docs/machine-format.md` from the field "
        "table in s2teardown/machine.py. Do not edit by hand. -->"
    )
    w("")
    w("A machine file (`configs/machines/*.yaml`, or any path given to `--machine`) describes")
    w("the hardware a teardown runs on: its topology, the CPU features that change the kernel's")
    w("code path, where guest memory lives by default, and the physical parameters θ that")
    w("price each primitive operation. Bundled machines are named without the suffix")
    w("(`--machine d05`).")
    w("")
    w("## Layout")
    w("")
    w("An illustrative excerpt (the bundled `configs/machines/d05.yaml` is complete):")
    w("")
    w("```yaml")
    w(_EXAMPLE.rstrip("\n"))
    w("```")
    w("")
    w(f"Top-level keys: `schema_version` (a plain integer, must be {SCHEMA_VERSION}), `name`")
    w("(a plain, non-empty string), `description` (a plain string, optional), then the sections")
    w("`topology`, `features`, `placement`, `parameters` and the optional `prices`. Nothing")
    w("else is allowed.")
    w("")
    w("## Every value: value, source, range, note")
    w("")
    w("Every value in a section is a mapping:")
    w("")
    w("| key | meaning |")
    w("|---|---|")
    w(
        "| `value` | the value (required); plain numbers, base units as the key says (`_ns`, "
        "`_bytes`) |"
    )
    w("| `source` | where it comes from (required); starts with one of the kinds below |")
    w(
        "| `min`, `max` | the range the value may take (numbers only; min ≤ value ≤ max); "
        "required when an `assumed` value is a physical parameter (sampled by the uncertainty "
        "analysis) |"
    )
    w("| `note` | free text: what the number rests on |")
    w("")
    w("| source kind | meaning |")
    w("|---|---|")
    for k, v in SOURCE_KINDS.items():
        w(f"| `{k}` | {_md(v)} |")
    w("")
    w(
        "A field left out takes its default, marked `assumed` (source "
        f"`{_DEFAULT_SOURCE}`); every human view marks numbers that rest on an assumption."
    )
    w("")
    w("## Fields")
    headings = {
        "topology": "Topology",
        "features": "Features",
        "placement": "Placement",
        "parameters": "Parameters θ (all in ns, finite, ≥ 0)",
        "prices": "Prices (optional explicit overrides, ns)",
    }
    intros = {
        "topology": "",
        "features": "Each feature is `true`, `false` or `unknown`. An unknown feature is taken "
        "as absent (`false`) and every estimate says so.",
        "placement": "The machine's default placement of guest memory relative to the "
        "tearing-down CPU. A workload may give its own.",
        "parameters": "The physical parameters θ, in this fixed order (the model's vector). "
        "An `assumed` parameter needs `min` and `max`; the default column gives a default's "
        "range in brackets.",
        "prices": "A price given here replaces its derivation from θ (every view says so). "
        "Keys are the operation names of `s2teardown/ops.py`; absent means derived. An "
        "`assumed` price needs `min` and `max`.",
    }
    for g in GROUPS:
        w("")
        w(f"### {headings[g]}: `{g}:`")
        w("")
        if intros[g]:
            w(intros[g])
            w("")
        w("| field | type | unit | allowed | default | meaning |")
        w("|---|---|---|---|---|---|")
        for f in _BY_GROUP[g].values():
            typ = {
                "int": "integer",
                "float": "number",
                "choice": "string",
                "feature": "bool/unknown",
            }[f.type]
            w(
                f"| `{f.name}` | {typ} | {f.unit or '–'} | {_md(f.short_range())} "
                f"| {_md(_default_text(f))} | {_md(f.meaning)} |"
            )
    w("")
    w("## Rules across fields")
    w("")
    w("- `placement`: `local_node + same_socket + remote_socket = 1` (± 1e-9);")
    w("  on a 1-socket machine `remote_socket` must be 0; with one NUMA node per socket")
    w("  `same_socket` must be 0.")
    w("- `interconnect_latency_ns` may be 0 only on a single socket.")
    w("- `min ≤ value ≤ max`, and `min`/`max` obey the field's own range.")
    w('- Unknown keys (with a "did you mean"), duplicate keys, YAML tags, anchors and aliases')
    w("  are errors; booleans are not numbers; `.nan`/`.inf` are rejected.")
    w("")
    w("## From parameters to prices")
    w("")
    w("Each primitive operation's price (ns) is a fixed linear map of θ, set by the topology,")
    w("the placement and the coherence; brackets `[…]` are 1 when the condition holds, else 0.")
    w("A price under `prices:` replaces its row.")
    w("")
    w("| operation | price (ns) |")
    w("|---|---|")
    for op in OPS:
        w(f"| `{op}` | {_md(OP_DERIVATION[op])} |")
    w("")
    w("How to read the two derived rows:")
    w("")
    w("- **DC CIVAC line.** A large guest's lines are almost never cached, but the maintenance")
    w("  must still be resolved by the line's home. A line homed on the CPU's own node costs")
    w("  `dc_civac_local_ns`; on another node of the socket, `dc_civac_node_extra_ns` more; on")
    w("  another socket it pays a round trip `2 · interconnect_latency_ns`, divided by the")
    w("  `cmo_outstanding` operations a CPU keeps in flight. With `coherence: snoop` on several")
    w("  sockets even a locally homed line must snoop the other socket and pays it too.")
    w("- **Broadcast TLBI** (completion included): a base, a term per PE that must acknowledge,")
    w("  and on several sockets one round trip across the interconnect. VMALLS12E1IS and a range")
    w("  TLBI add their own extra. `tlbi_repeat` doubles the count of TLBIs, not their price.")
    w("- Features change counts, not prices: with `s2fwb` there is no DC CIVAC, with `vhe` no")
    w("  HVC per hyp call, with `tlbi_range` range TLBIs replace per-entry ones.")
    w("")
    w("Worked example, the bundled D05 (2 sockets, directory coherence, placement 0.25 / 0.25 /")
    w("0.5, `dc_civac_local_ns` 5, `dc_civac_node_extra_ns` 2, `interconnect_latency_ns` 150,")
    w("`cmo_outstanding` 50, 64 PEs, `tlbi_base_ns` 150, `tlbi_per_pe_ns` 2.5):")
    w("")
    w("    DC CIVAC line = 5 + 2 × 0.25 + (2 · 150 / 50) × 0.5 = 5 + 0.5 + 3 = 8.5 ns")
    w("                  (= 0.25 × 5 + 0.25 × 7 + 0.5 × 11: local, other node, other socket)")
    w("    broadcast TLBI = 150 + 2.5 × 64 + 2 · 150 = 610 ns")
    w("")
    w("## Schema versions")
    w("")
    w("A file whose `schema_version` differs is refused with what changed since its version.")
    w("")
    for n, text in sorted(CHANGES_SINCE.items()):
        w(f"- {n}: {_md(text)}")
    w("")
    w("A JSON Schema (draft 2020-12) of this format is `s2teardown.machine.json_schema()`.")
    return "\n".join(out) + "\n"


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.stdout.write(machine_format_markdown())
