"""estimate: exact counts × prices -> a Breakdown (variant × phase × scenario).

``time[s, v, phase] = Σ_event events[s, v, event] · W[event, phase]`` with
``W[event, phase] = Σ_op X[event, phase, op] · price[op]`` (X from `instructions.py`, prices
from `prices.py`).  The longest stretch between resched points is the largest Stage-2 time of
one segment (`counts.py`).  Pure: no I/O, no printing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from .behaviour import Behaviour
from .counts import Batch, Segments, count
from .instructions import Features, expansion
from .ops import OP_INDEX, OPS, PHASE_INDEX, PHASES, STAGE2_PHASES
from .prices import Prices

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

_STAGE2 = np.array([PHASE_INDEX[p] for p in STAGE2_PHASES])


def stage2_total(time_ns: F64) -> F64:
    """The Stage-2 total of phase times ``[..., PHASES]`` (every phase but the host's free)."""
    return time_ns[..., _STAGE2].sum(axis=-1)  # type: ignore[no-any-return]


def host_total(time_ns: F64) -> F64:
    """The host-side free (outside Stage-2) of phase times ``[..., PHASES]``."""
    return time_ns[..., PHASE_INDEX["host_free"]]


def dominant_phase(time_ns: F64) -> I64:
    """Index into PHASES of the largest Stage-2 phase of phase times ``[..., PHASES]``."""
    return _STAGE2[np.argmax(time_ns[..., _STAGE2], axis=-1)]  # type: ignore[no-any-return]


@dataclass(frozen=True)
class VariantSpec:
    """What the model needs of a variant: its name and one behaviour per invocation kind."""

    name: str
    behaviours: Mapping[str, Behaviour]


@dataclass(frozen=True)
class MachineInputs:
    """What the model needs of a machine: features that change counts, and prices."""

    features: Features
    fwb: bool
    cache_line: int
    prices: Prices
    tlbi_range: bool = False


@dataclass(frozen=True)
class Breakdown:
    """The one result object every view renders from (compute once, render many)."""

    variants: tuple[str, ...]
    unique_events: I64  # (S, U, EVENTS): one row per distinct behaviour set
    variant_row: npt.NDArray[np.intp]  # (V,) the row of each variant
    expansion: I64  # (EVENTS, PHASES, OPS)
    op_prices: F64  # (OPS,)
    time_ns: F64  # (S, V, PHASES)
    assumed_weights: npt.NDArray[np.bool_]  # (EVENTS, PHASES): the event's cost there is assumed
    baseline: int  # index of the variant speedups are relative to
    stretch_ns: F64 | None = None  # (S, V) longest Stage-2 stretch between resched points
    stretch_locked: F64 | None = None  # (S, V) longest stretch holding mmu_lock (0: none)
    segments: tuple[tuple[Segments, ...], ...] | None = None  # [s][v]
    notes: Mapping[tuple[int, str], str] = field(default_factory=dict)  # (variant, phase) -> why 0

    @property
    def assumed(self) -> npt.NDArray[np.bool_]:
        """(S, V, PHASES): the phase's time rests on an assumed parameter value (on demand)."""
        present = (self.unique_events > 0).astype(np.float64)
        flags = present @ self.assumed_weights.astype(np.float64) > 0
        return flags[:, self.variant_row]

    @property
    def events(self) -> I64:
        """Exact kernel-event counts (S, V, EVENTS), materialised on demand."""
        return self.unique_events[:, self.variant_row]

    @property
    def op_counts(self) -> I64:
        """Exact operation counts (S, V, PHASES, OPS)."""
        return np.einsum("sve,epo->svpo", self.events, self.expansion)  # type: ignore[no-any-return]

    @property
    def stage2_ns(self) -> F64:
        return stage2_total(self.time_ns)

    @property
    def host_ns(self) -> F64:
        return host_total(self.time_ns)

    @property
    def speedup(self) -> F64:
        s2 = self.stage2_ns
        base = s2[:, self.baseline : self.baseline + 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(s2 > 0, base / s2, np.inf)

    @property
    def dominant(self) -> I64:
        """Index into PHASES of the largest Stage-2 phase, per (scenario, variant)."""
        return dominant_phase(self.time_ns)

    def phase_ops(self, s: int, v: int, phase: str) -> list[tuple[str, int, float]]:
        """(op, count, unit price) of the operations a phase is made of (non-zero counts)."""
        ev = self.unique_events[s, self.variant_row[v]]
        oc = np.einsum("e,eo->o", ev, self.expansion[:, PHASE_INDEX[phase], :])
        return [(OPS[o], int(oc[o]), float(self.op_prices[o])) for o in range(len(OPS)) if oc[o]]


def weights(x: I64, op_prices: F64) -> F64:
    """W[event, phase]: ns per occurrence of each event, charged to its phase."""
    return np.einsum("epo,o->ep", x.astype(np.float64), op_prices)  # type: ignore[no-any-return]


def evaluate(
    batch: Batch,
    variants: Sequence[VariantSpec],
    machine: MachineInputs,
    *,
    baseline: int = 0,
    with_segments: bool = False,
    notes: Mapping[tuple[int, str], str] | None = None,
) -> Breakdown:
    c = count(
        batch,
        [v.behaviours for v in variants],
        fwb=machine.fwb,
        tlbi_range=machine.tlbi_range,
        cache_line=machine.cache_line,
        with_segments=with_segments,
    )
    x = expansion(machine.features)
    prices = machine.prices.ops
    w = weights(x, prices)
    time = np.take(c.unique.astype(np.float64) @ w, c.variant_row, axis=1)
    assumed_op = np.zeros(len(OPS), dtype=bool)
    for op in machine.prices.assumed_ops:
        assumed_op[OP_INDEX[op]] = True
    w_assumed = np.einsum("epo,o->ep", x, assumed_op.astype(np.int64)) > 0
    stretch = None
    stretch_locked = None
    if c.segments is not None:
        w2 = w[:, _STAGE2].sum(axis=1)
        times = [[seg.rows.astype(np.float64) @ w2 for seg in per_v] for per_v in c.segments]
        stretch = np.array([[float(t.max()) for t in per_v] for per_v in times])
        stretch_locked = np.array(
            [
                [float(np.where(seg.lock_rows, t, 0.0).max()) for seg, t in zip(per_seg, per_t, strict=True)]
                for per_seg, per_t in zip(c.segments, times, strict=True)
            ]
        )
    return Breakdown(
        variants=tuple(v.name for v in variants),
        unique_events=c.unique,
        variant_row=c.variant_row,
        expansion=x,
        op_prices=prices,
        time_ns=time,
        assumed_weights=w_assumed,
        baseline=baseline,
        stretch_ns=stretch,
        stretch_locked=stretch_locked,
        segments=c.segments,
        notes=dict(notes or {}),
    )


__all__ = ["Breakdown", "MachineInputs", "VariantSpec", "evaluate", "weights", "PHASES"]
