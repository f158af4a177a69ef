#!/usr/bin/env bash
# The cluster tier of `make test`, in two clusters, each a real kube-apiserver, the operator and
# three simulated boards (hack/testcluster.sh up --boards 3):
#   1. controller: board-3 is an RK3576 with 4 GiB; tests/cluster/run.py drives ModelDeployments
#      through their life and checks boards, stores and the origin's log;
#   2. gateway: three RK3588 boards that require the cluster token, gateway client keys and a
#      short gateway queue; tests/cluster/gateway.py routes, fails and overloads through it, then
#      tests/cluster/autoscale.py scales a deployment to zero and back.
# Each cluster is torn down after its tests and on exit, failure included; logs printed on failure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rockchip-llama/target}"
log() { printf '[test-cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

START=$SECONDS
log "building the agent and the operator (release profile)"
cargo build --release -p rockchip-llama-agent -p rockchip-llama-operator
BIN="$(hack/k8s/bins.sh)"
export PATH="$BIN:$PATH"

WORK="$(mktemp -d -t rockchip-llama-cluster.XXXXXX)"
export TESTCLUSTER_DIR="$WORK/cluster"
export KUBECACHEDIR="$WORK/kube-cache"
export TESTCLUSTER_BOARD_SOCS="rk3588 rk3588 rk3576"
export TESTCLUSTER_BOARD_MEM_GIB="16 16 4"
# Unassigned blobs beyond 50 MB are evicted: the ~100 MB test GGUF goes once unassigned.
export TESTCLUSTER_STORE_BUDGET=50MB
cleanup() {
  local rc=$?
  if ((rc != 0)) && [[ -d "$TESTCLUSTER_DIR/logs" ]]; then
    for f in "$TESTCLUSTER_DIR"/logs/{operator,board-1,board-2,board-3}.log; do
      [[ -f "$f" ]] && { echo "--- last lines of $f"; tail -n 40 "$f"; }
    done
  fi
  hack/testcluster.sh down || true
  rm -rf "$WORK"
  if ((rc == 0)); then log "passed in $((SECONDS - START)) s"; else log "FAILED (exit $rc)"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

export KUBECONFIG
log "cluster 1 of 2: the controller"
hack/testcluster.sh up --boards 3 >"$WORK/up.out"
cat "$WORK/up.out"
KUBECONFIG="$(sed -n 's/^KUBECONFIG=//p' "$WORK/up.out")"
timeout 1200 python3 tests/cluster/run.py "$WORK/up.out"
hack/testcluster.sh down

log "cluster 2 of 2: the gateway"
unset TESTCLUSTER_BOARD_SOCS TESTCLUSTER_BOARD_MEM_GIB TESTCLUSTER_STORE_BUDGET
export TESTCLUSTER_REQUIRE_TOKEN=1
export TESTCLUSTER_GATEWAY_KEYS=$'gw-test-key\ngw-limited-key smollm2'
export TESTCLUSTER_GATEWAY_ARGS="--queue-depth 4 --gateway-workers 2"
hack/testcluster.sh up --boards 3 >"$WORK/up.out"
cat "$WORK/up.out"
KUBECONFIG="$(sed -n 's/^KUBECONFIG=//p' "$WORK/up.out")"
timeout 1500 python3 tests/cluster/gateway.py "$WORK/up.out"
log "cluster 2: autoscaling to zero and back"
timeout 900 "$(hack/pyenv.sh)" tests/cluster/autoscale.py "$WORK/up.out"
