# Two commands matter: `make demo` and `make test`. Both set up what they need on a fresh clone.
# Python 3.11 (what Azure runs): python3.11 if present, else python3 (checked below).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
LINT_PATHS := function_app.py orchestrators activities shared local tests

.PHONY: setup demo test lint run bench clean

setup: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null || { echo "Python 3.11 is required (found: $(PYTHON)); set PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	@command -v npm >/dev/null || { echo "npm not found: Node.js 20+ is required for Azurite"; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

lint: setup
	$(PY) -m ruff check $(LINT_PATHS)
	$(PY) -m ruff format --check $(LINT_PATHS)
	$(PY) -m mypy function_app.py orchestrators activities shared local tests

test: lint
	$(PY) -m pytest

demo: setup
	$(PY) -m local.stack demo

run: setup
	$(PY) -m local.stack run

bench: setup
	$(PY) -m local.bench

clean:
	rm -rf $(VENV) node_modules .local .pytest_cache .mypy_cache .ruff_cache
