#!/usr/bin/env bash
# The node tier's chart phase (run by hack/node/test-node.sh on a node that hack/node/node.sh
# started; docs/node-tier.md, "The chart phase"): the project's Helm chart with the product images
# on a real kubelet, one simulated RK3588 board, and a model served through the gateway.
#
#   images     the agent and operator OCI archives (hack/image; built here when missing) imported
#              into the node's containerd (node.sh load-image); nothing is ever pulled
#   static     helm lint --strict; helm template | kubectl apply --dry-run=server
#   install    the node labelled as the agent's nodeSelector wants; a board directory under
#              $TESTNODE_DIR: the fixture sysfs (hack/fixtures/rk3588, agent.hostInfo.fixturePath),
#              rkllm-sim as the host's librkllmrt.so (agent.rkllm.library), the store
#              (agent.store.hostPath); a stand-in NPU character device (c 1:3, /dev/null's numbers)
#              in /dev/rockchip-llama-testnode/ for the device plugin (devicePlugin.devices and
#              .hostPaths); helm install with the loaded images and pullPolicy IfNotPresent; the
#              operator's two replicas Running and Ready, the device plugin and agent DaemonSets
#              1/1 on the node, the node advertising one rockchipllama.io/npu
#   board      the Board Ready with the fixture's SoC and memory and rkllm-sim's runtime version;
#              the agent's container holds the NPU node the plugin handed over; kubectl logs;
#              kubectl exec ... rockchip-llama-agent doctor
#   rbac       kubectl auth can-i for each service account (operator and agent with their own
#              pod-bound tokens, the plugin by impersonation), allowed and denied; the agent pod's
#              real token (read from inside the pod) may patch its own Board's status and is denied
#              on another Board, on its own Board's spec and on the operator's leader Lease
#   serve      an origin (hack/py/origin.py) on NODE_IP; two ModelDeployments (SmolLM2 GGUF on
#              llama.cpp, a simulated .rkllm on rkllm-sim) Ready; tests/node/chart.py with the
#              official openai client from the host through the gateway Service's ClusterIP
#   upgrade    helm upgrade --set logLevel=debug rolls the operator and the agent; the new pods log
#              at debug, the cluster token is kept, the agent finds its models in the hostPath
#              store (the origin sends nothing more) and both models answer again
#   uninstall  the ModelDeployments deleted first (their finalizer needs the controller), helm
#              uninstall; every object of the release gone, pods gone, the CRDs kept, and only the
#              run-time objects docs/helm.md lists left (the Board, its Lease, the leader Lease)
#
# Environment: test-node.sh's contract (KUBECONFIG, K8S_BIN first on PATH, NODE_NAME, NODE_IP,
# APISERVER, TESTNODE_DIR, ...). Every wait is bounded; on a failure it prints the release's pods,
# descriptions, logs, Boards, ModelDeployments and events, and exits 1. Its own host process (the
# origin) is stopped on exit; everything else is teardown's (node.sh down drains the node and
# removes the board directory and /dev/rockchip-llama-testnode).
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
: "${KUBECONFIG:?}" "${K8S_BIN:?}" "${NODE_NAME:?}" "${NODE_IP:?}" "${APISERVER:?}" "${TESTNODE_DIR:?}"
START=$SECONDS
STEP_T=$SECONDS
NS=rockchip-llama
RELEASE=rockchip-llama
CHART=charts/rockchip-llama
MD_NS=default
# The controller's leader Lease (operator/src/controller/leader.rs), in the release namespace.
LEADER_LEASE=rockchip-llama-operator
# node.sh down removes this directory (HOST_PATHS); the device plugin's values must name /dev/.
NPU_DIR=/dev/rockchip-llama-testnode
BOARD="$TESTNODE_DIR/board"
# Logs under $TESTNODE_DIR/logs are kept by test-node.sh when a run fails.
LOGS="$TESTNODE_DIR/logs/chart"
WORK="$TESTNODE_DIR/chart"
CACHE="${ROCKCHIP_LLAMA_CACHE:-$HOME/.cache/rockchip-llama}"
export HELM_CACHE_HOME="$WORK/helm/cache" HELM_CONFIG_HOME="$WORK/helm/config" HELM_DATA_HOME="$WORK/helm/data"
mkdir -p "$LOGS" "$WORK" "$BOARD"

# Bounds, seconds (2 shared cores; a cold agent start loads nothing, a model loads in seconds).
POD_TIMEOUT=180
BOARD_TIMEOUT=90
MODEL_TIMEOUT=300
ROLLOUT_TIMEOUT=300
GONE_TIMEOUT=120

log() { printf '[chart-phase %s +%ds] %s\n' "$(date +%H:%M:%S)" "$((SECONDS - START))" "$*" >&2; }
pass() { log "ok - $*"; }
STEPS=()
STEP_NAME=""
step() { # name description
  [[ -z "$STEP_NAME" ]] || STEPS+=("$STEP_NAME $((SECONDS - STEP_T))s")
  STEP_NAME="$1"
  STEP_T=$SECONDS
  log "--- $1: $2"
}

# Every API call is bounded; exec and logs included. helm's own --timeout covers only its waits.
kubectl() { command kubectl --request-timeout=30s "$@"; }
helm() { timeout 180 "$K8S_BIN/helm" "$@"; }

ORIGIN_PID=""
stop_origin() {
  if [[ -n "$ORIGIN_PID" ]] && kill -0 "$ORIGIN_PID" 2>/dev/null; then
    kill -TERM "$ORIGIN_PID" 2>/dev/null || true
    wait "$ORIGIN_PID" 2>/dev/null || true
  fi
  ORIGIN_PID=""
}

# What explains a failure: the release's pods and their descriptions and logs, Boards,
# ModelDeployments, the node, events, the origin's last requests.
diagnostics() {
  set +e
  log "diagnostics"
  {
    echo "=== nodes"
    kubectl get nodes -o wide
    kubectl describe node "$NODE_NAME" | sed -n '/^Capacity:/,/^Events:/p'
    echo "=== namespace $NS"
    kubectl get all,leases,secrets -n "$NS" -o wide
    echo "=== pods described"
    kubectl describe pods -n "$NS"
    local p c
    for p in $(kubectl get pods -n "$NS" -o jsonpath='{.items[*].metadata.name}'); do
      for c in $(kubectl get pod -n "$NS" "$p" -o jsonpath='{.spec.containers[*].name}'); do
        echo "=== logs $p/$c (last 60 lines)"
        kubectl logs -n "$NS" "$p" -c "$c" --tail=60
        if [[ "$(kubectl get pod -n "$NS" "$p" -o jsonpath='{.status.containerStatuses[0].restartCount}')" != 0 ]]; then
          echo "=== logs $p/$c, previous container"
          kubectl logs -n "$NS" "$p" -c "$c" --previous --tail=60
        fi
      done
    done
    echo "=== boards"
    kubectl get boards -o yaml
    echo "=== modeldeployments"
    kubectl get md -A -o yaml
    echo "=== events"
    kubectl get events -A --sort-by=.lastTimestamp | tail -n 40
    if [[ -f "$LOGS/origin-requests.jsonl" ]]; then
      echo "=== origin: last requests"
      tail -n 5 "$LOGS/origin-requests.jsonl"
    fi
  } >&2 2>&1
  log "diagnostics end (node logs: $TESTNODE_DIR/logs, kept by test-node.sh on failure)"
}

fail() {
  trap - ERR
  log "FAIL - $*"
  diagnostics
  exit 1
}
trap 'fail "command failed (line $LINENO): $BASH_COMMAND"' ERR
trap 'stop_origin' EXIT
trap 'exit 130' INT TERM

# poll (bounded), and denied calling pass and fail above.
# shellcheck source=hack/lib/check.sh
. hack/lib/check.sh

# --- images ----------------------------------------------------------------------------------------
step images "the agent and operator OCI archives (hack/image) into the node's containerd"
ARCH="$(case "$(uname -m)" in x86_64) echo amd64 ;; aarch64) echo arm64 ;; *) uname -m ;; esac)"
declare -A REF
for c in agent operator; do
  archive="$CACHE/images/$c-$ARCH.oci.tar"
  if [[ ! -f "$archive" ]]; then
    # `make test` built them in test-image already; alone on a fresh machine this is the image
    # tier's cold build (docs/development.md: up to ~45 min for both on 2 cores).
    log "$archive missing: building it (hack/image/build.sh $c $ARCH; progress below)"
    hack/image/install.sh
    IMAGE_REPO=localhost IMAGE_CARGO_SEED=1 nice -n 10 hack/image/build.sh "$c" "$ARCH" >/dev/null
  fi
  # The archive's reference and the revision it was built from (its labels).
  read -r ref revision < <(python3 - "$archive" <<'EOF'
import json, sys, tarfile
t = tarfile.open(sys.argv[1])
blob = lambda d: json.load(t.extractfile("blobs/" + d.replace(":", "/")))
m = json.load(t.extractfile("index.json"))["manifests"][0]
cfg = blob(blob(m["digest"])["config"]["digest"])
print(m.get("annotations", {}).get("org.opencontainers.image.ref.name", "-"),
      cfg.get("config", {}).get("Labels", {}).get("org.opencontainers.image.revision", "unknown"))
EOF
  )
  [[ "$ref" == localhost/rockchip-llama-$c:* ]] || fail "$archive: reference '$ref', want localhost/rockchip-llama-$c:<version>"
  REF[$c]="$ref"
  head="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
  [[ "${revision%-dirty}" == "$head" ]] ||
    log "note: $c image built from revision $revision, HEAD is $head (make image COMPONENT=$c rebuilds it)"
  timeout 300 hack/node/node.sh load-image "$archive" >"$LOGS/load-$c.log" 2>&1 ||
    fail "node.sh load-image $archive: $(cat "$LOGS/load-$c.log")"
  pass "$c: $ref imported from $archive ($(du -h "$archive" | cut -f1))"
done
loaded="$(ctr --address "$TESTNODE_DIR/containerd/containerd.sock" -n k8s.io images ls -q)"
for c in agent operator; do
  grep -qxF "${REF[$c]}" <<<"$loaded" || fail "${REF[$c]} is not in the node's containerd after load-image"
done
TAG="${REF[agent]##*:}"
[[ "${REF[operator]##*:}" == "$TAG" ]] || fail "agent and operator images have different tags: ${REF[*]}"

# --- the simulated board ---------------------------------------------------------------------------
step board-setup "the simulated board: fixture sysfs, rkllm-sim as librkllmrt.so, store, stand-in NPU device"
rm -rf "$BOARD/sysfs"
cp -r hack/fixtures/rk3588 "$BOARD/sysfs"
mkdir -p "$BOARD/rkllm" "$BOARD/store"
log "rkllm-sim: make rkllm-sim (built already by make test-rust; else a cargo build of a minute or two)"
sim="$(make -s --no-print-directory rkllm-sim 2>"$LOGS/rkllm-sim-build.log")" || fail "make rkllm-sim failed (see $LOGS/rkllm-sim-build.log)"
# A copy, so a rebuild of the simulator cannot change the file under the running pod.
cp "$(head -n1 <<<"$sim")" "$BOARD/rkllm/librkllmrt.so"
SIM_MODEL="$(grep -m1 '/Qwen3-0.6B-sim_w8a8_rk3588\.rkllm$' <<<"$sim")" || fail "rkllm-sim printed no Qwen3-0.6B rk3588 model"
mkdir -p "$NPU_DIR"
[[ -c "$NPU_DIR/rknpu" ]] || mknod -m 0660 "$NPU_DIR/rknpu" c 1 3
kubectl label node "$NODE_NAME" --overwrite node-restriction.kubernetes.io/rockchip-llama-board=true >/dev/null
FIXTURE_MEM=$(($(awk '/^MemTotal:/ {print $2}' "$BOARD/sysfs/proc/meminfo") * 1024))
pass "board directory $BOARD; $NPU_DIR/rknpu (c 1:3); node $NODE_NAME labelled node-restriction.kubernetes.io/rockchip-llama-board=true"

# Repositories without the registry (image.registry adds "localhost") and without the tag.
AGENT_REPO="${REF[agent]#localhost/}"
OPERATOR_REPO="${REF[operator]#localhost/}"
cat >"$WORK/values.yaml" <<EOF
# The node tier's values: the images loaded above, and one simulated board.
image: {registry: localhost, tag: "$TAG", pullPolicy: IfNotPresent}
operator:
  image: {repository: ${OPERATOR_REPO%:*}}
agent:
  image: {repository: ${AGENT_REPO%:*}}
  rkllm: {library: $BOARD/rkllm/librkllmrt.so}
  hostInfo: {fixturePath: $BOARD/sysfs}
  store: {type: hostPath, hostPath: $BOARD/store}
  # The fixture describes 8 cores (big cores 4-7); this machine may have fewer.
  extraEnv: [{name: ROCKCHIP_LLAMA_THREADS, value: "1"}]
devicePlugin:
  devices: [$NPU_DIR/rknpu]
  hostPaths: [{path: $NPU_DIR, type: Directory}]
EOF
VALUES=(-f "$WORK/values.yaml")

# --- static ----------------------------------------------------------------------------------------
step static "helm lint, helm template | kubectl apply --dry-run=server"
out="$(helm lint --strict "$CHART" "${VALUES[@]}" 2>&1)" || fail "helm lint --strict: $out"
pass "helm lint --strict (these values)"
kubectl create namespace "$NS" >/dev/null
helm template "$RELEASE" "$CHART" -n "$NS" --include-crds "${VALUES[@]}" >"$WORK/rendered.yaml"
out="$(kubectl apply --dry-run=server -f "$WORK/rendered.yaml" 2>&1)" || fail "server-side dry run: $out"
pass "helm template | kubectl apply --dry-run=server: $(wc -l <<<"$out") objects accepted"
for c in agent operator; do
  grep -qF "image: ${REF[$c]}" "$WORK/rendered.yaml" || fail "the rendering does not use ${REF[$c]}"
done
[[ "$(grep -c 'imagePullPolicy: IfNotPresent' "$WORK/rendered.yaml")" == 3 ]] || fail "not every container has imagePullPolicy IfNotPresent"

# --- install ---------------------------------------------------------------------------------------
step install "helm install $RELEASE -n $NS"
out="$(helm install "$RELEASE" "$CHART" -n "$NS" "${VALUES[@]}" --timeout 60s 2>&1)" || fail "helm install: $out"
pass "helm install: $(grep -m1 '^STATUS' <<<"$out")"

ds_ready() { # name
  [[ "$(kubectl -n "$NS" get ds "$1" -o jsonpath='{.status.desiredNumberScheduled}/{.status.numberReady}')" == 1/1 ]]
}
operator_ready() {
  [[ "$(kubectl -n "$NS" get deploy "$RELEASE-operator" -o jsonpath='{.status.readyReplicas}/{.status.updatedReplicas}/{.status.replicas}')" == 2/2/2 ]]
}
poll "$POD_TIMEOUT" operator_ready || fail "the operator's 2 replicas are not Ready after $POD_TIMEOUT s"
poll "$POD_TIMEOUT" ds_ready "$RELEASE-device-plugin" || fail "the device plugin's pod is not Ready on $NODE_NAME after $POD_TIMEOUT s"
poll "$POD_TIMEOUT" ds_ready "$RELEASE-agent" || fail "the agent's pod is not Ready on $NODE_NAME after $POD_TIMEOUT s"
pods_line() { # component
  kubectl -n "$NS" get pods -l "app.kubernetes.io/component=$1" \
    -o jsonpath='{range .items[*]}{.metadata.name}:{.status.phase}:{.spec.nodeName}:{.status.containerStatuses[0].ready}:{.status.containerStatuses[0].restartCount}:{.spec.containers[0].image} {end}'
}
for comp in operator agent device-plugin; do
  line="$(pods_line "$comp")"
  for p in $line; do
    IFS=: read -r name phase node ready restarts image tag <<<"$p"
    [[ "$phase" == Running && "$node" == "$NODE_NAME" && "$ready" == true && "$restarts" == 0 ]] ||
      fail "$comp pod $name: phase $phase, node $node, ready $ready, restarts $restarts"
    want="${REF[agent]}"
    [[ "$comp" == operator ]] && want="${REF[operator]}"
    [[ "$image:$tag" == "$want" ]] || fail "$comp pod $name runs $image:$tag, want $want"
  done
  pass "$comp: $(wc -w <<<"$line") pod(s) Running and Ready on $NODE_NAME, no restarts, image ${image}:$tag"
done
npu="$(kubectl get node "$NODE_NAME" -o jsonpath='{.status.allocatable.rockchipllama\.io/npu}')"
[[ "$npu" == 1 ]] || fail "node $NODE_NAME allocatable rockchipllama.io/npu is '$npu', want 1 (device plugin)"
pass "node $NODE_NAME advertises rockchipllama.io/npu: 1 (the device plugin registered with the kubelet)"
AGENT_POD="$(kubectl -n "$NS" get pods -l app.kubernetes.io/component=agent -o jsonpath='{.items[0].metadata.name}')"
AGENT_IP="$(kubectl -n "$NS" get pod "$AGENT_POD" -o jsonpath='{.status.podIP}')"

# --- board -----------------------------------------------------------------------------------------
step board "the Board, the NPU node in the agent's container, kubectl logs, doctor"
board_ready() {
  [[ "$(kubectl get board "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}:{.status.endpoint}')" == "True:http://$AGENT_IP:8080" ]]
}
poll "$BOARD_TIMEOUT" board_ready || fail "Board $NODE_NAME not Ready with endpoint http://$AGENT_IP:8080 after $BOARD_TIMEOUT s"
IFS=: read -r soc mem rt abi <<<"$(kubectl get board "$NODE_NAME" -o jsonpath='{.status.soc}:{.status.memory.totalBytes}:{.status.npu.runtimeVersion}:{.status.npu.abi}')"
[[ "$soc" == rk3588 ]] || fail "Board soc '$soc', want rk3588 (the fixture's device tree)"
[[ "$mem" == "$FIXTURE_MEM" ]] || fail "Board memory.totalBytes $mem, want the fixture's $FIXTURE_MEM (the fixture mount)"
[[ "$rt:$abi" == 1.2.*:1.2 ]] || fail "Board npu runtime '$rt' ABI '$abi', want rkllm-sim's 1.2.x / 1.2 (agent.rkllm.library)"
pass "Board $NODE_NAME Ready: soc $soc, memory $mem (the fixture's), runtime $rt ABI $abi (rkllm-sim), endpoint http://$AGENT_IP:8080"

# shellcheck disable=SC2016 # expanded by the container's shell
out="$(kubectl -n "$NS" exec "$AGENT_POD" -c agent -- sh -c \
  'test -c "$0" && stat -c "%t:%T" "$0" && echo "$ROCKCHIP_LLAMA_NPU_DEVICES" && ulimit -Hn' "$NPU_DIR/rknpu" 2>&1)" ||
  fail "the agent's container has no character device $NPU_DIR/rknpu: $out"
mapfile -t got <<<"$out"
[[ "${got[0]}" == 1:3 && "${got[1]}" == "$NPU_DIR/rknpu" ]] ||
  fail "in the agent's container: device ${got[0]}, ROCKCHIP_LLAMA_NPU_DEVICES '${got[1]}'"
NOFILE_HARD="${got[2]}"
pass "the agent's container has $NPU_DIR/rknpu (c 1:3) and ROCKCHIP_LLAMA_NPU_DEVICES from the plugin's Allocate"

out="$(kubectl -n "$NS" logs "$AGENT_POD" -c agent)" || fail "kubectl logs $AGENT_POD failed"
grep -q "registered the Board board=$NODE_NAME" <<<"$out" || fail "the agent's log lacks 'registered the Board board=$NODE_NAME': $out"
grep -q 'RKLLM runtime loaded' <<<"$out" || fail "the agent's log lacks 'RKLLM runtime loaded': $out"
pass "kubectl logs: the agent loaded the RKLLM runtime and registered its Board ($(wc -l <<<"$out") lines)"
out="$(kubectl -n "$NS" logs -l app.kubernetes.io/component=device-plugin)" || fail "kubectl logs of the device plugin failed"
grep -q 'registered with the kubelet' <<<"$out" || fail "the device plugin's log lacks 'registered with the kubelet': $out"
pass "kubectl logs: the device plugin registered with the kubelet"

rc=0
out="$(kubectl -n "$NS" exec "$AGENT_POD" -c agent -- rockchip-llama-agent doctor 2>&1)" || rc=$?
printf '%s\n' "$out" >"$LOGS/doctor.txt"
grep -qE '^ *OK +SoC +RK3588' <<<"$out" || fail "doctor in the pod does not report an RK3588 (the fixture): $out"
grep -qE '^ *OK +runtime +/opt/rockchip-llama/rkllm/librkllmrt\.so .*ABI 1\.2' <<<"$out" ||
  fail "doctor in the pod does not load the runtime from the chart's mount: $out"
# The only failure allowed: the open-file limit, and only where this node's containers get a hard
# limit below the vendor runtime's 102400 (root here lacks CAP_SYS_RESOURCE to raise it).
fails="$(grep -E '^ *FAIL ' <<<"$out" | awk '{print $2, $3}' | paste -sd, || true)"
if ((NOFILE_HARD >= 102400)); then allowed_fails=""; else allowed_fails="open files"; fi
[[ "$fails" == "$allowed_fails" ]] || fail "doctor's failures '$fails', want '$allowed_fails' (hard open-file limit $NOFILE_HARD): $out"
[[ "$rc" == "$([[ -n "$fails" ]] && echo 1 || echo 0)" ]] || fail "doctor exited $rc with failures '$fails'"
note=""
[[ -z "$fails" ]] || note=" (its only failure, $fails: the container's hard limit is $NOFILE_HARD here)"
pass "kubectl exec ... rockchip-llama-agent doctor: RK3588, runtime ABI 1.2 from the chart's mount; exit $rc$note"

# --- rbac ------------------------------------------------------------------------------------------
step rbac "RBAC per service account; the agent pod's own token against the admission policy"
kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' | base64 -d >"$WORK/ca.crt"
as_token() { # token kubectl-args...
  local t="$1"
  shift
  command kubectl --request-timeout=30s --kubeconfig=/dev/null --server="$APISERVER" \
    --certificate-authority="$WORK/ca.crt" --token="$t" "$@"
}
# The agent's token as its container has it (the kubelet's TokenRequest, bound to the pod).
AGENT_TOKEN="$(kubectl -n "$NS" exec "$AGENT_POD" -c agent -- cat /var/run/secrets/kubernetes.io/serviceaccount/token)"
OPERATOR_POD="$(kubectl -n "$NS" get pods -l app.kubernetes.io/component=operator -o jsonpath='{.items[0].metadata.name}')"
# The operator's image has no shell or cat: a TokenRequest bound to its pod, as the kubelet makes.
# shellcheck disable=SC2034 # read through ${!who} in can()
OPERATOR_TOKEN="$(kubectl -n "$NS" create token "$RELEASE-operator" --duration=10m \
  --bound-object-kind=Pod --bound-object-name="$OPERATOR_POD")"
who="$(as_token "$AGENT_TOKEN" auth whoami -o jsonpath='{.status.userInfo.username} {.status.userInfo.extra.authentication\.kubernetes\.io/node-name[0]} {.status.userInfo.extra.authentication\.kubernetes\.io/pod-name[0]}')"
[[ "$who" == "system:serviceaccount:$NS:$RELEASE-agent $NODE_NAME $AGENT_POD" ]] ||
  fail "the agent pod's token is '$who', want its service account, node $NODE_NAME, pod $AGENT_POD"
pass "the agent pod's token: $who"

FAILS=0
can() { # yes|no who(token var name | as:user) verb resource [namespace]
  local want="$1" who="$2" verb="$3" res="$4" ns="${5:-}" got sub=""
  if [[ "$res" == */* ]]; then
    sub="${res#*/}"
    res="${res%%/*}"
  fi
  local args=(auth can-i "$verb" "$res" ${sub:+--subresource="$sub"} ${ns:+-n "$ns"})
  if [[ "$who" == as:* ]]; then
    got="$(kubectl "${args[@]}" --as="${who#as:}" 2>/dev/null || true)"
  else
    got="$(as_token "${!who}" "${args[@]}" 2>/dev/null || true)"
  fi
  local whom="${who%_TOKEN}"
  whom="${whom,,} (its pod's token)"
  [[ "$who" != as:* ]] || whom="${who##*:"$RELEASE"-} (impersonated)"
  local what="$whom: $verb $res${sub:+/$sub}${ns:+ -n $ns}"
  if [[ "$got" == "$want" ]]; then
    log "ok - can-i $what: $got"
  else
    log "FAIL - can-i $what: '$got', want $want"
    FAILS=$((FAILS + 1))
  fi
}
for v in get list watch patch; do can yes OPERATOR_TOKEN "$v" boards.rockchipllama.io; done
can yes OPERATOR_TOKEN patch boards.rockchipllama.io/status
can yes OPERATOR_TOKEN patch modeldeployments.rockchipllama.io/status "$MD_NS"
can yes OPERATOR_TOKEN update modeldeployments.rockchipllama.io/finalizers "$MD_NS"
can yes OPERATOR_TOKEN create events.events.k8s.io "$MD_NS"
can yes OPERATOR_TOKEN update leases.coordination.k8s.io "$NS"
can no OPERATOR_TOKEN delete boards.rockchipllama.io
can no OPERATOR_TOKEN create boards.rockchipllama.io
can no OPERATOR_TOKEN delete modeldeployments.rockchipllama.io "$MD_NS"
can no OPERATOR_TOKEN get secrets "$NS"
can no OPERATOR_TOKEN list pods "$NS"
can no OPERATOR_TOKEN get nodes
for v in get list watch create patch; do can yes AGENT_TOKEN "$v" boards.rockchipllama.io; done
can yes AGENT_TOKEN patch boards.rockchipllama.io/status
can yes AGENT_TOKEN create leases.coordination.k8s.io "$NS"
can yes AGENT_TOKEN patch leases.coordination.k8s.io "$NS"
can no AGENT_TOKEN delete boards.rockchipllama.io
can no AGENT_TOKEN update boards.rockchipllama.io/status
can no AGENT_TOKEN list modeldeployments.rockchipllama.io "$MD_NS"
can no AGENT_TOKEN get leases.coordination.k8s.io "$NS"
can no AGENT_TOKEN get secrets "$NS"
can no AGENT_TOKEN list pods "$NS"
can no AGENT_TOKEN get nodes
can no "as:system:serviceaccount:$NS:$RELEASE-device-plugin" get boards.rockchipllama.io
can no "as:system:serviceaccount:$NS:$RELEASE-device-plugin" list pods "$NS"
((FAILS == 0)) || fail "$FAILS can-i check(s) failed"
PLUGIN_POD="$(kubectl -n "$NS" get pods -l app.kubernetes.io/component=device-plugin -o jsonpath='{.items[0].metadata.name}')"
if kubectl -n "$NS" exec "$PLUGIN_POD" -- test -e /var/run/secrets/kubernetes.io/serviceaccount/token 2>/dev/null; then
  fail "the device plugin's pod has a service-account token mounted"
fi
pass "the device plugin's pod has no service-account token"

# Another board, as an administrator creates it; then what the agent's token may and may not do.
OTHER=chart-phase-other-board
kubectl apply --server-side --field-manager=chart-phase -f - >/dev/null <<EOF
apiVersion: rockchipllama.io/v1alpha1
kind: Board
metadata: {name: $OTHER, labels: {rockchipllama.io/soc: rk3588}}
spec: {cordoned: true}
EOF
kubectl patch board "$OTHER" --subresource=status --type=merge -p '{"status":{"soc":"rk3588","endpoint":"http://10.244.0.250:8080"}}' >/dev/null
own_endpoint="$(kubectl get board "$NODE_NAME" -o jsonpath='{.status.endpoint}')"
# A status write as the agent makes it: server-side apply of the status subresource (the agent's
# RBAC has patch but not get on boards/status, so kubectl patch, which reads first, cannot). A
# field manager of its own, so the agent's fields are left alone.
status_patch() { # board endpoint
  as_token "$AGENT_TOKEN" apply --server-side --force-conflicts --field-manager=rockchip-llama-chart-phase \
    --subresource=status -f - <<<"{\"apiVersion\":\"rockchipllama.io/v1alpha1\",\"kind\":\"Board\",\"metadata\":{\"name\":\"$1\"},\"status\":{\"endpoint\":\"$2\"}}"
}
out="$(status_patch "$NODE_NAME" "$own_endpoint" 2>&1)" || fail "the agent's token may not patch its own Board's status: $out"
pass "allowed: the agent pod's token patches Board $NODE_NAME's status"
denied "the agent's token patches another Board's status (with that Board's own value)" \
  "may write only the Board and Lease named $NODE_NAME, not $OTHER" status_patch "$OTHER" http://10.244.0.250:8080
denied "the agent's token patches another Board's status" "not $OTHER" status_patch "$OTHER" "$own_endpoint"
denied "the agent's token cordons its own Board (spec)" "may not change a Board's spec" \
  as_token "$AGENT_TOKEN" patch board "$NODE_NAME" --type=merge -p '{"spec":{"cordoned":true}}'
denied "the agent's token uncordons another Board (spec)" "not $OTHER" \
  as_token "$AGENT_TOKEN" patch board "$OTHER" --type=merge -p '{"spec":{"cordoned":false}}'
denied "the agent's token takes the operator's leader Lease (same namespace as the boards' Leases)" \
  "not $LEADER_LEASE" as_token "$AGENT_TOKEN" apply --server-side --force-conflicts --field-manager=rockchip-llama-agent -n "$NS" -f - <<EOF
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata: {name: $LEADER_LEASE}
spec: {holderIdentity: $NODE_NAME, leaseDurationSeconds: 40}
EOF
[[ "$(kubectl get board "$NODE_NAME" -o jsonpath='{.spec.cordoned}'):$(kubectl get board "$OTHER" -o jsonpath='{.status.endpoint}')" == "false:http://10.244.0.250:8080" ]] ||
  fail "a denied write changed something"
kubectl delete board "$OTHER" --wait=true --timeout=30s >/dev/null

# --- serve -----------------------------------------------------------------------------------------
step serve "an origin on $NODE_IP; ModelDeployments Ready; the openai client through the gateway's ClusterIP"
mkdir -p "$WORK/origin"
GGUF="$(hack/fetch-models.sh smollm2 | head -n1)"
ln -sf "$GGUF" "$WORK/origin/"
ln -sf "$SIM_MODEL" "$WORK/origin/"
ORIGIN_PORT="$(python3 -c 'import socket, sys; s=socket.socket(); s.bind((sys.argv[1],0)); print(s.getsockname()[1])' "$NODE_IP")"
python3 hack/py/origin.py --dir "$WORK/origin" --port "$ORIGIN_PORT" --bind "$NODE_IP" \
  --log "$LOGS/origin-requests.jsonl" >"$LOGS/origin.log" 2>&1 &
ORIGIN_PID=$!
ORIGIN="http://$NODE_IP:$ORIGIN_PORT"
poll 30 curl -sf --max-time 2 -o /dev/null -r 0-0 "$ORIGIN/$(basename "$GGUF")" || fail "the origin does not answer on $ORIGIN"
pass "origin $ORIGIN (hack/py/origin.py) serving $(basename "$GGUF") and $(basename "$SIM_MODEL")"
: >"$LOGS/origin-requests.jsonl"

md() { # name model format file [aliases-json]
  cat <<EOF
apiVersion: rockchipllama.io/v1alpha1
kind: ModelDeployment
metadata: {name: $1, namespace: $MD_NS}
spec:
  model: $2
  aliases: ${5:-[]}
  format: $3
  source: {url: "$ORIGIN/$(basename "$4")", sha256: $(sha256sum "$4" | cut -d' ' -f1), sizeBytes: $(stat -L -c %s "$4")}
  replicas: 1
  runtime: {maxContextLen: 1024}
EOF
}
{
  md smollm2 smollm2-135m-instruct gguf "$GGUF" '["smollm2"]'
  echo ---
  md qwen3-sim qwen3-0.6b-sim rkllm "$SIM_MODEL"
} | kubectl apply -f - >/dev/null
md_ready() { # name: 1 replica ready and Ready=True, for the current generation
  local r c g og
  IFS=: read -r r c g og <<<"$(kubectl -n "$MD_NS" get md "$1" -o jsonpath='{.status.readyReplicas}:{.status.conditions[?(@.type=="Ready")].status}:{.metadata.generation}:{.status.observedGeneration}')"
  [[ "$r" == 1 && "$c" == True && -n "$g" && "$g" == "$og" ]]
}
for m in smollm2 qwen3-sim; do
  poll "$MODEL_TIMEOUT" md_ready "$m" || fail "ModelDeployment $m not Ready after $MODEL_TIMEOUT s"
done
pass "ModelDeployments smollm2 (GGUF, llama.cpp) and qwen3-sim (.rkllm, rkllm-sim) Ready on $NODE_NAME"
sent() { # file
  python3 - "$LOGS/origin-requests.jsonl" "$(basename "$1")" <<'EOF'
import json, sys
print(sum(r.get("sent", 0) for r in map(json.loads, open(sys.argv[1])) if r.get("path") == sys.argv[2] and r.get("method") == "GET"))
EOF
}
SENT_GGUF="$(sent "$GGUF")"
[[ "$SENT_GGUF" == "$(stat -L -c %s "$GGUF")" ]] || fail "the origin sent $SENT_GGUF bytes of $(basename "$GGUF"), one copy is $(stat -L -c %s "$GGUF")"
SENT_SIM="$(sent "$SIM_MODEL")"

CLUSTER_IP="$(kubectl -n "$NS" get svc "$RELEASE-gateway" -o jsonpath='{.spec.clusterIP}')"
GW_PORT="$(kubectl -n "$NS" get svc "$RELEASE-gateway" -o jsonpath='{.spec.ports[0].port}')"
[[ "$CLUSTER_IP" =~ ^10\.0\.0\.[0-9]+$ ]] || fail "gateway ClusterIP '$CLUSTER_IP' is not in the Service range"
PY="$(hack/pyenv.sh)"
client() {
  timeout 600 "$PY" tests/node/chart.py --base-url "http://$CLUSTER_IP:$GW_PORT/v1" \
    --model smollm2-135m-instruct=smollm2 --model qwen3-0.6b-sim
}
client || fail "the openai client through the gateway's ClusterIP $CLUSTER_IP:$GW_PORT failed"
pass "the openai client answered through http://$CLUSTER_IP:$GW_PORT (ClusterIP, kube-proxy) by both engines"

# --- upgrade ---------------------------------------------------------------------------------------
step upgrade "helm upgrade --set logLevel=debug"
TOKEN_BEFORE="$(kubectl -n "$NS" get secret "$RELEASE-cluster-token" -o jsonpath='{.data.token}')"
out="$(helm upgrade "$RELEASE" "$CHART" -n "$NS" "${VALUES[@]}" --set logLevel=debug --timeout 60s 2>&1)" ||
  fail "helm upgrade: $out"
pass "helm upgrade: $(grep -m1 '^REVISION' <<<"$out")"
rolled() { # kind name
  kubectl -n "$NS" rollout status "$1/$2" --timeout=5s >/dev/null 2>&1 &&
    [[ "$(kubectl -n "$NS" get "$1" "$2" -o jsonpath='{.status.observedGeneration}')" == "$(kubectl -n "$NS" get "$1" "$2" -o jsonpath='{.metadata.generation}')" ]]
}
poll "$ROLLOUT_TIMEOUT" rolled deployment "$RELEASE-operator" || fail "the operator's rollout did not finish in $ROLLOUT_TIMEOUT s"
poll "$ROLLOUT_TIMEOUT" rolled daemonset "$RELEASE-agent" || fail "the agent's rollout did not finish in $ROLLOUT_TIMEOUT s"
poll "$POD_TIMEOUT" operator_ready || fail "the operator's 2 replicas are not Ready after the upgrade"
poll "$POD_TIMEOUT" ds_ready "$RELEASE-agent" || fail "the agent is not Ready after the upgrade"
# One agent pod left (maxSurge 0: the old one is gone before the new one starts).
agent_pods() { kubectl -n "$NS" get pods -l app.kubernetes.io/component=agent -o jsonpath='{.items[*].metadata.name}'; }
one_agent() { [[ "$(agent_pods)" =~ ^[a-z0-9-]+$ ]]; }
poll "$GONE_TIMEOUT" one_agent || fail "agent pods after the upgrade: $(agent_pods)"
NEW_AGENT="$(agent_pods)"
[[ -n "$NEW_AGENT" && "$NEW_AGENT" != "$AGENT_POD" && "$NEW_AGENT" != *" "* ]] || fail "agent pod after the upgrade: '$NEW_AGENT' (before: $AGENT_POD)"
for comp in agent operator; do
  v="$(kubectl -n "$NS" get pods -l "app.kubernetes.io/component=$comp" -o jsonpath='{range .items[*]}{.spec.containers[0].env[?(@.name=="ROCKCHIP_LLAMA_LOG")].value} {end}')"
  [[ "$v" =~ ^(debug )+$ ]] || fail "$comp pods' ROCKCHIP_LLAMA_LOG after the upgrade: '$v'"
done
[[ "$(kubectl -n "$NS" get secret "$RELEASE-cluster-token" -o jsonpath='{.data.token}')" == "$TOKEN_BEFORE" ]] ||
  fail "helm upgrade changed the generated cluster token"
pass "operator and agent rolled (agent pod $AGENT_POD -> $NEW_AGENT), both with logLevel debug; cluster token kept"
AGENT_POD="$NEW_AGENT"
AGENT_IP="$(kubectl -n "$NS" get pod "$AGENT_POD" -o jsonpath='{.status.podIP}')"
poll "$BOARD_TIMEOUT" board_ready || fail "Board $NODE_NAME not Ready with the new pod's endpoint after the upgrade"
for m in smollm2 qwen3-sim; do
  poll "$MODEL_TIMEOUT" md_ready "$m" || fail "ModelDeployment $m not Ready again after the upgrade"
done
client || fail "the openai client failed after the upgrade"
[[ "$(sent "$GGUF"):$(sent "$SIM_MODEL")" == "$SENT_GGUF:$SENT_SIM" ]] ||
  fail "the origin sent more after the upgrade ($(sent "$GGUF") bytes of the GGUF, was $SENT_GGUF): the store did not survive"
out="$(kubectl -n "$NS" logs "$AGENT_POD" -c agent)" || fail "kubectl logs $AGENT_POD failed"
grep -q ' DEBUG ' <<<"$out" || fail "the upgraded agent logs no DEBUG line"
restarts="$(kubectl -n "$NS" get pods -o jsonpath='{range .items[*]}{.metadata.name}={.status.containerStatuses[0].restartCount} {end}')"
[[ ! "$restarts" =~ =[1-9] ]] || fail "containers restarted: $restarts"
pass "after the upgrade: Board Ready at http://$AGENT_IP:8080, both models served again from the hostPath store (origin sent nothing more), the agent logs at debug"

# --- uninstall -------------------------------------------------------------------------------------
step uninstall "delete the ModelDeployments, helm uninstall"
helm get manifest "$RELEASE" -n "$NS" >"$WORK/manifest.yaml"
kubectl -n "$MD_NS" delete md smollm2 qwen3-sim --wait=true --timeout="${GONE_TIMEOUT}s" >/dev/null ||
  fail "the ModelDeployments were not deleted within $GONE_TIMEOUT s (their finalizer needs the controller)"
board_empty() { [[ -z "$(kubectl get board "$NODE_NAME" -o jsonpath='{.spec.models}')" ]]; }
poll 60 board_empty || fail "Board $NODE_NAME still has models assigned after the ModelDeployments are gone"
pass "ModelDeployments deleted (the controller removed their finalizers and the Board's assignments)"
out="$(helm uninstall "$RELEASE" -n "$NS" --timeout 60s 2>&1)" || fail "helm uninstall: $out"
pass "helm uninstall: $out"
no_pods() { [[ -z "$(kubectl -n "$NS" get pods -o name)" ]]; }
poll "$GONE_TIMEOUT" no_pods || fail "pods left in $NS $GONE_TIMEOUT s after helm uninstall: $(kubectl -n "$NS" get pods -o name)"
left="$(python3 - "$WORK/manifest.yaml" "$NS" <<'EOF'
# Every object the release rendered, as kubectl get arguments.
import sys, yaml
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d:
        ns = d["metadata"].get("namespace", "")
        print(f'{d["kind"]} {d["metadata"]["name"]} {ns}')
EOF
)"
remaining=""
n=0
while read -r kind name ns; do
  n=$((n + 1))
  if kubectl get "$kind" "$name" ${ns:+-n "$ns"} -o name >/dev/null 2>&1; then remaining+=" $kind/$name"; fi
done <<<"$left"
[[ -z "$remaining" ]] || fail "helm uninstall left objects of the release:$remaining"
labelled="$(kubectl get all,secrets,serviceaccounts,roles,rolebindings,configmaps,poddisruptionbudgets -n "$NS" -l "app.kubernetes.io/instance=$RELEASE" -o name)"
labelled+="$(kubectl get clusterroles,clusterrolebindings,validatingadmissionpolicies,validatingadmissionpolicybindings -l "app.kubernetes.io/instance=$RELEASE" -o name)"
[[ -z "$labelled" ]] || fail "objects labelled with the release left: $labelled"
kubectl get crd boards.rockchipllama.io modeldeployments.rockchipllama.io -o name >/dev/null || fail "helm uninstall removed the CRDs"
# What the system made at run time stays, as docs/helm.md says: the Board, its Lease and the
# operator's leader Lease. Anything else is a leak.
# The gateways' demand Leases are owned by their operator Pods: the garbage collector removes
# them with the Pods (a Pod that lost its RBAC to the uninstall cannot), so poll for it.
runtime_objects() { kubectl get boards -o name; kubectl -n "$NS" get leases -o name; }
want="$(printf '%s\n' "board.rockchipllama.io/$NODE_NAME" "lease.coordination.k8s.io/$LEADER_LEASE" "lease.coordination.k8s.io/$NODE_NAME" | sort)"
only_documented_left() { [[ "$(runtime_objects | sort)" == "$want" ]]; }
poll "$GONE_TIMEOUT" only_documented_left || true
runtime="$(runtime_objects)"
[[ "$(sort <<<"$runtime")" == "$want" ]] || fail "after uninstall the run-time objects are [$(paste -sd' ' <<<"$runtime")], want [$(paste -sd' ' <<<"$want")]"
pass "helm uninstall: all $n objects of the release gone, no pods in $NS, the CRDs kept; left as documented: $(paste -sd' ' <<<"$runtime")"

stop_origin
STEPS+=("$STEP_NAME $((SECONDS - STEP_T))s")
log "chart phase passed in $((SECONDS - START)) s (${STEPS[*]})"
