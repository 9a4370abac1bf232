# The two commands of the README: `make run` (the product, with demo data) and `make test` (the whole suite).
# Both start from nothing: they create .venv and install what pyproject.toml declares.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: run test install lint format bench

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(INSTALLED)

install: $(INSTALLED)

# Local quick start on SQLite (or DATABASE_URL): migrate, demo data, a printed login, the server on 127.0.0.1:8000,
# and beside it a simulated fleet (manage.py simulate_fleet: agents polling and reporting over HTTP), started once
# the server answers and stopped with it (Ctrl-C stops both). FLEET=off runs the server alone. The server's log
# leaves out the fleet's successful polls and reports (refused ones still show); its staff requests all show.
FLEET ?= on
FLEET_ARGS ?= --devices 6 --sensors 4 --failure-rate 0.15 --poll-interval 10 --report-interval 10 --metrics-interval 30
run: $(INSTALLED)
	DJANGO_DEBUG=true $(BIN)/python manage.py migrate --noinput
	DJANGO_DEBUG=true $(BIN)/python manage.py quickstart --url http://$(HOST):$(PORT)
	@export DJANGO_DEBUG=true PYTHONUNBUFFERED=1; fleet=; \
	if [ "$(FLEET)" != off ]; then \
	  ( tries=0; \
	    until $(BIN)/python -c 'import socket; socket.create_connection(("$(HOST)", $(PORT)), 1).close()' 2>/dev/null; do \
	      tries=$$((tries + 1)); [ $$tries -lt 60 ] || exit 1; sleep 1; \
	    done; \
	    echo "== A simulated fleet starts beside the server (FLEET=off: none); watch it on http://$(HOST):$(PORT)/fleet/"; \
	    echo "   (it first checks the server: the 401 and 400 answers to its two probe requests are expected)"; \
	    exec $(BIN)/python manage.py simulate_fleet --url http://$(HOST):$(PORT) $(FLEET_ARGS) --duration 604800 --quiet \
	  ) & fleet=$$!; \
	fi; \
	trap 'if [ -n "$$fleet" ]; then kill $$fleet 2>/dev/null; fi' EXIT INT TERM; \
	$(BIN)/python manage.py runserver $(HOST):$(PORT) 2>&1 \
	  | grep --line-buffered -v -E '"(GET|PATCH) /api/v1/device/[^"]*" (200|304) '

# The whole suite: migrations in step with the models, lint, the architecture's import contracts (pyproject.toml,
# docs/architecture.md), the type checker (mypy, ``[tool.mypy]``), then pytest (SQLite, or PostgreSQL via
# DATABASE_URL).
test: $(INSTALLED)
	DJANGO_SETTINGS_MODULE=sensorsync_project.settings_test $(BIN)/python manage.py makemigrations --check --dry-run
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

format: $(INSTALLED)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The benchmark (README: Benchmark): the product under gunicorn against a fresh PostgreSQL database on 127.0.0.1,
# driven by wrk, measured against its ceilings; a few minutes. DEVICES, SENSORS, DURATION, MIX_DURATION, WORKERS:
# e.g. `make bench DEVICES=500 DURATION=5 MIX_DURATION=10`. wrk and pgbench come from Debian packages.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_INSTALL := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends

bench: $(INSTALLED)
	@command -v wrk >/dev/null || $(APT_INSTALL) wrk || ($(SUDO) apt-get update && $(APT_INSTALL) wrk)
	@command -v pgbench >/dev/null || $(APT_INSTALL) postgresql-contrib \
		|| ($(SUDO) apt-get update && $(APT_INSTALL) postgresql-contrib)
	$(BIN)/python -m bench
