"""What every command shares: exit codes, output, the teardown input options, the estimate
builder.  Nothing heavy at module level (``--help`` imports this module)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

import click

from s2teardown.errors import UserError
from s2teardown.inputs.files import short_text
from s2teardown.inputs.paths import PATH_NAMES, RANGED, USER_PATHS
from s2teardown.inputs.units import GRANULE_BYTES

EXIT_OK, EXIT_REGRESSION, EXIT_USAGE, EXIT_NOTHING_COMPARABLE = 0, 1, 2, 3
EXIT_INTERNAL, EXIT_INTERRUPTED = 70, 130

SIZE_HELP = "Sizes use binary prefixes: K=KiB, M=MiB, G=GiB, T=TiB (64G = 68,719,476,736 bytes)."


def fail(flag: str, exc: ValueError) -> UserError:
    msg = str(exc)
    if msg.startswith("expected "):
        exp, _, got = msg[len("expected "):].partition(", got ")
        return UserError(flag, None, None, exp, got)
    return UserError(flag, None, None, msg)


def parse_flag(flag: str, fn: Callable[[str], Any], text: str) -> Any:
    try:
        return fn(text)
    except ValueError as exc:
        raise fail(flag, exc) from None


def emit(text: str, output: str | None) -> None:
    if output:
        from s2teardown.render.atomic import write_text_atomic

        try:
            write_text_atomic(output, text)
        except OSError as exc:
            raise UserError("--output", None, None, "a writable file path",
                            f"{short_text(output)!r} ({exc.strerror})") from None
    else:
        click.echo(text, nl=False)


def console() -> Any:
    """A rich console; when stdout is not a terminal, wide enough that tables never wrap."""
    from rich.console import Console

    con = Console(highlight=False, soft_wrap=False)
    if not con.is_terminal:
        con = Console(highlight=False, soft_wrap=False, width=piped_width())
    return con


#: Width of text written to a pipe or a file when COLUMNS does not say.
PIPED_WIDTH = 200


def piped_width() -> int:
    """COLUMNS when it holds a sensible width (20..10000), else PIPED_WIDTH."""
    raw = os.environ.get("COLUMNS", "")
    return int(raw) if raw.isdigit() and 20 <= int(raw) <= 10000 else PIPED_WIDTH


FORMATS = click.Choice(["table", "json", "csv", "markdown"])


def output_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``-o/--output FILE``: write there atomically instead of stdout."""
    return click.option("-o", "--output", default=None, metavar="FILE",
                        help="Write to FILE (atomically) instead of stdout.")(fn)


#: ``-o FILE``'s extension picks the format unless ``--format`` says otherwise.
FORMAT_OF_EXTENSION = {".json": "json", ".csv": "csv", ".md": "markdown", ".markdown": "markdown",
                       ".txt": "table"}


def format_from_extension(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Put right above the command's ``def``: with ``-o FILE`` and no ``--format`` on the
    command line, the format is the one FILE's extension names (when the command offers it)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        out = kwargs.get("output")
        if out and "fmt" in kwargs and ctx.get_parameter_source("fmt") == click.core.ParameterSource.DEFAULT:
            want = FORMAT_OF_EXTENSION.get(os.path.splitext(out)[1].lower())
            param = next((p for p in ctx.command.params if p.name == "fmt"), None)
            choices = getattr(getattr(param, "type", None), "choices", ())
            if want in choices:
                kwargs["fmt"] = want
        return fn(*args, **kwargs)

    return wrapper


def format_option(*choices: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--format`` with these choices, the first being the default."""
    return click.option("--format", "fmt", type=click.Choice(list(choices)), default=choices[0],
                        show_default=True)


#: --event values: the user paths (inputs/paths.py, light: --help does not import numpy).
EVENT_CHOICES = list(PATH_NAMES)
EVENT_HELP = "The path into Stage-2 unmap. " + "; ".join(f"{p.name}: {p.help}" for p in USER_PATHS) + "."
#: KVM_USER_MEM_SLOTS on arm64 (arch/arm64/include/asm/kvm_host.h)
MAX_MEMSLOTS = 512




#: ``--set PARAM=VALUE``: a what-if on the machine, marked in every view.
SET_OPTION = click.option(
    "--set", "sets", multiple=True, metavar="PARAM=VALUE",
    help="What-if: replace one of the machine's values, e.g. --set interconnect_latency_ns=300, "
    "--set cmo_outstanding=8, --set prices.hvc=120 (repeatable; see `machines show`). Marked as "
    "overridden in every view.")


def what_if_note(machine: Any) -> list[str]:
    """The assumption line every view prints for a machine with --set values."""
    return [f"what-if (--set) on {machine.name}: " + "; ".join(machine.what_if)] if machine.what_if else []


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
                     help="Variants to show, comma-separated or repeated (default: all; `all` says so). `series` = P7."),
        click.option("--variants-file", metavar="FILE",
                     help="Your own variants YAML (may build on the bundled ones by `base`)."),
        click.option("--kernel", "kernels", multiple=True, metavar="VERSION",
                     help="Add the mainline variant in force at VERSION (e.g. 6.8, 6.6.47); repeatable."),
        click.option("--event", type=click.Choice(EVENT_CHOICES), default="exit", show_default=True,
                     help=EVENT_HELP),
        click.option("--range", "range_", metavar="OFFSET:SIZE",
                     help="The part of guest RAM a munmap/clear/oom unmaps (default: all of it); for "
                     "memslot-delete and block-retry, OFFSET picks the memslot / 2 MiB block."),
        click.option("--backing", default=None, metavar="MIX",
                     help="Leaf sizes: 2M (THP), 4K, 1G, hugetlb-2M, hugetlb-1G, or a mix in percent "
                     "such as 2M:90,4K:10 or 4K:50,hugetlb-2M:50 (default 2M)."),
        click.option("--mapped", default=1.0, show_default=True, type=float,
                     help="Fraction of guest RAM mapped at Stage-2 (rounded down to whole leaves)."),
        click.option("--device", "device", default=0.0, show_default=True, type=float,
                     help="Fraction of the mapped bytes that are device pages (never cleaned)."),
        click.option("--memslots", default=1, show_default=True, type=int,
                     help="Equal memslots guest RAM is split into."),
        click.option("--ipa-bits", default="auto", show_default=True,
                     help="IPA size, 32..48, or auto (40 unless the guest needs more, as QEMU does)."),
        click.option("--granule", default="4K", show_default=True, type=click.Choice(list(GRANULE_BYTES)),
                     help="Page size of host and Stage-2."),
        click.option("--ram-base", default="1G", show_default=True, metavar="SIZE",
                     help="Guest-physical address of RAM (QEMU virt: 1 GiB)."),
        click.option("--placement", default=None, metavar="L,S,R",
                     help="Memory placement: fractions on the local node, another node of the same "
                     "socket, another socket (default: the machine's)."),
        click.option("--preempt", type=click.Choice(["none", "voluntary", "full"]), default="none",
                     show_default=True, help="Kernel preemption model for the lock-hold warnings "
                     "(full: only stretches holding mmu_lock count; RCU is then rcu_preempt)."),
        click.option("--watchdog-thresh", default=10.0, show_default=True, type=float,
                     help="kernel.watchdog_thresh in seconds; soft lockups are reported at twice it."),
        click.option("--rcu-stall-timeout", default=21, show_default=True, type=int, metavar="SECONDS",
                     help="rcupdate.rcu_cpu_stall_timeout (CONFIG_RCU_CPU_STALL_TIMEOUT), 3..300 s: "
                     "RCU CPU stalls are reported past it."),
        click.option("--kvm-mode", type=click.Choice(["nvhe", "vhe", "protected"]), default=None,
                     help="kvm-arm.mode: nvhe, vhe, or protected (pKVM) (default: vhe where the "
                     "machine has VHE, else nvhe). docs/model.md §15."),
        click.option("--protected-vm", is_flag=True,
                     help="The guest is a protected VM (needs --kvm-mode protected; Linux 7.1+)."),
        click.option("--shadow-mmus", default=None, metavar="N|N:SIZE|SIZE,...",
                     help="Shadow Stage-2 MMUs of a nested guest: N of guest RAM's size each, N of SIZE, "
                     "or one per SIZE (e.g. 2:512M, 1G,256M)."),
        SET_OPTION,
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
    watchdog_thresh: float, baseline: str | None, sets: Sequence[str] = (),
    rcu_stall_timeout: int = 21, kvm_mode: str | None = None, protected_vm: bool = False,
    shadow_mmus: str | None = None,
) -> Any:
    """Parse and check the input options, then run the estimate (exit 2 on any bad input)."""
    from s2teardown.core.detectors import RCU_STALL_TIMEOUT_RANGE_S
    from s2teardown.core.prices import Placement
    from s2teardown.features.estimate import estimate as run
    from s2teardown.inputs.machine import apply_sets, load_machine
    from s2teardown.inputs.units import (
        parse_backing_kinds,
        parse_range,
        parse_shadow_mmus,
        parse_size,
    )
    from s2teardown.inputs.variants import load_variants
    from s2teardown.inputs.workload import Workload

    if (vm is None) == (scenario is None):
        raise UserError("--vm", None, None, "exactly one of --vm SIZE or --scenario FILE",
                        "both" if vm else "neither")
    if scenario is not None:
        ctx = click.get_current_context()
        clash = [f"--{n.replace('_', '-')}" for n in ("event", "range_", "backing", "mapped", "device",
                                                      "memslots", "ipa_bits", "granule", "ram_base",
                                                      "kvm_mode", "protected_vm", "shadow_mmus")
                 if ctx.get_parameter_source(n) == click.core.ParameterSource.COMMANDLINE]
        if clash:
            raise UserError(clash[0].replace("range-", "range"), None, None,
                            "no workload flag with --scenario (the file describes the layout and event)",
                            clash[0].replace("range-", "range"))
    vm_bytes = parse_flag("--vm", parse_size, vm) if vm is not None else 0
    back, hugetlb = (parse_flag("--backing", parse_backing_kinds, backing) if backing
                     else (((2 << 20, 100.0),), ()))
    rng = parse_flag("--range", parse_range, range_) if range_ else None
    if rng is not None and event not in RANGED:
        raise UserError("--range", None, None, "an --event that takes a range (" + ", ".join(RANGED) + ")",
                        f"--event {event}")
    if not (0 < watchdog_thresh < 1e6):
        raise UserError("--watchdog-thresh", None, None, "a positive number of seconds", repr(watchdog_thresh))
    lo, hi = RCU_STALL_TIMEOUT_RANGE_S
    if not lo <= rcu_stall_timeout <= hi:
        # rcu_jiffies_till_stall_check (kernel/rcu/tree_stall.h) clamps the kernel's value to 3..300
        raise UserError("--rcu-stall-timeout", None, None,
                        f"a whole number of seconds {lo}..{hi} (the range the kernel accepts)",
                        str(rcu_stall_timeout))
    base_b = parse_flag("--ram-base", parse_size, ram_base)
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
    m = apply_sets(load_machine(machine, flag="--machine"), sets)
    vs = load_variants(variants_file)
    names = [n.strip() for item in variants for n in item.split(",") if n.strip()]
    chosen = vs.select(names) if names or not kernels else []
    kernel_warnings: list[str] = []
    releases: dict[str, tuple[int, ...]] = {}  # the version each --kernel's row stands for
    for k in kernels:
        match = vs.match_kernel(k)
        kernel_warnings.extend(w for w in match.warnings if w not in kernel_warnings)
        releases[match.variant.name] = max(releases.get(match.variant.name, ()), match.version.release)
        if match.variant not in chosen:
            chosen.append(match.variant)
    if baseline is not None:
        b = vs.lookup(baseline, "--baseline")
        if b not in chosen:
            chosen = [b, *chosen]
        baseline = b.name
    if scenario is not None:
        from s2teardown.features.estimate import estimate_scenario
        from s2teardown.inputs.scenario import load_scenario

        sc = load_scenario(scenario, flag="--scenario")
        est = estimate_scenario(m, chosen, sc, baseline=baseline, placement=pl, preempt=preempt,
                                watchdog_thresh_s=watchdog_thresh,
                                rcu_stall_timeout_s=float(rcu_stall_timeout))
        return dataclasses.replace(est, warnings=(*kernel_warnings, *est.warnings),
                                   assumptions=(*what_if_note(m), *est.assumptions))
    gran = GRANULE_BYTES[granule]
    shadows = parse_flag("--shadow-mmus", lambda t: parse_shadow_mmus(t, vm_bytes), shadow_mmus) \
        if shadow_mmus is not None else ()
    w = Workload(vm_bytes=vm_bytes, backing=back, mapped=mapped, device_fraction=device,
                 memslots=memslots, ipa_bits=bits, granule=gran, ram_base=base_b, event=event,
                 range=rng, placement=pl, hugetlb=hugetlb, kvm_mode=kvm_mode, protected_vm=protected_vm,
                 shadow_mmus=shadows)
    try:
        est = run(m, chosen, w, baseline=baseline, default_backing=backing is None, preempt=preempt,
                  watchdog_thresh_s=watchdog_thresh, rcu_stall_timeout_s=float(rcu_stall_timeout),
                  releases=releases)
        return dataclasses.replace(est, warnings=(*kernel_warnings, *est.warnings),
                                   assumptions=(*what_if_note(m), *est.assumptions))
    except ValueError as exc:
        msg = str(exc)
        flag, _, rest = msg.partition(": ")
        given = {"vm": vm, "range": range_, "memslots": str(memslots), "backing": backing,
                 "ram-base": ram_base, "mapped": str(mapped), "device": str(device), "event": event,
                 "placement": placement, "kvm-mode": kvm_mode, "shadow-mmus": shadow_mmus,
                 "protected-vm": "--protected-vm" if protected_vm else None}
        if not rest:
            flag, rest = "vm", msg
        got = given.get(flag) or ""
        raise UserError(f"--{flag}", None, None, rest.removeprefix("expected "), got) from None


