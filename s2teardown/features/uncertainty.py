"""Uncertainty and sensitivity: what the ranges in a machine file do to an estimate.

The model is linear in the machine's physical parameters (docs/model.md §1, "the one idea")::

    time[s, v, phase] = Σ_event events[s, v, event] · Σ_op X[event, phase, op] · price[op]
    price[op]         = Σ_field D[op, field] · θ[field] + fixed[op]

so one coefficient tensor ``coef[s, v, phase, k]`` (computed once from the counts) turns any
vector of *linear terms* φ into times: ``time = coef · φ``.  The terms φ are

* every physical parameter θ (``THETA_FIELDS``, the columns of D);
* every explicit price of the machine's ``prices:`` section (``prices.<op>``): the model's
  ``fixed`` vector becomes a column too, so it can be sampled and has an elasticity;
* ``interconnect_latency_ns / cmo_outstanding``: the cross-socket share of a DC CIVAC line is
  ``2 · crossing · interconnect_latency_ns / cmo_outstanding``, the only place where the model is
  not linear in a ranged value.  Splitting that product out of D keeps the time linear in φ
  while ``cmo_outstanding`` (an assumed topology value with a range) is sampled as well.

With ``typical`` values φ₀, ``coef · φ₀`` equals the estimate's ``time_ns`` exactly (a test
checks it).  Sampling draws N parameter vectors, forms φ for each (an (N, K) matrix), and the
times of every (scenario, variant, phase) and of the Stage-2 total are **one matrix product**
``coef (R, K) · φᵀ (K, N)``, evaluated in row blocks to bound memory, then reduced to
percentiles.  There is no Python loop over samples.

Distributions (docs/uncertainty.md): every value with a range ``min < max`` is sampled, whatever
its source kind; a value without a range (or ``min = max``) stays fixed.  ``triangular`` (the
default) is triangular(min, typical, max); ``uniform`` is uniform(min, max); ``loguniform`` is
uniform in log between min and max and needs ``min > 0`` (a parameter with ``min = 0`` is
sampled uniformly instead, and the result says so).  The machine format has no per-parameter
``distribution`` key yet: the distribution is chosen for the whole run.  Draws come from
``numpy.random.default_rng(seed)`` (PCG64), one parameter after the other in the order of
`sampled_parameters`, so a seed reproduces a run exactly.

Sensitivity is exact, not a finite difference: each total T is linear in φ, so its elasticity
to a term is ``φ_k · coef_k / T`` (the share of T carried by that term); the elasticity to a
physical parameter sums the shares of the terms it appears in, with the exponent it has there
(+1 for ``interconnect_latency_ns`` in ``interconnect/cmo``, −1 for ``cmo_outstanding``).  By
Euler's theorem for a homogeneous-of-degree-1 total, the elasticities over θ sum to the share of
T that does not rest on an explicit price (1 when the machine has none).

Public API (the estimate command calls these; signatures in docs/uncertainty.md):
`monte_carlo`, `sensitivity`, `render_samples`, `sensitivity_table`, `samples_csv`,
`sensitivity_csv`, `samples_markdown`, `sensitivity_markdown`; for other commands the array
level `linear_form`, `sample_theta`, `sample_parameters`, `sample_percentiles`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from s2teardown.core.vocabulary import (
    HOST_PHASES,
    OP_INDEX,
    OPS,
    PHASE_INDEX,
    PHASES,
    STAGE2_PHASES,
)
from s2teardown.errors import UserError
from s2teardown.inputs.machine import THETA_FIELDS, Machine, Param

if TYPE_CHECKING:

    from s2teardown.core.model import Breakdown
    from s2teardown.core.prices import Prices
    from s2teardown.features.estimate import Estimate

F64 = npt.NDArray[np.float64]

__all__ = [
    "DEFAULT_SEED",
    "DISTRIBUTIONS",
    "MAX_SAMPLES",
    "PERCENTILES",
    "LinearForm",
    "SampledParameter",
    "linear_form",
    "monte_carlo",
    "sample_parameters",
    "sample_percentiles",
    "sample_theta",
    "sampled_parameters",
    "sensitivity",
]

#: Distributions a run may use (``--distribution``).
DISTRIBUTIONS: Final[tuple[str, ...]] = ("triangular", "uniform", "loguniform")
#: The seed used when none is given (the date of the P0 cover letter); always reported.
DEFAULT_SEED: Final = 20191213
#: Percentiles reported.
PERCENTILES: Final[tuple[float, ...]] = (5.0, 50.0, 95.0)
#: Largest --samples accepted (memory is bounded by blocks, but time is not).
MAX_SAMPLES: Final = 10_000_000
#: Elements of one block of the (rows × samples) product (32 MiB of float64).
_BLOCK_ELEMENTS: Final = 1 << 22
#: Kinds of source, the weakest first: a term built from several values takes the weakest.
_KIND_ORDER: Final[tuple[str, ...]] = ("assumed", "calibrated", "derived", "sourced")

_IC: Final = "interconnect_latency_ns"
_CMO: Final = "cmo_outstanding"
RATIO_TERM: Final = f"{_IC}/{_CMO}"
#: Row label of the Stage-2 total in sampled results.
TOTAL: Final = "stage2_total"


# ---------------------------------------------------------------------------------------------
# the linear form


@dataclass(frozen=True)
class SampledParameter:
    """One physical value the times depend on: its name, typical value, range and kind."""

    name: str  # a THETA field, "cmo_outstanding" or "prices.<op>"
    typical: float
    min: float
    max: float
    kind: str

    @property
    def ranged(self) -> bool:
        return self.max > self.min


@dataclass(frozen=True)
class LinearForm:
    """``time[s, v, phase] = coef[s, v, phase, :] @ phi`` for the terms φ named in ``terms``.

    ``parameters`` are the physical values the terms are made of; term ``k`` is
    ``parameters[num[k]]`` divided by ``parameters[den[k]]`` when ``den[k] >= 0``.
    """

    terms: tuple[str, ...]
    phi: F64  # (K,) typical values of the terms
    coef: F64  # (S, V, PHASES, K)
    parameters: tuple[SampledParameter, ...]
    num: npt.NDArray[np.intp]  # (K,)
    den: npt.NDArray[np.intp]  # (K,) -1: no denominator
    variants: tuple[str, ...]

    def times(self, phi: F64 | None = None) -> F64:
        """Times (S, V, PHASES) for one vector of terms (default: the typical values)."""
        return self.coef @ (self.phi if phi is None else phi)

    def phi_of(self, values: F64) -> F64:
        """Terms φ (…, K) from parameter values (…, P)."""
        out = values[..., self.num]
        has = self.den >= 0
        if bool(np.any(has)):
            out[..., has] = out[..., has] / values[..., self.den[has]]
        return out


def _param_of(machine: Machine, name: str) -> Param:
    if name.startswith("prices."):
        return machine.prices[name[len("prices."):]]
    if name == _CMO:
        return machine.topology[_CMO]
    return machine.parameters[name]


def _sampled(machine: Machine, name: str, value: float) -> SampledParameter:
    p = _param_of(machine, name)
    lo = value if p.min is None else float(p.min)
    hi = value if p.max is None else float(p.max)
    return SampledParameter(name, value, min(lo, value), max(hi, value), p.kind)


def linear_form(b: Breakdown, prices: Prices, machine: Machine) -> LinearForm:
    """The coefficient tensor of a breakdown: its times as a linear function of the terms φ.

    ``prices`` must be the prices the breakdown was evaluated with (``Estimate.prices``): they
    carry the placement's design matrix D.  Reads ``b.events`` once.
    """
    events = np.asarray(b.events, dtype=np.float64)  # (S, V, E): read once
    x = np.asarray(b.expansion, dtype=np.float64)  # (V, E, P, O)
    fields = tuple(prices.theta_fields)
    d = np.array(prices.design, dtype=np.float64, copy=True)  # (O, F)
    line = OP_INDEX["dc_civac_line"]
    ic = fields.index(_IC)
    cmo0 = float(machine.number(_CMO))
    ratio_coef = float(d[line, ic]) * cmo0  # 2 · crossing (0 when the line is an explicit price)
    d[line, ic] = 0.0
    over = [op for op in OPS if op in prices.overridden]
    columns = [d]
    terms: list[str] = list(fields)
    params = [_sampled(machine, f, float(prices.theta[i])) for i, f in enumerate(fields)]
    num = list(range(len(fields)))
    den = [-1] * len(fields)
    if over:
        extra = np.zeros((len(OPS), len(over)))
        for k, op in enumerate(over):
            extra[OP_INDEX[op], k] = 1.0
            terms.append(f"prices.{op}")
            params.append(_sampled(machine, f"prices.{op}", float(prices.fixed[OP_INDEX[op]])))
            num.append(len(params) - 1)
            den.append(-1)
        columns.append(extra)
    if ratio_coef != 0.0:
        col = np.zeros((len(OPS), 1))
        col[line, 0] = ratio_coef
        columns.append(col)
        terms.append(RATIO_TERM)
        params.append(_sampled(machine, _CMO, cmo0))
        num.append(ic)
        den.append(len(params) - 1)
    d_ext = np.concatenate(columns, axis=1)  # (O, K)
    w_ext = np.einsum("vepo,ok->vepk", x, d_ext)  # (V, E, P, K): ns per event per unit of each term
    coef = np.einsum("sve,vepk->svpk", events, w_ext)
    values = np.array([p.typical for p in params])
    num_a = np.array(num, dtype=np.intp)
    den_a = np.array(den, dtype=np.intp)
    phi = values[num_a].copy()
    has = den_a >= 0
    phi[has] = phi[has] / values[den_a[has]]
    return LinearForm(tuple(terms), phi, coef, tuple(params), num_a, den_a, tuple(b.variants))


# ---------------------------------------------------------------------------------------------
# sampling


def _check_n(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or not 1 <= int(n) <= MAX_SAMPLES:
        raise UserError("--samples", None, None, f"a whole number of samples in 1..{MAX_SAMPLES:,}",
                        repr(n))


def _check_distribution(distribution: str) -> None:
    if distribution not in DISTRIBUTIONS:
        raise UserError("--distribution", None, None, "one of " + ", ".join(DISTRIBUTIONS),
                        repr(distribution))


def _check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or int(seed) < 0:
        raise UserError("--seed", None, None, "a whole number >= 0", repr(seed))


def _draw(
    params: Sequence[SampledParameter], n: int, seed: int, distribution: str
) -> tuple[F64, list[str]]:
    """(n, P) draws, one parameter after the other from one generator; notes on fallbacks."""
    rng = np.random.default_rng(int(seed))
    out = np.empty((n, len(params)))
    notes: list[str] = []
    for j, p in enumerate(params):
        if not p.ranged:
            out[:, j] = p.typical
        elif distribution == "triangular":
            out[:, j] = rng.triangular(p.min, p.typical, p.max, n)
        elif distribution == "uniform" or p.min <= 0.0:
            if distribution == "loguniform":
                notes.append(f"{p.name}: min is {p.min:g}, so it was sampled uniformly, not "
                             "log-uniformly")
            out[:, j] = rng.uniform(p.min, p.max, n)
        else:
            out[:, j] = np.exp(rng.uniform(np.log(p.min), np.log(p.max), n))
    return out, notes


def sampled_parameters(machine: Machine) -> tuple[SampledParameter, ...]:
    """The θ parameters of a machine with their ranges, in THETA_FIELDS order."""
    return tuple(_sampled(machine, f, float(machine.number(f))) for f in THETA_FIELDS)


def sample_theta(
    machine: Machine, n: int, seed: int = DEFAULT_SEED, distribution: str = "triangular"
) -> F64:
    """(n, len(THETA_FIELDS)) parameter vectors drawn from the machine's ranges.

    A parameter without a range (or with min = max) is fixed at its value.  With the same seed,
    these are exactly the θ columns `monte_carlo` draws (θ is drawn first).
    """
    _check_n(n)
    _check_seed(seed)
    _check_distribution(distribution)
    return _draw(sampled_parameters(machine), int(n), seed, distribution)[0]


def sample_parameters(
    form: LinearForm, n: int, seed: int = DEFAULT_SEED, distribution: str = "triangular"
) -> tuple[F64, list[str]]:
    """(n, P) draws of every parameter of a linear form (θ first), and notes on fallbacks."""
    _check_n(n)
    _check_seed(seed)
    _check_distribution(distribution)
    return _draw(form.parameters, int(n), seed, distribution)


def _rows(form: LinearForm) -> F64:
    """(S, V, PHASES + 1, K): each phase, then the Stage-2 total."""
    st = np.array([PHASE_INDEX[p] for p in STAGE2_PHASES])
    total = form.coef[:, :, st, :].sum(axis=2, keepdims=True)
    return np.concatenate([form.coef, total], axis=2)


def sample_percentiles(
    form: LinearForm,
    n: int,
    seed: int = DEFAULT_SEED,
    distribution: str = "triangular",
    q: Sequence[float] = PERCENTILES,
) -> tuple[F64, F64, list[str]]:
    """Percentiles and means of sampled times.

    Returns ``(pct, mean, notes)``: ``pct`` is (len(q), S, V, PHASES + 1) and ``mean`` is
    (S, V, PHASES + 1), the last phase index being the Stage-2 total.  All samples are evaluated
    as one matrix product per block of rows; rows that depend on no sampled value are exact.
    """
    draws, notes = sample_parameters(form, n, seed, distribution)
    phi = form.phi_of(draws)  # (N, K)
    rows4 = _rows(form)
    shape = rows4.shape[:-1]
    rows = rows4.reshape(-1, rows4.shape[-1])  # (R, K)
    typical = rows @ form.phi
    pct = np.repeat(typical[None, :], len(q), axis=0)
    mean = typical.copy()
    varying_terms = np.ptp(phi, axis=0) > 0.0  # (K,)
    live = np.flatnonzero(np.any(rows[:, varying_terms] != 0.0, axis=1))
    if live.size:
        # variants share most phases: evaluate each distinct row once, then scatter back
        uniq, inverse = np.unique(rows[live], axis=0, return_inverse=True)
        phi_t = np.ascontiguousarray(phi.T)  # (K, N)
        block = max(1, _BLOCK_ELEMENTS // int(n))
        qs = np.asarray(q, dtype=np.float64)
        upct = np.empty((len(q), uniq.shape[0]))
        umean = np.empty(uniq.shape[0])
        for start in range(0, uniq.shape[0], block):
            sl = slice(start, start + block)
            t = uniq[sl] @ phi_t  # (block, N): every sample of these rows at once
            upct[:, sl] = np.percentile(t, qs, axis=1)
            umean[sl] = t.mean(axis=1)
        inv = np.asarray(inverse).reshape(-1)
        pct[:, live] = upct[:, inv]
        mean[live] = umean[inv]
    return pct.reshape((len(q), *shape)), mean.reshape(shape), notes


def _num(x: float) -> float:
    return float(x)


def monte_carlo(
    est: Estimate, n: int, seed: int = DEFAULT_SEED, distribution: str = "triangular"
) -> dict[str, Any]:
    """Sample the machine's ranges ``n`` times: p5 / p50 / p95 per variant, per phase and of
    the Stage-2 total, for the estimate's (first) scenario.  A JSON-ready dict (base units: ns).

    Raises UserError (exit 2) for a bad ``n``, ``seed`` or ``distribution``.
    """
    form = linear_form(est.breakdown, est.prices, est.machine)
    pct, mean, notes = sample_percentiles(form, n, seed, distribution)
    typical = _rows(form) @ form.phi  # (S, V, PHASES + 1)
    labels = [*PHASES, TOTAL]
    variants = []
    for v, name in enumerate(form.variants):
        entry: dict[str, Any] = {"name": name}
        cells: dict[str, Any] = {}
        for i, label in enumerate(labels):
            cells[label] = {
                "typical_ns": _num(typical[0, v, i]),
                "mean_ns": _num(mean[0, v, i]),
                **{f"p{q:g}_ns": _num(pct[j, 0, v, i]) for j, q in enumerate(PERCENTILES)},
            }
        entry["phases"] = {p: cells[p] for p in PHASES}
        entry[TOTAL] = cells[TOTAL]
        variants.append(entry)
    return {
        "samples": int(n),
        "seed": int(seed),
        "distribution": distribution,
        "generator": "numpy.random.default_rng (PCG64)",
        "percentiles": list(PERCENTILES),
        "parameters": [
            {"name": p.name, "typical": p.typical, "min": p.min, "max": p.max, "kind": p.kind}
            for p in form.parameters
            if p.ranged
        ],
        "fixed_parameters": [p.name for p in form.parameters if not p.ranged],
        "notes": notes,
        "variants": variants,
    }


# ---------------------------------------------------------------------------------------------
# sensitivity


def _weakest(kinds: Sequence[str]) -> str:
    return min(kinds, key=lambda k: _KIND_ORDER.index(k) if k in _KIND_ORDER else 0)


def sensitivity(est: Estimate, total: str = "stage2") -> dict[str, Any]:
    """Elasticities of each variant's total to each parameter, and the share of each total
    resting on assumed values (by source kind).  ``total``: ``stage2`` (the Stage-2 total),
    ``host`` (the host side), ``host_free`` (its frees alone), ``end_to_end`` (Stage-2 + host)
    or ``all`` (every phase: the wall time).  A JSON-ready dict; elasticities are exact.
    """
    choices = {"stage2": STAGE2_PHASES, "host": HOST_PHASES, "host_free": ("host_free",),
               "end_to_end": STAGE2_PHASES + HOST_PHASES, "all": PHASES}
    if total not in choices:
        raise UserError("--sensitivity", None, None, "one of " + ", ".join(choices), repr(total))
    form = linear_form(est.breakdown, est.prices, est.machine)
    idx = np.array([PHASE_INDEX[p] for p in choices[total]])
    coef = form.coef[0][:, idx, :].sum(axis=1)  # (V, K)
    contrib = coef * form.phi  # (V, K): ns carried by each term
    t = contrib.sum(axis=1)  # (V,)
    params = form.parameters
    # exponent of each parameter in each term
    expo = np.zeros((len(form.terms), len(params)))
    for k in range(len(form.terms)):
        expo[k, form.num[k]] += 1.0
        if form.den[k] >= 0:
            expo[k, form.den[k]] -= 1.0
    term_kind = [
        _weakest([params[form.num[k]].kind] + ([params[form.den[k]].kind] if form.den[k] >= 0
                                                else []))
        for k in range(len(form.terms))
    ]
    explicit = np.array([name.startswith("prices.") for name in form.terms])
    variants = []
    for v, name in enumerate(form.variants):
        tv = float(t[v])
        if tv > 0:
            share = contrib[v] / tv
            el = share @ expo  # (P,)
            elasticity: dict[str, float | None] = {
                p.name: float(el[j]) for j, p in enumerate(params)
            }
            by_kind = {k: float(sum(share[i] for i in range(len(share)) if term_kind[i] == k))
                       for k in _KIND_ORDER}
            price_share: float | None = float(share[explicit].sum())
        else:
            elasticity = {p.name: None for p in params}
            by_kind = {k: 0.0 for k in _KIND_ORDER}
            price_share = None
        variants.append({
            "name": name,
            "total_ns": tv,
            "elasticity": elasticity,
            "share_by_kind": by_kind,
            "assumed_share": by_kind["assumed"] if tv > 0 else None,
            "explicit_price_share": price_share,
        })
    return {
        "total": total,
        "definition": "elasticity = d ln T / d ln parameter = the % change of the total for a 1% "
        "change of the parameter (exact: T is linear in the parameters)",
        "parameters": [{"name": p.name, "value": p.typical, "kind": p.kind} for p in params],
        "variants": variants,
    }




