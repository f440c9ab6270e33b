"""``estimate`` and ``explain``: one teardown, per phase and as a call tree."""

from __future__ import annotations

from typing import Any

import click

from s2teardown.cli.common import (
    FORMATS,
    PIPED_WIDTH,
    build_estimate,
    console,
    emit,
    format_from_extension,
    format_option,
    input_options,
    output_option,
)
from s2teardown.errors import UserError


@click.command()
@input_options
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
@click.option("--formulas", is_flag=True, help="Print each phase's formula, then with numbers, then the total.")
@click.option("--samples", type=int, default=None, metavar="N",
              help="Monte Carlo over the machine's parameter ranges: p5/p50/p95 per phase and total "
              "(docs/uncertainty.md).")
@click.option("--seed", type=int, default=None, metavar="INT", help="Seed for --samples (reported; default fixed).")
@click.option("--distribution", type=click.Choice(["triangular", "uniform", "loguniform"]),
              default="triangular", show_default=True, help="How a ranged parameter is drawn for --samples.")
@click.option("--sensitivity", is_flag=True,
              help="Elasticity of each total to each parameter, and the share resting on assumed values.")
@output_option
@format_from_extension
def estimate(fmt: str, formulas: bool, samples: int | None, seed: int | None, distribution: str,
             sensitivity: bool, output: str | None, **inputs: Any) -> None:
    """Per-phase cost of tearing down one VM, for every kernel variant.

    \b
    Examples:
      s2teardown estimate --vm 64G --machine d05
      s2teardown estimate --vm 64G --machine d05 --variants v5.5,P5,series --formulas
      s2teardown estimate --vm 64G --machine thunderx --backing 2M:90,4K:10 --format csv
      s2teardown estimate --vm 8G --machine d05 --event munmap --range 3M:1G
      s2teardown estimate --vm 64G --machine grace --kernel 5.5 --kernel 6.8 --event munmap
      s2teardown estimate --vm 64G --machine d05 --samples 100000 --sensitivity
    """
    est = build_estimate(**inputs)
    mc = sens = None
    if samples is not None:
        from s2teardown.features.uncertainty import DEFAULT_SEED, monte_carlo

        mc = monte_carlo(est, samples, DEFAULT_SEED if seed is None else seed, distribution)
    elif seed is not None:
        raise UserError("--seed", None, None, "--samples N with --seed", "--seed alone")
    if sensitivity:
        from s2teardown.features.uncertainty import sensitivity as sensitivity_of

        sens = sensitivity_of(est)
    if fmt == "json":
        from s2teardown.render.data import estimate_document, to_json

        doc = estimate_document(est)
        if mc is not None:
            doc["samples"] = mc
        if sens is not None:
            doc["sensitivity"] = sens
        emit(to_json(doc), output)
    elif fmt == "csv":
        from s2teardown.render.data import estimate_csv

        parts = [estimate_csv(est)]
        if mc is not None:
            from s2teardown.render.uncertainty import samples_csv

            parts.append(samples_csv(mc))
        if sens is not None:
            from s2teardown.render.uncertainty import sensitivity_csv

            parts.append(sensitivity_csv(sens))
        emit("\n".join(parts), output)
    elif fmt == "markdown":
        from s2teardown.render.data import estimate_markdown

        parts = [estimate_markdown(est)]
        if mc is not None:
            from s2teardown.render.uncertainty import samples_markdown

            parts.append(samples_markdown(mc))
        if sens is not None:
            from s2teardown.render.uncertainty import sensitivity_markdown

            parts.append(sensitivity_markdown(sens))
        emit("\n".join(parts), output)
    else:
        from s2teardown.render.table import estimate_table
        from s2teardown.render.table import formulas as formulas_view

        con = console()
        width = PIPED_WIDTH if output else con.width
        views: list[Any] = [estimate_table(est, width)]
        if formulas:
            views.append(formulas_view(est))
        if mc is not None:
            from s2teardown.render.uncertainty import render_samples

            views.append(render_samples(mc))
        if sens is not None:
            from s2teardown.render.uncertainty import sensitivity_table

            views.append(sensitivity_table(sens))
        if output:
            import io

            from rich.console import Console

            buf = io.StringIO()
            file_con = Console(file=buf, width=PIPED_WIDTH, highlight=False, color_system=None)
            for i, v in enumerate(views):
                if i:
                    file_con.print()
                file_con.print(v)
            emit(buf.getvalue(), output)
            return
        for i, v in enumerate(views):
            if i:
                con.print()
            con.print(v)
    for wmsg in est.warnings:
        if fmt != "table" or output:
            click.echo(f"s2teardown: warning: {wmsg}", err=True)


@click.command()
@input_options
@format_option("table", "json")
@output_option
@format_from_extension
def explain(fmt: str, output: str | None, **inputs: Any) -> None:
    """The call path of one variant as a tree: phases, kernel functions, instructions.

    Each node carries its count and cost on the chosen machine.  Without --variants or --kernel
    the tree is the baseline's (the first variant, or --baseline); with several variants
    selected, one tree each.

    \b
    Examples:
      s2teardown explain --vm 64G --machine d05 --variants v5.5
      s2teardown explain --vm 64G --machine grace --kernel 6.8 --event munmap --format json
    """
    est = build_estimate(**inputs)
    from s2teardown.render.explain import explain_rich, explain_tree

    chosen = (range(len(est.variants)) if inputs.get("variants") or inputs.get("kernels")
              else [est.breakdown.baseline])
    trees = [explain_tree(est, v) for v in chosen]
    if fmt == "json":
        from s2teardown.render.envelope import envelope, to_json

        emit(to_json(envelope("explain", warnings=est.warnings, trees=trees)), output)
        return
    if output:
        import io

        from rich.console import Console

        buf = io.StringIO()
        file_con = Console(file=buf, width=200, highlight=False, color_system=None)
        for t in trees:
            file_con.print(explain_rich(t))
        emit(buf.getvalue(), output)
        for w in est.warnings:
            click.echo(f"s2teardown: warning: {w}", err=True)
        return
    con = console()
    for t in trees:
        con.print(explain_rich(t))
    for w in est.warnings:
        con.print(f"[bold yellow]warning:[/bold yellow] {w}")




COMMANDS = [estimate, explain]
