# s2teardown — every target sets itself up: it creates .venv and installs what it needs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-deep lint bench clean venv bytecode

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
	$(VENV)/bin/ruff check s2teardown tests benchmarks
	$(VENV)/bin/mypy

bench: $(STAMP) bytecode
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
