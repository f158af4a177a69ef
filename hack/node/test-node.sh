#!/usr/bin/env bash
# The node tier (`make test-node`, part of `make test`): a real kubelet node on this machine
# (hack/node/node.sh), then phases run against it, then teardown, which also checks the host is as
# it was (teardown runs on failure and Ctrl-C too). Needs root.
#
# Phases (TESTNODE_PHASES, default "smoke chart"):
#   smoke  a DaemonSet + ClusterIP Service from the locally built test image: pod Running/Ready on
#          the node; the pod IP and the ClusterIP (kube-proxy) answer from the host; the ClusterIP
#          answers from inside the pod (hairpin); pod traffic beyond the node is dropped on the
#          host; `kubectl logs`; `kubectl exec`; and in-cluster
#          API access from the pod with its projected service-account token: discovery and a
#          SelfSubjectReview through https://<kubernetes ClusterIP>, certificate verified.
#   chart  hack/node/chart-phase.sh: the project's Helm chart with the product images (hack/image's
#          OCI archives, imported with node.sh load-image) on one simulated RK3588 board: lint,
#          server-side dry run, install, pods Ready, the NPU device plugin, the Board Ready, logs,
#          exec doctor, RBAC and the admission policy with the pods' own tokens, a GGUF and an
#          .rkllm ModelDeployment served to the official openai client through the gateway's
#          ClusterIP, helm upgrade, helm uninstall (docs/node-tier.md, "The chart phase"). Skipped,
#          saying so, when that file is absent. Its contract: the environment holds KUBECONFIG,
#          K8S_BIN (kubectl, helm), NODE_NAME, NODE_IP (an address pods and the host both reach:
#          bind host-side helpers such as a model origin there), POD_CIDR, SERVICE_CIDR, APISERVER,
#          TESTNODE_DIR and PATH with K8S_BIN first; pods use imagePullPolicy Never or IfNotPresent
#          (nothing is pulled); waits are bounded; cleanup is teardown's (it drains every workload),
#          except host processes the phase started itself.
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
START=$SECONDS
log() { printf '[test-node %s +%ds] %s\n' "$(date +%H:%M:%S)" "$((SECONDS - START))" "$*" >&2; }
fail() {
  log "FAIL: $*"
  exit 1
}

WORK="$(mktemp -d -t rockchip-llama-node.XXXXXX)"
export TESTNODE_DIR="$WORK/node"
export TESTNODE_KEEP_LOGS="$WORK/logs"
export KUBECACHEDIR="$WORK/kube-cache"
TIMES=()

cleanup() {
  local rc=$?
  trap - EXIT INT TERM ERR
  local t=$SECONDS
  log "teardown (node.sh down: drain, stop, restore the host, compare it with before)"
  if ! hack/node/node.sh down; then
    log "teardown found the host changed (see above)"
    ((rc != 0)) || rc=1
  fi
  TIMES+=("teardown $((SECONDS - t))s")
  if ((rc == 0)); then
    rm -rf "$WORK"
    log "passed in $((SECONDS - START)) s (${TIMES[*]})"
  else
    log "FAILED (exit $rc); logs kept in $WORK/logs"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Every API call is bounded (exec and logs included: the smoke phase's are short).
kubectl() { command kubectl --request-timeout=30s "$@"; }

# Polls a command until it succeeds or the deadline passes.
# shellcheck source=hack/lib/check.sh
. hack/lib/check.sh

# A DaemonSet with 0 desired pods counts as rolled out, so check the numbers, not only status.
ds_ready() { # namespace name
  [[ "$(kubectl -n "$1" get ds "$2" -o jsonpath='{.status.desiredNumberScheduled}/{.status.numberReady}')" == 1/1 ]]
}

# --- smoke ------------------------------------------------------------------------------------
phase_smoke() {
  local ns=node-smoke
  log "smoke: DaemonSet + ClusterIP Service from localhost/rockchip-llama-testpod:v1"
  kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Namespace
metadata: {name: $ns}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: testpod, namespace: $ns}
spec:
  selector: {matchLabels: {app: testpod}}
  template:
    metadata: {labels: {app: testpod}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: testpod
        image: localhost/rockchip-llama-testpod:v1
        imagePullPolicy: Never
        ports: [{containerPort: 8080}]
        readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 1}
        resources: {requests: {cpu: 10m, memory: 16Mi}, limits: {memory: 64Mi}}
        securityContext:
          runAsNonRoot: true
          readOnlyRootFilesystem: true
          allowPrivilegeEscalation: false
          capabilities: {drop: [ALL]}
---
apiVersion: v1
kind: Service
metadata: {name: testpod, namespace: $ns}
spec:
  selector: {app: testpod}
  ports: [{port: 80, targetPort: 8080}]
EOF
  if ! poll 120 ds_ready "$ns" testpod; then
    kubectl -n "$ns" get ds,pods -o wide >&2 || true
    kubectl -n "$ns" describe pods >&2 || true
    fail "the DaemonSet's pod is not Ready on $NODE_NAME after 120 s"
  fi
  local pod pod_ip node cip out
  pod="$(kubectl -n "$ns" get pods -l app=testpod -o jsonpath='{.items[0].metadata.name}')"
  pod_ip="$(kubectl -n "$ns" get pod "$pod" -o jsonpath='{.status.podIP}')"
  node="$(kubectl -n "$ns" get pod "$pod" -o jsonpath='{.spec.nodeName}')"
  [[ "$node" == "$NODE_NAME" ]] || fail "pod $pod runs on '$node', not $NODE_NAME"
  log "smoke: pod $pod Running and Ready on $node, IP $pod_ip"

  out="$(curl -sf --max-time 5 "http://$pod_ip:8080/")" || fail "pod IP $pod_ip:8080 unreachable from the host"
  [[ "$out" == *"hello from $pod"* ]] || fail "unexpected answer from the pod: $out"
  log "smoke: the pod answers on its IP from the host"

  cip="$(kubectl -n "$ns" get svc testpod -o jsonpath='{.spec.clusterIP}')"
  # kube-proxy programs a new Service within a second or so: poll (bounded).
  poll 30 curl -sf --max-time 2 "http://$cip/" || fail "ClusterIP $cip:80 does not answer from the host after 30 s"
  out="$(curl -sf --max-time 5 "http://$cip/")"
  [[ "$out" == *"hello from $pod"* ]] || fail "unexpected answer through the ClusterIP: $out"
  log "smoke: ClusterIP $cip:80 answers from the host (kube-proxy)"

  out="$(kubectl -n "$ns" logs "$pod")" || fail "kubectl logs failed"
  [[ "$out" == *"listening on"* && "$out" == *"request GET /"* ]] || fail "kubectl logs shows no server output: $out"
  log "smoke: kubectl logs shows the container's output"

  out="$(kubectl -n "$ns" exec "$pod" -- /testpod get "http://$cip/")" || fail "kubectl exec (GET the ClusterIP from the pod) failed"
  [[ "$out" == *"hello from $pod"* ]] || fail "unexpected answer inside the pod: $out"
  log "smoke: kubectl exec works; the pod reaches its own Service (hairpin)"

  # 203.0.113.1 (TEST-NET-3) is routed out of the host's default interface: the node's FORWARD
  # rule must drop it before it leaves.
  local drops
  kubectl -n "$ns" exec "$pod" -- /testpod get http://203.0.113.1/ 2 >/dev/null 2>&1 &&
    fail "a pod reached 203.0.113.1 through the host"
  drops="$(iptables -w -L FORWARD -v -x -n | awk '/rockchip-llama-testnode egress/ {print $1}')"
  ((${drops:-0} > 0)) || fail "pod egress was not dropped by the node's FORWARD rule"
  log "smoke: pod traffic beyond the node is dropped on the host ($drops packets)"

  out="$(kubectl -n "$ns" exec "$pod" -- /testpod apicheck)" || fail "in-cluster API access from the pod failed: $out"
  python3 - "$out" "$ns" "$NODE_NAME" <<'EOF' || fail "in-cluster API check: unexpected identity: $out"
import json, sys
r = json.loads(sys.argv[1])
assert r["username"] == f"system:serviceaccount:{sys.argv[2]}:default", r
assert r["nodeName"] == [sys.argv[3]], r  # pod-bound token: the node-name claim
assert r["apiserver"] == "https://10.0.0.1:443", r
EOF
  log "smoke: the pod called the API server at https://10.0.0.1:443 with its token ($out)"
}

# --- chart (a hook; see the header) -------------------------------------------------------------
phase_chart() {
  if [[ -x hack/node/chart-phase.sh ]]; then
    log "chart: hack/node/chart-phase.sh"
    hack/node/chart-phase.sh
  else
    log "chart: skipped, hack/node/chart-phase.sh is missing"
  fi
}

log "node up (hack/node/node.sh up)"
t=$SECONDS
hack/node/node.sh up >"$WORK/env"
set -a
# shellcheck disable=SC1091
source "$WORK/env"
set +a
export PATH="$K8S_BIN:$PATH"
TIMES+=("node-up $((SECONDS - t))s")

for phase in ${TESTNODE_PHASES:-smoke chart}; do
  t=$SECONDS
  "phase_$phase"
  TIMES+=("$phase $((SECONDS - t))s")
done
