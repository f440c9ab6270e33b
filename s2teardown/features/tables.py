"""Cost tables: a matrix of estimates as a versioned JSON document, recomputed and compared in CI.

``s2teardown table SPEC.yaml -o costs.json`` evaluates every row of a *table spec* (machines ×
VM sizes × backings × events; every selected variant in each row) and writes one JSON document
that embeds everything needed to recompute it: the spec, and the YAML text and sha256 of every
machine and variants file used.  ``s2teardown check costs.json`` recomputes from the inputs as
they are *now*, says what changed (model version, input files, rows), and compares; ``s2teardown
diff A.json B.json`` compares two tables.  docs/ci.md shows the CI job.

A table spec (YAML, e.g. configs/tables/example.yaml)::

    schema_version: 1
    description: "what this table guards"       # optional
    machines: [d05, emag, ./my-host.yaml]        # bundled names, or paths relative to the spec
    vm_bytes: [1073741824, 68719476736]          # plain byte counts
    backings:                                    # optional, default [[{leaf_bytes: 2097152}]]
      - [{leaf_bytes: 2097152, percent: 100}]
      - [{leaf_bytes: 2097152, percent: 90}, {leaf_bytes: 4096, percent: 10}]
    events: [exit, munmap]                       # optional, default [exit]
    variants: all                                # optional: all, or a list of names
    variants_file: my-variants.yaml              # optional, relative to the spec
    preempt: none                                # optional: none | voluntary | full
    watchdog_thresh_s: 10                        # optional
    rcu_stall_timeout_s: 21                      # optional: 3 … 300

Relative paths in the table (the spec's own path) are relative to the table's directory, and
paths in the spec are relative to the spec's directory, so a table committed beside its spec
keeps working in any checkout.  Every problem with an input is a one-line
:class:`~s2teardown.errors.UserError` (exit 2); tables that cannot be compared raise
:class:`~s2teardown.errors.NothingComparable` (exit 3).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

from s2teardown import __version__
from s2teardown.core.detectors import DEFAULT_RCU_STALL_TIMEOUT_S, RCU_STALL_TIMEOUT_RANGE_S
from s2teardown.core.model import MODEL_VERSION
from s2teardown.core.vocabulary import EVENTS, HOST_PHASES, PHASES
from s2teardown.errors import NothingComparable, UserError, describe
from s2teardown.features.estimate import (
    PREEMPT_MODES,
    LockHold,
    evaluate_workloads,
    holds_warnings,
    lock_holds,
    variant_kernel,
)
from s2teardown.inputs.bundled import bundled_names, bundled_root
from s2teardown.inputs.check import unknown_key
from s2teardown.inputs.files import FileKind, is_file, read_user_file
from s2teardown.inputs.machine import Machine, load_machine
from s2teardown.inputs.units import backing_label, format_ns, format_size
from s2teardown.inputs.variants import Variant, VariantSet, load_variants
from s2teardown.inputs.workload import EVENTS_SUPPORTED, Workload
from s2teardown.inputs.yamlio import YAML_FILE, did_you_mean, line_of, read_yaml, refuse_binary

__all__ = [
    "DEFAULT_ATOL_NS",
    "DEFAULT_RTOL",
    "DOCUMENT",
    "FORMAT_VERSION",
    "SPEC_SCHEMA_VERSION",
    "TableDiff",
    "Entry",
    "InputChange",
    "TableSpec",
    "build_table",
    "compare",
    "load_spec",
    "read_table",
    "require_comparable",
    "spec_from_table",
]

#: Version of the cost-table JSON layout (not of the model: that is ``model_version``).
FORMAT_VERSION: Final = 1
#: Largest cost table read (`check`, `diff`), and how it is read (inputs.files).
MAX_TABLE_BYTES: Final = 64 << 20
TABLE_FILE: Final = FileKind("a cost table file", "an existing cost table", MAX_TABLE_BYTES)
#: The ``document`` marker of a cost table (an estimate's JSON is not a table).
DOCUMENT: Final = "s2teardown cost table"
#: Version of the table-spec YAML format.
SPEC_SCHEMA_VERSION: Final = 1
#: What changed in each version of the spec format (shown when a spec's schema_version differs).
SPEC_CHANGES_SINCE: Final[dict[int, str]] = {
    1: "first version: description, machines, vm_bytes, backings, events, variants, "
    "variants_file, preempt and watchdog_thresh_s (later, still version 1: the optional "
    "rcu_stall_timeout_s)",
}
DEFAULT_RTOL: Final = 0.01
DEFAULT_ATOL_NS: Final = 1000.0

Backing = tuple[tuple[int, float], ...]
Key = tuple[str, int, Backing, str]

_SPEC_KEYS: Final = (
    "schema_version",
    "description",
    "machines",
    "vm_bytes",
    "backings",
    "events",
    "variants",
    "variants_file",
    "preempt",
    "watchdog_thresh_s",
    "rcu_stall_timeout_s",
)
_DEFAULT_BACKING: Final[Backing] = ((2 << 20, 100.0),)
#: Lock-hold thresholds, lowest first: the kinds a variant's longest stretch may exceed.


# ---------------------------------------------------------------------------------------------
# the spec


@dataclass(frozen=True)
class TableSpec:
    """A validated table spec.  ``base_dir`` is where relative input paths are resolved;
    ``source`` and ``prefix`` are what errors name (the spec file, or the table embedding it)."""

    machines: tuple[str, ...]
    vm_bytes: tuple[int, ...]
    backings: tuple[Backing, ...]
    events: tuple[str, ...]
    variants: tuple[str, ...] | None  # None: all
    variants_file: str | None
    preempt: str
    watchdog_thresh_s: float
    description: str
    base_dir: Path
    source: str
    prefix: str = ""
    lines: Mapping[str, int | None] = field(default_factory=dict)
    text: str = ""
    sha256: str = ""
    rcu_stall_timeout_s: float = DEFAULT_RCU_STALL_TIMEOUT_S

    @property
    def row_count(self) -> int:
        return len(self.machines) * len(self.vm_bytes) * len(self.backings) * len(self.events)

    def error(self, fld: str, expected: str, got: str, hint: str | None = None) -> UserError:
        return UserError(self.source, self.lines.get(fld), self.prefix + fld, expected, got, hint)

    def as_dict(self) -> dict[str, Any]:
        """The normalised spec (defaults filled in), itself a valid spec."""
        return {
            "schema_version": SPEC_SCHEMA_VERSION,
            "description": self.description,
            "machines": list(self.machines),
            "vm_bytes": list(self.vm_bytes),
            "backings": [_backing_json(b) for b in self.backings],
            "events": list(self.events),
            "variants": "all" if self.variants is None else list(self.variants),
            "variants_file": self.variants_file,
            "preempt": self.preempt,
            "watchdog_thresh_s": self.watchdog_thresh_s,
            "rcu_stall_timeout_s": self.rcu_stall_timeout_s,
        }


def _backing_json(b: Backing) -> list[dict[str, Any]]:
    return [{"leaf_bytes": leaf, "percent": pct} for leaf, pct in b]


#: Integers (in a spec or a table) must fit in 64 bits, as yamlio requires of YAML: a JSON
#: integer has no bound, and a huge one would overflow any float arithmetic on it.
_INT64_MAX = (1 << 63) - 1


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and -_INT64_MAX - 1 <= v <= _INT64_MAX


def _is_num(v: Any) -> bool:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return False
    return _is_int(v) if isinstance(v, int) else math.isfinite(v)


def _describe(v: Any) -> str:
    """`describe`, with a huge integer shortened (the message stays one short line)."""
    if isinstance(v, int) and not isinstance(v, bool) and not _is_int(v):
        text = str(v)
        return f"{text[:10]}...{text[-6:]} (an integer of {len(text)} digits)"
    return describe(v)


class _Checker:
    """Validation helpers that name ``source:LINE: prefix+field``."""

    def __init__(self, source: str, prefix: str) -> None:
        self.source = source
        self.prefix = prefix
        self.lines: dict[str, int | None] = {}

    def line(self, container: Any, key: Any) -> int | None:
        ln = line_of(container, key)
        if ln is None:
            own = getattr(container, "line", None)
            ln = own if isinstance(own, int) and own > 0 else None
        return ln

    def fail(
        self, container: Any, key: Any, fld: str, expected: str, got: str, hint: str | None = None
    ) -> UserError:
        return UserError(
            self.source, self.line(container, key), self.prefix + fld, expected, got, hint
        )

    def as_list(self, data: Mapping[str, Any], key: str, what: str) -> list[Any]:
        v = data[key]
        if isinstance(v, list):
            if not v:
                raise self.fail(data, key, key, f"a non-empty list of {what}", "an empty list")
            return v
        if isinstance(v, dict) or v is None:
            raise self.fail(data, key, key, f"a list of {what}", _describe(v))
        return [v]  # one value stands for a one-item list


def parse_spec(
    data: Any, *, source: str, base_dir: Path, prefix: str = "", text: str = "", sha256: str = ""
) -> TableSpec:
    """Validate spec ``data`` (from YAML, with lines, or from a table's JSON, without)."""
    ck = _Checker(source, prefix)
    if not isinstance(data, dict):
        raise UserError(
            source,
            1 if not prefix else None,
            prefix.rstrip(".") or None,
            "a mapping with schema_version, machines and vm_bytes",
            _describe(data),
        )
    for k in data:
        if k not in _SPEC_KEYS:
            raise unknown_key(ck.source, ck.line(data, k), ck.prefix + str(k), k, _SPEC_KEYS,
                              "table-spec")
    for k in ("schema_version", "machines", "vm_bytes"):
        if k not in data:
            raise ck.fail(data, None, k, "a value (required)", "nothing")
    sv = data["schema_version"]
    if not _is_int(sv) or sv != SPEC_SCHEMA_VERSION:
        hint = None
        if _is_int(sv) and sv > SPEC_SCHEMA_VERSION:
            hint = (
                f"the spec is for a newer s2teardown; this one reads version {SPEC_SCHEMA_VERSION}"
                f" ({SPEC_CHANGES_SINCE[SPEC_SCHEMA_VERSION]})"
            )
        elif _is_int(sv):
            hint = f"changed since version {sv}: " + "; ".join(
                f"v{n}: {SPEC_CHANGES_SINCE[n]}"
                for n in range(max(sv, 0) + 1, SPEC_SCHEMA_VERSION + 1)
                if n in SPEC_CHANGES_SINCE
            )
        raise ck.fail(
            data, "schema_version", "schema_version", str(SPEC_SCHEMA_VERSION), _describe(sv), hint
        )
    desc = data.get("description") or ""
    if not isinstance(desc, str):
        raise ck.fail(data, "description", "description", "a string", _describe(desc))

    machines: list[str] = []
    items = ck.as_list(data, "machines", "machine names or paths")
    for i, m in enumerate(items):
        fld = f"machines[{i}]"
        ck.lines[fld] = ck.line(items, i) or ck.line(data, "machines")
        if not isinstance(m, str) or not m.strip():
            raise ck.fail(
                items, i, fld, "a bundled machine name or a path to a machine file", _describe(m)
            )
        if m in machines:
            raise ck.fail(items, i, fld, "each machine once", f"a second {m!r}")
        machines.append(m)

    sizes: list[int] = []
    items = ck.as_list(data, "vm_bytes", "sizes in bytes")
    for i, v in enumerate(items):
        fld = f"vm_bytes[{i}]"
        ck.lines[fld] = ck.line(items, i) or ck.line(data, "vm_bytes")
        if not _is_int(v) or v <= 0:
            hint = (
                "YAML files take plain byte counts: 64 GiB = 68719476736"
                if isinstance(v, str)
                else None
            )
            raise ck.fail(items, i, fld, "a positive whole number of bytes", _describe(v), hint)
        if v in sizes:
            raise ck.fail(items, i, fld, "each size once", f"a second {v}")
        sizes.append(v)

    backings: list[Backing] = []
    if data.get("backings") is None:
        backings.append(_DEFAULT_BACKING)
    else:
        items = ck.as_list(data, "backings", "backing mixes")
        for j, mix in enumerate(items):
            fld = f"backings[{j}]"
            ck.lines[fld] = ck.line(items, j) or ck.line(data, "backings")
            b = _parse_backing(ck, items, j, mix)
            if b in backings:
                raise ck.fail(items, j, fld, "each backing once", "a repeated mix")
            backings.append(b)

    events: list[str] = []
    if data.get("events") is None:
        events.append("exit")
    else:
        items = ck.as_list(data, "events", "events")
        for i, ev in enumerate(items):
            fld = f"events[{i}]"
            ck.lines[fld] = ck.line(items, i) or ck.line(data, "events")
            if ev not in EVENTS_SUPPORTED or not isinstance(ev, str):
                raise ck.fail(
                    items,
                    i,
                    fld,
                    "one of " + ", ".join(EVENTS_SUPPORTED),
                    _describe(ev),
                    did_you_mean(ev, EVENTS_SUPPORTED) if isinstance(ev, str) else None,
                )
            if ev in events:
                raise ck.fail(items, i, fld, "each event once", f"a second {ev!r}")
            events.append(ev)

    variants: tuple[str, ...] | None = None
    raw_v = data.get("variants", "all")
    if raw_v is not None and raw_v != "all":
        names: list[str] = []
        items = ck.as_list(data, "variants", "variant names")
        for i, n in enumerate(items):
            fld = f"variants[{i}]"
            ck.lines[fld] = ck.line(items, i) or ck.line(data, "variants")
            if not isinstance(n, str) or not n.strip():
                raise ck.fail(
                    items, i, fld, "a variant name, or `all` for the whole list", _describe(n)
                )
            if n not in names:
                names.append(n)
        variants = tuple(names)

    vfile = data.get("variants_file")
    ck.lines["variants_file"] = ck.line(data, "variants_file")
    if vfile is not None and (not isinstance(vfile, str) or not vfile.strip()):
        raise ck.fail(
            data,
            "variants_file",
            "variants_file",
            "a path to a variants YAML file",
            _describe(vfile),
        )

    preempt = data.get("preempt", "none")
    if preempt not in PREEMPT_MODES or not isinstance(preempt, str):
        raise ck.fail(
            data, "preempt", "preempt", "one of " + ", ".join(PREEMPT_MODES), _describe(preempt)
        )
    thresh = data.get("watchdog_thresh_s", 10.0)
    if not _is_num(thresh) or not 0 < thresh < 1e6:
        raise ck.fail(
            data,
            "watchdog_thresh_s",
            "watchdog_thresh_s",
            "a positive number of seconds",
            _describe(thresh),
        )
    rcu_timeout = data.get("rcu_stall_timeout_s", DEFAULT_RCU_STALL_TIMEOUT_S)
    lo, hi = RCU_STALL_TIMEOUT_RANGE_S
    if not _is_num(rcu_timeout) or float(rcu_timeout) != int(rcu_timeout) or not lo <= rcu_timeout <= hi:
        # rcu_jiffies_till_stall_check (kernel/rcu/tree_stall.h) clamps the kernel's value to 3..300
        raise ck.fail(
            data,
            "rcu_stall_timeout_s",
            "rcu_stall_timeout_s",
            f"a whole number of seconds {lo}..{hi}",
            _describe(rcu_timeout),
        )

    for i, vm in enumerate(sizes):
        for j, b in enumerate(backings):
            try:
                Workload(vm_bytes=vm, backing=b).check()
            except ValueError as exc:
                flag, _, rest = str(exc).partition(": ")
                key, fld = (
                    ("backings", f"backings[{j}]")
                    if flag == "backing"
                    else ("vm_bytes", f"vm_bytes[{i}]")
                )
                at: Any = j if flag == "backing" else i
                container: Any = data.get(key)
                if not isinstance(container, list):
                    container, at = data, key
                if rest.startswith("expected "):
                    exp, got = (
                        rest[len("expected ") :],
                        (str(vm) if flag == "vm" else backing_label(b)),
                    )
                else:
                    exp, got = "a VM size and backing that can be laid out", rest
                hint = f"with backings[{j}] = {backing_label(b)}" if key == "vm_bytes" else None
                raise ck.fail(container, at, fld, exp, got, hint) from None

    return TableSpec(
        machines=tuple(machines),
        vm_bytes=tuple(sizes),
        backings=tuple(backings),
        events=tuple(events),
        variants=variants,
        variants_file=vfile,
        preempt=str(preempt),
        watchdog_thresh_s=float(thresh),
        rcu_stall_timeout_s=float(rcu_timeout),
        description=desc,
        base_dir=base_dir,
        source=source,
        prefix=prefix,
        lines=dict(ck.lines),
        text=text,
        sha256=sha256,
    )


def _parse_backing(ck: _Checker, items: list[Any], j: int, mix: Any) -> Backing:
    fld = f"backings[{j}]"
    parts = [mix] if isinstance(mix, dict) else mix
    if not isinstance(parts, list) or not parts:
        raise ck.fail(items, j, fld, "a list of {leaf_bytes, percent} mappings", _describe(mix))
    out: list[tuple[int, float]] = []
    for k, part in enumerate(parts):
        where = f"{fld}[{k}]" if isinstance(mix, list) else fld
        cont, key = (parts, k) if isinstance(mix, list) else (items, j)
        if not isinstance(part, dict):
            raise ck.fail(cont, key, where, "a mapping {leaf_bytes: N, percent: P}", _describe(part))
        for pk in part:
            if pk not in ("leaf_bytes", "percent"):
                raise ck.fail(
                    part,
                    pk,
                    f"{where}.{pk}",
                    "leaf_bytes or percent",
                    f"unknown key {pk!r}",
                    did_you_mean(pk, ("leaf_bytes", "percent")),
                )
        leaf: Any = part.get("leaf_bytes")
        if not _is_int(leaf) or leaf <= 0:
            hint = (
                "YAML files take plain byte counts: 2 MiB = 2097152"
                if isinstance(leaf, str)
                else None
            )
            raise ck.fail(
                part,
                "leaf_bytes",
                f"{where}.leaf_bytes",
                "a leaf size in bytes (4096, 2097152, 1073741824)",
                _describe(leaf),
                hint,
            )
        if "percent" not in part and len(parts) > 1:
            raise ck.fail(
                part,
                "leaf_bytes",
                f"{where}.percent",
                "a percentage for every part of a mix",
                "none",
            )
        pct = part.get("percent", 100.0)
        if not _is_num(pct) or pct <= 0:
            raise ck.fail(
                part, "percent", f"{where}.percent", "a positive percentage", _describe(pct)
            )
        if any(leaf == s for s, _ in out):
            raise ck.fail(
                part,
                "leaf_bytes",
                f"{where}.leaf_bytes",
                "each leaf size once in a mix",
                f"a second {leaf}",
            )
        out.append((int(leaf), float(pct)))
    total = sum(p for _, p in out)
    if abs(total - 100.0) > 1e-6:
        raise ck.fail(items, j, fld, "percentages summing to 100", f"{total:g}")
    return tuple(out)


def load_spec(path: str | Path) -> TableSpec:
    """Read and validate a table spec file (one-line FILE:LINE errors)."""
    doc = read_yaml(path)
    base = Path(path).parent
    return parse_spec(
        doc.data,
        source=str(path),
        base_dir=base if str(base) else Path("."),
        text=doc.text,
        sha256=doc.sha256,
    )


# ---------------------------------------------------------------------------------------------
# inputs and evaluation


@dataclass(frozen=True)
class _Inputs:
    machines: tuple[tuple[str, Machine, bool], ...]  # (ref, machine, bundled)
    variant_set: VariantSet
    chosen: tuple[Variant, ...]
    missing: tuple[str, ...]  # selected names the variants no longer define (check only)


def _resolve_machine(spec: TableSpec, i: int, ref: str) -> tuple[Machine, bool]:
    p = Path(ref)
    cand = p if p.is_absolute() else spec.base_dir / p
    if is_file(cand):
        m = load_machine(cand)
        return m, _is_bundled(cand)
    names = bundled_names("machines")
    stem = ref.removesuffix(".yaml")
    if "/" not in ref and "\\" not in ref and stem in names:
        return load_machine(stem), True
    where = "" if p.is_absolute() else f" (resolved to {cand})"
    raise spec.error(
        f"machines[{i}]",
        "a machine file (relative to the spec's directory) or a bundled machine name ("
        + ", ".join(names)
        + ")",
        f"{ref!r}{where}, which is neither",
        did_you_mean(Path(stem).name, names),
    )


def _is_bundled(path: Path) -> bool:
    try:
        path.resolve().relative_to(bundled_root().resolve())
    except ValueError:
        return False
    return True


def _resolve_inputs(spec: TableSpec, *, missing_ok: bool) -> _Inputs:
    machines = tuple((ref, *_resolve_machine(spec, i, ref)) for i, ref in enumerate(spec.machines))
    vfile: Path | None = None
    if spec.variants_file is not None:
        p = Path(spec.variants_file)
        vfile = p if p.is_absolute() else spec.base_dir / p
        if not is_file(vfile):
            raise spec.error(
                "variants_file",
                "an existing variants file (relative to the spec's directory)",
                f"{spec.variants_file!r} (resolved to {vfile})",
            )
    vs = load_variants(vfile)
    missing: list[str] = []
    if spec.variants is None:
        chosen = list(vs.variants)
    else:
        chosen = []
        for i, name in enumerate(spec.variants):
            try:
                v = vs.lookup(name, "variants")
            except UserError as err:
                if missing_ok:
                    missing.append(name)
                    continue
                raise err.replace(
                    file=spec.source,
                    line=spec.lines.get(f"variants[{i}]"),
                    field=f"{spec.prefix}variants[{i}]",
                ) from None
            if v not in chosen:
                chosen.append(v)
    return _Inputs(machines, vs, tuple(chosen), tuple(missing))


def row_label(key: Key) -> str:
    machine, vm, backing, event = key
    return f"{machine} · {format_size(vm)} · {backing_label(backing)} · {event}"


def _lock_holds(
    var: Variant, pool: Sequence[Variant], stretch: float, locked: float, spec: TableSpec
) -> tuple[dict[str, Any] | None, list[dict[str, Any]], list[str]]:
    """Every detector a variant's longest stretch trips (api.lock_holds): the latest-firing one as
    ``lock_hold`` (the field tables have always had), all of them as ``lock_holds``, and the
    warning lines."""
    holds = lock_holds([var.name], [stretch], [locked], preempt=spec.preempt,
                       watchdog_thresh_s=spec.watchdog_thresh_s,
                       rcu_stall_timeout_s=spec.rcu_stall_timeout_s,
                       kernels=[variant_kernel(var, pool)])
    lines = [holds_warnings([h])[0] for h in holds]
    every = [{**h.as_dict(), "warning": line} for h, line in zip(holds, lines, strict=True)]
    if not holds:
        return None, [], []
    worst: LockHold = holds[-1]
    return ({"threshold": worst.threshold, "limit_ns": worst.limit_ns, "stretch_ns": worst.stretch_ns,
             "mmu_lock_held": worst.mmu_lock_held, "message": lines[-1]}, every, lines)


def _rows(spec: TableSpec, inputs: _Inputs) -> list[dict[str, Any]]:
    combos = [(vm, b, ev) for vm in spec.vm_bytes for b in spec.backings for ev in spec.events]
    variants = list(inputs.chosen)
    rows: list[dict[str, Any]] = []
    for ref, m, _ in inputs.machines:
        if not variants:
            for vm, b, ev in combos:
                key: Key = (ref, vm, b, ev)
                rows.append(
                    {
                        "key": key_json(key),
                        "label": row_label(key),
                        "machine_name": m.name,
                        "warnings": [],
                        "variants": [],
                    }
                )
            continue
        ws = [Workload(vm_bytes=vm, backing=b, event=ev) for vm, b, ev in combos]
        try:
            bd = evaluate_workloads(m, variants, ws, with_segments=True)
        except ValueError as exc:  # the spec checks sizes; this is a machine-specific limit
            raise spec.error(
                f"machines[{spec.machines.index(ref)}]", "a workload that can be laid out", str(exc)
            ) from None
        events = np.asarray(bd.events)
        time = np.asarray(bd.time_ns)
        s2 = np.asarray(bd.stage2_ns)
        stretch = None if bd.stretch_ns is None else np.asarray(bd.stretch_ns)
        locked = None if bd.stretch_locked is None else np.asarray(bd.stretch_locked)
        mem = int(m.value("memory_bytes"))
        for s, (vm, b, ev) in enumerate(combos):
            key = (ref, vm, b, ev)
            warnings: list[str] = []
            if vm > mem:
                warnings.append(
                    f"the VM ({format_size(vm)}) is larger than {m.name}'s installed memory "
                    f"({format_size(mem)})"
                )
            per_v: list[dict[str, Any]] = []
            for v, var in enumerate(variants):
                st = 0.0 if stretch is None else float(stretch[s, v])
                lk = 0.0 if locked is None else float(locked[s, v])
                hold, holds, lines = _lock_holds(var, inputs.variant_set.variants, st, lk, spec)
                per_v.append(
                    {
                        "name": var.name,
                        "events": {e: int(events[s, v, i]) for i, e in enumerate(EVENTS)},
                        "phases_ns": {p: float(time[s, v, i]) for i, p in enumerate(PHASES)},
                        "stage2_ns": float(s2[s, v]),
                        "host_ns": float(np.asarray(bd.host_ns)[s, v]),
                        "end_to_end_ns": float(np.asarray(bd.end_to_end_ns)[s, v]),
                        "wall_ns": float(np.asarray(bd.wall_ns)[s, v]),
                        "longest_stretch_ns": st,
                        "longest_locked_stretch_ns": lk,
                        "lock_hold": hold,
                        "lock_holds": holds,
                        "warnings": lines,
                    }
                )
            rows.append(
                {
                    "key": key_json(key),
                    "label": row_label(key),
                    "machine_name": m.name,
                    "warnings": warnings,
                    "variants": per_v,
                }
            )
    return rows


def key_json(key: Key) -> dict[str, Any]:
    machine, vm, b, ev = key
    return {"machine": machine, "vm_bytes": vm, "backing": _backing_json(b), "event": ev}


def relative_path(path: Path, start: Path) -> str:
    """``path`` relative to ``start`` (absolute if there is no relative path)."""
    try:
        return os.path.relpath(path, start)
    except ValueError:  # another drive (Windows)
        return str(path.resolve())


def _display(path: Path, bundled: bool, table_dir: Path) -> str:
    if bundled:
        try:
            return "<bundled>/" + path.resolve().relative_to(bundled_root().resolve()).as_posix()
        except ValueError:  # pragma: no cover - _is_bundled said so
            pass
    return relative_path(path, table_dir)


def build_table(
    spec: TableSpec, *, table_dir: Path, spec_path: str, missing_ok: bool = False,
    embed_inputs: bool = False,
) -> dict[str, Any]:
    """Evaluate every row of ``spec`` and return the cost-table document.

    ``spec_path`` is how the table names its spec (relative to ``table_dir``, the directory the
    table is written to).  With ``missing_ok``, variant names the variants no longer define are
    left out (``check``: they show as removed) instead of being an error.  Inputs are named by
    path and sha256; ``embed_inputs`` adds their text (``null`` otherwise), from which ``check``
    shows a diff of a changed input.
    """
    inputs = _resolve_inputs(spec, missing_ok=missing_ok)
    machines = []
    for ref, m, bundled in inputs.machines:
        path = Path(m.path or ref)
        machines.append(
            {
                "ref": ref,
                "name": m.name,
                "bundled": bundled,
                "path": _display(path, bundled, table_dir),
                "sha256": m.sha256 or "",
                "text": (m.text or "") if embed_inputs else None,
            }
        )
    variant_docs = []
    for i, doc in enumerate(inputs.variant_set.documents):
        path = Path(doc.name)
        bundled = i == 0
        variant_docs.append(
            {
                "role": "bundled" if bundled else "variants_file",
                "ref": None if bundled else spec.variants_file,
                "path": _display(path, bundled and _is_bundled(path), table_dir),
                "sha256": doc.sha256,
                "text": doc.text if embed_inputs else None,
            }
        )
    return {
        "format_version": FORMAT_VERSION,
        "document": DOCUMENT,
        "tool": "s2teardown",
        "tool_version": __version__,
        "model_version": MODEL_VERSION,
        "numpy_version": np.__version__,
        "spec": {
            "path": spec_path,
            "sha256": spec.sha256,
            "text": spec.text if embed_inputs else None,
            "data": spec.as_dict(),
        },
        "inputs": {"machines": machines, "variants": variant_docs},
        "variants": [v.name for v in inputs.chosen],
        "missing_variants": list(inputs.missing),
        "rows": _rows(spec, inputs),
    }




# ---------------------------------------------------------------------------------------------
# reading a table back


_STR, _INT, _NUM, _BOOL = "a string", "an integer", "a finite number", "true or false"


def _schema() -> dict[str, Any]:
    lock = (
        "?",
        {
            "threshold": _STR,
            "limit_ns": _NUM,
            "stretch_ns": _NUM,
            "mmu_lock_held": _BOOL,
            "message": _STR,
        },
    )
    variant = {
        "name": _STR,
        "events": ("map", _INT),
        "phases_ns": ("map", _NUM),
        "stage2_ns": _NUM,
        # the host side and the totals (docs/model.md §14); tables written before lack them
        "host_ns": ("optional", _NUM),
        "end_to_end_ns": ("optional", _NUM),
        "wall_ns": ("optional", _NUM),
        "longest_stretch_ns": _NUM,
        "longest_locked_stretch_ns": _NUM,
        "lock_hold": lock,
        # every detector tripped (docs/model.md §11.5); tables written before it lack the key
        "lock_holds": (
            "optional",
            [
                {
                    "threshold": _STR,
                    "limit_ns": _NUM,
                    "stretch_ns": _NUM,
                    "mmu_lock_held": _BOOL,
                    "message": _STR,
                    "first_fire_ns": _NUM,
                    "on_by_default": _BOOL,
                    "warning": _STR,
                }
            ],
        ),
        "warnings": [_STR],
    }
    key = {
        "machine": _STR,
        "vm_bytes": _INT,
        "backing": [{"leaf_bytes": _INT, "percent": _NUM}],
        "event": _STR,
    }
    return {
        "tool_version": _STR,
        "model_version": _INT,
        "numpy_version": _STR,
        "spec": {"path": _STR, "sha256": _STR, "text": ("?", _STR), "data": ("map", None)},
        "inputs": {
            "machines": [
                {
                    "ref": _STR,
                    "name": _STR,
                    "bundled": _BOOL,
                    "path": _STR,
                    "sha256": _STR,
                    "text": ("?", _STR),
                }
            ],
            "variants": [
                {"role": _STR, "ref": ("?", _STR), "path": _STR, "sha256": _STR, "text": ("?", _STR)}
            ],
        },
        "variants": [_STR],
        "rows": [
            {
                "key": key,
                "label": _STR,
                "machine_name": _STR,
                "warnings": [_STR],
                "variants": [variant],
            }
        ],
    }


def _check_type(value: Any, schema: Any, where: str, file: str) -> None:
    def bad(expected: str) -> UserError:
        return UserError(
            file,
            None,
            where,
            expected,
            _describe(value),
            "a damaged table: regenerate it with `s2teardown table`",
        )

    if isinstance(schema, str):
        ok = {
            _STR: isinstance(value, str),
            _INT: _is_int(value),
            _NUM: _is_num(value),
            _BOOL: isinstance(value, bool),
        }[schema]
        if not ok:
            raise bad(schema)
    elif isinstance(schema, tuple) and schema[0] == "?":
        if value is not None:
            _check_type(value, schema[1], where, file)
    elif isinstance(schema, tuple) and schema[0] == "map":
        if not isinstance(value, dict):
            raise bad("a mapping")
        if schema[1] is not None:
            for k, v in value.items():
                _check_type(v, schema[1], f"{where}.{k}", file)
    elif isinstance(schema, list):
        if not isinstance(value, list):
            raise bad("a list")
        for i, item in enumerate(value):
            _check_type(item, schema[0], f"{where}[{i}]", file)
    else:
        if not isinstance(value, dict):
            raise bad("a mapping")
        for k, sub in schema.items():
            if isinstance(sub, tuple) and sub[0] == "optional":
                if k in value:
                    _check_type(value[k], sub[1], f"{where}.{k}" if where else k, file)
                continue
            if k not in value:
                raise UserError(
                    file,
                    None,
                    f"{where}.{k}" if where else k,
                    "a value (required)",
                    "nothing",
                    "a damaged table: regenerate it with `s2teardown table`",
                )
            _check_type(value[k], sub, f"{where}.{k}" if where else k, file)


def read_table(path: str | Path) -> dict[str, Any]:
    """Read and check a cost table: UserError (exit 2) if unreadable, corrupt, truncated or of the
    wrong shape; NothingComparable (exit 3) if written in another ``format_version``."""
    name = str(path)
    raw = read_user_file(path, TABLE_FILE)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(
            name,
            None,
            None,
            "a JSON cost table (UTF-8 text)",
            f"invalid byte 0x{raw[exc.start]:02x} at offset {exc.start}",
        ) from None
    if not text.strip():
        raise UserError(name, 1, None, "a JSON cost table", "an empty file")
    refuse_binary(text, name, "a JSON cost table (text)")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        # truncated: the parser ran out of text (not: it met something that is not JSON)
        # (an unterminated string runs to the end: strict JSON has no raw newline in a string)
        truncated = text.lstrip().startswith(("{", "[")) and (
            exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string")
        )
        raise UserError(
            name,
            exc.lineno,
            None,
            "a complete JSON cost table",
            f"invalid JSON ({exc.msg}) at column {exc.colno}",
            "the file ends early: truncated?" if truncated else "corrupt?",
        ) from None
    except RecursionError:
        raise UserError(
            name, None, None, "a JSON cost table", "nesting too deep to read", "corrupt?"
        ) from None
    except ValueError:  # an integer of more than 4300 digits (int's conversion limit)
        raise UserError(
            name, None, None, "a JSON cost table", "an integer of thousands of digits", "corrupt?"
        ) from None
    if not isinstance(doc, dict):
        raise UserError(name, None, None, "a JSON object (a cost table)", _describe(doc))
    fv = doc.get("format_version")
    if "format_version" not in doc:
        raise UserError(
            name,
            None,
            "format_version",
            "a value (required)",
            "nothing",
            "not a cost table? write one with `s2teardown table`",
        )
    if not _is_int(fv):
        raise UserError(name, None, "format_version", "an integer", _describe(fv))
    if doc.get("document") != DOCUMENT:
        got = (
            "an estimate document"
            if doc.get("command") == "estimate"
            else _describe(doc.get("document"))
        )
        raise UserError(
            name, None, "document", f"{DOCUMENT!r} (written by `s2teardown table`)", got
        )
    if fv != FORMAT_VERSION:
        raise NothingComparable(
            name,
            None,
            "format_version",
            f"{FORMAT_VERSION} (the cost-table format this s2teardown {__version__} reads)",
            str(fv),
            "regenerate the table with `s2teardown table`",
        )
    _check_type(doc, _schema(), "", name)
    return doc


def spec_from_table(doc: Mapping[str, Any], table_path: str | Path) -> TableSpec:
    """The spec embedded in a table, resolving relative inputs as when it was written."""
    tp = Path(table_path)
    table_dir = tp.parent if str(tp.parent) else Path(".")
    sp = Path(doc["spec"]["path"])
    base = (sp if sp.is_absolute() else table_dir / sp).parent
    return parse_spec(
        doc["spec"]["data"],
        source=str(table_path),
        base_dir=base,
        prefix="spec.data.",
        text=doc["spec"]["text"] or "",
        sha256=doc["spec"]["sha256"],
    )


def spec_file_note(doc: Mapping[str, Any], table_path: str | Path) -> str | None:
    """A note when the spec file on disk no longer matches the spec embedded in the table."""
    tp = Path(table_path)
    sp = Path(doc["spec"]["path"])
    full = sp if sp.is_absolute() else (tp.parent if str(tp.parent) else Path(".")) / sp
    try:  # the path comes from the table: read it as any user file (a FIFO, /dev/zero: no note)
        now = hashlib.sha256(read_user_file(full, YAML_FILE)).hexdigest()
    except UserError:
        return None
    if now == doc["spec"]["sha256"]:
        return None
    return (
        f"the spec file {doc['spec']['path']} changed since the table was written; check uses the "
        "spec embedded in the table (run `s2teardown table` to apply the new spec)"
    )


# ---------------------------------------------------------------------------------------------
# comparing


@dataclass(frozen=True)
class InputChange:
    """One input file of the old table vs the new one: changed, added, removed or unchanged."""

    kind: str  # "machine" | "variants file" | "spec"
    ref: str
    status: str
    old_path: str | None
    new_path: str | None
    old_sha256: str | None
    new_sha256: str | None
    diff: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.kind} {self.ref}"


@dataclass(frozen=True)
class Entry:
    """One (row, variant) compared."""

    key: Key
    row: str
    variant: str
    status: str  # worse | better | unchanged | added | removed
    old_ns: float | None
    new_ns: float | None
    reasons: tuple[str, ...] = ()

    @property
    def delta_ns(self) -> float | None:
        if self.old_ns is None or self.new_ns is None:
            return None
        return self.new_ns - self.old_ns

    @property
    def percent(self) -> float | None:
        return percent_change(self.old_ns, self.new_ns)


def percent_change(old: float | None, new: float | None) -> float | None:
    if old is None or new is None:
        return None
    if old == 0:
        return 0.0 if new == 0 else None
    return (new - old) / abs(old) * 100.0


@dataclass(frozen=True)
class TableDiff:
    old_name: str
    new_name: str
    old_model: int
    new_model: int
    old_tool: str
    new_tool: str
    old_numpy: str
    new_numpy: str
    inputs: tuple[InputChange, ...]
    notes: tuple[str, ...]
    entries: tuple[Entry, ...]
    rows_common: int
    rows_added: tuple[str, ...]
    rows_removed: tuple[str, ...]
    rtol: float
    atol: float

    @property
    def compared(self) -> list[Entry]:
        return [e for e in self.entries if e.old_ns is not None and e.new_ns is not None]

    @property
    def regressions(self) -> list[Entry]:
        return [e for e in self.entries if e.status == "worse"]

    @property
    def regression(self) -> bool:
        return bool(self.regressions)

    def row_status(self) -> dict[str, str]:
        """Per row label: worse > better > added/removed > unchanged over its variants."""
        out: dict[str, str] = {}
        rank = {"unchanged": 0, "added": 1, "removed": 1, "better": 2, "worse": 3}
        for e in self.entries:
            cur = out.get(e.row)
            if cur is None or rank[e.status] > rank[cur]:
                out[e.row] = e.status
        for r in self.rows_added:
            out[r] = "added"
        for r in self.rows_removed:
            out[r] = "removed"
        return out

    def totals(self) -> tuple[list[tuple[str, float, float]], tuple[float, float]]:
        """Stage-2 totals over the compared entries: per variant (old, new), and overall."""
        per: dict[str, list[float]] = {}
        for e in self.compared:
            acc = per.setdefault(e.variant, [0.0, 0.0])
            acc[0] += e.old_ns or 0.0
            acc[1] += e.new_ns or 0.0
        rows = [(v, a[0], a[1]) for v, a in per.items()]
        return rows, (sum(r[1] for r in rows), sum(r[2] for r in rows))


def _key_of(row: Mapping[str, Any]) -> Key:
    k = row["key"]
    return (
        str(k["machine"]),
        int(k["vm_bytes"]),
        tuple((int(b["leaf_bytes"]), float(b["percent"])) for b in k["backing"]),
        str(k["event"]),
    )


def _unified(
    old: str, new: str, old_label: str, new_label: str, limit: int = 200
) -> tuple[str, ...]:
    lines = [
        ln.rstrip("\n")
        for ln in difflib.unified_diff(
            old.splitlines(keepends=True), new.splitlines(keepends=True), old_label, new_label, n=1
        )
    ]
    if len(lines) > limit:
        lines = [*lines[:limit], f"... ({len(lines) - limit} more diff lines)"]
    return tuple(lines)


def _input_changes(
    old: Mapping[str, Any], new: Mapping[str, Any], old_name: str, new_name: str
) -> list[InputChange]:
    out: list[InputChange] = []

    def pair(kind: str, ref: str, a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> None:
        if a is None and b is None:  # pragma: no cover
            return
        if a is None:
            assert b is not None
            out.append(InputChange(kind, ref, "added", None, b["path"], None, b["sha256"]))
        elif b is None:
            out.append(InputChange(kind, ref, "removed", a["path"], None, a["sha256"], None))
        elif a["sha256"] != b["sha256"]:
            name = Path(str(b["path"])).name
            diff = (
                _unified(a["text"], b["text"], f"{name} (in {old_name})", f"{name} ({new_name})")
                if a.get("text") is not None and b.get("text") is not None
                else ("(no diff: the table names its inputs by sha256 only; `table --embed-inputs`"
                      " keeps their text)",)
            )
            out.append(
                InputChange(
                    kind, ref, "changed", a["path"], b["path"], a["sha256"], b["sha256"], diff
                )
            )
        else:
            out.append(
                InputChange(kind, ref, "unchanged", a["path"], b["path"], a["sha256"], b["sha256"])
            )

    om = {m["ref"]: m for m in old["inputs"]["machines"]}
    nm = {m["ref"]: m for m in new["inputs"]["machines"]}
    for ref in [*om, *(r for r in nm if r not in om)]:
        pair("machine", ref, om.get(ref), nm.get(ref))

    def vkey(d: Mapping[str, Any]) -> str:
        return "<bundled>/variants.yaml" if d["role"] == "bundled" else str(d["ref"])

    ov = {vkey(d): d for d in old["inputs"]["variants"]}
    nv = {vkey(d): d for d in new["inputs"]["variants"]}
    for k in [*ov, *(r for r in nv if r not in ov)]:
        pair("variants file", k, ov.get(k), nv.get(k))
    if old["spec"]["sha256"] != new["spec"]["sha256"]:
        pair("spec", str(new["spec"]["path"]), old["spec"], new["spec"])
    return out


def format_delta_ns(d: float) -> str:
    return ("+" if d > 0 else "") + format_ns(d)


def format_percent(p: float | None) -> str:
    if p is None:
        return "n/a"
    if p != 0 and abs(p) < 0.1:
        return f"{p:+.2g}%"
    return f"{p:+.1f}%"


def _end_to_end(v: Mapping[str, Any]) -> float:
    """A table variant's end-to-end CPU total: stored, or Stage-2 plus its host phases."""
    if "end_to_end_ns" in v:
        return float(v["end_to_end_ns"])
    ph = v["phases_ns"]
    return float(v["stage2_ns"]) + sum(float(ph.get(p, 0.0)) for p in HOST_PHASES)


#: What `check --gate` holds against the tolerances: every phase, the Stage-2 total, the
#: stretch and exact counts (``phases``, the default); only the Stage-2 total (``stage2``); only
#: Stage-2 plus the host side (``end-to-end``, CPU: the host phases of docs/model.md §14; a
#: table written before the host side existed counts its ``host_free`` phase).  Changes outside
#: the gate are still reported.
GATES: Final = ("phases", "stage2", "end-to-end")


def _compare_variant(
    a: Mapping[str, Any], b: Mapping[str, Any], rtol: float, atol: float, gate: str = "phases"
) -> tuple[str, list[str]]:
    reasons: list[str] = []
    worse = better = False
    gated = gate == "phases"
    ea, eb = a["events"], b["events"]
    counts = [
        (k, int(ea.get(k, 0)), int(eb.get(k, 0)))
        for k in dict.fromkeys([*ea, *eb])
        if int(ea.get(k, 0)) != int(eb.get(k, 0))
    ]
    if counts:
        worse = worse or gated
        shown = ", ".join(f"{k} {o:,} → {n:,}" for k, o, n in counts[:3])
        more = f" and {len(counts) - 3} more" if len(counts) > 3 else ""
        reasons.append(f"counts changed: {shown}{more}")
    pa, pb = a["phases_ns"], b["phases_ns"]
    metrics: list[tuple[str, float, float]] = [
        ("Stage-2 total", float(a["stage2_ns"]), float(b["stage2_ns"]))
    ]
    if gate == "end-to-end":
        metrics = [("end-to-end total", _end_to_end(a), _end_to_end(b))]
    gated_metrics = {m[0] for m in metrics} if not gated else None
    metrics += [
        (f"{p}", float(pa.get(p, 0.0)), float(pb.get(p, 0.0))) for p in dict.fromkeys([*pa, *pb])
    ]
    metrics.append(
        ("longest stretch", float(a["longest_stretch_ns"]), float(b["longest_stretch_ns"]))
    )
    if gate == "end-to-end":
        metrics.append(("Stage-2 total", float(a["stage2_ns"]), float(b["stage2_ns"])))
    for name, o, n in metrics:
        d = n - o
        if abs(d) > atol and abs(d) > rtol * abs(o):
            if gated_metrics is not None and name not in gated_metrics:
                reasons.append(f"{name} {format_delta_ns(d)} ({format_percent(percent_change(o, n))})"
                               " (not gated)")
                continue
            if d > 0:
                worse = True
            else:
                better = True
            reasons.append(f"{name} {format_delta_ns(d)} ({format_percent(percent_change(o, n))})")
    if "lock_holds" in a and "lock_holds" in b:
        # both tables list every detector: each one newly tripped is a regression
        ka = {h["threshold"]: h for h in a["lock_holds"]}
        kb = {h["threshold"]: h for h in b["lock_holds"]}
        for key, h in kb.items():
            if key not in ka:
                worse = worse or gated
                gate = "" if h["on_by_default"] else ", if LATENCY_WARN is on"
                reasons.append(
                    f"new lock-hold warning: {key} ({format_ns(float(h['stretch_ns']))} "
                    f"> {format_ns(float(h['limit_ns']))}) at {format_ns(float(h['first_fire_ns']))}"
                    f"{gate}: {h['message']}"
                )
        gone = [key for key in ka if key not in kb]
        if gone:
            better = True
            reasons.append("lock-hold warning gone: " + ", ".join(gone))
        return ("worse" if worse else "better" if better else "unchanged"), reasons
    la, lb = a.get("lock_hold"), b.get("lock_hold")  # a table from before lock_holds: the worst
    lim_a = 0.0 if la is None else float(la["limit_ns"])
    lim_b = 0.0 if lb is None else float(lb["limit_ns"])
    if lb is not None and lim_b > lim_a:
        worse = worse or gated
        reasons.append(
            f"new lock-hold warning: {lb['threshold']} ({format_ns(float(lb['stretch_ns']))} "
            f"> {format_ns(lim_b)})"
        )
    elif la is not None and lim_b < lim_a:
        better = True
        reasons.append(
            f"lock-hold warning gone: {la['threshold']}"
            + ("" if lb is None else f" (now {lb['threshold']})")
        )
    return ("worse" if worse else "better" if better else "unchanged"), reasons


def compare(
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    *,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL_NS,
    old_name: str = "old",
    new_name: str = "new",
    notes: Sequence[str] = (),
    gate: str = "phases",
) -> TableDiff:
    """Classify what changed between two tables, then compare them row by row, variant by variant.

    Counts must match exactly; a cost is flagged only when it moved by more than ``atol`` ns AND
    by more than ``rtol`` times the old value; a new (or worse) lock-hold warning is a regression.
    """
    if rtol < 0 or atol < 0 or not math.isfinite(rtol) or not math.isfinite(atol):
        raise ValueError("rtol and atol must be finite and >= 0")
    if gate not in GATES:
        raise ValueError(f"gate: expected one of {', '.join(GATES)}, got {gate!r}")
    out_notes = list(notes)
    if gate != "phases":
        out_notes.append(
            f"gate {gate}: only the {'Stage-2' if gate == 'stage2' else 'end-to-end (Stage-2 + host side)'}"
            " total is held against the tolerances; other changes are listed, not flagged"
        )
    if old["model_version"] != new["model_version"]:
        out_notes.append(
            f"model version {old['model_version']} → {new['model_version']}: the model's "
            "equations changed (docs/model.md, Model changelog); costs may change by design"
        )
    missing = new.get("missing_variants") or []
    if missing:
        out_notes.append(f"variants no longer defined (shown as removed): {', '.join(missing)}")
    old_rows = {_key_of(r): r for r in old["rows"]}
    new_rows = {_key_of(r): r for r in new["rows"]}
    entries: list[Entry] = []
    added: list[str] = []
    removed: list[str] = []
    common = 0
    for key in [*old_rows, *(k for k in new_rows if k not in old_rows)]:
        ra, rb = old_rows.get(key), new_rows.get(key)
        label = row_label(key)
        if rb is None:
            assert ra is not None
            removed.append(label)
            entries += [
                Entry(key, label, v["name"], "removed", float(v["stage2_ns"]), None)
                for v in ra["variants"]
            ]
            continue
        if ra is None:
            added.append(label)
            entries += [
                Entry(key, label, v["name"], "added", None, float(v["stage2_ns"]))
                for v in rb["variants"]
            ]
            continue
        common += 1
        for w in rb["warnings"]:
            if w not in ra["warnings"]:
                out_notes.append(f"{label}: new warning: {w}")
        va = {v["name"]: v for v in ra["variants"]}
        vb = {v["name"]: v for v in rb["variants"]}
        for name in [*va, *(n for n in vb if n not in va)]:
            a, b = va.get(name), vb.get(name)
            if b is None:
                assert a is not None
                entries.append(Entry(key, label, name, "removed", float(a["stage2_ns"]), None))
            elif a is None:
                entries.append(Entry(key, label, name, "added", None, float(b["stage2_ns"])))
            else:
                status, reasons = _compare_variant(a, b, rtol, atol, gate)
                entries.append(
                    Entry(
                        key,
                        label,
                        name,
                        status,
                        float(a["stage2_ns"]),
                        float(b["stage2_ns"]),
                        tuple(reasons),
                    )
                )
    return TableDiff(
        old_name=old_name,
        new_name=new_name,
        old_model=int(old["model_version"]),
        new_model=int(new["model_version"]),
        old_tool=str(old["tool_version"]),
        new_tool=str(new["tool_version"]),
        old_numpy=str(old["numpy_version"]),
        new_numpy=str(new["numpy_version"]),
        inputs=tuple(_input_changes(old, new, old_name, new_name)),
        notes=tuple(out_notes),
        entries=tuple(entries),
        rows_common=common,
        rows_added=tuple(added),
        rows_removed=tuple(removed),
        rtol=rtol,
        atol=atol,
    )


def require_comparable(c: TableDiff) -> None:
    """NothingComparable (exit 3) unless some (row, variant) is in both tables."""
    if not c.compared:
        what = "no rows in common" if not c.rows_common else "no variants in common in its rows"
        raise NothingComparable(
            c.new_name,
            None,
            None,
            f"a cost table with rows in common with {c.old_name}",
            what,
            "the two tables were made from different specs",
        )


# ---------------------------------------------------------------------------------------------
# views


