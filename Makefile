# Everything a fresh machine needs is installed by these targets themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# checkov pins packages that clash with the test tools, so it lives in its own environment.
CHECKOV_VENV := .venv-checkov

.PHONY: run test lint bench infra-tools infra-rules docs clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

$(CHECKOV_VENV)/.installed: requirements-checkov.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/pip install --quiet -r requirements-checkov.txt
	touch $@

node_modules/.bin/azurite: package.json package-lock.json
	npm ci --no-audit --no-fund --silent
	touch $@

infra-tools: $(CHECKOV_VENV)/.installed

run: $(STAMP)
	$(BIN)/kvguard replay samples/scenarios/*.yaml

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

test: $(STAMP) node_modules/.bin/azurite $(CHECKOV_VENV)/.installed lint
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python bench/run.py

# The README's rule table and infra/rules.json come from the rule definitions (a test fails when stale).
docs: $(STAMP)
	$(BIN)/kvguard rules --json > infra/rules.json
	$(BIN)/kvguard rules --readme README.md

infra-rules: docs

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) node_modules .mypy_cache .ruff_cache .pytest_cache
