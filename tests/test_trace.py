"""`s2teardown import-trace` and its parser (s2teardown.features.trace).

NO REAL HOST TRACE WAS AVAILABLE HERE.  Every trace below was written by hand in the format
that tools/s2teardown-trace.sh documents and produces (docs/measuring.md); the numbers in it
are invented.  These tests check the parser and the CSV it writes, and that the bpftrace
recipe prints exactly the lines the parser reads — not that the recipe runs on a kernel.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest

from s2teardown import cli
from s2teardown.errors import UserError
from s2teardown.features.calibrate import read_measurements
from s2teardown.features.trace import TOP_PROBE, parse_trace_text, run_rows
from s2teardown.inputs.variants import load_variants

ROOT = Path(__file__).resolve().parents[1]

# hand-written, in the documented format (see the module docstring: not from a real host)
TRACE = """\
s2teardown-trace 1
# host d05 aarch64, kernel 5.5.0, 2026-01-01T00:00:00Z
# probes: kvm_mmu_notifier_release kvm_arch_flush_shadow_all kvm_unmap_hva_range
# probes not in this kernel: kvm_unmap_gfn_range
run 1 vm=64G backing=2M event=exit kernel=5.5.0 pid=4242
Attaching 8 probes...
call kvm_arch_flush_shadow_all 4242 1000000500 9099000000
call kvm_mmu_notifier_release 4242 1000000000 9100000000
end 1
# host d05 aarch64, kernel 5.5.0, 2026-01-01T00:01:00Z
run 2 vm=16G backing=2M:90,4K:10 event=munmap kernel=5.5.0 pid=4243 mapped=0.5 label=half
call kvm_unmap_hva_range 4243 2000000100 1200000000
call kvm_mmu_notifier_invalidate_range_start 4243 2000000000 1200001000
call kvm_unmap_hva_range 4243 3300000100 300000
call kvm_mmu_notifier_invalidate_range_start 4243 3300000000 400000
end 2
run 3 vm=8G backing=4K event=exit kernel=6.8.0-47-generic variant=v6.6
call kvm_mmu_notifier_release 77 5 4000000
end 3
"""


def run(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        cli.main(list(argv))
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def test_parse_and_sum_the_outermost_probe() -> None:
    runs = parse_trace_text(TRACE, "t.trace")
    assert [r.id for r in runs] == [1, 2, 3]
    rows = run_rows(runs)
    assert rows[0]["seconds"] == "9.100000000" and rows[0]["event"] == "exit"
    assert rows[0]["kernel"] == "5.5.0" and rows[0]["variant"] == ""
    assert "kvm_arch_flush_shadow_all 100.0% of it" in rows[0]["note"]
    # munmap: every invalidate_range_start of the run (the UNMAP and a THP-split CLEAR)
    assert rows[1]["seconds"] == f"{(1200001000 + 400000) / 1e9:.9f}"
    assert rows[1]["mapped"] == "0.5" and "2 calls" in rows[1]["note"] and "half" in rows[1]["note"]
    # an explicit variant wins over the kernel string
    assert rows[2]["variant"] == "v6.6" and rows[2]["kernel"] == ""
    assert all(r["host_free_included"] == "false" for r in rows)


def test_import_trace_cli_writes_the_csv_calibrate_reads(capsys, tmp_path) -> None:
    trace = tmp_path / "d05.trace"
    trace.write_text(TRACE)
    out = tmp_path / "measurements.csv"
    code, _, err = run(capsys, "import-trace", str(trace), "-o", str(out))
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["event"] for r in rows] == ["exit", "munmap", "exit"]
    ms, _, _ = read_measurements(out, load_variants())
    assert [m.variant.name for m in ms] == ["v5.5", "v5.5", "v6.6"]
    assert [m.seconds for m in ms] == pytest.approx([9.1, 1.200401, 0.004])
    assert ms[1].workload.mapped == 0.5 and ms[1].workload.backing == ((2 << 20, 90.0),
                                                                       (4096, 10.0))
    # to stdout, several files
    code, stdout, _ = run(capsys, "import-trace", str(trace), str(trace))
    assert code == 0 and len(stdout.strip().splitlines()) == 1 + 6


@pytest.mark.parametrize(("text", "line", "needle"), [
    ("run 1 vm=1G backing=2M event=exit kernel=5.5\n", 1, "expected the first line"),
    ("s2teardown-trace 2\n", 1, "expected format version 1"),
    ("s2teardown-trace 1\ncall kvm_mmu_notifier_release 1 2 3\n", 2, "no open run"),
    ("s2teardown-trace 1\nrun 1 vm=1G backing=2M event=exit kernel=5.5\n"
     "call kvm_mmu_notifier_release 1 2 fast\nend 1\n", 3, "call.duration_ns: expected a whole"),
    ("s2teardown-trace 1\nrun 1 vm=1G backing=2M event=exit kernel=5.5\n"
     "call kvm_mmu_notifier_release 1 2\nend 1\n", 3, "5 fields"),
    ("s2teardown-trace 1\nrun 1 vm=1G backing=2M event=exit kernel=5.5\n"
     "call kvm_mmu_notifier_release 1 2 3\n", 2, "the trace was cut short"),
    ("s2teardown-trace 1\nrun 1 vm=1G backing=2M event=exit kernel=5.5\nlost 12\nend 1\n", 3,
     "12 events lost in run 1"),
    ("s2teardown-trace 1\nrun 1 vm=1G backing=2M event=exit kernel=5.5\n"
     "Lost 3 events\nend 1\n", 3, "Lost 3 events"),
    ("s2teardown-trace 1\nrun 1 vm=1G backng=2M event=exit kernel=5.5\nend 1\n", 2,
     "did you mean 'backing'"),
    ("s2teardown-trace 1\nrun 1 vm=1G backing=2M event=exit\nend 1\n", 2, "kernel= (uname -r)"),
    ("s2teardown-trace 1\nrun 1 vm=1G backing=2M event=reset kernel=5.5\nend 1\n", 2,
     "run.event: expected one of exit, munmap, clear, memslot-delete"),
    ("s2teardown-trace 1\nrun 1 vm=1G backing=2M event=exit kernel=5.5\nend 2\n", 3,
     "expected end 1"),
    ("s2teardown-trace 1\nrun 1 vm=1G backing=2M event=exit kernel=5.5\nend 1\n"
     "run 1 vm=1G backing=2M event=exit kernel=5.5\nend 1\n", 4, "not used before"),
    ("s2teardown-trace 1\nrun 1 vm=1G backing=2M event=exit kernel=5.5\n"
     "call kvm_unmap_hva_range 1 2 3\nend 1\n", 2, "a call of kvm_mmu_notifier_release in run 1"),
    ("s2teardown-trace 1\nbogus line\n", 2, "expected 's2teardown-trace', run, call"),
    ("", None, "an empty trace"),
])
def test_malformed_traces_are_file_line_errors(capsys, tmp_path, text, line, needle) -> None:
    trace = tmp_path / "bad.trace"
    trace.write_text(text)
    code, _, err = run(capsys, "import-trace", str(trace))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    loc = f"{trace}:{line}: " if line is not None else f"{trace}: "
    assert lines[0].startswith(f"s2teardown: error: {loc}"), lines[0]
    assert needle in lines[0], lines[0]


def test_a_bad_cell_in_the_imported_csv_points_at_its_line(tmp_path) -> None:
    """A run whose metadata the model cannot use fails in calibrate with the CSV line."""
    trace = TRACE.replace("vm=8G", "vm=lots")
    rows = run_rows(parse_trace_text(trace, "t.trace"))
    from s2teardown.features.trace import measurements_csv

    p = tmp_path / "m.csv"
    p.write_text(measurements_csv(rows))
    with pytest.raises(UserError) as exc:
        read_measurements(p, load_variants())
    assert f"{p}:4: vm: expected a size" in str(exc.value)


# --- the recipe in tools/ prints what the parser reads ------------------------------------


def test_bpftrace_recipe_matches_the_parser() -> None:
    bt = (ROOT / "tools" / "s2teardown-trace.bt").read_text()
    blocks = re.findall(r"^// @probe (\w+)\n(.*?)^// @end$", bt, flags=re.M | re.S)
    names = [n for n, _ in blocks]
    assert set(TOP_PROBE.values()) <= set(names)
    assert {"kvm_arch_flush_shadow_all", "kvm_unmap_hva_range", "kvm_unmap_gfn_range"} <= set(names)
    assert bt.count("// @probe ") == bt.count("// @end")
    for name, body in blocks:
        assert f"kprobe:{name} " in body and f"kretprobe:{name} " in body
        fmt = re.findall(r'printf\("(call [^"]*)\\n"', body)
        assert fmt == [f"call {name} %d %llu %llu"], (name, fmt)
    # a line printed with those formats parses
    sample = ("s2teardown-trace 1\nrun 1 vm=1G backing=2M event=exit kernel=6.8.0\n"
              "call kvm_mmu_notifier_release 123 18446744073709 42\nend 1\n")
    assert run_rows(parse_trace_text(sample))[0]["seconds"] == "0.000000042"


def test_wrapper_script_is_posix_sh_and_documents_its_options() -> None:
    import shutil
    import subprocess

    sh = ROOT / "tools" / "s2teardown-trace.sh"
    text = sh.read_text()
    assert text.startswith("#!/bin/sh")
    for opt in ("-p PID", "--vm SIZE", "--backing MIX", "--event E", "--variant V", "-o FILE"):
        assert opt in text
    assert "s2teardown-trace 1" in text and "end $RUN" in text
    if shutil.which("sh"):
        assert subprocess.run(["sh", "-n", str(sh)], check=False).returncode == 0
        r = subprocess.run(["sh", str(sh), "--help"], capture_output=True, text=True, check=False)
        assert r.returncode == 2 and "--event E" in r.stderr
