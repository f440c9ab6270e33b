"""docs/variant-format.md's worked example, run as written, against figures worked by hand."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from click.testing import CliRunner

from s2teardown.cli import cli

DOC = Path(__file__).resolve().parents[1] / "docs" / "variant-format.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


def test_worked_example_runs_as_written_and_matches_the_hand_figures(tmp_path, monkeypatch) -> None:
    example = next(b for b in _blocks("yaml") if "name: clear-no-cmo" in b)
    (tmp_path / "clear-no-cmo.yaml").write_text(example, encoding="utf-8")
    command = next(b for b in _blocks("sh") if "--variants-file clear-no-cmo.yaml" in b)
    argv = shlex.split(command.replace("\\\n", " "))
    assert argv[0] == "s2teardown"
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(cli, argv[1:])
    assert r.exit_code == 0, r.output
    assert "P7 = v5.5" in r.stdout  # P7 leaves the clear kind alone
    r = CliRunner().invoke(cli, [*argv[1:], "--format", "json"])
    v = {e["name"]: e for e in json.loads(r.stdout)["variants"]}
    phases = {n: {p["phase"]: p["time_ns"] for p in e["phases"]} for n, e in v.items()}
    # the doc's arithmetic: 2^30/64 lines x 8.5 ns + 512 leaves x dsb sy 50 ns
    cmo = (1 << 30) // 64 * 8.5 + 512 * 50
    assert cmo == 142_631_936
    assert abs(phases["v5.5"]["cmo"] - cmo) < 1e-3 and phases["clear-no-cmo"]["cmo"] == 0
    # 300 + 10 + 513x10 + 513x10 + 513x20 + 513 x 1,510 + 300 ns
    rest = 300 + 10 + 513 * 10 + 513 * 10 + 513 * 20 + 513 * 1510 + 300
    assert rest == 795_760
    assert abs(v["clear-no-cmo"]["stage2_ns"] - rest) < 1e-3
    assert abs(v["v5.5"]["stage2_ns"] - (cmo + rest)) < 1e-3
    assert round(v["clear-no-cmo"]["speedup"]) == 180
    for name in ("v5.5", "clear-no-cmo"):  # nothing but cmo moves
        assert {p: t for p, t in phases[name].items() if p != "cmo"} == \
            {p: t for p, t in phases["P7"].items() if p != "cmo"}
