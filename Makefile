# The two commands of the README: `make run` (the product, with demo data) and `make test` (the whole suite).
# Both start from nothing: they create .venv and install what pyproject.toml declares.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: run test install lint format

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(INSTALLED)

install: $(INSTALLED)

# Local quick start on SQLite (or DATABASE_URL): migrate, demo data, a printed login, the server on 127.0.0.1:8000.
run: $(INSTALLED)
	DJANGO_DEBUG=true $(BIN)/python manage.py migrate --noinput
	DJANGO_DEBUG=true $(BIN)/python manage.py quickstart --url http://$(HOST):$(PORT)
	DJANGO_DEBUG=true $(BIN)/python manage.py runserver $(HOST):$(PORT)

# The whole suite: migrations in step with the models, lint, then pytest (SQLite, or PostgreSQL via DATABASE_URL).
test: $(INSTALLED)
	DJANGO_SETTINGS_MODULE=sensorsync_project.settings_test $(BIN)/python manage.py makemigrations --check --dry-run
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(INSTALLED)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
