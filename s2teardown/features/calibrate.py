"""Calibration: fit a machine's physical parameters θ to measured teardown times.

The model's time is linear in θ (docs/architecture.md; docs/model.md §1): for one measured workload ``i``,
``time_i = a_i · θ + fixed_i`` with ``a_i = counts_i · X · D`` (ns per unit of each parameter,
from the exact counts of that workload and variant) and ``fixed_i`` the part priced by explicit
prices.  Stacking the rows gives ``A θ + fixed ≈ t``; the fit solves it for the parameters that
the data determine with non-negative least squares (scipy's ``nnls``, the optional extra
``fit``), keeping every other parameter at its prior value (its contribution is subtracted from
``t`` first).  A calibrated machine still has *physical* parameters, so "what if the
interconnect were twice as slow?" still works on it.

The CSV format, the weighting, the identifiability rules and the interval are documented in
docs/measuring.md ("The measurements file") and in :func:`fit`; in short:

* rows are weighted by ``1 / measured`` (relative residuals: a 10 ms row counts as much as a
  10 s one) unless ``weights="absolute"``;
* parameters are tried in order of how much their prior range could move the measured times;
  one is fitted only if the design stays well conditioned with it (condition number of the
  column-normalised, weighted design ≤ ``max_condition``) and a residual degree of freedom is
  left; the others are named with the fitted parameters they cannot be separated from;
* the interval of a fitted value is ``value ± t(1 − α/2, m − k) · se`` with
  ``se² = diag(σ² (AᵀA)⁻¹)`` and ``σ²`` the residual variance (``m`` rows, ``k`` fitted
  parameters), clipped at 0 — a linearisation that ignores the ``θ ≥ 0`` bound; a value whose
  interval is wider than its own size (half-width > ``max_rel_halfwidth`` × max(fit, prior)) is
  not determined by the data: it is dropped, named, left at its prior, and the fit is redone.

Pure apart from reading the CSV (`read_measurements`) — writing is the CLI's job
(`calibrated_machine_text` returns the text).
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import importlib
import io
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from s2teardown.core.prices import Placement
from s2teardown.core.vocabulary import HOST_PHASES, PHASE_INDEX, STAGE2_PHASES
from s2teardown.errors import UserError, describe
from s2teardown.inputs.files import FileKind, read_user_file
from s2teardown.inputs.machine import THETA_FIELDS, Machine, machine_from_text
from s2teardown.inputs.paths import RANGED
from s2teardown.inputs.units import GRANULE_BYTES, format_ns
from s2teardown.inputs.variants import Variant, VariantSet
from s2teardown.inputs.workload import EVENTS_SUPPORTED, Workload
from s2teardown.inputs.yamlio import did_you_mean

F64 = npt.NDArray[np.float64]

__all__ = [
    "COLUMNS",
    "REQUIRED_COLUMNS",
    "Calibration",
    "FittedParameter",
    "Measurement",
    "RowResult",
    "Unidentified",
    "calibrate",
    "calibrated_machine_text",
    "design",
    "fit",
    "read_measurements",
    "require_scipy",
]

#: Every column the measurements CSV may have (docs/measuring.md).
COLUMNS: Final[tuple[str, ...]] = (
    "vm", "vm_bytes", "backing", "event", "variant", "kernel", "seconds",
    "host_free_included", "mapped", "memslots", "range", "granule", "ipa_bits", "placement",
    "note",
)
#: Columns that must be there (``vm`` or ``vm_bytes``; ``variant`` or ``kernel``).
REQUIRED_COLUMNS: Final[tuple[str, ...]] = ("vm|vm_bytes", "backing", "event", "variant|kernel",
                                            "seconds")
#: Largest measurements file accepted.
MAX_CSV_BYTES: Final = 16 << 20
#: The measured times accepted (seconds): below a nanosecond or above a million seconds a time
#: is no measurement of a teardown, and its square (the fit's) would leave the float range.
MIN_SECONDS: Final = 1e-9
MAX_SECONDS: Final = 1e6
#: How the measurements file is read (inputs.files: regular files only, capped before reading).
CSV_FILE: Final = FileKind("a measurements CSV file", "an existing measurements CSV file",
                           MAX_CSV_BYTES)
#: Defaults of the fit (CLI flags --max-condition, --confidence).
MAX_CONDITION: Final = 1e4
MAX_REL_HALFWIDTH: Final = 1.0
CONFIDENCE: Final = 0.95
WEIGHTS: Final[tuple[str, ...]] = ("relative", "absolute")

_TRUE = {"true", "yes", "1", "y"}
_FALSE = {"false", "no", "0", "n", ""}


def require_scipy() -> tuple[Any, Any]:
    """(scipy.optimize, scipy.stats), or a one-line UserError (exit 2) naming the extra."""
    try:
        opt = importlib.import_module("scipy.optimize")
        stats = importlib.import_module("scipy.stats")
    except ImportError:
        raise UserError(
            "calibrate", None, None,
            "scipy for the NNLS fit (install the extra: pip install 's2teardown[fit]')",
            "no module named 'scipy'",
        ) from None
    return opt, stats


# ---------------------------------------------------------------------------------------------
# the measurements file


@dataclass(frozen=True)
class Measurement:
    """One row of the measurements CSV, checked and resolved."""

    line: int
    workload: Workload
    variant: Variant
    seconds: float
    host_free_included: bool
    label: str  # a short description for reports
    note: str = ""


def _kernel_version(text: str) -> str:
    """The ``kernel`` cell as typed (``6.8.0-47-generic``, ``6.1.0-57-cloud-arm64``, ``6.6.47``,
    ``v6.6``), for `VariantSet.for_kernel`, which parses it with `variants.parse_kernel`: the
    one parser of ``--kernel`` and of this column (a distribution ABI name keeps its meaning,
    stable sublevel unknown, docs/model.md §13)."""
    return text.strip()


def _cell_error(file: str, line: int, column: str, expected: str, got: str,
                hint: str | None = None) -> UserError:
    return UserError(file, line, column, expected, got, hint)


def _parse_row(
    file: str, line: int, row: Mapping[str, str], variants: VariantSet
) -> Measurement:
    from s2teardown.inputs.units import format_size, parse_backing, parse_range, parse_size

    def get(col: str) -> str:
        return row.get(col, "").strip()

    # size
    vm_t, vmb_t = get("vm"), get("vm_bytes")
    if bool(vm_t) == bool(vmb_t):
        raise _cell_error(file, line, "vm", "exactly one of vm (a size such as 64G) or vm_bytes",
                          "both" if vm_t else "neither")
    if vm_t:
        try:
            vm_bytes = parse_size(vm_t)
        except ValueError:
            raise _cell_error(file, line, "vm", "a size such as 64G (binary prefixes)",
                              describe(vm_t)) from None
    else:
        if not re.fullmatch(r"[0-9]+", vmb_t):
            raise _cell_error(file, line, "vm_bytes", "a whole number of bytes", describe(vmb_t))
        vm_bytes = int(vmb_t)
    # backing
    back_t = get("backing")
    if not back_t:
        raise _cell_error(file, line, "backing", "a leaf size such as 2M or a mix 2M:90,4K:10",
                          "an empty cell")
    try:
        backing = parse_backing(back_t)
    except ValueError as exc:
        raise _cell_error(file, line, "backing", "a leaf size such as 2M or a mix 2M:90,4K:10",
                          describe(back_t), str(exc)) from None
    # event
    event = get("event")
    if event not in EVENTS_SUPPORTED:
        raise _cell_error(file, line, "event", "one of " + ", ".join(EVENTS_SUPPORTED),
                          describe(event), did_you_mean(event, EVENTS_SUPPORTED))
    # variant or kernel
    var_t, ker_t = get("variant"), get("kernel")
    if bool(var_t) == bool(ker_t):
        raise _cell_error(file, line, "variant",
                          "exactly one of variant (e.g. v5.5) or kernel (e.g. 6.8.0-47-generic)",
                          "both" if var_t else "neither")
    try:
        if var_t:
            variant = variants.lookup(var_t, "variant")
        else:
            variant = variants.for_kernel(_kernel_version(ker_t), "kernel")
    except UserError as exc:
        col = "variant" if var_t else "kernel"
        raise exc.replace(file=file, line=line, field=col) from None
    # seconds
    sec_t = get("seconds")
    try:
        seconds = float(sec_t)
    except ValueError:
        raise _cell_error(file, line, "seconds", "a positive number of seconds",
                          describe(sec_t) if sec_t else "an empty cell") from None
    if not (math.isfinite(seconds) and seconds > 0):
        raise _cell_error(file, line, "seconds", "a positive number of seconds", sec_t)
    if not MIN_SECONDS <= seconds <= MAX_SECONDS:
        # a subnormal or a huge time would overflow the fit's weights and sums of squares
        raise _cell_error(file, line, "seconds",
                          f"a time from {MIN_SECONDS:g} s (1 ns) to {MAX_SECONDS:g} s (a teardown "
                          "measured on a real host)", sec_t)
    # optional
    hf_t = get("host_free_included").lower()
    if hf_t not in _TRUE | _FALSE:
        raise _cell_error(file, line, "host_free_included", "true or false (empty: false)",
                          describe(get("host_free_included")))
    host_free = hf_t in _TRUE

    def fraction(col: str, default: float) -> float:
        t = get(col)
        if not t:
            return default
        try:
            x = float(t)
        except ValueError:
            x = math.nan
        if not 0.0 <= x <= 1.0:
            raise _cell_error(file, line, col, "a fraction in [0, 1]", describe(t))
        return x

    def whole(col: str, default: int | None, lo: int, hi: int) -> int | None:
        t = get(col)
        if not t:
            return default
        if not re.fullmatch(r"[0-9]+", t) or not lo <= int(t) <= hi:
            raise _cell_error(file, line, col, f"a whole number in {lo}..{hi}", describe(t))
        return int(t)

    mapped = fraction("mapped", 1.0)
    memslots = whole("memslots", 1, 1, 1 << 15) or 1
    ipa_bits = whole("ipa_bits", None, 32, 48)
    gran_t = get("granule") or "4K"
    granules = GRANULE_BYTES
    if gran_t.upper() not in granules:
        raise _cell_error(file, line, "granule", "4K, 16K or 64K", describe(gran_t))
    granule = granules[gran_t.upper()]
    rng = None
    if get("range"):
        if event not in RANGED:
            raise _cell_error(file, line, "range", "an event that takes a range (" +
                              ", ".join(RANGED) + ")", f"event {event}")
        try:
            rng = parse_range(get("range"))
        except ValueError:
            raise _cell_error(file, line, "range", "OFFSET:SIZE such as 1G:4G",
                              describe(get("range"))) from None
    placement = None
    if get("placement"):
        try:
            fr = [float(x) for x in get("placement").split(",")]
        except ValueError:
            fr = []
        if len(fr) != 3 or any(not 0 <= x <= 1 for x in fr) or abs(sum(fr) - 1) > 1e-9:
            raise _cell_error(file, line, "placement", "three fractions L,S,R summing to 1",
                              describe(get("placement")))
        placement = Placement(*fr)
    w = Workload(vm_bytes=vm_bytes, backing=backing, mapped=mapped, memslots=memslots,
                 ipa_bits=ipa_bits, granule=granule, event=event, range=rng,
                 placement=placement)
    try:
        w.check()
    except ValueError as exc:
        col, _, rest = str(exc).partition(": ")
        raise _cell_error(file, line, col if rest else "vm",
                          (rest or str(exc)).removeprefix("expected "), "this row") from None
    label = f"{format_size(vm_bytes)} {back_t} {event} {variant.name}"
    return Measurement(line, w, variant, seconds, host_free, label, get("note"))


def read_measurements(
    path: str | Path, variants: VariantSet
) -> tuple[list[Measurement], str, str]:
    """(measurements, sha256 of the file's bytes, the file name errors use).

    Every problem is a one-line UserError ``FILE:LINE: column: expected ..., got ...``.
    """
    name = str(path)
    raw = read_user_file(path, CSV_FILE)
    sha = hashlib.sha256(raw).hexdigest()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(name, None, None, "UTF-8 text", f"invalid byte at offset {exc.start}") \
            from None
    if "\x00" in text:
        raise UserError(name, None, None, "a text CSV file", "binary content (a NUL byte)")
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    header_line = 0
    out: list[Measurement] = []
    try:
        for cells in reader:
            line = reader.line_num
            if not cells or all(not c.strip() for c in cells):
                continue
            if cells[0].lstrip().startswith("#"):
                continue
            if header is None:
                header = [c.strip().lower() for c in cells]
                header_line = line
                _check_header(name, line, header)
                continue
            if len(cells) != len(header):
                raise UserError(name, line, None,
                                f"{len(header)} cells as in the header (line {header_line})",
                                f"{len(cells)}")
            out.append(_parse_row(name, line, dict(zip(header, cells, strict=True)), variants))
    except csv.Error as exc:
        raise UserError(name, reader.line_num, None, "well-formed CSV", str(exc)) from None
    if header is None:
        raise UserError(name, None, None, "a header line naming the columns (" +
                        ", ".join(REQUIRED_COLUMNS) + ")", "an empty file")
    if not out:
        raise UserError(name, header_line, None, "at least one measurement row after the header",
                        "none")
    return out, sha, name


def _check_header(file: str, line: int, header: Sequence[str]) -> None:
    seen: set[str] = set()
    for col in header:
        if col in seen:
            raise UserError(file, line, col, "each column once", "a duplicate column")
        seen.add(col)
        if col not in COLUMNS:
            raise UserError(file, line, col or "(empty)", "a column of the measurements format ("
                            + ", ".join(COLUMNS) + ")", f"unknown column {col!r}",
                            did_you_mean(col, COLUMNS))
    for req in REQUIRED_COLUMNS:
        alts = req.split("|")
        if not any(a in seen for a in alts):
            raise UserError(file, line, None, "the columns " + ", ".join(REQUIRED_COLUMNS),
                            f"no column {' or '.join(repr(a) for a in alts)}")


# ---------------------------------------------------------------------------------------------
# the design matrix


@dataclass(frozen=True)
class Design:
    """``A θ + fixed ≈ t`` (ns) over the measurement rows; columns in THETA_FIELDS order."""

    a: F64  # (m, F)
    fixed: F64  # (m,)
    t: F64  # (m,)


def design(machine: Machine, measurements: Sequence[Measurement]) -> Design:
    """Each row's exact counts, computed once, times X · D: ns per unit of each parameter."""
    from s2teardown.features.estimate import estimate

    stage2 = [PHASE_INDEX[p] for p in STAGE2_PHASES]
    host = [PHASE_INDEX[p] for p in HOST_PHASES]  # the whole host side (docs/model.md §14)
    rows_a: list[F64] = []
    rows_f: list[float] = []
    for m in measurements:
        est = estimate(machine, [m.variant], m.workload, with_segments=False)
        b = est.breakdown
        ev = np.asarray(b.events, dtype=np.float64)[0, 0]  # (E,): read once
        x = np.asarray(b.expansion, dtype=np.float64)[0]  # (E, P, O): the one variant's frame
        phases = [*stage2, *host] if m.host_free_included else stage2
        op_counts = np.einsum("e,epo->po", ev, x)[phases].sum(axis=0)  # (O,)
        fields = tuple(est.prices.theta_fields)
        a = op_counts @ est.prices.design  # (F,)
        order = [fields.index(f) for f in THETA_FIELDS]
        rows_a.append(a[order])
        rows_f.append(float(op_counts @ est.prices.fixed))
    t = np.array([m.seconds * 1e9 for m in measurements])
    return Design(np.array(rows_a), np.array(rows_f), t)


# ---------------------------------------------------------------------------------------------
# the fit


@dataclass(frozen=True)
class FittedParameter:
    name: str
    prior: float
    prior_source: str
    prior_min: float | None
    prior_max: float | None
    value: float
    se: float
    lo: float
    hi: float
    at_bound: bool  # NNLS put it at 0


@dataclass(frozen=True)
class Unidentified:
    name: str
    reason: str


@dataclass(frozen=True)
class RowResult:
    line: int
    label: str
    measured_ns: float
    prior_ns: float
    fitted_ns: float

    @property
    def residual_rel(self) -> float:
        return (self.fitted_ns - self.measured_ns) / self.measured_ns


#: A fitted value more than this many times past its prior range is flagged (issue 13).
FAR_FROM_PRIOR = 100.0
#: A fit whose largest relative residual stays above this is flagged, with what the residuals
#: show the model lacks.
RESIDUAL_FLAG = 0.10


@dataclass(frozen=True)
class Diagnosis:
    """Something the fit says about the model: ``kind`` is ``far_from_prior`` (``name`` the
    parameter) or ``residuals`` (``name`` None)."""

    kind: str
    name: str | None
    text: str

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "text": self.text}


def _far_from_prior(f: FittedParameter, column: F64 | None = None) -> Diagnosis | None:
    hi = f.prior_max if f.prior_max is not None else f.prior
    lo = f.prior_min if f.prior_min is not None else f.prior
    if hi > 0 and f.value > FAR_FROM_PRIOR * hi:
        how = f"{f.value / hi:,.0f}× its prior maximum {hi:g} ns"
    elif lo > 0 and f.value < lo / FAR_FROM_PRIOR:
        how = f"1/{lo / max(f.value, 1e-300):,.0f} of its prior minimum {lo:g} ns"
    else:
        return None
    text = (f"{f.name} fitted {f.value:.4g} ns, {how} ({f.prior_source}): no physical value is "
            "that far off; the data ask it to carry work the model does not count")
    if column is not None and len(column) and float(np.ptp(column)) == 0.0 and column[0] > 0:
        text += (f" — it is counted {column[0]:g}× in every measurement, so it stands for a fixed "
                 f"cost of about {format_ns(f.value * float(column[0]))} per measurement (e.g. "
                 "the VMM's own exit, process teardown or the tracing itself)")
    else:
        text += " on the paths that use it"
    return Diagnosis("far_from_prior", f.name, text)


def _residual_pattern(rows: Sequence[RowResult],
                      constant: tuple[float, float] | None = None) -> Diagnosis | None:
    """Names what the residuals of a poor fit point at: a fixed cost per measurement (one
    constant removes most of them; ``constant`` is (c, largest relative residual) of the fit
    redone with a constant column, `_with_constant`; None: not tried), or a trend with the
    measurement's size."""
    if not rows:
        return None
    m = np.array([r.measured_ns for r in rows])
    f = np.array([r.fitted_ns for r in rows])
    rel = (f - m) / m
    worst = float(np.max(np.abs(rel)))
    if worst <= RESIDUAL_FLAG:
        return None
    head = (f"the residuals stay above {RESIDUAL_FLAG:.0%} after the fit (largest "
            f"{worst:.1%}, line {rows[int(np.argmax(np.abs(rel)))].line})")
    # the fit redone with a constant per measurement: it removes most of the residuals
    if constant is not None and constant[0] > 0 and constant[1] <= max(RESIDUAL_FLAG, worst / 2):
        c, after = constant
        return Diagnosis("residuals", None, (
            f"{head}: a fixed cost of about {format_ns(c)} per measurement explains them (largest "
            f"residual {after:.1%} with it) — work no counted operation carries, e.g. the VMM's "
            "own exit, process teardown or the tracing itself"))
    if len(rows) >= 3 and float(np.ptp(np.log(m))) > 0:
        r = float(np.corrcoef(np.log(m), rel)[0, 1])
        if abs(r) >= 0.7:
            way = "too low for the large ones" if r < 0 else "too high for the large ones"
            return Diagnosis("residuals", None, (
                f"{head}: the fit is {way} (correlation {r:+.2f} with log size) — a cost that "
                "grows with size differently from every fitted parameter (e.g. cache or TLB "
                "misses beyond the LLC, or a per-page step the model does not count)"))
    return Diagnosis("residuals", None, (
        f"{head}, with no fixed cost or size trend explaining them: some paths do work the model "
        "does not count; compare the rows of each path"))


def diagnose(fitted: Sequence[FittedParameter], rows: Sequence[RowResult],
             columns: Mapping[str, F64] | None = None,
             constant: tuple[float, float] | None = None) -> tuple[Diagnosis, ...]:
    """The fit's flags: every parameter far outside its prior range (``columns``: how many
    times each row counts it), and a poor fit's pattern (``constant``: see _residual_pattern)."""
    cols = columns or {}
    out = [d for d in (_far_from_prior(f, cols.get(f.name)) for f in fitted) if d is not None]
    pattern = _residual_pattern(rows, constant)
    return (*out, *([pattern] if pattern is not None else []))


@dataclass(frozen=True)
class Calibration:
    """The outcome of a fit: what was fitted, what could not be, and how well it fits."""

    fitted: tuple[FittedParameter, ...]
    unidentified: tuple[Unidentified, ...]
    theta: dict[str, float]  # every parameter after the fit
    rows: tuple[RowResult, ...]
    condition: float  # of the fitted columns (weighted, column-normalised)
    dof: int
    sigma: float  # residual standard deviation (relative with relative weights, else ns)
    weights: str
    confidence: float
    candidates: tuple[str, ...]
    extra: dict[str, Any] = field(default_factory=dict)
    #: Flags on the fit (`diagnose`): values far outside their priors, residuals above 10%.
    diagnoses: tuple[Diagnosis, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "weights": self.weights,
            "confidence": self.confidence,
            "condition_number": self.condition,
            "dof": self.dof,
            "residual_sigma": self.sigma,
            "residual_sigma_unit": "relative" if self.weights == "relative" else "ns",
            "interval_method": "value ± t(1-α/2, dof) · sqrt(diag(σ² (AᵀA)⁻¹)), clipped at 0 "
            "(residual variance, linearised; ignores the θ ≥ 0 bound)",
            "candidates": list(self.candidates),
            "fitted": [
                {"name": f.name, "prior": f.prior, "prior_source": f.prior_source,
                 "prior_min": f.prior_min, "prior_max": f.prior_max, "value": f.value,
                 "se": f.se, "min": f.lo, "max": f.hi, "at_bound": f.at_bound}
                for f in self.fitted
            ],
            "unidentified": [{"name": u.name, "reason": u.reason} for u in self.unidentified],
            "diagnoses": [dg.as_dict() for dg in self.diagnoses],
            "rows": [
                {"line": r.line, "workload": r.label, "measured_s": r.measured_ns / 1e9,
                 "prior_s": r.prior_ns / 1e9, "fitted_s": r.fitted_ns / 1e9,
                 "residual_rel": r.residual_rel}
                for r in self.rows
            ],
            **self.extra,
        }


def _names(cols: Sequence[int], coef: F64) -> str:
    if not len(cols):
        return "the parameters kept at their priors"
    mags = np.abs(coef)
    top = float(mags.max()) if mags.size else 0.0
    picked = [THETA_FIELDS[c] for c, m in sorted(zip(cols, mags, strict=True), key=lambda z: -z[1])
              if top > 0 and m >= 0.1 * top][:4]
    return ", ".join(picked) if picked else ", ".join(THETA_FIELDS[c] for c in cols[:4])


def fit(
    machine: Machine,
    d: Design,
    labels: Sequence[tuple[int, str]],
    *,
    params: Sequence[str] | None = None,
    weights: str = "relative",
    max_condition: float = MAX_CONDITION,
    max_rel_halfwidth: float = MAX_REL_HALFWIDTH,
    confidence: float = CONFIDENCE,
) -> Calibration:
    """Solve ``A θ ≈ t − fixed`` for the parameters the data determine (module docstring).

    ``params``: the candidates (THETA field names; default all).  ``labels``: (line, text) per
    row for the report.  Raises UserError if scipy is missing or nothing can be fitted.
    """
    opt, stats = require_scipy()
    if weights not in WEIGHTS:
        raise UserError("--weights", None, None, "relative or absolute", repr(weights))
    theta0 = np.array(machine.theta(), dtype=np.float64)
    m_rows, n_f = d.a.shape
    w = 1.0 / d.t if weights == "relative" else np.ones(m_rows)
    aw = d.a * w[:, None]
    cand = [THETA_FIELDS.index(p) for p in (params if params is not None else THETA_FIELDS)]
    unident: list[Unidentified] = []
    norms = np.linalg.norm(aw, axis=0)
    bounds = machine.theta_bounds()
    spread = []
    for j in cand:
        lo, hi = bounds[j]
        spread.append(hi - lo if hi > lo else abs(theta0[j]))
    live: list[int] = []
    why_zero = "no measurement exercises it (its column of counts × D is zero" + (
        "; explicit prices replace the operations of some parameters)" if machine.prices else ")")
    for j in cand:
        if norms[j] == 0.0:
            unident.append(Unidentified(THETA_FIELDS[j], why_zero))
        else:
            live.append(j)
    score = {j: norms[j] * s for j, s in zip(cand, spread, strict=True)}
    order = sorted(live, key=lambda j: (-score[j], j))
    scale = np.where(norms > 0, norms, 1.0)
    a_s = aw / scale  # column-normalised
    chosen: list[int] = []
    for j in order:
        if len(chosen) + 1 >= m_rows:
            unident.append(Unidentified(THETA_FIELDS[j], f"not enough rows: {m_rows} measurements "
                                        f"leave no residual degree of freedom for a further "
                                        "parameter"))
            continue
        trial = [*chosen, j]
        cond = float(np.linalg.cond(a_s[:, trial]))
        if math.isfinite(cond) and cond <= max_condition:
            chosen.append(j)
            continue
        if chosen:
            coef = np.linalg.lstsq(a_s[:, chosen], a_s[:, j], rcond=None)[0]
            with_ = _names(chosen, np.asarray(coef, dtype=np.float64))
        else:  # pragma: no cover - one normalised column has condition 1
            with_ = "nothing"
        cond_t = "infinite" if not math.isfinite(cond) else f"{cond:.3g}"
        unident.append(Unidentified(
            THETA_FIELDS[j],
            f"cannot be separated from {with_} in these measurements (condition number with it: "
            f"{cond_t} > {max_condition:g})"))
    if not chosen:
        raise UserError("calibrate", None, None,
                        "measurements that determine at least one parameter",
                        "none can be fitted: " + "; ".join(f"{u.name}: {u.reason}"
                                                           for u in unident[:3]))
    tq = 0.0
    while True:
        rest = [j for j in range(n_f) if j not in chosen]
        y = (d.t - d.fixed - d.a[:, rest] @ theta0[rest]) * w
        sub = a_s[:, chosen]
        z, rnorm = opt.nnls(sub, y)
        dof = m_rows - len(chosen)
        sigma2 = float(rnorm) ** 2 / dof
        try:
            cov = sigma2 * np.linalg.inv(sub.T @ sub)
        except np.linalg.LinAlgError:  # pragma: no cover - excluded by the condition test
            cov = np.full((len(chosen), len(chosen)), np.inf)
        se = np.sqrt(np.maximum(np.diag(cov), 0.0)) / scale[chosen]
        value = np.asarray(z, dtype=np.float64) / scale[chosen]
        tq = float(stats.t.ppf(0.5 + confidence / 2.0, dof))
        half = tq * se
        ref = np.maximum(value, theta0[chosen])
        rel = np.where(ref > 0, half / np.where(ref > 0, ref, 1.0), np.inf)
        worst = int(np.argmax(rel))
        if len(chosen) > 1 and rel[worst] > max_rel_halfwidth:
            j = chosen.pop(worst)
            unident.append(Unidentified(
                THETA_FIELDS[j],
                f"not determined by these measurements: fitted {value[worst]:.4g} ± "
                f"{half[worst]:.3g} ({confidence:.0%}), wider than the value itself"))
            continue
        if rel[worst] > max_rel_halfwidth:
            raise UserError("calibrate", None, None,
                            "measurements that determine at least one parameter",
                            f"{THETA_FIELDS[chosen[0]]} fitted {value[0]:.4g} ± {half[0]:.3g} "
                            f"({confidence:.0%}), wider than the value itself")
        break
    theta = theta0.copy()
    theta[chosen] = value
    fitted = []
    for k, j in enumerate(chosen):
        p = machine.parameters[THETA_FIELDS[j]]
        fitted.append(FittedParameter(
            THETA_FIELDS[j], float(theta0[j]), p.source, p.min, p.max, float(value[k]),
            float(se[k]), max(0.0, float(value[k] - half[k])), float(value[k] + half[k]),
            bool(z[k] == 0.0)))
    prior_t = d.a @ theta0 + d.fixed
    fit_t = d.a @ theta + d.fixed
    rows = tuple(RowResult(line, label, float(d.t[i]), float(prior_t[i]), float(fit_t[i]))
                 for i, (line, label) in enumerate(labels))
    cond = float(np.linalg.cond(a_s[:, chosen]))
    resid = (fit_t - d.t) * w
    sigma = float(np.sqrt(np.sum(resid**2) / (m_rows - len(chosen))))
    return Calibration(
        fitted=tuple(fitted),
        unidentified=tuple(sorted(unident, key=lambda u: THETA_FIELDS.index(u.name))),
        theta={f: float(theta[i]) for i, f in enumerate(THETA_FIELDS)},
        rows=rows,
        condition=cond,
        dof=m_rows - len(chosen),
        sigma=sigma,
        weights=weights,
        confidence=confidence,
        candidates=tuple(THETA_FIELDS[j] for j in cand),
        extra={"t_quantile": tq},
        diagnoses=diagnose(fitted, rows, {THETA_FIELDS[j]: d.a[:, j] for j in chosen},
                           _with_constant(d, theta0, chosen, w)),
    )


def _with_constant(d: Design, theta0: F64, chosen: Sequence[int], w: F64) -> tuple[float, float]:
    """The fit redone (least squares, same weights) with one more unknown, a constant per
    measurement: (the constant in ns, the largest relative residual left)."""
    kept = theta0.copy()
    kept[list(chosen)] = 0.0
    target = d.t - d.fixed - d.a @ kept
    x = np.column_stack([d.a[:, list(chosen)], np.ones(len(d.t))]) * w[:, None]
    sol = np.linalg.lstsq(x, target * w, rcond=None)[0]
    pred = d.t - target + (x @ sol) / w
    return float(sol[-1]), float(np.max(np.abs((pred - d.t) / d.t)))


def parse_params(text: str | None) -> list[str] | None:
    """``--params a,b`` -> THETA field names (``parameters.`` prefix allowed); None for all."""
    if text is None or not text.strip():
        return None
    out: list[str] = []
    for raw in text.split(","):
        name = raw.strip().removeprefix("parameters.")
        if not name:
            continue
        if name not in THETA_FIELDS:
            raise UserError("--params", None, None, "physical parameter names (" +
                            ", ".join(THETA_FIELDS) + ")", repr(name),
                            did_you_mean(name, THETA_FIELDS))
        if name not in out:
            out.append(name)
    return out or None


def calibrate(
    machine: Machine,
    csv_path: str | Path,
    variants: VariantSet,
    *,
    params: Sequence[str] | None = None,
    weights: str = "relative",
    max_condition: float = MAX_CONDITION,
    max_rel_halfwidth: float = MAX_REL_HALFWIDTH,
    confidence: float = CONFIDENCE,
) -> tuple[Calibration, str]:
    """Read ``csv_path``, fit, and return the calibration with the CSV's sha256."""
    require_scipy()
    ms, sha, _ = read_measurements(csv_path, variants)
    d = design(machine, ms)
    # a number at the edge of the float range (in the machine's priors or the counts) must not
    # pass silently as inf or NaN, nor print a RuntimeWarning: it is refused in one line
    try:
        with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
            cal = fit(machine, d, [(m.line, m.label) for m in ms], params=params,
                      weights=weights, max_condition=max_condition,
                      max_rel_halfwidth=max_rel_halfwidth, confidence=confidence)
    except (FloatingPointError, np.linalg.LinAlgError, ValueError) as exc:
        raise UserError(str(csv_path), None, None,
                        "measurements whose least-squares fit stays within the float range",
                        f"a fit that fails ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})",
                        "are the times and the machine's parameters of sensible size?") from None
    return cal, sha


# ---------------------------------------------------------------------------------------------
# the calibrated machine file


def _g(x: float) -> str:
    """Six significant digits, as YAML reads them back."""
    return f"{x:.6g}"


def _round_out(lo: float, value: float, hi: float) -> tuple[str, str, str]:
    """(min, value, max) as text, rounded so that min <= value <= max still holds."""
    v = float(_g(value))
    lo_r = min(float(_g(max(0.0, lo))), v)
    hi_r = max(float(_g(hi)), v)
    return _g(lo_r), _g(v), _g(hi_r)


def _flow_entry(value: str, source: str, lo: str | None, hi: str | None,
                note: str | None) -> str:
    parts = [f"value: {value}", f"source: {json.dumps(source, ensure_ascii=False)}"]
    if lo is not None and hi is not None:
        parts += [f"min: {lo}", f"max: {hi}"]
    if note:
        parts.append(f"note: {json.dumps(note, ensure_ascii=False)}")
    return "{" + ", ".join(parts) + "}"


def calibration_source(csv_name: str, sha256: str, date: str) -> str:
    return f"calibrated: from {csv_name} (sha256 {sha256}) on {date}"


def _entries(machine: Machine, cal: Calibration, csv_name: str, sha256: str,
             date: str) -> dict[str, str]:
    out: dict[str, str] = {}
    src = calibration_source(csv_name, sha256, date)
    for f in cal.fitted:
        lo, val, hi = _round_out(f.lo, f.value, f.hi)
        prior_rng = "" if f.prior_min is None else f" [{f.prior_min:g}, {f.prior_max:g}]"
        note = (f"NNLS fit to {len(cal.rows)} measurements ({cal.weights} weights); min/max: "
                f"{cal.confidence:.0%} interval from the residual variance and (AᵀA)⁻¹; prior "
                f"{f.prior:g} ({f.prior_source}){prior_rng}")
        old = machine.parameters[f.name].note
        if old and machine.parameters[f.name].line is not None:
            note += f"; prior note: {old}"
        out[f.name] = _flow_entry(val, src, lo, hi, note)
    return out


def _header_comment(cal: Calibration, csv_name: str, sha256: str, date: str) -> str:
    names = ", ".join(f.name for f in cal.fitted)
    return (f"# calibrated by s2teardown calibrate from {csv_name} (sha256 {sha256}) on {date}:\n"
            f"# fitted {names}; every other value is unchanged.\n")


def _edit_text(text: str, entries: Mapping[str, str]) -> str | None:
    """Replace/insert the parameter entries in the original text (comments kept); None if the
    file's shape is not one this edit handles."""
    import yaml

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:  # pragma: no cover - the file loaded already
        return None
    if not isinstance(root, yaml.MappingNode):
        return None
    params = next((v for k, v in root.value if getattr(k, "value", None) == "parameters"), None)
    if not isinstance(params, yaml.MappingNode) or params.flow_style or not params.value:
        return None
    spans: list[tuple[int, int, str]] = []
    present = {k.value: v for k, v in params.value if isinstance(k, yaml.ScalarNode)}
    for name, entry in entries.items():
        node = present.get(name)
        if node is None:
            continue
        start, end = node.start_mark.index, node.end_mark.index
        old = text[start:end]
        trailing = old[len(old.rstrip()):]
        if "#" in old and not isinstance(node, yaml.MappingNode):  # pragma: no cover
            return None
        spans.append((start, end, entry + trailing))
    missing = [n for n in entries if n not in present]
    if missing:
        last_key, last_val = params.value[-1]
        indent = " " * last_key.start_mark.column
        pos = last_val.end_mark.index
        old = text[:pos]
        stripped = old.rstrip()
        pos = len(stripped)
        nl = text.find("\n", pos)
        pos = len(text) if nl < 0 else nl
        insert = "".join(f"\n{indent}{n}: {entries[n]}" for n in missing)
        spans.append((pos, pos, insert))
    out = text
    for start, end, new in sorted(spans, key=lambda s: s[0], reverse=True):
        out = out[:start] + new + out[end:]
    return out


def _regenerate(machine: Machine, entries: Mapping[str, str]) -> str:
    """The whole machine file written from its values (when the text cannot be edited)."""
    lines = [f"schema_version: {machine.as_dict()['schema_version']}",
             f"name: {json.dumps(machine.name, ensure_ascii=False)}"]
    if machine.description:
        lines.append(f"description: {json.dumps(machine.description, ensure_ascii=False)}")
    for group in ("topology", "features", "placement", "parameters", "prices"):
        sec = machine.section(group)
        if not sec:
            continue
        lines.append(f"{group}:")
        for name, p in sec.items():
            if group == "parameters" and name in entries:
                lines.append(f"  {name}: {entries[name]}")
                continue
            v = p.value
            if isinstance(v, bool):
                val = "true" if v else "false"
            elif isinstance(v, str):
                val = json.dumps(v, ensure_ascii=False)
            else:
                val = repr(v)
            lo = None if p.min is None else repr(float(p.min))
            hi = None if p.max is None else repr(float(p.max))
            lines.append(f"  {name}: {_flow_entry(val, p.source, lo, hi, p.note)}")
    return "\n".join(lines) + "\n"


def _same_except(a: Machine, b: Machine, fitted: Mapping[str, float]) -> bool:
    for group in ("topology", "features", "placement", "parameters", "prices"):
        sa, sb = a.section(group), b.section(group)
        if set(sa) != set(sb):
            return False
        for n in sa:
            if group == "parameters" and n in fitted:
                if not math.isclose(float(sb[n].value), fitted[n], rel_tol=1e-5, abs_tol=1e-12):
                    return False
                if sb[n].kind != "calibrated":
                    return False
                continue
            pa, pb = sa[n], sb[n]
            if (pa.value, pa.source, pa.min, pa.max) != (pb.value, pb.source, pb.min, pb.max):
                return False
    return a.name == b.name


def calibrated_machine_text(
    machine: Machine, cal: Calibration, csv_name: str, sha256: str, date: str | None = None
) -> str:
    """The machine file with each fitted parameter replaced by ``{value, source: "calibrated:
    from FILE (sha256 …) on DATE", min, max}`` (min/max = its interval), everything else as
    it was (the original text is edited in place, comments kept).  The result is checked to
    load and to differ from the input only in the fitted values."""
    day = date or _dt.datetime.now(_dt.UTC).date().isoformat()
    entries = _entries(machine, cal, csv_name, sha256, day)
    fitted = {f.name: float(_g(f.value)) for f in cal.fitted}
    head = _header_comment(cal, csv_name, sha256, day)
    candidates: list[str] = []
    if machine.text is not None:
        edited = _edit_text(machine.text, entries)
        if edited is not None:
            candidates.append(head + edited)
    candidates.append(head + _regenerate(machine, entries))
    last: Exception | None = None
    for text in candidates:
        try:
            m2 = machine_from_text(text, "<calibrated>")
        except UserError as exc:
            last = exc
            continue
        if _same_except(machine, m2, fitted):
            return text
    raise RuntimeError(f"could not write a calibrated machine file that loads back: {last}")
