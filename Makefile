# The two commands a newcomer needs: `make demo` and `make test`.
# Each creates the virtual environment it needs (in .venv) on first use.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is installed first and pinned: an unpinned torch pulls a multi-GB CUDA build.
# GPU users: make TORCH_SPEC="torch==2.13.0" TORCH_PIP_ARGS="--index-url <your CUDA wheel index>"
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
STAMP := $(VENV)/.installed
# Tests run on two processes (pytest-xdist), a module per process at a time, longest modules first
# (tests/conftest.py): the suite's size is set for 2 CPU cores.  `make test PYTEST_WORKERS=0` runs it in one.
PYTEST_WORKERS ?= 2
PYTEST_PARALLEL := -n $(PYTEST_WORKERS) --dist loadscope --no-loadscope-reorder

export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION := 1

.PHONY: demo lint typecheck test test-fast bench clean-venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)" $(TORCH_PIP_ARGS)
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $@

demo: $(STAMP)
	$(VENV)/bin/flame demo --out runs/demo

# Lint first: CI (`make test`) fails on a finding (rules in pyproject.toml, [tool.ruff.lint]).
lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks setup.py

# Types next: mypy reads src/flame_private with the settings in pyproject.toml ([tool.mypy]).
typecheck: $(STAMP)
	$(VENV)/bin/mypy

test: lint typecheck
	$(PY) -m pytest $(PYTEST_PARALLEL) --durations=12  # the slowest tests, to keep the suite's time in view

test-fast: $(STAMP)
	$(PY) -m pytest $(PYTEST_PARALLEL) -m "not slow"

bench: $(STAMP)
	for b in cohort_speed cohort_difficulty dp_step he_costs round_costs attacks; do $(PY) benchmarks/$$b.py || exit 1; done

clean-venv:
	rm -rf $(VENV)
