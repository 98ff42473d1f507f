# Two commands on a fresh machine: `make demo` and `make test`.
# Everything they need is installed here: Debian's registry and skopeo (system),
# and a virtualenv in .venv with modelpack and its test dependencies.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install system-deps demo test test-fast lint format bench clean

install: $(STAMP)

system-deps:
	@scripts/install-system-deps.sh

$(STAMP): pyproject.toml scripts/install-system-deps.sh
	@scripts/install-system-deps.sh
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check -U pip
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	@# Byte-compile the checkout: with PYTHONDONTWRITEBYTECODE set, every start would recompile it.
	@$(PY) -m compileall -q modelpack cli >/dev/null
	@touch $(STAMP)
	@echo "installed modelpack into $(VENV)"

demo: install
	@$(PY) examples/demo.py

test: install
	@$(PY) -m pytest

test-fast: install
	@$(PY) -m pytest -m "not integration"

lint: install
	@$(VENV)/bin/ruff check modelpack cli tests examples benchmarks
	@$(VENV)/bin/ruff format --check modelpack cli tests examples benchmarks

format: install
	@$(VENV)/bin/ruff check --fix modelpack cli tests examples benchmarks
	@$(VENV)/bin/ruff format modelpack cli tests examples benchmarks

bench: install
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[bench]'
	@$(PY) -m benchmarks $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
