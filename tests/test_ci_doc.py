"""docs/ci.md's quick start, followed literally in a fresh git repository (issue 15).

The test takes the shell block under "Quick start, in your repository" as written, runs it with
bash in an empty repository (the installed `s2teardown` on PATH), and checks what the doc says:
it exits 0, the table is where the doc puts it, and the check passes; then the workflow's report
step writes the pull-request comment.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def quick_start() -> str:
    text = (ROOT / "docs" / "ci.md").read_text(encoding="utf-8")
    section = text.split("## Quick start, in your repository", 1)[1]
    m = re.search(r"```sh\n(.*?)```", section, re.S)
    assert m, "no sh block in the quick start"
    return m.group(1)


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_quick_start_works_in_a_fresh_repository(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "s2teardown"
    exe.write_text(f"#!/bin/sh\nexec {sys.executable} -m s2teardown \"$@\"\n")
    exe.chmod(0o755)
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {**os.environ, "PATH": f"{bindir}:{os.environ.get('PATH', '')}", "PYTHONPATH": str(ROOT),
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True, env=env)
    script = "set -e\n" + quick_start()
    p = subprocess.run(["bash", "-c", script], cwd=repo, env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    table = json.loads((repo / "ci" / "stage2-costs.json").read_text())
    assert len(table["rows"]) == 4 and table["variants"] == ["v5.5", "P5", "v6.6"]
    assert "result: OK" in p.stdout
    tracked = subprocess.run(["git", "ls-files"], cwd=repo, env=env, capture_output=True, text=True)
    assert tracked.stdout.split() == ["ci/stage2-costs.json", "ci/stage2-spec.yaml"]
    # the workflow's step: the pull-request comment, written where the doc's job reads it
    p = subprocess.run(["bash", "-c", "s2teardown check ci/stage2-costs.json --format markdown "
                        "-o cost-report.md"], cwd=repo, env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    report = (repo / "cost-report.md").read_text()
    assert report.startswith("### s2teardown check: no change beyond tolerance")
    assert "total v6.6: " in report and "<bundled>" not in report
