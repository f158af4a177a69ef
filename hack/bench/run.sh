#!/usr/bin/env bash
# Entry point of `make bench` (issue 2): our agent vs llama.cpp's own llama-server, same GGUF, same
# threads, interleaved rounds in one invocation. Measured, not a CI gate.
#
#   hack/bench/run.sh                  full run (~15 min warm), writes docs/bench/{README.md,results.json}
#                                      and agent-vs-llama-server.png
#   hack/bench/run.sh --rounds 2 ...   extra arguments go to hack/bench/bench.py (see --help)
#   BENCH_OUT=/tmp/b hack/bench/run.sh write the report elsewhere
#
# Steps: fetch + verify the two test models, build llama-server (cached under
# ~/.cache/rockchip-llama/llama-server/), build the agent (release, CARGO_TARGET_DIR defaults to
# ~/.cache/rockchip-llama/target), run bench.py. bench.py starts every server with the launcher
# the test suites use too (hack/py/agentproc.py): a free loopback port, its own process group, a
# parent-death signal, a generous readiness backstop (300 s); it stops them on exit (also on
# Ctrl-C / SIGTERM).
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rockchip-llama/target}"
start=$(date +%s)
step() { echo "bench: [$1/4] $2 (+$(( $(date +%s) - start )) s)" >&2; }

step 1 "models (hack/fetch-models.sh)"
mapfile -t models < <(hack/fetch-models.sh)
[ "${#models[@]}" -eq 2 ] || { echo "bench: expected 2 model paths from hack/fetch-models.sh" >&2; exit 1; }

step 2 "llama-server (hack/bench/build-llama-server.sh)"
llama_server=$(hack/bench/build-llama-server.sh)

step 3 "agent (cargo build --release -p rockchip-llama-agent)"
[ -x hack/install-deps.sh ] && hack/install-deps.sh
cargo build --release -p rockchip-llama-agent
agent="$CARGO_TARGET_DIR/release/rockchip-llama-agent"

step 4 "benchmark (hack/bench/bench.py, in the venv of hack/pyenv.sh: matplotlib for the plot)"
py="${PYTHON:-$(hack/pyenv.sh)}"
# bench.py stops the servers it started on SIGTERM/SIGINT/SIGHUP; forward those to it.
"$py" hack/bench/bench.py --llama-server "$llama_server" --agent "$agent" \
  --smollm2 "${models[0]}" --gemma "${models[1]}" --out "${BENCH_OUT:-docs/bench}" "$@" &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null' TERM INT HUP
rc=0
wait "$pid" || rc=$?
if kill -0 "$pid" 2>/dev/null; then wait "$pid" || rc=$?; fi  # interrupted wait: let it clean up
[ "$rc" -eq 0 ] || { echo "bench: bench.py failed (exit $rc)" >&2; exit "$rc"; }
echo "bench: done in $(( $(date +%s) - start )) s" >&2
