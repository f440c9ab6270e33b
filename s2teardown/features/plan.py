"""Capacity planning: what a fleet's VM teardowns cost in CPU time, per kernel variant.

A *fleet* (`Fleet`, or a fleet file read by `load_fleet`) gives a teardown rate, a VM size
distribution and a backing distribution (weighted lists, taken as independent), a machine,
the variants to compare and how many teardowns run at once on one host (``concurrency``).
`plan` evaluates every (size, backing) workload once, vectorised, and reports per variant
(docs/api.md, "Capacity planning"):

* **own cost**: CPU-seconds per hour spent tearing down, Stage-2 + host free,
  ``teardowns_per_hour × Σ_s p_s · (stage2_ns + host_ns)_s / 1e9`` (end to end, CPU), and the cores that takes
  (÷ 3600: the average number of CPUs busy tearing down, Little's law);
* **latency**: the p50 and p99 of one teardown's time (Stage-2 + host free) over the workload
  mix — weighted quantiles of service time; there is **no queueing model**: a teardown never
  waits for a CPU;
* **saving** against the baseline variant (own CPU-seconds per hour);
* **cost on other cores**, separately: every broadcast TLBI must be handled by every other PE
  of the host; each costs each of them ``remote_tlbi_fraction`` (default 10 %) of the TLBI's
  uncontended price, so ``Σ_op count(op) · price(op) · fraction · (PEs − 1)`` over the
  broadcast TLBI operations (``tlbi_is``, ``tlbi_vmall``, ``tlbi_range``).

Concurrency changes prices, never the sum (`Concurrency.adjust`): with N teardowns at once,
a broadcast TLBI costs ``1 + tlbi_concurrency_slope · (N − 1)`` times its price (DVM messages
queue), and a DC CIVAC line costs ``max(own price, N / coherence_lines_per_us µs)`` (the
teardowns share the system's coherence throughput).  Both parameters come from the machine
file; times are then ``events · X · adjusted price`` (`model.weights`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from s2teardown.core.model import (
    end_to_end_total,
    host_free,
    host_total,
    stage2_total,
    wall_total,
    weights,
)
from s2teardown.core.vocabulary import OP_INDEX, PHASES, WAIT_PHASES
from s2teardown.core.vocabulary import PHASE_INDEX as PHASE_INDEX
from s2teardown.errors import UserError, describe
from s2teardown.features.estimate import evaluate_workloads
from s2teardown.features.sweep import Backing, select_variants, size_list
from s2teardown.inputs.bundled import resolve_config
from s2teardown.inputs.check import check_keys
from s2teardown.inputs.files import is_file
from s2teardown.inputs.machine import Machine, load_machine
from s2teardown.inputs.units import backing_label, format_size
from s2teardown.inputs.variants import Variant, load_variants
from s2teardown.inputs.workload import EVENTS_SUPPORTED, Workload
from s2teardown.inputs.yamlio import (
    YamlDocument,
    check_schema_version,
    did_you_mean,
    line_of,
    read_yaml,
    read_yaml_text,
)

F64 = npt.NDArray[np.float64]

SCHEMA_VERSION = 1
CHANGES_SINCE = {1: "the first fleet format"}
#: Upper bounds on fleet numbers, so that every derived quantity stays finite.
MAX_RATE = 1e9
MAX_WEIGHT = 1e12
#: Default share of a broadcast TLBI's price each other PE spends handling it.
REMOTE_TLBI_FRACTION = 0.10
#: The broadcast TLBI operations (ops.OPS): scaled by concurrency, felt by every other PE.
TLBI_OPS: tuple[str, ...] = ("tlbi_is", "tlbi_vmall", "tlbi_range")
_TLBI_IDX = np.array([OP_INDEX[o] for o in TLBI_OPS])
_TWO_MIB: Backing = ((2 << 20, 100.0),)

TOP_KEYS: tuple[str, ...] = (
    "schema_version",
    "name",
    "description",
    "machine",
    "variants",
    "kernel",
    "variants_file",
    "baseline",
    "teardowns_per_hour",
    "concurrency",
    "event",
    "mapped",
    "memslots",
    "vm_sizes",
    "backings",
)


# ---------------------------------------------------------------------------------------------
# the fleet


@dataclass(frozen=True)
class Fleet:
    """What a capacity plan needs.  Weights need not sum to 1 (they are normalised)."""

    machine: Machine
    variants: tuple[Variant, ...]
    teardowns_per_hour: float
    vm_sizes: tuple[tuple[int, float], ...]  # (guest RAM bytes, weight)
    backings: tuple[tuple[Backing, float], ...] = ((_TWO_MIB, 1.0),)  # (backing mix, weight)
    concurrency: int = 1  # teardowns running at once on one host
    event: str = "exit"
    baseline: int = 0  # index into variants
    mapped: float = 1.0
    memslots: int = 1
    name: str = "fleet"
    description: str = ""
    source: str | None = None  # the fleet file, if any
    sha256: str | None = None

    def check(self) -> None:
        """ValueError (the field's name first) if the fleet cannot be planned."""
        if not self.variants:
            raise ValueError("variants: expected at least one variant")
        if not 0 <= self.baseline < len(self.variants):
            raise ValueError("baseline: expected an index into variants")
        if not (math.isfinite(self.teardowns_per_hour) and self.teardowns_per_hour >= 0):
            raise ValueError("teardowns_per_hour: expected a finite number >= 0")
        check_concurrency(self.machine, self.concurrency)
        for what, items in (("vm_sizes", self.vm_sizes), ("backings", self.backings)):
            ws = [w for _, w in items]
            if not ws or any(not (math.isfinite(w) and w >= 0) for w in ws) or sum(ws) <= 0:
                raise ValueError(f"{what}: expected a non-empty list of weights >= 0, not all 0")
        for w, _ in self.mix():
            w.check()

    def mix(self) -> list[tuple[Workload, float]]:
        """Every (size, backing) workload with its probability (sizes × backings, independent),
        sizes outer; entries of probability 0 are kept (they weigh nothing)."""
        ts = sum(w for _, w in self.vm_sizes)
        tb = sum(w for _, w in self.backings)
        return [
            (
                Workload(
                    vm_bytes=size,
                    backing=b,
                    mapped=self.mapped,
                    memslots=self.memslots,
                    event=self.event,
                ),
                (ws / ts) * (wb / tb),
            )
            for size, ws in self.vm_sizes
            for b, wb in self.backings
        ]


def check_concurrency(machine: Machine, n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= machine.pes:
        raise ValueError(
            f"concurrency: expected a whole number of teardowns in 1..{machine.pes} "
            f"(the PEs of {machine.name}), got {n!r}"
        )


# ---------------------------------------------------------------------------------------------
# concurrency: a named adjustment of the op prices


@dataclass(frozen=True)
class Concurrency:
    """N teardowns at once on one host, and what that does to prices.

    * broadcast TLBIs (``TLBI_OPS``): ``price × (1 + tlbi_concurrency_slope × (N − 1))``;
    * a DC CIVAC line: ``max(price, N / coherence_lines_per_us µs)`` — the N teardowns share
      the system's coherence throughput, so none gets more than 1/N of it.

    Every other price is unchanged.  N = 1 changes nothing unless a single CPU could clean
    lines faster than the whole system resolves them.
    """

    n: int
    tlbi_concurrency_slope: float
    coherence_lines_per_us: float

    @classmethod
    def of(cls, machine: Machine, n: int) -> Concurrency:
        check_concurrency(machine, n)
        return cls(
            n, machine.number("tlbi_concurrency_slope"), machine.number("coherence_lines_per_us")
        )

    @property
    def tlbi_factor(self) -> float:
        return 1.0 + self.tlbi_concurrency_slope * (self.n - 1)

    @property
    def line_floor_ns(self) -> float:
        """The least a DC CIVAC line can cost with N sharing the throughput: N / rate, in ns."""
        return self.n * 1000.0 / self.coherence_lines_per_us

    def adjust(self, op_prices: F64) -> F64:
        """The op-price vector (ops.OPS order) under this concurrency; the input is unchanged."""
        out = np.array(op_prices, dtype=np.float64, copy=True)
        out[_TLBI_IDX] *= self.tlbi_factor
        line = OP_INDEX["dc_civac_line"]
        out[line] = max(float(out[line]), self.line_floor_ns)
        return out


# ---------------------------------------------------------------------------------------------
# the plan


def weighted_quantile(values: F64, w: F64, q: float) -> F64:
    """The q-quantile of ``values`` (S,) or (S, V) under weights ``w`` (S,): the smallest value
    whose cumulative weight reaches q (the inverse of the step CDF; no interpolation)."""
    vals = np.asarray(values, dtype=np.float64)
    one_d = vals.ndim == 1
    v2 = vals[:, None] if one_d else vals
    order = np.argsort(v2, axis=0, kind="stable")
    sv = np.take_along_axis(v2, order, axis=0)
    sw = np.asarray(w, dtype=np.float64)[order]
    cum = np.cumsum(sw, axis=0) / sw.sum(axis=0)
    idx = np.minimum((cum < q - 1e-12).sum(axis=0), v2.shape[0] - 1)
    out = np.take_along_axis(sv, idx[None, :], axis=0)[0]
    return out[0:1].reshape(()) if one_d else out  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Plan:
    """A capacity plan.  Arrays: S workloads (``fleet.mix()`` order) × V variants × phases."""

    fleet: Fleet
    concurrency: Concurrency
    remote_tlbi_fraction: float
    workloads: tuple[Workload, ...]
    probability: F64  # (S,) sums to 1
    base_prices: F64  # (OPS,) the machine's prices
    prices: F64  # (OPS,) adjusted for concurrency
    time_ns: F64  # (S, V, PHASES) one teardown, adjusted prices
    tlbi_count: F64  # (S, V) broadcast TLBIs per teardown
    other_ns: F64  # (S, V) CPU time one teardown costs the other PEs, summed over them
    warnings: tuple[str, ...] = ()

    @property
    def variants(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.fleet.variants)

    @property
    def baseline(self) -> int:
        return self.fleet.baseline

    @property
    def stage2_ns(self) -> F64:
        return stage2_total(self.time_ns)

    @property
    def host_free_ns(self) -> F64:
        return host_free(self.time_ns)

    @property
    def host_ns(self) -> F64:
        return host_total(self.time_ns)

    @property
    def wall_ns(self) -> F64:
        """One teardown's wall time (CPU plus waits), (S, V): what latency is planned on."""
        return wall_total(self.time_ns)

    @property
    def own_ns(self) -> F64:
        """One teardown's time on its own CPU, Stage-2 + host side (end to end), (S, V)."""
        return end_to_end_total(self.time_ns)

    def _per_hour(self, per_teardown: F64) -> F64:
        """teardowns/h × expected ns per teardown, in seconds: (S, V[, ...]) -> (V[, ...])."""
        mean = np.tensordot(self.probability, per_teardown, axes=(0, 0))
        return self.fleet.teardowns_per_hour * mean / 1e9

    @property
    def cpu_seconds_per_hour(self) -> F64:
        return self._per_hour(self.own_ns)

    @property
    def cores(self) -> F64:
        return self.cpu_seconds_per_hour / 3600.0

    @property
    def phase_cpu_seconds_per_hour(self) -> F64:
        """(V, PHASES): where the own CPU-seconds go (the waits spend none: 0)."""
        out = self._per_hour(self.time_ns)
        out[..., [PHASE_INDEX[p] for p in WAIT_PHASES]] = 0.0
        return out

    @property
    def p50_ns(self) -> F64:
        """Median teardown latency: wall time (CPU end to end plus the waits)."""
        return weighted_quantile(self.wall_ns, self.probability, 0.50)

    @property
    def p99_ns(self) -> F64:
        return weighted_quantile(self.wall_ns, self.probability, 0.99)

    @property
    def saving_cpu_seconds_per_hour(self) -> F64:
        """Baseline's own CPU-s/h minus each variant's (positive: the variant saves)."""
        c = self.cpu_seconds_per_hour
        return c[self.baseline] - c  # type: ignore[no-any-return]

    @property
    def saving_fraction(self) -> F64:
        c = self.cpu_seconds_per_hour
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(
                c[self.baseline] > 0, self.saving_cpu_seconds_per_hour / c[self.baseline], np.nan
            )

    @property
    def other_cpu_seconds_per_hour(self) -> F64:
        return self._per_hour(self.other_ns)

    @property
    def other_cores(self) -> F64:
        return self.other_cpu_seconds_per_hour / 3600.0

    @property
    def tlbis_per_teardown(self) -> F64:
        return np.tensordot(self.probability, self.tlbi_count, axes=(0, 0))

    def rows(self) -> list[dict[str, Any]]:
        """One plain dict per variant (seconds, ns and fractions as floats)."""
        out = []
        cpu, cores, p50, p99 = self.cpu_seconds_per_hour, self.cores, self.p50_ns, self.p99_ns
        sav, savf = self.saving_cpu_seconds_per_hour, self.saving_fraction
        ocpu, ocores, tl = (
            self.other_cpu_seconds_per_hour,
            self.other_cores,
            self.tlbis_per_teardown,
        )
        phases = self.phase_cpu_seconds_per_hour
        for v, name in enumerate(self.variants):
            f = float(savf[v])
            out.append(
                {
                    "variant": name,
                    "cpu_seconds_per_hour": float(cpu[v]),
                    "cores": float(cores[v]),
                    "p50_ns": float(p50[v]),
                    "p99_ns": float(p99[v]),
                    "saving_cpu_seconds_per_hour": float(sav[v]),
                    "saving_fraction": f if math.isfinite(f) else None,
                    "other_cores_cpu_seconds_per_hour": float(ocpu[v]),
                    "other_cores": float(ocores[v]),
                    "tlbis_per_teardown": float(tl[v]),
                    "phase_cpu_seconds_per_hour": {
                        p: float(phases[v, i]) for i, p in enumerate(PHASES)
                    },
                }
            )
        return out

    def as_dict(self) -> dict[str, Any]:
        f = self.fleet
        c = self.concurrency
        line = OP_INDEX["dc_civac_line"]
        return {
            "fleet": {
                "name": f.name,
                "description": f.description,
                "source": f.source,
                "sha256": f.sha256,
                "machine": f.machine.name,
                "teardowns_per_hour": f.teardowns_per_hour,
                "event": f.event,
                "concurrency": c.n,
                "vm_sizes": [{"vm_bytes": s, "weight": w} for s, w in f.vm_sizes],
                "backings": [{"backing": backing_label(b), "weight": w} for b, w in f.backings],
            },
            "baseline": self.variants[self.baseline],
            "concurrency": {
                "n": c.n,
                "tlbi_concurrency_slope": c.tlbi_concurrency_slope,
                "tlbi_factor": c.tlbi_factor,
                "coherence_lines_per_us": c.coherence_lines_per_us,
                "dc_civac_line_ns": {
                    "own": float(self.base_prices[line]),
                    "floor": c.line_floor_ns,
                    "used": float(self.prices[line]),
                },
            },
            "remote_tlbi_fraction": self.remote_tlbi_fraction,
            "pes": f.machine.pes,
            "workloads": [
                {
                    "vm_bytes": w.vm_bytes,
                    "backing": backing_label(w.backing),
                    "probability": float(p),
                }
                for w, p in zip(self.workloads, self.probability, strict=True)
            ],
            "variants": self.rows(),
            "assumptions": list(ASSUMPTIONS),
            "warnings": list(self.warnings),
        }


ASSUMPTIONS: tuple[str, ...] = (
    "latency is service time: no queueing model (a teardown never waits for a CPU)",
    "VM sizes and backings are independent; each VM is torn down once",
    "concurrency N: a broadcast TLBI costs (1 + tlbi_concurrency_slope·(N−1)) × its price; a DC "
    "CIVAC line costs max(its price, N / coherence_lines_per_us µs)",
    "other cores: each broadcast TLBI costs each other PE of the host remote_tlbi_fraction of "
    "its uncontended price",
)


def plan(
    fleet: Fleet,
    *,
    concurrency: int | None = None,
    remote_tlbi_fraction: float = REMOTE_TLBI_FRACTION,
) -> Plan:
    """The capacity plan of ``fleet`` (``concurrency`` overrides the fleet's).

    Raises ValueError (field name first) for a fleet or parameter that cannot be planned.
    """
    if concurrency is not None:
        check_concurrency(fleet.machine, concurrency)
        fleet = replace(fleet, concurrency=concurrency)
    fleet.check()
    if not (math.isfinite(remote_tlbi_fraction) and 0.0 <= remote_tlbi_fraction <= 1.0):
        raise ValueError(
            f"remote-tlbi-fraction: expected a fraction in [0, 1], got {remote_tlbi_fraction!r}"
        )
    mix = fleet.mix()
    ws = [w for w, _ in mix]
    prob = np.array([p for _, p in mix], dtype=np.float64)
    b = evaluate_workloads(fleet.machine, fleet.variants, ws, baseline=fleet.baseline)
    conc = Concurrency.of(fleet.machine, fleet.concurrency)
    base = np.asarray(b.op_prices, dtype=np.float64)
    adjusted = conc.adjust(base)
    events = np.asarray(b.events)
    time = np.einsum("sve,vep->svp", events.astype(np.float64), weights(b.expansion, adjusted))
    tlbi_ops = np.einsum("sve,veo->svo", events, b.expansion.sum(axis=2)[:, :, _TLBI_IDX])
    tlbi_ops = tlbi_ops.astype(np.float64)
    other = tlbi_ops @ base[_TLBI_IDX] * remote_tlbi_fraction * (fleet.machine.pes - 1)
    warns = []
    mem = int(fleet.machine.number("memory_bytes"))
    big = sorted({w.vm_bytes for w in ws if w.vm_bytes > mem})
    if big:
        warns.append(
            f"VM sizes above {fleet.machine.name}'s installed memory ({format_size(mem)}): "
            + size_list(big)
        )
    return Plan(
        fleet=fleet,
        concurrency=conc,
        remote_tlbi_fraction=remote_tlbi_fraction,
        workloads=tuple(ws),
        probability=prob,
        base_prices=base,
        prices=adjusted,
        time_ns=time,
        tlbi_count=tlbi_ops.sum(axis=-1),
        other_ns=other,
        warnings=tuple(warns),
    )


# ---------------------------------------------------------------------------------------------
# fleet files


def load_fleet(name_or_path: str | Path, *, flag: str | None = "FLEET") -> Fleet:
    """Load and validate a fleet file, or a bundled fleet by name (``example``).

    Every problem is one UserError ``FILE:LINE: field: expected ..., got ...``.
    """
    path = resolve_config(name_or_path, "fleets", flag=flag)
    return _build(read_yaml(path), Path(path).parent)


def fleet_from_text(text: str, name: str = "<string>", base_dir: str | Path = ".") -> Fleet:
    """Validate fleet YAML ``text``; relative paths in it are taken from ``base_dir``."""
    return _build(read_yaml_text(text, name), Path(base_dir))


def _num(
    file: str,
    container: Any,
    key: Any,
    where: str,
    *,
    minimum: float,
    inclusive: bool = True,
    maximum: float | None = None,
) -> float:
    v = container[key]
    line = line_of(container, key) or getattr(container, "line", None)
    ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    ok = ok and (v >= minimum if inclusive else v > minimum)
    ok = ok and (maximum is None or v <= maximum)
    if not ok:
        rng = (
            f"in [{minimum:g}, {maximum:g}]"
            if maximum is not None
            else f"{'>=' if inclusive else '>'} {minimum:g}"
        )
        raise UserError(file, line, where, f"a finite number {rng}", describe(v))
    return float(v)


def _int(file: str, container: Any, key: Any, where: str, minimum: int) -> int:
    v = container[key]
    line = line_of(container, key) or getattr(container, "line", None)
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        hint = None
        if isinstance(v, str) and where.endswith("_bytes"):
            hint = "write plain bytes such as 4294967296; no size strings"
        elif isinstance(v, float) and v.is_integer():
            hint = f"write {int(v)} without a decimal point"
        raise UserError(file, line, where, f"a whole number >= {minimum}", describe(v), hint)
    return v


def _str(file: str, container: Any, key: Any, where: str) -> str:
    v = container[key]
    if not isinstance(v, str) or not v.strip():
        raise UserError(file, line_of(container, key), where, "a non-empty string", describe(v))
    return v


def _weighted(
    file: str, data: Mapping[str, Any], key: str, item_keys: Sequence[str]
) -> list[tuple[Mapping[str, Any], float, int | None, str]]:
    """A non-empty list of mappings, each with a ``weight``; returns (item, weight, line, where)."""
    raw = data[key]
    line = line_of(data, key)
    if not isinstance(raw, list) or not raw:
        raise UserError(
            file, line, key, "a non-empty list of {..., weight} mappings", describe(raw)
        )
    out: list[tuple[Mapping[str, Any], float, int | None, str]] = []
    for i, item in enumerate(raw):
        where = f"{key}[{i}]"
        iline = line_of(raw, i) or line
        if not isinstance(item, dict):
            raise UserError(file, iline, where, "a mapping with weight", describe(item))
        check_keys(file, item, where, (*item_keys, "weight"))
        if "weight" not in item:
            raise UserError(file, iline, f"{where}.weight", "a weight >= 0 (required)", "none")
        w = _num(file, item, "weight", f"{where}.weight", minimum=0.0, maximum=MAX_WEIGHT)
        out.append((item, w, iline, where))
    if sum(w for _, w, _, _ in out) <= 0:
        raise UserError(file, line, key, "weights that are not all 0", "all 0")
    return out


def _backing(file: str, item: Mapping[str, Any], where: str, line: int | None) -> Backing:
    if ("leaf_bytes" in item) == ("mix" in item):
        raise UserError(
            file,
            line,
            where,
            "exactly one of leaf_bytes or mix",
            "both" if "leaf_bytes" in item else "neither",
        )
    if "leaf_bytes" in item:
        return ((_int(file, item, "leaf_bytes", f"{where}.leaf_bytes", 1), 100.0),)
    raw = item["mix"]
    mline = line_of(item, "mix") or line
    if not isinstance(raw, list) or not raw:
        raise UserError(
            file,
            mline,
            f"{where}.mix",
            "a non-empty list of {leaf_bytes, percent} mappings",
            describe(raw),
        )
    parts: list[tuple[int, float]] = []
    for j, part in enumerate(raw):
        pw = f"{where}.mix[{j}]"
        if not isinstance(part, dict):
            raise UserError(
                file,
                line_of(raw, j) or mline,
                pw,
                "a {leaf_bytes, percent} mapping",
                describe(part),
            )
        check_keys(file, part, pw, ("leaf_bytes", "percent"))
        for k in ("leaf_bytes", "percent"):
            if k not in part:
                raise UserError(
                    file, line_of(raw, j) or mline, f"{pw}.{k}", f"{k} (required)", "none"
                )
        leaf = _int(file, part, "leaf_bytes", f"{pw}.leaf_bytes", 1)
        if any(leaf == s for s, _ in parts):
            raise UserError(
                file,
                line_of(part, "leaf_bytes"),
                f"{pw}.leaf_bytes",
                "each leaf size once in a mix",
                f"{leaf} again",
            )
        parts.append(
            (
                leaf,
                _num(
                    file,
                    part,
                    "percent",
                    f"{pw}.percent",
                    minimum=0.0,
                    inclusive=False,
                    maximum=100.0,
                ),
            )
        )
    total = sum(p for _, p in parts)
    if abs(total - 100.0) > 1e-6:
        raise UserError(file, mline, f"{where}.mix", "percentages summing to 100", f"{total:g}")
    return tuple(parts)


def _near(value: str, base_dir: Path, kind: str, file: str, line: int | None, field: str) -> Path:
    """A path given in the fleet file: relative to the file's directory first, then as given
    (or a bundled name)."""
    near = base_dir / value
    if not Path(value).is_absolute() and is_file(near):
        return near
    try:
        return resolve_config(value, kind)
    except UserError as exc:
        raise exc.replace(file=file, line=line, field=field) from None


def _names(file: str, data: Mapping[str, Any], key: str, *, versions: bool) -> list[str]:
    raw = data[key]
    line = line_of(data, key)
    items = raw if isinstance(raw, list) else [raw]
    out = []
    for i, v in enumerate(items):
        iline = line_of(raw, i) if isinstance(raw, list) else line
        if isinstance(v, float | int) and not isinstance(v, bool) and versions:
            raise UserError(
                file,
                iline or line,
                key,
                "a kernel version as a string",
                describe(v),
                'quote it, kernel: "6.8"; unquoted, YAML reads a number and 6.10 becomes 6.1',
            )
        if not isinstance(v, str) or not v.strip():
            raise UserError(file, iline or line, key, "a string or a list of strings", describe(v))
        out.append(v)
    return out


def _build(doc: YamlDocument, base_dir: Path) -> Fleet:
    file = doc.name
    data = doc.data
    if not isinstance(data, dict):
        raise UserError(file, 1, None, "a mapping of fleet fields", describe(data))
    check_keys(file, data, "", TOP_KEYS, what="fleet")
    check_schema_version(data, file, SCHEMA_VERSION, CHANGES_SINCE)
    for k in ("machine", "teardowns_per_hour", "vm_sizes"):
        if k not in data:
            raise UserError(file, 1, k, f"{k} (required)", "none")
    name = _str(file, data, "name", "name") if "name" in data else Path(file).stem
    description = ""
    if "description" in data:
        if not isinstance(data["description"], str):
            raise UserError(
                file,
                line_of(data, "description"),
                "description",
                "a string",
                describe(data["description"]),
            )
        description = data["description"]

    mline = line_of(data, "machine")
    mpath = _near(
        _str(file, data, "machine", "machine"), base_dir, "machines", file, mline, "machine"
    )
    machine = load_machine(mpath)

    vfile = None
    if "variants_file" in data:
        vline = line_of(data, "variants_file")
        vfile = base_dir / _str(file, data, "variants_file", "variants_file")
        if not is_file(vfile):
            raise UserError(
                file,
                vline,
                "variants_file",
                "an existing file (relative to this file)",
                repr(str(vfile)),
            )
    vs = load_variants(vfile)
    names = _names(file, data, "variants", versions=False) if "variants" in data else []
    kernels = _names(file, data, "kernel", versions=True) if "kernel" in data else []
    baseline = _str(file, data, "baseline", "baseline") if "baseline" in data else None
    try:
        chosen, base_idx = select_variants(
            vs, names, kernels, baseline, flags=("variants", "kernel", "baseline")
        )
    except UserError as exc:
        key = exc.file if exc.file in data else "variants"
        raise exc.replace(file=file, line=line_of(data, key), field=key) from None

    # a bound keeps every product finite (1e9 teardowns an hour is ~280,000 a second)
    rate = _num(file, data, "teardowns_per_hour", "teardowns_per_hour", minimum=0.0,
                maximum=MAX_RATE)
    conc = _int(file, data, "concurrency", "concurrency", 1) if "concurrency" in data else 1
    if conc > machine.pes:
        raise UserError(
            file,
            line_of(data, "concurrency"),
            "concurrency",
            f"at most the {machine.pes} PEs of {machine.name}",
            str(conc),
        )
    event = "exit"
    if "event" in data:
        event = _str(file, data, "event", "event")
        if event not in EVENTS_SUPPORTED:
            raise UserError(
                file,
                line_of(data, "event"),
                "event",
                "one of " + ", ".join(EVENTS_SUPPORTED),
                describe(event),
                did_you_mean(event, EVENTS_SUPPORTED),
            )
    mapped = (
        _num(file, data, "mapped", "mapped", minimum=0.0, maximum=1.0) if "mapped" in data else 1.0
    )
    memslots = _int(file, data, "memslots", "memslots", 1) if "memslots" in data else 1

    sizes: list[tuple[int, float, int | None, str]] = []
    for item, w, iline, where in _weighted(file, data, "vm_sizes", ("vm_bytes",)):
        if "vm_bytes" not in item:
            raise UserError(file, iline, f"{where}.vm_bytes", "vm_bytes (required)", "none")
        sizes.append((_int(file, item, "vm_bytes", f"{where}.vm_bytes", 1), w, iline, where))
    backs: list[tuple[Backing, float, int | None, str]] = []
    if "backings" in data:
        for item, w, iline, where in _weighted(file, data, "backings", ("leaf_bytes", "mix")):
            backs.append((_backing(file, item, where, iline), w, iline, where))
    else:
        backs.append((_TWO_MIB, 1.0, None, "backings"))

    for size, _, sline, swhere in sizes:
        for b, _, bline, bwhere in backs:
            wl = Workload(vm_bytes=size, backing=b, mapped=mapped, memslots=memslots, event=event)
            try:
                wl.check()
            except ValueError as exc:
                raise UserError(
                    file,
                    sline,
                    f"{swhere}.vm_bytes",
                    f"a VM every backing can lay out ({exc})",
                    f"{format_size(size)} with {bwhere} = {backing_label(b)}"
                    + (f" (line {bline})" if bline else ""),
                ) from None

    return Fleet(
        machine=machine,
        variants=tuple(chosen),
        teardowns_per_hour=rate,
        vm_sizes=tuple((s, w) for s, w, _, _ in sizes),
        backings=tuple((b, w) for b, w, _, _ in backs),
        concurrency=conc,
        event=event,
        baseline=base_idx,
        mapped=mapped,
        memslots=memslots,
        name=name,
        description=description,
        source=file,
        sha256=doc.sha256,
    )


__all__ = [
    "ASSUMPTIONS",
    "REMOTE_TLBI_FRACTION",
    "TLBI_OPS",
    "Concurrency",
    "Fleet",
    "Plan",
    "fleet_from_text",
    "load_fleet",
    "plan",
    "weighted_quantile",
]
