"""Cost tables: `table`, `check` and `diff` (issue 5, parts 1 and 2)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from s2teardown import cli

ROOT = Path(__file__).resolve().parents[1]
D05 = (ROOT / "configs/machines/d05.yaml").read_text()
GIB = 1 << 30

SPEC = """\
schema_version: 1
machines: [d05-mod.yaml, emag]
vm_bytes: [1073741824, 2147483648]
backings:
  - [{leaf_bytes: 2097152, percent: 100}]
events: [exit, munmap]
variants: [v5.5, P5, series, v6.19]
"""
ROW = "d05-mod.yaml · 1 GiB · 2M · exit"


def run(capsys: Any, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        cli.main(list(argv))
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def save(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(json.dumps(doc, indent=2))


def variant(doc: dict[str, Any], label: str, name: str) -> dict[str, Any]:
    row = next(r for r in doc["rows"] if r["label"] == label)
    return next(v for v in row["variants"] if v["name"] == name)  # type: ignore[no-any-return]


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A spec beside a copy of d05.yaml; tables go to tmp_path/out (relative paths resolve)."""
    (tmp_path / "d05-mod.yaml").write_text(D05)
    (tmp_path / "spec.yaml").write_text(SPEC)
    (tmp_path / "out").mkdir()
    return tmp_path


def make_table(capsys: Any, work: Path, name: str = "costs.json", embed: bool = True) -> Path:
    """A table of the work spec; with ``embed`` (most tests: they read the input diffs) the
    inputs' text is embedded (`table --embed-inputs`)."""
    target = work / "out" / name
    extra = ["--embed-inputs"] if embed else []
    code, out, err = run(capsys, "table", str(work / "spec.yaml"), "-o", str(target), *extra)
    assert code == 0, err
    assert out == "" and "wrote" in err
    return target


def edit_machine(work: Path, old: str, new: str) -> None:
    p = work / "d05-mod.yaml"
    text = p.read_text()
    assert old in text
    p.write_text(text.replace(old, new, 1))


# --------------------------------------------------------------------------------------------
# table


def test_table_document_layout(work: Path, capsys: Any) -> None:
    from s2teardown.core.model import MODEL_VERSION
    from s2teardown.core.vocabulary import EVENTS, PHASES, STAGE2_PHASES

    doc = load(make_table(capsys, work))
    assert doc["format_version"] == 1 and doc["document"] == "s2teardown cost table"
    assert doc["model_version"] == MODEL_VERSION and doc["tool_version"] and doc["numpy_version"]
    # the inputs themselves, with their sha256
    m = doc["inputs"]["machines"]
    assert [x["ref"] for x in m] == ["d05-mod.yaml", "emag"]
    assert m[0]["text"] == D05 and m[0]["sha256"] == hashlib.sha256(D05.encode()).hexdigest()
    assert m[0]["path"] == "../d05-mod.yaml" and not m[0]["bundled"]
    assert m[1]["bundled"] and m[1]["text"] == (ROOT / "configs/machines/emag.yaml").read_text()
    bundled = doc["inputs"]["variants"][0]
    assert bundled["role"] == "bundled" and "name: v5.5" in bundled["text"]
    assert doc["spec"]["path"] == "../spec.yaml" and doc["spec"]["text"] == SPEC
    assert doc["spec"]["data"]["events"] == ["exit", "munmap"]
    # rows: 2 machines × 2 sizes × 1 backing × 2 events, every variant in each
    assert len(doc["rows"]) == 8 and doc["variants"] == ["v5.5", "P5", "P7", "v6.19"]
    row = doc["rows"][0]
    assert row["label"] == ROW
    assert row["key"] == {
        "machine": "d05-mod.yaml",
        "vm_bytes": GIB,
        "backing": [{"leaf_bytes": 2 << 20, "percent": 100.0}],
        "event": "exit",
    }
    v = row["variants"][0]
    assert set(v["events"]) == set(EVENTS) and all(type(n) is int for n in v["events"].values())
    assert set(v["phases_ns"]) == set(PHASES) and all(
        type(x) is float for x in v["phases_ns"].values()
    )
    assert v["stage2_ns"] == pytest.approx(
        sum(x for p, x in v["phases_ns"].items() if p in STAGE2_PHASES)
    )
    # the host side of a 1 GiB THP exit on d05 (docs/model.md §14): 512 THPs zapped at 40 ns
    # and freed at 2,000 ns, 512 deposited + 1 PMD + 1 PUD table pages at 300 ns; the wall adds
    # 2 SRCU grace periods (d05-mod keeps d05's 100 µs)
    # (model version 6: + one flush_tlb_mm, dsb_ishst 10 + tlbi_is 610 + dsb_ish 20 ns, for the
    # 2 tables the full-mm gather frees)
    assert v["host_ns"] == pytest.approx(512 * 40 + 512 * 2000 + 514 * 300 + 640)
    assert v["end_to_end_ns"] == pytest.approx(v["stage2_ns"] + v["host_ns"])
    assert v["wall_ns"] == pytest.approx(v["end_to_end_ns"] + 2 * 100_000)
    # v5.5 holds mmu_lock for a whole 1 GiB entry of CMO (16,777,216 lines): past 100 ms, far
    # below the soft lockup (20 s) and the RCU stall (21 s); the need_resched latency warning came
    # with v5.13, so a v5.5 kernel prints nothing (docs/model.md §11.5)
    assert 100e6 < v["longest_locked_stretch_ns"] < 20e9
    assert v["lock_hold"] is None and v["lock_holds"] == [] and v["warnings"] == []
    assert variant(doc, ROW, "v6.19")["lock_hold"] is None
    assert doc["spec"]["data"]["rcu_stall_timeout_s"] == 21.0  # the default, filled in


def test_table_lists_every_detector(work: Path, capsys: Any) -> None:
    """With watchdog_thresh_s 0.05 the soft lockup is at 2 × 0.05 = 0.1 s: v5.5's ~143 ms stretch
    passes it; the RCU stall (3 s, the smallest the kernel takes) is not reached; need_resched
    does not exist in v5.5.  The table, its report and check all name the detector."""
    (work / "spec.yaml").write_text(SPEC + "watchdog_thresh_s: 0.05\nrcu_stall_timeout_s: 3\n")
    target = work / "out" / "costs.json"
    code, _, err = run(capsys, "table", str(work / "spec.yaml"), "-o", str(target))
    assert code == 0, err
    doc = load(target)
    assert doc["spec"]["data"]["rcu_stall_timeout_s"] == 3.0
    v = variant(doc, ROW, "v5.5")
    assert [(h["threshold"], h["limit_ns"], h["first_fire_ns"], h["on_by_default"]) for h in v["lock_holds"]] == [
        ("soft_lockup", 0.1e9, 0.1e9, True)
    ]
    (h,) = v["lock_holds"]
    assert h["message"] == "watchdog: BUG: soft lockup - CPU#N stuck for Ns! [TASK:PID]"
    assert v["lock_hold"]["threshold"] == "soft_lockup" and v["warnings"] == [h["warning"]]
    assert h["warning"].startswith("v5.5: soft lockup (2 × watchdog_thresh = 0.1 s) at 100 ms into ")
    assert f"s2teardown: warning: {ROW}: {h['warning']}" in err.splitlines()


def test_bad_rcu_stall_timeout_in_spec(work: Path, capsys: Any) -> None:
    for bad in ("2", "301", "2.5", "x"):
        (work / "spec.yaml").write_text(SPEC + f"rcu_stall_timeout_s: {bad}\n")
        code, _, err = run(capsys, "table", str(work / "spec.yaml"), "-o", str(work / "out" / "t.json"))
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert "rcu_stall_timeout_s: expected a whole number of seconds 3..300" in err


def test_table_without_lock_holds_still_checks(work: Path, capsys: Any) -> None:
    """A table written before every detector was listed (no lock_holds, no rcu_stall_timeout_s)
    still reads, and compares by its one lock_hold."""
    table = make_table(capsys, work)
    doc = load(table)
    del doc["spec"]["data"]["rcu_stall_timeout_s"]
    for r in doc["rows"]:
        for v in r["variants"]:
            del v["lock_holds"]
    save(table, doc)
    code, out, _ = run(capsys, "check", str(table))
    assert code == 0, out


def test_inputs_by_hash_and_path_unless_embedded(work: Path, capsys: Any) -> None:
    """By default the committed table names its inputs (path, sha256) without their text, so it
    stays reviewable; a changed input is still named, with a hint instead of a diff."""
    doc = load(make_table(capsys, work, "short.json", embed=False))
    m = doc["inputs"]["machines"][0]
    assert m["text"] is None and m["sha256"] == hashlib.sha256(D05.encode()).hexdigest()
    assert doc["spec"]["text"] is None and doc["spec"]["data"]["events"] == ["exit", "munmap"]
    assert all(v["text"] is None for v in doc["inputs"]["variants"])
    full = (work / "out" / "short.json").stat().st_size
    assert full < (make_table(capsys, work, "full.json").stat().st_size) - len(D05)
    edit_machine(work, "hvc_ns: {value: 150", "hvc_ns: {value: 300")
    code, out, err = run(capsys, "check", str(work / "out" / "short.json"))
    assert code == 1, out + err
    assert "input changed: machine d05-mod.yaml" in out and "table --embed-inputs" in out


def test_table_creates_the_output_directory(work: Path, capsys: Any) -> None:
    target = work / "new" / "dir" / "costs.json"
    code, _, err = run(capsys, "table", str(work / "spec.yaml"), "-o", str(target))
    assert code == 0, err
    assert load(target)["rows"]


def test_table_matches_estimate(work: Path, capsys: Any) -> None:
    """The same numbers as `estimate --format json` for one row."""
    doc = load(make_table(capsys, work))
    code, out, _ = run(
        capsys,
        "estimate",
        "--vm",
        "2G",
        "--machine",
        str(work / "d05-mod.yaml"),
        "--event",
        "munmap",
        "--variants",
        "v5.5,series",
        "--format",
        "json",
    )
    assert code == 0
    est = json.loads(out)
    for ev in est["variants"]:
        got = variant(doc, "d05-mod.yaml · 2 GiB · 2M · munmap", ev["name"])
        assert got["events"] == ev["events"]
        assert got["stage2_ns"] == pytest.approx(ev["stage2_ns"], rel=1e-12)
        assert got["longest_stretch_ns"] == pytest.approx(ev["longest_stretch_ns"], rel=1e-12)


def test_table_to_stdout(work: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(work)
    code, out, err = run(capsys, "table", "spec.yaml")
    assert code == 0 and "wrote stdout: 8 rows × 4 variants" in err
    assert json.loads(out)["spec"]["path"] == "spec.yaml"


def test_example_spec_is_valid() -> None:
    from s2teardown.features.tables import load_spec

    spec = load_spec(ROOT / "configs/tables/example.yaml")
    assert spec.machines == ("d05", "emag") and spec.row_count == 24 and spec.variants is None


@pytest.mark.parametrize(
    ("change", "line", "pattern"),
    [
        (("events: [exit, munmap]", "evnets: [exit]"), 6, "evnets: expected a table-spec field, got unknown key 'evnets' (did you mean 'events'?)"),
        (
            ("events: [exit, munmap]", "events: [exit, munmapp]"),
            6,
            "events[1]: expected one of exit",
        ),
        (
            ("vm_bytes: [1073741824, 2147483648]", "vm_bytes: [1073741824, 2G]"),
            3,
            "vm_bytes[1]: expected a positive whole number of bytes, got string '2G'",
        ),
        (
            ("vm_bytes: [1073741824, 2147483648]", "vm_bytes: [1073741824, 1073745920]"),
            3,
            "vm_bytes[1]",
        ),
        (
            ("percent: 100}]", "percent: 90}]"),
            5,
            "backings[0]: expected percentages summing to 100",
        ),
        (
            ("variants: [v5.5, P5, series, v6.19]", "variants: [v5.5, P8]"),
            7,
            "variants[1]: expected a variant name",
        ),
        (
            ("machines: [d05-mod.yaml, emag]", "machines: [d05-mod.yaml, emga]"),
            2,
            "machines[1]: expected a machine file",
        ),
    ],
)
def test_bad_spec_is_one_line_with_file_and_line(
    work: Path, capsys: Any, change: tuple[str, str], line: int, pattern: str
) -> None:
    spec = work / "spec.yaml"
    spec.write_text(SPEC.replace(*change))
    code, _, err = run(capsys, "table", str(spec), "-o", str(work / "out/c.json"))
    assert code == 2
    assert f"{spec}:{line}:" in err and pattern in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (work / "out/c.json").exists()


# --------------------------------------------------------------------------------------------
# check


def test_no_change_exits_0(work: Path, capsys: Any) -> None:
    table = make_table(capsys, work)
    code, out, err = run(capsys, "check", str(table))
    assert code == 0, out + err
    assert "inputs unchanged: machine d05-mod.yaml, machine emag" in out
    assert "rows: 8 in common, 0 added, 0 removed" in out and "no input or model change" not in out
    assert "result: OK" in out


def test_price_edit_in_machine_file_is_input_change_and_regression(work: Path, capsys: Any) -> None:
    table = make_table(capsys, work)
    edit_machine(work, "hvc_ns: {value: 150,", "hvc_ns: {value: 300,")
    code, out, err = run(capsys, "check", str(table))
    assert code == 1, err
    # first what changed: the file, by hash, with a diff of the embedded YAML
    assert "input changed: machine d05-mod.yaml (../d05-mod.yaml): sha256" in out
    assert "-  hvc_ns: {value: 150," in out and "+  hvc_ns: {value: 300," in out
    assert "inputs unchanged: machine emag" in out
    assert out.index("input changed") < out.index("rows: 8 in common") < out.index("result:")
    # then the verdict naming the rows
    verdict = out[out.index("result: REGRESSION") :]
    assert f"{ROW} (v5.5)" in verdict
    assert "d05-mod.yaml · 2 GiB · 2M · munmap (v5.5, P5, P7, v6.19)" in verdict
    assert "emag" not in verdict  # the machine that did not change
    assert "tlbi +77" in out  # 512 TLB flushes per GiB of 2 MiB leaves, 150 ns more each


def test_edited_variants_file_is_classified_as_input_change(work: Path, capsys: Any) -> None:
    mine = work / "mine.yaml"
    mine.write_text(
        "schema_version: 1\nvariants:\n  - name: mine\n    base: P5\n"
        "    title: local experiment\n    unmap: {cmo: none}\n"
    )
    (work / "spec.yaml").write_text(
        SPEC.replace(
            "variants: [v5.5, P5, series, v6.19]",
            "variants: [v5.5, mine]\nvariants_file: mine.yaml",
        )
    )
    table = make_table(capsys, work)
    assert [d["role"] for d in load(table)["inputs"]["variants"]] == ["bundled", "variants_file"]
    # a comment only: an input change, but no result changes
    mine.write_text("# tried on 6 Jan\n" + mine.read_text())
    code, out, _ = run(capsys, "check", str(table))
    assert code == 0
    assert (
        "input changed: variants file mine.yaml (../mine.yaml)" in out
        and "+# tried on 6 Jan" in out
    )
    unchanged = "machine d05-mod.yaml, machine emag, variants file <bundled>/variants.yaml"
    assert f"inputs unchanged: {unchanged}" in out
    # a behaviour change: counts move, a regression
    mine.write_text(mine.read_text().replace("unmap: {cmo: none}", "unmap: {cmo: per_leaf}"))
    code, out, _ = run(capsys, "check", str(table))
    assert code == 1
    assert "input changed: variants file mine.yaml" in out and "+    unmap: {cmo: per_leaf}" in out
    assert "counts changed: dcache_flush_call" in out
    assert "d05-mod.yaml · 1 GiB · 2M · munmap (mine)" in out


def test_variant_added_to_all_shows_as_added(work: Path, capsys: Any) -> None:
    mine = work / "mine.yaml"
    mine.write_text("schema_version: 1\nvariants:\n  - name: mine\n    base: P5\n    title: t\n")
    (work / "spec.yaml").write_text(
        SPEC.replace(
            "variants: [v5.5, P5, series, v6.19]", "variants: all\nvariants_file: mine.yaml"
        )
    )
    table = make_table(capsys, work)
    mine.write_text(mine.read_text() + "  - name: mine2\n    base: P7\n    title: t2\n")
    code, out, _ = run(capsys, "check", str(table), "--format", "json")
    assert code == 0
    rep = json.loads(out)
    added = [e for e in rep["entries"] if e["status"] == "added"]
    assert len(added) == 8 and {e["variant"] for e in added} == {"mine2"}
    assert rep["inputs"][-1]["kind"] == "variants file" and rep["inputs"][-1]["status"] == "changed"


def test_spec_file_edit_is_noted_but_embedded_spec_used(work: Path, capsys: Any) -> None:
    table = make_table(capsys, work)
    (work / "spec.yaml").write_text(SPEC.replace("events: [exit, munmap]", "events: [exit]"))
    code, out, _ = run(capsys, "check", str(table))
    assert code == 0 and "rows: 8 in common" in out
    assert "note: the spec file ../spec.yaml changed since the table was written" in out


def test_input_broken_or_gone_now_is_exit_2(work: Path, capsys: Any) -> None:
    table = make_table(capsys, work)
    edit_machine(work, "  sockets:", "  sokets:")
    code, out, err = run(capsys, "check", str(table))
    line = next(i for i, s in enumerate(D05.splitlines(), 1) if s.startswith("  sockets:"))
    assert code == 2 and out == ""
    assert f"d05-mod.yaml:{line}: topology.sokets" in err and len(err.strip().splitlines()) == 1
    (work / "d05-mod.yaml").unlink()
    code, _, err = run(capsys, "check", str(table))
    assert code == 2
    assert f"{table}: spec.data.machines[0]: expected a machine file" in err


def test_other_format_version_exits_3(work: Path, capsys: Any) -> None:
    table = make_table(capsys, work)
    doc = load(table)
    doc["format_version"] = 2
    other = work / "out/v2.json"
    save(other, doc)
    for argv in (["check", str(other)], ["diff", str(table), str(other)]):
        code, out, err = run(capsys, *argv)
        assert code == 3, err
        assert "format_version: expected 1" in err and "got 2" in err
        assert len(err.strip().splitlines()) == 1 and out == ""


def test_no_rows_in_common_exits_3(work: Path, capsys: Any) -> None:
    a = make_table(capsys, work, "a.json")
    (work / "spec.yaml").write_text(
        SPEC.replace("machines: [d05-mod.yaml, emag]", "machines: [grace]")
    )
    b = make_table(capsys, work, "b.json")
    code, _, err = run(capsys, "diff", str(a), str(b))
    assert code == 3 and "no rows in common" in err and len(err.strip().splitlines()) == 1


def _truncate(t: str) -> str:
    return t[: len(t) // 2]


def _drop_key(t: str) -> str:
    doc = json.loads(t)
    del doc["rows"][3]["variants"][1]["stage2_ns"]
    return json.dumps(doc)


def _wrong_type(t: str) -> str:
    doc = json.loads(t)
    doc["rows"][0]["variants"][0]["events"]["dc_civac_line"] = "many"
    return json.dumps(doc)


@pytest.mark.parametrize(
    ("damage", "pattern"),
    [
        (_truncate, "expected a complete JSON cost table, got invalid JSON"),
        (lambda t: t.replace('"rows": [', '"rows": [[[', 1), "invalid JSON"),
        (lambda t: "", "expected a JSON cost table, got an empty file"),
        (lambda t: "\udcff", "expected a JSON cost table (UTF-8 text)"),
        (lambda t: "[1, 2]", "expected a JSON object"),
        (_drop_key, "rows[3].variants[1].stage2_ns: expected a value (required)"),
        (
            _wrong_type,
            "rows[0].variants[0].events.dc_civac_line: expected an integer, got string 'many'",
        ),
        (
            lambda t: t.replace('"document": "s2teardown cost table"', '"document": "x"'),
            "document:",
        ),
    ],
)
def test_corrupt_or_truncated_table_exits_2_with_one_line(
    work: Path, capsys: Any, damage: Any, pattern: str
) -> None:
    table = make_table(capsys, work)
    bad = work / "out/bad.json"
    bad.write_bytes(damage(table.read_text()).encode("utf-8", errors="surrogateescape"))
    for argv in (
        ["check", str(bad)],
        ["diff", str(table), str(bad)],
        ["check", str(bad), "--update"],
    ):
        code, out, err = run(capsys, *argv)
        assert code == 2, err
        assert err.startswith(f"s2teardown: error: {bad}") and pattern in err, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and out == ""


def test_truncated_table_says_so(work: Path, capsys: Any) -> None:
    table = make_table(capsys, work)
    table.write_text(_truncate(table.read_text()))
    code, _, err = run(capsys, "check", str(table))
    assert code == 2 and "the file ends early: truncated?" in err


def _shift(table: Path, delta: float) -> float:
    """Store P5's Stage-2 total of ROW as (true value - delta): check then sees +delta."""
    doc = load(table)
    v = variant(doc, ROW, "P5")
    old = v["stage2_ns"] - delta
    v["stage2_ns"] = old
    save(table, doc)
    return old


@pytest.mark.parametrize(
    ("atol", "rtol_factor", "flagged"),
    [
        (1999.5, 0.999, True),  # just past both
        (2000.5, 0.999, False),  # past rtol only
        (1999.5, 1.001, False),  # past atol only
        (2000.5, 1.001, False),  # just inside both
    ],
)
def test_tolerance_edges(
    work: Path, capsys: Any, atol: float, rtol_factor: float, flagged: bool
) -> None:
    table = make_table(capsys, work)
    old = _shift(table, 2000.0)
    rtol = 2000.0 / old * rtol_factor
    code, out, _ = run(capsys, "check", str(table), "--atol", repr(atol), "--rtol", repr(rtol))
    assert code == (1 if flagged else 0), out
    if flagged:
        assert f"{ROW} (P5)" in out and "Stage-2 total +2 µs" in out
    else:
        assert "result: OK" in out


def test_tolerance_default_is_relative_and_absolute(work: Path, capsys: Any) -> None:
    table = make_table(capsys, work)
    old = _shift(table, 2000.0)  # P5 at 1 GiB exit: ~56 µs, so 2 µs is > 1 µs and > 1 %
    assert 2000.0 / old > 0.01
    code, out, _ = run(capsys, "check", str(table))
    assert code == 1 and f"{ROW} (P5)" in out
    code, _, _ = run(capsys, "check", str(table), "--rtol", "0.05")
    assert code == 0


def test_improvement_is_better_not_regression(work: Path, capsys: Any) -> None:
    table = make_table(capsys, work)
    _shift(table, -5000.0)  # stored 5 µs more than now: an improvement
    code, out, _ = run(capsys, "check", str(table), "--format", "json")
    assert code == 0
    rep = json.loads(out)
    e = next(x for x in rep["entries"] if x["row"] == ROW and x["variant"] == "P5")
    assert e["status"] == "better" and e["delta_ns"] == pytest.approx(-5000.0)
    assert rep["rows"]["status"][ROW] == "better" and rep["result"] == "ok"


def test_bad_tolerance_is_usage_error(work: Path, capsys: Any) -> None:
    table = make_table(capsys, work)
    code, _, err = run(capsys, "check", str(table), "--rtol", "-1")
    assert code == 2 and "--rtol: expected a finite number >= 0" in err


def test_count_change_alone_is_regression(work: Path, capsys: Any) -> None:
    table = make_table(capsys, work)
    doc = load(table)
    variant(doc, ROW, "v6.19")["events"]["table_free"] += 1
    save(table, doc)
    code, out, _ = run(capsys, "check", str(table), "--rtol", "1000", "--atol", "1e15")
    assert code == 1
    assert "counts changed: table_free" in out and f"{ROW} (v6.19)" in out


def test_new_lock_hold_warning_exits_1(work: Path, capsys: Any) -> None:
    # watchdog_thresh_s 0.05: the soft lockup fires past 2 × 0.05 = 0.1 s.  A faster DC CIVAC:
    # v5.5's 1 GiB stretch (16,777,216 lines) stays below it; the bundled 5 ns passes it.
    (work / "spec.yaml").write_text(SPEC + "watchdog_thresh_s: 0.05\n")
    edit_machine(
        work,
        "dc_civac_local_ns: {value: 5, source: assumed, min: 3,",
        "dc_civac_local_ns: {value: 1, source: assumed, min: 1,",
    )
    table = make_table(capsys, work)
    assert variant(load(table), ROW, "v5.5")["lock_hold"] is None
    edit_machine(
        work,
        "dc_civac_local_ns: {value: 1, source: assumed, min: 1,",
        "dc_civac_local_ns: {value: 5, source: assumed, min: 3,",
    )
    # tolerances so wide that no cost is flagged: the new warning alone is the regression
    code, out, _ = run(capsys, "check", str(table), "--rtol", "1000", "--atol", "1e15")
    assert code == 1, out
    assert "new lock-hold warning: soft_lockup" in out
    assert "at 100 ms: watchdog: BUG: soft lockup - CPU#N stuck for Ns! [TASK:PID]" in out
    assert f"{ROW} (v5.5)" in out and "counts changed" not in out


def test_markdown_and_json_reports(work: Path, capsys: Any) -> None:
    table = make_table(capsys, work)
    edit_machine(work, "hvc_ns: {value: 150,", "hvc_ns: {value: 300,")
    code, out, _ = run(capsys, "check", str(table), "--format", "markdown")
    assert code == 1
    assert out.startswith("### s2teardown check: regression")
    assert "<details><summary>diff of machine d05-mod.yaml</summary>" in out and "```diff" in out
    assert "| row | variant | status |" in out and f"| {ROW} | v5.5 | **worse** |" in out
    assert f"- {ROW} (v5.5)" in out
    report = work / "out/comment.md"
    code, out, _ = run(capsys, "check", str(table), "--format", "markdown", "-o", str(report))
    assert code == 1 and out == "" and report.read_text().startswith("### s2teardown check")
    code, out, _ = run(capsys, "check", str(table), "--format", "json")
    assert code == 1
    rep = json.loads(out)
    assert rep["result"] == "regression" and rep["exit_code"] == 1
    assert (
        rep["inputs"][0]["status"] == "changed"
        and "+  hvc_ns: {value: 300," in rep["inputs"][0]["diff"]
    )
    assert {"row": ROW, "variant": "v5.5"}.items() <= rep["regressions"][0].items()


def test_update_rewrites_and_next_check_is_clean(work: Path, capsys: Any) -> None:
    table = make_table(capsys, work)
    edit_machine(work, "hvc_ns: {value: 150,", "hvc_ns: {value: 300,")
    code, out, _ = run(capsys, "check", str(table), "--update")
    assert code == 0
    assert "input changed: machine d05-mod.yaml" in out and f"{ROW} (v5.5)" in out  # the diff
    assert f"updated {table}" in out
    assert load(table)["inputs"]["machines"][0]["text"] == (work / "d05-mod.yaml").read_text()
    code, out, _ = run(capsys, "check", str(table))
    assert code == 0 and "result: OK" in out
    assert sorted(p.name for p in table.parent.iterdir()) == ["costs.json"]


@pytest.mark.parametrize("fail_at", ["fsync", "replace"])
@pytest.mark.parametrize("command", ["table", "update"])
def test_failed_write_leaves_old_table_intact(
    work: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch, fail_at: str, command: str
) -> None:
    import s2teardown.render.atomic as atomic

    table = make_table(capsys, work)
    before = table.read_bytes()
    edit_machine(work, "hvc_ns: {value: 150,", "hvc_ns: {value: 300,")  # the new table differs

    def boom(*a: Any, **k: Any) -> None:
        raise RuntimeError(f"injected failure in os.{fail_at}")

    monkeypatch.setattr(atomic.os, fail_at, boom)
    argv = (
        ["table", str(work / "spec.yaml"), "-o", str(table)]
        if command == "table"
        else ["check", str(table), "--update"]
    )
    code, _, err = run(capsys, *argv)
    monkeypatch.undo()
    assert code == 70 and "injected failure" in err
    assert table.read_bytes() == before
    assert sorted(p.name for p in table.parent.iterdir()) == ["costs.json"]  # no temporary left


def test_unwritable_update_target_is_exit_2(
    work: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import s2teardown.render.atomic as atomic

    table = make_table(capsys, work)
    before = table.read_bytes()

    def denied(*a: Any, **k: Any) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(atomic.os, "replace", denied)
    code, _, err = run(capsys, "check", str(table), "--update")
    monkeypatch.undo()
    assert code == 2 and "expected a writable file path" in err
    assert table.read_bytes() == before and len(list(table.parent.iterdir())) == 1


# --------------------------------------------------------------------------------------------
# diff


def test_diff_numbers_by_hand(work: Path, capsys: Any) -> None:
    a = make_table(capsys, work, "a.json")
    doc = load(a)
    for row in doc["rows"]:  # v5.5 costs 1 ms in every row of A
        next(v for v in row["variants"] if v["name"] == "v5.5")["stage2_ns"] = 1e6
    save(a, doc)
    variant(doc, ROW, "v5.5")["stage2_ns"] = 1.25e6  # B: one row 1 ms -> 1.25 ms
    b = work / "out/b.json"
    save(b, doc)
    code, out, _ = run(capsys, "diff", str(a), str(b))
    assert code == 0  # diff never fails on a change
    line = next(ln for ln in out.splitlines() if ln.lstrip().startswith(ROW) and " v5.5 " in ln)
    assert line.split()[8:14] == ["v5.5", "worse", "1", "ms", "1.25", "ms"]
    assert "+250 µs" in line and "+25.0%" in line and "Stage-2 total +250 µs (+25.0%)" in line
    # 8 rows × 1 ms = 8 ms -> 8.25 ms: +250 µs = +3.125 %
    assert "total v5.5: 8 ms → 8.25 ms (+250 µs, +3.1%)" in out
    p5 = next(ln for ln in out.splitlines() if ln.lstrip().startswith(ROW) and " P5 " in ln)
    assert "unchanged" in p5 and " 0 " in p5  # every entry is listed, unchanged ones too
    code, out, _ = run(capsys, "diff", str(a), str(b), "--format", "json")
    rep = json.loads(out)
    e = next(x for x in rep["entries"] if x["row"] == ROW and x["variant"] == "v5.5")
    assert (e["old_ns"], e["new_ns"], e["delta_ns"], e["percent"]) == (1e6, 1.25e6, 2.5e5, 25.0)
    tot = next(x for x in rep["totals"]["variants"] if x["variant"] == "v5.5")
    assert (tot["old_ns"], tot["new_ns"], tot["delta_ns"]) == (8e6, 8.25e6, 2.5e5)
    assert tot["percent"] == pytest.approx(3.125)
    assert rep["totals"]["all"]["delta_ns"] == pytest.approx(2.5e5)
    assert len(rep["entries"]) == 8 * 4


def test_diff_rows_added_and_removed(work: Path, capsys: Any) -> None:
    a = make_table(capsys, work, "a.json")
    (work / "spec.yaml").write_text(SPEC.replace("events: [exit, munmap]", "events: [exit, oom]"))
    b = make_table(capsys, work, "b.json")
    code, out, _ = run(capsys, "diff", str(a), str(b), "--format", "markdown")
    assert code == 0
    assert "rows: 4 in common, 4 added, 4 removed" in out
    assert "added: d05-mod.yaml · 1 GiB · 2M · oom" in out
    assert "removed: emag · 2 GiB · 2M · munmap" in out
    assert "input changed: spec ../spec.yaml" in out


def test_commands_help_do_not_import_numpy() -> None:
    code = (
        "import sys\n"
        "from s2teardown import cli\n"
        "for c in ('table', 'check', 'diff'):\n"
        "    try:\n"
        "        cli.main([c, '--help'])\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, e.code\n"
        "assert 'numpy' not in sys.modules, 'numpy imported'\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert res.returncode == 0, res.stderr
    assert "--rtol" in res.stdout and "--update" in res.stdout


# --------------------------------------------------------------------------------------------
# gates and the pull-request comment (issue 15)


def test_gate_on_stage2_total_only(work: Path, capsys: Any) -> None:
    """hvc 150 → 300 ns adds 77 µs of tlbi per 1 GiB unmapped on d05 (513 hyp calls × 150 ns).
    Per phase that is past 1% wherever a variant still flushes per entry (10 entries); on the
    Stage-2 total only where the flush dominates: P7's munmap (796 µs → 873 µs, +9.7%, 2 rows).
    v5.5 (CMO-bound, 143 ms) moves by 0.05%: flagged by the phase gate, not by the total's."""
    table = make_table(capsys, work)
    edit_machine(work, "hvc_ns: {value: 150", "hvc_ns: {value: 300")

    def worse(*gate: str) -> set[tuple[str, str]]:
        code, out, _ = run(capsys, "check", str(table), "--format", "json", *gate)
        doc = json.loads(out)
        assert code == (1 if doc["regressions"] else 0)
        return {(r["row"], r["variant"]) for r in doc["regressions"]}

    phases, stage2, e2e = worse(), worse("--gate", "stage2"), worse("--gate", "end-to-end")
    assert len(phases) == 10 and ("d05-mod.yaml · 1 GiB · 2M · exit", "v5.5") in phases
    assert stage2 == {("d05-mod.yaml · 1 GiB · 2M · munmap", "P7"),
                      ("d05-mod.yaml · 2 GiB · 2M · munmap", "P7")}
    assert e2e <= stage2  # the host's free only adds to the old value
    code, out, _ = run(capsys, "check", str(table), "--gate", "stage2")
    assert "gate stage2" in out and "(not gated)" in out
    code, _, err = run(capsys, "check", str(table), "--gate", "total")
    assert code == 2 and "--gate" in err


def test_markdown_comment_escapes_and_totals(work: Path, capsys: Any) -> None:
    table = make_table(capsys, work)
    edit_machine(work, "hvc_ns: {value: 150", "hvc_ns: {value: 300")
    code, out, _ = run(capsys, "check", str(table), "--format", "markdown")
    assert code == 1
    head = out.splitlines()[0]
    assert head.endswith(": regression")
    assert "no change" not in out.split("**Regression:**")[0]
    assert "<bundled>" not in out and "&lt;bundled&gt;" in out  # the bundled variants' path
    for v in ("v5.5", "P5", "P7", "v6.19"):
        assert f"total {v}: " in out, v
    # a cell's own '*' or '_' never turns into emphasis
    from s2teardown.render.tables import _md

    assert _md("a*b_c <x> | `d`") == "a\\*b\\_c &lt;x&gt; \\| \\`d\\`"
