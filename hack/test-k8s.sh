#!/usr/bin/env bash
# The Kubernetes test tier: a private control plane on loopback, the generated CRDs installed,
# and every check issue 4 asks for run against it — kubectl-level checks here, typed-client
# round trips in operator/tests/apiserver.rs. The cluster is torn down on exit, failure
# included. Needs: Go >= 1.26 (first run only), python3, openssl, curl, cargo.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rockchip-llama/target}"

log() { printf '[test-k8s %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

START=$SECONDS
BIN="$(hack/k8s/bins.sh)"
export PATH="$BIN:$PATH"

# Build everything before the cluster starts, so the cluster's lifetime is the checks only.
log "building the operator and the test binaries (release profile)"
cargo build --release -p rockchip-llama-operator --bin rockchip-llama-operator
cargo test --release -p crds -p rockchip-llama-operator --no-run

WORK="$(mktemp -d -t rockchip-llama-k8s.XXXXXX)"
export TESTCLUSTER_DIR="$WORK/cluster"
# kubectl's discovery cache lives with the cluster, so no stale cache from another run applies.
export KUBECACHEDIR="$WORK/kube-cache"
cleanup() {
  local rc=$?
  hack/testcluster.sh down || true
  rm -rf "$WORK"
  if ((rc == 0)); then
    log "passed in $((SECONDS - START)) s"
  else
    log "FAILED (exit $rc)"
  fi
  exit "$rc"
}
trap cleanup EXIT
# Turn Ctrl-C and SIGTERM into a normal exit so the EXIT trap tears the cluster down.
trap 'exit 130' INT
trap 'exit 143' TERM

line="$(hack/testcluster.sh up)"
export KUBECONFIG="${line#KUBECONFIG=}"

FAILURES=0
pass() { log "ok   - $*"; }
fail() {
  log "FAIL - $*"
  FAILURES=$((FAILURES + 1))
}

# Retries a command for up to $1 seconds (discovery and OpenAPI publication lag a CRD's
# Established condition by a moment).
retry() { # seconds cmd...
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.5
  done
}

# --- CRDs install and become Established ------------------------------------------------------
kubectl apply -f crds/yaml/ >/dev/null
if kubectl wait --for=condition=Established --timeout=60s \
  crd/modeldeployments.rockchipllama.io crd/boards.rockchipllama.io >/dev/null; then
  pass "CRDs install and become Established"
else
  fail "CRDs did not become Established"
fi
retry 30 kubectl get md -A || fail "the md short name is not served"
retry 30 kubectl explain md.spec.source || fail "no OpenAPI for md"
# The chart's copy must be installable too (identical today; check-crds guards that).
if kubectl apply --dry-run=server -f charts/rockchip-llama/crds/ >/dev/null; then
  pass "chart CRDs pass server-side dry run"
else
  fail "chart CRDs rejected"
fi

NS="rl-test-$$"
kubectl create namespace "$NS" >/dev/null

# --- every example applies ----------------------------------------------------------------------
for f in models/examples/*.yaml; do
  if out="$(kubectl apply -n "$NS" -f "$f" 2>&1)"; then
    pass "example applies: $f"
  else
    fail "example rejected: $f: $out"
  fi
done

# --- each CEL rule rejects its own bad manifest with its message --------------------------------
for f in models/examples/invalid/*.yaml; do
  expect="$(sed -n 's/^# expect: //p' "$f")"
  if out="$(kubectl apply -n "$NS" -f "$f" 2>&1)"; then
    fail "accepted but must be rejected: $f"
  elif grep -qF -- "$expect" <<<"$out"; then
    pass "rejected with its message: $f"
  else
    fail "rejected without the expected message ($expect): $f: $out"
  fi
done

# --- server-side defaults -------------------------------------------------------------------------
got="$(kubectl get md -n "$NS" smollm2-135m \
  -o jsonpath='{.spec.runtime.keepAlive} {.spec.runtime.embedFlash} {.spec.routing.prefixChars}')"
if [[ "$got" == "5m false 1024" ]]; then
  pass "API server applies defaults"
else
  fail "defaults: got '$got', want '5m false 1024'"
fi

# --- printer columns ------------------------------------------------------------------------------
kubectl patch md -n "$NS" smollm2-135m --subresource=status --type=merge \
  -p '{"status":{"readyReplicas":2,"replicas":2}}' >/dev/null
table="$(kubectl get md -n "$NS")"
if head -1 <<<"$table" | grep -qE '^NAME +MODEL +READY +FORMAT +AGE$' &&
  grep -qE '^smollm2-135m +smollm2-135m-instruct +2 +gguf ' <<<"$table"; then
  pass "kubectl get md shows Model, Ready, Format, Age"
else
  fail "kubectl get md columns:"$'\n'"$table"
fi

kubectl apply -f hack/k8s/fixtures/board.yaml >/dev/null
kubectl patch board test-board-1 --subresource=status --type=merge -p '{"status":{
  "soc":"rk3588","loadedModels":1,"thermal":{"maxCelsius":51.5},
  "conditions":[{"type":"Ready","status":"True","reason":"Heartbeating","message":"",
                 "lastTransitionTime":"2026-01-01T00:00:00Z"}]}}' >/dev/null
table="$(kubectl get boards)"
if head -1 <<<"$table" | grep -qE '^NAME +SOC +READY +MODELS +TEMP +AGE$' &&
  grep -qE '^test-board-1 +rk3588 +True +1 +51.5 ' <<<"$table"; then
  pass "kubectl get boards shows SoC, Ready, Models, Temp, Age"
else
  fail "kubectl get boards columns:"$'\n'"$table"
fi
kubectl delete board test-board-1 >/dev/null

# --- kubectl explain prints the field docs ----------------------------------------------------------
explain="$(kubectl explain md.spec.source)"
if grep -qF 'SHA-256 of the file' <<<"$explain" && grep -qF 'Location of the model file' <<<"$explain"; then
  pass "kubectl explain md.spec.source prints the field docs"
else
  fail "kubectl explain md.spec.source:"$'\n'"$explain"
fi

# --- status writes do not bump metadata.generation ----------------------------------------------------
gen() { kubectl get md -n "$NS" qwen3-0.6b -o jsonpath='{.metadata.generation}'; }
before="$(gen)"
kubectl patch md -n "$NS" qwen3-0.6b --subresource=status --type=merge \
  -p '{"status":{"observedGeneration":1,"readyReplicas":1}}' >/dev/null
after_status="$(gen)"
kubectl patch md -n "$NS" qwen3-0.6b --type=merge -p '{"spec":{"replicas":1}}' >/dev/null
after_spec="$(gen)"
if [[ "$before" == 1 && "$after_status" == 1 && "$after_spec" == 2 ]]; then
  pass "status writes keep metadata.generation; spec writes bump it"
else
  fail "generation: before=$before after-status=$after_status after-spec=$after_spec"
fi

# --- typed client round trips (create, get, SSA status, watch, admission) ----------------------------
log "running the Rust tests that need the API server"
if ROCKCHIP_LLAMA_TEST_KUBECONFIG="$KUBECONFIG" \
  cargo test --release -p crds -p rockchip-llama-operator -- --ignored; then
  pass "kube client round trips (operator/tests/apiserver.rs)"
else
  fail "kube client round trips"
fi

# --- the controller-manager makes namespace deletion real --------------------------------------------
if kubectl delete namespace "$NS" --timeout=60s >/dev/null; then
  pass "namespace deletion completes (kube-controller-manager runs)"
else
  fail "namespace $NS did not finish deleting"
fi

if ((FAILURES > 0)); then
  log "$FAILURES check(s) failed"
  exit 1
fi
