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
from s2teardown.core.detectors import (
    DEFAULT_RCU_STALL_TIMEOUT_S,
    DEFAULT_RESCHED_LATENCY_WARN_MS,
    DEFAULT_WATCHDOG_THRESH_S,
    DetectorSettings,
    firings,
    kernel_release,
)
from s2teardown.core.el2 import HOST_MANAGED, PKVM_PROTECTED_TEARDOWN, El2Path, path_for
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

#: Lock-hold thresholds by default (the detectors, their rules and kernel sources:
#: core/detectors.py, docs/model.md §11.5): need_resched latency warning past
#: resched_latency_warn_ms = 100 ms (v5.13+, LATENCY_WARN only); the soft-lockup detector at
#: 2 × watchdog_thresh = 20 s; the RCU CPU stall at CONFIG_RCU_CPU_STALL_TIMEOUT = 21 s.
NEED_RESCHED_NS = DEFAULT_RESCHED_LATENCY_WARN_MS * 1e6
SOFT_LOCKUP_NS = 2.0 * DEFAULT_WATCHDOG_THRESH_S * 1e9
RCU_STALL_NS = DEFAULT_RCU_STALL_TIMEOUT_S * 1e9

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
    lock_holds: tuple[LockHold, ...] = ()  # every detector each variant's stretch trips
    detectors: DetectorSettings = field(default_factory=DetectorSettings)  # the knobs in force

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
            ("hugetlb " if leaf in w.hugetlb else "")
            + (f"{format_size(leaf)} leaves {pct:g}%" if len(w.backing) > 1 else f"{format_size(leaf)} leaves")
            for leaf, pct in w.backing
        )
        auto = " (auto)" if w.ipa_bits is None else ""
        return (
            f"{format_size(w.vm_bytes)} = {w.vm_bytes:,} bytes, {mix}, mapped {w.mapped:.0%}, "
            f"{g.ipa_bits}-bit IPA{auto}, {g.levels} levels, {format_size(g.granule)} granule, "
            f"{w.memslots} memslot{'s' if w.memslots > 1 else ''}, event {w.event}{el2_header(w, self.extra)}"
        )


def el2_header(w: Workload, extra: dict[str, str]) -> str:
    """The header's words for the EL2 paths (docs/model.md §15), empty for the ordinary model."""
    if w.kvm_mode is None and not w.protected_vm and not w.shadow_mmus:
        return ""
    out = f", kvm-arm.mode={extra.get('kvm_mode', w.kvm_mode)}"
    if w.kvm_mode == "protected":
        out += ", protected VM" if w.protected_vm else ", non-protected VM"
    if w.shadow_mmus:
        sizes = " + ".join(format_size(x) for x in w.shadow_mmus)
        out += f", {len(w.shadow_mmus)} shadow Stage-2 MMU{'s' if len(w.shadow_mmus) > 1 else ''} ({sizes})"
    return out


def el2_path_text(path: str, w: Workload) -> str:
    """The kernel path of the header, with the EL2 path the workload takes (docs/model.md §15)."""
    if w.kvm_mode == "protected":
        tree = ("KVM_PGT_FN -> pkvm_pgtable_stage2_destroy_range: __pkvm_start_teardown_vm (7.1+), per "
                "page HVC __pkvm_reclaim_dying_guest_page (hyp_poison_page) + unpin, account_locked_vm, "
                "kfree" if w.protected_vm else
                "KVM_PGT_FN -> pkvm_pgtable_stage2_{destroy,unmap}: per page HVC __pkvm_host_unshare_guest "
                "+ kfree")
        return (f"{path}; pKVM (6.14+): {tree}; notifier unmaps ignored for a protected VM; "
                "kvm_arch_destroy_vm -> pkvm_destroy_hyp_vm -> __pkvm_finalize_teardown_vm")
    if w.shadow_mmus:
        return (f"{path}; nested: kvm_arch_flush_shadow_all frees every nested_mmus[i] "
                "(kvm_free_stage2_pgd); each notifier unmap -> kvm_nested_s2_unmap: the whole IPA range of "
                "every shadow, then kvm_invalidate_vncr_ipa (6.16+)")
    return path


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


def variant_specs(variants: Sequence[Variant],
                  paths: Sequence[El2Path] | None = None) -> list[VariantSpec]:
    """What the model needs of each variant: behaviours, its kernel's instruction frame, and the
    EL2 path its kernel takes (default: the host-managed Stage-2)."""
    el2 = list(paths) if paths is not None else [HOST_MANAGED] * len(variants)
    return [VariantSpec(v.name, v.behaviours, frame_of(v, variants), p)
            for v, p in zip(variants, el2, strict=True)]


def kvm_mode_of(machine: Machine, workload: Workload) -> str:
    """``kvm-arm.mode`` in force: the workload's, else VHE where the machine has it, else nVHE."""
    mode = workload.kvm_mode or ("vhe" if machine.feature("vhe") else "nvhe")
    if mode == "vhe" and not machine.feature("vhe"):
        raise ValueError(f"kvm-mode: expected nvhe or protected on {machine.name}, which has no VHE")
    return mode


def el2_paths(
    machine: Machine, variants: Sequence[Variant], workload: Workload,
    releases: dict[str, tuple[int, ...]] | None = None,
) -> tuple[list[Variant], list[El2Path], list[str]]:
    """The variants that have a path for the workload's EL2 setting, their paths, and one
    warning naming those left out (docs/model.md §15.1).  A variant's kernel is ``releases``'
    entry for it (the version typed with ``--kernel``), else its own or its base's release."""
    from s2teardown.inputs.variants import parse_version

    mode = kvm_mode_of(machine, workload)
    kept: list[Variant] = []
    paths: list[El2Path] = []
    dropped: list[str] = []
    for v in variants:
        release = (releases or {}).get(v.name) or parse_version(variant_kernel(v, variants) or "")
        p = path_for(mode, workload.protected_vm, len(workload.shadow_mmus), release)
        if p is None:
            dropped.append(v.name)
        else:
            kept.append(v)
            paths.append(p)
    first = ".".join(map(str, PKVM_PROTECTED_TEARDOWN)) if workload.protected_vm else "6.11"
    what = ("a protected VM's teardown (__pkvm_start_teardown_vm, __pkvm_reclaim_dying_guest_page)"
            if workload.protected_vm else "shadow Stage-2 MMUs (kvm_nested_s2_unmap)")
    if not kept:
        flag = "protected-vm" if workload.protected_vm else "shadow-mmus"
        raise ValueError(f"{flag}: expected a kernel from Linux {first} on (--kernel {first} or later): "
                         f"{what} is not in {', '.join(dropped)}")
    warnings = [f"{', '.join(dropped)}: left out: {what} first appears in Linux {first}"] if dropped else []
    return kept, paths, warnings


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
    """One detector one variant's longest non-preemptible stretch would trip (core/detectors.py)."""

    variant: str
    threshold: str  # the detector: "need_resched" | "soft_lockup" | "rcu_stall"
    limit_ns: float  # its threshold in force
    stretch_ns: float  # the stretch it sees (with preempt=full: the longest holding mmu_lock)
    mmu_lock_held: bool
    what: str  # the threshold in force, in words ("2 × watchdog_thresh = 20 s")
    name: str = ""  # "soft lockup", "RCU CPU stall", "need_resched latency"
    message: str = ""  # as the kernel prints it, run-time values as N / TASK / PID
    format: str = ""  # the kernel's printf format, verbatim
    first_fire_ns: float = 0.0  # from the start of the stretch
    on_by_default: bool = True  # False: only with the LATENCY_WARN sched feature on
    preempt: str = "none"

    def as_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "limit_ns": self.limit_ns,
                "stretch_ns": self.stretch_ns, "mmu_lock_held": self.mmu_lock_held,
                "detector": self.name, "message": self.message, "format": self.format,
                "first_fire_ns": self.first_fire_ns, "first_fire_from": "stretch start",
                "on_by_default": self.on_by_default, "preempt": self.preempt}

    @property
    def line(self) -> str:
        """The warning line for this detector alone (`stretch_warnings` groups variants)."""
        return _warning_line(self.variant, self)


def lock_holds(
    names: Sequence[str],
    stretch_ns: Sequence[float],
    locked_ns: Sequence[float],
    *,
    preempt: str = "none",
    watchdog_thresh_s: float = DEFAULT_WATCHDOG_THRESH_S,
    rcu_stall_timeout_s: float = DEFAULT_RCU_STALL_TIMEOUT_S,
    kernels: Sequence[str | None] | None = None,
) -> list[LockHold]:
    """Every detector each variant's longest non-preemptible stretch trips, earliest first.

    With ``preempt=none`` or ``voluntary`` only resched points end a non-preemptible stretch;
    with ``full`` a stretch is non-preemptible only while it holds mmu_lock (a spinlock).
    ``kernels`` gives each variant's mainline release ("5.10"; None: unknown, taken to have
    every detector): a detector newer than the release (need_resched latency, v5.13) is left out.
    """
    settings = DetectorSettings(preempt=preempt, watchdog_thresh_s=watchdog_thresh_s,
                                rcu_stall_timeout_s=rcu_stall_timeout_s)
    if kernels is None:
        kernels = [None] * len(names)
    out: list[LockHold] = []
    for name, s_all, s_locked, k in zip(names, stretch_ns, locked_ns, kernels, strict=True):
        s = float(s_locked if preempt == "full" else s_all)
        for f in firings(s, kernel_release(k), settings):
            out.append(LockHold(
                name, f.key, f.threshold_ns, s, s_locked >= s, f.threshold_text,
                name=f.name, message=f.message, format=f.format, first_fire_ns=f.first_fire_ns,
                on_by_default=f.on_by_default, preempt=preempt,
            ))
    return out


def _warning_line(variants: str, h: LockHold) -> str:
    where = (f"the longest stretch without a resched point ({format_ns(h.stretch_ns)}"
             f"{', holding mmu_lock' if h.mmu_lock_held else ', mmu_lock not held'}, preempt={h.preempt})")
    gate = "" if h.on_by_default else (
        ", if the LATENCY_WARN sched feature is on (it is off by default)")
    return f"{variants}: {h.name} ({h.what}) at {format_ns(h.first_fire_ns)} into {where}{gate}: {h.message}"


def stretch_warnings(
    names: Sequence[str],
    stretch_ns: Sequence[float],
    locked_ns: Sequence[float],
    *,
    preempt: str = "none",
    watchdog_thresh_s: float = DEFAULT_WATCHDOG_THRESH_S,
    rcu_stall_timeout_s: float = DEFAULT_RCU_STALL_TIMEOUT_S,
    kernels: Sequence[str | None] | None = None,
) -> list[str]:
    """One warning line per (detector, stretch) shared by variants (see `lock_holds`)."""
    return holds_warnings(lock_holds(names, stretch_ns, locked_ns, preempt=preempt,
                                     watchdog_thresh_s=watchdog_thresh_s,
                                     rcu_stall_timeout_s=rcu_stall_timeout_s, kernels=kernels))


def holds_warnings(holds: Sequence[LockHold]) -> list[str]:
    """The warning lines of `lock_holds`' result: variants with the same stretch and detector
    share a line; a variant's lines in the order its detectors fire."""
    grouped: dict[tuple[float, str, bool, str], list[LockHold]] = {}
    for h in holds:
        grouped.setdefault((h.first_fire_ns, h.threshold, h.mmu_lock_held, format_ns(h.stretch_ns)),
                           []).append(h)
    return [_warning_line(", ".join(x.variant for x in hs), hs[0]) for hs in grouped.values()]


@functools.cache
def _bundled_kernels() -> dict[str, tuple[str | None, str | None]]:
    from s2teardown.inputs.variants import load_variants

    return {v.name: (v.kernel, v.base) for v in load_variants().variants}


def variant_kernel(var: Variant, pool: Sequence[Variant] = ()) -> str | None:
    """The mainline release a variant is (its ``kernel``) or is based on (its bases' ``kernel``,
    looked up in ``pool`` and then the bundled variants); None if none is known."""
    own = {v.name: (v.kernel, v.base) for v in pool}
    kernel, base = var.kernel, var.base
    seen = {var.name}
    while kernel is None and base is not None and base not in seen:
        seen.add(base)
        kernel, base = own.get(base) or _bundled_kernels().get(base) or (None, None)
    return kernel


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
    rcu_stall_timeout_s: float = DEFAULT_RCU_STALL_TIMEOUT_S,
    releases: dict[str, tuple[int, ...]] | None = None,
) -> Estimate:
    """Per-phase cost of tearing down ``workload`` on ``machine`` for each variant.

    ``releases`` names the kernel version a variant stands for (``--kernel 7.1`` picks the v6.19
    row: the EL2 paths follow 7.1).  Variants whose kernel has no path for the workload's EL2
    setting (a protected VM before 7.1) are left out with a warning (docs/model.md §15.1).
    Raises ValueError for a workload that cannot be laid out (the CLI maps it to exit 2).
    """
    from s2teardown.inputs.variants import parse_version

    workload.check()
    assumptions = []
    el2_warnings: list[str] = []
    paths: list[El2Path] | None = None
    mode = kvm_mode_of(machine, workload)
    if workload.kvm_mode is not None or workload.shadow_mmus:
        variants, paths, el2_warnings = el2_paths(machine, variants, workload, releases)
        if baseline not in [v.name for v in variants]:
            baseline = None
        if any(p != HOST_MANAGED for p in paths):
            assumptions.append("longest stretches and lock-hold warnings: not modelled on the pKVM "
                               "and nested paths (docs/model.md §15.6)")
        for name, rel in (releases or {}).items():
            own = next((parse_version(variant_kernel(v, variants) or "") for v in variants
                        if v.name == name), None)
            if own is not None and tuple(own[:2]) != tuple(rel[:2]):
                assumptions.append(f"{name} stands for kernel {'.'.join(map(str, rel))} (--kernel): "
                                   "its EL2 paths follow that release")
    if default_backing:
        assumptions.append(
            "backing defaults to 2 MiB leaves (THP), as the D05 calibration assumes; set --backing"
        )
    return _estimate_batch(
        machine, variants, uniform_batch([workload]), workload.geometry(), workload.placement,
        kinds=user_path(workload.event).kinds, path=el2_path_text(user_path(workload.event).kernel, workload),
        size=workload.vm_bytes,
        workload=workload, scenario=None, baseline=baseline, with_segments=with_segments,
        assumptions=assumptions, preempt=preempt, watchdog_thresh_s=watchdog_thresh_s,
        rcu_stall_timeout_s=rcu_stall_timeout_s, paths=paths, kvm_mode=mode if paths is not None else None, warnings_in=el2_warnings,
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
    rcu_stall_timeout_s: float = DEFAULT_RCU_STALL_TIMEOUT_S,
) -> Estimate:
    """The same for an explicit layout and event from a scenario file (`scenario.Scenario`)."""
    kinds = tuple(dict.fromkeys(inv.kind for inv in scenario.event))
    path = "scenario event: " + " then ".join(
        f"{inv.kind} [{inv.lo:#x}, {inv.hi:#x})" for inv in scenario.event
    )
    size = sum(s.hi - s.lo for s in scenario.layout.memslots)
    return _estimate_batch(
        machine, variants, batch_from_layout(scenario.layout, scenario.event, scenario.host), scenario.geometry,
        placement, kinds=kinds, path=path, size=size, workload=None, scenario=scenario,
        baseline=baseline, with_segments=with_segments, assumptions=[], preempt=preempt,
        watchdog_thresh_s=watchdog_thresh_s, rcu_stall_timeout_s=rcu_stall_timeout_s,
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
    rcu_stall_timeout_s: float = DEFAULT_RCU_STALL_TIMEOUT_S,
    paths: Sequence[El2Path] | None = None,
    kvm_mode: str | None = None,
    warnings_in: Sequence[str] = (),
) -> Estimate:
    mi, placement = machine_inputs(machine, placement_in)
    if kvm_mode is not None:  # kvm-arm.mode: nVHE and pKVM reach EL2 by HVC, VHE runs there
        mi = dataclasses.replace(mi, features=dataclasses.replace(mi.features, vhe=kvm_mode == "vhe"))
    specs = variant_specs(variants, paths)
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
    warnings: list[str] = list(warnings_in)
    mem = int(machine.value("memory_bytes"))
    if size > mem:
        warnings.append(
            f"the VM ({format_size(size)}) is larger than {machine.name}'s "
            f"installed memory ({format_size(mem)})"
        )
    holds: list[LockHold] = []
    if b.stretch_ns is not None and b.stretch_locked is not None:
        holds = lock_holds(
            names,
            [float(x) for x in b.stretch_ns[0]],
            [float(x) for x in b.stretch_locked[0]],
            preempt=preempt,
            watchdog_thresh_s=watchdog_thresh_s,
            rcu_stall_timeout_s=rcu_stall_timeout_s,
            kernels=[variant_kernel(v, variants) for v in variants],
        )
        warnings.extend(holds_warnings(holds))
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
        extra={"path": path, "preempt": preempt, **({"kvm_mode": kvm_mode} if kvm_mode else {})},
        scenario=scenario,
        lock_holds=tuple(holds),
        detectors=DetectorSettings(preempt=preempt, watchdog_thresh_s=watchdog_thresh_s,
                                   rcu_stall_timeout_s=rcu_stall_timeout_s),
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
        if w.kvm_mode is not None or w.protected_vm or w.shadow_mmus:
            raise ValueError("kvm-mode: expected workloads of the host-managed path here (the pKVM and "
                             "nested paths are estimated one workload at a time: estimate())")
        key = (w.geometry(), w.memslots, tuple(sorted(leaf for leaf, _ in w.backing)), w.event, w.placement,
               tuple(sorted(w.hugetlb)))
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
