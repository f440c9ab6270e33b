"""The library's front door for scripts: every public name in one import (docs/api.md).

It re-exports; nothing is defined here.  The layers behind it (README "Layout"):
`core` (the pure model), `oracle` (the literal walker), `inputs` (files and flags into typed
values), `features` (estimates, sweeps, plans, tables, calibration — compute only) and, for
`plot_sweep`, `render`.
"""

from __future__ import annotations

from s2teardown.core.detectors import DETECTORS, Detector, DetectorSettings
from s2teardown.core.geometry import Geometry
from s2teardown.core.layout import Layout
from s2teardown.core.model import Breakdown
from s2teardown.core.prices import Placement
from s2teardown.core.vocabulary import EVENTS, OPS, PHASES, STAGE2_PHASES
from s2teardown.errors import UserError
from s2teardown.features.compare import Comparison, compare_estimates
from s2teardown.features.estimate import (
    Estimate,
    LockHold,
    estimate,
    estimate_scenario,
    evaluate_workloads,
    lock_holds,
    machine_prices,
    totals,
)
from s2teardown.features.plan import (
    Concurrency,
    Fleet,
    Plan,
    fleet_from_text,
    load_fleet,
    plan,
    weighted_quantile,
)
from s2teardown.features.sweep import SweepResult, parse_sizes, run_sweep, select_variants
from s2teardown.inputs.machine import Machine, load_machine, machine_from_text
from s2teardown.inputs.scenario import load_scenario
from s2teardown.inputs.units import format_ns, format_size, parse_backing, parse_size
from s2teardown.inputs.variants import Variant, VariantSet, load_variants
from s2teardown.inputs.workload import Workload
from s2teardown.render.plot import plot_sweep

__all__ = [
    "Comparison", "Concurrency", "Fleet", "Plan", "SweepResult", "compare_estimates", "fleet_from_text",
    "load_fleet", "parse_sizes", "plan", "plot_sweep", "run_sweep", "select_variants",
    "weighted_quantile",
    "DETECTORS", "Detector", "DetectorSettings",
    "EVENTS", "OPS", "PHASES", "STAGE2_PHASES", "Breakdown", "Estimate", "Geometry", "Layout",
    "LockHold", "Machine", "Placement", "UserError", "Variant", "VariantSet", "Workload", "estimate",
    "estimate_scenario", "evaluate_workloads", "format_ns", "format_size", "load_machine",
    "load_scenario", "load_variants", "lock_holds", "machine_from_text", "machine_prices",
    "parse_backing", "parse_size", "totals",
]
