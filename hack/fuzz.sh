#!/usr/bin/env bash
# API fuzz smoke: schemathesis against a live agent's own /openapi.json (tests/fuzz/run.py).
# Checks at least that no generated request gets a 5xx; every request's token budget is clamped
# (tests/fuzz/hooks.py) so a run stays within a few minutes on 2 cores. Builds nothing.
#
#   AGENT_BIN     agent binary (default ${CARGO_TARGET_DIR:-~/.cache/rockchip-llama/target}/release/rockchip-llama-agent)
#   FUZZ_TIMEOUT  hard wall-clock bound for the whole script, s (default 300)
#   FUZZ_MAX_EXAMPLES, FUZZ_WALL, FUZZ_CHECKS, FUZZ_SEED, FUZZ_WORKERS: see tests/fuzz/run.py
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
# run.py bounds schemathesis itself (FUZZ_WALL); this is the backstop. On SIGTERM run.py stops
# the agent before exiting; the agent also has a parent-death signal.
exec timeout -k 15 "${FUZZ_TIMEOUT:-300}" "$py" "$root/tests/fuzz/run.py"
