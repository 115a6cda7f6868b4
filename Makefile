# Two commands matter: `make demo` and `make test`. Both set up what they need on a fresh clone.
# Python 3.11 (what Azure runs): python3.11 if present, else python3 (checked below).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
# checkov (the Bicep security scan in tests/infra) needs pins of its own that clash with the app's: its own venv,
# under .local/ so that neither git nor the deployment package (.funcignore) picks it up.
CHECKOV_VENV := .local/checkov-venv
LINT_PATHS := function_app.py orchestrators activities shared local teams tests infra

.PHONY: setup checkov-setup demo test lint run bench clean

setup: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null || { echo "Python 3.11 is required (found: $(PYTHON)); set PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

checkov-setup: $(CHECKOV_VENV)/.installed

$(CHECKOV_VENV)/.installed: requirements-checkov.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null || { echo "Python 3.11 is required (found: $(PYTHON)); set PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-checkov.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	@command -v npm >/dev/null || { echo "npm not found: Node.js 20+ is required for Azurite"; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

lint: setup
	$(PY) -m ruff check $(LINT_PATHS)
	$(PY) -m ruff format --check $(LINT_PATHS)
	$(PY) -m mypy function_app.py orchestrators activities shared local teams tests infra

# REQUIRE_CHECKOV: the checkov test fails, instead of skipping, if checkov is missing.
test: lint checkov-setup
	REQUIRE_CHECKOV=1 CHECKOV=$(CHECKOV_VENV)/bin/checkov $(PY) -m pytest

demo: setup
	$(PY) -m local.stack demo

run: setup
	$(PY) -m local.stack run

bench: setup
	$(PY) -m local.bench

# The Teams app package an admin uploads (docs/deploy.md, "Installing the Teams app"). Standard library only.
# make teams-package BOT_APP_ID=<azd output BOT_APP_ID> APP_DOMAIN=<Function App host name, no https://>
.PHONY: teams-package
teams-package:
	@test -n "$(BOT_APP_ID)" || { echo "BOT_APP_ID is not set: make teams-package BOT_APP_ID=\$$(azd env get-value BOT_APP_ID) APP_DOMAIN=<host>"; exit 1; }
	@test -n "$(APP_DOMAIN)" || { echo "APP_DOMAIN is not set: the Function App host name (SERVICE_API_URI without https://)"; exit 1; }
	$(PYTHON) -m teams.package --bot-app-id "$(BOT_APP_ID)" --domain "$(APP_DOMAIN)" --out dist/teams-app.zip

clean:
	rm -rf $(VENV) node_modules .local .pytest_cache .mypy_cache .ruff_cache
