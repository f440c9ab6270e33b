"""The package layout is the architecture: imports point one way (README "Layout",
docs/architecture.md).  This walks every module's imports, those inside functions included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "s2teardown"

#: What each layer may import (besides itself, the standard library and third-party packages).
#: ``base`` is `s2teardown` (the version) and `s2teardown.errors`.
ALLOWED: dict[str, set[str]] = {
    "base": set(),
    "core": set(),
    "oracle": {"core"},
    "inputs": {"base", "core"},
    "features": {"base", "core", "inputs"},
    "render": {"base", "core", "inputs", "features"},
    "api": {"base", "core", "oracle", "inputs", "features", "render"},
    "cli": {"base", "core", "inputs", "features", "render"},
    "main": {"cli"},
}


def layer_of(module: str) -> str:
    parts = module.split(".")
    assert parts[0] == "s2teardown", module
    if len(parts) == 1 or parts[1] in ("errors", "__init__"):
        return "base"
    if parts[1] == "__main__":
        return "main"
    return parts[1]


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Every ``s2teardown`` module this file imports, with the line."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import (the layout uses absolute ones)"
            if node.module and node.module.split(".")[0] == "s2teardown":
                out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out.extend((node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "s2teardown")
    return out


MODULES = sorted(PKG.rglob("*.py"))


def test_every_module_is_in_a_layer() -> None:
    layers = {layer_of(module_name(p)) for p in MODULES}
    assert layers <= set(ALLOWED), layers - set(ALLOWED)
    top = sorted(p.name for p in PKG.glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "api.py", "errors.py"], top


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_point_one_way(path: Path) -> None:
    me = layer_of(module_name(path))
    bad = [f"{path.relative_to(PKG.parent)}:{line}: {me} imports {mod} ({layer_of(mod)})"
           for line, mod in imports_of(path)
           if layer_of(mod) != me and layer_of(mod) not in ALLOWED[me]]
    assert not bad, "\n".join(bad)


def test_the_check_catches_a_wrong_import(tmp_path: Path) -> None:
    """The walker is not vacuous: a core module importing the CLI is caught."""
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from s2teardown.cli.common import emit\n")
    assert imports_of(f) == [(2, "s2teardown.cli.common")]
    assert layer_of("s2teardown.cli.common") not in ALLOWED["core"]
