# The two commands: `make demo` and `make test`. Both build .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export RAY_USAGE_STATS_ENABLED ?= 0
export MLFLOW_DISABLE_TELEMETRY ?= true
export ORT_DISABLE_TELEMETRY ?= 1
export NML_DISABLE_USAGE_LOGGING ?= 1
export DO_NOT_TRACK ?= 1

.PHONY: install demo test test-unit lint format bench docs clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[cloud,edge,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/pumpfleet demo

test: $(STAMP)
	$(BIN)/python -m pytest -q --timeout=900 --durations=15

test-unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy pumpfleet pumpfleet_cli ray_jobs serve_apps edge_export edge_agent

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir .site

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .pumpfleet .site .pytest_cache .mypy_cache .ruff_cache
