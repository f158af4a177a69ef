"""Schemathesis smoke against a live agent: `schemathesis run http://127.0.0.1:PORT/openapi.json`.

Run by hack/fuzz.sh (which sets AGENT_BIN, MODEL_PATH and runs this with the test venv's python).
Starts the agent exactly as the compat suite does, with the launcher they share
(hack/py/agentproc.py), fuzzes every operation of its own OpenAPI document except the ones that
change the model store, and fails on:
  * any failed check (default: not_a_server_error, i.e. no 5xx),
  * the agent dying during the run,
  * schemathesis still running after FUZZ_WALL seconds (a backstop, see below).

The run is bounded by its amount of work, not by the clock: at most FUZZ_MAX_EXAMPLES generated
cases per operation in the fuzzing phase, the fixed case sets of the examples and coverage phases
(derived from the schema, no random repetition), one request per case, and every generation
clamped to FUZZ_TOKEN_CAP tokens and a short prompt (hooks.py). A slow machine makes it take
longer, never fail: the wall-clock limits (FUZZ_WALL here, FUZZ_REQUEST_TIMEOUT per request,
FUZZ_TIMEOUT in hack/fuzz.sh, the agent's readiness wait in agentproc.py) are generous backstops
for a hang. Schemathesis draws no live progress when its output is not a terminal, so a line
every HEARTBEAT seconds reports the requests answered so far.

Environment (all optional):
  FUZZ_MAX_EXAMPLES    cases per operation in the fuzzing phase   (default 10: the bound)
  FUZZ_WALL            wall-clock backstop for schemathesis, s    (default 1800)
  FUZZ_REQUEST_TIMEOUT per-request backstop, s                    (default 120)
  FUZZ_CHECKS          comma-separated checks                     (default not_a_server_error)
  FUZZ_SEED            hypothesis seed, or "random"               (default 1126: reproducible in CI)
  FUZZ_TOKEN_CAP       generation budget per request              (default 8; see hooks.py)
  FUZZ_WORKERS         concurrent schemathesis workers            (default 1: with 2, hypothesis's
                       lambda-source lookup hit CPython 3.11's "AST constructor recursion depth
                       mismatch" (an `ast` thread-safety bug) as a spurious run error)
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "hack" / "py"))  # the shared launcher, see its docstring

from agentproc import Agent, LaunchError, default_agent_bin, default_model_path  # noqa: E402

HEARTBEAT = 60.0  # s between progress lines while schemathesis runs

# Operations that write the model store (pull downloads from arbitrary URLs, delete could remove
# the default model mid-run) are covered by tests/compat, not fuzzed.
EXCLUDE_PATHS = r"^/api/(pull|delete|create|copy|push)$"


def print_stats(path: Path) -> None:
    """Responses per operation and status class: shows whether cases reach the generation code or
    stop at validation (a spec that disagrees with the handlers makes most cases a 4xx)."""
    counts: dict[str, Counter] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return
    for line in lines:
        method, op, status = line.rsplit(" ", 2)
        counts.setdefault(f"{method} {op}", Counter())[status] += 1
    only_405 = sorted(op for op, c in counts.items() if set(c) == {"405"})
    print("fuzz: responses per operation (status:count)", file=sys.stderr)
    for op in sorted(counts):
        if op not in only_405:
            cells = "  ".join(f"{k}:{v}" for k, v in sorted(counts[op].items()))
            print(f"  {op:32} {cells}", file=sys.stderr)
    if only_405:
        print(f"  + {len(only_405)} method probes, all 405", file=sys.stderr)


def count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


def wait_with_heartbeat(proc: subprocess.Popen, agent: Agent, stats: Path, wall: float) -> int:
    """Waits for schemathesis, printing progress every HEARTBEAT s. Returns its exit code, 124
    when the FUZZ_WALL backstop ran out, or 1 as soon as the agent died (nothing left to test).
    Bounded: at most wall / HEARTBEAT + 1 waits."""
    t0 = time.monotonic()
    while True:
        left = wall - (time.monotonic() - t0)
        if left <= 0:
            print(f"fuzz: schemathesis still running after {wall:.0f} s, the FUZZ_WALL backstop "
                  "(not the bound: FUZZ_MAX_EXAMPLES is); stopping it", file=sys.stderr)
            return 124
        try:
            return proc.wait(timeout=min(HEARTBEAT, left))
        except subprocess.TimeoutExpired:
            pass
        if not agent.alive():
            print("fuzz: the agent died; stopping schemathesis", file=sys.stderr, flush=True)
            return 1
        elapsed = time.monotonic() - t0
        if elapsed < wall:
            print(f"fuzz: running for {elapsed:.0f} s, {count_lines(stats)} requests answered so "
                  f"far (backstop {wall:.0f} s)", file=sys.stderr, flush=True)


def main() -> int:
    # `timeout` (hack/fuzz.sh) sends SIGTERM: turn it into SystemExit so `finally` stops the agent.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(124))

    max_examples = os.environ.get("FUZZ_MAX_EXAMPLES", "10")
    # Backstops for a hang, not the bound (FUZZ_MAX_EXAMPLES and the token cap are).
    wall = float(os.environ.get("FUZZ_WALL", "1800"))
    request_timeout = os.environ.get("FUZZ_REQUEST_TIMEOUT", "120")
    checks = os.environ.get("FUZZ_CHECKS", "not_a_server_error")
    seed = os.environ.get("FUZZ_SEED", "1126")
    workers = os.environ.get("FUZZ_WORKERS", "1")

    workdir = Path(tempfile.mkdtemp(prefix="rl-fuzz-"))
    agent = Agent.in_workdir(default_agent_bin(), default_model_path(), workdir)
    try:
        agent.start()
    except LaunchError as e:
        print(f"fuzz: {e}", file=sys.stderr)
        return 1

    cmd = [
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        f"{agent.base_url}/openapi.json",
        "--url",
        agent.base_url,
        "--checks",
        checks,
        "--max-examples",
        max_examples,
        "--phases",
        "examples,coverage,fuzzing",
        "--workers",
        workers,
        "--request-timeout",
        request_timeout,
        "--exclude-path-regex",
        EXCLUDE_PATHS,
        "--generation-database",
        "none",
        "--no-shrink",
        "--suppress-health-check",
        "all",
        "--no-color",
    ]
    if seed != "random":
        cmd += ["--seed", seed]
    stats = workdir / "status-counts.txt"
    env = {**os.environ, "SCHEMATHESIS_HOOKS": str(HERE / "hooks.py"), "FUZZ_STATS": str(stats)}
    print("fuzz: " + " ".join(cmd), file=sys.stderr, flush=True)
    print(f"fuzz: bounded by work: <= {max_examples} generated cases per operation (fuzzing phase) "
          f"plus the schema's example and coverage cases, token cap "
          f"{os.environ.get('FUZZ_TOKEN_CAP', '8')}; wall-clock backstop {wall:.0f} s",
          file=sys.stderr, flush=True)

    rc = 1
    proc = None
    try:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=workdir, env=env)
        rc = wait_with_heartbeat(proc, agent, stats, wall)
        print(f"fuzz: schemathesis ended after {time.monotonic() - t0:.0f} s (rc {rc}, "
              f"{count_lines(stats)} requests answered)", file=sys.stderr, flush=True)
        print_stats(stats)
        if not agent.alive():
            print(f"fuzz: the agent died during the run (exit {agent.proc.returncode})", file=sys.stderr)
            rc = rc or 1
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)  # a backstop: SIGKILL is not ignorable
        code = agent.stop()
        if code not in (None, 0, -15):
            print(f"fuzz: agent exited with {code} on SIGTERM", file=sys.stderr)
            rc = rc or 1
        if rc != 0:
            print(f"fuzz: FAILED (rc {rc}); agent log tail ({agent.log_path}):", file=sys.stderr)
            print(agent.log_tail(80), file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
