"""The soak's fault phases: kill -9 a board under load, restart the API server under load, and
schemathesis on the gateway's OpenAPI document (run.py has the order and why)."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

from lib import ROOT, Cluster, Failed, call, log, metrics, prom, wait_for
from load import Load, summary
from phases import QWEN, SMOL, refresh

EJECT_LIMIT_S = 2.0  # the acceptance number
# "Re-placed within the lease time": the lease expires up to one duration after the kill (the
# agent renews every quarter of it, so 3/4 to 1 duration after), and the controller looks again
# 0.1 s after the expiry it expects (controller/reconcile.rs). Two gates: the controller reacts
# within REACTION_S of the expiry, and places within one lease duration + REACTION_S of the
# kill. REACTION_S also covers this test's polling (0.1 s plus an API read) on a loaded machine.
REACTION_S = 1.0


def _ts(s: str | None) -> float | None:
    """A Kubernetes MicroTime / Time as Unix seconds."""
    if not s:
        return None
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def kill_board(c: Cluster, ctx: dict, res) -> None:
    """kill -9 a board holding qwen3-sim while 6 clients stream and wait for whole answers
    through the gateway. A request may fail only if its answer had started (the gateway answers
    with the board's first byte, and retries on another board until then)."""
    refresh(c, ctx)
    victim = ctx["boards"][QWEN][0]
    spare = next(b for b in sorted(c.boards) if b not in ctx["boards"][QWEN])
    lease = next((le for le in c.leases() if le["metadata"]["name"] == victim), {})
    lease_s = (lease.get("spec") or {}).get("leaseDurationSeconds") or 0
    ej_before = prom(metrics(c.gateway), "rockchip_llama_gateway_ejections_total", {"board": victim})
    # 6 clients = the two qwen3 boards' slots and queue: all admitted, so every failure is the kill's.
    load = Load(c.gateway, QWEN, 6, 48, seed=11, label="kill").start()
    time.sleep(3)
    t_kill = time.monotonic()
    wall_kill = time.time()
    os.kill(c.board_pid(victim), signal.SIGKILL)
    times: dict[str, float] = {}

    def ejected() -> bool:
        return prom(metrics(c.gateway), "rockchip_llama_gateway_ejections_total", {"board": victim}) > ej_before
    while time.monotonic() - t_kill < 30:
        now = time.monotonic() - t_kill
        if "ejected" not in times and ejected():
            times["ejected"] = now
        pl = c.placements("qwen3")
        if "placed" not in times and spare in pl:
            times["placed"] = now
        if "ready" not in times and spare in pl and pl[spare].get("phase") == "Ready" and c.ready_replicas("qwen3") == 2:
            times["ready"] = now
        if len(times) == 3:
            break
        time.sleep(0.1)
    time.sleep(2)  # the load goes on across the re-placement
    outs = load.stop()
    # The Lease as the dead agent last renewed it: when it expired.
    lease = next((le for le in c.leases() if le["metadata"]["name"] == victim), {})
    renew = _ts((lease.get("spec") or {}).get("renewTime"))
    expiry = renew + lease_s - wall_kill if renew else None
    s = summary(outs)
    failed = [o for o in outs if not o.ok]
    unstarted = [o for o in failed if not o.started]
    res.numbers("kill", victim=victim, spare=spare, lease_s=lease_s, load=s,
                failed_started=len(failed) - len(unstarted), failed_unstarted=len(unstarted),
                ejected_s=times.get("ejected"), lease_expired_s=expiry, placed_s=times.get("placed"),
                ready_s=times.get("ready"), reaction_s=REACTION_S,
                retries=prom(metrics(c.gateway), "rockchip_llama_gateway_retries_total", {"board": victim}))
    res.check("kill", f"kill -9 {victim}: no request that had not started streaming failed", not unstarted,
              f"{s}; {len(failed) - len(unstarted)} failed mid-stream" +
              (f"; first unstarted failure: {unstarted[0].status} {unstarted[0].detail!r}" if unstarted else ""))
    ej = times.get("ejected")
    res.check("kill", f"{victim} ejected from routing within {EJECT_LIMIT_S:.0f} s", ej is not None and ej <= EJECT_LIMIT_S,
              f"{ej:.2f} s" if ej is not None else "not within 30 s")
    pl = times.get("placed")
    res.check("kill", f"replica re-placed on {spare} within the lease duration ({lease_s} s) of the kill, "
              f"+ {REACTION_S:.0f} s",
              pl is not None and pl <= lease_s + REACTION_S,
              (f"{pl:.1f} s after the kill" if pl is not None else "not within 30 s")
              + (f"; the lease expired {expiry:.1f} s after the kill" if expiry is not None else ""))
    res.check("kill", f"the controller re-placed it within {REACTION_S:.0f} s of the lease's expiry",
              pl is not None and expiry is not None and pl - expiry <= REACTION_S,
              f"{pl - expiry:.2f} s after the expiry" if pl is not None and expiry is not None else "no expiry or placement seen")
    res.check("kill", "re-placed replica Ready (note: includes the peer download and load)", times.get("ready") is not None,
              f"{times['ready']:.1f} s after the kill" if "ready" in times else "not within 30 s", hard=False)
    c.testcluster("board-start", victim)
    wait_for(f"{victim} Ready again", lambda: _board_ready(c, victim), 120)
    time.sleep(5)  # a few reconciles with the board back
    dup = {md: sorted(c.placements(md)) for md in ("qwen3", "smollm2")}
    res.check("kill", f"{victim} back: no duplicate (2 placements per deployment)", all(len(v) == 2 for v in dup.values()), dup)
    refresh(c, ctx)


def _board_ready(c: Cluster, name: str) -> bool:
    for b in c.boards_obj():
        if b["metadata"]["name"] == name:
            for cond in (b.get("status") or {}).get("conditions") or []:
                if cond["type"] == "Ready":
                    return cond["status"] == "True"
    return False


def _apiserver_down_up(c: Cluster) -> tuple[float, float, int]:
    """Stops kube-apiserver (SIGTERM, as a rolling restart would) and starts it again with the same
    command line, recording the new PID where `hack/testcluster.sh down` will stop it. Returns
    the seconds its graceful stop took, the seconds it was not ready in all, and the new PID."""
    pid = c.pid_of("/kube-apiserver")
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    if not argv[0].endswith(b"/kube-apiserver"):
        raise Failed(f"PID {pid} is not the test cluster's kube-apiserver: {argv[0]!r}")
    t0 = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    if Path(f"/proc/{pid}").exists():
        os.kill(pid, signal.SIGKILL)
    stop_s = time.monotonic() - t0
    logf = open(c.dir / "logs" / "kube-apiserver.log", "ab")
    p = subprocess.Popen([a.decode() for a in argv], stdout=logf, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    with open(c.dir / "pids", "a") as f:
        f.write(f"{p.pid} {argv[0].decode()}\n")
    wait_for("kube-apiserver ready again", lambda: _readyz(c), 120, 0.2)
    return stop_s, time.monotonic() - t0, p.pid


def _readyz(c: Cluster) -> bool:
    try:
        c.kube("/api")
        return True
    except (OSError, ValueError):
        return False


def restart_apiserver(c: Cluster, ctx: dict, res) -> None:
    """Restart kube-apiserver while 4 + 1 clients use the gateway: every request must answer; the
    operator and the agents must come back on their own (same processes, Leases renewed after the
    restart, the controller placing a new deployment), nothing moved or duplicated."""
    refresh(c, ctx)
    before = {md: sorted(c.placements(md)) for md in ("qwen3", "smollm2")}
    pids = {b: c.board_pid(b) for b in c.boards} | {"operator": c.pid_of("/rockchip-llama-operator")}
    loads = [Load(c.gateway, QWEN, 4, 16, seed=21, label="apiserver").start(),
             Load(c.gateway, SMOL, 1, 16, seed=22, label="apiserver").start()]
    seen_max: Counter = Counter()
    stop = threading.Event()

    def watch() -> None:  # placements as often as the API server answers
        while not stop.is_set():
            for md in before:
                seen_max[md] = max(seen_max[md], len(c.placements(md)))
            stop.wait(0.3)
    w = threading.Thread(target=watch, daemon=True)
    w.start()
    time.sleep(3)
    wall_restart = time.time()
    t_term = time.monotonic()
    stop_s, down_s, new_pid = _apiserver_down_up(c)
    t_up = time.monotonic()

    def recovered() -> bool:
        leases = {le["metadata"]["name"]: _ts((le.get("spec") or {}).get("renewTime")) or 0 for le in c.leases()}
        return (all(leases.get(b, 0) > wall_restart for b in c.boards)
                and leases.get("rockchip-llama-operator", 0) > wall_restart
                and all(_board_ready(c, b) for b in c.boards)
                and c.ready_replicas("qwen3") == 2 and c.ready_replicas("smollm2") == 2)
    ok = True
    try:
        wait_for("boards and operator renewing their Leases, boards and deployments Ready", recovered, 90)
    except Failed:
        ok = False
    rec_s = time.monotonic() - t_up
    time.sleep(3)  # load across the recovery too
    outs = [o for ld in loads for o in ld.stop()]
    stop.set()
    w.join()
    s = summary(outs)
    bad = sorted(o.t_start - t_term for o in outs if not o.ok)
    if bad:  # when the failed requests were sent, from the SIGTERM
        s["failed_sent_from_s"], s["failed_sent_until_s"] = round(bad[0], 1), round(bad[-1], 1)
    after = {md: sorted(c.placements(md)) for md in before}
    alive = {n: Path(f"/proc/{p}").exists() and c.board_pid(n) == p if n != "operator" else Path(f"/proc/{p}").exists()
             for n, p in pids.items()}
    dup_keys = {}
    for b in c.boards_obj():
        keys = [m.get("key") for m in (b.get("spec") or {}).get("models") or []]
        if len(keys) != len(set(keys)):
            dup_keys[b["metadata"]["name"]] = keys
    res.numbers("apiserver", not_ready_s=round(down_s, 1), stopping_s=round(stop_s, 1), recovered_s=round(rec_s, 1), load=s,
                placements_before=before, placements_after=after, max_placements_seen=dict(seen_max), new_pid=new_pid)
    res.check("apiserver", "serving never stopped: every request through the gateway answered in full",
              s["ok"] == s["requests"] > 0, s)
    res.check("apiserver", "operator and agents recovered by themselves (Leases renewed, boards and deployments Ready)",
              ok, f"{rec_s:.1f} s after the API server was back ({down_s:.1f} s not ready)")
    res.check("apiserver", "the same operator and agent processes (none crashed or was restarted)", all(alive.values()), alive)
    res.check("apiserver", "nothing moved or duplicated: placements unchanged, never more than desired, no duplicate keys",
              after == before and all(v <= 2 for v in seen_max.values()) and not dup_keys,
              f"before {before}, after {after}, most seen {dict(seen_max)}, duplicate keys {dup_keys}")
    # The controller acts again: a new deployment (a different tiny simulated model) placed and Ready.
    rk2 = next(n for n in ctx["sums"] if n.startswith("Qwen2") and n.endswith("_rk3588.rkllm"))
    c.apply_md("probe", {"model": "probe-sim", "format": "rkllm", "replicas": 1, "socs": ["rk3588"],
                         "source": {"url": f"{c.origin}/{rk2}", "sha256": ctx["sums"][rk2]}})
    t0 = time.monotonic()
    try:
        wait_for("a new deployment Ready", lambda: c.ready_replicas("probe") == 1, 120)
        placed = True
    except Failed:
        placed = False
    res.check("apiserver", "the controller works after the restart: a new ModelDeployment placed and Ready", placed,
              f"{time.monotonic() - t0:.1f} s")
    subprocess.run(["kubectl", "delete", "md", "probe", "-n", "default", "--wait=false"], capture_output=True, timeout=60,
                   env={**os.environ, "KUBECONFIG": str(c.dir / "kubeconfig")})


def fuzz(c: Cluster, ctx: dict, res, cfg: dict) -> None:
    """schemathesis on the gateway's own /openapi.json with the agent fuzz smoke's hooks
    (tests/fuzz/hooks.py: every generation capped to a few tokens, model names mostly real)."""
    want = cfg["fuzz_cases"]
    # Generated cases per operation at most; the examples and coverage phases add fixed sets.
    per_op = cfg["fuzz_max_examples"]
    py = os.environ.get("SOAK_PYTHON") or subprocess.run([str(ROOT / "hack" / "pyenv.sh")], capture_output=True,
                                                         text=True, check=True, timeout=900).stdout.strip()
    work = c.dir / "fuzz"
    work.mkdir(exist_ok=True)
    stats = work / "status-counts.txt"
    cmd = [str(Path(py).parent / "schemathesis"), "run", f"{c.gateway}/openapi.json", "--url", c.gateway,
           "--checks", "not_a_server_error", "--max-examples", str(per_op), "--phases", cfg["fuzz_phases"],
           "--workers", "1", "--request-timeout", "120", "--generation-database", "none", "--no-shrink",
           "--suppress-health-check", "all", "--no-color", "--seed", "1126"]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": str(ROOT / "tests" / "fuzz" / "hooks.py"), "FUZZ_STATS": str(stats),
           "FUZZ_MODEL": QWEN}
    log(f"fuzz: {' '.join(cmd)}")
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=1800)
        rc, tail = p.returncode, (p.stdout + p.stderr)[-3000:]
    except subprocess.TimeoutExpired:
        rc, tail = 124, "schemathesis still running after 1800 s (a backstop)"
    lines = stats.read_text().splitlines() if stats.exists() else []
    codes = Counter(ln.rsplit(" ", 1)[1] for ln in lines)
    five = sorted({ln for ln in lines if ln.rsplit(" ", 1)[1].startswith("5")})
    res.numbers("fuzz", cases=len(lines), per_operation=per_op, seconds=round(time.monotonic() - t0, 1),
                status=dict(sorted(codes.items())), rc=rc)
    res.check("fuzz", f"schemathesis on the gateway's /openapi.json: >= {want} cases", len(lines) >= want, len(lines))
    res.check("fuzz", "0 x 5xx (and schemathesis passed)", not five and rc == 0,
              f"status {dict(sorted(codes.items()))}" + (f"; 5xx on {five[:5]}" if five else "")
              + ("" if rc == 0 else f"; rc {rc}: {tail[-1500:]}"))
    if rc != 0 or five:
        print(tail, flush=True)


__all__ = ["kill_board", "restart_apiserver", "fuzz", "SMOL", "call"]
