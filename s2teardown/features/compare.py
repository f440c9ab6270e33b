"""Several estimates of one workload side by side (machines, variants or kernels): `compare`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from s2teardown.core.model import (
    dominant_phase,
    end_to_end_total,
    host_free,
    host_total,
    ratio,
    shown_phases,
    stage2_total,
    wall_total,
)
from s2teardown.core.vocabulary import PHASE_INDEX, PHASES, STAGE2_PHASES
from s2teardown.features.estimate import Estimate
from s2teardown.features.sweep import _STAGE2_IDX, F64


@dataclass(frozen=True)
class Comparison:
    """Several estimates of one workload side by side; entry 0 is the reference."""

    labels: tuple[str, ...]
    machines: tuple[str, ...]
    variants: tuple[str, ...]
    time_ns: F64  # (K, PHASES)

    @property
    def same(self) -> dict[str, str]:
        """What every entry shares and the labels therefore leave out: ``{"variant": "v5.5"}``
        when only machines differ, ``{"machine": "d05"}`` when only variants do."""
        out: dict[str, str] = {}
        if len(set(self.machines)) == 1:
            out["machine"] = self.machines[0]
        if len(set(self.variants)) == 1:
            out["variant"] = self.variants[0]
        return out

    @property
    def stage2_ns(self) -> F64:
        return stage2_total(self.time_ns)

    @property
    def host_free_ns(self) -> F64:
        return host_free(self.time_ns)

    @property
    def host_ns(self) -> F64:
        """The host side (zaps and frees) of each entry."""
        return host_total(self.time_ns)

    @property
    def end_to_end_ns(self) -> F64:
        return end_to_end_total(self.time_ns)

    @property
    def wall_ns(self) -> F64:
        return wall_total(self.time_ns)

    @property
    def end_to_end_speedup(self) -> F64:
        """The first entry's end-to-end time / each entry's (inf when 0)."""
        e = self.end_to_end_ns
        return ratio(e[0], e)

    @property
    def speedup(self) -> F64:
        """The first entry's Stage-2 total / each entry's (inf when 0)."""
        s2 = self.stage2_ns
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(s2 > 0, s2[0] / s2, np.inf)

    @property
    def dominant_phase(self) -> list[str]:
        """The largest Stage-2 phase of each entry."""
        return [PHASES[int(i)] for i in dominant_phase(self.time_ns)]

    @property
    def delta_ns(self) -> F64:
        """Each entry's phase times minus the first entry's, (K, PHASES)."""
        return self.time_ns - self.time_ns[0:1]

    def differs_most(self) -> list[tuple[str, float] | None]:
        """Per entry, the Stage-2 phase with the largest absolute difference from the first
        entry and that (signed) difference; None for the first entry and for an equal one.
        Ties go to the earlier phase."""
        d = self.delta_ns[:, _STAGE2_IDX]
        out: list[tuple[str, float] | None] = [None]
        for k in range(1, len(self.labels)):
            i = int(np.argmax(np.abs(d[k])))
            out.append(None if d[k, i] == 0 else (STAGE2_PHASES[i], float(d[k, i])))
        return out

    def most_different_phase(self) -> tuple[str, float] | None:
        """The Stage-2 phase whose time spreads most across all entries (max − min), or None."""
        t = self.time_ns[:, _STAGE2_IDX]
        spread = t.max(axis=0) - t.min(axis=0)
        i = int(np.argmax(spread))
        return None if spread[i] == 0 else (STAGE2_PHASES[i], float(spread[i]))

    def as_dict(self) -> dict[str, Any]:
        s2, host, speed, dom = self.stage2_ns, self.host_free_ns, self.speedup, self.dominant_phase
        dm = self.differs_most()
        md = self.most_different_phase()
        entries = []
        for k, label in enumerate(self.labels):
            sp = float(speed[k])
            d = dm[k]
            entries.append(
                {
                    "label": label,
                    "machine": self.machines[k],
                    "variant": self.variants[k],
                    "phases": {p: float(self.time_ns[k, PHASE_INDEX[p]]) for p in shown_phases(self.time_ns)},
                    "stage2_ns": float(s2[k]),
                    "host_free_ns": float(host[k]),
                    "host_ns": float(self.host_ns[k]),
                    "end_to_end_ns": float(self.end_to_end_ns[k]),
                    "wall_ns": float(self.wall_ns[k]),
                    "speedup": sp if np.isfinite(sp) else None,
                    "end_to_end_speedup": _finite(float(self.end_to_end_speedup[k])),
                    "dominant_phase": dom[k],
                    "differs_most": None if d is None else {"phase": d[0], "delta_ns": d[1]},
                }
            )
        return {
            "reference": self.labels[0],
            "same": self.same,
            "entries": entries,
            "most_different_phase": None if md is None else {"phase": md[0], "spread_ns": md[1]},
        }


def _finite(x: float) -> float | None:
    return x if np.isfinite(x) else None


def compare_estimates(
    estimates: Sequence[Estimate], *, order: Sequence[int] | None = None
) -> Comparison:
    """Every (estimate, variant) as an entry, machine-major; labels name what varies.

    ``order`` (variant indices, default each estimate's baseline first) orders the variants
    within a machine.  ValueError if there are fewer than two entries.
    """
    rows: list[tuple[str, str, F64]] = []
    for est in estimates:
        b = est.breakdown
        n_v = len(est.variants)
        idx = (
            list(order)
            if order is not None
            else [b.baseline] + [v for v in range(n_v) if v != b.baseline]
        )
        for v in idx:
            rows.append((est.machine.name, est.variants[v].name, b.time_ns[0, v]))
    if len(rows) < 2:
        raise ValueError("compare: expected at least two machines, variants or kernels")
    several_m = len({r[0] for r in rows}) > 1
    several_v = len({r[1] for r in rows}) > 1
    labels: list[str] = []
    for mach, var, _ in rows:
        if several_m and several_v:
            labels.append(f"{mach} · {var}")
        elif several_m:
            labels.append(mach)
        else:
            labels.append(var)
    return Comparison(
        labels=tuple(labels),
        machines=tuple(r[0] for r in rows),
        variants=tuple(r[1] for r in rows),
        time_ns=np.stack([r[2] for r in rows]),
    )
