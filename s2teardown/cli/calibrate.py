"""`s2teardown calibrate` (fit a machine to measured times) and `s2teardown import-trace`
(a host trace from tools/ -> the measurements CSV).  docs/measuring.md walks through both.

Nothing heavy is imported at module level: ``s2teardown --help`` imports this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from s2teardown.errors import UserError


def emit(text: str, output: str | None) -> None:
    from s2teardown.cli.common import emit as emit

    emit(text, output)


@click.command("calibrate")
@click.argument("measurements", metavar="MEASUREMENTS.csv")
@click.option("--machine", "machine", required=True, metavar="NAME|FILE",
              help="The machine whose parameters are the priors (a YAML path or a bundled name).")
@click.option("-o", "--output", default=None, metavar="FILE",
              help="Write the calibrated machine file here (atomically); without it, only report.")
@click.option("--params", default=None, metavar="A,B,...",
              help="Fit only these parameters (default: every parameter the data determine).")
@click.option("--variants-file", type=click.Path(dir_okay=False), metavar="FILE",
              help="Your own variants YAML, for variant names in the CSV.")
@click.option("--weights", type=click.Choice(["relative", "absolute"]), default="relative",
              show_default=True,
              help="relative: minimise residuals relative to each measured time; absolute: in ns.")
@click.option("--max-condition", default=1e4, show_default=True, type=float,
              help="Largest condition number of the (weighted, column-normalised) design a "
              "fitted parameter may bring; beyond it the parameter is named and kept at its prior.")
@click.option("--confidence", default=0.95, show_default=True, type=float,
              help="Confidence of the interval written as each fitted value's min/max.")
@click.option("--date", "date", default=None, metavar="YYYY-MM-DD",
              help="Date written in the sources (default: today, UTC).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
def calibrate_cmd(measurements: str, machine: str, output: str | None, params: str | None,
                  variants_file: str | None, weights: str, max_condition: float,
                  confidence: float, date: str | None, fmt: str) -> None:
    """Fit a machine's physical parameters to measured teardown times (NNLS).

    MEASUREMENTS.csv has one row per measured teardown: columns vm (or vm_bytes), backing,
    event, variant (or kernel), seconds, and optionally host_free_included, mapped, memslots,
    range, granule, ipa_bits, placement, note (docs/measuring.md).  Parameters the data
    cannot separate are named and kept at their prior values.  Needs scipy (the extra `fit`).

    \b
    Examples:
      s2teardown calibrate --machine d05 measurements.csv
      s2teardown calibrate --machine d05.yaml measurements.csv -o d05-mine.yaml
      s2teardown calibrate --machine d05 m.csv --params dc_civac_local_ns,hvc_ns --format json
    """
    import datetime as dt

    from s2teardown.features.calibrate import (
        calibrate,
        calibrated_machine_text,
        parse_params,
        require_scipy,
    )
    from s2teardown.inputs.machine import load_machine
    from s2teardown.inputs.variants import load_variants

    require_scipy()
    if not (1.0 < max_condition < 1e15):
        raise UserError("--max-condition", None, None, "a number in (1, 1e15)", repr(max_condition))
    if not (0.5 <= confidence < 1.0):
        raise UserError("--confidence", None, None, "a probability in [0.5, 1)", repr(confidence))
    if date is not None:
        try:
            dt.date.fromisoformat(date)
        except ValueError:
            raise UserError("--date", None, None, "a date YYYY-MM-DD", repr(date)) from None
    names = parse_params(params)
    m = load_machine(machine, flag="--machine")
    vs = load_variants(variants_file)
    cal, sha = calibrate(m, measurements, vs, params=names, weights=weights,
                         max_condition=max_condition, confidence=confidence)
    day = date or dt.datetime.now(dt.UTC).date().isoformat()
    if output:
        text = calibrated_machine_text(m, cal, Path(measurements).name, sha, day)
        emit(text, output)
    if fmt == "json":
        from s2teardown.render.envelope import envelope, to_json

        body = cal.as_dict()
        doc = envelope("calibrate", warnings=body.pop("warnings", ()),
                       machine={"name": m.name, "path": m.path, "sha256": m.sha256},
                       measurements={"path": measurements, "sha256": sha}, output=output, date=day,
                       **body)
        click.echo(to_json(doc), nl=False)
        return
    _print_table(cal, m.name, measurements, sha, output)


def _print_table(cal: Any, machine: str, measurements: str, sha: str, output: str | None) -> None:
    from rich.table import Table
    from rich.text import Text

    from s2teardown.cli.common import console
    from s2teardown.inputs.units import format_ns

    con = console()
    unit = "relative" if cal.weights == "relative" else "ns"
    con.print(Text.assemble(("s2teardown calibrate", "bold"), f"  {machine} ← {measurements} "
                            f"(sha256 {sha[:12]}…)"))
    con.print(f"{len(cal.rows)} measurements, {len(cal.fitted)} parameters fitted, "
              f"{cal.dof} residual degrees of freedom; condition number {cal.condition:.3g}; "
              f"residual σ {cal.sigma:.3g} ({unit}, {cal.weights} weights)")
    t = Table(box=None, header_style="bold", pad_edge=False, padding=(0, 1))
    for c in ("parameter", "prior", "fitted", f"{cal.confidence:.0%} interval", "se"):
        t.add_column(c, justify="left" if c == "parameter" else "right", no_wrap=True)
    for f in cal.fitted:
        t.add_row(f.name, f"{f.prior:g}", f"{f.value:.4g}" + (" (at 0)" if f.at_bound else ""),
                  f"{f.lo:.4g} … {f.hi:.4g}", f"{f.se:.3g}")
    con.print()
    con.print(Text("fitted (ns)", style="bold"))
    con.print(t)
    if cal.unidentified:
        con.print()
        con.print(Text("kept at their prior values (the data cannot determine them)",
                       style="bold"))
        for u in cal.unidentified:
            con.print(f"  {u.name}: {u.reason}")
    if cal.diagnoses:
        con.print()
        con.print(Text("flags (what the fit says the model lacks)", style="bold"))
        for dg in cal.diagnoses:
            con.print(f"  {dg.text}")
    rt = Table(box=None, header_style="bold", pad_edge=False, padding=(0, 1))
    for c in ("line", "workload", "measured", "prior model", "calibrated", "residual"):
        rt.add_column(c, justify="left" if c == "workload" else "right", no_wrap=True)
    for r in cal.rows:
        rt.add_row(str(r.line), r.label, format_ns(r.measured_ns), format_ns(r.prior_ns),
                   format_ns(r.fitted_ns), f"{r.residual_rel:+.2%}")
    con.print()
    con.print(Text("residuals per row", style="bold"))
    con.print(rt)
    con.print(Text("interval: value ± t(1−α/2, dof)·se, se² = diag(σ²(AᵀA)⁻¹) from the residual "
                   "variance (linearised; the θ ≥ 0 bound is ignored, lower ends clipped at 0)",
                   style="dim"))
    if output:
        con.print(f"wrote {output}")
    else:
        con.print(Text("no -o FILE: nothing written", style="dim"))


@click.command("import-trace")
@click.argument("traces", nargs=-1, required=True, metavar="TRACE...")
@click.option("-o", "--output", default=None, metavar="FILE",
              help="Write the measurements CSV here (atomically) instead of stdout.")
def import_trace_cmd(traces: Sequence[str], output: str | None) -> None:
    """Turn traces from tools/s2teardown-trace.sh into the CSV `calibrate` reads.

    One CSV row per traced run: the summed time of the outermost probe of its path
    (kvm_mmu_notifier_release for exit, the invalidate-range-start notifier for munmap/clear,
    kvm_arch_flush_shadow_memslot for memslot-delete).  The trace format is documented in
    docs/measuring.md; a malformed line is a FILE:LINE error.

    \b
    Examples:
      s2teardown import-trace d05-64G-exit.trace -o measurements.csv
      s2teardown import-trace runs/*.trace > measurements.csv
    """
    from s2teardown.features.trace import measurements_csv, parse_trace, run_rows

    rows = []
    for t in traces:
        rows.extend(run_rows(parse_trace(t)))
    emit(measurements_csv(rows), output)


COMMANDS = [calibrate_cmd, import_trace_cmd]
