# Everything a fresh machine needs is installed by these targets themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# checkov pins packages that clash with the test tools, so it lives in its own environment.
CHECKOV_VENV := .venv-checkov

# The lowest version requirements.txt admits of each Azure SDK the adapters talk to, installed beside
# .venv (which has the highest): the adapter tests run against both ends of every declared range.
AZURE_SDKS := azure-mgmt-keyvault\|azure-mgmt-security\|azure-eventgrid\|azure-data-tables\|azure-mgmt-monitor\|azure-mgmt-authorization\|azure-mgmt-resource-deploymentstacks\|azure-mgmt-resource\|azure-mgmt-eventgrid
SDK_FLOORS := $(shell sed -n 's/^\($(AZURE_SDKS)\)>=\([0-9.]*\),.*/\1==\2/p' requirements.txt)
SDK_FLOOR := .sdk-floor

.PHONY: run test test-sdk-floor lint bench infra-tools infra-rules docs clean

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

$(SDK_FLOOR)/.installed: requirements.txt Makefile $(STAMP)
	rm -rf $(SDK_FLOOR)
	$(BIN)/pip install --quiet --no-deps --target $(SDK_FLOOR) $(SDK_FLOORS)
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
	$(MAKE) test-sdk-floor

test-sdk-floor: $(SDK_FLOOR)/.installed
	PYTHONPATH=$(SDK_FLOOR) KVGUARD_SDK_FLOOR_RUN=1 $(BIN)/pytest -q -p no:cacheprovider \
		tests/integration/test_sdk_range.py tests/integration/test_arm_gateway.py \
		tests/integration/test_alert_sinks.py tests/integration/test_tables_store.py \
		tests/integration/test_tables_vault_partition.py \
		tests/integration/test_authorization_gateway.py tests/integration/test_deny_and_eligibility_reads.py \
		tests/integration/test_policy_gateway.py tests/integration/test_perimeter_and_feed_gateways.py \
		tests/integration/test_cli_backfill.py tests/integration/test_cli_doctor.py \
		tests/integration/test_managed_hsm_and_keys.py

bench: $(STAMP)
	$(BIN)/python bench/run.py
	$(BIN)/python bench/production.py
	$(BIN)/python bench/burst.py
	$(BIN)/python bench/state_tables.py

# The README's rule table and infra/rules.json come from the rule definitions (a test fails when stale).
docs: $(STAMP)
	$(BIN)/kvguard rules --json > infra/rules.json
	$(BIN)/kvguard rules --readme README.md
	$(BIN)/kvguard schema > policy.schema.json

infra-rules: docs

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) $(SDK_FLOOR) node_modules .mypy_cache .ruff_cache .pytest_cache
