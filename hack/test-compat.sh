#!/usr/bin/env bash
# Compatibility suite: the official `openai` and `ollama` Python clients against a live agent
# (tests/compat). Builds nothing: `make test` builds the agent first.
#
#   AGENT_BIN   agent binary (default ${CARGO_TARGET_DIR:-~/.cache/rockchip-llama/target}/release/rockchip-llama-agent)
#   COMPAT_TIMEOUT  per-test timeout in seconds (default 120)
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
py=$("$root/hack/pyenv.sh")
cd "$root/tests/compat"
# -p no:cacheprovider etc. live in tests/compat/pytest.ini
exec "$py" -m pytest -q --timeout="${COMPAT_TIMEOUT:-120}" "$@" .
