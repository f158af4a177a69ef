#!/usr/bin/env bash
# Soak and faults (issue 12 §4): one test cluster (hack/testcluster.sh up --boards 3: a real
# kube-apiserver, the operator with its gateway, three simulated RK3588 boards, an origin), driven
# by tests/soak/run.py through disconnects, overload, kill -9 of a board, an API server restart
# and schemathesis on the gateway. The cluster is torn down on exit, failure included.
#
#   hack/soak/soak.sh short            make test-soak (in make test): every check, less of each
#   hack/soak/soak.sh full [--report]  make soak: the issue's numbers (10 minutes of overload);
#                                      --report writes docs/bench/reliability.md from the results
#   hack/soak/soak.sh short --report   the same report from a short run (labelled as such); a full
#                                      --report run afterwards summarises that short run at its end
#
# Environment: SOAK_DISCONNECTS, SOAK_OVERLOAD_S, SOAK_FUZZ_CASES, SOAK_SAMPLE_EVERY,
# SOAK_WARMUP_S, SOAK_WINDOW_S, SOAK_FUZZ_MAX_EXAMPLES, SOAK_FUZZ_PHASES override the profile
# (tests/soak/run.py); SOAK_KEEP=1 keeps the results and the cluster's logs. Builds the agent and the operator if needed (release profile).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rockchip-llama/target}"
log() { printf '[soak %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

PROFILE="${1:-short}"
[[ "$PROFILE" == short || "$PROFILE" == full ]] || { echo "usage: $0 short|full [--report]" >&2; exit 2; }
REPORT=0
[[ "${2:-}" == --report ]] && REPORT=1
# Wall-clock backstops for a hang (the run is bounded by its amounts of work): the profile's
# overload time plus generous room for the rest.
case "$PROFILE" in
  short) BACKSTOP=1200 ;;
  full) BACKSTOP=$((${SOAK_OVERLOAD_S:-600} + 3600)) ;;
esac

START=$SECONDS
log "building the agent and the operator (release profile)"
cargo build --release -p rockchip-llama-agent -p rockchip-llama-operator
BIN="$(hack/k8s/bins.sh)"
export PATH="$BIN:$PATH"
# The venv with schemathesis (pinned in hack/requirements-test.txt), made before the cluster runs.
SOAK_PYTHON="$(hack/pyenv.sh)"
export SOAK_PYTHON SOAK_PROFILE="$PROFILE"

WORK="$(mktemp -d -t rockchip-llama-soak.XXXXXX)"
export TESTCLUSTER_DIR="$WORK/cluster"
export KUBECACHEDIR="$WORK/kube-cache"
# Boards take requests only with the cluster token (the gateway has it; so does run.py).
export TESTCLUSTER_REQUIRE_TOKEN=1
# A short gateway queue, so that twice the capacity is a few dozen clients (tests/soak/phases.py
# reads the same number as QUEUE_DEPTH).
export TESTCLUSTER_GATEWAY_ARGS="--queue-depth 4"
cleanup() {
  local rc=$?
  if ((rc != 0)) && [[ -d "$TESTCLUSTER_DIR/logs" ]]; then
    for f in "$TESTCLUSTER_DIR"/logs/{operator,board-1,board-2,board-3,kube-apiserver}.log; do
      [[ -f "$f" ]] && { echo "--- last lines of $f"; tail -n 30 "$f"; }
    done
  fi
  # The failed checks, repeated after the logs and the teardown so that a CI log's last lines name them.
  local failed=""
  if ((rc != 0)) && [[ -s "$WORK/results.json" ]]; then
    failed="$(python3 - "$WORK/results.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
for name, ph in d["phases"].items():
    for c in ph["checks"]:
        if c["hard"] and not c["ok"]:
            print(f"  [{name}] {c['what']}: {c['value'][:600]}")
PY
)" || true
  fi
  if [[ "${SOAK_KEEP:-0}" == 1 && -d "$TESTCLUSTER_DIR/logs" ]]; then cp -r "$TESTCLUSTER_DIR/logs" "$WORK/logs"; fi
  hack/testcluster.sh down || true
  if [[ "${SOAK_KEEP:-0}" == 1 ]]; then log "results and logs kept in $WORK"; else rm -rf "$WORK"; fi
  if ((rc == 0)); then
    log "passed in $((SECONDS - START)) s"
  else
    [[ -n "$failed" ]] && log "failed checks:" && printf '%s\n' "$failed" >&2
    log "FAILED (exit $rc)"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

hack/testcluster.sh up --boards 3 >"$WORK/up.out"
cat "$WORK/up.out"
export KUBECONFIG
KUBECONFIG="$(sed -n 's/^KUBECONFIG=//p' "$WORK/up.out")"
rc=0
timeout -k 15 "$BACKSTOP" python3 tests/soak/run.py "$WORK/up.out" "$WORK/results.json" || rc=$?
if ((REPORT)) && [[ -s "$WORK/results.json" ]]; then
  mkdir -p docs/bench
  cp "$WORK/results.json" "docs/bench/reliability-$PROFILE.json"
  # The full report also summarises the last short run, when one was recorded.
  short=()
  [[ "$PROFILE" == full && -f docs/bench/reliability-short.json ]] && short=(docs/bench/reliability-short.json)
  python3 hack/soak/report.py "docs/bench/reliability-$PROFILE.json" "${short[@]}" >docs/bench/reliability.md
  log "wrote docs/bench/reliability.md and docs/bench/reliability-$PROFILE.json"
fi
exit "$rc"
