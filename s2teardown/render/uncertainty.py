"""Views of the Monte Carlo and sensitivity results (docs/uncertainty.md): rich tables, CSV,
markdown.  rich is imported inside the functions."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from s2teardown.core.vocabulary import PHASES
from s2teardown.features.uncertainty import TOTAL

if TYPE_CHECKING:
    from rich.console import Group


def _fmt(ns: float) -> str:
    from s2teardown.inputs.units import format_ns

    return format_ns(ns)


def render_samples(mc: dict[str, Any]) -> Group:
    """A rich view of `monte_carlo`'s result: per phase and total, ``p50 (p5 – p95)``."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    names = [v["name"] for v in mc["variants"]]
    t = Table(show_header=True, header_style="bold", box=None, pad_edge=False, padding=(0, 1))
    t.add_column("phase", no_wrap=True)
    for n in names:
        t.add_column(n, justify="right", no_wrap=True)

    def cell(c: dict[str, Any]) -> Text:
        lo, mid, hi = c["p5_ns"], c["p50_ns"], c["p95_ns"]
        if hi == lo:
            return Text(_fmt(mid), style="dim" if mid == 0 else "")
        return Text.assemble(_fmt(mid), "\n", (f"{_fmt(lo)}–{_fmt(hi)}", "dim"))

    for phase in PHASES:
        row = [cell(v["phases"][phase]) for v in mc["variants"]]
        if phase == "host_free":
            t.add_section()
        t.add_row("host free†" if phase == "host_free" else phase, *row)
    t.add_section()
    t.add_row(Text("Stage-2 total", style="bold"), *[cell(v[TOTAL]) for v in mc["variants"]])
    head = Text.assemble(
        ("Monte Carlo", "bold"),
        f": {mc['samples']:,} samples, seed {mc['seed']}, {mc['distribution']} distributions "
        f"over {len(mc['parameters'])} ranged values; each cell: p50, then p5–p95",
    )
    foot = [
        Text("percentiles of each row are taken separately: the total's p95 is not the sum of "
             "the phases' p95", style="dim"),
        Text("ranged: " + ", ".join(p["name"] for p in mc["parameters"]), style="dim"),
    ]
    foot += [Text(f"note: {n}", style="dim") for n in mc["notes"]]
    return Group(head, t, *foot)


def _el(e: float) -> str:
    return "≈0" if abs(e) < 0.0005 else f"{e:+.3f}"


def _top(sens: dict[str, Any], top: int | None) -> list[str]:
    names = [p["name"] for p in sens["parameters"]]
    weight = {
        n: max((abs(v["elasticity"][n] or 0.0) for v in sens["variants"]), default=0.0)
        for n in names
    }
    ranked = [n for n in sorted(names, key=lambda n: -weight[n]) if weight[n] > 0]
    return ranked if top is None else ranked[:top]


def sensitivity_table(sens: dict[str, Any], top: int | None = 10) -> Group:
    """A rich view of `sensitivity`'s result: the ``top`` parameters by largest |elasticity|
    (None: all that matter), one column per variant, then the share resting on assumptions."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    kinds = {p["name"]: p["kind"] for p in sens["parameters"]}
    t = Table(show_header=True, header_style="bold", box=None, pad_edge=False, padding=(0, 1))
    t.add_column("parameter", no_wrap=True)
    t.add_column("kind", no_wrap=True)
    for v in sens["variants"]:
        t.add_column(v["name"], justify="right", no_wrap=True)
    shown = _top(sens, top)
    for n in shown:
        cells = []
        for v in sens["variants"]:
            e = v["elasticity"][n]
            cells.append(Text("·", style="dim") if not e else Text(_el(e)))
        t.add_row(n, kinds[n], *cells)
    t.add_section()

    def pct(x: float | None) -> str:
        return "—" if x is None else f"{x:.1%}"

    t.add_row(Text("resting on assumed values", style="bold"), "",
              *[pct(v["assumed_share"]) for v in sens["variants"]])
    t.add_row("on explicit prices", "", *[pct(v["explicit_price_share"]) for v in sens["variants"]])
    label = {"stage2": "the Stage-2 total", "host_free": "the host free", "all": "the whole time"}
    head = Text.assemble(("Sensitivity", "bold"),
                         f" of {label[sens['total']]}: % change for a 1% change of each parameter")
    hidden = len([p for p in sens["parameters"]]) - len(shown)
    foot = [Text(f"{hidden} parameters with smaller or no effect not shown", style="dim")] \
        if hidden > 0 else []
    return Group(head, t, *foot)


def _csv(rows: list[list[Any]]) -> str:
    import csv

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerows(rows)
    return buf.getvalue()


def samples_csv(mc: dict[str, Any]) -> str:
    """``variant,phase,typical_ns,mean_ns,p5_ns,p50_ns,p95_ns,samples,seed,distribution``."""
    keys = ["typical_ns", "mean_ns", *[f"p{q:g}_ns" for q in mc["percentiles"]]]
    rows: list[list[Any]] = [["variant", "phase", *keys, "samples", "seed", "distribution"]]
    for v in mc["variants"]:
        for label, c in [*v["phases"].items(), (TOTAL, v[TOTAL])]:
            rows.append([v["name"], label, *[repr(c[k]) for k in keys], mc["samples"], mc["seed"],
                         mc["distribution"]])
    return _csv(rows)


def sensitivity_csv(sens: dict[str, Any]) -> str:
    """``variant,parameter,kind,elasticity`` then one ``assumed_share`` row per variant."""
    kinds = {p["name"]: p["kind"] for p in sens["parameters"]}
    rows: list[list[Any]] = [["variant", "parameter", "kind", "elasticity"]]
    for v in sens["variants"]:
        for n, e in v["elasticity"].items():
            rows.append([v["name"], n, kinds[n], "" if e is None else repr(e)])
        a = v["assumed_share"]
        rows.append([v["name"], "assumed_share", "", "" if a is None else repr(a)])
    return _csv(rows)


def samples_markdown(mc: dict[str, Any]) -> str:
    names = [v["name"] for v in mc["variants"]]
    out = [f"Monte Carlo: {mc['samples']:,} samples, seed {mc['seed']}, {mc['distribution']}; "
           "cells are p50 (p5 – p95).", "", "| phase | " + " | ".join(names) + " |",
           "|---|" + "---:|" * len(names)]
    for label in [*PHASES, TOTAL]:
        cells = []
        for v in mc["variants"]:
            c = v[TOTAL] if label == TOTAL else v["phases"][label]
            cells.append(f"{_fmt(c['p50_ns'])} ({_fmt(c['p5_ns'])} – {_fmt(c['p95_ns'])})")
        out.append(f"| {'**Stage-2 total**' if label == TOTAL else label} | " + " | ".join(cells)
                   + " |")
    return "\n".join(out) + "\n"


def sensitivity_markdown(sens: dict[str, Any], top: int | None = 10) -> str:
    names = [v["name"] for v in sens["variants"]]
    kinds = {p["name"]: p["kind"] for p in sens["parameters"]}
    out = ["| parameter | kind | " + " | ".join(names) + " |", "|---|---|" + "---:|" * len(names)]
    for n in _top(sens, top):
        cells = ["·" if not v["elasticity"][n] else _el(v["elasticity"][n])
                 for v in sens["variants"]]
        out.append(f"| `{n}` | {kinds[n]} | " + " | ".join(cells) + " |")
    out.append("| **resting on assumed values** | | " + " | ".join(
        "—" if v["assumed_share"] is None else f"{v['assumed_share']:.1%}" for v in sens["variants"]
    ) + " |")
    return "\n".join(out) + "\n"
