"""Reading and checking a machine file into a `Machine` (docs/machine-format.md).

Schema and the markdown reference (docs/machine-format.md).

A machine file (configs/machines/*.yaml) holds ``schema_version``, ``name``, ``description``
and the sections ``topology``, ``features``, ``placement``, ``parameters`` and optionally
``prices``.  Every value in a section is a mapping::

    interconnect_latency_ns: {value: 150, source: assumed, min: 80, max: 300, note: "..."}

whose ``source`` starts with ``sourced:``, ``derived:``, ``calibrated:`` or ``assumed`` (the
*kind*).  An assumed physical parameter carries the range it may take (``min``/``max``).
Each problem is one :class:`~s2teardown.errors.UserError` line
``FILE:LINE: section.field: expected ..., got ...``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from s2teardown.core.vocabulary import OPS
from s2teardown.errors import UserError, describe
from s2teardown.inputs.bundled import resolve_config
from s2teardown.inputs.check import unknown_key
from s2teardown.inputs.machine.derive import (
    SOFTWARE_COSTS,
    derivation_text,
    derived_price,
)
from s2teardown.inputs.machine.fields import (
    BY_GROUP,
    BY_NAME,
    CHANGES_SINCE,
    DEFAULT_SOURCE,
    DERIVED,
    ENTRY_KEYS,
    GROUPS,
    MAX_REAL,
    PLACEMENT_TOLERANCE,
    SCHEMA_VERSION,
    SOURCE_KINDS,
    SOURCE_RE,
    THETA_FIELDS,
    TOP_KEYS,
    Field,
    format_number,
)
from s2teardown.inputs.yamlio import (
    YamlDocument,
    check_name,
    check_schema_version,
    did_you_mean,
    line_of,
    one_line_text,
    read_yaml,
    read_yaml_text,
)

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
    #: What-ifs applied to the file's values (``--set``), as ``name = value (was …)``.
    what_if: tuple[str, ...] = ()

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
        f = BY_NAME.get(field)
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
        f = BY_GROUP[group][key]
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
        was_text = "derived" if old is None else f"{old.value}"
        changes: dict[str, Any] = {
            group: MappingProxyType(sec),
            "what_if": (*self.what_if, f"{f.qualified if group == 'prices' else key} = {checked} (was {was_text})"),
        }
        out = _derive_prices(dataclasses.replace(self, **changes))
        _cross_check(out, None)
        return out


def apply_sets(machine: Machine, sets: Sequence[str], flag: str = "--set") -> Machine:
    """The machine with each ``PARAM=VALUE`` what-if applied in order (one-line errors naming
    ``flag``): a parameter (``hvc_ns``), ``cmo_outstanding``, or an explicit price (``prices.hvc``)."""
    for item in sets:
        name, sep, raw = item.partition("=")
        name, raw = name.strip(), raw.strip()
        if not sep or not name or not raw:
            raise UserError(flag, None, None, "PARAM=VALUE, e.g. interconnect_latency_ns=300",
                            describe(item))
        try:
            value = float(raw)
        except ValueError:
            raise UserError(flag, None, None, f"a number after {name}=", describe(raw)) from None
        try:
            machine = machine.replace_parameter(name, value)
        except UserError as exc:
            expected = f"{exc.field}: {exc.expected}" if exc.field else exc.expected
            raise UserError(flag, None, None, expected, exc.got, exc.hint) from None
    return machine


#: Topology values a what-if may change: the CMO depth, and the clock and DRAM latency the
#: derived software prices follow (docs/model.md §7.1).
_TOPOLOGY_WHAT_IFS = ("cmo_outstanding", "freq_ghz", "dram_latency_ns")


def _what_if_target(name: str) -> tuple[str, str]:
    if name.startswith("prices.") and name[7:] in BY_GROUP["prices"]:
        return "prices", name[7:]
    key = name[len("parameters.") :] if name.startswith("parameters.") else name
    if key in BY_GROUP["parameters"]:
        return "parameters", key
    key = name[len("topology.") :] if name.startswith("topology.") else name
    if key in _TOPOLOGY_WHAT_IFS:
        return "topology", key
    names = [*THETA_FIELDS, *_TOPOLOGY_WHAT_IFS, *(f"prices.{op}" for op in OPS)]
    raise UserError(
        None,
        None,
        None,
        "a parameter (e.g. interconnect_latency_ns), cmo_outstanding, freq_ghz, dram_latency_ns or prices.<op>",
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
        m = SOURCE_RE.match(source.strip())
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
            raise unknown_key(
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
            f"min <= max ({format_number(hi)})",
            format_number(lo),
        )
    if f.numeric and not isinstance(value, bool):
        num = float(value)
        if lo is not None and num < lo:
            raise UserError(file, vline, where, f"a value >= min ({format_number(lo)})", format_number(num))
        if hi is not None and num > hi:
            raise UserError(file, vline, where, f"a value <= max ({format_number(hi)})", format_number(num))
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
        f.name, f.default, DEFAULT_SOURCE, "assumed", lo, hi, "not given in the file", None
    )


def _section(data: Mapping[str, Any], group: str, file: str) -> dict[str, Param]:
    fields = BY_GROUP[group]
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
            raise unknown_key(
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
        terms = " + ".join(format_number(float(p.value)) for p in pl.values())
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
            raise unknown_key(file, line_of(data, k, 1), str(k), k, list(TOP_KEYS), "top-level")
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
    m = _derive_prices(m)
    _cross_check(m, file, line_of(data, "placement"))
    return m


def _derive_prices(m: Machine) -> Machine:
    """``m`` with every software price the file leaves out (or that was derived before a what-if)
    derived from its core class, clock and DRAM latency (docs/model.md §7.1); unchanged when the
    file states no core class or no DRAM latency."""
    cls, lat = m.topology.get("core_class"), m.topology.get("dram_latency_ns")
    if cls is None or lat is None:
        return m
    freq, core, dram = m.number("freq_ghz"), str(cls.value), float(lat.value)
    params = dict(m.parameters)
    for name in SOFTWARE_COSTS:
        old = params[name]
        # a format default, or derived before a what-if; stated in the file or pinned by a
        # what-if, it wins
        if old.line is not None or not (old.source == DEFAULT_SOURCE or old.kind == "derived"):
            continue
        f = BY_GROUP["parameters"][name]
        anchor = float(f.default)
        value = derived_price(name, anchor, freq_ghz=freq, core_class=core, dram_latency_ns=dram)
        scale = value / anchor
        lo = None if f.default_min is None else f.default_min * scale
        hi = None if f.default_max is None else f.default_max * scale
        text = derivation_text(name, anchor, freq_ghz=freq, core_class=core, dram_latency_ns=dram)
        params[name] = Param(name, value, text, "derived", lo, hi, SOFTWARE_COSTS[name].why, None)
    return dataclasses.replace(m, parameters=MappingProxyType(params))


def load_machine(name_or_path: str | Path, *, flag: str | None = None) -> Machine:
    """Load and validate a machine file, or a bundled machine by name (``d05``)."""
    path = resolve_config(name_or_path, "machines", flag=flag)
    doc = read_yaml(path)
    return _build(doc, str(path))


def machine_from_text(text: str, name: str = "<string>") -> Machine:
    """Validate machine YAML ``text``; errors name ``name`` as the file."""
    return _build(read_yaml_text(text, name), None)


