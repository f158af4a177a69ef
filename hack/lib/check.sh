# shellcheck shell=bash
# Helpers shared by the test scripts (sourced, not run). The sourcing script defines
# `pass DESCRIPTION` and `fail DESCRIPTION` (whether a failure stops the script or is counted is
# the script's choice); these only decide which of the two to call.

# poll TIMEOUT COMMAND...: runs COMMAND (output discarded) until it succeeds, every
# POLL_INTERVAL seconds (default 0.5), for at most TIMEOUT seconds; returns 1 when time is up.
poll() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep "${POLL_INTERVAL:-0.5}"
  done
}

# allowed DESCRIPTION COMMAND...: the command must succeed (an RBAC or admission check that has
# to let this through).
allowed() {
  local what="$1" out
  shift
  if out="$("$@" 2>&1)"; then pass "allowed: $what"; else fail "should be allowed: $what: $out"; fi
}

# denied DESCRIPTION EXPECTED COMMAND...: the command must fail, and its output must name why
# (EXPECTED, a fixed string such as the admission policy's message), so a refusal for some other
# reason (a typo, a missing object) does not pass as the check.
denied() {
  local what="$1" expect="$2" out
  shift 2
  if out="$("$@" 2>&1)"; then
    fail "should be denied: $what"
  elif grep -qF -- "$expect" <<<"$out"; then
    pass "denied: $what ($expect)"
  else
    fail "denied without '$expect': $what: $out"
  fi
}
