# Corral: `make up` starts it standalone, `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up test lint bench clean dashboard-assets

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# make up PORT=8080 ARGS='--label arch=amd64'
up: $(STAMP)
	$(BIN)/corral up $(if $(PORT),--port $(PORT)) $(ARGS)

# Two test processes (pytest-xdist; each with its own ports, PostgreSQL server and databases): the suite is
# mostly waiting on real processes. PYTEST_WORKERS=0 runs it in one.
PYTEST_WORKERS ?= 2

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/pip install -q -e '.[dev,bench]'
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) .corral build src/*.egg-info

# The dashboard's vendored htmx files, fetched again with npm and checked against their locked integrity.
dashboard-assets:
	tools/dashboard-assets.sh
