# RockchipLlama — every developer and CI task starts here.
#   make run     the agent on the embedded default model (SmolLM2-135M), on 127.0.0.1:8080
#   make test    everything CI runs
#   make bench   side-by-side benchmarks (not a CI gate), results in docs/bench/
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
CACHE ?= $(HOME)/.cache/rockchip-llama
# Build outputs live outside the clone so fresh clones (and CI) reuse them.
export CARGO_TARGET_DIR ?= $(CACHE)/target
AGENT := $(CARGO_TARGET_DIR)/release/rockchip-llama-agent
OPERATOR := $(CARGO_TARGET_DIR)/release/rockchip-llama-operator
LISTEN ?= 127.0.0.1:8080
DEFAULT_MODEL ?= smollm2-135m-instruct
step = @printf '\n==> %s\n' "$(1)"

# Test control plane (kube-apiserver + etcd on loopback), CRD generation: cluster, cluster-down,
# generate-crds, check-crds, test-k8s.
include hack/k8s.mk
# make bench: agent vs llama.cpp's llama-server side by side; writes docs/bench/.
include hack/bench/bench.mk
# make rkllm-sim: the ABI-exact stand-in for librkllmrt.so (both ABIs) and simulated models.
include hack/rkllm-sim/sim.mk
# make image COMPONENT=agent|operator ARCH=amd64|arm64, test-compose, test-image: the container images.
include hack/image/image.mk

.PHONY: run build deps models fmt lint test test-rust check-openapi generate-openapi test-compat fuzz test-cluster help test-node node node-down test-ui

help:
	@sed -n '2,5p' Makefile
	@echo "  make cluster / cluster-down   a real kube-apiserver + etcd on loopback for development"
	@echo "  make node / node-down         that control plane plus a real kubelet node (root)"
	@echo "  make generate-crds / generate-openapi   regenerate the committed generated files"

deps:
	@hack/install-deps.sh

models:
	@hack/fetch-models.sh

# --release everywhere: llama.cpp's cmake build then runs once for run, test and bench.
build: deps
	$(call step,cargo build --release (first build compiles llama.cpp: ~5 min on 2 cores))
	cargo build --release -p rockchip-llama-agent

run: build
	$(call step,fetching the default model)
	@model=$$(hack/fetch-models.sh smollm2 | head -n1); \
	echo "model: $$model"; \
	exec $(AGENT) serve --listen $(LISTEN) --models-dir "$$(dirname "$$model")" --default-model $(DEFAULT_MODEL)

fmt:
	cargo fmt --all

lint: deps
	$(call step,cargo fmt --check)
	cargo fmt --all -- --check
	$(call step,cargo clippy)
	cargo clippy --release --workspace --all-targets -- -D warnings
	cargo clippy --release -p rkllm-sim --features abi13 --all-targets --target-dir $(CARGO_TARGET_DIR)/rkllm-sim-1.3 -- -D warnings

# The committed OpenAPI documents (agent, gateway) must match what the code generates.
check-openapi: build
	$(call step,OpenAPI drift check (agent and gateway))
	cargo build --release -p rockchip-llama-operator
	@$(AGENT) openapi | diff -u docs/openapi.json - \
	  || { echo "docs/openapi.json is stale: run 'make generate-openapi'"; exit 1; }
	@$(OPERATOR) openapi | diff -u docs/openapi-gateway.json - \
	  || { echo "docs/openapi-gateway.json is stale: run 'make generate-openapi'"; exit 1; }

generate-openapi: build
	cargo build --release -p rockchip-llama-operator
	$(AGENT) openapi > docs/openapi.json
	$(OPERATOR) openapi > docs/openapi-gateway.json

test-rust: deps
	$(call step,fetching test models)
	@hack/fetch-models.sh >/dev/null
	$(call step,building rkllm-sim (ABI 1.2 and 1.3) and its simulated models)
	@$(MAKE) -s rkllm-sim >/dev/null
	$(call step,cargo test (unit + agent integration over real TCP; RKLLM through rkllm-sim))
	ROCKCHIP_LLAMA_TEST_MODELS="$$(hack/fetch-models.sh | paste -sd:)" \
	ROCKCHIP_LLAMA_TEST_RKLLM="$$($(MAKE) -s rkllm-sim 2>/dev/null | paste -sd:)" \
	  cargo test --release --workspace -- --test-threads=1
	$(call step,agent integration suites again on the RKLLM engine: rkllm-sim ABI 1.2, then 1.3)
	@# --workspace, not -p: the same feature set as the run above, so its test binaries are reused
	@# rather than the agent being compiled a second time.
	for engine in rkllm-1.2 rkllm-1.3; do \
	  echo "--- ROCKCHIP_LLAMA_TEST_ENGINE=$$engine"; \
	  ROCKCHIP_LLAMA_TEST_ENGINE=$$engine \
	  ROCKCHIP_LLAMA_TEST_MODELS="$$(hack/fetch-models.sh | paste -sd:)" \
	  ROCKCHIP_LLAMA_TEST_RKLLM="$$($(MAKE) -s rkllm-sim 2>/dev/null | paste -sd:)" \
	    cargo test --release --workspace --test openai --test ollama --test errors --test scheduling \
	      --test config -- --test-threads=1 || exit 1; \
	done
	$(call step,rkllm-sim unit tests for ABI 1.3 (the workspace run covers ABI 1.2))
	cargo test --release -p rkllm-sim --features abi13 --target-dir $(CARGO_TARGET_DIR)/rkllm-sim-1.3

test-compat: build
	$(call step,compatibility: official openai and ollama Python clients against a live agent)
	hack/test-compat.sh

fuzz: build
	$(call step,fuzz smoke: schemathesis on /openapi.json, no 5xx)
	hack/fuzz.sh

# The cluster tier: operator + 3 simulated boards + an origin on a real kube-apiserver.
test-cluster: deps
	$(call step,cluster: ModelDeployments placed, distributed board to board, rolled, drained, deleted)
	hack/test-cluster.sh

# The status page in headless Chromium: one agent's page, then the gateway's over 3 simulated boards
# (UI_SCREENSHOT=docs/status-page.png also refreshes the docs' screenshot).
test-ui: deps
	$(call step,status page: headless Chromium on an agent and on a 3-board cluster's gateway)
	hack/test-ui.sh

# The node tier: a real kubelet node (containerd, CNI bridge, kube-proxy) on the test control plane,
# a DaemonSet pod reached through its ClusterIP, logs, exec and in-cluster API access, then teardown
# that restores the host. Needs root. docs/development.md, "The node tier".
test-node:
	$(call step,node: a real kubelet node; the chart installed from the repo's images, models Ready, openai via ClusterIP, upgrade/uninstall, RBAC + admission; host restored)
	hack/node/test-node.sh

# That node for development: `make node` prints KUBECONFIG=...; stop it with `make node-down`.
node:
	@hack/node/node.sh up

node-down:
	@hack/node/node.sh down

# Soak and faults (issue 12 §4) on one test cluster: client disconnects at the boards and through
# the gateway, 2x capacity, kill -9 of a board, an API server restart, schemathesis on the gateway.
# test-soak is the short run in make test (<= 4 min warm); soak is the full one (10 minutes of
# overload, ~20 min in all) and writes docs/bench/reliability.md. hack/soak/soak.sh has the knobs.
.PHONY: soak test-soak
test-soak: deps
	$(call step,soak (short): disconnects; 2x capacity; kill -9 a board; API server restart; gateway fuzz)
	hack/soak/soak.sh short

soak: deps
	$(call step,soak (full): the issue numbers; writes docs/bench/reliability.md)
	hack/soak/soak.sh full --report

# A developer's cluster without a board: `make cluster BOARDS=3` (stop it with make cluster-down).
BOARDS ?= 0

test: lint check-openapi check-crds test-bench-plots test-compose test-rust test-compat fuzz test-k8s test-chart test-cluster test-soak test-ui test-image test-node
	$(call step,all tests passed)
