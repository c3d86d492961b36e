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

# Debian packages the tests start (each on 127.0.0.1, stopped by its PID): append yours.
SYSTEM_DEPS := mosquitto chromium prometheus postgresql

.PHONY: install system-deps demo test test-unit lint format bench bench-check docs clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[cloud,edge,dev]'
	touch $(STAMP)

# Installs what is missing of SYSTEM_DEPS (sudo where not root); quiet, and does nothing
# when all are there.
system-deps:
	@missing=""; for p in $(SYSTEM_DEPS); do \
	  dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  sudo=""; [ "$$(id -u)" -eq 0 ] || sudo="sudo"; \
	  echo "installing$$missing"; \
	  $$sudo apt-get update -qq >/dev/null && \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

demo: $(STAMP)
	$(BIN)/pumpfleet demo

test: $(STAMP)
	$(BIN)/python -m pytest -q --timeout=900 --durations=15 -n 2

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

# Re-runs, at reduced size, the benchmarks whose figures the docs quote, and fails when one
# moved by more than its tolerance (benchmarks/reference.json).
bench-check: $(STAMP)
	nice -n 10 $(BIN)/python -m benchmarks.bench_check

clean:
	rm -rf $(VENV) .pumpfleet .site .pytest_cache .mypy_cache .ruff_cache
