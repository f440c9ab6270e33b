"""Every input refused with bounded resources (issue 16 part 6).

Each case runs ``s2teardown`` in a subprocess whose address space is limited to 1 GiB
(``resource.setrlimit(RLIMIT_AS)``): a reader that read ``/dev/zero`` or an 8 GiB sparse file
into memory, or a computation that grew with the square of the memslots, would die with
MemoryError (exit 70) instead of the one-line refusal (exit 2) asserted here.  A FIFO that hung
the reader would hit the subprocess's timeout.  The timeout is generous (a shared 2-core box):
the speed itself is a benchmark figure (`make bench`), never a test's assertion.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 1 << 30  # bytes of address space
TIMEOUT = 120  # seconds: only a hang (a FIFO read) gets near it
LONG = "a" * 5000

_CHILD = (
    "import resource, sys\n"
    "resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))\n"
    "from s2teardown import cli\n"
    "cli.main(sys.argv[1:])\n"
)


def limited(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``s2teardown ARGV`` under a 1 GiB address-space limit."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1",
           "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-c", _CHILD.format(limit=LIMIT), *argv],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=TIMEOUT,
                          stdin=subprocess.DEVNULL)


def refused(p: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("s2teardown: error: "), p.stderr[-2000:]
    assert "Traceback" not in p.stderr and p.stdout == ""
    assert len(p.stderr) < 1000, "a one-line error stays short"
    for n in needles:
        assert n in p.stderr, (n, p.stderr)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 GiB sparse files (no disk used), a FIFO, a table to diff against."""
    d = tmp_path_factory.mktemp("resources")
    for name in ("big.csv", "big.trace", "big.json", "big.yaml"):
        with open(d / name, "wb") as f:
            f.truncate(8 << 30)
    os.mkfifo(d / "fifo")
    (d / "x.json").write_text("{}\n")
    (d / "tiny.csv").write_text("vm,backing,event,variant,seconds\n"
                                "64G,2M,exit,v5.5,1e-308\n32G,2M,exit,v5.5,1e-308\n"
                                "16G,2M,exit,v5.5,0.5\n")
    return d


DEV_ZERO = {
    "check": (["check", "/dev/zero"], "a character device"),
    "diff": (["diff", "/dev/zero", "x.json"], "a character device"),
    "calibrate": (["calibrate", "--machine", "d05", "/dev/zero"], "a character device"),
    "import-trace": (["import-trace", "/dev/zero"], "a character device"),
    "machine": (["estimate", "--vm", "1G", "--machine", "/dev/zero"], "a character device"),
}


@pytest.mark.parametrize("name", sorted(DEV_ZERO))
def test_dev_zero_is_refused_unread(name: str, work: Path) -> None:
    argv, needle = DEV_ZERO[name]
    refused(limited(argv, work), "/dev/zero", needle)


SPARSE = {
    "check": (["check", "big.json"], "64 MiB"),
    "diff": (["diff", "big.json", "x.json"], "64 MiB"),
    "calibrate": (["calibrate", "--machine", "d05", "big.csv"], "16 MiB"),
    "import-trace": (["import-trace", "big.trace"], "256 MiB"),
    "machine": (["estimate", "--vm", "1G", "--machine", "big.yaml"], "1 MiB"),
    "scenario": (["estimate", "--scenario", "big.yaml"], "1 MiB"),
}


@pytest.mark.parametrize("name", sorted(SPARSE))
def test_8_gib_sparse_file_is_refused_by_its_size(name: str, work: Path) -> None:
    argv, cap = SPARSE[name]
    refused(limited(argv, work), f"expected a file of at most {cap}", f"got {8 << 30} bytes")


FIFO = {
    "machine": ["estimate", "--vm", "1G", "--machine", "fifo"],
    "check": ["check", "fifo"],
    "calibrate": ["calibrate", "--machine", "d05", "fifo"],
    "import-trace": ["import-trace", "fifo"],
    "variants-file": ["estimate", "--vm", "1G", "--variants-file", "fifo"],
}


@pytest.mark.parametrize("name", sorted(FIFO))
def test_fifo_is_refused_without_hanging(name: str, work: Path) -> None:
    """Nobody writes the FIFO: a reader that opened it blocking would wait forever."""
    refused(limited(FIFO[name], work), "fifo: expected", "a FIFO")


NAMES = {
    "machine": ["estimate", "--vm", "1G", "--machine", LONG],
    "variant": ["estimate", "--vm", "1G", "--variants", LONG],
    "baseline": ["estimate", "--vm", "1G", "--baseline", LONG],
    "scenario": ["estimate", "--scenario", LONG],
    "fleet": ["plan", LONG],
    "spec": ["table", LONG],
    "table": ["check", LONG],
    "csv": ["calibrate", "--machine", "d05", LONG],
    "trace": ["import-trace", LONG],
    "machines show": ["machines", "show", LONG],
    "variants show": ["variants", "show", LONG],
    "output": ["estimate", "--vm", "1G", "-o", LONG],
    "path > PATH_MAX": ["estimate", "--vm", "1G", "--machine", "/".join(["d"] * 2100)],
    "name > NAME_MAX": ["estimate", "--vm", "1G", "--machine", "/tmp/" + "n" * 256 + ".yaml"],
}


@pytest.mark.parametrize("name", sorted(NAMES))
def test_over_long_name_or_path_is_one_line(name: str, work: Path) -> None:
    refused(limited(NAMES[name], work))


def test_subnormal_measurements_are_refused(work: Path) -> None:
    refused(limited(["calibrate", "--machine", "d05", "tiny.csv"], work), "tiny.csv:2: seconds")


def test_munmap_over_512_memslots_of_255_tib_fits_in_1_gib(work: Path) -> None:
    """Once 38 s, 5.8 GB and exit 70: the work over memslots is linear now (benchmark 3e)."""
    p = limited(["estimate", "--vm", "255T", "--backing", "4K:50,2M:50", "--memslots", "512",
                 "--event", "munmap-then-exit", "--range", "4K:254T", "--format", "json"], work)
    assert p.returncode == 0, p.stderr[-2000:]
    assert '"memslots": 512' in p.stdout


def test_the_limit_is_real(work: Path) -> None:
    """The child really is limited: allocating 2 GiB there fails."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = _CHILD.format(limit=LIMIT).replace("from s2teardown import cli\ncli.main(sys.argv[1:])\n",
                                               "bytearray(2 << 30)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=TIMEOUT)
    assert p.returncode != 0 and "MemoryError" in p.stderr
