"""Narrow terminals: no table cuts a number or hides a column silently (issue 15).

The estimate table groups variants identical in every row (a footnote names them) and wraps
the rest into blocks that fit the width.  Checked against the JSON of the same estimate: every
variant's Stage-2 total must appear, and no line may be wider than the terminal's columns.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from s2teardown import cli
from s2teardown.inputs.units import format_ns
from s2teardown.render.format import format_speedup
from s2teardown.render.table import _span, group_identical, wrap_columns

ROOT = Path(__file__).resolve().parent.parent
ARGV = ("estimate", "--vm", "64G", "--machine", "altra", "--backing", "4K", "--event", "munmap",
        "--range", "3M:1G")


def run_piped(columns: int, *argv: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": str(columns)}
    p = subprocess.run([sys.executable, "-m", "s2teardown", *argv], capture_output=True, text=True,
                       env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout


def totals(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, float]:
    with pytest.raises(SystemExit):
        cli.main([*argv, "--format", "json"])
    doc = json.loads(capsys.readouterr().out)
    return {v["name"]: v["stage2_ns"] for v in doc["variants"]}


@pytest.mark.parametrize("columns", [80, 120])
@pytest.mark.parametrize("variants", [(), ("--variants", "v5.5,P5,v5.10,v6.6,v6.19")])
def test_every_total_appears_and_no_line_is_cut(capsys, columns: int, variants: tuple[str, ...]) -> None:
    argv = (*ARGV, *variants)
    out = run_piped(columns, *argv)
    for line in out.splitlines():
        assert len(line) <= columns, f"{len(line)} > {columns}: {line!r}"
    tot = totals(capsys, *argv)
    table = out[out.index("phase "):]
    total_lines = [ln for ln in table.splitlines() if ln.startswith("Stage-2 total")]
    shown = " ".join(total_lines)
    # the 'identical' footnote names a run of variants as a span ("P1–P6"): the names inside count
    order = list(tot)
    covered = {n for a, b in re.findall(r"([\w.]+)–([\w.]+)", out) if a in order and b in order
               for n in order[order.index(a):order.index(b) + 1]}
    for name, ns in tot.items():
        assert name in out or name in covered, name  # a column head, or in the footnote
        assert format_ns(ns) in shown, (name, format_ns(ns), shown)


def test_wrapping_is_said(capsys) -> None:
    out = run_piped(40, "estimate", "--vm", "64G", "--machine", "d05", "--variants", "v5.5,P5,v5.10,v6.19")
    assert "the table is wrapped to 40 columns" in out
    assert out.count("Stage-2 total") == 2  # two blocks, each with its totals row
    assert all(len(line) <= 40 for line in out.splitlines())


def test_identical_columns_are_grouped_and_named() -> None:
    names = ["a", "b", "c", "d", "e"]
    rows: list[list[object]] = [["x", "1", "1", "2", "1", "2"], ["y", "3", "3", "4", "3", "4"]]
    kept, same = group_identical(names, rows)  # type: ignore[arg-type]
    assert kept == [0, 2] and same == {0: [1, 3], 2: [4]}
    assert _span(names, [1, 2, 3]) == "b–d" and _span(names, [1, 3]) == "b, d"
    assert _span(names, [1, 2]) == "b, c"
    # a column differing in one row only is kept
    rows[1][2] = "9"
    kept, same = group_identical(names, rows)  # type: ignore[arg-type]
    assert kept == [0, 1, 2] and same == {0: [3], 2: [4]}


def test_wrap_never_cuts_a_wide_cell() -> None:
    blocks = wrap_columns(["phase", "A", "B"], [["t", "1234567890", "x"]], width=8)
    assert len(blocks) == 2 and "1234567890" in blocks[0].plain and "x" in blocks[1].plain


def test_speedup_never_rounds_a_real_ratio_to_zero() -> None:
    assert format_speedup(0.004) == "0.004×" and format_speedup(0.04) != "0.0×"
    assert format_speedup(2.5) == "2.5×" and format_speedup(1234.4) == "1,234×"


def test_variants_all_is_every_variant(capsys) -> None:
    every = totals(capsys, "estimate", "--vm", "1G", "--machine", "d05")
    named = totals(capsys, "estimate", "--vm", "1G", "--machine", "d05", "--variants", "all")
    assert list(named) == list(every) and len(every) >= 16


def test_explain_shows_one_variant_by_default(capsys) -> None:
    with pytest.raises(SystemExit):
        cli.main(["explain", "--vm", "1G", "--machine", "d05", "--format", "json"])
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["trees"]) == 1
    with pytest.raises(SystemExit):
        cli.main(["explain", "--vm", "1G", "--machine", "d05", "--variants", "v5.5,P5", "--format", "json"])
    assert len(json.loads(capsys.readouterr().out)["trees"]) == 2
