# WISPGate Ledger. `make run` starts the embedded product; `make test` runs the whole suite
# against real PostgreSQL and Kafka (installed and started when missing).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: venv run test services lint bench bench-smoke clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

run: venv
	$(BIN)/wispgate serve

services:
	tests/services/ensure.sh

test: venv services
	. .cache/services.env && $(BIN)/pytest -q

lint: venv
	$(BIN)/ruff check domain rating ledger projections adapters api tests bench
	$(BIN)/mypy domain rating ledger

bench: venv services
	. .cache/services.env && $(BIN)/python -m bench

clean:
	rm -rf $(VENV) var .pytest_cache
