"""`make bench-npu` measurements against rkllm-sim: the agent process (started by the launcher
shared with `make bench` and the test suites, hack/py/agentproc.py, through servers.AgentServer),
prompt scouting, and the tests (overhead vs the library driven directly, 8 concurrent clients,
n_batch 4 vs 1, prompt cache on vs off, the concurrency sweep: run_clients again per level)."""
from __future__ import annotations

import http.client
import os
import threading
import time
from pathlib import Path

from common import fmt, log
from measure import chat, med, pct, stream_body, summary
from npu_ctypes import Rkllm
from servers import FOREIGN_MAX, AgentServer, CpuMeter, wait_quiet

MODEL = "qwen3-0.6b-sim"

# ----------------------------------------------------------------------------------------------
# The agent on a free loopback port
# ----------------------------------------------------------------------------------------------


class NpuAgent(AgentServer):
    """rockchip-llama-agent with the RKLLM engine over rkllm-sim, tracing the sim's runs to
    `trace`; stopped by servers.stop_all()."""

    def __init__(self, label: str, binary: str, args: list[str], env: dict, logdir: Path, trace: Path):
        super().__init__(label, binary, args, logdir, env={**env, "RKLLM_SIM_TRACE": str(trace)})
        self.trace = trace

    def start(self, *a, **kw) -> NpuAgent:
        self.trace.unlink(missing_ok=True)
        return super().start(*a, **kw)

    def trace_runs(self) -> list[dict]:
        """The sim's `run` trace lines as dicts (values kept as strings)."""
        try:
            lines = self.trace.read_text().splitlines()
        except OSError:
            return []
        return [dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv) for line in lines
                if line.startswith("run ")]


def http_floor_ms(port: int) -> float | None:
    """The client's and the HTTP stack's share of a request: a new connection + GET /healthz."""
    t0 = time.perf_counter()
    return (time.perf_counter() - t0) * 1000 if _get(port, "/healthz") == 200 else None


def _get(port: int, path: str) -> int | None:
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        c.close()
        return r.status
    except OSError:
        return None


# ----------------------------------------------------------------------------------------------
# Prompts
# ----------------------------------------------------------------------------------------------

# 115 text tokens + the built-in Qwen3 template with thinking off = 128 prompt tokens, the
# prompt length of the vendor's TTFT figure (checked against the runtime's perf record).
NOTE = ("Please read these notes about a harbor town and then tell me, in a few plain words, what the town is "
        "like. The harbor has stone walls, a lighthouse painted white and red, and a market where people sell "
        "their catch every morning. In summer the streets fill with visitors")


def note_prompt(k: int) -> str:
    return f"Note {k:04d}. {NOTE}"


def scout_prompts(lib: str, model: str, want: int, tokens: int, limit: int = 20000) -> tuple[list[str], dict]:
    """Prompts whose sim answer has at least `tokens` tokens and no multi-byte character among
    them (those arrive as WAITING + NORMAL, two tokens but one SSE chunk, which would make
    client-side token counting differ between the two sides). The answer is a pure function of
    the prompt, so a handle at 10000x speed finds them in about a second."""
    old = os.environ.get("RKLLM_SIM_SPEEDUP")
    os.environ["RKLLM_SIM_SPEEDUP"] = "10000"  # read by rkllm_init only
    try:
        h = Rkllm(lib, model)
    finally:
        if old is None:
            os.environ.pop("RKLLM_SIM_SPEEDUP")
        else:
            os.environ["RKLLM_SIM_SPEEDUP"] = old
    found, prompt_tokens, tried = [], set(), 0
    try:
        for k in range(limit):
            tried += 1
            h.clear_kv_cache(True)
            r = h.run(note_prompt(k), tokens)
            prompt_tokens.add(r.perf and r.perf["prefill_tokens"])
            if r.rc == 0 and r.waiting == 0 and len(r.token_times) == tokens:
                found.append(note_prompt(k))
                if len(found) >= want:
                    break
    finally:
        h.close()
    if len(found) < want:
        raise RuntimeError(f"only {len(found)} of {want} usable prompts among {tried}")
    return found, {"tried": tried, "prompt_tokens": sorted(p for p in prompt_tokens if p is not None)}


def system_prompt(kind: str) -> str:
    """Two ~1k-token system prompts that differ from their first word, so the runtime's automatic
    prefix reuse (previous run's prompt) cannot stand in for the prompt cache."""
    if kind == "A":
        head, noun = "Harbor Museum support desk.", "exhibit"
    else:
        head, noun = "Riverside Library booking office.", "reading room"
    topics = ["lighthouses", "honey", "rivers", "boats", "glaciers", "leaves", "printing", "bridges", "birds",
              "tomatoes", "bicycles", "volcanoes", "tides", "bread", "clocks", "maps", "deserts", "chess",
              "reefs", "radio", "silk"]  # 21 rules: ~1.05k prompt tokens with the template
    rules = [f"Rule {i + 1}: when asked about the {noun} on {t}, answer politely, cite section {i + 3}, and stay "
             f"under {20 + i} words." for i, t in enumerate(topics)]
    return head + " You are its assistant. Follow these rules exactly.\n" + "\n".join(rules)


# ----------------------------------------------------------------------------------------------
# (a) Overhead: the agent over HTTP vs the same library driven directly
# ----------------------------------------------------------------------------------------------

def run_overhead(direct: Rkllm, agent: NpuAgent, prompts: list[str], rounds: int, tokens: int,
                 max_extra: int) -> dict:
    """Per round: the same prompt once through ctypes and once through the agent (streaming),
    order alternating. Both sides make the same runtime calls: clear_kv_cache(keep_system=1)
    then rkllm_run with keep_history 1 (what the agent does for a new conversation).

    The sim sleeps, but a 2 ms budget is within reach of scheduler delays on a busy 2-vCPU VM, so
    (as in the llama.cpp bench) a round during which other processes used the CPU is marked
    disturbed and replaced, up to `max_extra` extra rounds; medians use the clean rounds."""
    per_round = []
    rnd = 0
    while sum(r["clean"] for r in per_round) < rounds and rnd < rounds + max_extra:
        if per_round and not per_round[-1]["clean"]:
            wait_quiet(15, "disturbed round")
        prompt = prompts[rnd % len(prompts)]
        meter = CpuMeter().start()
        res = {"round": rnd + 1, "first": "direct" if rnd % 2 == 0 else "agent",
               "http_floor_ms": http_floor_ms(agent.port)}
        for side in (("direct", "agent") if rnd % 2 == 0 else ("agent", "direct")):
            if side == "direct":
                direct.clear_kv_cache(True)
                r = direct.run(prompt, tokens)
                res["direct"] = {"ok": r.rc == 0 and not r.state_error, "ttft_ms": (r.ttft_s or 0) * 1000,
                                 "decode_tps": r.decode_tps, "tokens": len(r.token_times), "perf": r.perf,
                                 "text": r.text}
            else:
                r = chat(agent.port, stream_body(MODEL, None, prompt, tokens, False), timeout=60)
                ct = r["chunk_times"]
                res["agent"] = {"ok": r["ok"], "error": r["error"], "ttft_ms": (r["ttft"] or 0) * 1000,
                                "decode_tps": (len(ct) - 1) / (ct[-1] - ct[0]) if len(ct) > 2 else None,
                                "tokens": len(ct), "timings": r["timings"], "text": r["text"]}
        d, a = res["direct"], res["agent"]
        res["ok"] = d["ok"] and a["ok"] and d["tokens"] == a["tokens"] == tokens
        res["same_text"] = d["text"] == a["text"]
        res["ttft_added_ms"] = a["ttft_ms"] - d["ttft_ms"]
        res["decode_ratio"] = a["decode_tps"] / d["decode_tps"] if a["decode_tps"] and d["decode_tps"] else None
        res["foreign_cores"] = meter.stop()["foreign_cores"]
        res["clean"] = res["foreign_cores"] < FOREIGN_MAX
        per_round.append(res)
        rnd += 1
        log(f"  round {rnd} ({res['first']} first"
            f"{'' if res['clean'] else ', DISTURBED: others used ' + fmt(res['foreign_cores'], 2) + ' cores'}): TTFT direct {fmt(d['ttft_ms'], 1)} / agent "
            f"{fmt(a['ttft_ms'], 1)} ms (+{fmt(res['ttft_added_ms'], 2)}), decode {fmt(d['decode_tps'], 2)} / "
            f"{fmt(a['decode_tps'], 2)} tok/s (x{fmt(res['decode_ratio'], 4)}), {a['tokens']} tok"
            f"{'' if res['ok'] else ', FAILED: ' + str(a.get('error'))}")
    use = [r for r in per_round if r["ok"] and r["clean"]]
    from_ = "clean rounds"
    if len(use) < max(2, rounds // 2):
        use = [r for r in per_round if r["ok"]]  # never quiet enough: report all, flagged
        from_ = "all rounds (machine never quiet)"
    out = {
        "rounds": len(per_round), "rounds_ok": sum(r["ok"] for r in per_round),
        "rounds_clean": sum(r["clean"] for r in per_round), "medians_from": from_, "tokens": tokens,
        "identical_text": sum(r["same_text"] for r in per_round),
        "direct_ttft_ms": summary(r["direct"]["ttft_ms"] for r in use),
        "agent_ttft_ms": summary(r["agent"]["ttft_ms"] for r in use),
        "ttft_added_ms": summary(r["ttft_added_ms"] for r in use),
        "direct_decode_tps": summary(r["direct"]["decode_tps"] for r in use),
        "agent_decode_tps": summary(r["agent"]["decode_tps"] for r in use),
        "decode_ratio": summary(r["decode_ratio"] for r in use),
        "http_floor_ms": summary(r["http_floor_ms"] for r in per_round),
        "direct_prefill_ms": summary((r["direct"]["perf"] or {}).get("prefill_time_ms") for r in use),
        "agent_prompt_ms": summary((r["agent"]["timings"] or {}).get("prompt_ms") for r in use),
        "prompt_tokens": sorted({(r["direct"]["perf"] or {}).get("prefill_tokens") for r in use} - {None}),
        "agent_prompt_n": sorted({(r["agent"]["timings"] or {}).get("prompt_n") for r in use} - {None}),
        "per_round": [{k: v for k, v in r.items() if k not in ("direct", "agent")}
                      | {s: {k: v for k, v in r[s].items() if k != "text"} for s in ("direct", "agent")}
                      for r in per_round],
    }
    return out


# ----------------------------------------------------------------------------------------------
# (b)/(c) Concurrent clients
# ----------------------------------------------------------------------------------------------

def run_clients(agent: NpuAgent, prompts: list[str], clients: int, per_client: int, tokens: int) -> dict:
    """`clients` threads start together (barrier), each sends `per_client` streaming requests
    back to back; every request has its own prompt and asks for `tokens` tokens."""
    lock = threading.Lock()
    recs: list[dict] = []
    barrier = threading.Barrier(clients)
    n_runs_before = len(agent.trace_runs())

    def worker(i: int) -> None:
        try:
            barrier.wait(timeout=30)
        except threading.BrokenBarrierError:
            return
        for j in range(per_client):
            prompt = prompts[(i * per_client + j) % len(prompts)]
            t0 = time.perf_counter()
            r = chat(agent.port, stream_body(MODEL, None, prompt, tokens, False), timeout=180)
            t1 = time.perf_counter()
            usage = r.get("usage") or {}
            ct = r["chunk_times"]
            with lock:
                recs.append({"client": i, "ok": r["ok"], "error": r["error"], "start": t0, "end": t1,
                             "ttft_ms": r["ttft"] * 1000 if r["ttft"] else None,
                             "decode_tps": (len(ct) - 1) / (ct[-1] - ct[0]) if len(ct) > 2 else None,
                             "tokens": usage.get("completion_tokens") or len(ct)})

    ts = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=600)
    ok = [r for r in recs if r["ok"]]
    total_s = (max(r["end"] for r in recs) - min(r["start"] for r in recs)) if recs else None
    toks = sum(r["tokens"] for r in ok)
    ttfts = [r["ttft_ms"] for r in ok]
    runs = agent.trace_runs()[n_runs_before:]
    active = {}
    for run in runs:
        k = int(run.get("active", 0))
        active[k] = active.get(k, 0) + 1
    return {
        "clients": clients, "per_client": per_client, "requests": clients * per_client, "max_tokens": tokens,
        "served": len(ok), "errors": clients * per_client - len(ok),
        "error_samples": [r["error"] for r in recs if not r["ok"]][:3],
        "total_s": total_s, "completion_tokens": toks,
        "agg_tps": toks / total_s if total_s else None,
        "ttft_p50_ms": pct(ttfts, 50), "ttft_p99_ms": pct(ttfts, 99), "ttft_max_ms": max(ttfts) if ttfts else None,
        "ttft_ms": sorted(round(x, 1) for x in ttfts),  # every served request, for the report's CDF
        # One request's own rate once it is decoding, as (a) measures it: what a user sees per stream
        # when the batch shares the NPU (the sim slows each step by the batch factor).
        "decode_tps_p50": med(r["decode_tps"] for r in ok),
        "runtime_runs": len(runs), "runs_by_active_slots": dict(sorted(active.items())),
    }


# ----------------------------------------------------------------------------------------------
# (d) Prompt cache on vs off
# ----------------------------------------------------------------------------------------------

def run_prompt_cache(on: NpuAgent, off: NpuAgent, n: int) -> dict:
    """Conversations alternate between two ~1k-token system prompts A, B, A, B, ... with a fresh
    user question each, so the agent's kept system prompt (clear_kv_cache keep_system_prompt=1,
    same system prompt twice in a row) never applies and only the prompt-cache file can help.
    The first A and B on each server are warm-up (with the cache on they create the files)."""
    sys = {"A": system_prompt("A"), "B": system_prompt("B")}
    res = {"on": [], "off": [], "errors": [], "prompt_tokens": {}}
    for srv in (on, off):
        for k in ("A", "B"):
            r = chat(srv.port, stream_body(MODEL, sys[k], f"Warm-up {k}: hello, who are you?", 4, False), timeout=60)
            if not r["ok"]:
                res["errors"].append(r["error"])
            res["prompt_tokens"][k] = (r.get("usage") or {}).get("prompt_tokens")
    marks = {srv.label: len(srv.trace_runs()) for srv in (on, off)}
    for i in range(n):
        k = "AB"[i % 2]
        user = f"Question {i + 1}: which rule covers item number {17 * i + 5}?"
        pair = [("on", on), ("off", off)] if (i // 2) % 2 == 0 else [("off", off), ("on", on)]
        for key, srv in pair:
            r = chat(srv.port, stream_body(MODEL, sys[k], user, 4, False), timeout=60)
            if r["ok"]:
                res[key].append({"system": k, "ttft_ms": r["ttft"] * 1000,
                                 "prompt_tokens": (r.get("usage") or {}).get("prompt_tokens")})
            else:
                res["errors"].append(r["error"])
    for key, srv in (("on", on), ("off", off)):
        runs = srv.trace_runs()[marks[srv.label]:]
        res[f"reused_{key}"] = [int(x.get("reused", 0)) for x in runs]
        res[f"input_tokens_{key}"] = [int(x.get("input_tokens", 0)) for x in runs]
    res["ttft_on_ms"] = med(x["ttft_ms"] for x in res["on"])
    res["ttft_off_ms"] = med(x["ttft_ms"] for x in res["off"])
    res["ttft_on"] = summary(x["ttft_ms"] for x in res["on"])
    res["ttft_off"] = summary(x["ttft_ms"] for x in res["off"])
    res["ratio_on_off"] = res["ttft_on_ms"] / res["ttft_off_ms"] if res["ttft_on_ms"] and res["ttft_off_ms"] else None
    return res
