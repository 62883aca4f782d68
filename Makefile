# One-command set-up for a fresh clone: `make run` and `make test` (see README).
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
HPSTUDY := $(VENV)/bin/hpstudy

.PHONY: setup data run test test-fast lint format bench clean

setup: $(STAMP) data

# The CPU build of torch is pinned and installed first: a bare `torch` requirement would
# otherwise pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

data: $(STAMP)
	bash scripts/ensure-system-deps
	$(HPSTUDY) data verify

# The EDA figures, then the replication: every number the paper published re-measured over
# five seeds, beside the paper's own staged search with one seed, ending with one report that
# leads with the verdict (runs/replicate/report.html, replication.json beside it). A rerun
# resumes: finished trials are never trained again.
run: setup
	$(HPSTUDY) eda --out runs/eda
	$(HPSTUDY) run replicate

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests

format: $(STAMP)
	$(VENV)/bin/ruff format src tests
	$(VENV)/bin/ruff check --fix src tests

test: setup lint
	$(VENV)/bin/pytest -q

# The fast tier, for a newcomer's first minute: everything not marked slow (whole studies, the
# browser, PostgreSQL, kills, wheel builds; see tests/conftest.py).
test-fast: $(STAMP)
	$(VENV)/bin/pytest -q -m "not slow"

bench: setup
	$(HPSTUDY) bench

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
