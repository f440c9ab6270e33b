"""The library's front door: machine + variants + workload -> an `Estimate`.

This layer joins the typed inputs (machine file, variants file, workload) to the pure core
(counts, prices, model): it derives prices from the machine, runs the model, and attaches what
every view must show — the inputs as understood, assumptions, warnings, and why a phase is 0.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from s2teardown.core.counts import Batch, batch_from_layout, linear_from_events
from s2teardown.core.geometry import Geometry
from s2teardown.core.instructions import DEFAULT_FRAME, Features, Frame, frame_for
from s2teardown.core.model import Breakdown, MachineInputs, VariantSpec, evaluate
from s2teardown.core.prices import Placement, Prices, Topology, make_prices
from s2teardown.core.vocabulary import PHASE_INDEX, PHASES
from s2teardown.inputs.machine import THETA_FIELDS, Machine
from s2teardown.inputs.paths import user_path
from s2teardown.inputs.units import format_ns, format_size
from s2teardown.inputs.variants import Variant
from s2teardown.inputs.workload import Workload, uniform_batch

#: Lock-hold thresholds (docs/model.md §11.5): need_resched warnings past 100 ms; the soft-lockup
#: detector fires at 2 × watchdog_thresh (watchdog_thresh 10 s by default: 20 s); RCU stall 21 s.
NEED_RESCHED_NS = 100e6
SOFT_LOCKUP_NS = 20e9
RCU_STALL_NS = 21e9

@dataclass(frozen=True)
class Estimate:
    breakdown: Breakdown
    machine: Machine
    variants: tuple[Variant, ...]
    workload: Workload | None  # None for a scenario file
    geometry: Geometry
    placement: Placement
    prices: Prices
    mapped_by_leaf: dict[int, int]  # leaf bytes -> mapped bytes (RAM, whole guest)
    device_bytes: int
    assumptions: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    extra: dict[str, str] = field(default_factory=dict)
    scenario: Any = None  # scenario.Scenario when the input was a scenario file

    @property
    def header(self) -> str:
        w, g = self.workload, self.geometry
        if w is None:
            sc = self.scenario
            slots = len(sc.layout.memslots)
            return (
                f"scenario {sc.name}: {format_size(sc.layout.mapped_bytes)} mapped in "
                f"{slots} memslot{'s' if slots > 1 else ''}, {g.ipa_bits}-bit IPA, {g.levels} levels, "
                f"{format_size(g.granule)} granule, event {sc.event_form or 'invocations'}"
            )
        mix = ", ".join(
            f"{format_size(leaf)} leaves {pct:g}%" if len(w.backing) > 1 else f"{format_size(leaf)} leaves"
            for leaf, pct in w.backing
        )
        auto = " (auto)" if w.ipa_bits is None else ""
        return (
            f"{format_size(w.vm_bytes)} = {w.vm_bytes:,} bytes, {mix}, mapped {w.mapped:.0%}, "
            f"{g.ipa_bits}-bit IPA{auto}, {g.levels} levels, {format_size(g.granule)} granule, "
            f"{w.memslots} memslot{'s' if w.memslots > 1 else ''}, event {w.event}"
        )


@functools.lru_cache(maxsize=1)
def _bundled_variants() -> dict[str, Variant]:
    from s2teardown.inputs.variants import load_variants

    return {v.name: v for v in load_variants().variants}


def frame_of(v: Variant, others: Sequence[Variant] = ()) -> Frame:
    """The instruction frame of a variant: from its own kernel version, else its base's (the
    series' patches inherit v5.5's), else the oldest frame."""
    from s2teardown.inputs.variants import parse_version

    known = {**_bundled_variants(), **{o.name: o for o in others}}
    seen: set[str] = set()
    cur: Variant | None = v
    while cur is not None and cur.name not in seen:
        seen.add(cur.name)
        version = parse_version(cur.kernel or "")
        if version:
            return frame_for(version)
        cur = known.get(cur.base or "")
    return DEFAULT_FRAME


def variant_specs(variants: Sequence[Variant]) -> list[VariantSpec]:
    """What the model needs of each variant: behaviours and its kernel's instruction frame."""
    return [VariantSpec(v.name, v.behaviours, frame_of(v, variants)) for v in variants]


def machine_features(machine: Machine) -> Features:
    return Features(
        vhe=machine.feature("vhe"),
        tlbi_repeat=machine.feature("tlbi_repeat"),
        speculative_at=machine.feature("speculative_at"),
        tlbi_sync_erratum=machine.feature("tlbi_sync_erratum"),
    )


def machine_prices(machine: Machine, placement: Placement | None = None) -> tuple[Prices, Placement]:
    pl = placement or Placement(
        float(machine.value("local_node")),
        float(machine.value("same_socket")),
        float(machine.value("remote_socket")),
    )
    if int(machine.value("sockets")) == 1 and pl.remote_socket > 0:
        raise ValueError(
            f"placement: expected no remote-socket share on {machine.name}, which has one socket"
        )
    topo = Topology(
        sockets=int(machine.value("sockets")),
        cores_per_socket=int(machine.value("cores_per_socket")),
        coherence=str(machine.value("coherence")),
        cmo_outstanding=float(machine.value("cmo_outstanding")),
    )
    theta = {f: float(machine.value(f)) for f in THETA_FIELDS}
    assumed = frozenset(f for f in THETA_FIELDS if machine.param_kind(f) == "assumed")
    overrides = {op: float(p.value) for op, p in machine.prices.items()}
    assumed_over = frozenset(op for op, p in machine.prices.items() if p.kind == "assumed")
    prices = make_prices(
        THETA_FIELDS, theta, topo, pl, overrides=overrides, assumed_fields=assumed,
        assumed_overrides=assumed_over,
    )
    return prices, pl


def machine_inputs(machine: Machine, placement: Placement | None = None) -> tuple[MachineInputs, Placement]:
    prices, pl = machine_prices(machine, placement)
    mi = MachineInputs(
        features=machine_features(machine),
        fwb=machine.feature("s2fwb"),
        cache_line=int(machine.value("cache_line_bytes")),
        prices=prices,
        tlbi_range=machine.feature("tlbi_range"),
    )
    return mi, pl


def _notes(
    b: Breakdown, variants: Sequence[Variant], kinds: Sequence[str], fwb: bool
) -> dict[tuple[int, str], str]:
    """Why a phase that costs something in the baseline is 0 in a variant."""
    notes: dict[tuple[int, str], str] = {}
    base = b.time_ns[0, b.baseline]
    fields_of = {"cmo": ("cmo",), "tlbi": ("leaf_tlbi", "table_tlbi"), "resched": ("resched", "resched_when")}
    for v, var in enumerate(variants):
        for phase in PHASES:
            p = PHASE_INDEX[phase]
            if phase == "cmo" and fwb:
                notes[(v, phase)] = "no CMO: S2FWB hardware"
                continue
            if b.time_ns[0, v, p] != 0 or base[p] == 0:
                continue
            ref = variants[b.baseline]
            origins = sorted(
                {
                    var.origin[(k, f)]
                    for k in kinds
                    for f in fields_of.get(phase, ())
                    if getattr(var.behaviours[k], f) != getattr(ref.behaviours[k], f)
                }
            )
            notes[(v, phase)] = f"elided by {', '.join(origins)}" if origins else "not run"
    return notes


PREEMPT_MODES = ("none", "voluntary", "full")


@dataclass(frozen=True)
class LockHold:
    """The worst lock-hold threshold one variant's longest stretch passes."""

    variant: str
    threshold: str  # "rcu_stall" | "soft_lockup" | "need_resched"
    limit_ns: float
    stretch_ns: float
    mmu_lock_held: bool
    what: str  # the threshold in words

    def as_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "limit_ns": self.limit_ns,
                "stretch_ns": self.stretch_ns, "mmu_lock_held": self.mmu_lock_held}


def lock_holds(
    names: Sequence[str],
    stretch_ns: Sequence[float],
    locked_ns: Sequence[float],
    *,
    preempt: str = "none",
    watchdog_thresh_s: float = 10.0,
) -> list[LockHold]:
    """For each variant whose longest non-preemptible stretch passes a threshold, the worst one.

    With ``preempt=none`` or ``voluntary`` only resched points end a non-preemptible stretch;
    with ``full`` a stretch is non-preemptible only while it holds mmu_lock (a spinlock).
    """
    soft = 2.0 * watchdog_thresh_s * 1e9
    limits = sorted(
        (
            (RCU_STALL_NS, "rcu_stall", "the RCU stall timeout (21 s)"),
            (soft, "soft_lockup", f"the soft-lockup threshold (2 × watchdog_thresh = {soft / 1e9:g} s)"),
            (NEED_RESCHED_NS, "need_resched", "the need_resched warning latency (100 ms)"),
        ),
        reverse=True,
    )
    out: list[LockHold] = []
    for name, s_all, s_locked in zip(names, stretch_ns, locked_ns, strict=True):
        s = s_locked if preempt == "full" else s_all
        for limit, kind, what in limits:
            if s > limit:
                out.append(LockHold(name, kind, float(limit), float(s), s_locked >= s, what))
                break
    return out


def stretch_warnings(
    names: Sequence[str],
    stretch_ns: Sequence[float],
    locked_ns: Sequence[float],
    *,
    preempt: str = "none",
    watchdog_thresh_s: float = 10.0,
) -> list[str]:
    """One warning line per (threshold, stretch) shared by variants (see `lock_holds`)."""
    grouped: dict[tuple[str, str, bool], list[str]] = {}
    for h in lock_holds(names, stretch_ns, locked_ns, preempt=preempt,
                        watchdog_thresh_s=watchdog_thresh_s):
        grouped.setdefault((format_ns(h.stretch_ns), h.what, h.mmu_lock_held), []).append(h.variant)
    return [
        f"{', '.join(vs)}: the longest stretch without a resched point ({s}"
        f"{', holding mmu_lock' if locked else ', mmu_lock not held'}, preempt={preempt}) exceeds {what}"
        for (s, what, locked), vs in grouped.items()
    ]


def estimate(
    machine: Machine,
    variants: Sequence[Variant],
    workload: Workload,
    *,
    baseline: str | None = None,
    with_segments: bool = True,
    default_backing: bool = False,
    preempt: str = "none",
    watchdog_thresh_s: float = 10.0,
) -> Estimate:
    """Per-phase cost of tearing down ``workload`` on ``machine`` for each variant.

    Raises ValueError for a workload that cannot be laid out (the CLI maps it to exit 2).
    """
    workload.check()
    assumptions = []
    if default_backing:
        assumptions.append(
            "backing defaults to 2 MiB leaves (THP), as the D05 calibration assumes; set --backing"
        )
    return _estimate_batch(
        machine, variants, uniform_batch([workload]), workload.geometry(), workload.placement,
        kinds=user_path(workload.event).kinds, path=user_path(workload.event).kernel, size=workload.vm_bytes,
        workload=workload, scenario=None, baseline=baseline, with_segments=with_segments,
        assumptions=assumptions, preempt=preempt, watchdog_thresh_s=watchdog_thresh_s,
    )


def estimate_scenario(
    machine: Machine,
    variants: Sequence[Variant],
    scenario: Any,
    *,
    baseline: str | None = None,
    with_segments: bool = True,
    placement: Placement | None = None,
    preempt: str = "none",
    watchdog_thresh_s: float = 10.0,
) -> Estimate:
    """The same for an explicit layout and event from a scenario file (`scenario.Scenario`)."""
    kinds = tuple(dict.fromkeys(inv.kind for inv in scenario.event))
    path = "scenario event: " + " then ".join(
        f"{inv.kind} [{inv.lo:#x}, {inv.hi:#x})" for inv in scenario.event
    )
    size = sum(s.hi - s.lo for s in scenario.layout.memslots)
    return _estimate_batch(
        machine, variants, batch_from_layout(scenario.layout, scenario.event), scenario.geometry,
        placement, kinds=kinds, path=path, size=size, workload=None, scenario=scenario,
        baseline=baseline, with_segments=with_segments, assumptions=[], preempt=preempt,
        watchdog_thresh_s=watchdog_thresh_s,
    )


def _estimate_batch(
    machine: Machine,
    variants: Sequence[Variant],
    batch: Batch,
    g: Geometry,
    placement_in: Placement | None,
    *,
    kinds: Sequence[str],
    path: str,
    size: int,
    workload: Workload | None,
    scenario: Any,
    baseline: str | None,
    with_segments: bool,
    assumptions: list[str],
    preempt: str,
    watchdog_thresh_s: float,
) -> Estimate:
    mi, placement = machine_inputs(machine, placement_in)
    specs = variant_specs(variants)
    names = [v.name for v in variants]
    base_idx = names.index(baseline) if baseline in names else 0
    b = evaluate(batch, specs, mi, baseline=base_idx, with_segments=with_segments)
    b = dataclasses.replace(b, notes=_notes(b, variants, kinds, mi.fwb))

    mapped: dict[int, int] = {}
    device = 0
    for e in range(batch.ext_lo.shape[1]):
        leaf = int(batch.ext_leaf[0, e])
        ext_size = int(batch.ext_hi[0, e] - batch.ext_lo[0, e])
        if leaf == 0:
            continue
        if batch.ext_dev[0, e]:
            device += ext_size
        else:
            mapped[leaf] = mapped.get(leaf, 0) + ext_size

    assumptions = list(assumptions)
    for f in machine.unknown_features():
        assumptions.append(f"feature {f} is unknown for {machine.name}: taken as absent")
    if any(machine.param_kind(f) == "assumed" for f in THETA_FIELDS):
        assumptions.append("* marks times that rest on assumed parameter values")
    warnings: list[str] = []
    mem = int(machine.value("memory_bytes"))
    if size > mem:
        warnings.append(
            f"the VM ({format_size(size)}) is larger than {machine.name}'s "
            f"installed memory ({format_size(mem)})"
        )
    if b.stretch_ns is not None and b.stretch_locked is not None:
        warnings.extend(
            stretch_warnings(
                names,
                [float(x) for x in b.stretch_ns[0]],
                [float(x) for x in b.stretch_locked[0]],
                preempt=preempt,
                watchdog_thresh_s=watchdog_thresh_s,
            )
        )
    return Estimate(
        breakdown=b,
        machine=machine,
        variants=tuple(variants),
        workload=workload,
        geometry=g,
        placement=placement,
        prices=mi.prices,
        mapped_by_leaf=mapped,
        device_bytes=device,
        assumptions=tuple(assumptions),
        warnings=tuple(warnings),
        extra={"path": path, "preempt": preempt},
        scenario=scenario,
    )


def evaluate_workloads(
    machine: Machine,
    variants: Sequence[Variant],
    workloads: Sequence[Workload],
    *,
    baseline: int = 0,
    with_segments: bool = False,
) -> Breakdown:
    """One Breakdown for many workloads (scenario axis in the given order), vectorised.

    Workloads are grouped by what shapes a batch (geometry, memslots, leaf sizes, event and
    placement) and each group is evaluated as one numpy batch.  Raises ValueError for a workload
    that cannot be laid out.
    """
    if not workloads:
        raise ValueError("workloads: expected at least one")
    specs = variant_specs(variants)
    groups: dict[tuple[object, ...], list[int]] = {}
    for i, w in enumerate(workloads):
        w.check()
        key = (w.geometry(), w.memslots, tuple(sorted(leaf for leaf, _ in w.backing)), w.event, w.placement)
        groups.setdefault(key, []).append(i)
    parts: list[tuple[list[int], Breakdown]] = []
    for idx in groups.values():
        ws = [workloads[i] for i in idx]
        mi, _ = machine_inputs(machine, ws[0].placement)
        parts.append((idx, evaluate(uniform_batch(ws), specs, mi, baseline=baseline,
                                    with_segments=with_segments)))
    order = np.argsort(np.concatenate([np.array(idx) for idx, _ in parts]), kind="stable")
    first = parts[0][1]
    if len(parts) == 1:
        return first

    def cat(name: str) -> Any:
        arrays = [getattr(b, name) for _, b in parts]
        if arrays[0] is None:
            return None
        return np.concatenate(arrays, axis=0)[order]

    segs = None
    if with_segments:
        flat = [seg for _, b in parts for seg in (b.segments or ())]
        segs = tuple(flat[i] for i in order)
    columns, coefficients = linear_from_events(cat("events"))
    return Breakdown(
        variants=first.variants,
        columns=columns,
        coefficients=coefficients,
        variant_row=np.arange(len(first.variants), dtype=np.intp),
        expansion=first.expansion,
        op_prices=first.op_prices,
        time_ns=cat("time_ns"),
        assumed_weights=first.assumed_weights,
        baseline=baseline,
        stretch_ns=cat("stretch_ns"),
        stretch_locked=cat("stretch_locked"),
        segments=segs,
    )


def totals(e: Estimate) -> dict[str, float]:
    """Stage-2 total (ns) per variant — a convenience for scripts."""
    s2 = e.breakdown.stage2_ns[0]
    return {v.name: float(s2[i]) for i, v in enumerate(e.variants)}


__all__ = ["Estimate", "estimate", "evaluate_workloads", "machine_inputs", "machine_prices", "totals"]
