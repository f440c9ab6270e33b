"""``table``, ``check`` and ``diff``: cost tables for CI (docs/ci.md).

Nothing heavy is imported here at module level (``s2teardown --help`` imports this module):
the library side is `s2teardown.features.tables`, imported inside each command.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click

from s2teardown.cli.common import EXIT_OK, EXIT_REGRESSION, console, emit, format_from_extension
from s2teardown.errors import UserError

REPORT_FORMATS = click.Choice(["table", "json", "markdown"])


def _tolerance(flag: str, value: float) -> float:
    if not math.isfinite(value) or value < 0:
        raise UserError(flag, None, None, "a finite number >= 0", repr(value))
    return value


def _table_dir(path: str | None) -> Path:
    if path is None:
        return Path(".")
    parent = Path(path).parent
    return parent if str(parent) else Path(".")


def _write_table(path: str, text: str, flag: str) -> None:
    from s2teardown.render.atomic import write_text_atomic

    try:
        write_text_atomic(path, text)
    except OSError as exc:
        raise UserError(
            flag, None, None, "a writable file path", f"{path!r} ({exc.strerror})"
        ) from None


def _report(
    c: Any,
    fmt: str,
    output: str | None,
    *,
    command: str,
    code: int,
    title: str,
    show_unchanged: bool,
    extra: list[str],
) -> None:
    from s2teardown.render import tables as views

    if fmt == "json":
        doc = views.comparison_document(c, command=command, exit_code=code)
        if extra:
            doc["messages"] = extra
        emit(views.table_json(doc), output)
        return
    if fmt == "markdown":
        text = views.render_markdown(c, title=title, show_unchanged=show_unchanged)
        if extra:
            text += "\n" + "\n".join(f"_{m}_" for m in extra) + "\n"
        emit(text, output)
        return
    con = console()
    if output or not con.is_terminal:  # plain text: never wrapped or cut, easy to grep
        text = views.render_text(c, show_unchanged=show_unchanged)
        emit(text + "".join(f"{m}\n" for m in extra), output)
        return
    from rich.table import Table
    from rich.text import Text

    con.print(Text(f"{c.old_name} → {c.new_name}", style="bold"))
    for line in views.summary_lines(c, diffs=True):
        style = "green" if line.startswith("  +") else "red" if line.startswith("  -") else ""
        con.print(Text(line, style=style))
    con.print(Text(views.tolerance_text(c), style="dim"))
    shown = [e for e in c.entries if show_unchanged or e.status != "unchanged"]
    if shown:
        tab = Table(box=None, header_style="bold")
        for i, h in enumerate(views.ENTRY_HEADERS):
            tab.add_column(
                h, justify="right" if 3 <= i <= 6 else "left", no_wrap=i < len(views.ENTRY_HEADERS) - 1
            )
        styles = {"worse": "red", "better": "green", "added": "cyan", "removed": "yellow"}
        for e in shown:
            cells = views.entry_cells(e)
            tab.add_row(*[Text(x) for x in cells], style=styles.get(e.status, ""))
        con.print(tab)
    for line in views.total_lines(c, per_variant=show_unchanged):
        con.print(Text(line))
    for line in views.verdict_lines(c):
        con.print(Text(line, style="bold red" if c.regression else "bold green"))
    for m in extra:
        con.print(Text(m))


@click.command("table")
@click.argument("spec")
@click.option(
    "-o",
    "--output",
    default=None,
    metavar="FILE",
    help="Write the table to FILE (atomically; paths in it are then relative to FILE's "
    "directory) instead of stdout.",
)
@click.option("-q", "--quiet", is_flag=True, help="No summary on stderr.")
@click.option(
    "--embed-inputs",
    is_flag=True,
    help="Embed the text of the spec, machine and variants files (check then shows a diff of a "
    "changed input); by default the table names each input by path and sha256 only, so it stays "
    "short to review.",
)
def table(spec: str, output: str | None, quiet: bool, embed_inputs: bool) -> None:
    """Evaluate a table spec (machines × VM sizes × backings × events, every variant) into a
    versioned JSON cost table that `check` can recompute and compare.

    \b
    Examples:
      s2teardown table configs/tables/example.yaml -o costs.json
      s2teardown check costs.json
    """

    from s2teardown.features import tables as t
    from s2teardown.render import tables as views

    sp = t.load_spec(spec)
    if output:
        parent = Path(output).parent
        if str(parent) and not parent.exists():
            try:
                parent.mkdir(parents=True)
            except OSError as exc:
                raise UserError("--output", None, None, "a path whose directory can be created",
                                f"{output!r} ({exc.strerror})") from None
    tdir = _table_dir(output)
    doc = t.build_table(sp, table_dir=tdir, spec_path=t.relative_path(Path(spec), tdir),
                        embed_inputs=embed_inputs)
    text = views.table_json(doc)
    if output:
        _write_table(output, text, "--output")
    else:
        click.echo(text, nl=False)
    if not quiet:
        where = output or "stdout"
        click.echo(f"s2teardown: wrote {where}: {views.summary_of_table(doc)}", err=True)
        for line in views.lock_hold_lines(doc):
            click.echo(f"s2teardown: warning: {line}", err=True)


@click.command("check")
@click.argument("table_file", metavar="TABLE")
@click.option(
    "--rtol",
    default=0.01,
    show_default=True,
    type=float,
    help="Relative tolerance: a cost is flagged only if it moved by more than RTOL × its "
    "old value (and by more than --atol).",
)
@click.option(
    "--atol",
    default=1000.0,
    show_default=True,
    type=float,
    metavar="NS",
    help="Absolute tolerance in ns: a cost is flagged only if it moved by more than NS (and by "
    "more than --rtol).",
)
@click.option(
    "--format",
    "fmt",
    type=REPORT_FORMATS,
    default="table",
    show_default=True,
    help="markdown: for a pull-request comment.",
)
@click.option(
    "--gate",
    type=click.Choice(["phases", "stage2", "end-to-end"]),
    default="phases",
    show_default=True,
    help="What can fail the check: phases = every phase, the stretch and exact counts; stage2 = "
    "the Stage-2 total only; end-to-end = Stage-2 plus the host's free.",
)
@click.option(
    "--update",
    is_flag=True,
    help="Rewrite TABLE (atomically) with the new results, print the differences, exit 0.",
)
@click.option(
    "-o",
    "--output",
    default=None,
    metavar="FILE",
    help="Write the report (not the table) to FILE instead of stdout.",
)
@format_from_extension
def check(
    table_file: str, rtol: float, atol: float, fmt: str, gate: str, update: bool,
    output: str | None,
) -> None:
    """Recompute a cost table from its inputs as they are now and compare.

    First says what changed (model version, which input file, with a diff, rows added or
    removed), then compares: counts must match exactly; a cost is flagged only past both --atol
    and --rtol; a new lock-hold warning is a regression.

    \b
    Exit: 0 no change beyond tolerance (or --update) · 1 regression · 2 bad input ·
          3 nothing comparable (another format_version, no rows in common).
    \b
    Examples:
      s2teardown check costs.json
      s2teardown check costs.json --format markdown -o comment.md
      s2teardown check costs.json --rtol 0.05 --atol 10000
      s2teardown check costs.json --gate stage2
      s2teardown check costs.json --update
    """
    from s2teardown.features import tables as t
    from s2teardown.render import tables as views

    rtol = _tolerance("--rtol", rtol)
    atol = _tolerance("--atol", atol)
    old = t.read_table(table_file)
    spec = t.spec_from_table(old, table_file)
    new = t.build_table(
        spec, table_dir=_table_dir(table_file), spec_path=old["spec"]["path"], missing_ok=True,
        embed_inputs=old["spec"]["text"] is not None,
    )
    note = t.spec_file_note(old, table_file)
    c = t.compare(
        old,
        new,
        rtol=rtol,
        atol=atol,
        old_name=table_file,
        new_name="now",
        notes=[note] if note else [],
        gate=gate,
    )
    t.require_comparable(c)
    extra: list[str] = []
    code = EXIT_REGRESSION if c.regression and not update else EXIT_OK
    if update:
        _write_table(table_file, views.table_json(new), "TABLE")
        extra.append(f"updated {table_file}: {views.summary_of_table(new)}")
    _report(
        c,
        fmt,
        output,
        command="check",
        code=code,
        title="s2teardown check",
        show_unchanged=False,
        extra=extra,
    )
    if code != EXIT_OK:
        _exit(code)


def _exit(code: int) -> None:
    """Leave with ``code`` (`cli.main` maps the command's exit code to the process's)."""
    raise click.exceptions.Exit(code)


@click.command("diff")
@click.argument("old")
@click.argument("new")
@click.option(
    "--rtol",
    default=0.01,
    show_default=True,
    type=float,
    help="Relative tolerance for marking entries worse/better.",
)
@click.option(
    "--atol",
    default=1000.0,
    show_default=True,
    type=float,
    metavar="NS",
    help="Absolute tolerance (ns) for marking entries worse/better.",
)
@click.option("--format", "fmt", type=REPORT_FORMATS, default="table", show_default=True)
@click.option("-o", "--output", default=None, metavar="FILE", help="Write the report to FILE.")
@format_from_extension
def diff(old: str, new: str, rtol: float, atol: float, fmt: str, output: str | None) -> None:
    """Two cost tables side by side: old → new, amount and percent, per row and variant, and in
    total.  Exit 0 (3 if nothing is comparable).

    \b
    Examples:
      s2teardown diff main.json branch.json
      s2teardown diff main.json branch.json --format markdown
    """
    from s2teardown.features import tables as t

    rtol = _tolerance("--rtol", rtol)
    atol = _tolerance("--atol", atol)
    a = t.read_table(old)
    b = t.read_table(new)
    c = t.compare(a, b, rtol=rtol, atol=atol, old_name=old, new_name=new)
    t.require_comparable(c)
    _report(
        c,
        fmt,
        output,
        command="diff",
        code=EXIT_OK,
        title="s2teardown diff",
        show_unchanged=True,
        extra=[],
    )


COMMANDS = [table, check, diff]
