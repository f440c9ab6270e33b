"""The command line: outputs, exit codes, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from s2teardown import cli

ROOT = Path(__file__).resolve().parents[1]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        cli.main(list(argv))
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def test_estimate_table_header_and_phases(capsys) -> None:
    code, out, err = run(capsys, "estimate", "--vm", "64G", "--machine", "d05.yaml")
    assert code == 0, err
    assert "64 GiB = 68,719,476,736 bytes, 2 MiB leaves" in out
    assert "40-bit IPA (auto), 3 levels" in out
    for phase in ("notifier", "walk", "clear", "cmo", "tlbi", "table_free", "resched", "final_flush"):
        assert phase in out
    assert "0 (P5)" in out and "elided by P5" in out
    assert "host free" in out and "outside Stage-2" in out
    assert "backing defaults to 2 MiB" in out


def test_estimate_json_is_machine_readable(capsys) -> None:
    code, out, _ = run(capsys, "estimate", "--vm", "64G", "--machine", "d05", "--format", "json")
    assert code == 0
    doc = json.loads(out)
    assert doc["format_version"] == 1 and doc["model_version"] == 7
    assert len(doc["inputs"]["machine"]["sha256"]) == 64
    assert doc["workload"]["vm_bytes"] == 68_719_476_736
    v55 = next(v for v in doc["variants"] if v["name"] == "v5.5")
    assert v55["events"]["tlb_flush_vmid_ipa"] == 32_832
    assert isinstance(v55["stage2_ns"], float) and v55["dominant_phase"] == "cmo"
    p5 = next(v for v in doc["variants"] if v["name"] == "P5")
    cmo = next(p for p in p5["phases"] if p["phase"] == "cmo")
    assert cmo["time_ns"] == 0 and cmo["note"] == "elided by P5"


def test_estimate_csv_and_markdown(capsys) -> None:
    code, out, _ = run(capsys, "estimate", "--vm", "1G", "--machine", "emag", "--variants", "v5.5,series",
                       "--format", "csv")
    assert code == 0
    rows = out.strip().splitlines()
    assert rows[0] == ("machine,event,vm_bytes,backing,memslots,granule_bytes,ipa_bits,variant,phase,"
                       "time_ns,share,assumed,note,what_if")
    assert len(rows) == 1 + 2 * 16  # 12 phases + 4 totals (Stage-2, host, end to end, wall), per variant
    assert rows[1].startswith("emag,exit,1073741824,2M,1,4096,40,v5.5,notifier,")
    code, out, _ = run(capsys, "estimate", "--vm", "1G", "--machine", "emag", "--format", "markdown")
    assert code == 0 and "| phase |" in out and "**Stage-2 total**" in out


def test_formulas(capsys) -> None:
    code, out, _ = run(capsys, "estimate", "--vm", "64G", "--variants", "v5.5", "--formulas")
    assert code == 0
    assert "1,073,741,824 × 8.5 ns" in out  # the CMO line count times the line price
    assert "price(dc_civac_line) =" in out


def test_output_file_written(tmp_path: Path, capsys) -> None:
    target = tmp_path / "e.json"
    code, out, _ = run(capsys, "estimate", "--vm", "2G", "--format", "json", "-o", str(target))
    assert code == 0 and out == ""
    assert json.loads(target.read_text())["workload"]["vm_bytes"] == 2 << 30
    assert [p.name for p in tmp_path.iterdir()] == ["e.json"]  # no temporary left behind


@pytest.mark.parametrize(
    ("argv", "pattern"),
    [
        (["estimate", "--vm", "64X"], "--vm: expected a size such as 64G"),
        (["estimate", "--vm", "64G", "--machine", "d5"], "did you mean 'd05'"),
        (["estimate", "--vm", "64G", "--variants", "P8"], "--variants: expected a variant name"),
        (["estimate", "--vm", "64G", "--range", "0:1G"], "--range: expected an --event that takes a range"),
        (["estimate", "--vm", "4G", "--event", "munmap", "--range", "3G:2G"], "range"),
        (["estimate", "--vm", "4G", "--backing", "2M:50,4K:40"], "--backing: expected percentages summing to 100"),
        (["estimate", "--vm", "4G", "--ipa-bits", "52"], "--ipa-bits: expected auto or a whole number 32..48"),
        (["estimate", "--vm", "4G", "--placement", "0.5,0.5,0.5"], "--placement"),
        (["estimate", "--vm", "4G", "--mapped", "1.5"], "--mapped: expected a fraction"),
        (["estimate", "--vm", "4G", "--mapped", "nan"], "--mapped"),
        (["estimate"], "--vm: expected exactly one of --vm SIZE or --scenario FILE"),
        (["estimate", "--vm", "4G", "--format", "xml"], "--format: expected one of table, json, csv, markdown, got 'xml'"),
        (["frobnicate"], "expected a command (calibrate"),
    ],
)
def test_bad_usage_exits_2_with_one_line(capsys, argv: list[str], pattern: str) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert pattern in err
    assert "Traceback" not in err


def test_bad_machine_file_names_file_line_field(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "m.yaml"
    text = (ROOT / "configs/machines/d05.yaml").read_text().replace("  sockets:", "  sokets:")
    bad.write_text(text)
    code, _, err = run(capsys, "estimate", "--vm", "1G", "--machine", str(bad))
    assert code == 2
    line = next(i for i, s in enumerate(text.splitlines(), 1) if "sokets" in s)
    assert f"{bad}:{line}: topology.sokets" in err and "did you mean 'sockets'" in err
    assert len(err.strip().splitlines()) == 1


def test_internal_error_exits_70(monkeypatch, capsys) -> None:
    import s2teardown.features.estimate as api

    def boom(*a, **k):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(api, "estimate", boom)
    code, _, err = run(capsys, "estimate", "--vm", "1G")
    assert code == 70 and "internal error" in err and "--debug" in err and "Traceback" not in err
    code, _, err = run(capsys, "--debug", "estimate", "--vm", "1G")
    assert code == 70 and "Traceback" in err


def test_interrupt_exits_130(monkeypatch, capsys) -> None:
    import s2teardown.features.estimate as api

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "estimate", interrupted)
    code, _, err = run(capsys, "estimate", "--vm", "1G")
    assert code == 130 and "Traceback" not in err


def test_closed_pipe_exits_0_quietly() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run(
        f"{sys.executable} -m s2teardown estimate --vm 64G --format csv | head -1",
        shell=True, capture_output=True, text=True, env=env, cwd=ROOT,
    )
    assert p.stdout.startswith("machine,event,vm_bytes")
    assert "Traceback" not in p.stderr and "Broken pipe" not in p.stderr
    r = subprocess.Popen([sys.executable, "-m", "s2teardown", "estimate", "--vm", "64G", "--format", "json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    assert r.stdout is not None and r.stderr is not None
    r.stdout.read(10)
    r.stdout.close()
    err = r.stderr.read().decode()
    assert r.wait() == 0
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_help_and_version_do_not_import_numpy() -> None:
    for flag in ("--help", "--version"):
        code = (
            "import sys\nfrom s2teardown.cli import main\n"
            f"try:\n    main(['{flag}'])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
            "assert 'numpy' not in sys.modules, 'numpy imported'\n"
            "assert 's2teardown.core.model' not in sys.modules\n"
        )
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert p.returncode == 0, p.stderr


def test_machines_and_variants_commands(capsys) -> None:
    code, out, _ = run(capsys, "machines", "list")
    assert code == 0 and "d05" in out and "thunderx" in out
    code, out, _ = run(capsys, "machines", "show", "d05")
    assert code == 0 and "interconnect_latency_ns" in out
    code, out, _ = run(capsys, "machines", "validate", str(ROOT / "configs/machines/emag.yaml"))
    assert code == 0 and "ok" in out
    code, out, _ = run(capsys, "machines", "schema")
    assert code == 0 and json.loads(out)["$schema"].startswith("https://json-schema.org")
    code, out, _ = run(capsys, "variants", "list")
    assert code == 0 and "P7 (= series)" in out
    code, out, _ = run(capsys, "variants", "show", "P5")
    assert code == 0 and "final_flush" in out
    code, out, _ = run(capsys, "variants", "schema")
    assert code == 0 and "variants" in json.loads(out)["properties"]


def test_explain_tree_and_json(capsys) -> None:
    code, out, _ = run(capsys, "explain", "--vm", "64G", "--variants", "v5.5")
    assert code == 0
    assert "kvm_tlb_flush_vmid_ipa -> __kvm_tlb_flush_vmid_ipa  ×32,832" in out
    assert "hvc ×32,832 @ 150 ns" in out  # nVHE D05: one HVC per flush call
    code, out, _ = run(capsys, "explain", "--vm", "64G", "--machine", "graviton3", "--variants", "v5.5",
                       "--format", "json")
    tree = json.loads(out)["trees"][0]
    tlbi = next(c for c in tree["children"] if c["label"] == "tlbi")
    ops = {o["label"]: o["count"] for o in tlbi["children"][0]["children"]}
    assert "hvc" not in ops  # VHE: no HVC
    assert ops["tlbi_is"] == 2 * 32_832
    cmo = next(c for c in tree["children"] if c["label"] == "cmo")
    assert cmo["time_ns"] == 0 and cmo["note"] == "no CMO: S2FWB hardware"


def test_kernel_selects_mainline_variant(capsys) -> None:
    code, out, _ = run(capsys, "estimate", "--vm", "4G", "--kernel", "6.8", "--kernel", "6.6.47",
                       "--kernel", "5.9", "--format", "json")
    assert code == 0
    assert [v["name"] for v in json.loads(out)["variants"]] == ["v6.6", "v6.9", "v5.9"]
    code, _, err = run(capsys, "estimate", "--vm", "4G", "--kernel", "4.19")
    assert code == 2 and "--kernel: expected a kernel version from 5.5 on" in err


def test_scenario_estimate(capsys) -> None:
    code, out, _ = run(capsys, "estimate", "--scenario", "qemu-virt", "--format", "json")
    assert code == 0
    doc = json.loads(out)
    assert doc["workload"]["scenario"]["name"] == "qemu-virt"
    assert len(doc["workload"]["scenario"]["sha256"]) == 64
    code, _, err = run(capsys, "estimate", "--scenario", "qemu-virt", "--backing", "4K")
    assert code == 2 and "--backing: expected no workload flag with --scenario" in err


def test_estimate_samples_and_sensitivity(capsys) -> None:
    code, out, _ = run(capsys, "estimate", "--vm", "4G", "--variants", "v5.5,series", "--samples", "2000",
                       "--seed", "7", "--sensitivity", "--format", "json")
    assert code == 0
    doc = json.loads(out)
    mc = doc["samples"]
    assert mc["seed"] == 7 and mc["samples"] == 2000
    for v in mc["variants"]:
        for ph in v["phases"].values():
            assert ph["p5_ns"] <= ph["p50_ns"] <= ph["p95_ns"]
    assert {v["name"] for v in doc["sensitivity"]["variants"]} == {"v5.5", "P7"}
    code, out2, _ = run(capsys, "estimate", "--vm", "4G", "--variants", "v5.5,series", "--samples", "2000",
                        "--seed", "7", "--format", "json")
    assert json.loads(out2)["samples"] == mc  # a fixed seed reproduces the draw
    code, _, err = run(capsys, "estimate", "--vm", "4G", "--seed", "3")
    assert code == 2 and "--seed: expected --samples N with --seed" in err


def test_grid_aligns_columns() -> None:
    """The estimate table's layout: first column left, others right, two spaces between."""
    from rich.text import Text

    from s2teardown.render.table import grid

    t = grid(["phase", "v5.5", "P5"], [["cmo", "9.13 s*", Text("0 (P5)", style="green")],
                                        ["Stage-2 total", "9.18 s", "1.37 ms"]])
    lines = t.plain.split("\n")
    assert lines == [
        "phase             v5.5       P5",
        "cmo            9.13 s*   0 (P5)",
        "Stage-2 total   9.18 s  1.37 ms",
    ]
    assert t.no_wrap
    assert any(span.style == "bold" for span in t.spans)  # the header
    assert any(span.style == "green" for span in t.spans)  # a cell keeps its style


def test_set_is_a_what_if_marked_in_every_view(capsys) -> None:
    """--set replaces one machine value; the tlbi phase scales with the hyp-call price it sets,
    and every format says the machine was overridden."""
    base = ("estimate", "--vm", "1G", "--machine", "d05", "--variants", "v5.5", "--backing", "4K")
    _, out, _ = run(capsys, *base, "--format", "json")
    plain = json.loads(out)
    _, out, _ = run(capsys, *base, "--set", "prices.hvc=1000", "--format", "json")
    doc = json.loads(out)
    assert doc["inputs"]["machine"]["what_if"] == ["prices.hvc = 1000.0 (was derived)"]
    assert any("what-if (--set) on d05" in a for a in doc["assumptions"])
    n_hvc = plain["variants"][0]["operations"]["hvc"]
    tlbi = {d["phase"]: d["time_ns"] for d in doc["variants"][0]["phases"]}["tlbi"]
    tlbi0 = {d["phase"]: d["time_ns"] for d in plain["variants"][0]["phases"]}["tlbi"]
    assert n_hvc > 0 and tlbi > tlbi0  # hvc at 1000 ns instead of the derived price
    _, out, _ = run(capsys, *base, "--set", "prices.hvc=1000", "--format", "csv")
    assert out.splitlines()[1].endswith("prices.hvc = 1000.0 (was derived)")
    _, out, _ = run(capsys, *base, "--set", "prices.hvc=1000", "--format", "markdown")
    assert "what-if (--set) on d05" in out
    _, out, _ = run(capsys, *base, "--set", "prices.hvc=1000")
    assert "what-if (--set) on d05: prices.hvc = 1000.0 (was derived)" in out
    code, _, err = run(capsys, *base, "--set", "nope=1")
    assert code == 2 and err.startswith("s2teardown: error: --set: expected a parameter")


def test_errors_blame_the_flag_that_is_wrong(capsys) -> None:
    code, _, err = run(capsys, "estimate", "--vm", "1M")
    assert code == 2 and err.startswith("s2teardown: error: --vm: expected a whole number of 2 MiB leaves")
    code, _, err = run(capsys, "estimate", "--vm", "1G", "--backing", "64K")
    assert code == 2 and "--backing: expected leaf sizes the 4 KiB granule maps (4K, 2M, 1G), got 64K" in err
    code, _, err = run(capsys, "estimate", "--vm", "1G", "--machine", "rpi4", "--placement", "0.5,0,0.5")
    assert code == 2 and "--placement: expected no remote-socket share on rpi4, which has one socket" in err
    code, _, err = run(capsys, "estimate", "--vm", "3G", "--memslots", "2", "--backing", "1G")
    assert code == 2 and err.startswith("s2teardown: error: --memslots: expected memslots that each hold whole 1 GiB")


def test_output_extension_picks_the_format(tmp_path: Path, capsys) -> None:
    base = ("estimate", "--vm", "1G", "--variants", "v5.5")
    for name, check in (("e.json", lambda t: json.loads(t)["command"] == "estimate"),
                        ("e.csv", lambda t: t.startswith("machine,event,vm_bytes")),
                        ("e.md", lambda t: "| phase |" in t),
                        ("e.txt", lambda t: t.startswith("s2teardown estimate"))):
        code, _, err = run(capsys, *base, "-o", str(tmp_path / name))
        assert code == 0, err
        assert check((tmp_path / name).read_text()), name
    # --format wins over the extension
    code, _, _ = run(capsys, *base, "-o", str(tmp_path / "x.json"), "--format", "csv")
    assert code == 0 and (tmp_path / "x.json").read_text().startswith("machine,")


def test_set_on_sweep_and_plan(capsys) -> None:
    code, out, err = run(capsys, "sweep", "--vm", "1G", "--variants", "v5.5", "--set", "hvc_ns=300",
                         "--format", "json")
    assert code == 0 and any("hvc_ns = 300.0" in a for a in json.loads(out)["assumptions"])
    code, out, _ = run(capsys, "plan", "example", "--set", "hvc_ns=300", "--format", "json")
    assert code == 0 and any("hvc_ns = 300.0" in a for a in json.loads(out)["assumptions"])


def test_machines_show_formats_with_derived_prices(capsys) -> None:
    import yaml

    code, out, _ = run(capsys, "machines", "show", "d05", "--format", "json")
    doc = json.loads(out)
    assert code == 0 and doc["command"] == "machines show"
    m = doc["machine"]
    assert m["parameters"]["hvc_ns"]["value"] == 150 and m["parameters"]["hvc_ns"]["note"]
    prices = {p["op"]: p for p in m["derived_prices"]}
    # a local-only TLBI-free price checked by hand: the hyp call is hvc_ns itself on d05
    assert prices["hvc"]["ns"] == 150.0 and prices["hvc"]["from"] == "1·hvc_ns"
    code, out, _ = run(capsys, "machines", "show", "d05", "--format", "yaml", "--set", "hvc_ns=90")
    y = yaml.safe_load(out)
    assert code == 0 and y["what_if"] == ["hvc_ns = 90.0 (was 150.0)"]
    assert {p["op"]: p["ns"] for p in y["derived_prices"]}["hvc"] == 90.0


def test_hugetlb_backing(capsys) -> None:
    # docs/model.md §14.1: a hugetlbfs VMA of its own, zapped per huge PMD, back to the pool
    code, out, err = run(capsys, "estimate", "--vm", "4G", "--backing", "4K:50,hugetlb-2M:50",
                         "--event", "munmap", "--machine", "d05", "--variants", "v6.6", "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["workload"]["backing"] == [{"leaf_bytes": 4096, "percent": 50.0, "hugetlb": False},
                                          {"leaf_bytes": 2 << 20, "percent": 50.0, "hugetlb": True}]
    ev = doc["variants"][0]["events"]
    # [1G, 3G): 1,024 hugetlb pages; [3G, 5G): 524,288 pages, 1,024 PTE tables and the PMD tables
    # of [3G, 4G) and [4G, 5G); the PMD tables of [1G, 2G), [2G, 3G) (no PTE table under them)
    assert (ev["host_hugetlb_zap"], ev["host_hugetlb_free"], ev["host_pmd_zap"]) == (1024, 1024, 0)
    assert (ev["host_pte_zap"], ev["host_table_free"]) == (524_288, 1024 + 4)
    code, out, _ = run(capsys, "estimate", "--vm", "4G", "--backing", "hugetlb-2M", "--machine", "d05",
                       "--variants", "v6.6")
    assert code == 0 and "hugetlb 2 MiB leaves" in out
    code, out, _ = run(capsys, "estimate", "--vm", "4G", "--backing", "hugetlb-2M", "--event", "munmap",
                       "--machine", "d05", "--variants", "v6.6", "--format", "csv")
    assert code == 0 and ",hugetlb-2M," in out


@pytest.mark.parametrize(("args", "message"), [
    (("--backing", "hugetlb-2M", "--event", "munmap", "--range", "1M:2G"),
     "--range: expected OFFSET and SIZE multiples of 2 MiB with hugetlb backing"),
    (("--backing", "hugetlb-4K"), "--backing: expected hugetlb pages of a block size the 4 KiB granule maps"),
    (("--backing", "2M:50,hugetlb-2M:50"), "--backing: expected leaf size 2M given twice"),
])
def test_hugetlb_backing_refusals(capsys, args, message) -> None:
    code, out, err = run(capsys, "estimate", "--vm", "4G", *args, "--machine", "d05")
    assert code == 2 and err.startswith(f"s2teardown: error: {message}") and len(err.splitlines()) == 1
