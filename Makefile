# The two commands of the README: `make run` (the product, with demo data) and `make test` (the whole suite).
# Both start from nothing: they create .venv and install what pyproject.toml declares, at the versions
# constraints.txt pins (every package, the tools included; `make lock` writes it anew from pyproject.toml's ranges).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=
# make test fails when the suite's coverage is under this many percent (.ci/run sets it; empty: only printed).
COVERAGE_FLOOR ?=

.PHONY: run test install lint format bench bench-tools bench-soak lock

$(INSTALLED): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(INSTALLED)

# Resolve pyproject.toml's ranges afresh in a scratch environment and pin the result (then commit constraints.txt).
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet -e '.[dev]'
	{ echo "# Written by make lock: every package make install installs, pinned."; \
	  .venv-lock/bin/python -m pip freeze --exclude-editable; } > constraints.txt
	rm -rf .venv-lock

install: $(INSTALLED)

# Local quick start on SQLite (or DATABASE_URL): migrate, demo data, a printed login, the server on 127.0.0.1:8000,
# the webhook delivery worker (manage.py deliver_webhooks), and beside them a simulated fleet (manage.py
# simulate_fleet: agents polling and reporting over HTTP), started once the server answers and stopped with it
# (Ctrl-C stops them all). FLEET=off runs the server (and the workers) alone. The server's log
# leaves out the fleet's successful polls and reports (refused ones still show); its staff requests all show. The
# render worker (manage.py render_fleet --watch) runs beside it, for re-renders too big to run in a request, and the
# rollout driver (manage.py drive_rollouts --watch), which moves staged rollouts on.
FLEET ?= on
FLEET_ARGS ?= --devices 6 --sensors 4 --failure-rate 0.15 --poll-interval 10 --report-interval 10 --metrics-interval 30 --label plant=a,b
# MQTT (README "MQTT"): when Mosquitto is installed (Debian: apt-get install mosquitto) and MQTT is not off, `make run`
# also starts the project's broker on 127.0.0.1:$(MQTT_PORT) (state in var/mosquitto, its admin password kept in
# var/mqtt-admin.secret) and one ingestion worker, and the first $(MQTT_DEVICES) agents of the fleet report over MQTT.
MQTT ?= on
MQTT_PORT ?= 1884
MQTT_DEVICES ?= 3
run: $(INSTALLED)
	DJANGO_DEBUG=true $(BIN)/python manage.py migrate --noinput
	DJANGO_DEBUG=true $(BIN)/python manage.py quickstart --url http://$(HOST):$(PORT)
	@export DJANGO_DEBUG=true PYTHONUNBUFFERED=1; fleet=; broker=; ingest=; webhooks=; render=; rollouts=; fleet_args=; \
	$(BIN)/python manage.py deliver_webhooks & webhooks=$$!; \
	echo "== Webhooks: one deliver_webhooks worker sends what the endpoints configured in the admin subscribe to"; \
	$(BIN)/python manage.py render_fleet --watch --interval 2 & render=$$!; \
	$(BIN)/python manage.py drive_rollouts --watch --interval 5 & rollouts=$$!; \
	if [ "$(MQTT)" != off ] && { command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ]; }; then \
	  mkdir -p var; [ -s var/mqtt-admin.secret ] || $(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(24))' > var/mqtt-admin.secret; \
	  export SENSORSYNC_MQTT_BROKER_URL=mqtt://127.0.0.1:$(MQTT_PORT) SENSORSYNC_MQTT_ADMIN_USERNAME=sensorsync-admin \
	    SENSORSYNC_MQTT_ADMIN_PASSWORD="$$(cat var/mqtt-admin.secret)"; \
	  $(BIN)/python manage.py mqtt_broker --port $(MQTT_PORT) --data-dir var/mosquitto & broker=$$!; sleep 1; \
	  DJANGO_LOG_LEVEL=WARNING $(BIN)/python manage.py mqtt_ingest & ingest=$$!; \
	  fleet_args="--transport mqtt --mqtt-devices $(MQTT_DEVICES)"; \
	  echo "== MQTT: broker on mqtt://127.0.0.1:$(MQTT_PORT) (var/mosquitto), one mqtt_ingest worker; $(MQTT_DEVICES) agents report over MQTT (MQTT=off: HTTP only)"; \
	else \
	  echo "== MQTT: off (MQTT=off, or Mosquitto is not installed: apt-get install mosquitto); every agent reports over HTTP"; \
	fi; \
	if [ "$(FLEET)" != off ]; then \
	  ( tries=0; \
	    until $(BIN)/python -c 'import socket; socket.create_connection(("$(HOST)", $(PORT)), 1).close()' 2>/dev/null; do \
	      tries=$$((tries + 1)); [ $$tries -lt 60 ] || exit 1; sleep 1; \
	    done; \
	    echo "== A simulated fleet starts beside the server (FLEET=off: none); watch it on http://$(HOST):$(PORT)/fleet/"; \
	    echo "   (it first checks the server: the 401 and 400 answers to its two probe requests are expected)"; \
	    exec $(BIN)/python manage.py simulate_fleet --url http://$(HOST):$(PORT) $(FLEET_ARGS) $$fleet_args --duration 604800 --quiet \
	  ) & fleet=$$!; \
	fi; \
	trap 'for p in $$fleet $$ingest $$broker $$webhooks $$render $$rollouts; do kill $$p 2>/dev/null; done' EXIT INT TERM; \
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
	$(BIN)/pytest --cov --cov-report= $(PYTEST_ARGS)
	@printf 'coverage (lines and branches of the product, this process): %s%%\n' "$$($(BIN)/coverage report --format=total)"
	@if [ -n "$(COVERAGE_FLOOR)" ]; then $(BIN)/coverage report --format=total --fail-under=$(COVERAGE_FLOOR) >/dev/null \
	  || { echo "coverage is under the floor of $(COVERAGE_FLOOR)%"; exit 1; }; fi

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

format: $(INSTALLED)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The benchmark (README: Benchmark): the product under gunicorn against a fresh PostgreSQL database on 127.0.0.1,
# driven by wrk, measured against its ceilings (the product's own and independent ones), then the real agent's
# fleet over HTTP and over MQTT (the project's broker, mqtt_ingest workers) and the capacity searches; 25-30
# minutes. DEVICES, SENSORS, DURATION, MIX_DURATION, WORKERS, FLEET_DEVICES, CAPACITY_RUNS, CAPACITY_DURATION, MQTT:
# a quick look is `make bench DEVICES=2000 FLEET_DEVICES=4000 DURATION=5 MIX_DURATION=10 CAPACITY_RUNS=2
# CAPACITY_DURATION=20`. wrk, pgbench and Mosquitto (with its clients) come from Debian packages.
# `make bench-soak`: seeding, then 10 minutes of MQTT ingestion (SOAK_DEVICES agents, 20,000 by default) alone, each
# ingestion worker's memory sampled every 10 s.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_INSTALL := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends

bench-tools:
	@command -v wrk >/dev/null || $(APT_INSTALL) wrk || ($(SUDO) apt-get update && $(APT_INSTALL) wrk)
	@command -v pgbench >/dev/null || $(APT_INSTALL) postgresql-contrib \
		|| ($(SUDO) apt-get update && $(APT_INSTALL) postgresql-contrib)
	@if [ "$(MQTT)" != off ]; then \
	  { command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ]; } && command -v mosquitto_sub >/dev/null \
	  || $(APT_INSTALL) mosquitto mosquitto-clients \
	  || ($(SUDO) apt-get update && $(APT_INSTALL) mosquitto mosquitto-clients); fi

bench: $(INSTALLED) bench-tools
	MQTT=$(MQTT) $(BIN)/python -m bench

SOAK ?= 600
bench-soak: $(INSTALLED) bench-tools
	MQTT=on SOAK=$(SOAK) $(BIN)/python -m bench
