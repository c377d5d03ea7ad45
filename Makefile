# Vanta Vault: `make run` starts the broker on the demo secrets; `make test` runs the suite.
PYTHON ?= python3
# `make run PORT=8300` (or VANTA_PORT=8300 make run) serves on another port.
PORT ?= $(or $(VANTA_PORT),8200)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.test

.PHONY: run test bench lint clean system-deps screenshots node-deps test-node

# Test-only system packages from Debian: redis-server (several-broker tests), chromium and
# chromium-driver (the dashboard tests drive a real headless browser), curl and jq (the
# README's tour, which tests/test_readme_tour.py runs).
SYSTEM_DEPS := redis-server chromium chromium-driver curl jq
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Two stamps: `make run` needs the broker and the CLI (the base install is the SDK alone);
# `make test` adds the AWS extra and the test tools.
# An editable install always has setuptools print an "Editable installation" notice (not
# a problem: a reminder that the checkout's folders are imported); only it is silenced.
EDITABLE_NOTICE := PYTHONWARNINGS="ignore:Editable installation"

$(VENV)/.base: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(EDITABLE_NOTICE) $(BIN)/python -m pip install --quiet -e '.[broker,cli]'
	touch $@

$(STAMP): $(VENV)/.base
	$(EDITABLE_NOTICE) $(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

run: $(VENV)/.base
	@VANTA_PORT='$(PORT)' $(BIN)/python scripts/dev_run.py

system-deps:
	@missing=""; for p in $(SYSTEM_DEPS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing (apt)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

test: $(STAMP) system-deps
	$(BIN)/python -m pytest -q
	@$(MAKE) --no-print-directory test-node

# The Node.js SDK (sdk/node): Node and npm from Debian when missing, `npm ci` again only when
# package-lock.json changes, then built and tested with Node's own runner against brokers
# started from $(VENV).
NODE_SDK := sdk/node

node-deps:
	@command -v node >/dev/null && command -v npm >/dev/null || { \
	  echo "installing nodejs npm (apt)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; }

$(NODE_SDK)/node_modules/.installed: $(NODE_SDK)/package-lock.json | node-deps
	cd $(NODE_SDK) && npm ci --no-audit --no-fund
	touch $@

test-node: $(STAMP) system-deps $(NODE_SDK)/node_modules/.installed
	cd $(NODE_SDK) && npm run --silent build && VANTA_VENV_BIN=$(abspath $(BIN)) npm test

screenshots: $(STAMP) system-deps
	VANTA_SCREENSHOTS_DIR=docs/screenshots $(BIN)/python -m pytest -q tests/test_ui.py

# wrk (Debian's package) drives the servers the benchmark measures.
bench: $(STAMP)
	@command -v wrk >/dev/null || { echo "installing wrk (apt)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
	$(BIN)/python bench/run.py

lint: $(STAMP)
	$(BIN)/ruff check broker cli tests bench scripts
	$(BIN)/ruff format --check broker cli tests bench scripts
	$(BIN)/mypy

clean:
	rm -rf $(VENV) state audit .pytest_cache $(NODE_SDK)/node_modules $(NODE_SDK)/dist
