"""The built wheel installs into a fresh venv and runs the documented command from anywhere."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_installs_and_runs_from_another_directory(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)],
                   check=True, capture_output=True, cwd=tmp_path)
    wheels = list(dist.glob("s2teardown-*.whl"))
    assert len(wheels) == 1
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "--quiet", str(wheels[0])], check=True,
                   capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    exe = env_dir / "bin" / "s2teardown"
    p = subprocess.run([str(exe), "estimate", "--vm", "64G", "--machine", "d05.yaml", "--format", "json"],
                       capture_output=True, text=True, cwd=elsewhere)
    assert p.returncode == 0, p.stderr
    assert '"vm_bytes": 68719476736' in p.stdout
    # the bundled files came from inside the installed package, not from this checkout
    assert "site-packages/s2teardown/configs/machines/d05.yaml" in p.stdout
    p = subprocess.run([str(py), "-m", "s2teardown", "--version"], capture_output=True, text=True,
                       cwd=elsewhere)
    assert p.returncode == 0 and "0.1.0" in p.stdout
    typed = subprocess.run([str(py), "-c", "import s2teardown, pathlib; "
                            "print((pathlib.Path(s2teardown.__file__).parent / 'py.typed').exists())"],
                           capture_output=True, text=True, cwd=elsewhere)
    assert typed.stdout.strip() == "True"
