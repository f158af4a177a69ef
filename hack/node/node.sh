#!/usr/bin/env bash
# A real Kubernetes worker node on this machine, for the node tier (`make test-node`): the loopback
# control plane of hack/testcluster.sh, plus containerd + runc + CNI bridge (Debian packages,
# hack/node/install-deps.sh), kube-scheduler, kubelet and kube-proxy v1.37 (hack/k8s/bins.sh --node).
# Needs root. docs/development.md, "The node tier", explains every setting.
#
#   hack/node/node.sh up        start the node; prints KUBECONFIG=, NODE_NAME=, NODE_IP=, K8S_BIN=,
#                               CONTAINERD_ADDRESS=, TESTNODE_DIR= (also in $TESTNODE_DIR/env)
#   hack/node/node.sh load-image ARCHIVE...
#                               import OCI/Docker image archives into the node's containerd (the
#                               kubelet never pulls: use imagePullPolicy Never or IfNotPresent)
#   hack/node/node.sh down      stop everything `up` started, restore the host, then compare the
#                               host with the snapshot `up` took; fails (and says what differs)
#                               when something was left behind
#   hack/node/node.sh status
#
# Everything lives on addresses, interfaces and directories this script creates:
#   - node IP 198.51.100.2 (TEST-NET-2) on the bridge rlnode0 that has no ports (the kernel here has
#     no dummy driver), and a route for the Service range on it, so ClusterIP traffic never leaves
#     through the host's real interfaces even before kube-proxy has programmed it;
#   - kube-apiserver bound to the node IP (TESTCLUSTER_BIND_ADDRESS), etcd and every other server
#     on 127.0.0.1; all ports picked free at run time;
#   - pods on the CNI bridge rlcni0 with 10.244.0.0/24 (host-local); a FORWARD rule drops whatever
#     they send beyond the node (no masquerade, no resolv.conf: nothing leaves the machine);
#   - containerd with its own root, state, socket, runc root and netns directory under $TESTNODE_DIR.
# What cannot be moved (the kubelet's /var/lib/kubelet/device-plugins and /var/log/containers,
# libcni's /var/lib/cni, iptables/nft rules, kubepods cgroups, sysctls) is recorded before and
# restored by `down`, which an ERR/INT/TERM trap also runs when `up` fails. One node per host at a
# time (a claim file in /run); a stale claim from a killed run is torn down by the next `up`.
set -Eeuo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
DIR="${TESTNODE_DIR:-${TMPDIR:-/tmp}/rockchip-llama-testnode-$(id -u)}"
NODE_NAME=testnode
NODE_IP=198.51.100.2
NODE_LINK=rlnode0
POD_CIDR=10.244.0.0/24
CNI_BRIDGE=rlcni0
CNI_NET=rockchip-llama-testnode
SERVICE_CIDR=10.0.0.0/24 # hack/testcluster.sh's
PAUSE_REF=registry.k8s.io/pause:3.10
CLAIM=/run/rockchip-llama-testnode.claim
CONTAINERD=/usr/bin/containerd
SHIM=/usr/bin/containerd-shim-runc-v2
# Controllers a node needs on top of testcluster's (see docs/development.md); more with
# TESTNODE_EXTRA_CONTROLLERS (e.g. job-controller,statefulset-controller).
NODE_CONTROLLERS="daemonset-controller,endpointslice-controller,node-lifecycle-controller,pod-garbage-collector-controller,disruption-controller${TESTNODE_EXTRA_CONTROLLERS:+,$TESTNODE_EXTRA_CONTROLLERS}"
# Bounds for every wait, in seconds (2 shared cores).
START_TIMEOUT=60
READY_TIMEOUT=120
DRAIN_TIMEOUT=90
# Paths outside $DIR that the kubelet, libcni or containerd may create, and the chart phase's
# stand-in NPU device directory (the device plugin's values only take paths under /dev).
HOST_PATHS=(/var/lib/kubelet /var/log/containers /var/log/pods /var/lib/cni /run/containerd
  /run/netns /var/run/netns /usr/libexec/kubernetes /etc/cni /opt/cni /var/lib/containerd
  /etc/kubernetes /var/lib/kube-proxy /dev/rockchip-llama-testnode)

log() { printf '[testnode %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
  log "$*"
  return 1
}

free_port() { # address
  python3 -c 'import socket, sys; s=socket.socket(); s.bind((sys.argv[1],0)); print(s.getsockname()[1]); s.close()' "$1"
}

# Starts a server in the background (log in logs/<name>.log) and records "pid binary name" so
# `down` stops exactly this process.
start() { # name binary args...
  local name="$1" bin="$2"
  shift 2
  "$bin" "$@" >"$DIR/logs/$name.log" 2>&1 </dev/null &
  echo "$! $bin $name" >>"$DIR/pids"
  echo "$!"
}

# Polls a command until it succeeds; fails at the deadline or when the process died.
wait_for() { # what pid timeout cmd...
  local what="$1" pid="$2" timeout="$3"
  shift 3
  local deadline=$((SECONDS + timeout))
  while ((SECONDS < deadline)); do
    if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
      log "$what: the process exited; last log lines:"
      tail -n 30 "$DIR/logs/$what.log" >&2 2>/dev/null || true
      return 1
    fi
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  log "$what: not ready after ${timeout}s; last log lines:"
  tail -n 30 "$DIR/logs/$what.log" >&2 2>/dev/null || true
  return 1
}

# --- the host: snapshot, restore, compare --------------------------------------------------------
# Counters and values the kernel changes on its own (or other programs do) while the node runs.
VOLATILE_SYSCTLS='kernel\.(ns_last_pid|random\.[a-z_]+|pty\.nr|tainted|perf_event_max_sample_rate|hung_task_detect_count|warn_count|oops_count)|net\.netfilter\.nf_conntrack_count'
sysctls() {
  sysctl -a 2>/dev/null | grep -E '^(vm|kernel|net\.(ipv4|ipv6|bridge|netfilter|core))\.' |
    grep -vE "^($VOLATILE_SYSCTLS) " || true
}

# Everything the node could change on the host, as comparable text.
host_state() {
  echo "== sysctl"
  sysctls
  echo "== links"
  ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | sort
  echo "== routes"
  ip -4 route show table all | grep -v ' linkdown' | sort
  ip -6 route show table all | sed 's/ expires [0-9]*sec//' | sort
  echo "== nft"
  nft list ruleset 2>/dev/null | sed 's/counter packets [0-9]* bytes [0-9]*/counter/'
  echo "== cgroups" # per-command cgroups of the machine's own agent (process_api) come and go
  {
    find /sys/fs/cgroup -mindepth 1 -maxdepth 2 -type d 2>/dev/null
    find /sys/fs/cgroup -mindepth 2 -type d -path '*kubepods*' 2>/dev/null
  } | grep -v '/process_api' | sort -u
  echo "== mounts"
  awk '{print $5}' /proc/self/mountinfo |
    grep -E "^($DIR|/run/netns|/var/run/netns|/var/lib/kubelet|/run/containerd)(/|$)" | sort || true
  echo "== paths"
  local p
  for p in "${HOST_PATHS[@]}"; do
    if [[ -e "$p" ]]; then echo "$p $(find "$p" -maxdepth 3 2>/dev/null | sort | sha256sum | cut -c1-12)"; else echo "$p absent"; fi
  done
}

# Refuses ranges that are already routed here: the node must never shadow a real network.
check_free_ranges() {
  ip -o addr show | grep -qw "$NODE_IP" && die "$NODE_IP is already assigned on this host"
  local routes
  routes="$(ip -4 route show table main | awk '$1 != "default" {print $1}')"
  python3 - "$POD_CIDR" "$SERVICE_CIDR" "$NODE_IP/32" "$routes" <<'EOF' || die "a test range overlaps a host route"
import ipaddress, sys
mine = [ipaddress.ip_network(n) for n in sys.argv[1:4]]
for r in sys.argv[4].split():
    net = ipaddress.ip_network(r, strict=False)
    for m in mine:
        if net.overlaps(m):
            sys.exit(f"host route {net} overlaps {m}")
EOF
}

# --- certificates and kubeconfigs ----------------------------------------------------------------
gen_cert() { # name ca-path-prefix subject extensions
  local name="$1" ca="$2" subj="$3"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj "$subj" -keyout "$DIR/pki/$name.key" -out "$DIR/pki/$name.csr" 2>/dev/null
  printf '%b' "$4" >"$DIR/pki/$name.ext"
  openssl x509 -req -in "$DIR/pki/$name.csr" -CA "$ca.crt" -CAkey "$ca.key" -CAcreateserial \
    -days 7 -extfile "$DIR/pki/$name.ext" -out "$DIR/pki/$name.crt" 2>/dev/null
  rm -f "$DIR/pki/$name.csr" "$DIR/pki/$name.ext"
}
CLIENT_EXT="basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n"

write_kubeconfig() { # file cert-name
  local b64='base64 -w0'
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: testnode
  cluster:
    server: $APISERVER
    certificate-authority-data: $($b64 <"$DIR/cluster/pki/serving-ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $($b64 <"$DIR/pki/$2.crt")
    client-key-data: $($b64 <"$DIR/pki/$2.key")
contexts:
- name: testnode
  context: {cluster: testnode, user: $2}
current-context: testnode
EOF
  chmod 600 "$1"
}

# --- configuration files -------------------------------------------------------------------------
write_containerd_config() {
  mkdir -p "$DIR/containerd" "$DIR/cni/net.d" "$DIR/cni/ipam"
  cat >"$DIR/etc/containerd.toml" <<EOF
version = 2
root = "$DIR/containerd/root"
state = "$DIR/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$DIR/containerd/containerd.sock"
[ttrpc]
  address = "$DIR/containerd/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$DIR/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_REF"
  # Root here may lack CAP_SYS_RESOURCE: runc could not lower the sandbox's oom_score_adj (-998)
  # and every sandbox would die with "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  # Pod network namespaces under the state directory, not /run/netns.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "/usr/sbin/runc"
        Root = "$DIR/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$DIR/cni/net.d"
    max_conf_num = 1
EOF
  cat >"$DIR/cni/net.d/10-$CNI_NET.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$CNI_NET",
  "plugins": [
    {
      "type": "bridge", "bridge": "$CNI_BRIDGE", "isGateway": true, "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]],
        "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$DIR/cni/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
}

write_kubelet_config() { # port healthz-port
  cat >"$DIR/etc/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
failSwapOn: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$DIR/containerd/containerd.sock
imageServiceEndpoint: unix://$DIR/containerd/containerd.sock
address: $NODE_IP
port: $1
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $2
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $DIR/pki/node-ca.crt}
authorization: {mode: Webhook}
podLogsDir: $DIR/pod-logs
volumePluginDir: $DIR/volume-plugins
clusterDomain: cluster.local
resolvConf: ""
imageGCHighThresholdPercent: 100
evictionHard: {memory.available: 50Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
EOF
}

write_kube_proxy_config() { # healthz-port metrics-port
  cat >"$DIR/etc/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $DIR/etc/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $POD_CIDR
healthzBindAddress: 127.0.0.1:$1
metricsBindAddress: 127.0.0.1:$2
nodePortAddresses: ["$NODE_IP/32"]
oomScoreAdj: 0
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
iptables: {localhostNodePorts: false, masqueradeAll: true}
EOF
}

# --- up ------------------------------------------------------------------------------------------
ctr_() { ctr --address "$DIR/containerd/containerd.sock" -n k8s.io "$@"; }

load_images() { # archive...
  local a
  for a in "$@"; do
    ctr_ images import --snapshotter overlayfs "$a" >&2 || die "import of $a failed"
  done
}

claim() {
  if [[ -f "$CLAIM" ]]; then
    local other
    other="$(cat "$CLAIM")"
    if [[ "$other" != "$DIR" && -f "$other/pids" ]] && pids_alive "$other"; then
      die "another test node is up in $other (TESTNODE_DIR=$other $0 down)"
    fi
    log "tearing down what a previous run left behind in $other"
    TESTNODE_DIR="$other" "$0" down || true
  fi
  echo "$DIR" >"$CLAIM"
}

# Whether the process `up` recorded under this name still runs its binary.
running() { # name
  local pid bin name
  while read -r pid bin name; do
    [[ "$name" == "$1" && "$(readlink "/proc/$pid/exe" 2>/dev/null)" == "$bin"* ]] && return 0
  done <"$DIR/pids"
  return 1
} 2>/dev/null

pids_alive() { # dir
  local pid bin _
  while read -r pid bin _; do
    [[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == "$bin"* ]] && return 0
  done <"$1/pids"
  return 1
}

up() {
  [[ "$(id -u)" -eq 0 ]] || die "the node tier needs root (kubelet, containerd, iptables)"
  if [[ -f "$DIR/env" && -f "$DIR/pids" ]] && pids_alive "$DIR"; then
    log "already up in $DIR"
    cat "$DIR/env"
    return
  fi
  "$HERE/install-deps.sh"
  local bin images
  bin="$("$ROOT/hack/k8s/bins.sh" --node)"
  mapfile -t images < <("$HERE/images.sh")
  ((${#images[@]} == 2)) || die "hack/node/images.sh failed"
  local t0=$SECONDS
  claim
  if [[ -d "$DIR" ]]; then down || true; fi
  echo "$DIR" >"$CLAIM"
  mkdir -p "$DIR"/{logs,etc,pki,pod-logs,volume-plugins,runc}
  : >"$DIR/pids"
  # shellcheck disable=SC2154 # rc is assigned inside the trap string
  trap 'rc=$?; log "start-up failed; tearing down"; down || true; exit $rc' ERR
  trap 'log "interrupted; tearing down"; down || true; exit 130' INT TERM
  check_free_ranges
  host_state >"$DIR/host-before"
  for p in "${HOST_PATHS[@]}"; do [[ -e "$p" ]] && echo "$p"; done >"$DIR/host-paths-before" || true

  log "node IP $NODE_IP on $NODE_LINK; Service range $SERVICE_CIDR routed into it"
  ip link add "$NODE_LINK" type bridge
  ip addr add "$NODE_IP/32" dev "$NODE_LINK"
  ip link set "$NODE_LINK" up
  ip route add "$SERVICE_CIDR" dev "$NODE_LINK"
  # Pods talk to each other, the node IP and Services only: nothing they send is forwarded out of
  # the host's own interfaces (the bridge plugin turns on ip_forward).
  iptables -w -I FORWARD -s "$POD_CIDR" ! -o "$CNI_BRIDGE" -m comment --comment "$CNI_NET egress" -j DROP

  # The apiserver's client certificate for kubelet logs/exec, from a CA only the kubelet trusts.
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 \
    -subj "/CN=rockchip-llama-testnode-ca" -keyout "$DIR/pki/node-ca.key" -out "$DIR/pki/node-ca.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  gen_cert apiserver-kubelet-client "$DIR/pki/node-ca" "/CN=kube-apiserver-kubelet-client" "$CLIENT_EXT"

  log "control plane (hack/testcluster.sh) serving $NODE_IP, with service-account tokens"
  TESTCLUSTER_DIR="$DIR/cluster" TESTCLUSTER_BIND_ADDRESS="$NODE_IP" TESTCLUSTER_SERVICE_ACCOUNTS=1 \
    TESTCLUSTER_AUTHORIZATION=Node,RBAC TESTCLUSTER_EXTRA_CONTROLLERS="$NODE_CONTROLLERS" \
    TESTCLUSTER_APISERVER_ARGS="--kubelet-client-certificate=$DIR/pki/apiserver-kubelet-client.crt --kubelet-client-key=$DIR/pki/apiserver-kubelet-client.key --kubelet-preferred-address-types=InternalIP --enable-admission-plugins=NodeRestriction ${TESTCLUSTER_APISERVER_ARGS:-}" \
    "$ROOT/hack/testcluster.sh" up >/dev/null
  # shellcheck disable=SC1091
  source "$DIR/cluster/env"
  export KUBECONFIG
  APISERVER="https://$NODE_IP:$APISERVER_PORT"
  local kc=("$bin/kubectl" --request-timeout=20s)
  "${kc[@]}" create clusterrolebinding testnode-apiserver-kubelet \
    --clusterrole=system:kubelet-api-admin --user=kube-apiserver-kubelet-client >/dev/null

  local ca="$DIR/cluster/pki/client-ca"
  gen_cert kubelet "$ca" "/O=system:nodes/CN=system:node:$NODE_NAME" "$CLIENT_EXT"
  gen_cert kube-proxy "$ca" "/CN=system:kube-proxy" "$CLIENT_EXT"
  gen_cert kube-scheduler "$ca" "/CN=system:kube-scheduler" "$CLIENT_EXT"
  local c
  for c in kubelet kube-proxy kube-scheduler; do write_kubeconfig "$DIR/etc/$c.kubeconfig" "$c"; done

  log "containerd (own root, state and socket under $DIR/containerd)"
  write_containerd_config
  local pid
  pid="$(start containerd "$CONTAINERD" --config "$DIR/etc/containerd.toml")"
  wait_for containerd "$pid" "$START_TIMEOUT" ctr_ version
  load_images "${images[@]}"

  log "kube-scheduler"
  local sched_port
  sched_port="$(free_port 127.0.0.1)"
  pid="$(start kube-scheduler "$bin/kube-scheduler" --kubeconfig="$DIR/etc/kube-scheduler.kubeconfig" \
    --authentication-kubeconfig="$DIR/etc/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig="$DIR/etc/kube-scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$sched_port" --leader-elect=false --v=1)"
  wait_for kube-scheduler "$pid" "$START_TIMEOUT" curl -skf "https://127.0.0.1:$sched_port/healthz"

  log "kubelet (node $NODE_NAME)"
  local kubelet_port kubelet_healthz
  kubelet_port="$(free_port "$NODE_IP")"
  kubelet_healthz="$(free_port 127.0.0.1)"
  write_kubelet_config "$kubelet_port" "$kubelet_healthz"
  pid="$(start kubelet "$bin/kubelet" --config="$DIR/etc/kubelet.yaml" \
    --kubeconfig="$DIR/etc/kubelet.kubeconfig" --root-dir="$DIR/kubelet" --cert-dir="$DIR/pki/kubelet" \
    --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --v=1)"
  wait_for kubelet "$pid" "$START_TIMEOUT" curl -sf "http://127.0.0.1:$kubelet_healthz/healthz"

  log "kube-proxy (iptables mode)"
  local proxy_healthz proxy_metrics
  proxy_healthz="$(free_port 127.0.0.1)"
  proxy_metrics="$(free_port 127.0.0.1)"
  write_kube_proxy_config "$proxy_healthz" "$proxy_metrics"
  pid="$(start kube-proxy "$bin/kube-proxy" --config="$DIR/etc/kube-proxy.yaml" --v=1)"
  wait_for kube-proxy "$pid" "$START_TIMEOUT" curl -sf "http://127.0.0.1:$proxy_healthz/healthz"

  log "waiting for node $NODE_NAME Ready and untainted"
  node_ready() {
    [[ "$("${kc[@]}" get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == True &&
      -z "$("${kc[@]}" get node "$NODE_NAME" -o jsonpath='{.spec.taints}')" ]]
  }
  wait_for kubelet "$(awk '$3 == "kubelet" {print $1}' "$DIR/pids")" "$READY_TIMEOUT" node_ready

  cat >"$DIR/env" <<EOF
KUBECONFIG=$KUBECONFIG
K8S_BIN=$bin
NODE_NAME=$NODE_NAME
NODE_IP=$NODE_IP
POD_CIDR=$POD_CIDR
SERVICE_CIDR=$SERVICE_CIDR
APISERVER=$APISERVER
CONTAINERD_ADDRESS=$DIR/containerd/containerd.sock
TESTNODE_DIR=$DIR
EOF
  trap - ERR INT TERM
  log "node $NODE_NAME Ready in $((SECONDS - t0)) s (control plane, containerd, kubelet, kube-proxy); logs in $DIR/logs"
  cat "$DIR/env"
}

# --- down ----------------------------------------------------------------------------------------
# Sends SIGTERM to each "pid:binary" whose /proc/PID/exe is still that binary (a reused PID is
# left alone), waits for all of them (bounded), then SIGKILLs what is left.
stop_pids() { # pid:binary...
  local entry pid bin exe left=()
  for entry in "$@"; do
    pid="${entry%%:*}"
    bin="${entry#*:}"
    exe="$(readlink "/proc/$pid/exe" 2>/dev/null || true)"
    [[ "$exe" == "$bin" || "$exe" == "$bin (deleted)" ]] || continue
    kill -TERM "$pid" 2>/dev/null && left+=("$entry")
  done
  local deadline=$((SECONDS + 15)) alive
  while ((SECONDS < deadline)); do
    alive=0
    for entry in "${left[@]}"; do kill -0 "${entry%%:*}" 2>/dev/null && alive=1; done
    ((alive)) || return 0
    sleep 0.2
  done
  for entry in "${left[@]}"; do
    if kill -0 "${entry%%:*}" 2>/dev/null; then
      log "$(basename "${entry#*:}") (${entry%%:*}) ignored SIGTERM; killing"
      kill -KILL "${entry%%:*}" 2>/dev/null
    fi
  done
  return 0
}

stop_named() { # name...
  local pid bin name want entries=()
  [[ -f "$DIR/pids" ]] || return 0
  while read -r pid bin name; do
    for want in "$@"; do [[ "$name" == "$want" ]] && entries+=("$pid:$bin"); done
  done <"$DIR/pids"
  ((${#entries[@]} == 0)) || stop_pids "${entries[@]}"
}

# Deletes every workload and pod so the kubelet stops the containers, runs CNI DEL and unmounts
# the volumes, the way a real node drains. Bounded; what remains is removed by force afterwards.
drain() {
  local kubectl="$1"
  "$kubectl" delete daemonsets,deployments,replicasets,statefulsets,jobs --all -A \
    --wait=false --request-timeout=10s >/dev/null 2>&1 || true
  "$kubectl" delete pods --all -A --grace-period=5 --wait=true --timeout="${DRAIN_TIMEOUT}s" \
    >/dev/null 2>&1 || log "pods not gone after ${DRAIN_TIMEOUT}s; removing them by force"
  # The kubelet tears pod volumes down a moment after the API object is gone.
  local deadline=$((SECONDS + 20))
  while ((SECONDS < deadline)) && grep -q " $DIR/kubelet/pods/" /proc/self/mountinfo; do sleep 0.5; done
}

cleanup_iptables() {
  local ipt table chain rule
  for ipt in iptables ip6tables; do
    command -v "$ipt" >/dev/null || continue
    for table in filter nat mangle; do
      "$ipt" -t "$table" -S >/dev/null 2>&1 || continue
      # Rules in built-in chains that jump into KUBE-*/CNI-* chains, then those chains.
      while read -r rule; do
        eval "$ipt -w -t $table ${rule/-A /-D }" 2>/dev/null || true
      done < <("$ipt" -t "$table" -S 2>/dev/null | grep -E "^-A [A-Z]+ .*(-j (KUBE-|CNI-)|$CNI_NET)" | grep -vE '^-A (KUBE-|CNI-)')
      for chain in $("$ipt" -t "$table" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^(KUBE-|CNI-)/ {print $2}'); do
        "$ipt" -w -t "$table" -F "$chain" 2>/dev/null || true
      done
      for chain in $("$ipt" -t "$table" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^(KUBE-|CNI-)/ {print $2}'); do
        "$ipt" -w -t "$table" -X "$chain" 2>/dev/null || true
      done
    done
  done
  # nftables-mode leftovers, then the iptables-nft tables that did not exist before and are empty.
  local fam name
  for fam in ip ip6; do nft delete table "$fam" kube-proxy 2>/dev/null || true; done
  while read -r _ fam name; do
    grep -q "^table $fam $name {" "$DIR/host-before" 2>/dev/null && continue
    # Empty: no rule (two tabs deep, other than a base chain's "type" line), set, map or flowtable.
    if ! nft list table "$fam" "$name" 2>/dev/null | grep -qP '^\t\t(?!type )\S|^\t(set|map|flowtable) '; then
      nft delete table "$fam" "$name" 2>/dev/null || true
    fi
  done < <(nft list tables 2>/dev/null)
}

restore_sysctls() {
  [[ -f "$DIR/host-before" ]] || return 0
  local line key
  # Only the lines that differ now: the kubelet sets vm.overcommit_memory, kernel.panic and
  # kernel.panic_on_oops, the CNI bridge net.ipv4.ip_forward.
  while IFS= read -r line; do
    key="${line%% = *}"
    sysctl -q -w "$key=${line#* = }" >/dev/null 2>&1 || log "could not restore $key"
  done < <(sed -n '/^== sysctl$/,/^== links$/p' "$DIR/host-before" | grep ' = ' | grep -vxFf <(sysctls))
}

down() {
  [[ -d "$DIR" ]] || { rm -f "$CLAIM"; return 0; }
  set +e
  trap - ERR
  local t0=$SECONDS kubectl
  kubectl="$("$ROOT/hack/k8s/bins.sh" --print)/kubectl"
  # Draining needs a live kubelet and apiserver; otherwise everything is removed by force below.
  if running kubelet && [[ -f "$DIR/cluster/env" ]] &&
    TESTCLUSTER_DIR="$DIR/cluster" "$ROOT/hack/testcluster.sh" status >/dev/null 2>&1; then
    log "draining node $NODE_NAME"
    KUBECONFIG="$DIR/cluster/kubeconfig" drain "$kubectl"
  fi
  log "stopping kube-proxy, kubelet, kube-scheduler, containerd"
  stop_named kube-proxy kubelet kube-scheduler
  if [[ -f "$DIR/etc/kube-proxy.yaml" ]]; then
    "$(dirname "$kubectl")/kube-proxy" --cleanup --config="$DIR/etc/kube-proxy.yaml" >>"$DIR/logs/kube-proxy-cleanup.log" 2>&1
  fi
  if [[ -S "$DIR/containerd/containerd.sock" ]]; then
    local id
    for id in $(ctr_ tasks ls -q 2>/dev/null); do
      ctr_ tasks kill -s SIGKILL "$id" >/dev/null 2>&1
      ctr_ tasks delete -f "$id" >/dev/null 2>&1
    done
    for id in $(ctr_ containers ls -q 2>/dev/null); do ctr_ containers delete "$id" >/dev/null 2>&1; done
  fi
  stop_named containerd
  # Shims of this containerd (they outlive it by design), then anything left in kubepods cgroups
  # that this node created.
  local pid shims=()
  for pid in $(pgrep -f "^$SHIM .*-address $DIR/containerd/containerd.sock" 2>/dev/null); do
    shims+=("$pid:$SHIM")
  done
  ((${#shims[@]} == 0)) || stop_pids "${shims[@]}"
  if ! grep -q '^/sys/fs/cgroup/[^/]*/kubepods$' "$DIR/host-before" 2>/dev/null; then
    while read -r pid; do
      kill -KILL "$pid" 2>/dev/null
    done < <(cat /sys/fs/cgroup/*/kubepods/{,*/,*/*/,*/*/*/}cgroup.procs 2>/dev/null | sort -u)
  fi
  if [[ -f "$DIR/cluster/env" || -d "$DIR/cluster" ]]; then
    log "stopping the control plane"
    TESTCLUSTER_DIR="$DIR/cluster" "$ROOT/hack/testcluster.sh" down >/dev/null 2>&1
  fi

  log "restoring the host"
  local m
  while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "could not unmount $m"
  done < <(awk '{print $5}' /proc/self/mountinfo | grep -E "^$DIR/" | awk '{print length, $0}' | sort -rn | cut -d' ' -f2-)
  umount "$DIR/kubelet" 2>/dev/null
  local link
  for link in $(ip -o link show master "$CNI_BRIDGE" 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//'); do
    ip link del "$link" 2>/dev/null
  done
  ip link del "$CNI_BRIDGE" 2>/dev/null
  ip link del "$NODE_LINK" 2>/dev/null
  cleanup_iptables
  if ! grep -q '^/sys/fs/cgroup/[^/]*/kubepods$' "$DIR/host-before" 2>/dev/null; then
    find /sys/fs/cgroup/*/kubepods -depth -type d -exec rmdir {} \; 2>/dev/null
  fi
  restore_sysctls
  local p
  for p in "${HOST_PATHS[@]}"; do
    [[ -e "$p" ]] || continue
    if ! grep -qx "$p" "$DIR/host-paths-before" 2>/dev/null && [[ -f "$DIR/host-paths-before" ]]; then
      rm -rf --one-file-system "$p"
    fi
  done
  # libcni's result cache and the kubelet's log symlinks, where those directories existed before.
  rm -f /var/lib/cni/results/"$CNI_NET"-* 2>/dev/null
  find /var/log/containers -maxdepth 1 -type l -lname "$DIR/*" -delete 2>/dev/null

  local rc=0
  if [[ -f "$DIR/host-before" ]]; then
    host_state >"$DIR/host-after"
    if ! diff -u "$DIR/host-before" "$DIR/host-after" >"$DIR/host-diff"; then
      log "the host differs from before the node started:"
      sed -n '3,60p' "$DIR/host-diff" >&2
      rc=1
    fi
  fi
  for pid in $(pgrep -f "$DIR" 2>/dev/null); do
    [[ "$pid" == "$$" || "$pid" == "$BASHPID" ]] && continue
    log "left running: $pid $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-120)"
    rc=1
  done
  if [[ -n "${TESTNODE_KEEP_LOGS:-}" ]]; then
    mkdir -p "$TESTNODE_KEEP_LOGS"
    cp -r "$DIR/logs" "$TESTNODE_KEEP_LOGS/node" 2>/dev/null
    cp "$DIR/host-diff" "$TESTNODE_KEEP_LOGS/" 2>/dev/null
  fi
  rm -rf --one-file-system "$DIR"
  [[ "$(cat "$CLAIM" 2>/dev/null)" == "$DIR" ]] && rm -f "$CLAIM"
  if ((rc == 0)); then log "down in $((SECONDS - t0)) s; host as before"; fi
  set -e
  return "$rc"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  load-image)
    shift
    load_images "$@"
    ;;
  status)
    if [[ -f "$DIR/env" && -f "$DIR/pids" ]] && pids_alive "$DIR"; then cat "$DIR/env"; else
      echo down
      exit 1
    fi
    ;;
  *)
    echo "usage: $0 up | down | status | load-image ARCHIVE..." >&2
    exit 2
    ;;
esac
