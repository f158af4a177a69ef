#!/usr/bin/env bash
# API fuzz smoke: schemathesis against a live agent's own /openapi.json (tests/fuzz/run.py).
# Checks at least that no generated request gets a 5xx. The run is bounded by its amount of work
# (FUZZ_MAX_EXAMPLES cases per operation, every request's token budget clamped by
# tests/fuzz/hooks.py), which takes a few minutes on 2 quiet cores; a busy machine makes it slower,
# not failed: the time limits are generous backstops for a hang. Progress: a line every 60 s.
# Builds nothing.
#
#   AGENT_BIN     agent binary (default ${CARGO_TARGET_DIR:-~/.cache/rockchip-llama/target}/release/rockchip-llama-agent)
#   FUZZ_TIMEOUT  wall-clock backstop for the whole script, s (default FUZZ_WALL + 600 = 2400:
#                 above run.py's own backstops, the agent's start (300) and schemathesis (FUZZ_WALL))
#   FUZZ_MAX_EXAMPLES, FUZZ_WALL, FUZZ_REQUEST_TIMEOUT, FUZZ_CHECKS, FUZZ_SEED, FUZZ_TOKEN_CAP,
#   FUZZ_WORKERS: see tests/fuzz/run.py
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export AGENT_BIN="${AGENT_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/rockchip-llama/target}/release/rockchip-llama-agent}"
if [ ! -x "$AGENT_BIN" ]; then
  echo "fuzz: no agent binary at $AGENT_BIN (cargo build --release -p rockchip-llama-agent)" >&2
  exit 1
fi
MODEL_PATH=$("$root/hack/fetch-models.sh" smollm2 | head -n1)
export MODEL_PATH
py=$("$root/hack/pyenv.sh")
# A backstop, not the bound: run.py's work is bounded by cases, and it has its own backstops
# (FUZZ_WALL for schemathesis, 300 s for the agent's start), which this one lies above. On SIGTERM
# run.py stops the agent before exiting; the agent also has a parent-death signal.
exec timeout -k 15 "${FUZZ_TIMEOUT:-$(( ${FUZZ_WALL:-1800} + 600 ))}" "$py" "$root/tests/fuzz/run.py"
