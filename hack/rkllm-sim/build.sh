#!/usr/bin/env bash
# Builds rkllm-sim for ABI 1.2 and 1.3 and generates the simulated model files.
#   build.sh <cargo-target-dir> <models-dir>
# stdout: the 1.2 library path, the 1.3 library path, then one model path per line (nothing
# else: callers join these lines into ROCKCHIP_LLAMA_TEST_RKLLM). Everything else goes to stderr.
set -euo pipefail

target=${1:?usage: build.sh <cargo-target-dir> <models-dir>}
models=${2:?usage: build.sh <cargo-target-dir> <models-dir>}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

build() { # <variant> [cargo args...]
  local variant=$1
  shift
  echo "==> rkllm-sim: building ABI $variant" >&2
  (cd "$root" && cargo build --release -p rkllm-sim "$@" --target-dir "$target/rkllm-sim-$variant") >&2
}

# The agent picks its binding from this literal in the file, so a build without it is unusable.
check_version() { # <lib> <expected version>
  local lib=$1 want=${RKLLM_SIM_VERSION:-$2}
  if ! grep -c -a "rkllm-runtime version: $want" "$lib" >/dev/null; then
    echo "rkllm-sim: $lib does not contain 'rkllm-runtime version: $want'" >&2
    exit 1
  fi
}

build 1.2
build 1.3 --features abi13
lib12=$target/rkllm-sim-1.2/release/librkllmrt.so
lib13=$target/rkllm-sim-1.3/release/librkllmrt.so
check_version "$lib12" 1.2.3
check_version "$lib13" 1.3.0

echo "==> rkllm-sim: writing model files to $models" >&2
paths=$("$target/rkllm-sim-1.2/release/rkllm-sim-models" "$models")
printf '%s\n%s\n%s\n' "$lib12" "$lib13" "$paths"
