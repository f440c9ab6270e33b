"""`s2teardown plan`: capacity planning for a fleet — CPU time spent tearing VMs down."""

from __future__ import annotations

from typing import Any

import click

from s2teardown.cli.common import (
    SET_OPTION,
    console,
    emit,
    format_from_extension,
    format_option,
    output_option,
    what_if_note,
)


@click.command()
@click.argument("fleet", metavar="FLEET")
@click.option(
    "--concurrency",
    type=int,
    default=None,
    metavar="N",
    help="Teardowns running at once on one host (overrides the fleet file's).",
)
@click.option(
    "--remote-tlbi-fraction",
    type=float,
    default=0.10,
    show_default=True,
    metavar="F",
    help="Share of a broadcast TLBI's price each other PE spends handling it (the cost "
    "on other cores).",
)
@SET_OPTION
@format_option("table", "json", "markdown")
@output_option
@format_from_extension
def plan(
    fleet: str, concurrency: int | None, remote_tlbi_fraction: float, sets: tuple[str, ...],
    fmt: str, output: str | None
) -> None:
    """CPU time a fleet spends tearing VMs down, per kernel variant.

    FLEET is a fleet file (docs/api.md, "Fleet files") or a bundled name (example): teardowns
    per hour, a VM size and a backing distribution, machine, kernel or variants, concurrency.

    \b
    Per variant:
      own CPU-s/h    teardowns/h × mean end-to-end CPU time (Stage-2 + host side);
                     cores = CPU-s/h ÷ 3600
      p50, p99       wall-clock latency of one teardown (CPU plus its waits: SRCU grace
                     periods) over the size/backing mix (weighted quantiles of service
                     time: no queueing model)
      saving         own CPU-s/h of the baseline minus the variant's
      other cores    each broadcast TLBI costs each other PE of the host F × its price
    Concurrency N (machine file parameters): a broadcast TLBI costs
    (1 + tlbi_concurrency_slope·(N−1)) × its price; a DC CIVAC line
    max(its price, N / coherence_lines_per_us µs).

    \b
    Examples:
      s2teardown plan example
      s2teardown plan configs/fleets/example.yaml --concurrency 16 --format json
      s2teardown plan my-fleet.yaml --remote-tlbi-fraction 0.25 --format markdown
    """
    import dataclasses

    from s2teardown.errors import UserError
    from s2teardown.features.plan import load_fleet
    from s2teardown.features.plan import plan as make_plan
    from s2teardown.inputs.machine import apply_sets

    f = load_fleet(fleet)
    if sets:
        f = dataclasses.replace(f, machine=apply_sets(f.machine, sets))
    notes = what_if_note(f.machine)
    try:
        p = make_plan(f, concurrency=concurrency, remote_tlbi_fraction=remote_tlbi_fraction)
    except ValueError as exc:
        flag, _, rest = str(exc).partition(": ")
        raise UserError(f"--{flag}", None, None, rest.removeprefix("expected ")) from None
    if fmt == "json":
        from s2teardown.render.envelope import envelope, to_json

        body = p.as_dict()
        body["assumptions"] = [*notes, *body["assumptions"]]
        doc = envelope("plan", warnings=body.pop("warnings", ()), **body)
        emit(to_json(doc), output)
    elif fmt == "markdown":
        emit(_markdown(p, notes), output)
    else:
        _table(p, output, notes)
    if fmt != "table":
        for w in p.warnings:
            click.echo(f"s2teardown: warning: {w}", err=True)


def _cells(p: Any) -> tuple[list[str], list[list[str]]]:
    from s2teardown.inputs.units import format_ns

    head = [
        "variant",
        "own CPU-s/h",
        "cores",
        "p50",
        "p99",
        f"saving vs {p.variants[p.baseline]}",
        "other cores CPU-s/h",
        "other cores",
        "broadcast TLBIs/teardown",
    ]
    rows = []
    for r in p.rows():
        f = r["saving_fraction"]
        saving = f"{r['saving_cpu_seconds_per_hour']:,.1f} s/h" + (
            f" ({f:.1%})" if f is not None else ""
        )
        if r["variant"] == p.variants[p.baseline]:
            saving = "(baseline)"
        rows.append(
            [
                r["variant"],
                f"{r['cpu_seconds_per_hour']:,.1f}",
                f"{r['cores']:.3g}",
                format_ns(r["p50_ns"]),
                format_ns(r["p99_ns"]),
                saving,
                f"{r['other_cores_cpu_seconds_per_hour']:,.2f}",
                f"{r['other_cores']:.3g}",
                f"{r['tlbis_per_teardown']:,.0f}",
            ]
        )
    return head, rows


def _header(p: Any) -> list[str]:
    from s2teardown.inputs.units import backing_label, format_size

    f, c = p.fleet, p.concurrency
    d = p.as_dict()["concurrency"]["dc_civac_line_ns"]
    sizes = ", ".join(f"{format_size(s)} ×{w:g}" for s, w in f.vm_sizes)
    backs = ", ".join(f"{backing_label(b)} ×{w:g}" for b, w in f.backings)
    return [
        f"fleet {f.name}" + (f" — {f.description}" if f.description else ""),
        f"{f.teardowns_per_hour:,g} teardowns/h on {f.machine.name} ({f.machine.pes} PEs), "
        f"event {f.event}; VM sizes: {sizes}; backings: {backs}",
        f"concurrency {c.n}: broadcast TLBI × {c.tlbi_factor:g} "
        f"(slope {c.tlbi_concurrency_slope:g}); "
        f"DC CIVAC line max({d['own']:.4g}, {c.n} / {c.coherence_lines_per_us:g} per µs = "
        f"{d['floor']:.4g}) = {d['used']:.4g} ns",
        f"other cores: each broadcast TLBI costs each of the other {f.machine.pes - 1} PEs "
        f"{p.remote_tlbi_fraction:g} × its price",
    ]


def _table(p: Any, output: str | None, notes: list[str]) -> None:
    from rich.console import Console, Group
    from rich.table import Table
    from rich.text import Text

    from s2teardown.features.plan import ASSUMPTIONS

    head, rows = _cells(p)
    t = Table(header_style="bold", box=None, pad_edge=False, padding=(0, 1))
    for i, h in enumerate(head):
        t.add_column(h, justify="left" if i == 0 else "right", no_wrap=True)
    for r in rows:
        t.add_row(*r)
    parts: list[Any] = [Text("s2teardown plan", style="bold")]
    parts += [Text(line) for line in _header(p)]
    parts += [Text(""), t, Text("")]
    parts += [Text(f"assumption: {a}", style="dim") for a in (*notes, *ASSUMPTIONS)]
    parts += [Text(f"warning: {w}", style="bold yellow") for w in p.warnings]
    if output:
        import io

        buf = io.StringIO()
        Console(file=buf, width=180, highlight=False, color_system=None).print(Group(*parts))
        emit(buf.getvalue(), output)
        return
    console().print(Group(*parts))


def _markdown(p: Any, notes: list[str]) -> str:
    from s2teardown.features.plan import ASSUMPTIONS

    head, rows = _cells(p)
    lines = [f"**{line}**" if i == 0 else line for i, line in enumerate(_header(p))]
    lines = [line + "  " for line in lines]
    lines += ["", "| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += [""] + [f"- {a}" for a in (*notes, *ASSUMPTIONS)] + [f"- **warning:** {w}" for w in p.warnings]
    return "\n".join(lines) + "\n"


COMMANDS = [plan]
