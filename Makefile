# Two commands do all the set-up on a fresh machine with Python >= 3.11 and make:
#   make demo   the platform with a simulated factory on http://127.0.0.1:8080
#   make test   lint, type checks and the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo up test lint typecheck pytest bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Shopfloor needs Python >= 3.11, found " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/shopfloor demo

up: $(STAMP)
	$(BIN)/shopfloor up

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/shopfloor bench historian --quick
	$(BIN)/shopfloor bench ingest-http --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
