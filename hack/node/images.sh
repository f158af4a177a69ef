#!/usr/bin/env bash
# Builds the node tier's two images as OCI archives and prints their paths (progress on stderr):
#   registry.k8s.io/pause:3.10     the pod sandbox (static C pause, hack/node/pause.c); containerd's
#                                  sandbox_image, which the kubelet never pulls
#   localhost/rockchip-llama-testpod:v1
#                                  hack/node/testpod (Go, standard library only): HTTP server, GET
#                                  client and the in-cluster API check
# Both are scratch images written by hack/node/oci-archive.py: no base image, no registry, no
# image builder. Cached under ~/.cache/rockchip-llama/node/images/, keyed by a hash of the sources
# and the compilers, so a warm run costs a few milliseconds.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${ROCKCHIP_LLAMA_CACHE:-$HOME/.cache/rockchip-llama}"
OUT="$CACHE/node/images"
PAUSE_REF="registry.k8s.io/pause:3.10"
TESTPOD_REF="localhost/rockchip-llama-testpod:v1"

log() { printf '[node-images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if ! command -v go >/dev/null && [[ -x /usr/local/go/bin/go ]]; then
  export PATH="/usr/local/go/bin:$PATH"
fi
export GOPATH="$CACHE/go"
export GOMODCACHE="$GOPATH/pkg/mod"
export GOCACHE="$GOPATH/build"
export GOTOOLCHAIN=local
export GOFLAGS="-buildvcs=false"
export CGO_ENABLED=0

key="$(
  {
    cat "$HERE/pause.c" "$HERE/oci-archive.py" "$HERE/testpod/go.mod" "$HERE"/testpod/*.go
    gcc --version | head -1
    go version
  } | sha256sum | cut -c1-16
)"
mkdir -p "$OUT"
if [[ -f "$OUT/pause-$key.tar" && -f "$OUT/testpod-$key.tar" ]]; then
  echo "$OUT/pause-$key.tar"
  echo "$OUT/testpod-$key.tar"
  exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
log "building pause (gcc -static) and testpod (go build) images"
gcc -Os -static -s -o "$work/pause" "$HERE/pause.c"
(cd "$HERE/testpod" && nice -n 10 go build -trimpath -ldflags "-s -w" -o "$work/testpod" .)
python3 "$HERE/oci-archive.py" --ref "$PAUSE_REF" --out "$work/pause.tar" \
  --entrypoint /pause --user 65535:65535 --add "$work/pause:/pause:0755" >/dev/null
python3 "$HERE/oci-archive.py" --ref "$TESTPOD_REF" --out "$work/testpod.tar" \
  --entrypoint /testpod --cmd serve --user 65534:65534 --add "$work/testpod:/testpod:0755" >/dev/null
rm -f "$OUT"/pause-*.tar "$OUT"/testpod-*.tar
mv "$work/pause.tar" "$OUT/pause-$key.tar"
mv "$work/testpod.tar" "$OUT/testpod-$key.tar"
log "images in $OUT"
echo "$OUT/pause-$key.tar"
echo "$OUT/testpod-$key.tar"
