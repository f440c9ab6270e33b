"""Sweeps and side-by-side comparisons: one workload description, many points, one model.

* **Sweeps** (`s2teardown sweep`): machines × VM sizes × backings × events, every variant at
  each point.  Each machine is one vectorised `api.evaluate_workloads` call over all its
  workloads; the result is one array ``time_ns[machine, vm, backing, event, variant, phase]``,
  rendered as a table, a long-form CSV, JSON, or a log-log plot (matplotlib, optional extra
  ``plot``).
* **Comparisons** (`s2teardown compare`): several estimates of one workload (machines,
  variants or kernels) side by side: totals, speedup against the first, dominant phase, and the
  phase where each differs most from the first.

Size ranges (`parse_sizes`): ``A..B:xK`` (geometric: A, A·K, A·K², … ≤ B), ``A..B:+S``
(arithmetic: A, A+S, … ≤ B), or a comma list of sizes and ranges; sizes as in
`units.parse_size` (binary prefixes).  Pure except `plot_sweep`, which writes one file.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from s2teardown.core.model import (
    dominant_phase,
    end_to_end_total,
    host_free,
    host_total,
    ratio,
    stage2_total,
    wall_total,
)
from s2teardown.core.vocabulary import EL2_PHASES, PHASE_INDEX, PHASES, STAGE2_PHASES
from s2teardown.errors import UserError
from s2teardown.features.estimate import evaluate_workloads
from s2teardown.inputs.machine import Machine
from s2teardown.inputs.units import Backing, backing_label, format_size, parse_size
from s2teardown.inputs.variants import Variant, VariantSet
from s2teardown.inputs.workload import Workload

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

#: A backing mix: ((leaf bytes, percent), ...), as `units.parse_backing` gives it.

#: Largest sweep accepted, in output rows (one row per machine, size, backing, event, variant
#: and phase — the long-form CSV).  Past it the CLI refuses with one line (exit 2).
MAX_ROWS = 1_000_000
#: Most values one range may expand to (a guard against ``1..1P:+1``).
MAX_RANGE_VALUES = 100_000

_STAGE2_IDX = np.array([PHASE_INDEX[p] for p in STAGE2_PHASES])
#: The phases a sweep reports: a sweep takes no EL2 flags (docs/model.md §15), so the pKVM
#: phases are 0 at every point and are left out of its rows.
SWEEP_PHASES = tuple(p for p in PHASES if p not in EL2_PHASES)

RANGE_HELP = (
    "A size, a range A..B:xK (geometric: A, A·K, A·K², … up to B) or A..B:+STEP (arithmetic), "
    "or a comma list of these; repeat the flag to add more."
)


# ---------------------------------------------------------------------------------------------
# ranges


def parse_sizes(text: str) -> list[int]:
    """Sizes from ``64G``, ``1G..1T:x2``, ``1G..4G:+1G`` or a comma list of these.

    The end of a range is included when the steps land on it.  Order is kept, duplicates are
    dropped.  ValueError (starting with "expected") for anything else.
    """
    out: dict[int, None] = {}  # ordered and duplicate-free in linear time
    parts = [p for p in text.split(",") if p.strip()]
    if not parts:
        raise ValueError(f"expected a size, a range A..B:xK or A..B:+STEP, or a list, got {text!r}")
    for part in parts:
        out.update(dict.fromkeys(_parse_one(part)))
    return list(out)


def _parse_one(part: str) -> list[int]:
    if ".." not in part:
        return [parse_size(part)]
    lo_s, _, rest = part.partition("..")
    hi_s, colon, step_s = rest.partition(":")
    step_s = step_s.strip()
    kind = step_s[:1].lower()
    if not colon or kind not in ("x", "+") or not step_s[1:].strip():
        raise ValueError(
            f"expected a range A..B:xK (geometric) or A..B:+STEP (arithmetic), got {part.strip()!r}"
        )
    step_s = step_s[1:]
    lo, hi = parse_size(lo_s), parse_size(hi_s)
    if lo <= 0 or hi < lo:
        raise ValueError(
            f"expected a range whose start is positive and <= its end, got {part.strip()!r}"
        )
    if kind == "+":
        step = parse_size(step_s)
        if step <= 0:
            raise ValueError(f"expected a positive step after '+', got {part.strip()!r}")
        n = (hi - lo) // step + 1
        if n > MAX_RANGE_VALUES:
            raise ValueError(
                f"expected a range of at most {MAX_RANGE_VALUES:,} values, "
                f"got {n:,} in {part.strip()!r}"
            )
        return [lo + i * step for i in range(n)]
    try:
        factor = Fraction(step_s.strip())
    except ValueError:
        raise ValueError(f"expected a number after 'x' (e.g. x2), got {part.strip()!r}") from None
    if factor <= 1:
        raise ValueError(f"expected a factor greater than 1 after 'x', got {part.strip()!r}")
    vals: list[int] = []
    v = Fraction(lo)
    while v <= hi:
        if v.denominator != 1:
            raise ValueError(
                f"expected whole bytes at every step, got {float(v):g} in {part.strip()!r}"
            )
        vals.append(int(v))
        if len(vals) > MAX_RANGE_VALUES:
            raise ValueError(
                f"expected a range of at most {MAX_RANGE_VALUES:,} values in {part.strip()!r}"
            )
        v *= factor
    return vals


def size_list(sizes: Sequence[int], most: int = 4) -> str:
    """``1 GiB, 2 GiB`` — or, past ``most`` sizes, ``5 GiB … 512 GiB (300 sizes)``."""
    if len(sizes) <= most:
        return ", ".join(format_size(s) for s in sizes)
    return f"{format_size(min(sizes))} … {format_size(max(sizes))} ({len(sizes)} sizes)"


# ---------------------------------------------------------------------------------------------
# variant selection (shared by sweep, compare and plan)


def select_variants(
    vs: VariantSet,
    names: Sequence[str],
    kernels: Sequence[str],
    baseline: str | None = None,
    *,
    flags: tuple[str, str, str] = ("--variants", "--kernel", "--baseline"),
) -> tuple[list[Variant], int]:
    """The variants named (comma lists allowed), then those in force at each kernel version;
    all variants if neither is given.  The baseline (default: the first) is put first if it was
    not chosen.  Returns (variants, index of the baseline)."""
    flat = [n.strip() for item in names for n in item.split(",") if n.strip()]
    chosen = vs.select(flat, flags[0]) if flat or not kernels else []
    for k in kernels:
        v = vs.for_kernel(k, flags[1])
        if v not in chosen:
            chosen.append(v)
    if baseline is None:
        return chosen, 0
    b = vs.lookup(baseline, flags[2])
    if b not in chosen:
        chosen = [b, *chosen]
    return chosen, chosen.index(b)


# ---------------------------------------------------------------------------------------------
# sweeps


@dataclass(frozen=True)
class SweepResult:
    """Every point of a sweep: ``time_ns[machine, vm, backing, event, variant, phase]`` (ns)."""

    machines: tuple[str, ...]
    vm_bytes: tuple[int, ...]
    backings: tuple[Backing, ...]
    events: tuple[str, ...]
    variants: tuple[str, ...]
    baseline: int
    time_ns: F64  # (M, N, B, E, V, PHASES)
    warnings: tuple[str, ...] = ()
    hugetlb: tuple[tuple[int, ...], ...] = ()  # per backing: its hugetlbfs leaf sizes (none: ())

    def backing_label(self, b: int) -> str:
        """The --backing text of backing ``b`` (``hugetlb-2M`` for a hugetlbfs share)."""
        return backing_label(self.backings[b], self.hugetlb[b] if self.hugetlb else ())

    @property
    def stage2_ns(self) -> F64:
        """Stage-2 total (every phase but host_free), shape (M, N, B, E, V)."""
        return stage2_total(self.time_ns)

    @property
    def host_free_ns(self) -> F64:
        return host_free(self.time_ns)

    @property
    def host_ns(self) -> F64:
        """The host side (zaps and frees), shape (M, N, B, E, V)."""
        return host_total(self.time_ns)

    @property
    def end_to_end_ns(self) -> F64:
        return end_to_end_total(self.time_ns)

    @property
    def wall_ns(self) -> F64:
        return wall_total(self.time_ns)

    @property
    def end_to_end_speedup(self) -> F64:
        """Baseline end-to-end time / this variant's, at each point (inf when 0)."""
        e = self.end_to_end_ns
        return ratio(e[..., self.baseline : self.baseline + 1], e)

    @property
    def dominant_phase(self) -> I64:
        """Index into PHASES of the largest Stage-2 phase at each point."""
        return dominant_phase(self.time_ns)

    @property
    def speedup(self) -> F64:
        """Baseline Stage-2 total / this variant's, at each point (inf when 0)."""
        s2 = self.stage2_ns
        base = s2[..., self.baseline : self.baseline + 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(s2 > 0, base / s2, np.inf)

    @property
    def n_rows(self) -> int:
        return int(self.time_ns.size) // len(PHASES) * len(SWEEP_PHASES)

    def points(self) -> Iterator[tuple[int, int, int, int]]:
        """Indices (machine, vm, backing, event) in output order."""
        for m in range(len(self.machines)):
            for n in range(len(self.vm_bytes)):
                for b in range(len(self.backings)):
                    for e in range(len(self.events)):
                        yield m, n, b, e

    def to_csv(self) -> str:
        """Long form: machine, vm_bytes, backing, event, variant, phase, time_ns (one row each)."""
        out = io.StringIO()
        wr = csv.writer(out, lineterminator="\n")
        wr.writerow(["machine", "vm_bytes", "backing", "event", "variant", "phase", "time_ns"])
        labels = [self.backing_label(b) for b in range(len(self.backings))]
        for m, n, b, e in self.points():
            t = self.time_ns[m, n, b, e]
            head = [self.machines[m], self.vm_bytes[n], labels[b], self.events[e]]
            for v, name in enumerate(self.variants):
                for phase in SWEEP_PHASES:
                    wr.writerow([*head, name, phase, repr(float(t[v, PHASE_INDEX[phase]]))])
        return out.getvalue()

    def records(self) -> list[dict[str, Any]]:
        """One plain dict per (machine, vm, backing, event, variant), numbers in ns."""
        s2, host, dom, speed = self.stage2_ns, self.host_free_ns, self.dominant_phase, self.speedup
        h_all, e2e, wall, e2e_speed = self.host_ns, self.end_to_end_ns, self.wall_ns, self.end_to_end_speedup
        rows: list[dict[str, Any]] = []
        for m, n, b, e in self.points():
            for v, name in enumerate(self.variants):
                sp = float(speed[m, n, b, e, v])
                rows.append(
                    {
                        "machine": self.machines[m],
                        "vm_bytes": self.vm_bytes[n],
                        "backing": self.backing_label(b),
                        "event": self.events[e],
                        "variant": name,
                        "phases": {
                            p: float(self.time_ns[m, n, b, e, v, PHASE_INDEX[p]]) for p in SWEEP_PHASES
                        },
                        "stage2_ns": float(s2[m, n, b, e, v]),
                        "host_free_ns": float(host[m, n, b, e, v]),
                        "host_ns": float(h_all[m, n, b, e, v]),
                        "end_to_end_ns": float(e2e[m, n, b, e, v]),
                        "wall_ns": float(wall[m, n, b, e, v]),
                        "dominant_phase": PHASES[int(dom[m, n, b, e, v])],
                        "speedup": sp if np.isfinite(sp) else None,
                        "end_to_end_speedup": (float(e2e_speed[m, n, b, e, v])
                                               if np.isfinite(e2e_speed[m, n, b, e, v]) else None),
                    }
                )
        return rows

    def as_dict(self) -> dict[str, Any]:
        return {
            "axes": {
                "machines": list(self.machines),
                "vm_bytes": list(self.vm_bytes),
                "backings": [self.backing_label(b) for b in range(len(self.backings))],
                "events": list(self.events),
                "variants": list(self.variants),
                "phases": list(SWEEP_PHASES),
            },
            "baseline": self.variants[self.baseline],
            "warnings": list(self.warnings),
            "rows": self.records(),
        }


def sweep_rows(n_machines: int, n_vm: int, n_backings: int, n_events: int, n_variants: int) -> int:
    """Rows the long-form output of a sweep has (one per point, variant and phase)."""
    return n_machines * n_vm * n_backings * n_events * n_variants * len(SWEEP_PHASES)


def check_sweep_size(
    n_machines: int,
    n_vm: int,
    n_backings: int,
    n_events: int,
    n_variants: int,
    limit: int = MAX_ROWS,
) -> None:
    """UserError (one line) if the sweep would have more than ``limit`` rows."""
    rows = sweep_rows(n_machines, n_vm, n_backings, n_events, n_variants)
    if rows > limit:
        raise UserError(
            None,
            None,
            "sweep",
            f"at most {limit:,} rows (machines × VM sizes × backings × events × variants × "
            f"{len(SWEEP_PHASES)} phases)",
            f"{n_machines} × {n_vm} × {n_backings} × {n_events} × {n_variants} × {len(SWEEP_PHASES)} = "
            f"{rows:,}",
            "narrow the sweep or split it",
        )


def sweep_workloads(
    vm_sizes: Sequence[int],
    backings: Sequence[Backing],
    events: Sequence[str],
    *,
    mapped: float = 1.0,
    memslots: int = 1,
    granule: int = 4096,
    hugetlb: Sequence[tuple[int, ...]] = (),
) -> list[Workload]:
    """The workloads of a sweep in (vm, backing, event) order; UserError naming the first that
    cannot be laid out.  ``hugetlb``: per backing, its hugetlbfs leaf sizes (default none)."""
    out = []
    for vm in vm_sizes:
        for i, b in enumerate(backings):
            for ev in events:
                w = Workload(
                    vm_bytes=vm,
                    backing=b,
                    mapped=mapped,
                    memslots=memslots,
                    granule=granule,
                    event=ev,
                    hugetlb=tuple(hugetlb[i]) if hugetlb else (),
                )
                try:
                    w.check()
                except ValueError as exc:
                    raise UserError(
                        "--vm",
                        None,
                        None,
                        f"a VM size every backing can lay out ({exc})",
                        f"{format_size(vm)} with --backing "
                        f"{backing_label(b, tuple(hugetlb[i]) if hugetlb else ())}",
                    ) from None
                out.append(w)
    return out


def run_sweep(
    machines: Sequence[Machine],
    variants: Sequence[Variant],
    vm_sizes: Sequence[int],
    backings: Sequence[Backing],
    events: Sequence[str] = ("exit",),
    *,
    baseline: int = 0,
    mapped: float = 1.0,
    memslots: int = 1,
    granule: int = 4096,
    progress: Callable[[int], None] | None = None,
    limit: int = MAX_ROWS,
    hugetlb: Sequence[tuple[int, ...]] = (),
) -> SweepResult:
    """Evaluate every (machine, VM size, backing, event) for every variant.

    One `evaluate_workloads` call per machine; ``progress(n)`` is called after each with the
    number of points just done.  UserError for a sweep past ``limit`` rows or a workload that
    cannot be laid out.
    """
    if not machines or not variants or not vm_sizes or not backings or not events:
        raise ValueError("run_sweep: every axis needs at least one value")
    check_sweep_size(len(machines), len(vm_sizes), len(backings), len(events), len(variants), limit)
    ws = sweep_workloads(
        vm_sizes, backings, events, mapped=mapped, memslots=memslots, granule=granule, hugetlb=hugetlb
    )
    shape = (len(vm_sizes), len(backings), len(events), len(variants), len(PHASES))
    times = []
    warnings = []
    for m in machines:
        b = evaluate_workloads(m, variants, ws, baseline=baseline)
        times.append(b.time_ns.reshape(shape))
        mem = int(m.number("memory_bytes"))
        big = sorted(v for v in vm_sizes if v > mem)
        if big:
            warnings.append(
                f"{m.name}: VM sizes above its installed memory ({format_size(mem)}): "
                + size_list(big)
            )
        if progress is not None:
            progress(len(ws))
    return SweepResult(
        machines=tuple(m.name for m in machines),
        vm_bytes=tuple(vm_sizes),
        backings=tuple(backings),
        events=tuple(events),
        variants=tuple(v.name for v in variants),
        baseline=baseline,
        time_ns=np.stack(times),
        warnings=tuple(warnings),
        hugetlb=tuple(tuple(h) for h in hugetlb),
    )


# ---------------------------------------------------------------------------------------------
# plots


# ---------------------------------------------------------------------------------------------
# comparisons


__all__ = [
    "MAX_ROWS",
    "Backing",
    "SweepResult",
    "check_sweep_size",
    "parse_sizes",
    "run_sweep",
    "select_variants",
    "sweep_rows",
    "sweep_workloads",
]
