"""The command line: click commands only — parse, call the library, render, map errors to exits.

Exit codes (docs/cli.md): 0 success · 1 regression found by ``check`` · 2 bad input or usage ·
3 nothing comparable · 70 internal error (traceback only with ``--debug``) · 130 interrupted.
Heavy modules (numpy, the model) are imported inside the commands, so ``--help`` and
``--version`` stay fast.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

import click

from s2teardown import __version__
from s2teardown.cli.common import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
)
from s2teardown.errors import UserError

#: Each command's module (one per command group); imported only when the command runs or all are
#: listed, so ``estimate`` never pays for importing the others.
COMMAND_MODULES: dict[str, str] = {
    "estimate": "estimate", "explain": "estimate", "machines": "machines", "variants": "variants",
    "sweep": "sweep", "compare": "compare", "plan": "plan", "table": "tables", "check": "tables",
    "diff": "tables", "calibrate": "calibrate", "import-trace": "calibrate",
}


class _Group(click.Group):
    """The top-level group: a command's module is imported when the command is named."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMAND_MODULES:
            module = importlib.import_module(f"{__name__}.{COMMAND_MODULES[cmd_name]}")
            for command in module.COMMANDS:
                assert command.name is not None
                self.add_command(command)
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMAND_MODULES)


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


def all_commands() -> dict[str, click.Command]:
    """Every top-level command, each module imported."""
    ctx = click.Context(cli)
    out: dict[str, click.Command] = {}
    for name in cli.list_commands(ctx):
        command = cli.get_command(ctx, name)
        assert command is not None
        out[name] = command
    return out


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

    from s2teardown.inputs.yamlio import did_you_mean

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
        known = sorted(COMMAND_MODULES)
        hint = did_you_mean(m.group(1), known)
        return f"expected a command ({', '.join(known)}), got {m.group(1)!r}" + (
            f" ({hint})" if hint else ""
        )
    return msg


def _quiet_stdout() -> None:
    """After EPIPE: point stdout at devnull so the interpreter's final flush stays silent."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
