# Kubernetes test tier and CRD generation; included by the root Makefile.
#
#   make cluster         start a loopback control plane for development, print KUBECONFIG=...
#   make cluster-down    stop it
#   make generate-crds   regenerate crds/yaml/ and the chart's crds/ from the Rust types
#   make check-crds      fail if those files differ from what the types generate
#   make test-k8s        build/cache the binaries, start a private cluster, run every check
#                        against it (kubectl and Rust tests), tear it down
#   make test-chart      the Helm chart: lint, template, schema, then on a private cluster a
#                        server-side dry run, helm install/upgrade/uninstall, RBAC (can-i) and
#                        the agents' admission policy with a real pod-bound token
#
# Everything builds with --release so it shares the root Makefile's cargo cache.

K8S_ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST)))/..)
CARGO_TARGET_DIR ?= $(HOME)/.cache/rockchip-llama/target
export CARGO_TARGET_DIR
OPERATOR_BIN := $(CARGO_TARGET_DIR)/release/rockchip-llama-operator
CRD_DIR := $(K8S_ROOT)/crds/yaml
CHART_CRD_DIR := $(K8S_ROOT)/charts/rockchip-llama/crds

.PHONY: cluster cluster-down generate-crds check-crds test-k8s test-chart k8s-bins operator-bin

k8s-bins:
	@$(K8S_ROOT)/hack/k8s/bins.sh >/dev/null

# BOARDS=N (root Makefile, default 0) adds the operator, an origin and N simulated boards.
cluster: k8s-bins
	@if [ "$(BOARDS)" != 0 ]; then cd $(K8S_ROOT) && cargo build --release -p rockchip-llama-agent -p rockchip-llama-operator && $(MAKE) -s rkllm-sim >/dev/null; fi
	@$(K8S_ROOT)/hack/testcluster.sh up --boards $(BOARDS)

cluster-down:
	@$(K8S_ROOT)/hack/testcluster.sh down

operator-bin:
	cd $(K8S_ROOT) && cargo build --release -p rockchip-llama-operator --bin rockchip-llama-operator

generate-crds: operator-bin
	rm -f $(CRD_DIR)/*.yaml $(CHART_CRD_DIR)/*.yaml
	$(OPERATOR_BIN) crd --out-dir $(CRD_DIR)
	mkdir -p $(CHART_CRD_DIR)
	cp $(CRD_DIR)/*.yaml $(CHART_CRD_DIR)/

check-crds: operator-bin
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(OPERATOR_BIN) crd --out-dir "$$tmp" 2>/dev/null && \
	if diff -ru "$$tmp" $(CRD_DIR) && diff -ru "$$tmp" $(CHART_CRD_DIR); then \
		echo "check-crds: crds/yaml and charts/rockchip-llama/crds match the Rust types"; \
	else \
		echo "check-crds: the generated CRD YAML differs from the Rust types in crds/; run \`make generate-crds\` and commit the result" >&2; \
		exit 1; \
	fi

test-k8s: check-crds
	$(K8S_ROOT)/hack/test-k8s.sh

# No Rust build: helm, kubectl and the control plane only (about a minute).
test-chart: k8s-bins
	$(K8S_ROOT)/hack/test-chart.sh
