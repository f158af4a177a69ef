#!/usr/bin/env bash
# A real Kubernetes control plane on loopback for tests and development: etcd, kube-apiserver and
# kube-controller-manager, no Docker, no kubelet.
#
#   hack/testcluster.sh up       start (or reuse) the cluster; prints KUBECONFIG=<path> on stdout
#   hack/testcluster.sh up --boards N
#                                also: the CRDs, the operator (`rockchip-llama-operator run`), an
#                                origin HTTP server holding the test models, and N simulated boards
#                                (agents in cluster mode, each with its own copy of the fixture
#                                sysfs tree, store and port; llama.cpp for .gguf, rkllm-sim for
#                                .rkllm). Prints KUBECONFIG=, ORIGIN=<base URL>, ORIGIN_DIR=,
#                                GATEWAY=<base URL> (the operator's gateway), CLUSTER_TOKEN_FILE=,
#                                and one `BOARD <name> <endpoint> <pid>` line per board.
#   hack/testcluster.sh board-stop NAME [KILL]   stop one board's agent (SIGTERM, or SIGKILL)
#   hack/testcluster.sh board-start NAME         start it again with the same flags
#   hack/testcluster.sh down     stop exactly the processes `up` started and remove the directory
#   hack/testcluster.sh status   say whether it is up
#
# Boards: TESTCLUSTER_BOARD_SOCS lists each board's SoC in order (default rk3588 for all; e.g.
# "rk3588 rk3588 rk3576"); TESTCLUSTER_BOARD_MEM_GIB each board's RAM in GiB (default 16, the
# fixture's; e.g. "16 16 4" gives board-3 a 4 GiB proc/meminfo); TESTCLUSTER_LEASE is the boards' lease duration in seconds (default 8,
# so lease expiry is quick to test; real boards use 40); TESTCLUSTER_STORE_BUDGET their
# --store-budget (default unset). The operator and agent binaries come from $CARGO_TARGET_DIR
# (built by `make cluster BOARDS=N`).
#
# Gateway: TESTCLUSTER_GATEWAY_KEYS, when set, is the gateway's client key list (docs/gateway.md
# has the format; written to a file passed as --api-key-file); TESTCLUSTER_GATEWAY_ARGS adds
# operator flags (e.g. "--queue-depth 8"); TESTCLUSTER_REQUIRE_TOKEN=1 starts the agents with
# --require-cluster-token (only the gateway and peers, which carry the cluster token, get in).
#
# TESTCLUSTER_APISERVER_ARGS adds kube-apiserver flags (e.g. --feature-gates=...).
#
# Serving pods on a real node (hack/node/node.sh sets these; each defaults to today's loopback-only
# behaviour):
#   TESTCLUSTER_BIND_ADDRESS=<ip>  kube-apiserver binds to and advertises <ip> (an address the
#                                  caller created, never 0.0.0.0) instead of 127.0.0.1; its
#                                  certificate also gets that IP, the `kubernetes` Service's
#                                  ClusterIP and the kubernetes.default.svc names, and the
#                                  kubeconfig points at it. The `kubernetes` Service's endpoint is
#                                  then <ip>:<port>, which pods reach through kube-proxy.
#   TESTCLUSTER_SERVICE_ACCOUNTS=1 ServiceAccount admission on: pods get a projected token.
#   TESTCLUSTER_AUTHORIZATION      kube-apiserver --authorization-mode (default RBAC; Node,RBAC
#                                  for a kubelet).
#   TESTCLUSTER_EXTRA_CONTROLLERS  comma-separated controllers added to CONTROLLERS below.
# TESTCLUSTER_DIR picks the directory that holds certificates, data, logs and PIDs (default
# $XDG_RUNTIME_DIR or /tmp, one per user), so several clusters can run side by side: the test
# suite uses its own temporary directory and never touches a developer's `make cluster`.
#
# Ports are chosen free on 127.0.0.1 at run time. Certificates are generated per cluster: a
# serving CA (kube-apiserver's certificate has IP SAN 127.0.0.1 and DNS localhost), a client CA
# with an admin certificate in group system:masters, and the service-account signing key pair.
#
# kube-controller-manager runs the controllers that make tests behave like a real cluster without
# pods ever running; see CONTROLLERS below and docs/development.md.
# -E: the ERR trap `up` sets also fires for failures inside functions (boards_up), so a
# failed start never leaves processes behind.
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${TESTCLUSTER_DIR:-${XDG_RUNTIME_DIR:-/tmp}/rockchip-llama-testcluster-$(id -u)}"
# Namespace deletion, ownerReference garbage collection, default ServiceAccounts and their
# kube-root-ca.crt ConfigMap, aggregated ClusterRoles (admin/edit/view), Deployments and
# ReplicaSets (their Pods stay Pending: there is no scheduler or kubelet).
CONTROLLERS="namespace-controller,garbage-collector-controller,serviceaccount-controller,root-ca-certificate-publisher-controller,clusterrole-aggregation-controller,deployment-controller,replicaset-controller,validatingadmissionpolicy-status-controller"
# Namespace of the operator and of the boards' Leases.
NS=rockchip-llama
BIND="${TESTCLUSTER_BIND_ADDRESS:-127.0.0.1}"
[[ "$BIND" != 0.0.0.0 && "$BIND" != "::" ]] || { echo "TESTCLUSTER_BIND_ADDRESS must be one address, not $BIND" >&2; exit 2; }
# The Service range and the `kubernetes` Service's ClusterIP (its first address).
SERVICE_CIDR=10.0.0.0/24
KUBERNETES_SERVICE_IP=10.0.0.1
TARGET="${CARGO_TARGET_DIR:-$HOME/.cache/rockchip-llama/target}/release"
# Bounds for every wait, in seconds. Generous because CI has 2 shared cores.
AGENT_TIMEOUT=120
ETCD_TIMEOUT=60
APISERVER_TIMEOUT=120
KCM_TIMEOUT=90

log() { printf '[testcluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Frees a TCP port on 127.0.0.1 by binding port 0; the tiny race before the server binds it is
# accepted (envtest does the same).
free_port() { # [address, default 127.0.0.1]
  python3 -c 'import socket, sys; s=socket.socket(); s.bind((sys.argv[1],0)); print(s.getsockname()[1]); s.close()' "${1:-127.0.0.1}"
}

# Polls a URL until it answers 2xx or the deadline passes; also fails fast if the process died.
wait_http() { # name pid timeout url curl-args...
  local name="$1" pid="$2" timeout="$3" url="$4"
  shift 4
  local deadline=$((SECONDS + timeout))
  while ((SECONDS < deadline)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "$name exited during start-up; last log lines:"
      tail -n 30 "$DIR/logs/$name.log" >&2 || true
      return 1
    fi
    if curl -sf -o /dev/null --max-time 5 "$@" "$url"; then
      return 0
    fi
    sleep 0.5
  done
  log "$name not ready after ${timeout}s; last log lines:"
  tail -n 30 "$DIR/logs/$name.log" >&2 || true
  return 1
}

# --- certificates -----------------------------------------------------------------------------
gen_ca() { # name cn
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 \
    -subj "/CN=$2" -keyout "$DIR/pki/$1.key" -out "$DIR/pki/$1.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    2>/dev/null
}

gen_cert() { # name ca subject extensions
  local name="$1" ca="$2" subj="$3" ext="$4"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj "$subj" -keyout "$DIR/pki/$name.key" -out "$DIR/pki/$name.csr" 2>/dev/null
  printf '%b' "$ext" >"$DIR/pki/$name.ext"
  openssl x509 -req -in "$DIR/pki/$name.csr" -CA "$DIR/pki/$ca.crt" -CAkey "$DIR/pki/$ca.key" \
    -CAcreateserial -days 7 -extfile "$DIR/pki/$name.ext" -out "$DIR/pki/$name.crt" 2>/dev/null
  rm -f "$DIR/pki/$name.csr" "$DIR/pki/$name.ext"
}

gen_pki() {
  mkdir -p "$DIR/pki"
  gen_ca serving-ca rockchip-llama-test-serving-ca
  gen_ca client-ca rockchip-llama-test-client-ca
  local sans="IP:127.0.0.1,DNS:localhost"
  if [[ "$BIND" != 127.0.0.1 ]]; then
    # What in-cluster clients dial: the ClusterIP (KUBERNETES_SERVICE_HOST) or the Service's names.
    sans+=",IP:$BIND,IP:$KUBERNETES_SERVICE_IP,DNS:kubernetes,DNS:kubernetes.default"
    sans+=",DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  fi
  gen_cert apiserver serving-ca "/CN=kube-apiserver" \
    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=$sans\n"
  gen_cert admin client-ca "/O=system:masters/CN=admin" \
    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n"
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$DIR/pki/sa.key" 2>/dev/null
  openssl pkey -in "$DIR/pki/sa.key" -pubout -out "$DIR/pki/sa.pub" 2>/dev/null
}

write_kubeconfig() { # port
  local b64='base64 -w0'
  cat >"$DIR/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: rockchip-llama-test
  cluster:
    server: https://$BIND:$1
    certificate-authority-data: $($b64 <"$DIR/pki/serving-ca.crt")
users:
- name: admin
  user:
    client-certificate-data: $($b64 <"$DIR/pki/admin.crt")
    client-key-data: $($b64 <"$DIR/pki/admin.key")
contexts:
- name: rockchip-llama-test
  context:
    cluster: rockchip-llama-test
    user: admin
    namespace: default
current-context: rockchip-llama-test
EOF
  chmod 600 "$DIR/kubeconfig"
}

# Starts a server in the background with its output in logs/<name>.log and records its PID and
# binary path, so `down` can stop exactly this process even if the PID was reused.
start() { # name binary args...
  local name="$1" bin="$2"
  shift 2
  "$bin" "$@" >"$DIR/logs/$name.log" 2>&1 </dev/null &
  local pid=$!
  echo "$pid $bin" >>"$DIR/pids"
  echo "$pid"
}

# --- up / down ---------------------------------------------------------------------------------
is_up() {
  [[ -f "$DIR/env" && -f "$DIR/pids" ]] || return 1
  local pid bin
  while read -r pid bin; do
    kill -0 "$pid" 2>/dev/null || return 1
  done <"$DIR/pids"
  # shellcheck disable=SC1091
  source "$DIR/env"
  curl -sf -o /dev/null --max-time 5 --cacert "$DIR/pki/serving-ca.crt" \
    "https://${APISERVER_HOST:-127.0.0.1}:$APISERVER_PORT/readyz"
}

up() {
  local boards=0
  while (($#)); do
    case "$1" in
      --boards)
        boards="$2"
        shift 2
        ;;
      *)
        echo "unknown option $1" >&2
        exit 2
        ;;
    esac
  done
  if is_up; then
    log "already up in $DIR"
    cat "$DIR/out"
    return
  fi
  [[ -d "$DIR" ]] && down
  local bin
  bin="$("$ROOT/hack/k8s/bins.sh")"
  local start_s=$SECONDS
  mkdir -p "$DIR/logs" "$DIR/etcd"
  : >"$DIR/pids"
  # From here on, any failure stops what was started and removes the directory.
  # shellcheck disable=SC2154 # rc is assigned inside the trap string
  trap 'rc=$?; log "start-up failed; stopping what was started"; down; exit $rc' ERR
  trap 'log "interrupted; stopping what was started"; down; exit 130' INT TERM

  log "generating certificates in $DIR/pki"
  gen_pki

  local etcd_port etcd_peer api_port kcm_port
  etcd_port="$(free_port)"
  etcd_peer="$(free_port)"
  api_port="$(free_port "$BIND")"
  kcm_port="$(free_port)"

  log "starting etcd on 127.0.0.1:$etcd_port"
  local etcd_pid
  etcd_pid="$(start etcd "$bin/etcd" \
    --name=test --data-dir="$DIR/etcd" \
    --listen-client-urls="http://127.0.0.1:$etcd_port" \
    --advertise-client-urls="http://127.0.0.1:$etcd_port" \
    --listen-peer-urls="http://127.0.0.1:$etcd_peer" \
    --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer" \
    --initial-cluster="test=http://127.0.0.1:$etcd_peer" \
    --unsafe-no-fsync=true --log-level=warn)"
  wait_http etcd "$etcd_pid" "$ETCD_TIMEOUT" "http://127.0.0.1:$etcd_port/health"

  log "starting kube-apiserver on $BIND:$api_port"
  local extra_args=()
  read -r -a extra_args <<<"${TESTCLUSTER_APISERVER_ARGS:-}"
  if [[ "$BIND" != 127.0.0.1 ]]; then
    # The `kubernetes` Service's endpoint; without it the apiserver advertises the default-route IP.
    extra_args+=(--advertise-address="$BIND")
  fi
  if [[ "${TESTCLUSTER_SERVICE_ACCOUNTS:-0}" != 1 ]]; then
    # No pod ever runs without a node, so pods need no token (envtest does the same).
    extra_args+=(--disable-admission-plugins=ServiceAccount)
  fi
  local api_pid
  api_pid="$(start kube-apiserver "$bin/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --bind-address="$BIND" --secure-port="$api_port" \
    --cert-dir="$DIR/pki" \
    --tls-cert-file="$DIR/pki/apiserver.crt" --tls-private-key-file="$DIR/pki/apiserver.key" \
    --client-ca-file="$DIR/pki/client-ca.crt" \
    --service-account-issuer="https://$BIND:$api_port" \
    --service-account-key-file="$DIR/pki/sa.pub" \
    --service-account-signing-key-file="$DIR/pki/sa.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --authorization-mode="${TESTCLUSTER_AUTHORIZATION:-RBAC}" --allow-privileged=true \
    --profiling=false --v=1 "${extra_args[@]}")"
  wait_http kube-apiserver "$api_pid" "$APISERVER_TIMEOUT" \
    "https://$BIND:$api_port/readyz" --cacert "$DIR/pki/serving-ca.crt"

  write_kubeconfig "$api_port"

  local controllers="$CONTROLLERS${TESTCLUSTER_EXTRA_CONTROLLERS:+,$TESTCLUSTER_EXTRA_CONTROLLERS}"
  log "starting kube-controller-manager ($controllers)"
  local kcm_pid
  kcm_pid="$(start kube-controller-manager "$bin/kube-controller-manager" \
    --kubeconfig="$DIR/kubeconfig" \
    --authentication-kubeconfig="$DIR/kubeconfig" --authorization-kubeconfig="$DIR/kubeconfig" \
    --authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics \
    --bind-address=127.0.0.1 --secure-port="$kcm_port" --cert-dir="$DIR/pki/kcm" \
    --leader-elect=false --controllers="$controllers" \
    --root-ca-file="$DIR/pki/serving-ca.crt" \
    --service-account-private-key-file="$DIR/pki/sa.key" \
    --use-service-account-credentials=false --profiling=false --v=1)"
  wait_http kube-controller-manager "$kcm_pid" "$KCM_TIMEOUT" \
    "https://127.0.0.1:$kcm_port/healthz" --insecure

  cat >"$DIR/env" <<EOF
KUBECONFIG=$DIR/kubeconfig
APISERVER_HOST=$BIND
APISERVER_PORT=$api_port
ETCD_PORT=$etcd_port
KCM_PORT=$kcm_port
K8S_BIN=$bin
EOF
  echo "KUBECONFIG=$DIR/kubeconfig" >"$DIR/out"
  if ((boards > 0)); then
    boards_up "$boards" "$bin"
  fi
  trap - ERR INT TERM
  log "up in $((SECONDS - start_s)) s: apiserver https://$BIND:$api_port, logs in $DIR/logs"
  cat "$DIR/out"
}

# The operator, the origin and N boards on top of the control plane.
boards_up() { # n k8s-bin-dir
  local n="$1" kubectl="$2/kubectl"
  export KUBECONFIG="$DIR/kubeconfig"
  local b
  for b in rockchip-llama-agent rockchip-llama-operator; do
    if [[ ! -x "$TARGET/$b" ]]; then
      log "$TARGET/$b missing: run 'make cluster BOARDS=N' (it builds it)"
      return 1
    fi
  done
  "$kubectl" apply -f "$ROOT/crds/yaml/" >/dev/null
  "$kubectl" wait --for=condition=Established --timeout=60s \
    crd/modeldeployments.rockchipllama.io crd/boards.rockchipllama.io >/dev/null
  "$kubectl" create namespace "$NS" >/dev/null
  head -c 32 /dev/urandom | base64 | tr -d '/+=' >"$DIR/cluster-token"

  log "origin: the test models with their sha256"
  mkdir -p "$DIR/origin"
  local sim f
  sim="$(make -s -C "$ROOT" rkllm-sim 2>/dev/null)"
  for f in $("$ROOT/hack/fetch-models.sh" smollm2) $(grep '\.rkllm$' <<<"$sim"); do
    ln -sf "$f" "$DIR/origin/$(basename "$f")"
  done
  (cd "$DIR/origin" && sha256sum -- * >SHA256SUMS)
  local origin_port python origin_pid
  origin_port="$(free_port)"
  # The interpreter itself (not a shim such as pyenv's), so `down` recognises the process.
  python="$(python3 -c 'import os, sys; print(os.path.realpath(sys.executable))')"
  origin_pid="$(start origin "$python" "$ROOT/hack/py/origin.py" --dir "$DIR/origin" \
    --port "$origin_port" --log "$DIR/logs/origin-requests.jsonl")"
  wait_http origin "$origin_pid" 30 "http://127.0.0.1:$origin_port/SHA256SUMS"
  {
    echo "ORIGIN=http://127.0.0.1:$origin_port"
    echo "ORIGIN_DIR=$DIR/origin"
  } >>"$DIR/out"

  log "starting the operator and its gateway"
  local gw_port op_args op_pid extra=()
  gw_port="$(free_port)"
  op_args=(run --namespace "$NS" --gateway-listen "127.0.0.1:$gw_port" --cluster-token-file "$DIR/cluster-token")
  if [[ -n "${TESTCLUSTER_GATEWAY_KEYS:-}" ]]; then
    printf '%s\n' "$TESTCLUSTER_GATEWAY_KEYS" >"$DIR/gateway-keys"
    op_args+=(--api-key-file "$DIR/gateway-keys")
  fi
  read -r -a extra <<<"${TESTCLUSTER_GATEWAY_ARGS:-}"
  op_pid="$(start operator "$TARGET/rockchip-llama-operator" "${op_args[@]}" "${extra[@]}")"
  wait_http operator "$op_pid" 60 "http://127.0.0.1:$gw_port/readyz"
  {
    echo "GATEWAY=http://127.0.0.1:$gw_port"
    echo "CLUSTER_TOKEN_FILE=$DIR/cluster-token"
  } >>"$DIR/out"

  local socs=() mems=()
  read -r -a socs <<<"${TESTCLUSTER_BOARD_SOCS:-}"
  read -r -a mems <<<"${TESTCLUSTER_BOARD_MEM_GIB:-}"
  local i name soc bd port mem
  mkdir -p "$DIR/boards"
  for ((i = 1; i <= n; i++)); do
    name="board-$i"
    soc="${socs[i - 1]:-rk3588}"
    bd="$DIR/boards/$name"
    mkdir -p "$bd/models"
    cp -r "$ROOT/hack/fixtures/rk3588" "$bd/sysfs"
    if [[ "$soc" != rk3588 ]]; then
      printf 'rockchip,%s-evb\0rockchip,%s\0' "$soc" "$soc" >"$bd/sysfs/proc/device-tree/compatible"
    fi
    mem="${mems[i - 1]:-}"
    if [[ -n "$mem" ]]; then
      # MemTotal and MemAvailable in kB; the agent reports them in Board.status.memory.
      sed -i -e "s/^MemTotal:.*/MemTotal:       $((mem * 1048576)) kB/" \
        -e "s/^MemAvailable:.*/MemAvailable:   $((mem * 1048576 * 9 / 10)) kB/" "$bd/sysfs/proc/meminfo"
    fi
    port="$(free_port)"
    local args=(serve --listen "127.0.0.1:$port" --models-dir "$bd/models" --sysfs-root "$bd/sysfs"
      --cluster --node-name "$name" --advertise-url "http://127.0.0.1:$port" --namespace "$NS"
      --cluster-token-file "$DIR/cluster-token" --lease-duration "${TESTCLUSTER_LEASE:-8}"
      --rkllm-lib "$(head -n1 <<<"$sim")" --threads 1 --shutdown-grace 5 --fetch-stall-timeout 3)
    if [[ "${TESTCLUSTER_REQUIRE_TOKEN:-0}" == 1 ]]; then
      args+=(--require-cluster-token)
    fi
    if [[ -n "${TESTCLUSTER_STORE_BUDGET:-}" ]]; then
      args+=(--store-budget "$TESTCLUSTER_STORE_BUDGET")
    fi
    printf '%q ' "${args[@]}" >"$bd/args"
    echo "$port" >"$bd/port"
    board_start "$name"
  done
  for ((i = 1; i <= n; i++)); do
    name="board-$i"
    bd="$DIR/boards/$name"
    wait_http "$name" "$(cat "$bd/pid")" "$AGENT_TIMEOUT" "http://127.0.0.1:$(cat "$bd/port")/readyz"
    echo "BOARD $name http://127.0.0.1:$(cat "$bd/port") $(cat "$bd/pid")" >>"$DIR/out"
  done
}

# Starts (again) one board's agent with the flags `up` chose; its log is appended to.
board_start() { # name
  local name="$1" bd="$DIR/boards/$1" args pid
  eval "args=($(cat "$bd/args"))"
  "$TARGET/rockchip-llama-agent" "${args[@]}" >>"$DIR/logs/$name.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid $TARGET/rockchip-llama-agent" >>"$DIR/pids"
  echo "$pid" >"$bd/pid"
}

# Stops one board's agent: SIGTERM (a drain) and wait, or SIGKILL (a crash).
board_stop() { # name [TERM|KILL]
  local pid
  pid="$(cat "$DIR/boards/$1/pid")"
  kill "-${2:-TERM}" "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 30))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
}

down() {
  [[ -d "$DIR" ]] || return 0
  if [[ -f "$DIR/pids" ]]; then
    local pid bin pids=()
    # Stop in reverse start order (controller-manager, apiserver, etcd), each only if the PID
    # still runs the binary we started.
    while read -r pid bin; do
      pids=("$pid:$bin" "${pids[@]}")
    done <"$DIR/pids"
    local entry
    for entry in "${pids[@]}"; do
      pid="${entry%%:*}"
      bin="${entry#*:}"
      # A rebuilt binary shows as "<path> (deleted)" for processes still running the old one.
      local exe
      exe="$(readlink "/proc/$pid/exe" 2>/dev/null || true)"
      if [[ "$exe" == "$bin" || "$exe" == "$bin (deleted)" ]]; then
        kill -TERM "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + 15))
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
        if kill -0 "$pid" 2>/dev/null; then
          log "$(basename "$bin") ($pid) ignored SIGTERM; killing"
          kill -KILL "$pid" 2>/dev/null || true
        fi
      fi
    done
  fi
  rm -rf "$DIR"
  log "down: removed $DIR"
}

case "${1:-}" in
  up)
    shift
    up "$@"
    ;;
  board-start)
    board_start "$2"
    wait_http "$2" "$(cat "$DIR/boards/$2/pid")" "$AGENT_TIMEOUT" \
      "http://127.0.0.1:$(cat "$DIR/boards/$2/port")/readyz"
    ;;
  board-stop) board_stop "$2" "${3:-TERM}" ;;
  down) down ;;
  status)
    if is_up; then echo "up: KUBECONFIG=$DIR/kubeconfig"; else echo "down"; exit 1; fi
    ;;
  *)
    echo "usage: $0 up [--boards N] | down | status | board-start NAME | board-stop NAME [KILL]" >&2
    exit 2
    ;;
esac
