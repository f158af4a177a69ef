"""P6, routing policies: 3 boards, rkllm-sim at the vendor's speed (Qwen3-0.6B: 199 ms per 128
prompt tokens, 32.9 tok/s), nBatch 1 (one sequence per board, the default), the gateway's defaults.

Part A, LeastLoad vs RoundRobin. A skewed mix: 80 % short requests (~20-token prompt, max_tokens
16), 20 % long ones (~1000-token prompt asking for a 128-word answer: the sim answers exactly that,
hack/rkllm-sim/README.md). Capacity is calibrated first (sequential requests through the gateway:
mean service time S of the mix). Two readings of "1.5x their capacity":

- users (the target's reading): N users, each sending a request, reading the whole answer, then
  thinking an exponentially distributed time with mean S before the next. The boards can serve
  N* = slots x (S + S) / S users without any waiting (each user's cycle is S of service and S of
  thinking); N = round(1.5 x N*) users offer 1.5 x what the slots take, so requests queue, but the
  backlog is bounded by the users, as in a real deployment. Capacity in the issue is a board's
  slots (nBatch); this is 1.5x of them. One seeded script per user (kinds, think times, prompts),
  replayed once per policy; `--p6-requests` in all.
- rate (for information): one seeded Poisson arrival schedule per level (`--p6-levels`, multiples of
  slots / S requests/s, `--p6-window` seconds of arrivals), open loop: a request is sent at its
  time whatever the others do. Above 1x the backlog grows for as long as arrivals come, whatever
  the policy, and sets the p99 (the report simulates the best any policy could do).

TTFT counts from the moment the user sends (the scheduled time in the rate reading), so time
queued at the gateway is in it. Every prompt opens with a nonce, so no request reuses another's KV
cache.

Part B, PrefixAffinity vs RoundRobin. 8 system prompts of ~450 tokens (longer than the
deployment's routing.prefixChars, 256 characters: the affinity key is the system prompt),
`--p6-users` users each running conversations one after another (each conversation one of the 8
system prompts, `--p6-turns` turns, each turn resending the whole history with the previous
answers as the board gave them, `--p6-think` seconds between turns), max_tokens 64 so answers end
naturally. A request is a **hit** when the board reused at least the shared prefix: the agent's
reported `usage.prompt_tokens_details.cached_tokens` (tokens taken from the KV cache) is at least
the system prompt's token count (the sim's tokenizer rules, hack/rkllm-sim/src/tokenizer.rs). The
system prompts carry a per-run tag, so one policy's run cannot warm the caches of the next.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import time
from pathlib import Path

import httpx

MODEL = "qwen3-sim"
BOARDS = 3
SHORT_SHARE = 0.8
SHORT_MAX_TOKENS = 16
LONG_ANSWER_WORDS = 128  # asked for in the prompt: ~3.9 s of decode at 32.9 tokens/s
LONG_MAX_TOKENS = 160  # above the answer, so it ends by itself
LONG_PROMPT_WORDS = 500  # ~1000 sim tokens: a word and the space after it are two tokens
USERS_LOAD = 1.5  # part A's users reading: N = round(USERS_LOAD x N*)
CONV_MAX_TOKENS = 64
APPS = 8
TARGET_LL_RATIO = 0.5  # LeastLoad p99 TTFT <= 0.5 x RoundRobin's
TARGET_HIT_RATE = 0.90  # PrefixAffinity
WORDS = ("harbor tide vessel cargo anchor pilot crane berth quay hull rudder keel mast sail deck cabin "
         "engine fuel route chart buoy light signal radio storm calm wave current north south east west "
         "morning evening winter summer river bridge stone paper window garden music number story friend").split()
TOPICS = ["harbor pilots", "container cranes", "tide tables", "ferry timetables", "customs forms",
          "ship repairs", "crew rosters", "weather routing"]


def log(msg: str) -> None:
    print(f"[gateway-bench p6 {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def add_args(ap) -> None:
    g = ap.add_argument_group("P6 (routing policies)")
    g.add_argument("--p6-seed", type=int, default=10, help="seed of the schedules and prompts (default 10)")
    g.add_argument("--p6-requests", type=int, default=300,
                   help="part A, users reading: requests in all per policy (default 300: the p99 is the 3rd slowest)")
    g.add_argument("--p6-levels", default="1.5,0.75",
                   help="part A, rate reading: offered load as multiples of capacity (default 1.5,0.75)")
    g.add_argument("--p6-window", type=float, default=30.0, help="seconds of arrivals per load level (default 30)")
    # 4 users on 3 boards: with as many users as boards, RoundRobin's turn counter advances by the
    # number of boards between two turns of one user and sends them to the same board by accident.
    g.add_argument("--p6-users", type=int, default=4, help="part B: concurrent users (default 4)")
    g.add_argument("--p6-conversations", type=int, default=40,
                   help="part B: conversations in all (default 40: the 8 cold first uses are 5 %% of the requests)")
    g.add_argument("--p6-turns", type=int, default=4, help="part B: turns per conversation (default 4)")
    g.add_argument("--p6-think", type=float, default=0.5, help="part B: seconds between a user's turns (default 0.5)")


def sim_tokens(text: str) -> int:
    """Token count by the sim tokenizer's rules: special tokens, runs of <= 6 alphanumerics, runs
    of whitespace, any other single character."""
    return len(re.findall(r"<\|[^\s|]{1,60}\|>|</?think>|</?tool_call>|[^\W_]{1,6}|\s+|.", text, re.S))


def pct(xs: list, p: float) -> float | None:
    s = sorted(x for x in xs if x is not None)
    return s[min(len(s) - 1, max(0, math.ceil(p * len(s)) - 1))] if s else None


async def stream_chat(client: httpx.AsyncClient, body: dict, t_ref: float) -> dict:
    """One streamed chat completion; times are seconds after `t_ref` (time.monotonic())."""
    rec: dict = {"status": None, "board": None, "ttft": None, "total": None, "cached": None, "prompt_tokens": None,
                 "finish": None, "error": None}
    text = []
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body) as r:
            rec["status"], rec["board"] = r.status_code, r.headers.get("x-rockchip-llama-board")
            if r.status_code != 200:
                rec["error"] = (await r.aread())[:300].decode(errors="replace")
            else:
                async for line in r.aiter_lines():
                    if not line.startswith("data: {"):
                        continue
                    ev = json.loads(line[6:])
                    if ev.get("usage"):
                        rec["prompt_tokens"] = ev["usage"].get("prompt_tokens")
                        rec["cached"] = (ev["usage"].get("prompt_tokens_details") or {}).get("cached_tokens")
                    if rec["cached"] is None and "timings" in ev:
                        rec["cached"] = ev["timings"].get("cache_n")
                    for ch in ev.get("choices") or []:
                        piece = (ch.get("delta") or {}).get("content") or ""
                        if piece and rec["ttft"] is None:
                            rec["ttft"] = time.monotonic() - t_ref
                        text.append(piece)
                        rec["finish"] = ch.get("finish_reason") or rec["finish"]
    except (httpx.HTTPError, ValueError) as e:
        rec["error"] = repr(e)
    rec["total"] = time.monotonic() - t_ref
    rec["text"] = "".join(text)
    return rec


def client(gateway: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=gateway, timeout=httpx.Timeout(180.0),
                             limits=httpx.Limits(max_connections=2000, max_keepalive_connections=200))


def gateway_decisions(scrape, gateway: str) -> dict[str, float]:
    return {k: v for k, v in scrape(f"{gateway}/metrics").items()
            if k.startswith("rockchip_llama_gateway_routing_decisions_total{")}


def diff(after: dict, before: dict) -> dict:
    out = {}
    for k, v in after.items():
        d = v - before.get(k, 0.0)
        if d:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', k))
            out[f"{labels.get('board')}/{labels.get('reason')}"] = int(d)
    return out


# === part A: LeastLoad vs RoundRobin ===


def prompt(rng: random.Random, kind: str, nonce: str) -> dict:
    if kind == "short":
        text = f"[{nonce}] Which berth is free for the {rng.choice(WORDS)} {rng.choice(WORDS)} this morning?"
        return {"model": MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": SHORT_MAX_TOKENS,
                "stream": True, "stream_options": {"include_usage": True}}
    words = " ".join(rng.choice(WORDS) for _ in range(LONG_PROMPT_WORDS))
    text = f"[{nonce}] Summarise this harbor log for the night shift in {LONG_ANSWER_WORDS} words: {words}"
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": LONG_MAX_TOKENS,
            "stream": True, "stream_options": {"include_usage": True}}


def schedule(seed: int, rate: float, window: float) -> list[dict]:
    """Poisson arrivals at `rate` per second for `window` seconds; exactly 20 % long."""
    rng = random.Random(seed)
    times, t = [], rng.expovariate(rate)
    while t < window:
        times.append(t)
        t += rng.expovariate(rate)
    kinds = mixed_kinds(rng, len(times))
    return [{"at": at, "kind": k, "body": prompt(rng, k, f"s{seed}-{i}")} for i, (at, k) in enumerate(zip(times, kinds))]


async def with_progress(aws, label: str, answered, total: int, t0: float) -> list:
    """Runs `aws` together, logging `answered()` of `total` every 15 s."""

    async def progress() -> None:
        while True:
            await asyncio.sleep(15)
            log(f"  {label}: {answered()}/{total} answered after {time.monotonic() - t0:.0f} s")

    ticker = asyncio.create_task(progress())
    try:
        return await asyncio.gather(*aws)
    finally:
        ticker.cancel()


async def replay(gateway: str, sched: list[dict], label: str) -> list[dict]:
    async with client(gateway) as c:
        t0 = time.monotonic() + 0.2
        done = 0

        async def one(item: dict) -> dict:
            nonlocal done
            await asyncio.sleep(max(0.0, t0 + item["at"] - time.monotonic()))
            rec = await stream_chat(c, item["body"], t0 + item["at"])
            done += 1
            return {"kind": item["kind"], "at": item["at"], **{k: v for k, v in rec.items() if k != "text"}}

        return await with_progress((one(i) for i in sched), label, lambda: done, len(sched), t0)


def mixed_kinds(rng: random.Random, n: int) -> list[str]:
    """n kinds, exactly 20 % long, shuffled."""
    n_long = round(n * (1 - SHORT_SHARE))
    kinds = ["long"] * n_long + ["short"] * (n - n_long)
    rng.shuffle(kinds)
    return kinds


def user_scripts(seed: int, users: int, requests: int, think_mean: float) -> list[list[dict]]:
    """What each user sends, in order, and how long it thinks before each request (the first think
    staggers the starts)."""
    rng = random.Random(seed)
    kinds = mixed_kinds(rng, requests)
    scripts: list[list[dict]] = [[] for _ in range(users)]
    for i, kind in enumerate(kinds):
        scripts[i % users].append({"kind": kind, "think": rng.expovariate(1 / think_mean),
                                   "body": prompt(rng, kind, f"u{seed}-{i}")})
    return scripts


async def users_run(gateway: str, scripts: list[list[dict]], label: str) -> list[dict]:
    """Closed loop: each user sends its next request when the last answer has ended and it has thought."""
    total = sum(len(s) for s in scripts)
    async with client(gateway) as c:
        t0 = time.monotonic()
        records: list[dict] = []

        async def user(u: int, script: list[dict]) -> None:
            for item in script:
                await asyncio.sleep(item["think"])
                sent = time.monotonic()
                rec = await stream_chat(c, item["body"], sent)
                records.append({"user": u, "kind": item["kind"], "at": sent - t0,
                                **{k: v for k, v in rec.items() if k != "text"}})

        await with_progress((user(u, s) for u, s in enumerate(scripts)), label, lambda: len(records), total, t0)
        return sorted(records, key=lambda r: r["at"])


def calibrate(gateway: str, rng: random.Random) -> dict:
    """Mean service time of each kind: sequential requests through the idle gateway."""

    async def go() -> dict:
        out = {}
        async with client(gateway) as c:
            for kind, n in (("short", 4), ("long", 2)):
                times = []
                for i in range(n):
                    rec = await stream_chat(c, prompt(rng, kind, f"cal-{kind}-{i}"), time.monotonic())
                    if rec["status"] != 200:
                        raise RuntimeError(f"calibration request failed: {rec}")
                    times.append(rec["total"])
                out[kind] = sorted(times)[len(times) // 2]
        return out

    return asyncio.run(go())


def summarize_a(records: list[dict]) -> dict:
    ok = [r for r in records if r["status"] == 200 and r["ttft"] is not None]
    boards: dict[str, int] = {}
    for r in ok:
        boards[r["board"]] = boards.get(r["board"], 0) + 1
    ttft = [r["ttft"] for r in ok]
    return {
        "requests": len(records), "ok": len(ok), "errors": len(records) - len(ok),
        "error_examples": sorted({f"{r['status']} {r['error']}"[:160] for r in records if r not in ok})[:3],
        "ttft_s": {"p50": pct(ttft, .5), "p90": pct(ttft, .9), "p99": pct(ttft, .99), "mean": sum(ttft) / max(1, len(ttft))},
        "ttft_short_s": {"p50": pct([r["ttft"] for r in ok if r["kind"] == "short"], .5),
                         "p99": pct([r["ttft"] for r in ok if r["kind"] == "short"], .99)},
        "per_board": dict(sorted(boards.items())),
        "last_answer_s": max((r["at"] + r["total"] for r in records), default=0),
    }


def compare_a(cl, scrape, order: list[str], entry: dict, load) -> None:
    """Each policy in `order`, switched on idle boards, under `load(policy)` (a coroutine giving the
    records); fills entry["policies"] and the p99 ratio."""
    for policy in order:
        cl.apply_md(BOARDS, policy)
        cl.wait_routed(BOARDS, policy)
        cl.wait_idle()
        before = gateway_decisions(scrape, cl.gateway)
        records = asyncio.run(load(policy))
        s = summarize_a(records)
        s["decisions"] = diff(gateway_decisions(scrape, cl.gateway), before)
        s["records"] = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()
                         if k in ("user", "kind", "at", "ttft", "total", "board", "status")} for r in records]
        entry["policies"][policy] = s
        log(f"  {policy}: TTFT p50 {s['ttft_s']['p50']:.2f} s, p99 {s['ttft_s']['p99']:.2f} s, "
            f"{s['errors']} errors, per board {s['per_board']}")
    ll, rr = entry["policies"]["LeastLoad"], entry["policies"]["RoundRobin"]
    entry["p99_ratio_ll_rr"] = ll["ttft_s"]["p99"] / rr["ttft_s"]["p99"] if rr["ttft_s"]["p99"] else None


# === part B: PrefixAffinity vs RoundRobin ===


def system_prompt(app: int, tag: str) -> str:
    rng = random.Random(app)
    rules = " ".join(f"Rule {k + 1}: when asked about {rng.choice(WORDS)} {rng.choice(WORDS)}, check the "
                     f"{rng.choice(WORDS)} log first and answer in one short paragraph." for k in range(10))
    return (f"You are the {TOPICS[app]} desk assistant of the harbor office ({tag}). Answer questions about "
            f"{TOPICS[app]} for staff and visitors. {rules}")


async def conversations(gateway: str, plan: list[list[int]], turns: int, think: float, tag: str) -> list[dict]:
    """plan[u] = the apps of user u's conversations, run one after another."""
    records: list[dict] = []
    async with client(gateway) as c:

        async def user(u: int) -> None:
            for ci, app in enumerate(plan[u]):
                system = system_prompt(app, tag)
                msgs = [{"role": "system", "content": system}]
                for turn in range(turns):
                    msgs.append({"role": "user", "content": f"Question {turn + 1} from user {u}: what about the "
                                                            f"{WORDS[(7 * u + 3 * ci + turn) % len(WORDS)]}?"})
                    body = {"model": MODEL, "messages": msgs, "max_tokens": CONV_MAX_TOKENS, "stream": True,
                            "stream_options": {"include_usage": True}}
                    rec = await stream_chat(c, body, time.monotonic())
                    records.append({"user": u, "conversation": f"{u}-{ci}", "turn": turn + 1, "app": app,
                                    "system_tokens": sim_tokens(system), **{k: v for k, v in rec.items() if k != "text"}})
                    msgs.append({"role": "assistant", "content": rec["text"]})
                    await asyncio.sleep(think)

        await asyncio.gather(*(user(u) for u in range(len(plan))))
    return records


def summarize_b(records: list[dict]) -> dict:
    ok = [r for r in records if r["status"] == 200 and r["ttft"] is not None]
    for r in ok:
        r["hit"] = (r["cached"] or 0) >= r["system_tokens"]
    boards: dict[str, int] = {}
    apps_on: dict[str, set] = {}
    for r in ok:
        boards[r["board"]] = boards.get(r["board"], 0) + 1
        apps_on.setdefault(r["board"], set()).add(r["app"])
    hits = sum(r["hit"] for r in ok)
    later = [r for r in ok if r["turn"] > 1]
    return {
        "requests": len(records), "ok": len(ok), "errors": len(records) - len(ok),
        "error_examples": sorted({f"{r['status']} {r['error']}"[:160] for r in records if r not in ok})[:3],
        "hit_rate": hits / max(1, len(ok)),
        "hit_rate_first_turn": sum(r["hit"] for r in ok if r["turn"] == 1) / max(1, sum(r["turn"] == 1 for r in ok)),
        "hit_rate_later_turns": sum(r["hit"] for r in later) / max(1, len(later)),
        "ttft_mean_s": sum(r["ttft"] for r in ok) / max(1, len(ok)),
        "ttft_p50_s": pct([r["ttft"] for r in ok], .5), "ttft_p99_s": pct([r["ttft"] for r in ok], .99),
        "cached_tokens_mean": sum(r["cached"] or 0 for r in ok) / max(1, len(ok)),
        "prompt_tokens_mean": sum(r["prompt_tokens"] or 0 for r in ok) / max(1, len(ok)),
        "finish_length": sum(r["finish"] == "length" for r in ok),
        "ttft_by_turn_s": [sum(r["ttft"] for r in ok if r["turn"] == t) / max(1, sum(r["turn"] == t for r in ok))
                           for t in range(1, 1 + max((r["turn"] for r in ok), default=0))],
        "per_board": dict(sorted(boards.items())),
        "apps_per_board": {b: len(a) for b, a in sorted(apps_on.items())},
    }


def board_cache_counters(scrape, cl) -> dict[str, float]:
    """Sum over the boards of the agents' prompt-cache counters."""
    out: dict[str, float] = {}
    for b in cl.boards:
        for k, v in scrape(f"{b['endpoint']}/metrics").items():
            name = k.split("{", 1)[0]
            if name in ("rockchip_llama_prompt_cached_tokens_total", "rockchip_llama_prompt_cache_loads_total",
                        "rockchip_llama_prompt_cache_creates_total"):
                out[name] = out.get(name, 0.0) + v
    return out


# === the run ===


def run(args, work: Path, cluster_cls) -> dict:
    from gateway_bench import scrape  # the driver's Prometheus reader

    t_start = time.monotonic()
    rng = random.Random(args.p6_seed)
    levels = [float(x) for x in args.p6_levels.split(",")]
    env = {"RKLLM_SIM_SPEEDUP": "1", "TESTCLUSTER_GATEWAY_ARGS": ""}
    result: dict = {"boards": BOARDS, "seed": args.p6_seed, "window_s": args.p6_window, "short_share": SHORT_SHARE,
                    "short_max_tokens": SHORT_MAX_TOKENS, "long_max_tokens": LONG_MAX_TOKENS,
                    "long_answer_words": LONG_ANSWER_WORDS,
                    "long_prompt_words": LONG_PROMPT_WORDS, "levels": {}, "conversations": {}}
    with cluster_cls(work, "p6", BOARDS, env) as cl:
        cl.apply_md(BOARDS, "LeastLoad")
        cl.wait_routed(BOARDS, "LeastLoad")
        cal = calibrate(cl.gateway, rng)
        mean = SHORT_SHARE * cal["short"] + (1 - SHORT_SHARE) * cal["long"]
        capacity = BOARDS / mean
        result["calibration"] = {"service_s": cal, "mean_service_s": mean, "capacity_rps": capacity}
        log(f"service time short {cal['short']:.2f} s, long {cal['long']:.2f} s, mix {mean:.2f} s: "
            f"capacity {capacity:.2f} req/s on {BOARDS} boards")

        slots = BOARDS  # nBatch 1
        users = round(USERS_LOAD * slots * (mean + mean) / mean)
        scripts = user_scripts(args.p6_seed * 100 + 99, users, args.p6_requests, mean)
        n_long = sum(i["kind"] == "long" for sc in scripts for i in sc)
        log(f"part A, users: {users} users ({USERS_LOAD}x the {slots * 2} the slots serve without waiting), "
            f"{args.p6_requests} requests ({n_long} long), mean think {mean:.2f} s")
        entry = {"users": users, "load": USERS_LOAD, "think_mean_s": mean, "requests": args.p6_requests,
                 "long": n_long, "policies": {}}
        compare_a(cl, scrape, ["RoundRobin", "LeastLoad"], entry,
                  lambda label: users_run(cl.gateway, scripts, f"{label} {users} users"))
        result["users"] = entry

        for li, level in enumerate(levels):
            rate = level * capacity
            sched = schedule(args.p6_seed * 100 + li, rate, args.p6_window)
            n_long = sum(i["kind"] == "long" for i in sched)
            log(f"part A, {level}x capacity: {len(sched)} requests ({n_long} long) at {rate:.2f}/s over "
                f"{args.p6_window:.0f} s")
            entry = {"rate_rps": rate, "requests": len(sched), "long": n_long, "policies": {}}
            order = ["RoundRobin", "LeastLoad"] if li % 2 == 0 else ["LeastLoad", "RoundRobin"]
            compare_a(cl, scrape, order, entry, lambda label, sched=sched, level=level:
                      replay(cl.gateway, sched, f"{label} {level}x"))
            result["levels"][str(level)] = entry

        users = max(1, args.p6_users)
        apps = [i % APPS for i in range(args.p6_conversations)]
        rng.shuffle(apps)
        plan = [apps[u::users] for u in range(users)]
        result["conversation_setup"] = {"users": users, "conversations": len(apps), "turns": args.p6_turns,
                                        "think_s": args.p6_think, "apps": APPS, "max_tokens": CONV_MAX_TOKENS,
                                        "prefix_chars": 256, "system_tokens": [sim_tokens(system_prompt(a, "run-x"))
                                                                               for a in range(APPS)]}
        for run_i, policy in enumerate(["RoundRobin", "PrefixAffinity"]):
            cl.apply_md(BOARDS, policy)
            cl.wait_routed(BOARDS, policy)
            cl.wait_idle()
            log(f"part B, {policy}: {users} users, {len(apps)} conversations x {args.p6_turns} turns over {APPS} "
                f"system prompts")
            before, counters = gateway_decisions(scrape, cl.gateway), board_cache_counters(scrape, cl)
            records = asyncio.run(conversations(cl.gateway, plan, args.p6_turns, args.p6_think, f"run {run_i + 1}"))
            s = summarize_b(records)
            s["decisions"] = diff(gateway_decisions(scrape, cl.gateway), before)
            after = board_cache_counters(scrape, cl)
            s["board_counters"] = {k.removeprefix("rockchip_llama_").removesuffix("_total"): int(v - counters.get(k, 0))
                                   for k, v in after.items()}
            s["records"] = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()
                             if k in ("user", "conversation", "turn", "app", "ttft", "board", "cached",
                                      "prompt_tokens", "system_tokens", "hit", "finish", "status")} for r in records]
            result["conversations"][policy] = s
            log(f"  {policy}: hit rate {s['hit_rate']:.0%} (later turns {s['hit_rate_later_turns']:.0%}), "
                f"mean TTFT {s['ttft_mean_s']:.2f} s, per board {s['per_board']}, {s['errors']} errors")
    result["seconds"] = round(time.monotonic() - t_start)
    return result
