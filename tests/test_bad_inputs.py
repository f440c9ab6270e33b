"""The bad-input corpus (tests/bad_inputs/, issue 7 part 1): every case, end to end.

Each file in tests/bad_inputs/ is one case (its header says the command line, the exit code and
the pattern of the one-line error; tests/bad_inputs/README.md describes the format).  Every
case must: exit with its code (2 bad input, 3 nothing comparable), write exactly one line on
stderr that matches its pattern, write nothing on stdout, show no traceback and leave no
temporary file behind.

The rules themselves are tested line by line at the library level (tests/test_yamlio.py,
test_machine.py, test_scenario.py, test_tables.py, test_calibrate.py, test_trace.py,
test_plan.py; each case's `see:` names them); this corpus checks that every family of bad input
reaches the user as the documented one line and exit code, through every reader and command.
"""

from __future__ import annotations

import builtins
import io
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from s2teardown import cli

CORPUS = Path(__file__).resolve().parent / "bad_inputs"
#: Size of the file a `setup: huge` case is padded to (above every input cap).
HUGE_BYTES = 20 * 1000 * 1000
KEYS = ("argv", "exit", "error", "setup", "input", "see", "xfail")
SETUPS = ("file", "directory", "missing", "unreadable", "huge", "fifo", "sparse")
#: Size of a `setup: sparse` file (a hole: no disk used; above every cap, far above memory).
SPARSE_BYTES = 8 << 30
#: `{long}` in a case's argv: a name far longer than any file system allows.
LONG = "n" * 5000


@dataclass(frozen=True)
class Case:
    name: str
    argv: str
    exit: int
    error: str
    setup: str
    input: str
    see: str
    xfail: str
    body: bytes


def parse_case(path: Path) -> Case:
    """A case file: ``#! key: value`` header lines, then the body (the input's bytes)."""
    raw = path.read_bytes()
    meta: dict[str, str] = {}
    pos = 0
    for line in raw.splitlines(keepends=True):
        if not line.startswith(b"#!"):
            break
        pos += len(line)
        key, sep, value = line[2:].decode("utf-8").strip().partition(":")
        key = key.strip()
        assert sep and key in KEYS, f"{path.name}: bad header line {line!r}"
        assert key not in meta or key == "see", f"{path.name}: {key} given twice"
        meta[key] = (meta[key] + "; " if key in meta else "") + value.strip()
    for key in ("argv", "exit", "error"):
        assert key in meta, f"{path.name}: no '#! {key}:' line"
    setup = meta.get("setup", "file")
    assert setup in SETUPS, f"{path.name}: setup {setup!r} is not one of {SETUPS}"
    return Case(
        name=path.name,
        argv=meta["argv"],
        exit=int(meta["exit"]),
        error=meta["error"],
        setup=setup,
        input=meta.get("input", path.name),
        see=meta.get("see", ""),
        xfail=meta.get("xfail", ""),
        body=raw[pos:],
    )


def corpus() -> list[Case]:
    return [parse_case(p) for p in sorted(CORPUS.iterdir()) if p.name != "README.md"]


def _params() -> list[Any]:
    out = []
    for c in corpus():
        marks = []
        if c.xfail:  # a known bug may warn on its way (numpy overflow): keep the summary quiet
            marks = [pytest.mark.xfail(strict=True, reason=c.xfail),
                     pytest.mark.filterwarnings("ignore::RuntimeWarning")]
        out.append(pytest.param(c, id=c.name, marks=marks))
    return out


def _deny_open(monkeypatch: pytest.MonkeyPatch, target: Path) -> None:
    """Opening ``target`` fails with EACCES (as root, chmod 000 would not stop a read)."""
    real_open = io.open
    denied = os.path.realpath(target)

    def fake_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(file, str | bytes | os.PathLike) and os.path.realpath(file) == denied:
            raise PermissionError(13, "Permission denied", os.fspath(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(io, "open", fake_open)
    monkeypatch.setattr(builtins, "open", fake_open)


def prepare(case: Case, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make the case's input in ``tmp``; returns its path."""
    target = tmp / case.input
    if case.setup == "directory":
        target.mkdir()
    elif case.setup == "missing":
        pass
    elif case.setup == "fifo":  # nobody writes it: a blocking open would hang the case
        os.mkfifo(target)
    elif case.setup == "sparse":
        with open(target, "wb") as f:
            f.write(case.body)
            f.truncate(SPARSE_BYTES)
    else:
        data = case.body
        if case.setup == "huge":
            pad = b"#" * 99 + b"\n"
            data += pad * ((HUGE_BYTES - len(data)) // len(pad) + 1)
        target.write_bytes(data)
        if case.setup == "unreadable":
            _deny_open(monkeypatch, target)
    return target


def expand(text: str, target: Path, tmp: Path, *, regex: bool) -> str:
    subst = {"{input}": str(target), "{tmp}": str(tmp), "{long}": LONG}
    for k, v in subst.items():
        text = text.replace(k, re.escape(v) if regex else v)
    return text


def run_case(case: Case, tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> tuple[int, str, str]:
    target = prepare(case, tmp, monkeypatch)
    argv = [expand(a, target, tmp, regex=False) for a in shlex.split(case.argv)]
    monkeypatch.chdir(tmp)
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    monkeypatch.undo()
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


@pytest.mark.parametrize("case", _params())
def test_bad_input(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    tmp = tmp_path / "work"
    tmp.mkdir()
    code, out, err = run_case(case, tmp, monkeypatch, capsys)
    target = tmp / case.input
    pattern = expand(case.error, target, tmp, regex=True)
    assert "Traceback" not in err, err
    assert code == case.exit, f"exit {code}, expected {case.exit}: {err}"
    assert err.endswith("\n") and err.count("\n") == 1, f"not one line on stderr: {err!r}"
    assert re.search(pattern, err.rstrip("\n")), f"{err.rstrip()!r} does not match {pattern!r}"
    assert out == "", f"stdout: {out!r}"
    left = [p.name for p in tmp.rglob("*") if p.name.endswith(".tmp")]
    assert not left, f"temporary files left behind: {left}"


def test_corpus_is_large_and_well_formed() -> None:
    cases = corpus()
    assert len(cases) >= 40, len(cases)
    for c in cases:
        assert c.exit in (2, 3), c.name
        assert c.error.startswith("^s2teardown: error: "), c.name
        re.compile(c.error)
        assert "{input}" in c.argv or c.setup == "file" and not c.body, c.name
    families = {c.setup for c in cases}
    assert families == set(SETUPS), families
    assert any(c.exit == 3 for c in cases)
