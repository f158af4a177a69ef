"""`make bench` measurements: streaming chat requests (SSE) with client-side timing, tok/s from
the server-reported `timings`, and the speed, concurrency and prefix-reuse tests."""
from __future__ import annotations

import http.client
import json
import statistics
import threading
import time

from common import fmt, log
from servers import FOREIGN_MAX, QUIET_STEP, CpuMeter, Server, wait_quiet

# ----------------------------------------------------------------------------------------------
# Prompts
# ----------------------------------------------------------------------------------------------

SHORT_USER = "Write a short story about a robot who learns to paint."

_FILLER_TOPICS = [
    "the history of lighthouses", "how bees make honey", "the water cycle", "building a wooden boat",
    "the life of a glacier", "why leaves change color", "the first printing presses",
    "how bridges carry weight", "the migration of birds", "growing tomatoes at home",
    "the invention of the bicycle", "how volcanoes form", "the tides and the moon",
    "baking sourdough bread", "the design of old clocks", "how maps were made", "desert plants",
    "the rules of chess", "coral reefs", "how radio works", "the silk road", "paper making",
    "the northern lights", "beekeeping tools", "the first steam engines", "river deltas",
    "wind mills", "how glass is blown", "the phases of the moon", "ancient libraries",
    "mountain weather", "how ink is made", "salt marshes", "the art of weaving", "old canals",
    "the planets", "forest fires", "ship navigation", "the postal service", "snow crystals",
]


def filler_text(n_sentences: int) -> str:
    """Deterministic English prose; ~13 tokens per sentence for both tokenizers."""
    out = []
    for i in range(n_sentences):
        t = _FILLER_TOPICS[i % len(_FILLER_TOPICS)]
        out.append(f"Paragraph {i + 1} is about {t}, which many people find interesting to study.")
    return " ".join(out)


LONG_USER = "Summarize the following notes in one sentence.\n\n" + filler_text(26)  # ~500 tokens


def system_prompt_1k() -> str:
    rules = []
    topics = _FILLER_TOPICS
    for i in range(34):
        rules.append(
            f"Rule {i + 1}: when a customer asks about {topics[i % len(topics)]}, answer politely, "
            f"cite policy section {i + 3}, and keep the reply under {20 + i} words."
        )
    return ("You are the support assistant of the Harbor Museum. Follow these rules exactly.\n"
            + "\n".join(rules))


SYSTEM_1K = system_prompt_1k()


# ----------------------------------------------------------------------------------------------
# HTTP
# ----------------------------------------------------------------------------------------------

def chat(port: int, body: dict, timeout: float = 180.0) -> dict:
    """One /v1/chat/completions request. Streaming: parses SSE, times the first content chunk."""
    stream = bool(body.get("stream"))
    out = {"ok": False, "text": "", "ttft": None, "total": None, "timings": None, "usage": None,
           "finish_reason": None, "chunk_times": [], "error": None}
    t0 = time.perf_counter()
    deadline = t0 + timeout
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=min(timeout, 120))
    try:
        conn.request("POST", "/v1/chat/completions", json.dumps(body).encode(),
                     {"Content-Type": "application/json", "Accept": "text/event-stream" if stream else "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            out["error"] = f"HTTP {resp.status}: {resp.read(600).decode(errors='replace')}"
            return out
        if not stream:
            obj = json.loads(resp.read())
            out["total"] = time.perf_counter() - t0
            ch = (obj.get("choices") or [{}])[0]
            out["text"] = ((ch.get("message") or {}).get("content")) or ""
            out["finish_reason"] = ch.get("finish_reason")
            out["timings"], out["usage"] = obj.get("timings"), obj.get("usage")
            out["ok"] = True
            return out
        parts = []
        saw_done = False
        while time.perf_counter() < deadline:
            line = resp.readline()
            if not line:
                break
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                saw_done = True
                break
            now = time.perf_counter()
            obj = json.loads(data)
            if obj.get("error"):
                out["error"] = f"stream error: {json.dumps(obj['error'])[:400]}"
                return out
            for ch in obj.get("choices") or []:
                c = (ch.get("delta") or {}).get("content")
                if c:
                    if out["ttft"] is None:
                        out["ttft"] = now - t0
                    out["chunk_times"].append(now)
                    parts.append(c)
                if ch.get("finish_reason"):
                    out["finish_reason"] = ch["finish_reason"]
            if obj.get("timings"):
                out["timings"] = obj["timings"]
            if obj.get("usage"):
                out["usage"] = obj["usage"]
        out["total"] = time.perf_counter() - t0
        out["text"] = "".join(parts)
        out["saw_done"] = saw_done
        if out["ttft"] is None:
            out["error"] = "no content chunk received" + ("" if saw_done else " (no [DONE])")
            return out
        out["ok"] = True
        return out
    except (OSError, http.client.HTTPException, json.JSONDecodeError) as e:
        out["error"] = f"{type(e).__name__}: {e}"
        return out
    finally:
        conn.close()


def stream_body(model: str, system: str | None, user: str, max_tokens: int, ignore_eos: bool,
                **extra) -> dict:
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    b = {"model": model, "messages": msgs, "max_tokens": max_tokens, "temperature": 0,
         "stream": True, "stream_options": {"include_usage": True}}
    if ignore_eos:
        b["ignore_eos"] = True
    b.update(extra)
    return b


def speeds(r: dict) -> dict:
    """Prefill/decode tok/s from server `timings`, client-side as fallback and cross-check."""
    t = r.get("timings") or {}
    ct = r.get("chunk_times") or []
    client_decode = (len(ct) - 1) / (ct[-1] - ct[0]) if len(ct) > 2 and ct[-1] > ct[0] else None
    usage = r.get("usage") or {}
    prompt_n = t.get("prompt_n") or usage.get("prompt_tokens")
    client_prefill = (usage.get("prompt_tokens") / r["ttft"]) if usage.get("prompt_tokens") and r.get("ttft") else None
    return {
        "ttft_ms": r["ttft"] * 1000 if r.get("ttft") else None,
        "prefill_tps": t.get("prompt_per_second") or client_prefill,
        "decode_tps": t.get("predicted_per_second") or client_decode,
        "prefill_tps_client": client_prefill,
        "decode_tps_client": client_decode,
        "prompt_n": prompt_n,
        "predicted_n": t.get("predicted_n") or usage.get("completion_tokens"),
        "source": "timings" if t.get("prompt_per_second") else "client",
    }


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def pct(xs, p):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    k = (len(xs) - 1) * p / 100
    f = int(k)
    c = min(f + 1, len(xs) - 1)
    return xs[f] + (xs[c] - xs[f]) * (k - f)


def summary(xs) -> dict | None:
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


# ----------------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------------

def speed_set(srv: Server, model: str, rnd: int, reps: int, decode_tokens: int) -> dict:
    """One server's share of a round: `reps` x (512-token prefill request + short chat w/ decode)."""
    longs, shorts, texts, errors = [], [], [], []
    meter = CpuMeter().start()
    for k in range(reps):
        nonce = f"Session {rnd:02d}{k:02d}{7 * rnd + 3 * k + 11:03d}."
        r = chat(srv.port, stream_body(model, nonce, LONG_USER, 4, True))
        if r["ok"]:
            longs.append(speeds(r))
        else:
            errors.append({"request": "long", "error": r["error"]})
        r = chat(srv.port, stream_body(model, nonce, SHORT_USER, decode_tokens, True))
        if r["ok"]:
            shorts.append(speeds(r))
            texts.append(r["text"])
        else:
            errors.append({"request": "short", "error": r["error"]})
    load = meter.stop()
    return {
        "foreign_cores": load["foreign_cores"],
        "steal_cores": load["steal_cores"],
        "prefill_tps": med(x["prefill_tps"] for x in longs),
        "prefill_tps_client": med(x["prefill_tps_client"] for x in longs),
        "ttft_long_ms": med(x["ttft_ms"] for x in longs),
        "ttft_ms": med(x["ttft_ms"] for x in shorts),
        "decode_tps": med(x["decode_tps"] for x in shorts),
        "decode_tps_client": med(x["decode_tps_client"] for x in shorts),
        "prompt_n_long": med(x["prompt_n"] for x in longs),
        "prompt_n_short": med(x["prompt_n"] for x in shorts),
        "predicted_n": med(x["predicted_n"] for x in shorts),
        "source": sorted({x["source"] for x in longs + shorts}),
        "texts": texts,
        "errors": errors,
    }


def run_speed(a: Server, b: Server, model: str, rounds: int, reps: int, decode_tokens: int,
              max_extra: int) -> dict:
    per_round = []
    rnd = 0
    while sum(r["clean"] for r in per_round) < rounds and rnd < rounds + max_extra:
        if rnd and not per_round[-1]["clean"]:
            wait_quiet(QUIET_STEP, "disturbed round")
        order = [("theirs", a), ("ours", b)] if rnd % 2 == 0 else [("ours", b), ("theirs", a)]
        res = {"round": rnd + 1, "first": order[0][0]}
        for side, srv in order:
            res[side] = speed_set(srv, model, rnd, reps, decode_tokens)
        res["clean"] = all(res[x]["foreign_cores"] < FOREIGN_MAX for x in ("theirs", "ours"))
        ratios = {}
        for key in ("decode_tps", "prefill_tps", "ttft_ms", "ttft_long_ms", "decode_tps_client", "prefill_tps_client"):
            o, t = res["ours"][key], res["theirs"][key]
            ratios[key] = (o / t) if (o and t) else None
        same = sum(1 for x, y in zip(res["ours"]["texts"], res["theirs"]["texts"]) if x == y)
        res["ratios"] = ratios
        res["identical_outputs"] = f"{same}/{min(len(res['ours']['texts']), len(res['theirs']['texts']))}"
        per_round.append(res)
        rnd += 1
        log(f"  round {rnd} ({order[0][0]} first{'' if res['clean'] else ', DISTURBED: others used ' + fmt(max(res['theirs']['foreign_cores'], res['ours']['foreign_cores']), 2) + ' cores'}): decode {fmt(res['theirs']['decode_tps'])} vs "
            f"{fmt(res['ours']['decode_tps'])} tok/s (x{fmt(ratios['decode_tps'], 3)}), prefill "
            f"{fmt(res['theirs']['prefill_tps'])} vs {fmt(res['ours']['prefill_tps'])} (x{fmt(ratios['prefill_tps'], 3)}), "
            f"TTFT {fmt(res['theirs']['ttft_ms'])} vs {fmt(res['ours']['ttft_ms'])} ms (x{fmt(ratios['ttft_ms'], 3)})")
    agg = {"rounds_total": len(per_round), "rounds_clean": sum(r["clean"] for r in per_round)}
    use = [r for r in per_round if r["clean"]]
    if len(use) < 2:
        use = per_round  # could not get 2 quiet rounds: report everything, flagged in the notes
    agg["ratios_from"] = "clean rounds" if use is not per_round or all(r["clean"] for r in per_round) else "all rounds (machine never quiet)"
    for side in ("theirs", "ours"):
        agg[side] = {k: summary(r[side][k] for r in use)
                     for k in ("decode_tps", "prefill_tps", "ttft_ms", "ttft_long_ms", "decode_tps_client",
                               "prefill_tps_client", "prompt_n_long", "prompt_n_short", "predicted_n")}
        agg[side]["errors"] = [e for r in per_round for e in r[side]["errors"]]
        agg[side]["source"] = sorted({s for r in per_round for s in r[side]["source"]})
    agg["ratios"] = {k: summary(r["ratios"][k] for r in use) for k in per_round[0]["ratios"]}
    for r in per_round:
        for side in ("theirs", "ours"):
            r[side].pop("texts", None)
    agg["rounds"] = per_round
    return agg


def run_concurrency(srv: Server, model: str, clients: int, seconds: float, max_tokens: int) -> dict:
    lock = threading.Lock()
    recs = []
    t_start = time.monotonic()
    stop_at = t_start + seconds

    def worker(i: int):
        n = 0
        while time.monotonic() < stop_at and n < 2000:
            body = stream_body(model, None, f"Client {i}, question {n}: name a fruit and describe it.",
                               max_tokens, True)
            r = chat(srv.port, body, timeout=90)
            with lock:
                recs.append({"ok": r["ok"], "ttft": r["ttft"], "total": r["total"], "error": r["error"],
                             "end": time.monotonic()})
            n += 1

    ts = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=seconds + 180)
    ok = [r for r in recs if r["ok"]]
    elapsed = (max(r["end"] for r in recs) - t_start) if recs else seconds
    ttfts = [r["ttft"] * 1000 for r in ok]
    errs = [r["error"] for r in recs if not r["ok"]]
    return {
        "clients": clients, "seconds": seconds, "max_tokens": max_tokens,
        "served": len(ok), "errors": len(errs), "error_samples": errs[:3],
        "req_per_s": len(ok) / elapsed if elapsed else None,
        "ttft_p50_ms": pct(ttfts, 50), "ttft_p99_ms": pct(ttfts, 99),
        "latency_p50_ms": pct([r["total"] * 1000 for r in ok], 50),
        "ttft_ms": sorted(round(x, 1) for x in ttfts),  # every served request, for the report's CDF
    }


def run_prefix(on: Server, off: Server, model: str, n: int, on_extra: dict, off_extra: dict) -> dict:
    """Repeated ~1k-token system prompt, varying user message; TTFT with prefix reuse on vs off."""
    res = {"on": [], "off": [], "prompt_n_on": [], "prompt_n_off": [], "errors": []}
    # Warm-up: puts the system prompt into the "on" server's cache (and the model in memory for both).
    for srv, extra in ((on, on_extra), (off, off_extra)):
        r = chat(srv.port, stream_body(model, SYSTEM_1K, "Hello, who are you?", 4, True, **extra))
        if not r["ok"]:
            res["errors"].append(r["error"])
    res["prompt_tokens"] = (r.get("usage") or {}).get("prompt_tokens") or (r.get("timings") or {}).get("prompt_n")
    for i in range(n):
        user = f"Question {i + 1}: which rule covers {_FILLER_TOPICS[(5 * i) % len(_FILLER_TOPICS)]}?"
        pair = [("on", on, on_extra), ("off", off, off_extra)]
        if i % 2:
            pair.reverse()
        for key, srv, extra in pair:
            r = chat(srv.port, stream_body(model, SYSTEM_1K, user, 4, True, **extra))
            if r["ok"]:
                res[key].append(r["ttft"] * 1000)
                res[f"prompt_n_{key}"].append((r.get("timings") or {}).get("prompt_n"))
            else:
                res["errors"].append(r["error"])
    mon, moff = med(res["on"]), med(res["off"])
    res["ttft_on_ms"], res["ttft_off_ms"] = mon, moff
    res["reduction"] = (1 - mon / moff) if (mon and moff) else None
    return res
