"""The command line: click commands only — parse, call the library, render, map errors to exits.

Exit codes (docs/cli.md): 0 success · 1 regression found by ``check`` · 2 bad input or usage ·
3 nothing comparable · 70 internal error (traceback only with ``--debug``) · 130 interrupted.
Heavy modules (numpy, the model) are imported inside the commands, so ``--help`` and
``--version`` stay fast.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import click

from . import __version__
from .errors import UserError

EXIT_OK, EXIT_REGRESSION, EXIT_USAGE, EXIT_NOTHING_COMPARABLE = 0, 1, 2, 3
EXIT_INTERNAL, EXIT_INTERRUPTED = 70, 130

SIZE_HELP = "Sizes use binary prefixes: K=KiB, M=MiB, G=GiB, T=TiB (64G = 68,719,476,736 bytes)."


def _fail(flag: str, exc: ValueError) -> UserError:
    msg = str(exc)
    if msg.startswith("expected "):
        exp, _, got = msg[len("expected "):].partition(", got ")
        return UserError(flag, None, None, exp, got)
    return UserError(flag, None, None, msg)


def _parse(flag: str, fn: Callable[[str], Any], text: str) -> Any:
    try:
        return fn(text)
    except ValueError as exc:
        raise _fail(flag, exc) from None


def _emit(text: str, output: str | None) -> None:
    if output:
        from .atomic import write_text_atomic

        try:
            write_text_atomic(output, text)
        except OSError as exc:
            raise UserError("--output", None, None, "a writable file path", f"{output!r} ({exc.strerror})") from None
    else:
        click.echo(text, nl=False)


def _console() -> Any:
    """A rich console; when stdout is not a terminal, wide enough that tables never wrap."""
    from rich.console import Console

    con = Console(highlight=False, soft_wrap=False)
    if not con.is_terminal:
        con = Console(highlight=False, soft_wrap=False, width=200)
    return con


FORMATS = click.Choice(["table", "json", "csv", "markdown"])


def output_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``-o/--output FILE``: write there atomically instead of stdout."""
    return click.option("-o", "--output", default=None, metavar="FILE",
                        help="Write to FILE (atomically) instead of stdout.")(fn)


def format_option(*choices: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--format`` with these choices, the first being the default."""
    return click.option("--format", "fmt", type=click.Choice(list(choices)), default=choices[0],
                        show_default=True)
#: --event values (workload.EVENTS_SUPPORTED; repeated here so --help does not import numpy).
EVENT_CHOICES = ["exit", "munmap", "clear", "oom", "memslot-delete", "reset", "block-retry",
                 "munmap-then-exit"]
RANGED = ("munmap", "munmap-then-exit", "clear", "oom", "memslot-delete", "block-retry")
#: KVM_USER_MEM_SLOTS on arm64 (arch/arm64/include/asm/kvm_host.h)
MAX_MEMSLOTS = 512


class _Group(click.Group):
    """The top-level group: the commands of `s2teardown.commands` are discovered (imported) only
    when a name is not one of this module's, or when all are listed (``--help``, suggestions) —
    ``estimate`` never pays for importing the others."""

    discovered = False

    def discover(self) -> None:
        if not self.discovered:
            self.discovered = True
            from .commands import discover

            for command in discover():
                self.add_command(command)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and not self.discovered:
            self.discover()
            command = super().get_command(ctx, cmd_name)
        return command

    def list_commands(self, ctx: click.Context) -> list[str]:
        self.discover()
        return super().list_commands(ctx)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="s2teardown")
@click.option("--debug", is_flag=True, help="Show a traceback on internal errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """What tearing down a KVM/arm64 VM's Stage-2 costs, per phase, for each kernel variant.

    \b
    Examples:
      s2teardown estimate --vm 64G --machine d05
      s2teardown estimate --vm 64G --machine emag --backing 4K --format json
      s2teardown estimate --vm 16G --machine d05 --event munmap --range 1G:4G
      s2teardown machines list
      s2teardown variants show P5
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def input_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options that describe one teardown: machine, variants, workload, path, kernel."""
    opts = [
        click.option("--vm", "vm", default=None, metavar="SIZE",
                     help="Guest RAM size, e.g. 64G (required unless --scenario). " + SIZE_HELP),
        click.option("--scenario", default=None, metavar="NAME|FILE",
                     help="An explicit layout and event (docs/scenario-format.md) instead of --vm and "
                     "the workload flags; bundled: qemu-virt, thp-dirty-log."),
        click.option("--machine", "machine", default="d05", show_default=True, metavar="NAME|FILE",
                     help="Machine description: a YAML path, or a bundled name (see `machines list`)."),
        click.option("--variants", "variants", multiple=True, metavar="NAMES",
                     help="Variants to show, comma-separated or repeated (default: all). `series` = P7."),
        click.option("--variants-file", metavar="FILE",
                     help="Your own variants YAML (may build on the bundled ones by `base`)."),
        click.option("--kernel", "kernels", multiple=True, metavar="VERSION",
                     help="Add the mainline variant in force at VERSION (e.g. 6.8, 6.6.47); repeatable."),
        click.option("--event", type=click.Choice(EVENT_CHOICES), default="exit", show_default=True,
                     help="The path into Stage-2 unmap. exit: the process exits (release -> "
                     "kvm_arch_flush_shadow_all); munmap: the VMM unmaps guest RAM (MMU_NOTIFY_UNMAP); "
                     "clear: MMU_NOTIFY_CLEAR (MADV_DONTNEED, THP split, swap-out, migration); oom: the "
                     "OOM reaper (non-blockable UNMAP); memslot-delete; reset (vCPU re-init: "
                     "stage2_unmap_vm); block-retry (table -> block in the fault path); munmap-then-exit."),
        click.option("--range", "range_", metavar="OFFSET:SIZE",
                     help="The part of guest RAM a munmap/clear/oom unmaps (default: all of it); for "
                     "memslot-delete and block-retry, OFFSET picks the memslot / 2 MiB block."),
        click.option("--backing", default=None, metavar="MIX",
                     help="Leaf sizes: 2M, 4K, 1G, or a mix in percent such as 2M:90,4K:10 (default 2M)."),
        click.option("--mapped", default=1.0, show_default=True, type=float,
                     help="Fraction of guest RAM mapped at Stage-2 (rounded down to whole leaves)."),
        click.option("--device", "device", default=0.0, show_default=True, type=float,
                     help="Fraction of the mapped bytes that are device pages (never cleaned)."),
        click.option("--memslots", default=1, show_default=True, type=int,
                     help="Equal memslots guest RAM is split into."),
        click.option("--ipa-bits", default="auto", show_default=True,
                     help="IPA size, 32..48, or auto (40 unless the guest needs more, as QEMU does)."),
        click.option("--granule", default="4K", show_default=True, type=click.Choice(["4K", "16K", "64K"]),
                     help="Page size of host and Stage-2."),
        click.option("--ram-base", default="1G", show_default=True, metavar="SIZE",
                     help="Guest-physical address of RAM (QEMU virt: 1 GiB)."),
        click.option("--placement", default=None, metavar="L,S,R",
                     help="Memory placement: fractions on the local node, another node of the same "
                     "socket, another socket (default: the machine's)."),
        click.option("--preempt", type=click.Choice(["none", "voluntary", "full"]), default="none",
                     show_default=True, help="Kernel preemption model for the lock-hold warnings."),
        click.option("--watchdog-thresh", default=10.0, show_default=True, type=float,
                     help="kernel.watchdog_thresh in seconds; soft lockups are reported at twice it."),
        click.option("--baseline", default=None, metavar="NAME",
                     help="Variant speedups are relative to (default: the first)."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def build_estimate(
    vm: str | None, scenario: str | None, machine: str, variants: Sequence[str], variants_file: str | None, kernels: Sequence[str],
    event: str, range_: str | None, backing: str | None, mapped: float, device: float, memslots: int,
    ipa_bits: str, granule: str, ram_base: str, placement: str | None, preempt: str,
    watchdog_thresh: float, baseline: str | None,
) -> Any:
    """Parse and check the input options, then run the estimate (exit 2 on any bad input)."""
    from .api import estimate as run
    from .machine import load_machine
    from .prices import Placement
    from .units import parse_backing, parse_range, parse_size
    from .variants import load_variants
    from .workload import Workload

    if (vm is None) == (scenario is None):
        raise UserError("--vm", None, None, "exactly one of --vm SIZE or --scenario FILE",
                        "both" if vm else "neither")
    if scenario is not None:
        ctx = click.get_current_context()
        clash = [f"--{n.replace('_', '-')}" for n in ("event", "range_", "backing", "mapped", "device",
                                                      "memslots", "ipa_bits", "granule", "ram_base")
                 if ctx.get_parameter_source(n) == click.core.ParameterSource.COMMANDLINE]
        if clash:
            raise UserError(clash[0].replace("range-", "range"), None, None,
                            "no workload flag with --scenario (the file describes the layout and event)",
                            clash[0].replace("range-", "range"))
    vm_bytes = _parse("--vm", parse_size, vm) if vm is not None else 0
    back = _parse("--backing", parse_backing, backing) if backing else ((2 << 20, 100.0),)
    rng = _parse("--range", parse_range, range_) if range_ else None
    if rng is not None and event not in RANGED:
        raise UserError("--range", None, None, "an --event that takes a range (" + ", ".join(RANGED) + ")",
                        f"--event {event}")
    if not (0 < watchdog_thresh < 1e6):
        raise UserError("--watchdog-thresh", None, None, "a positive number of seconds", repr(watchdog_thresh))
    base_b = _parse("--ram-base", parse_size, ram_base)
    bits: int | None = None
    if ipa_bits != "auto":
        try:
            bits = int(ipa_bits)
        except ValueError:
            raise UserError("--ipa-bits", None, None, "auto or a whole number 32..48", repr(ipa_bits)) from None
        if not 32 <= bits <= 48:
            raise UserError("--ipa-bits", None, None, "auto or a whole number 32..48", str(bits))
    if not 1 <= memslots <= MAX_MEMSLOTS:
        raise UserError("--memslots", None, None, f"a whole number 1..{MAX_MEMSLOTS} (KVM's arm64 limit)",
                        str(memslots))
    for flag, val in (("--mapped", mapped), ("--device", device)):
        if not (0.0 <= val <= 1.0):
            raise UserError(flag, None, None, "a fraction in [0, 1]", repr(val))
    pl = None
    if placement is not None:
        try:
            fr = [float(x) for x in placement.split(",")]
        except ValueError:
            fr = []
        if len(fr) != 3 or any(not (0 <= x <= 1) for x in fr) or abs(sum(fr) - 1) > 1e-9:
            raise UserError("--placement", None, None, "three fractions L,S,R in [0,1] summing to 1",
                            repr(placement))
        pl = Placement(*fr)
    m = load_machine(machine, flag="--machine")
    vs = load_variants(variants_file)
    names = [n.strip() for item in variants for n in item.split(",") if n.strip()]
    chosen = vs.select(names) if names or not kernels else []
    kernel_warnings: list[str] = []
    for k in kernels:
        match = vs.match_kernel(k)
        kernel_warnings.extend(w for w in match.warnings if w not in kernel_warnings)
        if match.variant not in chosen:
            chosen.append(match.variant)
    if baseline is not None:
        b = vs.lookup(baseline, "--baseline")
        if b not in chosen:
            chosen = [b, *chosen]
        baseline = b.name
    if scenario is not None:
        from .api import estimate_scenario
        from .scenario import load_scenario

        sc = load_scenario(scenario, flag="--scenario")
        est = estimate_scenario(m, chosen, sc, baseline=baseline, placement=pl, preempt=preempt,
                                watchdog_thresh_s=watchdog_thresh)
        return dataclasses.replace(est, warnings=(*kernel_warnings, *est.warnings))
    gran = {"4K": 4096, "16K": 16384, "64K": 65536}[granule]
    w = Workload(vm_bytes=vm_bytes, backing=back, mapped=mapped, device_fraction=device,
                 memslots=memslots, ipa_bits=bits, granule=gran, ram_base=base_b, event=event,
                 range=rng, placement=pl)
    try:
        est = run(m, chosen, w, baseline=baseline, default_backing=backing is None, preempt=preempt,
                  watchdog_thresh_s=watchdog_thresh)
        return dataclasses.replace(est, warnings=(*kernel_warnings, *est.warnings))
    except ValueError as exc:
        msg = str(exc)
        flag, _, rest = msg.partition(": ")
        given = {"vm": vm, "range": range_, "memslots": str(memslots), "backing": backing,
                 "ram-base": ram_base, "mapped": str(mapped), "device": str(device), "event": event}
        if not rest:
            flag, rest = "vm", msg
        got = given.get(flag) or ""
        raise UserError(f"--{flag}", None, None, rest.removeprefix("expected "), got) from None


@cli.command()
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
        from .uncertainty import DEFAULT_SEED, monte_carlo

        mc = monte_carlo(est, samples, DEFAULT_SEED if seed is None else seed, distribution)
    elif seed is not None:
        raise UserError("--seed", None, None, "--samples N with --seed", "--seed alone")
    if sensitivity:
        from .uncertainty import sensitivity as sensitivity_of

        sens = sensitivity_of(est)
    if fmt == "json":
        from .render.data import estimate_document, to_json

        doc = estimate_document(est)
        if mc is not None:
            doc["samples"] = mc
        if sens is not None:
            doc["sensitivity"] = sens
        _emit(to_json(doc), output)
    elif fmt == "csv":
        from .render.data import estimate_csv

        parts = [estimate_csv(est)]
        if mc is not None:
            from .uncertainty import samples_csv

            parts.append(samples_csv(mc))
        if sens is not None:
            from .uncertainty import sensitivity_csv

            parts.append(sensitivity_csv(sens))
        _emit("\n".join(parts), output)
    elif fmt == "markdown":
        from .render.data import estimate_markdown

        parts = [estimate_markdown(est)]
        if mc is not None:
            from .uncertainty import samples_markdown

            parts.append(samples_markdown(mc))
        if sens is not None:
            from .uncertainty import sensitivity_markdown

            parts.append(sensitivity_markdown(sens))
        _emit("\n".join(parts), output)
    else:
        from .render.table import estimate_table
        from .render.table import formulas as formulas_view

        views: list[Any] = [estimate_table(est)]
        if formulas:
            views.append(formulas_view(est))
        if mc is not None:
            from .uncertainty import render_samples

            views.append(render_samples(mc))
        if sens is not None:
            from .uncertainty import sensitivity_table

            views.append(sensitivity_table(sens))
        if output:
            import io

            from rich.console import Console

            buf = io.StringIO()
            con = Console(file=buf, width=200, highlight=False, color_system=None)
            for i, v in enumerate(views):
                if i:
                    con.print()
                con.print(v)
            _emit(buf.getvalue(), output)
            return
        con = _console()
        for i, v in enumerate(views):
            if i:
                con.print()
            con.print(v)
    for wmsg in est.warnings:
        if fmt != "table" or output:
            click.echo(f"s2teardown: warning: {wmsg}", err=True)


@cli.command()
@input_options
@format_option("table", "json")
@output_option
def explain(fmt: str, output: str | None, **inputs: Any) -> None:
    """The call path of one variant as a tree: phases, kernel functions, instructions.

    Each node carries its count and cost on the chosen machine.  With several variants selected,
    one tree each.

    \b
    Examples:
      s2teardown explain --vm 64G --machine d05 --variants v5.5
      s2teardown explain --vm 64G --machine grace --kernel 6.8 --event munmap --format json
    """
    est = build_estimate(**inputs)
    from .render.explain import explain_rich, explain_tree

    trees = [explain_tree(est, v) for v in range(len(est.variants))]
    if fmt == "json":
        import json

        from .render.data import FORMAT_VERSION, MODEL_VERSION

        doc = {"format_version": FORMAT_VERSION, "model_version": MODEL_VERSION, "command": "explain",
               "warnings": list(est.warnings), "trees": trees}
        _emit(json.dumps(doc, indent=2) + "\n", output)
        return
    if output:
        import io

        from rich.console import Console

        buf = io.StringIO()
        file_con = Console(file=buf, width=200, highlight=False, color_system=None)
        for t in trees:
            file_con.print(explain_rich(t))
        _emit(buf.getvalue(), output)
        for w in est.warnings:
            click.echo(f"s2teardown: warning: {w}", err=True)
        return
    con = _console()
    for t in trees:
        con.print(explain_rich(t))
    for w in est.warnings:
        con.print(f"[bold yellow]warning:[/bold yellow] {w}")


# ---------------------------------------------------------------------------------------------
@cli.group()
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
    import json

    from .machine import load_machine
    from .resources import bundled_names

    rows = []
    for n in bundled_names("machines"):
        m = load_machine(n)
        feats = [f for f in ("vhe", "s2fwb", "tlbi_range", "tlbi_repeat") if m.feature(f)]
        rows.append({"name": n, "sockets": m.value("sockets"), "cores_per_socket": m.value("cores_per_socket"),
                     "features": feats, "description": m.description})
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    t = Table(box=None, header_style="bold")
    for c in ("name", "sockets × cores", "features", "description"):
        t.add_column(c)
    for r in rows:
        t.add_row(r["name"], f"{r['sockets']} × {r['cores_per_socket']}", ",".join(r["features"]) or "—", r["description"])
    _console().print(t)


@machines.command("show")
@click.argument("machine")
def machines_show(machine: str) -> None:
    """Show a machine's values, each with its source."""
    from rich.table import Table

    from .machine import load_machine

    m = load_machine(machine, flag="MACHINE")
    t = Table(title=f"{m.name} — {m.description}", box=None, header_style="bold")
    for c in ("section", "field", "value", "source", "range"):
        t.add_column(c)
    for section in ("topology", "features", "placement", "parameters", "prices"):
        for name, p in getattr(m, section).items():
            rng = "" if p.min is None else f"{p.min:g}..{p.max:g}"
            t.add_row(section, name, str(p.value), p.source, rng)
    _console().print(t)


@machines.command("validate")
@click.argument("files", nargs=-1, required=True)
def machines_validate(files: Sequence[str]) -> None:
    """Validate machine files; exit 2 on the first error."""
    from .machine import load_machine

    for f in files:
        m = load_machine(f, flag="FILE")
        click.echo(f"{f}: ok ({m.name})")


@machines.command("schema")
def machines_schema() -> None:
    """Print the JSON Schema of machine files."""
    import json

    from .machine import json_schema

    click.echo(json.dumps(json_schema(), indent=2))


# ---------------------------------------------------------------------------------------------
@cli.group()
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
    import json

    from .variants import load_variants

    vs = load_variants(variants_file)
    if fmt == "json":
        click.echo(json.dumps([{"name": v.name, "base": v.base, "title": v.title, "aliases": list(v.aliases)}
                               for v in vs.variants], indent=2))
        return
    from rich.table import Table

    t = Table(box=None, header_style="bold")
    for c in ("name", "base", "title"):
        t.add_column(c)
    for v in vs.variants:
        alias = f" (= {', '.join(v.aliases)})" if v.aliases else ""
        t.add_row(v.name + alias, v.base or "—", v.title)
    _console().print(t)


@variants.command("show")
@click.argument("name")
@click.option("--variants-file", metavar="FILE")
def variants_show(name: str, variants_file: str | None) -> None:
    """Show one variant's full behaviour per invocation kind, and where each value comes from."""
    from dataclasses import fields

    from rich.table import Table

    from .behaviour import Behaviour
    from .variants import load_variants

    v = load_variants(variants_file).lookup(name, "NAME")
    con = _console()
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

    from .variants import variants_schema

    click.echo(json.dumps(variants_schema(), indent=2))


def all_commands() -> dict[str, click.Command]:
    """Every top-level command, the discovered ones included."""
    assert isinstance(cli, _Group)
    cli.discover()
    return dict(cli.commands)


# ---------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: run click without its own exit handling and map outcomes to exit codes."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    code = EXIT_OK
    try:
        rv = cli.main(args=args, prog_name="s2teardown", standalone_mode=False)
        if isinstance(rv, int) and not isinstance(rv, bool):
            code = rv  # a command's own exit code (check: 1 for a regression)
    except UserError as exc:
        click.echo(f"s2teardown: error: {exc}", err=True)
        code = exc.exit_code
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.exceptions.Abort:
        click.echo("s2teardown: interrupted", err=True)
        code = EXIT_INTERRUPTED
    except click.ClickException as exc:
        click.echo(f"s2teardown: error: {_one_line_usage(exc)}", err=True)
        code = EXIT_USAGE
    except KeyboardInterrupt:
        click.echo("s2teardown: interrupted", err=True)
        code = EXIT_INTERRUPTED
    except BrokenPipeError:
        _quiet_stdout()
        code = EXIT_OK
    except Exception as exc:  # noqa: BLE001 - the last line of defence
        if debug:
            import traceback

            traceback.print_exc()
        click.echo(
            f"s2teardown: internal error: {type(exc).__name__}: {exc} — please report it with the "
            "command line and the output of --debug",
            err=True,
        )
        code = EXIT_INTERNAL
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_stdout()
    sys.exit(code)


def _one_line_usage(exc: click.ClickException) -> str:
    """click's usage errors as one line, in the tool's ``--flag: expected …, got …`` form."""
    import re

    from .yamlio import did_you_mean

    if isinstance(exc, click.BadParameter) and isinstance(getattr(exc.param, "type", None), click.Choice):
        param = exc.param
        assert param is not None
        choices = [str(c) for c in param.type.choices]  # type: ignore[attr-defined]
        m = re.search(r"'([^']*)' is not one of", exc.format_message())
        got = m.group(1) if m else "?"
        flag = max(param.opts, key=len) if param.opts else param.name or "?"
        hint = did_you_mean(got, choices)
        return f"{flag}: expected one of {', '.join(choices)}, got {got!r}" + (f" ({hint})" if hint else "")
    if isinstance(exc, click.exceptions.NoArgsIsHelpError) and isinstance(exc.ctx, click.Context):
        # a group without its subcommand: name the commands rather than run its help together
        group = exc.ctx.command
        names = ", ".join(group.list_commands(exc.ctx) if isinstance(group, click.Group) else [])
        path = exc.ctx.command_path
        sub = path.partition(" ")[2]
        return (f"{sub + ': ' if sub else ''}expected a command ({names}); "
                f"see '{path} --help'")
    msg = " ".join(exc.format_message().split())
    m = re.match(r"No such command '([^']*)'", msg)
    if m:
        names = all_commands()
        hint = did_you_mean(m.group(1), names)
        return f"expected a command ({', '.join(sorted(names))}), got {m.group(1)!r}" + (
            f" ({hint})" if hint else ""
        )
    return msg


def _quiet_stdout() -> None:
    """After EPIPE: point stdout at devnull so the interpreter's final flush stays silent."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
