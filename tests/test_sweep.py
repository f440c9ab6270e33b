"""Sweeps (range syntax, long-form CSV, size cap, plots, progress) and side-by-side comparison."""

from __future__ import annotations

import csv
import io
import json
import struct
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from s2teardown import cli
from s2teardown.cli.sweep import progress_wanted
from s2teardown.core.vocabulary import PHASE_INDEX, PHASES, STAGE2_PHASES
from s2teardown.features.compare import Comparison
from s2teardown.features.sweep import MAX_ROWS, SWEEP_PHASES, parse_sizes, run_sweep, sweep_rows
from s2teardown.inputs.units import backing_label, short_size

G = 1 << 30
M = 1 << 20


def run(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        cli.main(list(argv))
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


# ---------------------------------------------------------------------------------------------
# range syntax


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("64G", [64 * G]),
        ("1G..1T:x2", [G << i for i in range(11)]),  # 1, 2, 4, ... 1024 GiB: 11 values
        ("1G..5G:x2", [G, 2 * G, 4 * G]),  # the end is included only if a step lands on it
        ("1G..4G:+1G", [G, 2 * G, 3 * G, 4 * G]),
        ("1G..2G:+768M", [G, G + 768 * M]),  # 1 GiB + 2·768 MiB = 2.5 GiB > 2 GiB
        ("512M..1.5G:x1.5", [512 * M, 768 * M, 1152 * M]),  # 1728 MiB > 1536 MiB
        ("4G..4G:x2", [4 * G]),
        ("1G,64G,1G", [G, 64 * G]),  # duplicates dropped, order kept
        ("64G, 1G..4G:+1G", [64 * G, G, 2 * G, 3 * G, 4 * G]),
        ("1G .. 4G : x2", [G, 2 * G, 4 * G]),
        ("2K..8K:X2", [2048, 4096, 8192]),
    ],
)
def test_parse_sizes(text: str, expected: list[int]) -> None:
    assert parse_sizes(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "4G..1G:x2",
        "1G..4G",
        "1G..4G:x1",
        "1G..4G:x0.5",
        "1G..4G:+0",
        "1G..4G:y2",
        "1G..4G:x",
        "lots",
        "1K..2K:x1.1",
        "0..4G:+1G",
        "1K..1P:+1K",
        "",
    ],
)
def test_parse_sizes_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="^expected"):
        parse_sizes(text)


def test_labels() -> None:
    assert short_size(2 * M) == "2M" and short_size(4096) == "4K" and short_size(G) == "1G"
    assert (
        short_size(1 << 40) == "1T" and short_size(1536 * M) == "1536M" and short_size(100) == "100"
    )
    assert backing_label(((2 * M, 100.0),)) == "2M"
    assert backing_label(((2 * M, 90.0), (4096, 10.0))) == "2M:90,4K:10"


def test_bad_range_is_one_line_exit_2(capsys) -> None:
    code, out, err = run(capsys, "sweep", "--vm", "4G..1G:x2")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("s2teardown: error: --vm: expected")


# ---------------------------------------------------------------------------------------------
# outputs


def test_csv_long_form_row_count_and_values(capsys) -> None:
    code, out, err = run(
        capsys,
        "sweep",
        "--vm",
        "1G..4G:x2",
        "--backing",
        "4K",
        "--backing",
        "2M",
        "--machine",
        "d05",
        "--machine",
        "emag",
        "--variants",
        "v5.5,P5",
        "--event",
        "exit",
        "--event",
        "munmap",
        "--format",
        "csv",
    )
    assert code == 0, err
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["machine", "vm_bytes", "backing", "event", "variant", "phase", "time_ns"]
    # 2 machines × 3 sizes × 2 backings × 2 events × 2 variants × 12 phases
    assert len(rows) - 1 == 2 * 3 * 2 * 2 * 2 * len(SWEEP_PHASES) == 576
    assert {r[1] for r in rows[1:]} == {str(G), str(2 * G), str(4 * G)}
    assert {r[2] for r in rows[1:]} == {"4K", "2M"} and {r[0] for r in rows[1:]} == {"d05", "emag"}
    # one point, against `estimate`
    pick = [
        r
        for r in rows[1:]
        if r[0] == "emag"
        and r[1] == str(2 * G)
        and r[2] == "4K"
        and r[3] == "munmap"
        and r[4] == "P5"
    ]
    assert [r[5] for r in pick] == list(SWEEP_PHASES)
    code, out, _ = run(
        capsys,
        "estimate",
        "--vm",
        "2G",
        "--machine",
        "emag",
        "--backing",
        "4K",
        "--event",
        "munmap",
        "--variants",
        "P5",
        "--format",
        "json",
    )
    doc = json.loads(out)
    want = {p["phase"]: p["time_ns"] for p in doc["variants"][0]["phases"]}
    assert {r[5]: float(r[6]) for r in pick} == pytest.approx(want, rel=1e-12)


def test_json_and_table(capsys) -> None:
    code, out, err = run(
        capsys, "sweep", "--vm", "1G,2G", "--variants", "v5.5,P5", "--format", "json"
    )
    assert code == 0, err
    doc = json.loads(out)
    assert doc["command"] == "sweep" and doc["axes"]["vm_bytes"] == [G, 2 * G]
    assert doc["axes"]["backings"] == ["2M"] and doc["baseline"] == "v5.5"
    assert len(doc["rows"]) == 2 * 2
    r = doc["rows"][1]  # 1 GiB, P5
    assert r["variant"] == "P5" and r["dominant_phase"] == "resched"
    assert r["stage2_ns"] == pytest.approx(
        sum(v for k, v in r["phases"].items() if k in STAGE2_PHASES)
    )
    assert r["end_to_end_ns"] == pytest.approx(r["stage2_ns"] + r["host_ns"])
    assert r["wall_ns"] == pytest.approx(r["end_to_end_ns"] + r["phases"]["wait"])
    code, out, err = run(capsys, "sweep", "--vm", "1G", "--variants", "v5.5,P5")
    assert code == 0 and "speedup vs v5.5" in out and "backing defaults to 2 MiB" in out


def test_size_cap_one_line_exit_2_before_any_work(capsys) -> None:
    # 1000 sizes × 2 machines × 4 events × 16 variants × 12 phases = 1,536,000 rows
    argv = ["sweep", "--vm", "1G..1000G:+1G", "--machine", "d05", "--machine", "emag"]
    for ev in ("exit", "munmap", "clear", "oom"):
        argv += ["--event", ev]
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "at most 1,000,000 rows" in err and "1,536,000" in err
    assert sweep_rows(2, 1000, 1, 4, 16) > MAX_ROWS


def test_help_documents_range_syntax_and_cap(capsys) -> None:
    code, out, _ = run(capsys, "sweep", "--help")
    assert code == 0
    flat = " ".join(out.split())
    assert f"at most {MAX_ROWS:,} output rows" in flat
    assert "A..B:xK" in flat and "A..B:+STEP" in flat and "comma list" in flat


def test_unlayoutable_point_is_named(capsys) -> None:
    code, _, err = run(capsys, "sweep", "--vm", "1M,4M", "--backing", "2M")
    assert code == 2 and "1 MiB with --backing 2M" in err and err.count("\n") == 1


def test_run_sweep_progress_counts_every_point_and_matches_shape() -> None:
    from s2teardown.inputs.machine import load_machine
    from s2teardown.inputs.variants import load_variants

    seen: list[int] = []
    vs = load_variants().select(["v5.5", "P5", "v6.6"])
    r = run_sweep(
        [load_machine("d05"), load_machine("grace")],
        vs,
        [G, 4 * G],
        [((2 * M, 100.0),), ((4096, 100.0),)],
        ("exit", "munmap"),
        progress=seen.append,
    )
    assert seen == [2 * 2 * 2, 2 * 2 * 2]  # one call per machine, all its points
    assert r.time_ns.shape == (2, 2, 2, 2, 3, len(PHASES))
    assert r.n_rows == sweep_rows(2, 2, 2, 2, 3)
    # grace has S2FWB: no CMO anywhere
    assert np.all(r.time_ns[1, ..., PHASE_INDEX["cmo"]] == 0)


# ---------------------------------------------------------------------------------------------
# progress bar


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def test_progress_only_on_a_terminal_and_not_quiet() -> None:
    assert progress_wanted(False, _Stream(True))
    assert not progress_wanted(True, _Stream(True))
    assert not progress_wanted(False, _Stream(False))
    assert not progress_wanted(False, object())


def test_no_progress_when_piped(capsys) -> None:
    code, out, err = run(capsys, "sweep", "--vm", "1G..8G:x2", "--format", "csv")
    assert code == 0 and out.startswith("machine,")
    assert err == ""  # stderr is not a terminal here: no bar, no escape codes


# ---------------------------------------------------------------------------------------------
# plots


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_plot_png_and_svg_are_valid(tmp_path: Path, capsys) -> None:
    pytest.importorskip("matplotlib")
    png, svg = tmp_path / "s.png", tmp_path / "s.svg"
    code, _, err = run(
        capsys,
        "sweep",
        "--vm",
        "1G..64G:x4",
        "--backing",
        "2M",
        "--backing",
        "4K",
        "--variants",
        "v5.5,P5",
        "--plot",
        str(png),
        "-q",
        "--format",
        "csv",
    )
    assert code == 0, err
    assert err == ""  # --quiet: no note
    w, h = _png_size(png.read_bytes())
    assert w > 100 and h > 100
    code, _, err = run(
        capsys, "sweep", "--vm", "4G", "--variants", "v5.5", "--plot", str(svg), "--format", "csv"
    )
    assert code == 0 and "plot written to" in err
    root = ET.parse(svg).getroot()
    assert root.tag.rsplit("}", 1)[-1] == "svg"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.png", "s.svg"]  # no temporaries


def test_plot_write_is_atomic(tmp_path: Path, monkeypatch, capsys) -> None:
    mfig = pytest.importorskip("matplotlib.figure")
    target = tmp_path / "p.png"
    target.write_bytes(b"old plot")

    def boom(self, fh, **kw) -> None:
        fh.write(b"\x89PNG half")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(mfig.Figure, "savefig", boom)
    code, _, err = run(
        capsys,
        "sweep",
        "--vm",
        "1G",
        "--variants",
        "v5.5",
        "--plot",
        str(target),
        "--format",
        "csv",
    )
    assert code == 70 and "disk on fire" in err
    assert target.read_bytes() == b"old plot"
    assert [p.name for p in tmp_path.iterdir()] == ["p.png"]


def test_plot_without_matplotlib_is_one_line_exit_2(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    code, out, err = run(capsys, "sweep", "--vm", "1G", "--plot", str(tmp_path / "x.png"))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "matplotlib" in err and "s2teardown[plot]" in err
    assert list(tmp_path.iterdir()) == []


def test_plot_needs_png_or_svg(tmp_path: Path, capsys) -> None:
    code, _, err = run(capsys, "sweep", "--vm", "1G", "--plot", str(tmp_path / "x.pdf"))
    assert code == 2 and "--plot: expected a file name ending in .png or .svg" in err


# ---------------------------------------------------------------------------------------------
# compare


def test_compare_by_hand_v55_vs_p5(capsys) -> None:
    """1 GiB of 2 MiB leaves at GPA 1 GiB on d05, exit (40-bit IPA, 3 levels, 4 KiB pages).

    Prices printed by `estimate --formulas`: dc_civac_line 8.5, dsb_sy 50, hvc 150, isb 10,
    sysreg_write 10, dsb_ishst 10, tlbi_is 610, dsb_ish 20, tlbi_vmall 3110, entry_visit 10,
    entry_clear 10, put_page 20, table_free 300, resched_point 20, notifier_call 300 ns.
    Counts: 512 blocks in one PMD table; 1,024 entry-level entries; 1,023 resched points.

    v5.5: cmo = 2^30/64 lines × 8.5 + 512 dsb sy × 50 = 142,606,336 + 25,600 = 142,631,936 ns
          tlbi = 513 flushes × (hvc 150 + 4 isb 40 + 5 sysreg 50 + dsb_ishst 10
                 + 2 × (tlbi_is 610 + dsb_ish 20)) = 513 × 1,510 = 774,630 ns   -> dominant: cmo
          (nVHE with the Cortex-A72's speculative-AT workaround: 2 ISBs and 2 TCR_EL1 writes more)
    P5:   walk = (1,024 + 512) × 10 = 15,360; clear = 513 × 10 + 513 × 20 = 15,390;
          table_free = 3 × 300 = 900; resched = 1,023 × 20 = 20,460; notifier 300;
          final_flush = 150 + 40 + 50 + 10 + 3,110 + 20 = 3,380        -> dominant: resched
    Differs most: cmo, by −142,631,936 ns (tlbi only −774,630).
    Host side (both): exit_mmap zaps 512 THPs at 10 + 10 + 20 ns = 20,480; frees them at
    2,000 ns and 512 deposited + 1 PMD + 1 PUD table pages at 300 ns: 1,024,000 + 154,200 =
    1,178,200; waits 2 SRCU grace periods of 100 µs (wall only).  Its TLB flushes (model
    version 6): the full-mm gather frees the PMD and PUD tables, one flush_tlb_mm at
    tlb_finish_mmu = dsb_ishst 10 + tlbi_is 610 + dsb_ish 20 = 640 ns in host_zap:
    20,480 + 640 = 21,120.
    """
    code, out, err = run(
        capsys,
        "compare",
        "--vm",
        "1G",
        "--machine",
        "d05",
        "--variants",
        "v5.5,P5",
        "--format",
        "json",
    )
    assert code == 0
    doc = json.loads(out)
    v55, p5 = doc["entries"]
    assert doc["reference"] == "v5.5" and [v55["label"], p5["label"]] == ["v5.5", "P5"]
    assert v55["phases"]["cmo"] == 142_631_936 and v55["phases"]["tlbi"] == 774_630
    assert p5["phases"] == {
        "notifier": 300,
        "memslots": 0,
        "walk": 15_360,
        "clear": 15_390,
        "cmo": 0,
        "tlbi": 0,
        "table_free": 900,
        "resched": 20_460,
        "final_flush": 3_380,
        "host_zap": 512 * 40 + 640,
        "host_free": 512 * 2000 + 514 * 300,
        "wait": 2 * 100_000,
    }
    assert p5["stage2_ns"] == 55_790  # 300 + 15,360 + 15,390 + 900 + 20,460 + 3,380
    assert p5["host_ns"] == v55["host_ns"] == 21_120 + 1_178_200
    assert p5["end_to_end_ns"] == 55_790 + 1_199_320 and p5["wall_ns"] == 1_255_110 + 200_000
    # v5.5's Stage-2: cmo + tlbi + P5's phases less its final flush = 143,458,976 ns
    assert v55["stage2_ns"] == 142_631_936 + 774_630 + 55_790 - 3_380 == 143_458_976
    assert p5["end_to_end_speedup"] == pytest.approx((143_458_976 + 1_199_320) / 1_255_110)
    assert v55["dominant_phase"] == "cmo" and p5["dominant_phase"] == "resched"
    assert v55["differs_most"] is None
    assert p5["differs_most"] == {"phase": "cmo", "delta_ns": -142_631_936}
    assert doc["most_different_phase"] == {"phase": "cmo", "spread_ns": 142_631_936}
    assert p5["speedup"] == pytest.approx(v55["stage2_ns"] / 55_790)
    assert "1 GiB = 1,073,741,824 bytes, 2 MiB leaves" in doc["workload"]


def test_differs_most_is_not_the_dominant_phase() -> None:
    t = np.zeros((3, len(PHASES)))
    cmo, tlbi, walk = PHASE_INDEX["cmo"], PHASE_INDEX["tlbi"], PHASE_INDEX["walk"]
    t[0, [cmo, tlbi, walk]] = [100.0, 50.0, 5.0]
    t[1, [cmo, tlbi, walk]] = [100.0, 10.0, 5.0]  # same dominant phase, tlbi differs by 40
    t[2, [cmo, tlbi, walk]] = [90.0, 50.0, 15.0]  # cmo −10 and walk +10 tie: the earlier phase
    t[:, PHASE_INDEX["host_free"]] = [0.0, 1e9, 0.0]  # outside Stage-2: never "differs most"
    c = Comparison(("a", "b", "c"), ("m",) * 3, ("a", "b", "c"), t)
    assert c.dominant_phase == ["cmo", "cmo", "cmo"]
    assert c.differs_most() == [None, ("tlbi", -40.0), ("walk", 10.0)]
    assert c.most_different_phase() == ("tlbi", 40.0)
    assert list(c.speedup) == pytest.approx([1.0, 155 / 115, 155 / 155])


def test_compare_machines_table_and_markdown(capsys) -> None:
    code, out, err = run(
        capsys,
        "compare",
        "--vm",
        "64G",
        "--machine",
        "d05",
        "--machine",
        "emag",
        "--machine",
        "grace",
    )
    assert code == 0, err
    assert "speedup vs d05" in out and "differs most from d05" in out
    assert "cmo (−9.13 s)" in out  # grace (FWB) has no CMO at all
    code, out, _ = run(
        capsys,
        "compare",
        "--vm",
        "64G",
        "--machine",
        "d05",
        "--machine",
        "grace",
        "--format",
        "markdown",
    )
    assert code == 0 and "| phase | d05 | grace |" in out and "**Stage-2 total**" in out


def test_compare_kernels_and_baseline(capsys) -> None:
    code, out, _ = run(
        capsys, "compare", "--vm", "16G", "--kernel", "5.5", "--kernel", "6.8", "--format", "json"
    )
    assert code == 0
    assert [e["label"] for e in json.loads(out)["entries"]] == ["v5.5", "v6.6"]
    code, out, _ = run(
        capsys,
        "compare",
        "--vm",
        "16G",
        "--variants",
        "v5.5,P5",
        "--baseline",
        "P5",
        "--format",
        "json",
    )
    assert [e["label"] for e in json.loads(out)["entries"]] == ["P5", "v5.5"]


def test_compare_needs_two_entries(capsys) -> None:
    code, out, err = run(capsys, "compare", "--vm", "1G", "--variants", "v5.5")
    assert code == 2 and out == "" and "at least two entries" in err and err.count("\n") == 1


def test_sweep_takes_hugetlb_backings(capsys) -> None:
    # the same 2,048 huge PMDs zapped either way (docs/model.md §14.2); the hugetlb pages go back
    # to the pool (500 ns on d05) with no deposited table, the THPs to the buddy allocator
    # (2,000 ns) each with its deposited table (300 ns)
    code, out, err = run(capsys, "sweep", "--vm", "4G", "--backing", "2M", "--backing", "hugetlb-2M",
                         "--event", "munmap", "--machine", "d05", "--variants", "v6.6", "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["axes"]["backings"] == ["2M", "hugetlb-2M"]
    thp, huge = doc["rows"]
    assert huge["backing"] == "hugetlb-2M" and huge["phases"]["host_zap"] == thp["phases"]["host_zap"]
    assert thp["phases"]["host_free"] - huge["phases"]["host_free"] == 2048 * (2000 + 300 - 500)
