"""Capacity planning: arithmetic by hand, the concurrency adjustment, the cost on other cores,
fleet-file validation, the CLI, and the documented example script."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from s2teardown import cli
from s2teardown.core.vocabulary import OP_INDEX, OPS, PHASE_INDEX
from s2teardown.features.estimate import estimate
from s2teardown.features.plan import (
    REMOTE_TLBI_FRACTION,
    Concurrency,
    Fleet,
    fleet_from_text,
    load_fleet,
    plan,
    weighted_quantile,
)
from s2teardown.inputs.machine import load_machine
from s2teardown.inputs.units import parse_backing
from s2teardown.inputs.variants import load_variants
from s2teardown.inputs.workload import Workload

ROOT = Path(__file__).resolve().parents[1]
G = 1 << 30
M = 1 << 20


def run(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        cli.main(list(argv))
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


@pytest.fixture(scope="module")
def d05():
    return load_machine("d05")


@pytest.fixture(scope="module")
def v55_p5():
    return tuple(load_variants().select(["v5.5", "P5"]))


def one_size(machine, variants, *, rate=1200.0, size=64 * G, backing="2M", concurrency=1):
    return Fleet(
        machine=machine,
        variants=variants,
        teardowns_per_hour=rate,
        vm_sizes=((size, 1.0),),
        backings=((parse_backing(backing), 1.0),),
        concurrency=concurrency,
    )


# ---------------------------------------------------------------------------------------------
# arithmetic by hand


def test_one_size_fleet_by_hand(d05, v55_p5) -> None:
    """1,200 teardowns/h of 64 GiB (2 MiB leaves) on d05, concurrency 1.

    CPU-s/h = teardowns/h × (Stage-2 + host side) seconds of the one workload; cores = ÷ 3600.
    The host side of exit_mmap (docs/model.md §14): 32,768 THPs zapped at 10 + 10 + 20 ns,
    freed at 2,000 ns, and 32,768 deposited + 64 PMD + 1 PUD table pages freed at 300 ns,
    and (model version 6) one flush_tlb_mm for the 65 tables the full-mm gather frees
    (dsb ishst 10 + TLBI ASIDE1IS 610 + dsb ish 20 ns):
    1,310,720 + 65,536,000 + 9,849,900 + 640 = 76,697,260 ns.  Latency quantiles are wall times:
    plus 2 SRCU grace periods of 100 µs.
    v5.5 flushes 32,832 times (docs/model.md §5), 2 TLBI IPAS2E1IS each: 65,664 TLBIs of 610 ns,
    + the host's 1: 65,665; the other 63 PEs each pay 10 % of each: 65,665 × 610 × 0.1 × 63 ns
    per teardown.  P5 issues one VMALLS12E1IS of 3,110 ns and the host's 610 ns TLBI:
    (3,110 + 610) × 0.1 × 63 ns.
    """
    p = plan(one_size(d05, v55_p5))
    e = estimate(d05, list(v55_p5), Workload(vm_bytes=64 * G))
    own = e.breakdown.stage2_ns[0] + e.breakdown.host_ns[0]  # ns, per variant
    assert own[0] == pytest.approx(9_179_383_664 + 76_697_260)  # test_model: v5.5 on d05
    assert list(p.cpu_seconds_per_hour) == pytest.approx(list(1200 * own / 1e9), rel=1e-12)
    assert p.cpu_seconds_per_hour[0] == pytest.approx(1200 * 9.256080924, rel=1e-12)
    assert list(p.cores) == pytest.approx(list(1200 * own / 1e9 / 3600), rel=1e-12)
    # one size: every quantile is that teardown's wall time
    wall = own + 2 * 100_000
    assert list(p.p50_ns) == pytest.approx(list(wall)) and list(p.p99_ns) == pytest.approx(list(wall))
    assert p.saving_cpu_seconds_per_hour[0] == 0
    assert p.saving_cpu_seconds_per_hour[1] == pytest.approx(1200 * (own[0] - own[1]) / 1e9)
    assert p.saving_fraction[1] == pytest.approx(1 - own[1] / own[0])
    assert list(p.tlbis_per_teardown) == [65_665, 2]
    assert p.other_ns[0, 0] == pytest.approx(65_665 * 610 * 0.1 * 63)
    assert p.other_cpu_seconds_per_hour[0] == pytest.approx(302.820714)
    assert p.other_cpu_seconds_per_hour[1] == pytest.approx((3_110 + 610) * 0.1 * 63 * 1200 / 1e9)
    assert p.other_cores[0] == pytest.approx(302.820714 / 3600)


def test_weighted_quantile_by_hand() -> None:
    v = np.array([3.0, 1.0, 2.0])
    w = np.array([0.2, 0.5, 0.3])  # sorted: 1 (cum 0.5), 2 (cum 0.8), 3 (cum 1.0)
    assert float(weighted_quantile(v, w, 0.5)) == 1.0
    assert float(weighted_quantile(v, w, 0.8)) == 2.0
    assert float(weighted_quantile(v, w, 0.81)) == 3.0
    assert float(weighted_quantile(v, w, 0.99)) == 3.0
    two = np.stack([v, 10 - v], axis=1)  # second column: 7, 9, 8 -> sorted 7 (0.2), 8 (0.5), 9
    assert list(weighted_quantile(two, w, 0.5)) == [1.0, 8.0]
    assert float(weighted_quantile(v, np.array([0.0, 0.0, 1.0]), 0.5)) == 2.0  # zero weights skip


def test_mix_probabilities_and_quantiles(d05, v55_p5) -> None:
    """Sizes × backings, independent: 4 GiB ×3, 64 GiB ×1; 2M ×9, 4K ×1."""
    f = Fleet(
        machine=d05,
        variants=v55_p5,
        teardowns_per_hour=600,
        vm_sizes=((4 * G, 3.0), (64 * G, 1.0)),
        backings=((parse_backing("2M"), 9.0), (parse_backing("4K"), 1.0)),
    )
    p = plan(f)
    assert list(p.probability) == pytest.approx([0.675, 0.075, 0.225, 0.025])
    assert [(w.vm_bytes, w.backing[0][0]) for w in p.workloads] == [
        (4 * G, 2 * M),
        (4 * G, 4096),
        (64 * G, 2 * M),
        (64 * G, 4096),
    ]
    assert list(p.cpu_seconds_per_hour) == pytest.approx(
        list(600 * (p.probability @ p.own_ns) / 1e9)
    )
    own = p.own_ns[:, 0]
    # v5.5 times grow with size and with 4K leaves: 4G/2M (0.675) < 4G/4K < 64G/2M < 64G/4K
    assert own[0] < own[1] < own[2] < own[3]
    # latencies are wall times: every exit also waits 2 SRCU grace periods (100 µs on d05)
    wall = p.wall_ns[:, 0]
    assert list(wall - own) == pytest.approx([200_000] * 4)
    assert p.p50_ns[0] == wall[0]  # cum 0.675 >= 0.5
    assert p.p99_ns[0] == wall[3]  # cum 0.975 < 0.99
    assert p.phase_cpu_seconds_per_hour.sum(axis=1) == pytest.approx(p.cpu_seconds_per_hour)


# ---------------------------------------------------------------------------------------------
# concurrency


def test_concurrency_adjusts_prices_only(d05) -> None:
    base = np.arange(1.0, len(OPS) + 1.0)
    base[OP_INDEX["dc_civac_line"]] = 8.5
    c4 = Concurrency.of(d05, 4)  # slope 0.5, 2,000 lines/µs
    assert c4.tlbi_factor == 2.5 and c4.line_floor_ns == 2.0
    adj = c4.adjust(base)
    for op in OPS:
        i = OP_INDEX[op]
        if op in ("tlbi_is", "tlbi_vmall", "tlbi_range"):
            assert adj[i] == base[i] * 2.5
        else:
            assert adj[i] == base[i]  # the line floor (2 ns) is below 8.5 ns
    c64 = Concurrency.of(d05, 64)
    assert c64.tlbi_factor == 32.5 and c64.adjust(base)[OP_INDEX["dc_civac_line"]] == 32.0
    assert Concurrency.of(d05, 1).adjust(base).tolist() == base.tolist()
    assert base[OP_INDEX["tlbi_is"]] == OP_INDEX["tlbi_is"] + 1.0  # input untouched
    with pytest.raises(ValueError, match="^concurrency"):
        Concurrency.of(d05, 65)


def test_concurrency_recomputes_phase_times(d05, v55_p5) -> None:
    """64 teardowns at once: a DC CIVAC line costs max(8.5, 64 / 2000 µs) = 32 ns; TLBIs ×32.5."""
    p1 = plan(one_size(d05, v55_p5, size=G))
    p64 = plan(one_size(d05, v55_p5, size=G), concurrency=64)
    cmo, tlbi, ff = PHASE_INDEX["cmo"], PHASE_INDEX["tlbi"], PHASE_INDEX["final_flush"]
    assert p64.time_ns[0, 0, cmo] == 16_777_216 * 32 + 512 * 50
    # v5.5: 513 flushes, each 2 × 610 ns of TLBI; the rest of a flush (290 ns: hvc 150, 4 isb,
    # 5 sysreg writes with the A72's speculative-AT workaround, dsb ishst, 2 dsb ish) is unchanged
    assert p1.time_ns[0, 0, tlbi] == 513 * 1_510
    assert p64.time_ns[0, 0, tlbi] == 513 * (290 + 2 * 610 * 32.5)
    assert p64.time_ns[0, 1, ff] == 270 + 3_110 * 32.5  # P5's one VMALLS12E1IS (frame: 270 ns)
    # the host's one flush_tlb_mm at exit (model version 6) is a broadcast TLBI too: host_zap is
    # 512 THP zaps of 40 ns + dsb ishst 10 + TLBI 610 (× 32.5) + dsb ish 20
    hz = PHASE_INDEX["host_zap"]
    assert p1.time_ns[0, 0, hz] == 512 * 40 + 10 + 610 + 20
    assert p64.time_ns[0, 0, hz] == 512 * 40 + 10 + 610 * 32.5 + 20
    # everything else as at concurrency 1
    others = [i for i in range(len(PHASE_INDEX)) if i not in (cmo, tlbi, ff, hz)]
    assert p64.time_ns[..., others].tolist() == p1.time_ns[..., others].tolist()


def test_concurrency_one_equals_estimate(d05) -> None:
    vs = load_variants().variants
    p = plan(one_size(d05, vs, size=16 * G, backing="4K"))
    e = estimate(d05, list(vs), Workload(vm_bytes=16 * G, backing=((4096, 100.0),)))
    np.testing.assert_allclose(p.time_ns[0], e.breakdown.time_ns[0], rtol=1e-12)


@pytest.mark.parametrize("machine", ["d05", "emag", "grace", "altra-2s"])
def test_more_concurrency_is_never_cheaper(machine: str) -> None:
    m = load_machine(machine)
    vs = tuple(load_variants().variants)
    f = Fleet(
        machine=m,
        variants=vs,
        teardowns_per_hour=100,
        vm_sizes=((G, 1.0), (32 * G, 1.0)),
        backings=((parse_backing("2M"), 1.0), (parse_backing("4K"), 1.0)),
    )
    prev = None
    for n in sorted({1, 2, 3, 4, 8, 16, 31, 64, m.pes}):
        if n > m.pes:
            continue
        p = plan(f, concurrency=n)
        cur = (p.cpu_seconds_per_hour, p.p50_ns, p.p99_ns, p.time_ns)
        if prev is not None:
            for a, b in zip(prev, cur, strict=True):
                assert np.all(b >= a)
        prev = cur


# ---------------------------------------------------------------------------------------------
# the cost on other cores


def test_other_cores_proportional_to_tlbi_count(d05) -> None:
    vs = tuple(load_variants().select(["v5.5"]))  # only TLBI IPAS2E1IS (610 ns each)
    f = Fleet(
        machine=d05,
        variants=vs,
        teardowns_per_hour=3600,
        vm_sizes=tuple((s * G, 1.0) for s in (1, 2, 8, 64)),
        backings=((parse_backing("2M"), 1.0), (parse_backing("4K"), 1.0)),
    )
    p = plan(f)
    per_tlbi = p.other_ns[:, 0] / p.tlbi_count[:, 0]
    assert np.all(p.tlbi_count[:, 0] > 0)
    assert per_tlbi.tolist() == pytest.approx([REMOTE_TLBI_FRACTION * 610 * 63] * len(per_tlbi))
    # linear in the fraction; zero with 0; unchanged by concurrency (each TLBI reaches each PE once)
    p2 = plan(f, remote_tlbi_fraction=0.25)
    np.testing.assert_allclose(p2.other_ns, p.other_ns * 2.5, rtol=1e-12)
    assert not plan(f, remote_tlbi_fraction=0.0).other_ns.any()
    assert plan(f, concurrency=32).other_ns.tolist() == p.other_ns.tolist()
    # and it is reported apart from the own cost
    assert (
        p.cpu_seconds_per_hour.tolist()
        == plan(f, remote_tlbi_fraction=0.5).cpu_seconds_per_hour.tolist()
    )


def test_other_cores_by_pe_count() -> None:
    """Same TLBI count, other machines: (PEs − 1) × the machine's TLBI price × fraction."""
    vs = tuple(load_variants().select(["v5.5"]))
    for name in ("emag", "rpi4"):
        m = load_machine(name)
        p = plan(one_size(m, vs, size=G))
        price = float(p.base_prices[OP_INDEX["tlbi_is"]])
        assert p.other_ns[0, 0] == pytest.approx(p.tlbi_count[0, 0] * price * 0.1 * (m.pes - 1))


# ---------------------------------------------------------------------------------------------
# fleet files


FLEET = """\
schema_version: 1
name: t
machine: d05
variants: [v5.5, P5]
teardowns_per_hour: 100
concurrency: 2
vm_sizes:
  - {vm_bytes: 1073741824, weight: 1}
"""


def test_fleet_file_minimal_and_bundled() -> None:
    f = fleet_from_text(FLEET, "t.yaml")
    assert f.name == "t" and f.concurrency == 2 and [v.name for v in f.variants] == ["v5.5", "P5"]
    assert f.backings == ((((2 * M, 100.0),), 1.0),)
    ex = load_fleet("example")
    assert ex.machine.name == "d05" and ex.teardowns_per_hour == 1200
    assert ex.backings[2][0] == ((2 * M, 90.0), (4096, 10.0))
    assert plan(ex).probability.sum() == pytest.approx(1.0)
    by_path = load_fleet(ROOT / "configs" / "fleets" / "example.yaml")
    assert by_path.vm_sizes == ex.vm_sizes


def test_fleet_kernel_and_baseline() -> None:
    text = FLEET.replace("variants: [v5.5, P5]", 'kernel: ["5.5", "6.8"]\nbaseline: v6.6')
    f = fleet_from_text(text, "t.yaml")
    assert [v.name for v in f.variants] == ["v5.5", "v6.6"] and f.baseline == 1
    p = plan(f)
    assert p.saving_cpu_seconds_per_hour[1] == 0


@pytest.mark.parametrize(
    ("change", "line", "pattern"),
    [
        (
            ("teardowns_per_hour: 100", "teardowns_per_hour: 100\nconcurency: 2"),
            6,
            r"concurency: expected a fleet field, got unknown key 'concurency' .*did you mean 'concurrency'",
        ),
        (
            ("variants: [v5.5, P5]", "kernel: 6.8"),
            4,
            r"kernel: expected a kernel version as a string.*quote it",
        ),
        (("variants: [v5.5, P5]", "variants: [v5.5, P9]"), 4, r"variants: expected a variant name"),
        (
            ("machine: d05", "machine: d06"),
            3,
            r"machine: expected an existing file or a bundled machine",
        ),
        (
            ("concurrency: 2", "concurrency: 65"),
            6,
            r"concurrency: expected at most the 64 PEs of d05",
        ),
        (("concurrency: 2", "concurrency: 0"), 6, r"concurrency: expected a whole number >= 1"),
        (("weight: 1}", "weight: -1}"), 8, r"vm_sizes\[0\]\.weight: expected a finite number in \[0, 1e\+12\]"),
        (("vm_bytes: 1073741824", "vm_bytes: 1G"), 8, r"vm_sizes\[0\]\.vm_bytes: .*plain bytes"),
        (
            ("vm_bytes: 1073741824", "vm_bytes: 1048576"),
            8,
            r"vm_sizes\[0\]\.vm_bytes: expected a VM every backing",
        ),
        (
            ("teardowns_per_hour: 100", "teardowns_per_hour: lots"),
            5,
            r"teardowns_per_hour: expected a finite number",
        ),
        (("concurrency: 2", "concurrency: 2\nevent: exti"), 7, r"event: .*did you mean 'exit'"),
        (
            (
                "concurrency: 2",
                "concurrency: 2\nbackings:\n"
                "  - {mix: [{leaf_bytes: 2097152, percent: 90}], weight: 1}",
            ),
            8,
            r"backings\[0\]\.mix: expected percentages summing to 100, got 90",
        ),
        (
            (
                "concurrency: 2",
                "concurrency: 2\nbackings:\n  - {leaf_bytes: 4096, mix: [], weight: 1}",
            ),
            8,
            r"backings\[0\]: expected exactly one of leaf_bytes or mix",
        ),
        (("schema_version: 1", "schema_version: 2"), 1, r"schema_version: expected 1, got 2"),
    ],
)
def test_fleet_errors_name_file_and_line(
    change, line: int, pattern: str, tmp_path: Path, capsys
) -> None:
    f = tmp_path / "fleet.yaml"
    f.write_text(FLEET.replace(*change))
    code, out, err = run(capsys, "plan", str(f))
    assert code == 2 and out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"s2teardown: error: {f}:{line}: "), err
    assert re.search(pattern, err), err


def test_fleet_missing_required_key(capsys, tmp_path: Path) -> None:
    f = tmp_path / "fleet.yaml"
    f.write_text(FLEET.replace("teardowns_per_hour: 100\n", ""))
    code, _, err = run(capsys, "plan", str(f))
    assert code == 2 and "teardowns_per_hour: expected teardowns_per_hour (required)" in err


def test_fleet_machine_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "hosts").mkdir()
    (tmp_path / "hosts" / "mine.yaml").write_text(
        (ROOT / "configs" / "machines" / "emag.yaml").read_text()
    )
    (tmp_path / "f.yaml").write_text(FLEET.replace("machine: d05", "machine: hosts/mine.yaml"))
    assert load_fleet(tmp_path / "f.yaml").machine.name == "emag"


# ---------------------------------------------------------------------------------------------
# the command


def test_plan_cli_table_json_markdown(capsys) -> None:
    code, out, err = run(capsys, "plan", "example")
    assert code == 0, err
    for text in (
        "own CPU-s/h",
        "cores",
        "p99",
        "saving vs v5.5",
        "other cores CPU-s/h",
        "(baseline)",
        "no queueing model",
        "broadcast TLBI × 2.5",
    ):
        assert text in out
    code, out, _ = run(capsys, "plan", "example", "--format", "json", "--concurrency", "8")
    doc = json.loads(out)
    assert doc["command"] == "plan" and doc["concurrency"]["n"] == 8
    assert doc["concurrency"]["tlbi_factor"] == 4.5
    v = {r["variant"]: r for r in doc["variants"]}
    assert v["P5"]["saving_cpu_seconds_per_hour"] > 0 and v["v5.5"]["saving_fraction"] == 0
    assert sum(w["probability"] for w in doc["workloads"]) == pytest.approx(1.0)
    code, out, _ = run(capsys, "plan", "example", "--format", "markdown")
    assert code == 0 and "| variant | own CPU-s/h |" in out


@pytest.mark.parametrize(
    ("argv", "pattern"),
    [
        (["--concurrency", "0"], "--concurrency: expected a whole number of teardowns in 1..64"),
        (
            ["--remote-tlbi-fraction", "2"],
            "--remote-tlbi-fraction: expected a fraction in [0, 1], got 2.0",
        ),
    ],
)
def test_plan_cli_bad_overrides(argv: list[str], pattern: str, capsys) -> None:
    code, out, err = run(capsys, "plan", "example", *argv)
    assert code == 2 and out == "" and pattern in err and err.count("\n") == 1


def test_plan_unknown_fleet(capsys) -> None:
    code, _, err = run(capsys, "plan", "exmaple")
    assert code == 2 and "FLEET: expected an existing file or a bundled fleet name (example)" in err
    assert "did you mean 'example'?" in err


# ---------------------------------------------------------------------------------------------
# the documented example script


def test_example_capacity_script_runs_and_agrees(tmp_path: Path, d05, v55_p5) -> None:
    script = ROOT / "docs" / "examples" / "capacity.py"
    # the package under test (this checkout), not whichever one the interpreter has installed
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=300, env=env
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "600 teardowns/h on d05 (64 PEs)"
    assert lines[1].split() == ["variant", "N", "cores", "p99", "other", "cores"]
    f = Fleet(
        machine=d05,
        variants=v55_p5,
        teardowns_per_hour=600,
        vm_sizes=((4 * G, 3.0), (64 * G, 1.0)),
        backings=((parse_backing("2M"), 9.0), (parse_backing("4K"), 1.0)),
    )
    rows = [line.split() for line in lines[2:6]]
    for n, chunk in ((1, rows[:2]), (8, rows[2:])):
        p = plan(f, concurrency=n)
        for v, row in enumerate(chunk):
            assert row[0] == p.variants[v] and int(row[1]) == n
            assert float(row[2]) == pytest.approx(float(p.cores[v]), abs=5e-4)
            assert float(row[-1]) == pytest.approx(float(p.other_cores[v]), abs=5e-4)
    # v5.5 needs more cores at concurrency 8 than at 1; P5 barely changes
    assert float(rows[2][2]) > float(rows[0][2])
    p = plan(f)
    assert f"{p.saving_cpu_seconds_per_hour[1]:,.0f} CPU-s/h" in lines[6]
    doc = json.loads(lines[7].removeprefix("json: "))
    assert doc == {r["variant"]: round(r["cpu_seconds_per_hour"], 3) for r in p.rows()}


def test_api_doc_names_every_public_function() -> None:
    import s2teardown.api as api
    import s2teardown.features.plan as plan_mod

    text = (ROOT / "docs" / "api.md").read_text()
    for name in (
        "load_machine",
        "load_variants",
        "Workload",
        "estimate",
        "evaluate_workloads",
        "Breakdown",
        "time_ns",
        "stage2_ns",
        "host_free_ns",
        "dominant",
        "speedup",
        *[n for n in plan_mod.__all__ if not n.isupper()],
        "parse_sizes",
        "run_sweep",
        "plot_sweep",
        "compare_estimates",
        "select_variants",
    ):
        assert name in text, name
        if name not in ("time_ns", "stage2_ns", "host_free_ns", "dominant", "speedup"):
            assert name in api.__all__, f"{name} is documented but not in s2teardown.api"
