#!/usr/bin/env bash
# Entry point of `make bench-npu` (also run by `make bench`): the agent's RKLLM engine against
# rkllm-sim at vendor speed (RKLLM_SIM_SPEEDUP=1) — agent overhead vs the library driven directly,
# 8 concurrent clients, n_batch 4 vs 1, prompt cache on vs off, tok/s by concurrency. Measured, not a CI gate; the sim
# models the vendor's timing table on x86, so nothing here is a statement about real NPU speed.
#
#   hack/bench/npu_run.sh                  full run (~5 min), writes docs/bench/{npu.md,npu.json}
#   hack/bench/npu_run.sh --rounds 4 ...   extra arguments go to hack/bench/npu_bench.py (see --help)
#   BENCH_OUT=/tmp/b hack/bench/npu_run.sh write the report elsewhere
#
# Steps: build rkllm-sim + its model files (what `make rkllm-sim` does), build the agent (release,
# CARGO_TARGET_DIR defaults to ~/.cache/rockchip-llama/target), run npu_bench.py in the project
# venv (hack/pyenv.sh). npu_bench.py starts every agent with the launcher the test suites use too
# (hack/py/agentproc.py): a free loopback port, its own process group, a parent-death signal, a
# generous readiness backstop (300 s); it stops them on exit (also on Ctrl-C / SIGTERM).
set -euo pipefail
cd "$(dirname "$0")/../.."
cache="${ROCKCHIP_LLAMA_CACHE:-$HOME/.cache/rockchip-llama}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
start=$(date +%s)
step() { echo "bench-npu: [$1/4] $2 (+$(( $(date +%s) - start )) s)" >&2; }

step 1 "rkllm-sim (hack/rkllm-sim/build.sh)"
mapfile -t sim < <(hack/rkllm-sim/build.sh "$CARGO_TARGET_DIR" "$cache/rkllm-sim/models")
lib13=${sim[1]:-}
model=""
for p in "${sim[@]:2}"; do
  [[ $(basename "$p") == Qwen3-0.6B-sim_w8a8_rk3588.rkllm ]] && model=$p
done
[[ -f $lib13 && -f $model ]] || { echo "bench-npu: rkllm-sim did not yield the ABI 1.3 library and the Qwen3 model" >&2; exit 1; }

step 2 "agent (cargo build --release -p rockchip-llama-agent)"
[ -x hack/install-deps.sh ] && hack/install-deps.sh
cargo build --release -p rockchip-llama-agent
agent="$CARGO_TARGET_DIR/release/rockchip-llama-agent"

step 3 "python venv (hack/pyenv.sh)"
py=$(hack/pyenv.sh)

step 4 "benchmark (hack/bench/npu_bench.py)"
# npu_bench.py stops the agents it started on SIGTERM/SIGINT/SIGHUP; forward those to it.
"$py" hack/bench/npu_bench.py --agent "$agent" --lib "$lib13" --model "$model" \
  --out "${BENCH_OUT:-docs/bench}" "$@" &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null' TERM INT HUP
rc=0
wait "$pid" || rc=$?
if kill -0 "$pid" 2>/dev/null; then wait "$pid" || rc=$?; fi  # interrupted wait: let it clean up
[ "$rc" -eq 0 ] || { echo "bench-npu: npu_bench.py failed (exit $rc)" >&2; exit "$rc"; }
echo "bench-npu: done in $(( $(date +%s) - start )) s" >&2
