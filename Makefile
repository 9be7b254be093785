# idguard — run `make help` for the list.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help setup run test test-deep lint typecheck bench clean

help: ## show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP) ## create .venv and install idguard with its dev tools

run: $(STAMP) ## migrate, load demo data if empty, serve on 127.0.0.1:8000 (SQLite by default)
	$(BIN)/idguard run-dev

lint: $(STAMP) ## ruff (lint and format check), the architecture (import contracts, one unit of work)
	$(BIN)/ruff check src tests bench tools
	$(BIN)/ruff format --check src tests bench tools
	$(BIN)/lint-imports
	$(BIN)/python tools/check_architecture.py src tests

typecheck: $(STAMP) ## mypy strict on src/
	$(BIN)/mypy src

test: $(STAMP) lint typecheck ## lint, typecheck and the whole test suite (PostgreSQL too when IDGUARD_TEST_POSTGRES_URL is set; work stealing: the slow browser and crash tests do not end the run on one worker)
	$(BIN)/pytest -n 2 --dist worksteal

test-deep: $(STAMP) ## the property-based tests with new random draws, ten times the examples (minutes)
	IDGUARD_TEST_DEEP=1 $(BIN)/pytest -n 2 tests/integration/test_lifecycle_machine.py tests/unit

.PHONY: mutation
mutation: $(STAMP) ## mutation testing of the rule and permission modules, cosmic-ray (slow, not in CI; docs/testing.md)
	$(BIN)/python tools/mutation.py $(MUTATION_ARGS)

bench: $(STAMP) ## run the benchmarks (prints figures and ratios against same-run baselines)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python bench/loss_reports.py
	$(BIN)/python -m bench.verify
	$(BIN)/python bench/demo_load.py
	$(BIN)/python bench/fingerprints.py
	$(BIN)/python bench/fingerprint_requests.py
	$(BIN)/python bench/console.py

clean: ## remove the virtualenv and local databases
	rm -rf $(VENV) idguard.db idguard.db-wal idguard.db-shm idguard.db-checklog
