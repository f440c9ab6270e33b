"""Sources users can read: the machine files and docs cite what ships, and docs/hardware.md lists
every constant of every bundled machine with its tag (issue 15)."""

from __future__ import annotations

import re
from pathlib import Path

from s2teardown.inputs.machine.hardware import MARKER, TAG_OF_KIND, bundled_machines, rewrite

REPO = Path(__file__).resolve().parents[1]

#: Files a user reads: the package, its configs and docs, the README and the benchmarks.
SHIPPED = [p for d in ("s2teardown", "configs", "docs", "benchmarks", "tools")
           for p in sorted((REPO / d).rglob("*")) if p.is_file() and p.suffix in {".py", ".md", ".yaml", ".sh"}]
SHIPPED.append(REPO / "README.md")
#: Citations of the team's design notes or of paths beside the project, which users do not have.
OUTSIDE = re.compile(r"\.\./shared|/work/|\b(?:DOMAIN|HARDWARE|KERNELS|ARCHITECTURE)\.md\b|\bDOMAIN §")


def test_nothing_shipped_cites_a_path_outside_the_project() -> None:
    bad = [f"{p.relative_to(REPO)}:{n}: {line.strip()}"
           for p in SHIPPED for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
           # docs/validation.md names where `make validate-kernel` finds kernel packages: a build
           # input, not a citation
           if OUTSIDE.search(line) and not (p.name == "validation.md" and "kernels/" in line)]
    assert not bad, "\n".join(bad)


def test_every_machine_file_points_to_docs_hardware() -> None:
    for p in sorted((REPO / "configs" / "machines").glob("*.yaml")):
        head = p.read_text(encoding="utf-8").split("schema_version", 1)[0]
        assert "docs/hardware.md" in head or "docs/validation.md" in head, p.name


def test_hardware_doc_is_generated_from_the_machine_files() -> None:
    doc = (REPO / "docs" / "hardware.md").read_text(encoding="utf-8")
    assert MARKER in doc
    assert doc == rewrite(doc, bundled_machines()), (
        "docs/hardware.md is stale: python -m s2teardown.inputs.machine.hardware")


def test_hardware_doc_lists_every_constant_with_its_tag() -> None:
    doc = (REPO / "docs" / "hardware.md").read_text(encoding="utf-8").split(MARKER, 1)[1]
    # one hand-checked row: d05's hvc_ns is assumed (tag I), 80..400, as d05.yaml says
    assert "| parameters | `hvc_ns` | 150 | I | assumed | 80–400 | nVHE host->EL2 round trip, not published [I] |" in doc
    # and d05's sockets is sourced (tag S)
    assert "| topology | `sockets` | 2 | S | sourced: WikiChip Hi1616; hip07.dtsi |  |  |" in doc
    rows = 0
    for m in bundled_machines():
        section = doc.split(f"### {m.name}\n", 1)[1].split("\n### ", 1)[0]
        text = (REPO / "configs" / "machines" / f"{m.name}.yaml").read_text(encoding="utf-8")
        for group in ("topology", "features", "placement", "parameters", "prices"):
            for name, p in m.section(group).items():
                if re.search(rf"^\s+{name}:", text, re.M) is None:
                    continue  # a default
                assert f"| {group} | `{name}` |" in section and f"| {TAG_OF_KIND[p.kind]} |" in section, (m.name, name)
                rows += 1
    assert rows > 300
