# WISPGate Ledger. `make run` starts the embedded product; `make test` runs the whole suite
# against real PostgreSQL and Kafka (installed and started when missing).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: venv bytecode run test services lint bench bench-smoke clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# The project's bytecode, written here once: where PYTHONDONTWRITEBYTECODE is set (as on the
# development machines) every process would otherwise compile its modules from source at each
# start (~0.1 CPU s for serve's imports); a stale file is only recompiled in memory, never wrong.
bytecode: venv
	$(BIN)/python -m compileall -q domain rating ledger projections adapters api bench tests > /dev/null

run: venv bytecode
	$(BIN)/wispgate serve

services:
	tests/services/ensure.sh

test: venv bytecode services
	. .cache/services.env && $(BIN)/pytest -q

lint: venv
	$(BIN)/ruff check domain rating ledger projections adapters api tests bench
	$(BIN)/mypy domain rating ledger projections

bench: venv bytecode services
	. .cache/services.env && $(BIN)/python -m bench

clean:
	rm -rf $(VENV) var .pytest_cache
