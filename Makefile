# Two commands on a fresh machine: `make demo` and `make test`.
# Each creates (or reuses) .venv in the repository and installs what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: install demo reproduce test test-all lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: the CPU build lies on disk; an unpinned torch pulls a CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev,postgres]'
	# ByzFL, the reference the robust aggregators are tested against: without its dependencies,
	# which pin torchvision (and with it another torch build); its aggregators need numpy/scipy.
	$(PY) -m pip install --quiet --no-deps byzfl==0.0.11
	touch $(STAMP)

# Test-only dependencies (Lightning, transformers): torch named again so pip keeps the pinned one.
$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install --quiet torch==2.13.0 -e '.[dev,test]'
	touch $(TEST_STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/l2o reproduce --quick --out runs/demo

# The full run behind docs/reproduce (about an hour on 2 cores; finished steps are reused).
reproduce: $(STAMP)
	$(VENV)/bin/l2o reproduce --out runs/full
	$(PY) scripts/publish_report.py runs/full docs/reproduce

test: $(TEST_STAMP)
	$(PY) -m pytest -q

test-all: $(TEST_STAMP)
	$(PY) -m pytest -q -m ''

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples scripts
	$(VENV)/bin/ruff format --check src tests benchmarks examples scripts

bench: $(STAMP)
	$(PY) benchmarks/meta_throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache
