"""Soak and faults (issue 12 §4) on a test cluster as hack/soak/soak.sh starts it: a real
kube-apiserver, the operator with its gateway (`--queue-depth 4`), three simulated RK3588 boards
that require the cluster token, and two ModelDeployments with 2 replicas each: qwen3-sim (.rkllm
on rkllm-sim at the vendor's speed, nBatch 2) and smollm2 (GGUF on llama.cpp). Stdlib only.

Phases, in order (each prints `ok - ...`, `FAIL - ...` or `note - ...`):
  0. reference answers: fixed prompts at temperature 0 and a fixed seed, from every board holding
     the model and through the gateway, each asked twice;
  1. disconnects: N clients go away at random points (request half sent,
     queued, mid-stream, waiting for a whole answer; FIN or RST) straight at the boards and N
     through the gateway, under a background load that must all answer → busy counts back to 0,
     every board's every slot usable at once, the reference answers unchanged;
  2. overload: twice the clients the system admits (boards' slots + their queue + the gateway's
     queue) for D seconds → only 200s and 429s (with Retry-After), RSS, open files and threads of
     the agents and the operator against a warmed-up baseline;
  3. kill -9 a board under load (faults.py) → ejected ≤ 2 s, every request that had not started
     streaming answers, the replica re-placed within the lease duration, no duplicate on return;
  4. the API server restarted (SIGTERM, then the same command line) under load → serving never stops, the operator and agents recover
     (same processes, Leases renewed, a new ModelDeployment placed), nothing moved or duplicated;
  5. schemathesis on the gateway's /openapi.json, ≥ M cases → no 5xx;
  6. at the end, busy counts 0 and the reference answers unchanged again.

A failed check is recorded and the run goes on where that is safe, so one run reports every
number; the exit code is 1 if any hard check failed. Timing numbers that a busy machine could
push over are reported as notes (soft); the issue's own acceptance numbers are hard.

Usage: run.py UP_FILE RESULTS_JSON   (profile from SOAK_PROFILE=short|full, SOAK_* overrides)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import faults  # noqa: E402
import phases  # noqa: E402
from lib import Cluster, Failed, log  # noqa: E402

PROFILES = {
    # make test-soak: every check, less of each; <= 4 min warm. The fuzz skips schemathesis's
    # coverage phase (~1000 boundary cases, ~2 min here), which the full run keeps. The fuzzing
    # phase draws at most fuzz_max_examples cases per operation (GETs without parameters: 1), so
    # 25 gives ~220 cases; fuzz_cases is the least the run must reach.
    "short": {"disconnects": 50, "overload_s": 60, "sample_every": 2.0, "warmup_s": 15, "window_s": 10,
              "fuzz_cases": 200, "fuzz_phases": "examples,fuzzing",
              "fuzz_max_examples": 25},
    # make soak: the numbers (1000 disconnects on each path, 10 minutes, >= 1000 cases).
    "full": {"disconnects": 1000, "overload_s": 600, "sample_every": 5.0, "warmup_s": 60, "window_s": 60,
             "fuzz_cases": 1000, "fuzz_phases": "examples,coverage,fuzzing",
             "fuzz_max_examples": 25},
}


class Results:
    """Every check and number, by phase; written as JSON for hack/soak/report.py."""

    def __init__(self, profile: str, cfg: dict):
        self.data: dict = {"profile": profile, "config": cfg, "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                           "phases": {}}
        self.hard_failures: list[str] = []
        git = subprocess.run(["git", "-C", str(Path(__file__).parent), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=30)
        self.data["commit"] = git.stdout.strip() or "unknown"

    def phase(self, name: str) -> dict:
        return self.data["phases"].setdefault(name, {"checks": [], "numbers": {}})

    def check(self, phase: str, what: str, ok: bool, value: object = "", hard: bool = True) -> bool:
        self.phase(phase)["checks"].append({"what": what, "ok": bool(ok), "value": str(value), "hard": hard})
        tag = "ok" if ok else ("FAIL" if hard else "note")
        log(f"{tag} - [{phase}] {what}" + (f": {value}" if value != "" else ""))
        if not ok and hard:
            self.hard_failures.append(f"[{phase}] {what}: {value}")
        return ok

    def numbers(self, phase: str, **kw: object) -> None:
        self.phase(phase)["numbers"].update(kw)


def main() -> int:
    profile = os.environ.get("SOAK_PROFILE", "short")
    cfg = dict(PROFILES[profile])
    for k in cfg:  # SOAK_DISCONNECTS=200 etc.
        if (v := os.environ.get(f"SOAK_{k.upper()}")) is not None:
            cfg[k] = type(cfg[k])(v)
    c = Cluster.from_up(sys.argv[1])
    out = Path(sys.argv[2])
    res = Results(profile, cfg)
    t0 = time.monotonic()
    try:
        ctx = phases.setup(c, res)
        ref = phases.reference(c, ctx, res)
        phases.disconnects(c, ctx, res, cfg, ref)
        phases.overload(c, ctx, res, cfg)
        faults.kill_board(c, ctx, res)
        faults.restart_apiserver(c, ctx, res)
        faults.fuzz(c, ctx, res, cfg)
        phases.settled(c, ctx, res, ref, "end")
    except Failed as e:
        res.check("run", "the run reached its end", False, e)
        phases.dump_state(c)
    finally:
        res.data["wall_s"] = round(time.monotonic() - t0, 1)
        out.write_text(json.dumps(res.data, indent=1) + "\n")
    if res.hard_failures:
        log(f"FAILED: {len(res.hard_failures)} hard check(s):")
        for f in res.hard_failures:
            log(f"  {f}")
        return 1
    log(f"passed in {res.data['wall_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
