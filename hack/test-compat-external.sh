#!/usr/bin/env bash
# The compatibility suite (tests/compat: the official `openai` and `ollama` Python clients) against a
# server that is already running — the cluster gateway, or an agent started by hand — instead of an
# agent the suite starts itself. The tests marked `local_agent` (model file, pulls, deletes, loaded
# models) are skipped; every test of the client APIs runs (tests/compat/conftest.py).
#
#   hack/test-compat-external.sh URL MODEL [API_KEY] [pytest args...]
#
#   URL      base URL of the server, e.g. http://127.0.0.1:8080 (no /v1)
#   MODEL    the model name to send
#   API_KEY  bearer key for the server ('' for none; default $COMPAT_API_KEY)
#   COMPAT_ENGINE  which model MODEL is, for the checks that depend on it: llama (default; SmolLM2
#                  135M Instruct Q4_1) | rkllm-1.2 | rkllm-1.3 (the simulated Qwen3 0.6B)
#   COMPAT_ALIAS   another name the server answers to for MODEL (default: smollm2:135m when MODEL is
#                  the agent's smollm2-135m-instruct, else MODEL itself)
#   COMPAT_TIMEOUT per-test wall clock in seconds (default 600), a backstop as in hack/test-compat.sh
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ $# -lt 2 ] || [ -z "$1" ] || [ -z "$2" ]; then
  echo "usage: $0 URL MODEL [API_KEY] [pytest args...]" >&2
  exit 2
fi
export COMPAT_URL=$1 COMPAT_MODEL=$2
shift 2
if [ $# -gt 0 ]; then
  export COMPAT_API_KEY=$1
  shift
fi
py=$("$root/hack/pyenv.sh")
cd "$root/tests/compat"
echo "==> compat suite against $COMPAT_URL, model $COMPAT_MODEL (engine ${COMPAT_ENGINE:-llama})"
exec "$py" -m pytest -q --timeout="${COMPAT_TIMEOUT:-600}" "$@" .
