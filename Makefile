# crm-analytics: `make demo` runs the whole workbench on generated demo data; `make test` runs the tests.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CUSTOMERS ?= 50000
JOBS ?= 2

.PHONY: demo test test-fast lab setup system-deps bench clean-outputs

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (crm-analytics)" >/dev/null
	touch $(STAMP)

setup: $(STAMP)

## demo: generate demo data, build the warehouse, run every analysis, print where the reports are
demo: $(STAMP)
	$(BIN)/crm-analytics demo --customers $(CUSTOMERS) --jobs $(JOBS)

## system-deps: Debian packages the tests use (Chromium for page tests, PostgreSQL for the SQL source test)
system-deps:
	bash .ci/system-deps.sh

## test: every test, including notebook runs, PostgreSQL and the browser
test: $(STAMP) system-deps
	eval "$$(bash .ci/postgres.sh)" && $(BIN)/python -m pytest tests --nbval-lax notebooks -p no:cacheprovider

## test-fast: the linter and the import contracts, then unit tests only (no notebook runs, no servers)
test-fast: $(STAMP)
	$(BIN)/ruff check --no-cache .
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest tests -m "not slow and not postgres and not browser and not spark"

## lab: JupyterLab on the notebooks, with the project's kernel
lab: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=notebooks

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test,bench]"
	for script in benchmarks/bench_*.py; do $(BIN)/python $$script || exit 1; done

clean-outputs:
	rm -rf outputs/*/ outputs/index.html
