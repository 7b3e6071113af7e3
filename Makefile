# The README's two commands: `make test` and `make demo`. Both install what is missing first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=

.PHONY: test lint demo deps redis-server chromium jq kafka-jars clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

redis-server:
	@command -v redis-server >/dev/null || { \
	  echo "installing Debian's redis-server"; \
	  $(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	  $(SUDO) systemctl disable --now redis-server >/dev/null 2>&1 || $(SUDO) service redis-server stop >/dev/null 2>&1 || true; }

chromium:
	@command -v chromium >/dev/null || { \
	  echo "installing Debian's chromium (for the account page's browser test)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

jq:
	@command -v jq >/dev/null || { \
	  echo "installing Debian's jq (the README's curl examples use it)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq >/dev/null; }

kafka-jars: $(STAMP)
	$(BIN)/metering stack jars

deps: $(STAMP) redis-server chromium jq kafka-jars

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: deps lint
	$(BIN)/pytest $(PYTEST_ARGS)

demo: $(STAMP) redis-server kafka-jars
	$(BIN)/metering demo

clean:
	-$(BIN)/metering stack down
	rm -rf $(VENV) .metering .pytest_cache .mypy_cache .ruff_cache
