# weblab-operator: build, test and try it on a local control plane.
# Everything expensive is cached outside the repository, keyed by version:
#   $(WEBLAB_CACHE_DIR)/tools/<tool>-<version>-<hash>/   Go-built control plane, kwok, helm
#   $(CARGO_TARGET_DIR)                                   cargo artefacts (CI points it at the cache)

SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

export WEBLAB_CACHE_DIR ?= $(HOME)/.cache/weblab-operator
export WEBLAB_TOOLS_BIN ?= $(shell hack/tools.sh bindir)
CARGO ?= cargo
BIN := $(or $(CARGO_TARGET_DIR),target)/debug/weblab-operator
CHART_CRDS := charts/weblab-operator/crds/weblab.dev.yaml
IMAGE ?= weblab-operator:dev
DEMO_DIR ?= $(WEBLAB_CACHE_DIR)/demo
DEMO_PORT ?= 8080

.PHONY: help
help: ## List the targets.
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

.PHONY: prereqs
prereqs: ## Install what the build and tests need beyond the repository (Debian packages, rustfmt, clippy).
	hack/prereqs.sh

.PHONY: tools
tools: ## Build the pinned control plane, kwok and helm from their Go modules (only what is missing).
	hack/tools.sh build

.PHONY: build
build: ## Build the operator and the test harness.
	$(CARGO) build --workspace --locked

.PHONY: crds
crds: ## Regenerate crds/ and the Helm chart's crds/ from the Rust types.
	$(CARGO) build --quiet --locked --bin weblab-operator
	$(BIN) crd > crds/weblab.dev.yaml
	cp crds/weblab.dev.yaml $(CHART_CRDS)

.PHONY: crds-check
crds-check: ## Fail when crds/ or the chart's crds/ differ from what the code generates.
	$(CARGO) build --quiet --locked --bin weblab-operator
	@for file in crds/weblab.dev.yaml $(CHART_CRDS); do \
	  $(BIN) crd | diff -u $$file - \
	    || { echo "$$file is out of date: run 'make crds' and commit" >&2; exit 1; }; \
	done

.PHONY: lint
lint: ## cargo fmt --check and clippy with warnings as errors.
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

.PHONY: test
test: prereqs tools crds-check lint ## Everything CI runs: drift check, lints, unit and integration tests on a real control plane.
	$(CARGO) test --workspace --locked

.PHONY: bench
bench: tools ## Print benchmark figures (reconcile of 1,000 dials, assignment API under wrk, guardrail detection, the read side with 10,000 dials; WEBLAB_BENCH_ONLY=scale, WEBLAB_BENCH_SCALE_DIALS=N, WEBLAB_BENCH_WRITES_PER_SECOND=N).
	hack/prereqs.sh bench
	$(CARGO) bench --locked --bench guardrail
	$(CARGO) bench --locked --bench operator

.PHONY: image
image: ## Build the container image with buildah (chroot isolation, FROM scratch) and smoke-test it.
	hack/prereqs.sh image
	hack/image.sh $(IMAGE)

.PHONY: demo
demo: prereqs tools build ## Start a local control plane and the operator in the background, apply the examples.
	hack/demo.sh up "$(DEMO_DIR)" "$(DEMO_PORT)"

.PHONY: demo-down
demo-down: ## Stop what 'make demo' started.
	hack/demo.sh down "$(DEMO_DIR)"
