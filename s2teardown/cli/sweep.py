"""`s2teardown sweep`: machines × VM sizes × backings × events, every variant, one model call
per machine; table, long-form CSV, JSON, and an optional log-log plot."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, TextIO

import click

from s2teardown.cli.common import (
    EVENT_CHOICES,
    SET_OPTION,
    SIZE_HELP,
    console,
    emit,
    fail,
    format_from_extension,
    output_option,
    what_if_note,
)
from s2teardown.errors import UserError
from s2teardown.inputs.units import GRANULE_BYTES


def progress_wanted(quiet: bool, stream: TextIO | Any) -> bool:
    """A progress bar only on a terminal, and not with --quiet."""
    if quiet:
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (ValueError, OSError):  # a closed or odd stream
        return False


@click.command()
@click.option(
    "--vm",
    "vms",
    multiple=True,
    required=True,
    metavar="SIZES",
    help="Guest RAM sizes: a size, A..B:xK (geometric: A, A·K, A·K², … up to B), "
    "A..B:+STEP (arithmetic), or a comma list of these; repeatable. "
    "1G..1T:x2 = 1, 2, 4 … 1024 GiB. " + SIZE_HELP,
)
@click.option(
    "--backing",
    "backings",
    multiple=True,
    metavar="MIX",
    help="Leaf sizes, as for estimate (2M, 4K, 2M:90,4K:10); repeat to sweep (default 2M).",
)
@click.option(
    "--machine",
    "machines",
    multiple=True,
    metavar="NAME|FILE",
    help="Machine (bundled name or YAML path); repeat to sweep (default d05).",
)
@click.option(
    "--event",
    "events",
    multiple=True,
    type=click.Choice(EVENT_CHOICES),
    help="Path into Stage-2 unmap, as for estimate; repeat to sweep (default exit). "
    "A munmap/clear/oom covers all of guest RAM.",
)
@click.option(
    "--variants",
    "variants",
    multiple=True,
    metavar="NAMES",
    help="Variants, comma-separated or repeated (default: all).",
)
@click.option(
    "--variants-file",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Your own variants YAML.",
)
@click.option(
    "--kernel",
    "kernels",
    multiple=True,
    metavar="VERSION",
    help="Add the mainline variant in force at VERSION; repeatable.",
)
@click.option(
    "--baseline",
    default=None,
    metavar="NAME",
    help="Variant speedups are relative to (default: the first).",
)
@click.option(
    "--mapped",
    default=1.0,
    show_default=True,
    type=float,
    help="Fraction of guest RAM mapped at Stage-2.",
)
@click.option(
    "--memslots",
    default=1,
    show_default=True,
    type=int,
    help="Equal memslots guest RAM is split into (must divide every size).",
)
@click.option(
    "--granule",
    default="4K",
    show_default=True,
    type=click.Choice(list(GRANULE_BYTES)),
    help="Page size of host and Stage-2.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
    help="csv is long form: machine, vm_bytes, backing, event, variant, phase, time_ns.",
)
@click.option(
    "--plot",
    default=None,
    metavar="FILE.png|FILE.svg",
    help="Also draw phase times and the Stage-2 total against VM size, log-log, one "
    "panel per variant and (machine, backing, event); needs the extra 'plot' "
    "(matplotlib).",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no notes on stderr.")
@SET_OPTION
@output_option
@format_from_extension
def sweep(
    vms: Sequence[str],
    backings: Sequence[str],
    machines: Sequence[str],
    events: Sequence[str],
    variants: Sequence[str],
    variants_file: str | None,
    kernels: Sequence[str],
    baseline: str | None,
    mapped: float,
    memslots: int,
    granule: str,
    fmt: str,
    plot: str | None,
    quiet: bool,
    sets: Sequence[str],
    output: str | None,
) -> None:
    """Sweep VM sizes, backings, machines and events: every variant at every point.

    Repeating --backing, --machine or --event sweeps it; --vm takes ranges.  Each machine is
    one vectorised evaluation.  A sweep may have at most 1,000,000 output rows (machines × sizes
    × backings × events × variants × 12 phases); past that it stops with exit 2.  A progress bar
    is drawn on stderr when stderr is a terminal (not when piped, not with --quiet).

    \b
    Examples:
      s2teardown sweep --vm 1G..1T:x2 --backing 4K --backing 2M --machine d05 --machine emag
      s2teardown sweep --vm 4G..64G:+4G --variants v5.5,P5 --format csv -o sweep.csv
      s2teardown sweep --vm 1G..256G:x4 --variants v5.5,P5 --plot sweep.svg
      s2teardown sweep --vm 16G,64G --event exit --event munmap --kernel 5.5 --kernel 6.8
    """
    from s2teardown.features.sweep import check_sweep_size, parse_sizes, run_sweep, select_variants
    from s2teardown.inputs.machine import apply_sets, load_machine
    from s2teardown.inputs.units import parse_backing_kinds
    from s2teardown.inputs.variants import load_variants
    from s2teardown.render.plot import plot_format, plot_sweep, require_matplotlib

    sizes: list[int] = []
    for text in vms:
        try:
            vals = parse_sizes(text)
        except ValueError as exc:
            raise fail("--vm", exc) from None
        sizes.extend(vals)
    sizes = list(dict.fromkeys(sizes))
    backs: list[tuple[tuple[int, float], ...]] = []
    huges: list[tuple[int, ...]] = []
    for text in backings or ("2M",):
        try:
            b, h = parse_backing_kinds(text)
        except ValueError as exc:
            raise fail("--backing", exc) from None
        if (b, h) not in zip(backs, huges, strict=True):
            backs.append(b)
            huges.append(h)
    evs = list(dict.fromkeys(events or ("exit",)))
    if not (0.0 <= mapped <= 1.0):
        raise UserError("--mapped", None, None, "a fraction in [0, 1]", repr(mapped))
    if plot is not None:
        plot_format(plot)
        require_matplotlib()  # before the work: say so at once if it is missing
    names = list(dict.fromkeys(machines or ("d05",)))
    vs = load_variants(variants_file)
    chosen, base_idx = select_variants(vs, variants, kernels, baseline)
    check_sweep_size(len(names), len(sizes), len(backs), len(evs), len(chosen))
    ms = [apply_sets(load_machine(n, flag="--machine"), sets) for n in names]
    gran = GRANULE_BYTES[granule]

    total = len(ms) * len(sizes) * len(backs) * len(evs)
    kwargs: dict[str, Any] = {
        "baseline": base_idx,
        "mapped": mapped,
        "memslots": memslots,
        "granule": gran,
        "hugetlb": huges,
    }
    if progress_wanted(quiet, sys.stderr):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        with Progress(
            TextColumn("sweep"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(file=sys.stderr),
            transient=True,
        ) as bar:
            task = bar.add_task("sweep", total=total)
            result = run_sweep(
                ms, chosen, sizes, backs, evs, progress=lambda n: bar.advance(task, n), **kwargs
            )
    else:
        result = run_sweep(ms, chosen, sizes, backs, evs, **kwargs)

    if fmt == "csv":
        emit(result.to_csv(), output)
    elif fmt == "json":
        from s2teardown.render.envelope import envelope, to_json

        body = result.as_dict()
        doc = envelope("sweep", warnings=body.pop("warnings", ()), **body)
        notes = [n for m in ms for n in what_if_note(m)]
        if not backings:
            notes.append("backing defaults to 2 MiB leaves (THP); set --backing")
        if notes:
            doc["assumptions"] = notes
        emit(to_json(doc), output)
    else:
        _table(result, output, default_backing=not backings)
    if fmt != "table":
        for w in result.warnings:
            click.echo(f"s2teardown: warning: {w}", err=True)
    for m in ms:
        for n in what_if_note(m):
            click.echo(f"s2teardown: note: {n}", err=True)
    if plot is not None:
        plot_sweep(result, plot)
        if not quiet:
            click.echo(f"s2teardown: plot written to {plot}", err=True)


def _table(result: Any, output: str | None, *, default_backing: bool) -> None:
    from rich.table import Table
    from rich.text import Text

    from s2teardown.core.vocabulary import PHASES
    from s2teardown.inputs.units import format_ns, format_size
    from s2teardown.render.format import format_speedup

    t = Table(header_style="bold", box=None, pad_edge=False, padding=(0, 1))
    for c in ("machine", "VM", "backing", "event", "variant"):
        t.add_column(c, no_wrap=True)
    for c in ("Stage-2", "host free†", f"speedup vs {result.variants[result.baseline]}"):
        t.add_column(c, justify="right", no_wrap=True)
    t.add_column("dominant", no_wrap=True)
    s2, host, speed, dom = result.stage2_ns, result.host_free_ns, result.speedup, result.dominant_phase
    for m, n, b, e in result.points():
        for v, name in enumerate(result.variants):
            t.add_row(
                result.machines[m],
                format_size(result.vm_bytes[n]),
                result.backing_label(b),
                result.events[e],
                name,
                format_ns(float(s2[m, n, b, e, v])),
                format_ns(float(host[m, n, b, e, v])),
                format_speedup(float(speed[m, n, b, e, v])),
                PHASES[int(dom[m, n, b, e, v])],
            )
        if len(result.variants) > 1:
            t.add_section()
    foot = [
        Text(
            "† host free: the host freeing the guest's pages — outside Stage-2, not in the total",
            style="dim",
        )
    ]
    if default_backing:
        foot.append(Text("backing defaults to 2 MiB leaves (THP); set --backing", style="dim"))
    for w in result.warnings:
        foot.append(Text(f"warning: {w}", style="bold yellow"))
    if output:
        import io

        from rich.console import Console

        buf = io.StringIO()
        con = Console(file=buf, width=160, highlight=False, color_system=None)
        con.print(t)
        for f in foot:
            con.print(f)
        emit(buf.getvalue(), output)
        return
    con = console()
    con.print(t)
    for f in foot:
        con.print(f)


COMMANDS = [sweep]
