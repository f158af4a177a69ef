#!/usr/bin/env bash
# The status page in a real headless Chromium (make test-ui; docs/status-page.md):
#   1. one agent alone with an API key (tests/ui/status_page.py agent);
#   2. the gateway of a test cluster with three simulated boards (hack/testcluster.sh up --boards 3):
#      the boards listed, a ModelDeployment appearing after kubectl apply.
# Installs Debian's chromium and chromium-driver (hack/install-deps.sh) and Selenium (the test
# venv, hack/pyenv.sh). Everything started here binds 127.0.0.1 on ports picked at run time and is
# stopped on exit, failure included.
#   UI_SCREENSHOT=docs/status-page.png   also save the cluster page's screenshot there
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rockchip-llama/target}"
log() { printf '[test-ui %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

START=$SECONDS
hack/install-deps.sh chromium chromium-driver
log "building the agent and the operator (release profile)"
cargo build --release -p rockchip-llama-agent -p rockchip-llama-operator
py="$(hack/pyenv.sh)"
BIN="$(hack/k8s/bins.sh)"
export PATH="$BIN:$PATH"

WORK="$(mktemp -d -t rockchip-llama-ui.XXXXXX)"
export TESTCLUSTER_DIR="$WORK/cluster"
export KUBECACHEDIR="$WORK/kube-cache"
cleanup() {
  local rc=$?
  if ((rc != 0)); then
    for f in "$WORK"/agent/agent.log "$TESTCLUSTER_DIR"/logs/operator.log; do
      [[ -f "$f" ]] && { echo "--- last lines of $f"; tail -n 30 "$f"; }
    done
  fi
  hack/testcluster.sh down >/dev/null 2>&1 || true
  rm -rf "$WORK"
  if ((rc == 0)); then log "passed in $((SECONDS - START)) s"; else log "FAILED (exit $rc)"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "part 1 of 2: one agent's page"
mkdir -p "$WORK/agent"
timeout 300 "$py" tests/ui/status_page.py agent "$WORK/agent"

log "part 2 of 2: the gateway's page over a test cluster of 3 boards"
hack/testcluster.sh up --boards 3 >"$WORK/up.out"
export KUBECONFIG
KUBECONFIG="$(sed -n 's/^KUBECONFIG=//p' "$WORK/up.out")"
shot=()
[[ -n "${UI_SCREENSHOT:-}" ]] && shot=(--screenshot "$(realpath -m "$UI_SCREENSHOT")")
timeout 600 "$py" tests/ui/status_page.py cluster "$WORK/up.out" "${shot[@]}"
