"""The soak's load phases: set-up, reference answers, client disconnects, overload at twice the
capacity, and the settled-state check run after each of them (run.py has the order and why)."""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import threading
import time
from collections import Counter

from lib import (Cluster, Failed, Sampler, call, chat_body, disconnect, err, in_threads, log, metrics,
                 prom, wait_for)
from load import Load, summary

QWEN, SMOL = "qwen3-sim", "smollm2"
QUEUE_DEPTH = 4  # the gateway's --queue-depth, set by hack/soak/soak.sh
# LeastLoad (both deployments' strategy) sends a board a request only into a free slot; the board
# may count the previous request for a moment after its last byte, so one may show as waiting.
HANDOVER = 1
PROMPTS = ["Name three colours of the sea.", "What is a harbour pilot?", "Count from one to five."]
REF_TOKENS = 12
SETTLE_S = 30.0  # longest wait for busy counts to reach 0 after a phase (a hang, not a slow board)


def setup(c: Cluster, res) -> dict:
    """Both ModelDeployments Ready on 2 boards each; returns what the phases need."""
    sums = dict(reversed(ln.split()) for ln in (c.origin_dir / "SHA256SUMS").read_text().splitlines())
    gguf = next(n for n in sums if n.endswith(".gguf"))
    rk = next(n for n in sums if n.startswith("Qwen3") and n.endswith("_rk3588.rkllm"))
    c.apply_md("qwen3", {"model": QWEN, "format": "rkllm", "replicas": 2, "socs": ["rk3588"],
                         "runtime": {"nBatch": 2}, "source": {"url": f"{c.origin}/{rk}", "sha256": sums[rk]}})
    c.apply_md("smollm2", {"model": SMOL, "format": "gguf", "replicas": 2, "runtime": {"maxContextLen": 2048},
                           "source": {"url": f"{c.origin}/{gguf}", "sha256": sums[gguf]}})
    t0 = time.monotonic()
    wait_for("qwen3 and smollm2 Ready on 2 boards each",
             lambda: c.ready_replicas("qwen3") == 2 and c.ready_replicas("smollm2") == 2, 300, 0.5)
    ctx: dict = {"md": {QWEN: "qwen3", SMOL: "smollm2"}, "sums": sums}

    def routed() -> bool:
        r = call("GET", f"{c.gateway}/v1/models", timeout=10)
        ms = {m["id"]: m for m in (r.json() or {}).get("data", [])}
        return all(len((ms.get(n) or {}).get("meta", {}).get("boards", [])) == 2 for n in (QWEN, SMOL))
    wait_for("the gateway routing both models to 2 boards", routed, 60)
    refresh(c, ctx)
    res.numbers("setup", ready_s=round(time.monotonic() - t0, 1), placements=ctx["boards"], slots=ctx["slots"])
    log(f"set-up: {ctx['boards']} slots {ctx['slots']} ({time.monotonic() - t0:.0f} s)")
    return ctx


def refresh(c: Cluster, ctx: dict) -> None:
    """Which boards hold each model now, and each model's slots per board."""
    ctx["boards"] = {m: sorted(b for b, p in c.placements(md).items() if p.get("phase") == "Ready")
                     for m, md in ctx["md"].items()}
    ctx["slots"] = {}
    for m, bs in ctx["boards"].items():
        for b in bs:
            entry = (c.load(b) or {}).get(m) or {}
            ctx["slots"][m] = entry.get("slots", ctx["slots"].get(m, 1))


def ask(c: Cluster, model: str, prompt: str, board: str | None) -> str | None:
    url, key = (c.boards[board], c.token) if board else (c.gateway, None)
    r = call("POST", f"{url}/v1/chat/completions", chat_body(model, prompt, REF_TOKENS), key=key, timeout=120)
    if r.status != 200:
        err(f"{model} via {board or 'gateway'}: {r.status} {r.body[:200]!r}")
        return None
    return r.json()["choices"][0]["message"]["content"]


def answers(c: Cluster, ctx: dict, times: int = 1) -> dict[str, list[str | None]]:
    """Every prompt asked `times` times from every board holding its model and through the gateway."""
    out: dict[str, list[str | None]] = {}
    for m, bs in ctx["boards"].items():
        for i, p in enumerate(PROMPTS):
            out[f"{m} #{i}"] = [ask(c, m, p, where) for where in [*bs, None] for _ in range(times)]
    return out


def reference(c: Cluster, ctx: dict, res) -> dict[str, str]:
    # Twice each: the second time the prompt is in the board's prefix cache, which must not change it.
    got = answers(c, ctx, 2)
    ref = {k: v[0] for k, v in got.items()}
    same = all(a is not None and all(x == a for x in v) for k, v in got.items() for a in [ref[k]])
    res.check("reference", "clean run: each prompt's answer identical on every board, twice, and through the gateway",
              same, f"{len(got)} prompts x {len(next(iter(got.values())))} answers")
    res.numbers("reference", answers=ref)
    return ref


def busy(c: Cluster) -> dict[str, float]:
    """Requests running or waiting on each board (vLLM gauges) and queued at the gateway."""
    out = {}
    for b, u in c.boards.items():
        text = metrics(u, c.token)
        out[b] = prom(text, "vllm:num_requests_running") + prom(text, "vllm:num_requests_waiting") if text else -1

    out["gateway-queue"] = prom(metrics(c.gateway), "rockchip_llama_gateway_queued_requests")
    return out


def settled(c: Cluster, ctx: dict, res, ref: dict[str, str], phase: str) -> None:
    """After a phase: busy counts back to 0, every slot of every board usable at once (a leaked
    slot would leave a request waiting), then the reference answers unchanged."""
    t0 = time.monotonic()
    last: dict = {}

    def idle() -> bool:
        nonlocal last
        last = busy(c)
        return all(v == 0 for v in last.values())
    deadline = time.monotonic() + SETTLE_S
    while not idle() and time.monotonic() < deadline:
        time.sleep(0.2)
    res.check(phase, f"busy counts back to 0 (boards' running + waiting, gateway queue) within {SETTLE_S:.0f} s",
              all(v == 0 for v in last.values()), f"{time.monotonic() - t0:.1f} s, {last}")
    res.numbers(phase, settle_s=round(time.monotonic() - t0, 2))

    refresh(c, ctx)
    leaks = []
    for m, bs in ctx["boards"].items():
        n = ctx["slots"][m]
        for b in bs:
            peak = {"running": 0, "waiting": 0}
            stop = threading.Event()

            def watch() -> None:
                while not stop.is_set():
                    e = (c.load(b) or {}).get(m) or {}
                    peak["running"] = max(peak["running"], e.get("running", 0))
                    stop.wait(0.05)
            w = threading.Thread(target=watch, daemon=True)
            w.start()
            body = chat_body(m, "Write a long story about a lighthouse keeper.", 48)
            rs = in_threads([lambda: call("POST", f"{c.boards[b]}/v1/chat/completions", body, key=c.token, timeout=120)
                             for _ in range(n)], 150)
            stop.set()
            w.join()
            if any(r is None or r.status != 200 for r in rs) or peak["running"] != n:
                leaks.append(f"{b}/{m}: {n} at once, peak running {peak['running']}, "
                             f"statuses {[r.status if r else None for r in rs]}")
    res.check(phase, "no leaked slot: each board runs as many requests at once as it has slots", not leaks,
              "; ".join(leaks) or f"slots {ctx['slots']} on {ctx['boards']}")

    got = answers(c, ctx)
    diff = {k: v for k, v in got.items() if any(x != ref.get(k) for x in v)}
    res.check(phase, "answers identical to the clean run (every board holding the model, and the gateway)", not diff,
              "; ".join(f"{k}: {v!r} vs {ref.get(k)!r}" for k, v in diff.items())[:600])


def disconnects(c: Cluster, ctx: dict, res, cfg: dict, ref: dict[str, str]) -> None:
    """cfg['disconnects'] clients gone at random points straight at the boards, as many through the
    gateway, while a background load (3 clients) must answer every request."""
    n = cfg["disconnects"]
    rng = random.Random(1126)
    gw_before = prom(metrics(c.gateway), "rockchip_llama_gateway_client_disconnects_total")
    direct_board = ctx["boards"][QWEN][0]
    bg = [Load(c.gateway, QWEN, 1, 16, seed=1, label="bg-gw").start(),
          Load(c.gateway, SMOL, 1, 16, seed=2, label="bg-gw").start(),
          Load(c.boards[direct_board], QWEN, 1, 16, key=c.token, seed=3, label="bg-direct").start()]
    hows: Counter = Counter()
    lock = threading.Lock()
    todo = {"agent": n, "gateway": n}

    def worker(path: str, seed: int) -> None:
        r = random.Random(seed)
        while True:
            with lock:
                if todo[path] <= 0:
                    return
                todo[path] -= 1
                i = todo[path]
            model = r.choice([QWEN, SMOL])
            if path == "agent":
                url, key = c.boards[r.choice(ctx["boards"][model])], c.token
            else:
                url, key = c.gateway, None
            body = chat_body(model, f"disconnect {path} {i}: write a long story about a lighthouse keeper.", 64)
            how = disconnect(f"{url}/v1/chat/completions", body, key, r)
            with lock:
                hows[f"{path}:{how}"] += 1
            time.sleep(r.uniform(0, 0.1))

    t0 = time.monotonic()
    # 2 workers per path: with the background load, within what the gateway admits for each model.
    ws = [threading.Thread(target=worker, args=(p, rng.randrange(1 << 30)), daemon=True)
          for p in ("agent", "gateway") for _ in range(2)]
    for w in ws:
        w.start()
    bound = 60 + n * 2.0  # a backstop for a hang: each disconnect takes at most ~1.5 s
    for w in ws:
        w.join(timeout=max(0.0, bound - (time.monotonic() - t0)))
    took = time.monotonic() - t0
    outs = [o for b in bg for o in b.stop()]
    s = summary(outs)
    done = sum(hows.values())
    res.numbers("disconnects", disconnects=dict(sorted(hows.items())), total=done, seconds=round(took, 1),
                background=s, gateway_counted=prom(metrics(c.gateway), "rockchip_llama_gateway_client_disconnects_total") - gw_before)
    res.check("disconnects", f"{2 * n} disconnects done ({n} at the boards, {n} through the gateway)",
              done == 2 * n, f"{done} in {took:.0f} s: {dict(sorted(hows.items()))}")
    res.check("disconnects", "background load meanwhile: every request answered in full", s["ok"] == s["requests"] > 0, s)
    settled(c, ctx, res, ref, "disconnects")


def overload(c: Cluster, ctx: dict, res, cfg: dict) -> None:
    """Twice the clients the system admits for cfg['overload_s'] seconds; processes sampled."""
    refresh(c, ctx)
    boards = ctx["boards"][QWEN]
    capacity = len(boards) * ctx["slots"][QWEN] + QUEUE_DEPTH
    clients = 2 * capacity
    dur, every, warm, win = cfg["overload_s"], cfg["sample_every"], cfg["warmup_s"], cfg["window_s"]
    pids = {b: c.board_pid(b) for b in c.boards} | {"operator": c.pid_of("/rockchip-llama-operator")}
    log(f"overload: {clients} clients for {dur} s (capacity {capacity}: {len(boards)} boards x "
        f"{ctx['slots'][QWEN]} slots + gateway queue {QUEUE_DEPTH})")
    peak = {"gateway_queue": 0.0, "board_running": 0, "board_waiting": 0}
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak["gateway_queue"] = max(peak["gateway_queue"], prom(metrics(c.gateway), "rockchip_llama_gateway_queued_requests"))
            for b in boards:
                e = (c.load(b) or {}).get(QWEN) or {}
                peak["board_running"] = max(peak["board_running"], e.get("running", 0))
                peak["board_waiting"] = max(peak["board_waiting"], e.get("waiting", 0))
            stop.wait(0.5)

    sampler = Sampler(pids, every)
    sampler.start()
    w = threading.Thread(target=watch, daemon=True)
    w.start()
    load = Load(c.gateway, QWEN, clients, 16, seed=7, label="overload").start()
    time.sleep(dur)
    outs = load.stop()
    stop.set()
    w.join()
    sampler.stop()
    s = summary(outs)
    bad = [o for o in outs if o.status not in (200, 429) or (o.status == 200 and not o.ok)]
    no_retry_after = [o for o in outs if o.status == 429 and not o.retry_after]
    res.numbers("overload", clients=clients, capacity=capacity, seconds=dur, load=s, peak=peak,
                rps_ok=round(s["ok"] / dur, 2))
    res.check("overload", f"{clients} clients (2x capacity {capacity}): only complete 200s and 429s", not bad,
              f"{s['status']}" + (f"; first other: {bad[0].status} {bad[0].detail!r}" if bad else ""))
    res.check("overload", "beyond capacity the gateway refused (429s seen), each with Retry-After",
              s["status"].get("429", 0) > 0 and not no_retry_after,
              f"{s['status'].get('429', 0)} refused, {len(no_retry_after)} without Retry-After")
    res.check("overload", f"admitted no more than capacity: gateway queue <= {QUEUE_DEPTH}, a board's running <= "
              f"{ctx['slots'][QWEN]} and waiting <= {HANDOVER}",
              peak["gateway_queue"] <= QUEUE_DEPTH and peak["board_running"] <= ctx["slots"][QWEN]
              and peak["board_waiting"] <= HANDOVER, peak)
    growth(res, sampler.samples, dur, warm, win)


# Open files a sample may catch beyond the baseline's maximum without a leak: under 2x load the
# gateway accepts and closes client connections all the time (every 429 is one).
FD_CHURN = 2


def growth(res, samples: list, dur: float, warm: float, win: float) -> None:
    """RSS, open files and threads: the last `win` seconds against a warmed-up baseline, the
    `win` seconds after the first `warm` (the first requests fill allocator arenas, connection
    pools and the runtime's blocking threads; that is start-up, not growth). RSS compares medians
    (growth <= 5 %); files and threads compare the maxima of the two windows: threads may not grow
    at all, open files by at most FD_CHURN (sockets of connections opening or closing at the
    moment of a sample; a leak grows with the requests, thousands in the short run)."""
    base = [s for t, s in samples if warm <= t < warm + win]
    end = [s for t, s in samples if t >= dur - win]
    table = {}
    for name in samples[0][1]:
        b = [s[name] for s in base if s.get(name)]
        e = [s[name] for s in end if s.get(name)]
        if not b or not e:
            res.check("overload", f"{name}: sampled through the run", False, f"{len(b)} baseline, {len(e)} end samples")
            continue
        rb, re_ = statistics.median(x["rss_kib"] for x in b), statistics.median(x["rss_kib"] for x in e)
        row = {"rss_base_mib": round(rb / 1024, 1), "rss_end_mib": round(re_ / 1024, 1),
               "rss_growth_pct": round(100 * (re_ / rb - 1), 2),
               "fds_base": max(x["fds"] for x in b), "fds_end": max(x["fds"] for x in e),
               "threads_base": max(x["threads"] for x in b), "threads_end": max(x["threads"] for x in e),
               "samples": len(samples)}
        if all("anon_kib" in x for x in b + e):
            ab, ae = statistics.median(x["anon_kib"] for x in b), statistics.median(x["anon_kib"] for x in e)
            row |= {"anon_base_mib": round(ab / 1024, 1), "anon_end_mib": round(ae / 1024, 1),
                    "file_base_mib": round(statistics.median(x["file_kib"] for x in b) / 1024, 1),
                    "file_end_mib": round(statistics.median(x["file_kib"] for x in e) / 1024, 1)}
        table[name] = row
        res.check("overload", f"{name}: RSS growth <= 5 % over the warmed-up baseline", row["rss_growth_pct"] <= 5,
                  f"{row['rss_base_mib']} -> {row['rss_end_mib']} MiB ({row['rss_growth_pct']:+.2f} %)")
        res.check("overload", f"{name}: no growth in open files (+{FD_CHURN} for connections in flight) or threads",
                  row["fds_end"] <= row["fds_base"] + FD_CHURN and row["threads_end"] <= row["threads_base"],
                  f"fds {row['fds_base']} -> {row['fds_end']}, threads {row['threads_base']} -> {row['threads_end']}")
    res.numbers("overload", processes=table, series=[(round(t, 1), s) for t, s in samples])


def dump_state(c: Cluster) -> None:
    for args in (["get", "boards", "-o", "wide"], ["get", "md", "-A", "-o", "wide"], ["get", "leases", "-A"]):
        p = subprocess.run(["kubectl", *args], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "KUBECONFIG": str(c.dir / "kubeconfig")})
        print(p.stdout + p.stderr, flush=True)


__all__ = ["setup", "reference", "disconnects", "overload", "settled", "dump_state", "refresh", "busy", "Failed"]
