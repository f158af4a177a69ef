#!/usr/bin/env bash
# `make test-chart`: the Helm chart (charts/rockchip-llama) checked statically and against a real
# kube-apiserver (a private hack/testcluster.sh control plane, torn down on exit):
#
#   static   chart version = appVersion = workspace version; the chart's CRDs = crds/yaml;
#            `helm lint --strict` and `helm template` with default values and with every option
#            on (ci/all-on-values.yaml); the ServiceMonitor only where its API exists; bad values
#            rejected by values.schema.json with a message naming the value
#   server   `helm template | kubectl apply --dry-run=server` (defaults and all-on); a real
#            `helm install`; the admission policy type-checks; `kubectl auth can-i` for each
#            service account, allowed and denied; an agent's pod-bound token (TokenRequest bound
#            to a Pod on a fake node — pods stay Pending, there is no kubelet) may apply its own
#            Board, Board status and Lease and is denied on another board's, on any Board spec,
#            on labels other than its SoC's, and on deletes; `helm upgrade` keeps the generated
#            cluster token; `helm uninstall` leaves only the CRDs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf '[test-chart %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
START=$SECONDS
FAILURES=0
pass() { log "ok   - $*"; }
fail() {
  log "FAIL - $*"
  FAILURES=$((FAILURES + 1))
}
# shellcheck source=hack/lib/check.sh
. hack/lib/check.sh

BIN="$(hack/k8s/bins.sh)"
export PATH="$BIN:$PATH"
CHART=charts/rockchip-llama
ALL="$CHART/ci/all-on-values.yaml"
KUBE_VERSION=1.37.0
WORK="$(mktemp -d -t rockchip-llama-chart.XXXXXX)"
export HELM_CACHE_HOME="$WORK/helm/cache" HELM_CONFIG_HOME="$WORK/helm/config" HELM_DATA_HOME="$WORK/helm/data"

CLUSTER_UP=0
cleanup() {
  local rc=$?
  if ((CLUSTER_UP)); then
    hack/testcluster.sh down >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
  if ((rc == 0)); then
    log "passed in $((SECONDS - START)) s"
  else
    log "FAILED (exit $rc) after $((SECONDS - START)) s"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- static checks ------------------------------------------------------------------------------
log "static checks (no cluster)"
workspace_version="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)"
chart_version="$(sed -n 's/^version: *//p' $CHART/Chart.yaml)"
app_version="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' $CHART/Chart.yaml)"
if [[ -n "$workspace_version" && "$chart_version" == "$workspace_version" && "$app_version" == "$workspace_version" ]]; then
  pass "Chart.yaml version and appVersion = workspace version $workspace_version"
else
  fail "Chart.yaml version '$chart_version', appVersion '$app_version', workspace '$workspace_version': make them equal"
fi

if diff -ru crds/yaml "$CHART/crds" >"$WORK/crd.diff"; then
  pass "the chart's crds/ is crds/yaml (generated; \`make generate-crds\` writes both)"
else
  fail "the chart's crds/ differs from crds/yaml: run \`make generate-crds\`"$'\n'"$(head -20 "$WORK/crd.diff")"
fi

for values in "" "$ALL"; do
  name="${values:-default values}"
  if out="$(helm lint --strict "$CHART" --kube-version "$KUBE_VERSION" ${values:+-f "$values"} 2>&1)"; then
    pass "helm lint --strict ($name)"
  else
    fail "helm lint --strict ($name): $out"
  fi
done

render() { # [helm template args...]
  helm template rl "$CHART" --namespace rockchip-llama --kube-version "$KUBE_VERSION" "$@"
}
kinds() { python3 -c '
import sys, yaml
for d in yaml.safe_load_all(sys.stdin):
    if d: print(d["kind"], d["metadata"]["name"])'; }

render >"$WORK/default.yaml"
render -f "$ALL" >"$WORK/all-on.yaml"
render -f "$ALL" --api-versions monitoring.coreos.com/v1/ServiceMonitor >"$WORK/all-on-monitoring.yaml"
kinds <"$WORK/default.yaml" >"$WORK/default.kinds"
kinds <"$WORK/all-on.yaml" >"$WORK/all-on.kinds"
kinds <"$WORK/all-on-monitoring.yaml" >"$WORK/all-on-monitoring.kinds"
want_default="Deployment rl-rockchip-llama-operator
PodDisruptionBudget rl-rockchip-llama-operator
DaemonSet rl-rockchip-llama-agent
DaemonSet rl-rockchip-llama-device-plugin
Service rl-rockchip-llama-gateway
Secret rl-rockchip-llama-cluster-token
ValidatingAdmissionPolicy rl-rockchip-llama-rockchip-llama-agent-own-board
ValidatingAdmissionPolicyBinding rl-rockchip-llama-rockchip-llama-agent-own-board"
missing="$(grep -vxFf "$WORK/default.kinds" <<<"$want_default" || true)"
if [[ -z "$missing" ]] && ! grep -qE '^(Ingress|ServiceMonitor|NetworkPolicy) ' "$WORK/default.kinds"; then
  pass "helm template (defaults): $(wc -l <"$WORK/default.kinds") objects, no Ingress/ServiceMonitor/NetworkPolicy"
else
  fail "helm template (defaults): missing [$missing] or optional objects rendered:"$'\n'"$(cat "$WORK/default.kinds")"
fi
if grep -q '^Ingress ' "$WORK/all-on.kinds" && grep -q '^NetworkPolicy ' "$WORK/all-on.kinds" &&
  ! grep -q '^ServiceMonitor ' "$WORK/all-on.kinds" &&
  [[ "$(grep -c '^ServiceMonitor ' "$WORK/all-on-monitoring.kinds")" == 2 ]]; then
  pass "helm template (all on): Ingress, NetworkPolicies; ServiceMonitors only with monitoring.coreos.com/v1"
else
  fail "helm template (all on):"$'\n'"$(cat "$WORK/all-on-monitoring.kinds")"
fi

# Properties of the rendered defaults that the docs promise.
if python3 - "$WORK/default.yaml" <<'EOF'; then
import sys, yaml
docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(open(sys.argv[1])) if d}
def spec(kind, name): return docs[(kind, name)]["spec"]["template"]["spec"]
op = spec("Deployment", "rl-rockchip-llama-operator")
agent = spec("DaemonSet", "rl-rockchip-llama-agent")
plugin = spec("DaemonSet", "rl-rockchip-llama-device-plugin")
errors = []
def check(ok, what):
    if not ok: errors.append(what)
c = op["containers"][0]
check(docs[("Deployment", "rl-rockchip-llama-operator")]["spec"]["replicas"] == 2, "operator: 2 replicas")
check(op["securityContext"].get("runAsNonRoot") is True, "operator: runAsNonRoot")
check(c["securityContext"].get("readOnlyRootFilesystem") is True, "operator: read-only root")
check(c["livenessProbe"]["httpGet"]["path"] == "/healthz" and c["readinessProbe"]["httpGet"]["path"] == "/readyz", "operator: probes")
env = {e["name"]: e for e in c["env"]}
check(env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace", "operator: POD_NAMESPACE")
check(env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name", "operator: POD_NAME")
check("ROCKCHIP_LLAMA_CLUSTER_TOKEN_FILE" in env, "operator: cluster token file")
check(env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP", "operator: POD_IP (the gateway's demand URL)")
a = agent["containers"][0]
check(a["securityContext"].get("privileged") is not True, "agent: not privileged")
check(a["securityContext"]["capabilities"]["drop"] == ["ALL"], "agent: no capabilities")
check(a["resources"]["limits"].get("rockchipllama.io/npu") == "1", "agent: NPU resource limit 1")
aenv = {e["name"]: e for e in a["env"]}
check(aenv["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName", "agent: NODE_NAME")
check(aenv["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP", "agent: POD_IP")
check(aenv["ROCKCHIP_LLAMA_REQUIRE_CLUSTER_TOKEN"]["value"] == "true", "agent: --require-cluster-token")
check(all(m.get("readOnly") for m in a["volumeMounts"] if m["mountPath"].startswith("/host")), "agent: host files read-only without tuning")
check(agent["nodeSelector"] == {"node-restriction.kubernetes.io/rockchip-llama-board": "true"}, "agent: board label")
p = plugin["containers"][0]
check(p["securityContext"].get("privileged") is not True and p["securityContext"]["capabilities"]["drop"] == ["ALL"], "plugin: unprivileged")
check(p["args"] == ["device-plugin"], "plugin: runs `device-plugin`")
check(not any(m["mountPath"] == "/dev" for m in p["volumeMounts"]), "plugin: never the host's whole /dev")
check(plugin.get("automountServiceAccountToken") is False, "plugin: no API token")
for e in errors: print("  " + e)
sys.exit(1 if errors else 0)
EOF
  pass "rendered defaults: 2 non-root read-only operator replicas with probes and downward-API env; unprivileged agent with the NPU resource; unprivileged device plugin"
else
  fail "rendered defaults break a documented property (above)"
fi

if python3 - "$WORK/all-on.yaml" <<'EOF'; then
import sys, yaml
docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(open(sys.argv[1])) if d}
a = docs[("DaemonSet", "rl-rockchip-llama-agent")]["spec"]["template"]["spec"]["containers"][0]
rw = sorted(m["mountPath"] for m in a["volumeMounts"] if m["mountPath"].startswith("/host") and not m.get("readOnly"))
want = ["/host/sys/devices/platform", "/host/sys/devices/system/cpu"]
if rw != want:
    print(f"  tuning: writable host mounts {rw}, want {want}"); sys.exit(1)
EOF
  pass "tuning.enabled=true makes exactly /sys/devices/system/cpu and /sys/devices/platform writable"
else
  fail "tuning mounts"
fi

# The k3s HelmChart example: its chart URL names this chart version, and its valuesContent
# renders the packaged chart (what k3s's Helm controller installs from the static directory).
helm package "$CHART" --destination "$WORK/pkg" >/dev/null
EXAMPLE=charts/examples/helmchart-k3s.yaml
if python3 - "$EXAMPLE" "$chart_version" "$WORK/example-values.yaml" <<'EOF'; then
import sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
spec = doc["spec"]
errors = []
if (doc["apiVersion"], doc["kind"], doc["metadata"]["namespace"]) != ("helm.cattle.io/v1", "HelmChart", "kube-system"):
    errors.append("not a helm.cattle.io/v1 HelmChart in kube-system")
want = f"https://%{{KUBERNETES_API}}%/static/charts/rockchip-llama-{sys.argv[2]}.tgz"
if spec["chart"] != want:
    errors.append(f"chart {spec['chart']!r}, want {want!r}")
open(sys.argv[3], "w").write(spec["valuesContent"])
for e in errors: print("  " + e)
sys.exit(1 if errors else 0)
EOF
  if out="$(helm template rockchip-llama "$WORK/pkg/rockchip-llama-$chart_version.tgz" \
    --namespace rockchip-llama --kube-version "$KUBE_VERSION" -f "$WORK/example-values.yaml" 2>&1)" &&
    grep -q 'type: LoadBalancer' <<<"$out"; then
    pass "k3s HelmChart example: chart URL names $chart_version; its valuesContent renders the packaged chart"
  else
    fail "k3s HelmChart example values do not render the packaged chart: $out"
  fi
else
  fail "k3s HelmChart example ($EXAMPLE)"
fi

# Bad values fail with a message that names the value.
bad() { # expected-substring helm-args...
  local expect="$1"
  shift
  local out
  if out="$(render "$@" 2>&1)"; then
    fail "schema accepted $*"
  elif grep -qF -- "$expect" <<<"$out"; then
    pass "schema rejects $* ($expect)"
  else
    fail "schema rejected $* without '$expect': $out"
  fi
}
bad "at '/agent/store/type': value must be one of" --set agent.store.type=nfs
bad "additional properties 'tunning' not allowed" --set agent.tunning.enabled=true
bad "at '/operator/replicas'" --set operator.replicas=0
bad "at '/service/type'" --set service.type=NodePortt
bad "at '/clusterToken/value'" --set clusterToken.value=too-short
bad "at '/agent/store/existingClaim'" --set agent.store.type=existingClaim
bad "missing property 'nodeSelector'" --set agent.nodeSelector=null
bad "at '/devicePlugin/hostPaths/0/path'" --set 'devicePlugin.hostPaths[0].path=/dev'
bad "at '/operator/gateway/queueTimeout'" --set operator.gateway.queueTimeout=30
bad "at '/operator/gateway/scaleFromZeroTimeout'" --set operator.gateway.scaleFromZeroTimeout=2h
bad "at '/operator/gateway/streamKeepaliveInterval'" --set operator.gateway.streamKeepaliveInterval=0s

# --- against the API server ------------------------------------------------------------------------
log "starting a private control plane"
export TESTCLUSTER_DIR="$WORK/cluster"
export KUBECACHEDIR="$WORK/kube-cache"
CLUSTER_UP=1
line="$(hack/testcluster.sh up)"
export KUBECONFIG="${line#KUBECONFIG=}"
NS=rockchip-llama

kubectl apply --server-side -f "$CHART/crds/" >/dev/null
kubectl wait --for=condition=Established --timeout=60s \
  crd/modeldeployments.rockchipllama.io crd/boards.rockchipllama.io >/dev/null
kubectl create namespace "$NS" >/dev/null
kubectl create namespace models >/dev/null # all-on's watchNamespace

for f in default all-on; do
  # Every namespaced object names its namespace (all-on puts Roles into watchNamespace).
  if out="$(kubectl apply --dry-run=server -f "$WORK/$f.yaml" 2>&1)"; then
    pass "helm template ($f) | kubectl apply --dry-run=server: $(wc -l <<<"$out") objects accepted"
  else
    fail "server-side dry run ($f): $out"
  fi
done

log "helm install (no --wait: no kubelet, pods stay Pending)"
if out="$(helm install rl "$CHART" --namespace "$NS" --timeout 60s 2>&1)"; then
  pass "helm install"
else
  fail "helm install: $out"
  exit 1
fi
if grep -qF "kubectl port-forward -n $NS svc/rl-rockchip-llama-gateway 11434:11434" <<<"$out"; then
  pass "NOTES.txt says how to reach the gateway"
else
  fail "NOTES.txt lacks the port-forward line: $out"
fi
token_of() { kubectl get secret -n "$NS" rl-rockchip-llama-cluster-token -o jsonpath='{.data.token}'; }
token_before="$(token_of)"

POLICY=rl-rockchip-llama-rockchip-llama-agent-own-board
# The status controller type-checks the policy's CEL against the Board and Lease schemas.
deadline=$((SECONDS + 30))
until [[ "$(kubectl get validatingadmissionpolicy "$POLICY" -o jsonpath='{.status.observedGeneration}')" == 1 ]]; do
  ((SECONDS < deadline)) || break
  sleep 0.5
done
warnings="$(kubectl get validatingadmissionpolicy "$POLICY" -o jsonpath='{.status.typeChecking.expressionWarnings}')"
if [[ "$(kubectl get validatingadmissionpolicy "$POLICY" -o jsonpath='{.status.observedGeneration}')" == 1 && -z "$warnings" ]]; then
  pass "the admission policy type-checks against the Board and Lease schemas"
else
  fail "admission policy type check: observedGeneration $(kubectl get validatingadmissionpolicy "$POLICY" -o jsonpath='{.status.observedGeneration}'), warnings: $warnings"
fi

# --- RBAC: kubectl auth can-i per service account ---------------------------------------------------
SA_OPERATOR="system:serviceaccount:$NS:rl-rockchip-llama-operator"
SA_AGENT="system:serviceaccount:$NS:rl-rockchip-llama-agent"
SA_PLUGIN="system:serviceaccount:$NS:rl-rockchip-llama-device-plugin"
can() { # yes|no user verb resource[/subresource] [namespace]
  local want="$1" user="$2" verb="$3" res="$4" ns="${5:-}" sub="" got
  if [[ "$res" == */* ]]; then
    sub="${res#*/}"
    res="${res%%/*}"
  fi
  got="$(kubectl auth can-i "$verb" "$res" ${sub:+--subresource="$sub"} --as="$user" ${ns:+-n "$ns"} 2>/dev/null || true)"
  local who="${user##*:}"
  local what="${who#rl-rockchip-llama-} $verb $res${sub:+/$sub}${ns:+ -n $ns}"
  if [[ "$got" == "$want" ]]; then
    log "ok   - can-i $what: $got"
  else
    fail "can-i $what: $got, want $want"
  fi
}
for v in get list watch patch; do can yes "$SA_OPERATOR" "$v" modeldeployments.rockchipllama.io models; done
can yes "$SA_OPERATOR" patch modeldeployments.rockchipllama.io/status models
can yes "$SA_OPERATOR" update modeldeployments.rockchipllama.io/finalizers models
for v in get list watch patch; do can yes "$SA_OPERATOR" "$v" boards.rockchipllama.io; done
can yes "$SA_OPERATOR" patch boards.rockchipllama.io/status
for v in create patch; do can yes "$SA_OPERATOR" "$v" events.events.k8s.io models; done
for v in get list watch create update delete; do can yes "$SA_OPERATOR" "$v" leases.coordination.k8s.io "$NS"; done
can no "$SA_OPERATOR" delete boards.rockchipllama.io
can no "$SA_OPERATOR" update boards.rockchipllama.io/status
can no "$SA_OPERATOR" update modeldeployments.rockchipllama.io models
can no "$SA_OPERATOR" create boards.rockchipllama.io
can no "$SA_OPERATOR" delete modeldeployments.rockchipllama.io models
can no "$SA_OPERATOR" create leases.coordination.k8s.io default
can no "$SA_OPERATOR" get secrets "$NS"
can no "$SA_OPERATOR" list pods "$NS"
can no "$SA_OPERATOR" get nodes

for v in get list watch create patch; do can yes "$SA_AGENT" "$v" boards.rockchipllama.io; done
can yes "$SA_AGENT" patch boards.rockchipllama.io/status
for v in create patch; do can yes "$SA_AGENT" "$v" leases.coordination.k8s.io "$NS"; done
can no "$SA_AGENT" delete boards.rockchipllama.io
can no "$SA_AGENT" update boards.rockchipllama.io/status
can no "$SA_AGENT" update boards.rockchipllama.io
can no "$SA_AGENT" list modeldeployments.rockchipllama.io models
can no "$SA_AGENT" patch modeldeployments.rockchipllama.io/status models
can no "$SA_AGENT" get leases.coordination.k8s.io "$NS"
can no "$SA_AGENT" patch leases.coordination.k8s.io default
can no "$SA_AGENT" delete leases.coordination.k8s.io "$NS"
can no "$SA_AGENT" get secrets "$NS"
can no "$SA_AGENT" create events.events.k8s.io "$NS"

can no "$SA_PLUGIN" get boards.rockchipllama.io
can no "$SA_PLUGIN" list pods "$NS"

# --- the agent's pod-bound token and the admission policy --------------------------------------------
# A Pod of the agent's service account bound to node board-a (it never runs), and a token bound
# to it: the API server adds authentication.kubernetes.io/node-name=board-a to the token.
kubectl apply -n "$NS" -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: agent-on-board-a}
spec:
  serviceAccountName: rl-rockchip-llama-agent
  nodeName: board-a
  containers: [{name: agent, image: rockchip-llama-agent:test}]
EOF
token="$(kubectl create token rl-rockchip-llama-agent -n "$NS" --duration=10m \
  --bound-object-kind=Pod --bound-object-name=agent-on-board-a)"
unbound="$(kubectl create token rl-rockchip-llama-agent -n "$NS" --duration=10m)"
server="$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.server}')"
kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' |
  base64 -d >"$WORK/ca.crt"
as_agent() { kubectl --kubeconfig=/dev/null --server="$server" --certificate-authority="$WORK/ca.crt" --token="$token" "$@"; }
as_unbound() { kubectl --kubeconfig=/dev/null --server="$server" --certificate-authority="$WORK/ca.crt" --token="$unbound" "$@"; }

node_claim="$(as_agent auth whoami -o jsonpath='{.status.userInfo.extra.authentication\.kubernetes\.io/node-name[0]}')"
if [[ "$node_claim" == board-a ]]; then
  pass "the pod-bound token carries the node-name claim (board-a)"
else
  fail "node-name claim of the pod-bound token: '$node_claim' (whoami: $(as_agent auth whoami -o json 2>&1))"
fi

board() { # name [labels-json] [spec-json]
  local labels='{"rockchipllama.io/soc":"rk3588"}' spec='{}'
  if (($# >= 2)); then labels="$2"; fi
  if (($# >= 3)); then spec="$3"; fi
  printf '{"apiVersion":"rockchipllama.io/v1alpha1","kind":"Board","metadata":{"name":"%s","labels":%s},"spec":%s}' \
    "$1" "$labels" "$spec"
}
status() { # name
  printf '{"apiVersion":"rockchipllama.io/v1alpha1","kind":"Board","metadata":{"name":"%s"},"status":{"soc":"rk3588","endpoint":"http://10.42.0.9:8080"}}' "$1"
}
lease() { # name
  printf '{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"name":"%s"},"spec":{"holderIdentity":"%s","leaseDurationSeconds":40}}' "$1" "$1"
}
# What the agent does (agent/src/cluster/): server-side apply, field manager rockchip-llama-agent.
apply_as() { # who manifest-json [kubectl apply args]
  local who="$1" body="$2"
  shift 2
  "$who" apply --server-side --force-conflicts --field-manager=rockchip-llama-agent "$@" -f - <<<"$body"
}
kubectl apply --server-side --field-manager=test -f - >/dev/null <<<"$(board board-b)"
allowed "agent on board-a creates its Board (name and SoC label, as the agent does)" \
  apply_as as_agent "$(board board-a)"
allowed "agent on board-a applies its Board's status" \
  apply_as as_agent "$(status board-a)" --subresource=status
allowed "agent on board-a applies its Lease" apply_as as_agent "$(lease board-a)" -n "$NS"
denied "agent on board-a writes board-b's status" "may write only the Board and Lease named board-a, not board-b" \
  apply_as as_agent "$(status board-b)" --subresource=status
denied "agent on board-a writes board-b's Lease" "not board-b" apply_as as_agent "$(lease board-b)" -n "$NS"
denied "agent on board-a takes the leader Lease" "not rockchip-llama-operator" \
  apply_as as_agent "$(lease rockchip-llama-operator)" -n "$NS"
denied "agent on board-a cordons its own Board (spec)" "may not change a Board's spec" \
  as_agent patch board board-a --type=merge -p '{"spec":{"cordoned":true}}'
denied "agent on board-a patches board-b's spec" "not board-b" \
  as_agent patch board board-b --type=merge -p '{"spec":{"cordoned":true}}'
denied "agent on board-a adds a label that placement matches" "may change only the rockchipllama.io/soc label" \
  as_agent label board board-a zone=attractive
allowed "agent on board-a changes its SoC label" \
  apply_as as_agent "$(board board-a '{"rockchipllama.io/soc":"rk3576"}')"
denied "agent on board-a deletes its Board (RBAC)" "forbidden" as_agent delete board board-a
# The controller assigns a model on board-a (the operator's account, through impersonation);
# the agent's re-registration (spec {}) must still pass, the entry untouched.
if kubectl --as="$SA_OPERATOR" apply --server-side --field-manager=rockchip-llama-operator/models/m -f - >/dev/null <<<"$(board board-a '{"rockchipllama.io/soc":"rk3576"}' \
  '{"models":[{"key":"models/m","model":"m","format":"gguf","source":{"url":"file:///var/lib/rockchip-llama/models/m.gguf"}}]}')"; then
  pass "allowed: the operator writes board-a's spec (the policy matches agents only)"
else
  fail "the operator could not write board-a's spec"
fi
allowed "agent on board-a re-registers (spec {}) after the controller assigned a model" \
  apply_as as_agent "$(board board-a '{"rockchipllama.io/soc":"rk3576"}')"
if [[ "$(kubectl get board board-a -o jsonpath='{.spec.models[0].key}')" == models/m ]]; then
  pass "the controller's entry survives the agent's re-registration"
else
  fail "board-a's spec.models after the agent's apply: $(kubectl get board board-a -o jsonpath='{.spec}')"
fi
kubectl delete board board-a >/dev/null
denied "agent on board-a creates its Board with models in spec" "may not create a Board with models" \
  apply_as as_agent "$(board board-a '{"rockchipllama.io/soc":"rk3588"}' \
  '{"models":[{"key":"x/y","model":"y","format":"gguf","source":{"url":"file:///m.gguf"}}]}')"
denied "a token of the agent's account not bound to a pod" "carries no node name" \
  apply_as as_unbound "$(status board-b)" --subresource=status

# --- upgrade keeps the generated token; uninstall leaves only the CRDs -----------------------------
if out="$(helm upgrade rl "$CHART" --namespace "$NS" --set logLevel=debug 2>&1)" &&
  [[ "$(token_of)" == "$token_before" && -n "$token_before" ]]; then
  pass "helm upgrade keeps the generated cluster token"
else
  fail "helm upgrade: token before '$token_before', after '$(token_of)': $out"
fi
kubectl delete pod -n "$NS" agent-on-board-a --wait=false >/dev/null
kubectl delete lease -n "$NS" board-a >/dev/null
kubectl delete board board-b >/dev/null
if out="$(helm uninstall rl --namespace "$NS" 2>&1)"; then
  left="$(kubectl get all,secrets,serviceaccounts,roles,rolebindings,leases,networkpolicies,poddisruptionbudgets \
    -n "$NS" -l app.kubernetes.io/instance=rl -o name 2>/dev/null)"
  left+="$(kubectl get clusterroles,clusterrolebindings,validatingadmissionpolicies,validatingadmissionpolicybindings \
    -l app.kubernetes.io/instance=rl -o name 2>/dev/null)"
  if [[ -z "$left" ]] && kubectl get crd boards.rockchipllama.io modeldeployments.rockchipllama.io >/dev/null; then
    pass "helm uninstall leaves nothing of the release but the CRDs"
  else
    fail "after helm uninstall: $left"
  fi
else
  fail "helm uninstall: $out"
fi

if ((FAILURES > 0)); then
  log "$FAILURES check(s) failed"
  exit 1
fi
