"""`s2teardown compare`: several machines, variants or kernels side by side for one workload."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import click

from s2teardown.cli.common import (
    build_estimate,
    console,
    emit,
    format_from_extension,
    format_option,
    input_options,
    output_option,
)


def _input_options_except(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`cli.input_options` without the options named (so a command can redefine them)."""

    def probe() -> None:  # pragma: no cover - never called
        pass

    input_options(probe)
    params = [p for p in getattr(probe, "__click_params__", []) if p.name not in names]

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        existing = getattr(fn, "__click_params__", [])
        fn.__click_params__ = existing + params  # type: ignore[attr-defined]
        return fn

    return deco


@click.command()
@_input_options_except("machine")
@click.option(
    "--machine",
    "machines",
    multiple=True,
    metavar="NAME|FILE",
    help="Machine (bundled name or YAML path); repeat to compare machines (default d05).",
)
@format_option("table", "json", "markdown")
@output_option
@format_from_extension
def compare(machines: Sequence[str], fmt: str, output: str | None, **inputs: Any) -> None:
    """Machines, variants or kernels side by side for one workload.

    Each entry is a (machine, variant) pair; the first is the reference.  Shown per entry: the
    phases, the Stage-2 total, the host free, the speedup against the first (its Stage-2 total
    ÷ the entry's), the dominant phase, and the Stage-2 phase where the entry differs most from
    the first (largest absolute difference); and, across all, the phase whose time spreads
    most.  With several machines and no --variants or --kernel, only the first variant (v5.5)
    is compared; with one machine, every variant.  --baseline puts that variant first.

    \b
    Examples:
      s2teardown compare --vm 64G --machine d05 --machine emag --machine grace
      s2teardown compare --vm 64G --machine d05 --variants v5.5,P5,series
      s2teardown compare --vm 64G --machine graviton3 --kernel 5.5 --kernel 6.1 --kernel 6.8
      s2teardown compare --vm 16G --machine d05 --machine altra --variants P5 --format markdown
    """
    from s2teardown.errors import UserError
    from s2teardown.features.compare import compare_estimates
    from s2teardown.inputs.variants import load_variants

    names = list(dict.fromkeys(machines or ("d05",)))
    if len(names) > 1 and not inputs["variants"] and not inputs["kernels"]:
        first = load_variants(inputs["variants_file"]).variants[0].name
        inputs["variants"] = (first,)
    estimates = [build_estimate(machine=m, **inputs) for m in names]
    try:
        cmp = compare_estimates(estimates)
    except ValueError:
        raise UserError(
            "--machine",
            None,
            None,
            "at least two entries to compare: repeat --machine, or give several "
            "--variants or --kernel",
            "one",
        ) from None
    warnings = list(
        dict.fromkeys(
            (f"{e.machine.name}: {w}" if len(names) > 1 else w)
            for e in estimates
            for w in e.warnings
        )
    )
    header = estimates[0].header
    if fmt == "json":
        from s2teardown.render.envelope import envelope, to_json

        holds = [{"machine": e.machine.name, "variant": h.variant, **h.as_dict(), "warning": h.line}
                 for e in estimates for h in e.lock_holds]  # every detector tripped (model.md §11.5)
        doc = envelope("compare", warnings=warnings, workload=header, lock_hold_warnings=holds,
                       **cmp.as_dict())
        emit(to_json(doc), output)
    elif fmt == "markdown":
        emit(_markdown(cmp, header, warnings), output)
    else:
        _table(cmp, header, warnings, output)
    if fmt != "table":
        for w in warnings:
            click.echo(f"s2teardown: warning: {w}", err=True)


def _summary(cmp: Any) -> list[tuple[str, list[str]]]:
    from s2teardown.inputs.units import format_ns
    from s2teardown.render.format import format_delta, format_speedup

    dm = cmp.differs_most()
    return [
        ("Stage-2 total", [format_ns(float(x)) for x in cmp.stage2_ns]),
        ("host free (outside Stage-2)", [format_ns(float(x)) for x in cmp.host_free_ns]),
        (f"speedup vs {cmp.labels[0]}", [format_speedup(float(x)) for x in cmp.speedup]),
        ("dominant", list(cmp.dominant_phase)),
        (
            f"differs most from {cmp.labels[0]}",
            ["—" if d is None else f"{d[0]} ({format_delta(d[1])})" for d in dm],
        ),
    ]


def _spread_line(cmp: Any) -> str:
    from s2teardown.inputs.units import format_ns

    md = cmp.most_different_phase()
    if md is None:
        return "every Stage-2 phase takes the same time in every entry"
    return f"the phase that differs most across all: {md[0]} (spread {format_ns(md[1])})"


def _same_line(cmp: Any) -> str:
    """What the column labels leave out because every entry shares it."""
    return "every entry: " + "; ".join(f"{k} {v}" for k, v in cmp.same.items())


def _table(cmp: Any, header: str, warnings: list[str], output: str | None) -> None:
    from rich.console import Console, Group
    from rich.table import Table
    from rich.text import Text

    from s2teardown.core.model import shown_phases
    from s2teardown.core.vocabulary import PHASES
    from s2teardown.inputs.units import format_ns

    t = Table(header_style="bold", box=None, pad_edge=False, padding=(0, 1))
    t.add_column("phase", no_wrap=True)
    for label in cmp.labels:
        t.add_column(label, justify="right", no_wrap=True)
    shown = shown_phases(cmp.time_ns)
    for i, phase in enumerate(PHASES):
        if phase == "host_free" or phase not in shown:
            continue
        t.add_row(
            phase,
            *[Text(format_ns(float(x)), style="dim" if x == 0 else "") for x in cmp.time_ns[:, i]],
        )
    t.add_section()
    for label, cells in _summary(cmp):
        t.add_row(Text(label, style="bold" if label == "Stage-2 total" else ""), *cells)
    parts: list[Any] = [
        Text("s2teardown compare", style="bold"),
        Text(header),
        *([Text(_same_line(cmp))] if cmp.same else []),
        Text(""),
        t,
        Text(""),
        Text(_spread_line(cmp)),
    ]
    parts += [Text(f"warning: {w}", style="bold yellow") for w in warnings]
    if output:
        import io

        buf = io.StringIO()
        Console(file=buf, width=160, highlight=False, color_system=None).print(Group(*parts))
        emit(buf.getvalue(), output)
        return
    console().print(Group(*parts))


def _markdown(cmp: Any, header: str, warnings: list[str]) -> str:
    from s2teardown.core.model import shown_phases
    from s2teardown.core.vocabulary import PHASES
    from s2teardown.inputs.units import format_ns

    lines = [
        f"**compare** — {header}",
        *(["", _same_line(cmp)] if cmp.same else []),
        "",
        "| phase | " + " | ".join(cmp.labels) + " |",
        "|---|" + "---:|" * len(cmp.labels),
    ]
    shown = shown_phases(cmp.time_ns)
    for i, phase in enumerate(PHASES):
        if phase != "host_free" and phase in shown:
            lines.append(
                f"| {phase} | " + " | ".join(format_ns(float(x)) for x in cmp.time_ns[:, i]) + " |"
            )
    for label, cells in _summary(cmp):
        if label == "Stage-2 total":
            label, cells = f"**{label}**", [f"**{c}**" for c in cells]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", f"{_spread_line(cmp)[0].upper()}{_spread_line(cmp)[1:]}."]
    lines += [f"- **warning:** {w}" for w in warnings]
    return "\n".join(lines) + "\n"


COMMANDS = [compare]
