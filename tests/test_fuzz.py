"""Fuzzing the inputs (issue 7 parts 2-4): random files and random command lines.

Whatever it is given, s2teardown must end with exit 0, 1 (only `check`), 2 or 3, never with a
traceback or exit 70; every line it writes on stderr is its own (``s2teardown: ...``, click's
usage errors included); a bad input is one line, the last; no numpy RuntimeWarning (an overflow
or a NaN) escapes; and an output file (``-o``,
``--plot``, ``check --update``) is either untouched or complete and valid, with no temporary
file left beside it.

* random YAML documents (nested mappings, lists and scalars, and plain random text) as machine,
  variants, scenario, table-spec and fleet files;
* mutations of the bundled files: keys deleted, renamed or retyped, values replaced by values
  of other types, numbers nudged to 0, negatives, huge, NaN or infinite, items duplicated; and
  text mutations (truncation, lines deleted or doubled, tags, anchors, aliases, tabs, NUL);
* random argv for every command, built from the commands' own click parameters (a new option is
  fuzzed as soon as it exists), with mostly valid and some invalid values;
* Ctrl-C in the middle of an atomic write, an internal error, a closed pipe.

Bounded and derandomised (the same examples every run) in `make test`; S2T_DEEP=1
(`make test-deep`) runs 20 times as many, and the slow reproducers of the known performance
bugs.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s2teardown import cli
from s2teardown.inputs.machine import machine_from_text

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
DEEP = bool(os.environ.get("S2T_DEEP"))
SCALE = 20 if DEEP else 1


def fuzz(n: int) -> Callable[[Any], Any]:
    """Hypothesis settings: ``n`` examples (× 20 with S2T_DEEP), the same ones every run."""
    return settings(
        max_examples=n * SCALE,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )


# ---------------------------------------------------------------------------------------------
# running the tool and checking what it did


@dataclass
class Outcome:
    argv: list[str]
    code: int
    out: str
    err: str
    warnings: list[str]


def invoke(argv: list[str], cwd: Path) -> Outcome:
    """``s2teardown ARGV`` in this process (as tests/test_cli.py does), stdout/stderr captured."""
    out, err = io.StringIO(), io.StringIO()
    code: Any = None
    old = os.getcwd()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            os.chdir(cwd)
            try:
                cli.main(argv)
            except SystemExit as exc:
                code = exc.code
            finally:
                os.chdir(old)
    seen = [f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in caught
            if issubclass(w.category, RuntimeWarning)]
    return Outcome(argv, int(code or 0), out.getvalue(), err.getvalue(), seen)


def check_outcome(o: Outcome) -> None:
    what = f"s2teardown {' '.join(o.argv)!r} -> exit {o.code}\nstderr: {o.err}"
    assert o.code in (0, 1, 2, 3), what
    assert "Traceback" not in o.err and "internal error" not in o.err, what
    if o.code == 1:
        assert o.argv[0] == "check", what  # nothing else ever exits 1 (docs/cli.md)
    assert not o.warnings, f"{what}\nwarnings: {o.warnings}"
    lines = o.err.split("\n")
    if lines[-1] == "":
        lines.pop()
    assert all(line.startswith("s2teardown: ") for line in lines), what
    # no control character from a file or a flag gets into a message (a \x85 or \x1c would be a
    # line break for str.splitlines, an ESC the start of a terminal escape sequence)
    assert all(line.isprintable() for line in lines), what
    if o.code in (2, 3):
        errors = [line for line in lines if line.startswith("s2teardown: error: ")]
        assert len(errors) == 1 and lines[-1] == errors[0], what


SENTINEL = b"an old file that must survive a failed write\n"


def _fmt(argv: list[str]) -> str:
    fmt = "table"
    for i, a in enumerate(argv[:-1]):
        if a == "--format":
            fmt = argv[i + 1]
    return fmt


def check_written(o: Outcome, target: Path, *, validate: Callable[[bytes], None]) -> None:
    """``target`` is untouched (absent, or the sentinel) or complete; no temporary is left."""
    what = f"s2teardown {' '.join(o.argv)!r} -> exit {o.code}: {target.name}"
    parent = target.parent
    if parent.is_dir():
        left = [p.name for p in parent.iterdir() if p.name.endswith(".tmp")]
        assert not left, f"{what}: temporary files left: {left}"
    if not target.is_file():
        return
    data = target.read_bytes()
    if data == SENTINEL:
        return
    assert data, f"{what}: empty"
    try:
        validate(data)
    except Exception as exc:  # noqa: BLE001 - report what was wrong with the file
        raise AssertionError(f"{what}: not a complete output ({exc!r}): {data[-200:]!r}") from None


def valid_text(data: bytes) -> str:
    text = data.decode("utf-8", errors="surrogateescape")
    assert text.endswith("\n"), "no final newline"
    return text


def valid_json(data: bytes) -> None:
    json.loads(valid_text(data))


def valid_csv(data: bytes) -> None:
    rows = list(csv.reader(io.StringIO(valid_text(data))))
    assert rows and all(len(r) == len(rows[0]) for r in rows), "ragged CSV"


def valid_table(data: bytes) -> None:
    doc = json.loads(valid_text(data))
    assert doc["document"] == "s2teardown cost table" and isinstance(doc["rows"], list)


def valid_machine(data: bytes) -> None:
    machine_from_text(valid_text(data), "calibrated.yaml")


def valid_plot(data: bytes) -> None:
    assert data.startswith(b"\x89PNG\r\n\x1a\n") or data.rstrip().endswith(b"</svg>"), "not a plot"


def valid_report(data: bytes) -> None:
    assert valid_text(data).strip(), "no text"


def validator(argv: list[str]) -> Callable[[bytes], None]:
    """How the ``-o`` file of this command line must look when complete."""
    command, fmt = argv[0], _fmt(argv)
    if command == "table":
        return valid_table
    if command == "calibrate":
        return valid_machine
    if command == "import-trace" or fmt == "csv":
        return valid_csv
    if fmt == "json":
        return valid_json
    return valid_report


# ---------------------------------------------------------------------------------------------
# valid inputs to start from (one set per module)


SPEC = """\
schema_version: 1
machines: [d05, m.yaml]
vm_bytes: [1073741824, 4294967296]
backings:
  - [{leaf_bytes: 2097152, percent: 100}]
  - [{leaf_bytes: 2097152, percent: 90}, {leaf_bytes: 4096, percent: 10}]
events: [exit, munmap]
variants: [v5.5, P5, series]
preempt: none
watchdog_thresh_s: 10
rcu_stall_timeout_s: 21
"""

MY_VARIANTS = """\
schema_version: 1
variants:
  - name: mine
    base: P5
    title: "P5 with a final VMID flush on unmap"
    unmap: {final_flush: vmid}
"""

TRACE = """\
s2teardown-trace 1
run 1 vm=4G backing=2M event=exit kernel=5.5.0
call kvm_arch_flush_shadow_all 42 1000000500 90000000
call kvm_mmu_notifier_release 42 1000000000 91000000
end 1
run 2 vm=1G backing=4K event=munmap variant=P5
call kvm_mmu_notifier_invalidate_range_start 43 2000000000 12000000
end 2
"""


def _measurements() -> str:
    lines = ["vm,backing,event,variant,mapped,seconds,note"]
    secs = {"v5.5": 2.3, "P5": 0.31, "series": 0.29}
    for vm in (1, 4, 16):
        for back in ("2M", "4K"):
            for var, s in secs.items():
                for ev in ("exit", "munmap"):
                    k = vm * (4.0 if back == "4K" else 1.0) * (1.1 if ev == "munmap" else 1.0)
                    lines.append(f"{vm}G,{back},{ev},{var},1.0,{s * k:.6f},synthetic")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Inputs:
    root: Path
    files: dict[str, Path]

    def example_dir(self) -> Path:
        return Path(tempfile.mkdtemp(dir=self.root, prefix="ex-"))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Inputs]:
    root = tmp_path_factory.mktemp("fuzz")
    f: dict[str, Path] = {}
    f["MACHINE"] = root / "m.yaml"
    shutil.copy(CONFIGS / "machines/d05.yaml", f["MACHINE"])
    f["VARIANTS"] = root / "mine.yaml"
    f["VARIANTS"].write_text(MY_VARIANTS)
    f["FLEET"] = root / "fleet.yaml"
    shutil.copy(CONFIGS / "fleets/example.yaml", f["FLEET"])
    f["SCENARIO"] = root / "s.yaml"
    shutil.copy(CONFIGS / "scenarios/thp-dirty-log.yaml", f["SCENARIO"])
    f["SPEC"] = root / "spec.yaml"
    f["SPEC"].write_text(SPEC)
    f["CSV"] = root / "measurements.csv"
    f["CSV"].write_text(_measurements())
    f["TRACE"] = root / "d05.trace"
    f["TRACE"].write_text(TRACE)
    f["BADYAML"] = root / "bad.yaml"
    f["BADYAML"].write_text("schema_version: 1\nname: [unclosed\n")
    f["BADJSON"] = root / "bad.json"
    f["BADJSON"].write_text('{"format_version": 1, "rows": [')
    f["DIR"] = root / "a-directory"
    f["DIR"].mkdir()
    f["MISSING"] = root / "missing.yaml"
    f["TABLE"] = root / "costs.json"
    o = invoke(["table", str(f["SPEC"]), "-o", str(f["TABLE"]), "-q"], root)
    assert o.code == 0, o.err
    yield Inputs(root, f)


# ---------------------------------------------------------------------------------------------
# random argv for every command


def leaf_commands() -> dict[str, click.Command]:
    out: dict[str, click.Command] = {}

    def walk(group: click.Group, prefix: str) -> None:
        for name, cmd in group.commands.items():
            if isinstance(cmd, click.Group):
                walk(cmd, f"{prefix}{name} ")
            else:
                out[f"{prefix}{name}"] = cmd

    cli.all_commands()  # the discovered commands too
    walk(cli.cli, "")
    return out


COMMANDS = leaf_commands()

def V(valid: list[str], invalid: list[str]) -> tuple[list[str], list[str]]:
    """A parameter's values: mostly a valid one is drawn, sometimes an invalid one."""
    return valid, invalid


SIZES = V(["1G", "4G", "64G", "1.5G", "512M", "2G"],
          ["0", "-1G", "64X", "1.3G", "300T", "1P", "4097", ""])
RANGES = ["1G..16G:x2", "1G..4G:+1G", "1G,2G,4G", "1G..1T:x4"]
FRACTIONS = V(["0", "1", "0.5", "0.25", "1e-12"], ["1.5", "-0.1", "nan", "inf", "x"])
REALS = V(["0", "0.01", "1", "1000", "1e300"], ["-1", "nan", "inf", "x"])
MACHINES = V(["d05", "emag", "grace", "rpi4", "graviton3", "altra", "@MACHINE"],
             ["nope", "@MISSING", "@DIR", "@BADYAML"])
BAD_YAML = ["@MISSING", "@DIR", "@BADYAML"]

#: Values per parameter name (click's ``param.name``); "@NAME" is a file of the inputs fixture,
#: "@OUT" a fresh output path.
POOLS: dict[str, tuple[list[str], list[str]]] = {
    "vm": SIZES,
    "vms": V(SIZES[0] + RANGES, SIZES[1] + ["1..1P:+1", "4G..1G:x2", "1G..2G:x1"]),
    "scenario": V(["qemu-virt", "thp-dirty-log", "@SCENARIO"], ["qemu-virtt", *BAD_YAML]),
    "machine": MACHINES,
    "machines": MACHINES,
    "variants": V(["v5.5", "P5", "v5.5,P5,series", "series", "v6.19", "P1,P2"],
                  ["mine", "zz", "", " , "]),
    "variants_file": V(["@VARIANTS"], BAD_YAML),
    "kernels": V(["6.8", "5.5", "6.6.47", "6.1.120", "99.1"], ["4.19", "x"]),
    "range_": V(["0:1G", "1G:1G", "3M:5G", "4K:4K", "2M:2M"], ["0:0", "x", "1G", "60G:8G", "1P:1G"]),
    "backing": V(["2M", "4K", "1G", "2M:90,4K:10", "4K:50,2M:50"],
                 ["64K", "2M:50,4K:40", "3K", "0", "4K:nan", ""]),
    "backings": V(["2M", "4K", "1G", "2M:90,4K:10"], ["2M:50,4K:40", "3K", "4K:nan", ""]),
    "mapped": FRACTIONS,
    "device": FRACTIONS,
    # more memslots with a ranged event is the known slow case (see test_many_memslots_*)
    "memslots": V(["1", "2", "4", "8", "16"], ["0", "-1", "3", "x"]),
    "ipa_bits": V(["auto", "40", "44", "48"], ["32", "36", "52", "x"]),
    "ram_base": V(["1G", "0", "2M", "1T"], ["4K", "3", "1P"]),
    "placement": V(["1,0,0", "0.5,0.5,0", "0.25,0.25,0.5"],
                   ["0.5,0.5,0.5", "nan,nan,nan", "1,0", "x"]),
    "watchdog_thresh": V(["10", "0.001", "1e5", "60"], ["0", "-1", "nan", "inf", "1e7"]),
    "rcu_stall_timeout": V(["21", "3", "300", "60"], ["2", "301", "0", "-1", "x", "2.5"]),
    "baseline": V(["v5.5", "P5", "series"], ["zz"]),
    "samples": V(["1", "10", "200"], ["0", "-1", "x"]),
    "seed": V(["0", "1", "12345"], ["-1", "x"]),
    "output": V(["@OUT"], ["@MISSINGDIR", "@OUTDIR"]),
    "plot": V(["@PLOT.svg", "@PLOT.png"], ["x.gif"]),
    "fleet": V(["example", "@FLEET"], ["nope", *BAD_YAML]),
    "concurrency": V(["1", "4", "64"], ["0", "-1", "65", "x"]),
    "remote_tlbi_fraction": FRACTIONS,
    "measurements": V(["@CSV"], ["@TRACE", *BAD_YAML]),
    "params": V(["hvc_ns", "dc_civac_local_ns,tlbi_base_ns", "interconnect_latency_ns"],
                ["hvc_nss", ""]),
    "max_condition": V(["1e4", "1e6", "100"], ["1", "nan", "-1", "1e20"]),
    "confidence": V(["0.95", "0.5", "0.99"], ["1", "0.4", "nan"]),
    "date": V(["2026-01-02"], ["2024-13-01", "x"]),
    "traces": V(["@TRACE"], ["@CSV", *BAD_YAML]),
    "spec": V(["@SPEC"], ["@MACHINE", "@BADJSON", *BAD_YAML]),
    "table_file": V(["@TABLE"], ["@BADJSON", "@SPEC", "@MISSING", "@DIR"]),
    "old": V(["@TABLE"], ["@BADJSON", "@MISSING"]),
    "new": V(["@TABLE"], ["@BADJSON", "@MISSING", "@DIR"]),
    "rtol": REALS,
    "atol": REALS,
    "name": V(["P5", "series", "v5.5", "v6.19"], ["mine", "zz", ""]),
    "files": V(["@MACHINE", "d05"], ["@MISSING", "@DIR", "@BADYAML"]),
}
#: Options most command lines of a command carry (else nearly every example stops at
#: "--vm: expected exactly one of --vm SIZE or --scenario FILE").
USUAL: dict[str, tuple[str, ...]] = {"estimate": ("vm",), "explain": ("vm",), "compare": ("vm",)}


def _values(p: click.Parameter) -> tuple[list[str], list[str]]:
    """The values to try for one parameter: its pool, or ones made from its type."""
    if p.name in POOLS:
        valid, invalid = POOLS[p.name]
        if p.name == "machine" and isinstance(p, click.Argument):  # machines show NAME
            invalid = [v for v in invalid if v != "@MISSING"]
        return valid, invalid
    t = p.type
    if isinstance(t, click.Choice):
        return [str(c) for c in t.choices], ["bogus"]
    if isinstance(t, click.types.IntParamType):
        return ["0", "1", "2", "10"], ["-1", "x"]
    if isinstance(t, click.types.FloatParamType):
        return ["0", "0.5", "1"], ["-1", "nan", "inf", "x"]
    return ["x", "1G"], ["", "@MISSING"]


def _choose(draw: st.DrawFn, values: tuple[list[str], list[str]]) -> str:
    valid, invalid = values
    bad = draw(st.integers(0, 7)) == 0 and invalid
    return draw(st.sampled_from(invalid if bad else valid))


@st.composite
def argvs(draw: st.DrawFn, command: str) -> list[str]:
    cmd = COMMANDS[command]
    argv = command.split()
    options = [p for p in cmd.params if isinstance(p, click.Option) and not p.hidden]
    arguments = [p for p in cmd.params if isinstance(p, click.Argument)]
    required = [p for p in options if p.required]
    usual = [p for p in options if p.name in USUAL.get(command, ()) and draw(st.integers(0, 7))]
    chosen = required + usual + draw(
        st.lists(st.sampled_from(options), max_size=5, unique_by=lambda p: p.name)
        if options else st.just([]))
    words: list[str] = []
    for p in dict.fromkeys(chosen):
        assert isinstance(p, click.Option)
        flag = p.opts[-1]
        if p.is_flag:
            words.append(flag)
            continue
        repeat = draw(st.integers(1, 2)) if p.multiple else 1
        for _ in range(repeat):
            words += [flag, _choose(draw, _values(p))]
    for a in arguments:
        n = draw(st.integers(1, 2)) if a.nargs == -1 else 1
        words += [_choose(draw, _values(a)) for _ in range(n)]
    words = draw(st.permutations(words)) if draw(st.integers(0, 9)) == 0 else words
    if draw(st.integers(0, 14)) == 0:  # a stray word: an unknown option, a lone dash
        junk = draw(st.sampled_from(["--nope", "-", "--", "-x", "extra", "--vm=1G"]))
        words.insert(draw(st.integers(0, len(words))), junk)
    if draw(st.integers(0, 29)) == 0:
        words.append("--help")
    return argv + words


@dataclass
class Prepared:
    argv: list[str]
    outputs: list[Path]  # -o / --plot targets
    table: Path | None  # the per-example copy of the table (check --update rewrites it)


def prepare(argv: list[str], inputs: Inputs, here: Path, old_output: bool) -> Prepared:
    """Resolve the ``@NAME`` placeholders into files (per-example copies where written to)."""
    out: list[str] = []
    outputs: list[Path] = []
    table: Path | None = None
    for i, w in enumerate(argv):
        if not w.startswith("@"):
            out.append(w)
            continue
        key, _, ext = w[1:].partition(".")
        if key == "OUT":
            ext = {"json": "json", "csv": "csv"}.get(_fmt(argv), "txt")
            target = here / f"out{i}.{ext}"
        elif key == "PLOT":
            target = here / f"plot{i}.{ext}"
        elif key == "MISSINGDIR":
            target = here / "no" / "such" / "dir" / "out.txt"
        elif key == "OUTDIR":
            target = here / f"dir{i}"
            target.mkdir()
        elif key == "TABLE":  # a copy, with the files it names beside it (paths are relative)
            table = here / "costs.json"
            if not table.exists():
                for name in ("TABLE", "SPEC", "MACHINE"):
                    shutil.copy(inputs.files[name], here / inputs.files[name].name)
            out.append(str(table))
            continue
        else:
            out.append(str(inputs.files[key]))
            continue
        if key in ("OUT", "PLOT") and old_output:
            target.write_bytes(SENTINEL)
        outputs.append(target)
        out.append(str(target))
    return Prepared(out, outputs, table)


def test_every_command_is_fuzzed() -> None:
    wanted = {"estimate", "explain", "machines list", "machines show", "machines validate",
              "machines schema", "variants list", "variants show", "variants schema", "table",
              "check", "diff", "sweep", "compare", "plan", "calibrate", "import-trace"}
    assert wanted <= set(COMMANDS), wanted - set(COMMANDS)


#: Examples per command; the heavier commands get fewer.
ARGV_EXAMPLES = {"sweep": 12, "calibrate": 10, "table": 10, "check": 10, "machines schema": 3,
                 "variants schema": 3, "machines list": 4}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_random_argv(command: str, inputs: Inputs) -> None:
    @fuzz(ARGV_EXAMPLES.get(command, 15))
    @given(argv=argvs(command), old_output=st.booleans())
    def run(argv: list[str], old_output: bool) -> None:
        here = inputs.example_dir()
        p = prepare(argv, inputs, here, old_output)
        o = invoke(p.argv, here)
        check_outcome(o)
        for target in p.outputs:
            check = valid_plot if target.name.startswith("plot") else validator(p.argv)
            check_written(o, target, validate=check)
            if o.code == 0 and "--help" not in p.argv and target.parent.is_dir() \
                    and target.suffix != ".gif" and str(target) == _last_output(p.argv, target):
                assert target.is_file() and target.read_bytes() != SENTINEL, \
                    f"{p.argv}: exit 0 but {target.name} not written"
        if p.table is not None:
            check_written(o, p.table, validate=valid_table)

    run()


def _last_output(argv: list[str], target: Path) -> str | None:
    """The path click uses for the option that ``target`` was given to (the last one wins)."""
    for flags in (("-o", "--output"), ("--plot",)):
        given = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in flags]
        if str(target) in given:
            return given[-1]
    return None


# ---------------------------------------------------------------------------------------------
# random and mutated input files


@dataclass(frozen=True)
class Kind:
    source: Path | None  # the bundled file mutations start from
    keys: tuple[str, ...]  # keys random documents are made of (so they get past the top)
    argv: Callable[[str, str], list[str]]  # (input file, output file) -> command line
    check: Callable[[bytes], None]


KINDS: dict[str, Kind] = {
    "machine": Kind(
        CONFIGS / "machines/d05.yaml",
        ("schema_version", "name", "description", "topology", "features", "placement",
         "parameters", "prices", "value", "source", "min", "max", "sockets", "hvc_ns"),
        lambda f, o: ["estimate", "--vm", "4G", "--machine", f, "--variants", "v5.5,P5",
                      "--format", "json", "-o", o],
        valid_json,
    ),
    "variants": Kind(
        CONFIGS / "variants.yaml",
        ("schema_version", "variants", "name", "base", "title", "kernel", "unmap", "teardown",
         "cmo", "walk", "aliases"),
        lambda f, o: ["estimate", "--vm", "1G", "--variants-file", f, "--format", "csv", "-o", o],
        valid_csv,
    ),
    "scenario": Kind(
        CONFIGS / "scenarios/qemu-virt.yaml",
        ("schema_version", "name", "geometry", "memslots", "event", "gpa_bytes", "size_bytes",
         "regions", "mapping", "leaf_bytes", "percent", "hole", "munmap", "invocations"),
        lambda f, o: ["estimate", "--scenario", f, "--variants", "v5.5,P5", "--format", "json",
                      "-o", o],
        valid_json,
    ),
    "scenario-munmap": Kind(
        CONFIGS / "scenarios/thp-dirty-log.yaml",
        ("schema_version", "memslots", "event", "unmaps", "munmap", "gpa_bytes", "size_bytes"),
        lambda f, o: ["explain", "--scenario", f, "--variants", "P5", "--format", "json", "-o", o],
        valid_json,
    ),
    "spec": Kind(
        None,  # SPEC above (small: a table of the bundled example takes too long per example)
        ("schema_version", "machines", "vm_bytes", "backings", "events", "variants",
         "leaf_bytes", "percent", "preempt", "watchdog_thresh_s", "rcu_stall_timeout_s"),
        lambda f, o: ["table", f, "-q", "-o", o],
        valid_table,
    ),
    "fleet": Kind(
        CONFIGS / "fleets/example.yaml",
        ("schema_version", "name", "machine", "variants", "teardowns_per_hour", "concurrency",
         "event", "vm_sizes", "backings", "vm_bytes", "weight", "leaf_bytes", "mix"),
        lambda f, o: ["plan", f, "--format", "json", "-o", o],
        valid_json,
    ),
}

#: Replacement values: every type, the edges of every range.
POOL: list[Any] = [
    None, True, False, 0, 1, -1, 2, 3, 7, 64, 4096, 2097152, 1 << 30, 1 << 40, 1 << 48,
    (1 << 63) - 1, -(1 << 63), 0.0, -0.0, 0.5, 1.5, 99.9, 1e-300, 1e15, 1e16, 1e308,
    math.nan, math.inf, -math.inf, "", "x", "yes", "unknown", "assumed", "sourced: x", "exit",
    "munmap", "2M", "64G", "v5.5", "P5", "6.8", "d05", "auto", "directory", [], {}, [1, 2],
    {"value": 1, "source": "assumed"}, {"leaf_bytes": 4096, "percent": 100},
]


def _paths(x: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield at
    if isinstance(x, dict):
        for k, v in x.items():
            yield from _paths(v, (*at, k))
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from _paths(v, (*at, i))


def _get(x: Any, at: tuple[Any, ...]) -> Any:
    for k in at:
        x = x[k]
    return x


TREE_OPS = ("delete", "rename", "retype", "retype", "nudge", "nudge", "duplicate", "stringify")
TEXT_OPS = ("truncate", "delete_line", "double_line", "tag", "anchor", "alias", "tab", "nul",
            "flip_char", "swap_lines")


def mutate_tree(doc: Any, ops: list[tuple[str, int, int]], pool: list[Any]) -> Any:
    for op, where, value in ops:
        paths = [p for p in _paths(doc) if p]
        if not paths:
            return pool[value % len(pool)]
        at = paths[where % len(paths)]
        parent, key = _get(doc, at[:-1]), at[-1]
        old = parent[key]
        if op == "delete":
            del parent[key]
        elif op == "rename" and isinstance(parent, dict):
            del parent[key]
            parent[str(key)[:-1] or "_" if value % 2 else str(key).upper()] = old
        elif op == "retype":
            parent[key] = pool[value % len(pool)]
        elif op == "nudge" and isinstance(old, int | float) and not isinstance(old, bool):
            parent[key] = [0, -old, old * 2, old // 2 if isinstance(old, int) else old / 2,
                           old + 1, old - 1, old * 1000003, old + 0.5][value % 8]
        elif op == "duplicate" and isinstance(parent, list):
            parent.insert(key, parent[key])
        elif op == "stringify" and not isinstance(old, dict | list):
            parent[key] = str(old)
    return doc


def mutate_text(text: str, ops: list[tuple[str, int, int]]) -> str:
    for op, where, value in ops:
        lines = text.splitlines(keepends=True) or [""]
        i = where % len(lines)
        line = lines[i]
        head, sep, tail = line.partition(": ")
        if op == "truncate":
            text = text[: where % (len(text) + 1)]
            continue
        if op == "delete_line":
            del lines[i]
        elif op == "double_line":
            lines.insert(i, line)
        elif op == "tag" and sep:
            lines[i] = f"{head}{sep}!!python/object/apply:os.system {tail}"
        elif op == "anchor" and sep:
            lines[i] = f"{head}{sep}&a {tail}"
        elif op == "alias" and sep:
            lines[i] = f"{head}{sep}*a\n"
        elif op == "tab":
            lines[i] = "\t" + line
        elif op == "nul":
            lines[i] = line[: value % (len(line) + 1)] + "\x00" + line[value % (len(line) + 1):]
        elif op == "flip_char" and line:
            j = value % len(line)
            lines[i] = line[:j] + "{}[]:,&*!|>'\"#%@` -\t"[value % 21] + line[j + 1:]
        elif op == "swap_lines":
            j = value % len(lines)
            lines[i], lines[j] = lines[j], lines[i]
        text = "".join(lines)
    return text


def _own_variants() -> str:
    """The bundled variants renamed (``my-P5`` based on ``my-P4`` ...): a file of the user's
    own that loads beside the bundled one, to mutate."""
    data = yaml.safe_load((CONFIGS / "variants.yaml").read_text())
    for v in data["variants"]:
        v["name"] = "my-" + v["name"]
        if v.get("base"):
            v["base"] = "my-" + v["base"]
        v.pop("aliases", None)
    return _dump(data)


def source_text(kind: str) -> str:
    if kind == "variants":
        return _own_variants()
    k = KINDS[kind]
    return SPEC if k.source is None else k.source.read_text()


def run_file(kind: str, text: str | bytes, inputs: Inputs) -> None:
    here = inputs.example_dir()
    f = here / "input.yaml"
    if kind == "spec":
        shutil.copy(inputs.files["MACHINE"], here / "m.yaml")  # the spec names m.yaml
    f.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    target = here / "out"
    old = len(text) % 2 == 0
    if old:
        target.write_bytes(SENTINEL)
    o = invoke(KINDS[kind].argv(str(f), str(target)), here)
    check_outcome(o)
    check_written(o, target, validate=KINDS[kind].check)
    if o.code == 0:
        assert target.read_bytes() != SENTINEL, o.argv


_scalars = (
    st.none() | st.booleans() | st.integers(-(1 << 70), 1 << 70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
)


def documents(kind: str) -> st.SearchStrategy[Any]:
    keys = st.sampled_from(KINDS[kind].keys) | st.text(max_size=8)
    return st.recursive(
        _scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
        max_leaves=25,
    )


def _dump(doc: Any) -> str:
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_random_documents(kind: str, inputs: Inputs) -> None:
    """Random YAML: nested mappings and lists of every scalar, often with schema_version 1 so
    they get past the first check; and plain random text."""

    @fuzz(25)
    @given(doc=documents(kind), versioned=st.booleans(), raw=st.none() | st.text(max_size=200)
           | st.binary(max_size=100))
    def run(doc: Any, versioned: bool, raw: str | bytes | None) -> None:
        if raw is not None:
            run_file(kind, raw, inputs)
            return
        if versioned:
            doc = {"schema_version": 1, **doc} if isinstance(doc, dict) else {"schema_version": 1,
                                                                              "x": doc}
        run_file(kind, _dump(doc), inputs)

    run()


mutation = st.tuples(st.sampled_from(TREE_OPS), st.integers(0, 1 << 20), st.integers(0, 1 << 20))
text_mutation = st.tuples(st.sampled_from(TEXT_OPS), st.integers(0, 1 << 20), st.integers(0, 1 << 20))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_mutated_bundled_files(kind: str, inputs: Inputs) -> None:
    """The bundled file with keys deleted, renamed or retyped, values of other types, numbers
    at and past their edges, items duplicated — or its text truncated, lines lost or doubled,
    tags, anchors, aliases, tabs and NUL bytes put in."""
    text = source_text(kind)
    data = yaml.safe_load(text)

    @fuzz(40)
    @given(ops=st.lists(mutation, min_size=1, max_size=3),
           text_ops=st.just([]) | st.just([]) | st.lists(text_mutation, min_size=1, max_size=2))
    def run(ops: list[tuple[str, int, int]], text_ops: list[tuple[str, int, int]]) -> None:
        import copy

        doc = mutate_tree(copy.deepcopy(data), ops, POOL)
        run_file(kind, mutate_text(_dump(doc), text_ops), inputs)

    run()


@pytest.mark.parametrize("command", ["check", "diff"])
def test_mutated_cost_table(command: str, inputs: Inputs) -> None:
    """A cost table with values of other types, huge, NaN or infinite numbers, keys lost or
    renamed, rows and variants doubled, or its text truncated: `check` and `diff` still end
    with 0, 1, 2 or 3 (tests/bad_inputs/table-*.json hold the hand-made cases)."""
    import copy

    table = json.loads(inputs.files["TABLE"].read_text())

    @fuzz(20)
    @given(ops=st.lists(mutation, min_size=1, max_size=3),
           cut=st.none() | st.none() | st.integers(0, 1 << 20))
    def run(ops: list[tuple[str, int, int]], cut: int | None) -> None:
        here = inputs.example_dir()
        for name in ("SPEC", "MACHINE"):
            shutil.copy(inputs.files[name], here / inputs.files[name].name)
        text = json.dumps(mutate_tree(copy.deepcopy(table), ops, POOL), indent=1)
        if cut is not None:
            text = text[: cut % (len(text) + 1)]
        bad = here / "costs.json"
        bad.write_text(text)
        target = here / "report.json"
        if command == "check":
            argv = ["check", str(bad), "--format", "json", "-o", str(target)]
        else:
            argv = ["diff", str(inputs.files["TABLE"]), str(bad), "--format", "json", "-o",
                    str(target)]
        o = invoke(argv, here)
        check_outcome(o)
        check_written(o, target, validate=valid_json)

    run()


# ---------------------------------------------------------------------------------------------
# the non-YAML readers: measurements CSV and traces (issue 16)

#: Cells a measurements row is made of: valid ones, and every edge of every column.
CELLS: dict[str, list[str]] = {
    "vm": ["1G", "4G", "16G", "64G", "0", "-1G", "1e3G", "255T", "64X", "", "nan", "1" * 30],
    "backing": ["2M", "4K", "1G", "2M:50,4K:50", "2M:90,4K:20", "3M", "", "4K:nan"],
    "event": ["exit", "munmap", "clear", "memslot-delete", "reset", "oom", "", "bogus"],
    "variant": ["v5.5", "P5", "series", "v6.19", "", "nope", "x" * 300],
    "mapped": ["", "1.0", "0.5", "0", "-0.1", "1.5", "nan", "inf"],
    "seconds": ["0.31", "2.3", "1e-9", "1e6", "1e-308", "5e-324", "1e300", "0", "-1", "nan",
                "inf", "", "1,5", "0x10", "1e-10", "1e7"],
    "memslots": ["", "1", "2", "512", "513", "0", "3"],
    "note": ["", "a note", "x" * 1000, "\"quoted\"", "tab\there"],
}


def _csv_text(rows: list[dict[str, str]], header: list[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        w.writerow([r.get(c, "") for c in header])
    return buf.getvalue()


@st.composite
def measurement_rows(draw: st.DrawFn) -> tuple[list[str], list[dict[str, str]]]:
    header = ["vm", "backing", "event", "variant", "seconds"]
    header += draw(st.lists(st.sampled_from(["mapped", "memslots", "note"]), unique=True))
    header = draw(st.permutations(header))
    # mostly valid cells (the first few of each list), so that many files reach the fit; the
    # seconds column draws its edges more often
    def cell(c: str) -> st.SearchStrategy[str]:
        valid = st.sampled_from(CELLS[c][: 2 if c == "seconds" else 3])
        edge = st.sampled_from(CELLS[c])
        return st.one_of(valid, valid, valid, edge) if c != "seconds" else st.one_of(valid, edge)

    rows = draw(st.lists(st.fixed_dictionaries({c: cell(c) for c in header}), min_size=1,
                         max_size=8))
    return list(header), rows


def test_random_measurements(inputs: Inputs) -> None:
    """Random measurements CSVs, rows drawn from valid cells and every edge (subnormal, huge,
    NaN, negative, empty, malformed): `calibrate` ends with 0 or 2, one line, no warning."""
    pytest.importorskip("scipy")
    seen: dict[str, int] = {}

    @fuzz(25)
    @given(table=measurement_rows(), cut=st.none() | st.integers(0, 4000))
    def run(table: tuple[list[str], list[dict[str, str]]], cut: int | None) -> None:
        here = inputs.example_dir()
        text = _csv_text(table[1], table[0])
        if cut is not None:
            text = text[:cut]
        f = here / "m.csv"
        f.write_text(text)
        target = here / "d05-mine.yaml"
        o = invoke(["calibrate", "--machine", "d05", str(f), "-o", str(target),
                    "--date", "2026-01-02"], here)
        # how far it got: a row refused, or the fit reached (a result, or the fit's own refusal)
        stage = "row" if o.code == 2 and not o.err.startswith("s2teardown: error: calibrate:") \
            else "fit"
        seen[stage] = seen.get(stage, 0) + 1
        check_outcome(o)
        check_written(o, target, validate=valid_machine)

    run()
    assert seen.get("fit"), f"no file reached the fit: {seen}"  # the strategy is not vacuous


#: Lines a trace is made of: the valid ones of TRACE, and broken ones of every kind.
TRACE_LINES = [line for line in TRACE.splitlines() if line] + [
    "s2teardown-trace 2", "s2teardown-trace", "run 1", "run x vm=1G", "run 3 vm=1G backing=2M",
    "run 4 vm=1G backing=2M event=munmap variant=P5 mapped=nan", "end 9", "end", "lost 3",
    "call kvm_mmu_notifier_release 1 -5 10", "call kvm_mmu_notifier_release 1 0 " + "9" * 40,
    "call 1bad 1 0 10", "call kvm_mmu_notifier_release 1 0", "Attaching 4 probes...", "# c",
    "\x00", "run 5 vm=1G backing=2M event=exit kernel=6.8.0 pid=1 label=x",
    "call kvm_mmu_notifier_release 7 0 1", "end 5", "bogus line",
]


def test_random_traces(inputs: Inputs) -> None:
    """Random traces from valid and broken lines, shuffled, doubled and cut: `import-trace`
    ends with 0 or 2, one line; what it writes is a whole CSV."""

    @fuzz(30)
    @given(lines=st.lists(st.sampled_from(TRACE_LINES), max_size=25),
           keep=st.booleans(), raw=st.none() | st.binary(max_size=200))
    def run(lines: list[str], keep: bool, raw: bytes | None) -> None:
        here = inputs.example_dir()
        f = here / "t.trace"
        if raw is not None:
            f.write_bytes(raw)
        else:
            f.write_text("\n".join(([*TRACE.splitlines()] if keep else []) + lines) + "\n")
        target = here / "m.csv"
        o = invoke(["import-trace", str(f), "-o", str(target)], here)
        check_outcome(o)
        check_written(o, target, validate=valid_csv)

    run()


def test_random_cost_table_bytes(inputs: Inputs) -> None:
    """Random bytes and random JSON values as a cost table (the hand-made mutations are in
    test_mutated_cost_table): `check` ends with 2 or 3, one line."""
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers(-(1 << 70), 1 << 70) | st.floats() | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
        max_leaves=20)

    @fuzz(25)
    @given(raw=st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
    def run(raw: bytes) -> None:
        here = inputs.example_dir()
        f = here / "costs.json"
        f.write_bytes(raw)
        o = invoke(["check", str(f)], here)
        check_outcome(o)
        assert o.code in (2, 3), o.err

    run()


@pytest.mark.parametrize("spec", ["/dev/zero", "fifo"])
def test_table_naming_a_device_as_its_spec_is_not_read(spec: str, inputs: Inputs) -> None:
    """`check` compares the spec file the table names with the one embedded: a table naming
    /dev/zero or a FIFO must neither hang nor read without end (the note is just left out)."""
    here = inputs.example_dir()
    table = json.loads(inputs.files["TABLE"].read_text())
    if spec == "fifo":
        os.mkfifo(here / "fifo")
        spec = str(here / "fifo")
    table["spec"]["path"] = spec
    f = here / "costs.json"
    f.write_text(json.dumps(table))
    shutil.copy(inputs.files["MACHINE"], here / inputs.files["MACHINE"].name)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "s2teardown", "check", str(f)], cwd=here, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode in (0, 1, 2), p.stderr
    assert "Traceback" not in p.stderr and "internal error" not in p.stderr


def test_two_concurrent_writers_leave_one_whole_table(inputs: Inputs) -> None:
    """`s2teardown table SPEC -o same.json` twice at once (two processes): the file is one
    whole, valid table (the last rename wins), and no temporary file is left."""
    here = inputs.example_dir()
    shutil.copy(inputs.files["SPEC"], here / "spec.yaml")
    shutil.copy(inputs.files["MACHINE"], here / "m.yaml")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "s2teardown", "table", "spec.yaml", "-q", "-o", "same.json"]
    procs = [subprocess.Popen(argv, cwd=here, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    valid_table((here / "same.json").read_bytes())
    assert sorted(p.name for p in here.iterdir()) == ["m.yaml", "same.json", "spec.yaml"]


# ---------------------------------------------------------------------------------------------
# Ctrl-C, internal errors, failed writes, closed pipes


WRITERS = {
    "estimate": ["estimate", "--vm", "1G", "--format", "json", "-o", "@OUT"],
    "explain": ["explain", "--vm", "1G", "--variants", "P5", "--format", "json", "-o", "@OUT"],
    "compare": ["compare", "--vm", "1G", "--machine", "d05", "--machine", "emag", "--format",
                "markdown", "-o", "@OUT"],
    "sweep": ["sweep", "--vm", "1G..4G:x2", "--format", "csv", "-o", "@OUT"],
    "plan": ["plan", "example", "--format", "json", "-o", "@OUT"],
    "table": ["table", "@SPEC", "-q", "-o", "@OUT"],
    "check": ["check", "@TABLE", "--format", "json", "-o", "@OUT"],
    "calibrate": ["calibrate", "--machine", "d05", "@CSV", "-o", "@OUT", "--date", "2026-01-02"],
    "import-trace": ["import-trace", "@TRACE", "-o", "@OUT"],
}


def _writer_argv(name: str, inputs: Inputs, here: Path) -> tuple[list[str], Path]:
    p = prepare(list(WRITERS[name]), inputs, here, old_output=False)
    return p.argv, p.outputs[0]


@pytest.mark.parametrize("exists", [True, False], ids=["old-file", "no-file"])
@pytest.mark.parametrize("at", ["fsync", "replace"])
@pytest.mark.parametrize("name", sorted(WRITERS))
def test_ctrl_c_mid_write_exits_130_and_leaves_no_partial_file(
    name: str, at: str, exists: bool, inputs: Inputs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KeyboardInterrupt inside write_text_atomic after the temporary file is written (at the
    fsync, or at the rename): exit 130, one line, no traceback, the old file intact (or still no
    file) and no temporary left."""
    import s2teardown.render.atomic as atomic

    here = inputs.example_dir()
    argv, target = _writer_argv(name, inputs, here)
    if exists:
        target.write_bytes(SENTINEL)
    before = sorted(p.name for p in here.iterdir())
    real = getattr(atomic.os, at)
    written: list[str] = []

    def interrupted(*args: Any) -> Any:
        tmp = [p for p in here.iterdir() if p.name.endswith(".tmp")]
        if tmp and tmp[0].stat().st_size > 0 or at == "fsync":
            written.append(tmp[0].name if tmp else "?")
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(atomic.os, at, interrupted)
    o = invoke(argv, here)
    monkeypatch.undo()
    assert written, "the interrupt was never reached"
    assert o.code == 130, o.err
    # click prints a newline first (to leave the terminal's "^C" line): one message line
    assert o.err.lstrip("\n") == "s2teardown: interrupted\n", o.err
    assert (target.read_bytes() == SENTINEL) if exists else not target.exists()
    assert sorted(p.name for p in here.iterdir()) == before  # and no temporary


def test_ctrl_c_while_drawing_a_plot(inputs: Inputs, monkeypatch: pytest.MonkeyPatch) -> None:
    """The plot has its own atomic writer (render.plot._save_atomic): same rules."""
    import s2teardown.render.plot as plot_mod

    here = inputs.example_dir()
    target = here / "p.svg"
    target.write_bytes(SENTINEL)

    def interrupted(*args: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(plot_mod.os, "replace", interrupted)
    o = invoke(["sweep", "--vm", "1G,2G", "--variants", "v5.5", "--plot", str(target), "-q"], here)
    monkeypatch.undo()
    assert o.code == 130 and o.err.endswith("s2teardown: interrupted\n"), o.err
    assert "Traceback" not in o.err
    assert target.read_bytes() == SENTINEL
    assert [p.name for p in here.iterdir()] == ["p.svg"]


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_failed_write_keeps_the_old_file(name: str, inputs: Inputs,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A disk error at the rename (ENOSPC): exit 2 with one line naming the path, old file kept.
    (tests/test_tables.py::test_failed_write_leaves_old_table_intact does table and --update.)"""
    import s2teardown.render.atomic as atomic

    here = inputs.example_dir()
    argv, target = _writer_argv(name, inputs, here)
    target.write_bytes(SENTINEL)
    before = sorted(p.name for p in here.iterdir())

    def full(*args: Any) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", full)
    o = invoke(argv, here)
    monkeypatch.undo()
    assert o.code == 2, o.err
    assert o.err.count("\n") == 1 and "No space left on device" in o.err and str(target) in o.err
    assert target.read_bytes() == SENTINEL
    assert sorted(p.name for p in here.iterdir()) == before  # and no temporary


def test_explain_table_output_goes_to_the_file(inputs: Inputs) -> None:
    here = inputs.example_dir()
    o = invoke(["explain", "--vm", "1G", "--variants", "P5", "-o", str(here / "tree.txt")], here)
    assert o.code == 0, o.err
    assert o.out == ""
    assert "kvm_" in (here / "tree.txt").read_text()


INTERNAL = {
    "estimate": ["estimate", "--vm", "1G"],
    "explain": ["explain", "--vm", "1G"],
    "compare": ["compare", "--vm", "1G", "--machine", "d05", "--machine", "emag"],
    "sweep": ["sweep", "--vm", "1G"],
    "plan": ["plan", "example"],
    "table": ["table", "@SPEC"],
    "check": ["check", "@TABLE"],
    "calibrate": ["calibrate", "--machine", "d05", "@CSV"],
    "machines show": ["machines", "show", "d05"],
    "machines list": ["machines", "list"],
    "variants list": ["variants", "list"],
    "import-trace": ["import-trace", "@TRACE"],
}


@pytest.mark.parametrize("name", sorted(INTERNAL))
def test_internal_error_is_one_line_exit_70(name: str, inputs: Inputs,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug anywhere below the CLI: exit 70 and one line asking for a report with --debug
    (tests/test_cli.py::test_internal_error_exits_70 does estimate, with and without --debug)."""
    import s2teardown.features.trace as trace
    import s2teardown.inputs.yamlio as yamlio

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise ZeroDivisionError("injected")

    monkeypatch.setattr(yamlio, "_parse", boom)  # every YAML input goes through it
    monkeypatch.setattr(trace, "parse_trace_text", boom)
    here = inputs.example_dir()
    o = invoke(prepare(list(INTERNAL[name]), inputs, here, False).argv, here)
    monkeypatch.undo()
    assert o.code == 70, o.err
    assert o.err.count("\n") == 1 and "Traceback" not in o.err
    assert o.err.startswith("s2teardown: internal error: ZeroDivisionError: injected")
    assert "--debug" in o.err and "report" in o.err


PIPED = [
    "sweep --vm 1G..64G:x2 --format csv",
    "variants list",
    "machines schema",
    "plan example --format markdown",
]


@pytest.mark.parametrize("command", PIPED)
def test_closed_pipe_exits_0_quietly(command: str) -> None:
    """`| head -1` (tests/test_cli.py::test_closed_pipe_exits_0_quietly does estimate)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run(
        f"{sys.executable} -m s2teardown {command} | head -1; exit ${{PIPESTATUS[0]}}",
        shell=True, executable="/bin/bash", capture_output=True, text=True, env=env, cwd=ROOT,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("\n") == 1
    assert all(line.startswith("s2teardown: ") for line in p.stderr.splitlines()), p.stderr


# ---------------------------------------------------------------------------------------------
# bounds (run only by `make test-deep`).  The unmap across 512 memslots that took minutes is
# fixed (intervals.compact); its time is a benchmark figure now (3e), its counts are checked
# against the walker in tests/test_counts_vs_walker.py.


def _within(argv: list[str], seconds: float) -> int:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "s2teardown", *argv], capture_output=True,
                       text=True, env=env, cwd=ROOT, timeout=seconds)
    return p.returncode


@pytest.mark.deep
@pytest.mark.skipif(not DEEP, reason="S2T_DEEP=1 (make test-deep) runs it")
def test_oversized_sweep_is_refused_at_once() -> None:
    assert _within(["sweep", "--vm", "1G..64T:+1G"], 10) == 2
