"""``variants``: list, show and the schema of kernel variants."""

from __future__ import annotations

import click

from s2teardown.cli.common import console


# ---------------------------------------------------------------------------------------------
@click.group()
def variants() -> None:
    """Kernel variants: the v5.5 baseline and the series, patch by patch.

    \b
    Examples:
      s2teardown variants list
      s2teardown variants show P5
      s2teardown variants list --variants-file mine.yaml
    """


@variants.command("list")
@click.option("--variants-file", metavar="FILE")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def variants_list(variants_file: str | None, fmt: str) -> None:
    """List the variants (bundled, plus your file's)."""

    from s2teardown.inputs.variants import load_variants

    vs = load_variants(variants_file)
    if fmt == "json":
        from s2teardown.render.envelope import envelope, to_json

        rows = [{"name": v.name, "base": v.base, "title": v.title, "aliases": list(v.aliases)}
                for v in vs.variants]
        click.echo(to_json(envelope("variants list", variants=rows)), nl=False)
        return
    from rich.table import Table

    t = Table(box=None, header_style="bold")
    for c in ("name", "base", "title"):
        t.add_column(c)
    for v in vs.variants:
        alias = f" (= {', '.join(v.aliases)})" if v.aliases else ""
        t.add_row(v.name + alias, v.base or "—", v.title)
    console().print(t)


@variants.command("show")
@click.argument("name")
@click.option("--variants-file", metavar="FILE")
def variants_show(name: str, variants_file: str | None) -> None:
    """Show one variant's full behaviour per invocation kind, and where each value comes from."""
    from dataclasses import fields

    from rich.table import Table

    from s2teardown.core.behaviour import Behaviour
    from s2teardown.inputs.variants import load_variants

    v = load_variants(variants_file).lookup(name, "NAME")
    con = console()
    con.print(f"[bold]{v.name}[/bold] — {v.title}")
    if v.provenance:
        con.print(f"provenance: {v.provenance}")
    if v.description:
        con.print(v.description)
    t = Table(box=None, header_style="bold")
    t.add_column("field")
    kinds = list(v.behaviours)
    for k in kinds:
        t.add_column(k)
    for f in fields(Behaviour):
        t.add_row(f.name, *[f"{getattr(v.behaviours[k], f.name)} ({v.origin[(k, f.name)]})" for k in kinds])
    con.print(t)


@variants.command("schema")
def variants_schema_cmd() -> None:
    """Print the JSON Schema of variants files."""
    import json

    from s2teardown.inputs.variants import variants_schema

    click.echo(json.dumps(variants_schema(), indent=2))



COMMANDS = [variants]
