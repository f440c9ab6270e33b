# s2teardown — every target sets itself up: it creates .venv and installs what it needs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-deep lint bench clean venv bytecode validate-kernel validate-kernel-quick

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,plot,fit]'
	touch $(STAMP)

# Byte-code of the package, as a regular (non-editable) install writes it: the environment may
# set PYTHONDONTWRITEBYTECODE, and compiling every module on each run would double the CLI's
# start-up (benchmark figure 4).  Redone when a module changes.
bytecode: $(STAMP)
	$(PY) -m compileall -q s2teardown

venv: $(STAMP)

demo: $(STAMP) bytecode
	$(VENV)/bin/s2teardown estimate --vm 64G --machine d05.yaml

test: $(STAMP)
	$(PY) -m pytest

test-deep: $(STAMP)
	S2T_DEEP=1 $(PY) -m pytest -m "deep or not deep"

lint: $(STAMP)
	$(VENV)/bin/ruff check s2teardown tests benchmarks validation
	$(VENV)/bin/mypy

# Real kernels under QEMU (docs/validation.md): installs qemu-system-arm and the aarch64 cross
# compiler from Debian's archive when missing, uses ../shared/kernels when present, skips loudly
# (exit 0, one line) when the infrastructure cannot be had.  About 10 minutes on 2 cores.
validate-kernel: $(STAMP)
	$(PY) -m validation.kernel

validate-kernel-quick: $(STAMP)
	$(PY) -m validation.kernel --quick

bench: $(STAMP) bytecode
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) build dist validation/kernel/build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
