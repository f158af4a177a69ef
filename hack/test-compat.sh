#!/usr/bin/env bash
# Compatibility suite: the official `openai` and `ollama` Python clients against a live agent
# (tests/compat), once per engine: llama (SmolLM2 on llama.cpp), then rkllm-1.2 and rkllm-1.3
# (the simulated Qwen3 0.6B on rkllm-sim built for that runtime ABI). Builds nothing but the
# simulator (a no-op when built): `make test` builds the agent first.
#
#   AGENT_BIN   agent binary (default ${CARGO_TARGET_DIR:-~/.cache/rockchip-llama/target}/release/rockchip-llama-agent)
#   COMPAT_ENGINE   run only this engine (llama | rkllm-1.2 | rkllm-1.3)
#   COMPAT_TIMEOUT  per-test wall clock in seconds (default 600): a backstop for a hang, not the
#                   bound; short generations bound each test, so a slow, shared machine passes too
#   extra arguments go to pytest, e.g. hack/test-compat.sh -k ollama
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export AGENT_BIN="${AGENT_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/rockchip-llama/target}/release/rockchip-llama-agent}"
if [ ! -x "$AGENT_BIN" ]; then
  echo "test-compat: no agent binary at $AGENT_BIN (cargo build --release -p rockchip-llama-agent)" >&2
  exit 1
fi
MODEL_PATH=$("$root/hack/fetch-models.sh" smollm2 | head -n1)
export MODEL_PATH
# rkllm-sim's libraries (ABI 1.2, 1.3) and model files, colon-separated as the Rust tests take them.
ROCKCHIP_LLAMA_TEST_RKLLM=$(make -s --no-print-directory -C "$root" rkllm-sim 2>/dev/null | paste -sd:)
export ROCKCHIP_LLAMA_TEST_RKLLM
py=$("$root/hack/pyenv.sh")
cd "$root/tests/compat"
engines=${COMPAT_ENGINE:-llama rkllm-1.2 rkllm-1.3}
for engine in $engines; do
  echo "==> compat suite on engine $engine"
  # -p no:cacheprovider etc. live in tests/compat/pytest.ini; the agent is started by the shared
  # launcher hack/py/agentproc.py (readiness backstop 300 s).
  COMPAT_ENGINE=$engine "$py" -m pytest -q --timeout="${COMPAT_TIMEOUT:-600}" "$@" .
done
