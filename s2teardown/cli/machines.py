"""``machines``: list, show, validate and the schema of machine descriptions."""

from __future__ import annotations

from collections.abc import Sequence

import click

from s2teardown.cli.common import SET_OPTION, console


# ---------------------------------------------------------------------------------------------
@click.group()
def machines() -> None:
    """Bundled and custom machine descriptions.

    \b
    Examples:
      s2teardown machines list
      s2teardown machines show d05
      s2teardown machines validate my-host.yaml
      s2teardown machines schema > machine.schema.json
    """


@machines.command("list")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def machines_list(fmt: str) -> None:
    """List the bundled machines."""

    from s2teardown.inputs.bundled import bundled_names
    from s2teardown.inputs.machine import load_machine

    rows = []
    for n in bundled_names("machines"):
        m = load_machine(n)
        feats = [f for f in ("vhe", "s2fwb", "tlbi_range", "tlbi_repeat") if m.feature(f)]
        rows.append({"name": n, "sockets": m.value("sockets"), "cores_per_socket": m.value("cores_per_socket"),
                     "features": feats, "description": m.description})
    if fmt == "json":
        from s2teardown.render.envelope import envelope, to_json

        click.echo(to_json(envelope("machines list", machines=rows)), nl=False)
        return
    from rich.table import Table

    t = Table(box=None, header_style="bold")
    for c in ("name", "sockets × cores", "features", "description"):
        t.add_column(c)
    for r in rows:
        t.add_row(r["name"], f"{r['sockets']} × {r['cores_per_socket']}", ",".join(r["features"]) or "—", r["description"])
    console().print(t)


@machines.command("show")
@click.argument("machine")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "yaml"]), default="table",
              show_default=True)
@SET_OPTION
def machines_show(machine: str, fmt: str, sets: tuple[str, ...]) -> None:
    """Show a machine's values, each with its source, range and note, and the price of every
    operation derived from them (what `estimate` uses, at the machine's own placement).

    \b
    Examples:
      s2teardown machines show d05
      s2teardown machines show graviton3 --format json
      s2teardown machines show d05 --set interconnect_latency_ns=300 --format yaml
    """
    from s2teardown.core.vocabulary import OPS
    from s2teardown.features.estimate import machine_prices
    from s2teardown.inputs.machine import apply_sets, load_machine

    m = apply_sets(load_machine(machine, flag="MACHINE"), sets)
    prices, placement = machine_prices(m)
    derived = []
    for i, op in enumerate(OPS):
        how = ("explicit price in the machine file" if op in prices.overridden else
               " + ".join(f"{prices.design[i, c]:.4g}·{f}" for c, f in enumerate(prices.theta_fields)
                          if prices.design[i, c] != 0) or "0")
        derived.append({"op": op, "ns": float(prices.ops[i]), "from": how,
                        "assumed": op in prices.assumed_ops})
    body = {**m.as_dict(), "what_if": list(m.what_if), "derived_prices": derived}
    if fmt == "json":
        from s2teardown.render.envelope import envelope, to_json

        click.echo(to_json(envelope("machines show", **{"machine": body})), nl=False)
        return
    if fmt == "yaml":
        import yaml

        click.echo(yaml.safe_dump(body, sort_keys=False, allow_unicode=True, width=100), nl=False)
        return
    from rich.table import Table

    t = Table(title=f"{m.name} — {m.description}", box=None, header_style="bold")
    for c in ("section", "field", "value", "source", "range", "note"):
        t.add_column(c)
    for section in ("topology", "features", "placement", "parameters", "prices"):
        for name, p in getattr(m, section).items():
            rng = "" if p.min is None else f"{p.min:g}..{p.max:g}"
            t.add_row(section, name, str(p.value), p.source, rng, p.note or "")
    d = Table(title="derived prices (ns per operation)", box=None, header_style="bold")
    for c in ("op", "ns", "from"):
        d.add_column(c)
    for row in derived:
        d.add_row(str(row["op"]), f"{row['ns']:.4g}" + ("*" if row["assumed"] else ""), str(row["from"]))
    con = console()
    con.print(t)
    con.print()
    con.print(d)
    for note in m.what_if:
        con.print(f"what-if (--set): {note}")


@machines.command("validate")
@click.argument("files", nargs=-1, required=True)
def machines_validate(files: Sequence[str]) -> None:
    """Validate machine files; exit 2 on the first error."""
    from s2teardown.inputs.machine import load_machine

    for f in files:
        m = load_machine(f, flag="FILE")
        click.echo(f"{f}: ok ({m.name})")


@machines.command("schema")
def machines_schema() -> None:
    """Print the JSON Schema of machine files."""
    import json

    from s2teardown.inputs.machine import json_schema

    click.echo(json.dumps(json_schema(), indent=2))




COMMANDS = [machines]
