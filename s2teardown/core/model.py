"""estimate: exact counts × prices -> a Breakdown (variant × phase × scenario).

``time[s, v, phase] = Σ_event events[s, v, event] · W[event, phase]`` with
``W[event, phase] = Σ_op X[event, phase, op] · price[op]`` (X from `instructions.py`, prices
from `prices.py`).  Events are linear in a few structural quantities (`counts.py`:
``events[s, v] = columns[s] @ coefficients[row(v)]``), so the prices are folded into the
coefficients first and the whole breakdown is one matrix product per step of scenarios,
``time[s] = columns[s] @ (coefficients @ W)``; the int64 events are materialised only on demand.  The longest stretch between resched points is the largest Stage-2 time of
one segment (`counts.py`).  Pure: no I/O, no printing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import numpy.typing as npt

from s2teardown.core.behaviour import Behaviour
from s2teardown.core.counts import Batch, Segments, count, expand_linear, slice_batch
from s2teardown.core.el2 import HOST_MANAGED, El2Path
from s2teardown.core.instructions import DEFAULT_FRAME, Features, Frame, expansion
from s2teardown.core.prices import Prices
from s2teardown.core.vocabulary import (
    EL2_PHASES,
    HOST_PHASES,
    OP_INDEX,
    OPS,
    PHASE_INDEX,
    PHASES,
    STAGE2_PHASES,
    WAIT_PHASES,
)

#: Bumped whenever the model's equations change (docs/model.md keeps the changelog).
MODEL_VERSION = 7

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

_STAGE2 = np.array([PHASE_INDEX[p] for p in STAGE2_PHASES])
_HOST = np.array([PHASE_INDEX[p] for p in HOST_PHASES])
_WAIT = np.array([PHASE_INDEX[p] for p in WAIT_PHASES])


def stage2_total(time_ns: F64) -> F64:
    """The Stage-2 total of phase times ``[..., PHASES]`` (every phase but the host's free)."""
    return time_ns[..., _STAGE2].sum(axis=-1)  # type: ignore[no-any-return]


def host_free(time_ns: F64) -> F64:
    """The ``host_free`` phase of phase times ``[..., PHASES]`` (folios and tables freed)."""
    return time_ns[..., PHASE_INDEX["host_free"]]


def host_total(time_ns: F64) -> F64:
    """The host side (outside Stage-2: zaps and frees, core/host.py) of phase times."""
    return time_ns[..., _HOST].sum(axis=-1)  # type: ignore[no-any-return]


def end_to_end_total(time_ns: F64) -> F64:
    """CPU time of the whole teardown: Stage-2 + the host side (no waits)."""
    return stage2_total(time_ns) + host_total(time_ns)


def wall_total(time_ns: F64) -> F64:
    """Wall time: the end-to-end CPU time plus what the teardown waits for (SRCU)."""
    return end_to_end_total(time_ns) + time_ns[..., _WAIT].sum(axis=-1)  # type: ignore[no-any-return]


def shown_phases(time_ns: F64) -> tuple[str, ...]:
    """The phases a view lists for phase times ``[..., PHASES]``: every phase, but the EL2 ones
    (pKVM, docs/model.md §15) only where some time is spent in them."""
    t = np.asarray(time_ns).reshape(-1, len(PHASES))
    return tuple(p for p in PHASES
                 if p not in EL2_PHASES or bool(t[:, PHASE_INDEX[p]].any()))


def ratio(base: F64, x: F64) -> F64:
    """``base / x`` elementwise, inf where x is 0 (a speedup)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x > 0, base / np.where(x > 0, x, 1), np.inf)


def dominant_phase(time_ns: F64) -> I64:
    """Index into PHASES of the largest Stage-2 phase of phase times ``[..., PHASES]``."""
    return _STAGE2[np.argmax(time_ns[..., _STAGE2], axis=-1)]  # type: ignore[no-any-return]


@dataclass(frozen=True)
class VariantSpec:
    """What the model needs of a variant: its name and one behaviour per invocation kind."""

    name: str
    behaviours: Mapping[str, Behaviour]
    frame: Frame = DEFAULT_FRAME  # the kernel era's instruction frame (instructions.FRAMES)
    el2: El2Path = HOST_MANAGED  # the EL2 path its kernel takes for the workload (core/el2.py)


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
    columns: I64  # (S, C) structural quantities (counts.py)
    coefficients: I64  # (U, C, EVENTS): events per unit of each, per distinct behaviour set
    variant_row: npt.NDArray[np.intp]  # (V,) the behaviour set of each variant
    expansion: I64  # (V, EVENTS, PHASES, OPS): each variant's kernel frame
    op_prices: F64  # (OPS,)
    time_ns: F64  # (S, V, PHASES)
    assumed_weights: npt.NDArray[np.bool_]  # (V, EVENTS, PHASES): the event's cost there is assumed
    baseline: int  # index of the variant speedups are relative to
    stretch_ns: F64 | None = None  # (S, V) longest Stage-2 stretch between resched points
    stretch_locked: F64 | None = None  # (S, V) longest stretch holding mmu_lock (0: none)
    segments: tuple[tuple[Segments, ...], ...] | None = None  # [s][v]
    notes: Mapping[tuple[int, str], str] = field(default_factory=dict)  # (variant, phase) -> why 0

    @cached_property
    def unique_events(self) -> I64:
        """(S, U, EVENTS): exact event counts, one row per distinct behaviour set (on demand)."""
        return expand_linear(self.columns, self.coefficients)

    @property
    def assumed(self) -> npt.NDArray[np.bool_]:
        """(S, V, PHASES): the phase's time rests on an assumed parameter value (on demand)."""
        present = (self.events > 0).astype(np.float64)  # (S, V, E)
        return np.einsum("sve,vep->svp", present, self.assumed_weights.astype(np.float64)) > 0  # type: ignore[no-any-return]

    @property
    def events(self) -> I64:
        """Exact kernel-event counts (S, V, EVENTS), materialised on demand."""
        return self.unique_events[:, self.variant_row]

    @property
    def operations(self) -> I64:
        """Exact operation counts (S, V, PHASES, OPS)."""
        return np.einsum("sve,vepo->svpo", self.events, self.expansion)  # type: ignore[no-any-return]

    @property
    def stage2_ns(self) -> F64:
        return stage2_total(self.time_ns)

    @property
    def host_free_ns(self) -> F64:
        """(S, V) the host_free phase alone (folios and page-table pages freed)."""
        return host_free(self.time_ns)

    @property
    def host_ns(self) -> F64:
        """(S, V) the host side: every host phase (zaps and frees), outside Stage-2."""
        return host_total(self.time_ns)

    @property
    def end_to_end_ns(self) -> F64:
        """(S, V) CPU time of the whole teardown: Stage-2 + host side."""
        return end_to_end_total(self.time_ns)

    @property
    def wall_ns(self) -> F64:
        """(S, V) wall time: end to end plus the waits (SRCU grace periods)."""
        return wall_total(self.time_ns)

    @property
    def end_to_end_speedup(self) -> F64:
        """(S, V) the baseline's end-to-end time / each variant's."""
        e = self.end_to_end_ns
        return ratio(e[:, self.baseline : self.baseline + 1], e)

    @property
    def host_speedup(self) -> F64:
        """(S, V) the baseline's host side / each variant's (1 where the host side is equal)."""
        h = self.host_ns
        return ratio(h[:, self.baseline : self.baseline + 1], h)

    @property
    def speedup(self) -> F64:
        s2 = self.stage2_ns
        base = s2[:, self.baseline : self.baseline + 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(s2 > 0, base / s2, np.inf)

    @property
    def longest_stretch_ns(self) -> F64 | None:
        """(S, V) the JSON name of ``stretch_ns``: the longest stretch between resched points."""
        return self.stretch_ns

    @property
    def longest_locked_stretch_ns(self) -> F64 | None:
        """(S, V) the JSON name of ``stretch_locked``: the longest stretch holding mmu_lock."""
        return self.stretch_locked

    @property
    def dominant_phase(self) -> I64:
        """Index into PHASES of the largest Stage-2 phase, per (scenario, variant)."""
        return dominant_phase(self.time_ns)

    def phase_ops(self, s: int, v: int, phase: str) -> list[tuple[str, int, float]]:
        """(op, count, unit price) of the operations a phase is made of (non-zero counts)."""
        ev = self.unique_events[s, self.variant_row[v]]
        oc = np.einsum("e,eo->o", ev, self.expansion[v, :, PHASE_INDEX[phase], :])
        return [(OPS[o], int(oc[o]), float(self.op_prices[o])) for o in range(len(OPS)) if oc[o]]


def weights(x: I64, op_prices: F64) -> F64:
    """W[..., event, phase]: ns per occurrence of each event, charged to its phase (``x`` is one
    expansion (E, P, O) or one per variant (V, E, P, O))."""
    return np.einsum("...epo,o->...ep", x.astype(np.float64), op_prices)  # type: ignore[no-any-return]


#: Scenarios evaluated per step: one step's intermediate arrays stay in the CPU caches.
STEP = 16384


def price_map(coefficients: I64, variant_row: npt.NDArray[np.intp], w: F64) -> F64:
    """(C, V·PHASES): ns per unit of each quantity column, per variant and phase (``w`` is
    W[variant, event, phase])."""
    coef = coefficients.astype(np.float64)[variant_row]  # (V, C, EVENTS)
    per_variant = np.einsum("vce,vep->cvp", coef, w)  # (C, V, PHASES)
    return np.ascontiguousarray(per_variant).reshape(coefficients.shape[1], -1)


def evaluate(
    batch: Batch,
    variants: Sequence[VariantSpec],
    machine: MachineInputs,
    *,
    baseline: int = 0,
    with_segments: bool = False,
    notes: Mapping[tuple[int, str], str] | None = None,
    out: F64 | None = None,
) -> Breakdown:
    """Counts × prices for every scenario of ``batch`` and every variant, in steps of `STEP`
    scenarios written straight into the (S, V, PHASES) breakdown (``out`` if given: a
    C-contiguous float64 array of that shape, as numpy's ``out=``, reused across calls)."""
    x = np.stack([expansion(machine.features, v.frame) for v in variants]) if variants else \
        np.zeros((0, *expansion(machine.features).shape), dtype=np.int64)
    prices = machine.prices.ops
    w = weights(x, prices)
    n_s, n_v, n_p = batch.size, len(variants), len(PHASES)
    if out is None:
        time = np.empty((n_s, n_v, n_p))
    elif out.shape != (n_s, n_v, n_p) or out.dtype != np.float64 or not out.flags.c_contiguous:
        raise ValueError(f"out: expected a C-contiguous float64 array of shape {(n_s, n_v, n_p)}")
    else:
        time = out
    columns: I64 | None = None
    coefficients: I64 | None = None
    rows: npt.NDArray[np.intp] | None = None
    per_ns: F64 | None = None
    segments: list[tuple[Segments, ...]] = []
    for lo in range(0, max(n_s, 1), STEP):
        hi = min(n_s, lo + STEP)
        c = count(
            slice_batch(batch, lo, hi),
            [v.behaviours for v in variants],
            fwb=machine.fwb,
            tlbi_range=machine.tlbi_range,
            cache_line=machine.cache_line,
            with_segments=with_segments,
            paths=[v.el2 for v in variants],
        )
        if columns is None or coefficients is None or per_ns is None:
            coefficients, rows = c.coefficients, c.variant_row
            per_ns = price_map(coefficients, rows, w)
            columns = np.empty((n_s, coefficients.shape[1]), dtype=np.int64)
        elif not np.array_equal(c.coefficients, coefficients):  # pragma: no cover - invariant
            raise RuntimeError("the counts' linear form differs between steps of one batch")
        columns[lo:hi] = c.columns
        # columns that are zero in this whole step (no device pages, no range flush, ...) add
        # nothing: the product runs over the others only
        used = np.flatnonzero(c.columns.any(axis=0))
        np.matmul(c.columns[:, used].astype(np.float64), per_ns[used],
                  out=time[lo:hi].reshape(hi - lo, n_v * n_p))
        if c.segments is not None:
            segments.extend(c.segments)
    assert columns is not None and coefficients is not None and rows is not None
    assumed_op = np.zeros(len(OPS), dtype=bool)
    for op in machine.prices.assumed_ops:
        assumed_op[OP_INDEX[op]] = True
    w_assumed = np.einsum("vepo,o->vep", x, assumed_op.astype(np.int64)) > 0
    stretch = None
    stretch_locked = None
    segs = tuple(segments) if with_segments and len(segments) == n_s else None
    if segs is not None:
        w2 = w[:, :, _STAGE2].sum(axis=2)  # (V, EVENTS)
        times = [[seg.rows.astype(np.float64) @ w2[v] for v, seg in enumerate(per_v)] for per_v in segs]
        stretch = np.array([[float(t.max()) for t in per_v] for per_v in times])
        stretch_locked = np.array(
            [
                [float(np.where(seg.lock_rows, t, 0.0).max()) for seg, t in zip(per_seg, per_t, strict=True)]
                for per_seg, per_t in zip(segs, times, strict=True)
            ]
        )
    return Breakdown(
        variants=tuple(v.name for v in variants),
        columns=columns,
        coefficients=coefficients,
        variant_row=rows,
        expansion=x,
        op_prices=prices,
        time_ns=time,
        assumed_weights=w_assumed,
        baseline=baseline,
        stretch_ns=stretch,
        stretch_locked=stretch_locked,
        segments=segs,
        notes=dict(notes or {}),
    )


__all__ = ["Breakdown", "MachineInputs", "VariantSpec", "evaluate", "shown_phases", "weights", "PHASES"]
