#!/usr/bin/env python3
"""`make bench`: our agent vs llama.cpp's own llama-server, side by side (issue 2).

Stdlib only (Python 3.11). Normally started by hack/bench/run.sh, which fetches the models, builds
llama-server and the agent, then runs:

    python3 hack/bench/bench.py --llama-server BIN --agent BIN --smollm2 GGUF --gemma GGUF --out docs/bench

Method (2 cores, a VM that drifts +-15 % within minutes, so only interleaved ratios mean anything):
  * "theirs" = llama-server, "ours" = rockchip-llama-agent; same GGUF, 2 threads, 4096 context,
    one sequence (-np 1). Both servers stay loaded, but requests never overlap: rounds alternate
    A/B, B/A, ... and ratios (ours / theirs) are taken per round; we report their median and
    min-max.
  * Every request is a streaming POST /v1/chat/completions (SSE), temperature 0. Prefill and
    decode tok/s come from the server-reported llama.cpp-style `timings` block (client-side
    timing is recorded beside it as a cross-check, and used if `timings` is absent).
  * A per-request nonce at the start of the system message defeats prefix caching in both
    servers, so every speed request really prefills its prompt.
  * Quality: known-answer prompts (substring match) + a repetition detector on 128-token
    generations, for each server and model, reported beside the speed.
  * Concurrency: 4 client threads for 30 s per server, max_tokens 16.
  * Prefix reuse: ~1k-token system prompt repeated with a varying short user message; TTFT with the
    prefix cache on vs off (agent: --prefix-cache=false; llama-server: cache_prompt false).

`--ours-kind llama-server` runs llama-server on both sides (method self-check: ratios ~= 1.0).
"""
from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CACHE = Path(os.environ.get("ROCKCHIP_LLAMA_CACHE", Path.home() / ".cache" / "rockchip-llama"))

MODELS = {
    "smollm2": {
        "name": "smollm2-135m-instruct",
        "label": "SmolLM2-135M-Instruct Q4_1",
        "llama_server_args": [],
    },
    "gemma": {
        "name": "gemma-3-270m",
        "label": "Gemma 3 270M (base) Q4_K_M",
        # The GGUF has no chat template; with --jinja (default) "gemma" would be a literal template.
        "llama_server_args": ["--no-jinja", "--chat-template", "gemma"],
    },
}

TARGETS = {"decode": 0.97, "prefill": 0.97, "ttft": 1.05, "prefix_reduction": 0.80}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


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

# (prompt, accepted substrings (case-insensitive, word-bounded), how many must appear)
QUALITY = [
    ("What is 2+2?", ["4", "four"], 1),
    ("What is the capital of France?", ["paris"], 1),
    ("Name three colors.", ["red", "blue", "green", "yellow", "orange", "purple", "black", "white",
                            "pink", "brown"], 3),
    ("How many days are there in a week?", ["7", "seven"], 1),
    ("What is the opposite of hot?", ["cold"], 1),
    ("What color is the sky on a clear day?", ["blue"], 1),
    ("What is the largest planet in our solar system?", ["jupiter"], 1),
    ("What is 10 minus 3?", ["7", "seven"], 1),
]
REPETITION_PROMPTS = [
    "Write a short story about a robot who learns to paint.",
    "Explain how a bicycle works.",
]
REPETITION_N = 4          # word n-grams
REPETITION_FLAG = 0.30    # flag a generation whose repeated-n-gram fraction exceeds this


def score_answer(text: str, accepted: list[str], need: int, prompt: str = "") -> bool:
    # A base model often echoes the question; an echo must not count as an answer.
    t = text.lower().replace(prompt.lower(), " ") if prompt else text.lower()
    hits = sum(1 for a in accepted if re.search(r"(?<![\w])" + re.escape(a) + r"(?![\w])", t))
    return hits >= need


def repetition(text: str, n: int = REPETITION_N) -> float:
    """Fraction of word n-grams that repeat an earlier one (0 = no loop, ->1 = stuck in a loop)."""
    # Words; CJK characters count one each (a Japanese sentence has no spaces to split on).
    words = re.findall(r"[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff\uac00-\ud7af]|[^\W\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff\uac00-\ud7af]+",
                       text.lower())
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    if len(grams) < 4:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


# ----------------------------------------------------------------------------------------------
# Servers
# ----------------------------------------------------------------------------------------------

LIVE: list["Server"] = []


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------------------------
# Contention monitor: this 2-core VM is shared; llama.cpp's spinning thread barriers collapse
# (10-100x slower) when another process takes a core. We measure the CPU time used by everything
# that is *not* us (this script + the servers we started) and retry rounds that were disturbed.
# ----------------------------------------------------------------------------------------------

CLK = os.sysconf("SC_CLK_TCK")
FOREIGN_MAX = float(os.environ.get("BENCH_FOREIGN_MAX", "0.15"))  # cores used by others: "quiet"
QUIET_STEP = float(os.environ.get("BENCH_QUIET_STEP", "60"))      # max wait before each test / retry


def _proc_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return int(rest[11]) + int(rest[12])  # utime + stime (all threads)
    except (OSError, IndexError, ValueError):
        return 0


class CpuMeter:
    """Cores used by other processes between start() and stop()."""

    def __init__(self):
        self.pids = []

    def _snap(self):
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        busy = v[0] + v[1] + v[2] + v[5] + v[6]  # user nice system irq softirq (guest is in user)
        ours = sum(_proc_ticks(p) for p in self.pids)
        return time.monotonic(), busy, ours, v[7] if len(v) > 7 else 0

    def start(self) -> "CpuMeter":
        self.pids = [os.getpid()] + [s.proc.pid for s in LIVE if s.proc and s.proc.poll() is None]
        self.t0 = self._snap()
        return self

    def stop(self) -> dict:
        t1 = self._snap()
        dt_ = max(t1[0] - self.t0[0], 1e-3)
        foreign = max(0.0, ((t1[1] - self.t0[1]) - (t1[2] - self.t0[2])) / CLK / dt_)
        return {"foreign_cores": round(foreign, 3), "steal_cores": round((t1[3] - self.t0[3]) / CLK / dt_, 3),
                "measured_s": round(dt_, 2)}


def wait_quiet(max_s: float, why: str = "") -> dict:
    """Waits (bounded) until other processes use < FOREIGN_MAX cores for 3 s in a row."""
    t0 = time.monotonic()
    quiet = 0
    last = None
    said = False
    while time.monotonic() - t0 < max_s:
        m = CpuMeter().start()
        time.sleep(1.0)
        last = m.stop()
        quiet = quiet + 1 if last["foreign_cores"] < FOREIGN_MAX else 0
        if quiet >= 3:
            break
        if not said and time.monotonic() - t0 > 3:
            log(f"  waiting for other processes to leave the CPU{(' (' + why + ')') if why else ''}: "
                f"{last['foreign_cores']:.2f} cores busy (max wait {max_s:.0f} s)")
            said = True
    return {"waited_s": round(time.monotonic() - t0, 1), "quiet": quiet >= 3,
            "foreign_cores": last and last["foreign_cores"]}


class Server:
    def __init__(self, label: str, kind: str, argv_fn, ready_path: str, logdir: Path):
        self.label, self.kind, self.ready_path = label, kind, ready_path
        self.port = free_port()
        self.argv = argv_fn(self.port)
        self.logpath = logdir / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', label)}.log"
        self.proc: subprocess.Popen | None = None
        self.load_s: float | None = None

    def start(self, timeout: float = 180.0) -> "Server":
        log(f"start {self.label} on 127.0.0.1:{self.port}")
        logf = open(self.logpath, "wb")  # one start per label and run
        logf.write(("$ " + " ".join(self.argv) + "\n").encode())
        logf.flush()
        t0 = time.monotonic()
        self.proc = subprocess.Popen(self.argv, stdout=logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        LIVE.append(self)
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.proc.returncode}; see {self.logpath}:\n"
                                   + tail(self.logpath))
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", self.ready_path)
                r = c.getresponse()
                r.read()
                c.close()
                if r.status == 200:
                    self.load_s = time.monotonic() - t0
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.label} not ready after {timeout:.0f} s; see {self.logpath}:\n" + tail(self.logpath))

    def rss_peak_mb(self) -> float | None:
        try:
            for line in open(f"/proc/{self.proc.pid}/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except (OSError, AttributeError):
            pass
        return None

    def stop(self) -> None:
        p = self.proc
        if p is None or p.poll() is not None:
            if self in LIVE:
                LIVE.remove(self)
            return
        try:
            os.killpg(p.pid, signal.SIGTERM)  # the process group we created (start_new_session)
            p.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        if self in LIVE:
            LIVE.remove(self)


def tail(path: Path, n: int = 20) -> str:
    try:
        return "".join(open(path, errors="replace").readlines()[-n:])
    except OSError:
        return ""


def stop_all() -> None:
    for s in list(LIVE):
        s.stop()


def make_llama_server(args, model_key: str, model_path: str, label: str, logdir: Path,
                      parallel: int = 1) -> Server:
    m = MODELS[model_key]

    def argv(port):
        return [args.llama_server, "-m", model_path, "--host", "127.0.0.1", "--port", str(port),
                "-t", str(args.threads), "-tb", str(args.threads), "-c", str(4096 * parallel),
                "-np", str(parallel), "--alias", m["name"]] + m["llama_server_args"]
    return Server(label, "llama-server", argv, "/health", logdir)


def make_agent(args, model_key: str, model_path: str, label: str, logdir: Path,
               extra: list[str] | None = None) -> Server:
    m = MODELS[model_key]
    mdir = CACHE / "bench" / f"models-{model_key}"
    mdir.mkdir(parents=True, exist_ok=True)
    link = mdir / Path(model_path).name
    if not link.exists():
        link.symlink_to(model_path)

    def argv(port):
        return [args.agent, "serve", "--listen", f"127.0.0.1:{port}", "--models-dir", str(mdir),
                "--default-model", m["name"], "--threads", str(args.threads)] + (extra or [])
    return Server(label, "agent", argv, "/readyz", logdir)


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


def run_quality(srv: Server, model: str, ignore_eos_ok: bool = True) -> dict:
    answers = []
    for prompt, accepted, need in QUALITY:
        body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 48,
                "temperature": 0, "stream": False}
        r = chat(srv.port, body)
        answers.append({"prompt": prompt, "expect": accepted if need == 1 else f"{need} of {accepted}",
                        "answer": r["text"], "finish_reason": r["finish_reason"],
                        "pass": bool(r["ok"] and score_answer(r["text"], accepted, need, prompt)), "error": r["error"]})
    reps = []
    for prompt in REPETITION_PROMPTS:
        r = chat(srv.port, stream_body(model, None, prompt, 128, False))
        rep = repetition(r["text"]) if r["ok"] else None
        reps.append({"prompt": prompt, "text": r["text"], "finish_reason": r["finish_reason"],
                     "completion_tokens": (r.get("usage") or {}).get("completion_tokens"),
                     "repeated_ngram_fraction": rep, "flagged": rep is None or rep > REPETITION_FLAG,
                     "error": r["error"]})
    return {
        "known_answer_passed": sum(a["pass"] for a in answers),
        "known_answer_total": len(answers),
        "repetition_max": max((x["repeated_ngram_fraction"] or 0) for x in reps),
        "repetition_flagged": sum(x["flagged"] for x in reps),
        "repetition_total": len(reps),
        "answers": answers,
        "repetition": reps,
    }


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


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------

def fmt(x, nd=None) -> str:
    if x is None:
        return "–"
    if nd is None:
        nd = 0 if abs(x) >= 100 else 1
    return f"{x:.{nd}f}"


def fmt_sum(s, nd=None) -> str:
    if not s:
        return "–"
    return f"{fmt(s['median'], nd)} ({fmt(s['min'], nd)}–{fmt(s['max'], nd)})"


def verdict(value, target, higher_is_better=True) -> str:
    if value is None:
        return "n/a"
    ok = value >= target if higher_is_better else value <= target
    return "MET" if ok else "MISSED"


def machine_info() -> dict:
    cpu = ""
    flags = set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name") and not cpu:
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    mem = ""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory": mem, "kernel": platform.release(),
            "os": _os_release(), "python": platform.python_version(),
            "simd": " ".join(f for f in ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16") if f in flags)}


def _os_release() -> str:
    try:
        for line in open("/etc/os-release"):
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.platform()


def cmd_version(argv: list[str]) -> str:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        lines = [x.strip() for x in (p.stdout + p.stderr).splitlines() if x.strip()]
        pick = [x for x in lines if "version" in x.lower()] or lines[-1:] or [""]
        return pick[0][:200]
    except (OSError, subprocess.TimeoutExpired):
        return ""


CMAKE_KEYS = ("CMAKE_BUILD_TYPE", "GGML_NATIVE", "GGML_AVX", "GGML_AVX2", "GGML_AVX512", "GGML_FMA", "GGML_F16C",
              "GGML_BMI2", "GGML_SSE42", "GGML_OPENMP", "CMAKE_C_FLAGS")


def cmake_cache(path: Path | None) -> dict:
    """A few engine build settings from a llama.cpp CMakeCache.txt."""
    out = {}
    if not path or not path.is_file():
        return out
    for line in open(path, errors="replace"):
        k, _, v = line.partition("=")
        k = k.split(":")[0]
        if k in CMAKE_KEYS:
            out[k] = v.strip()
    out["path"] = str(path)
    return out


def agent_cmake_cache(agent: str | None) -> Path | None:
    """llama-cpp-sys-2's cmake build next to the agent binary (newest one)."""
    if not agent:
        return None
    caches = list(Path(agent).resolve().parent.glob("build/llama-cpp-sys-2-*/out/build/CMakeCache.txt"))
    return max(caches, key=lambda p: p.stat().st_mtime) if caches else None


def git_rev() -> str:
    try:
        p = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
        d = subprocess.run(["git", "status", "--porcelain", "--", "agent", "Cargo.toml", "Cargo.lock"],
                           capture_output=True, text=True, timeout=10)
        return (p.stdout.strip() or "(no commit)") + (" + uncommitted agent changes" if d.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return "(unknown)"


def render(results: dict) -> tuple[str, str]:
    """Returns (plain table for stdout, Markdown report)."""
    ours_name = results["config"]["ours_label"]
    theirs_name = "llama-server"
    rows = []   # (model, metric, theirs, ours, ratio, target, verdict)
    for mk, m in results["models"].items():
        label = MODELS[mk]["name"]
        sp = m.get("speed")
        if sp:
            R = sp["ratios"]
            rows.append((label, "decode tok/s (128 tok)", fmt_sum(sp["theirs"]["decode_tps"]), fmt_sum(sp["ours"]["decode_tps"]),
                         fmt_sum(R["decode_tps"], 3), "≥ 0.97", verdict(R["decode_tps"] and R["decode_tps"]["median"], 0.97)))
            rows.append((label, f"prefill tok/s (~{fmt((sp['theirs']['prompt_n_long'] or {}).get('median'))} tok)",
                         fmt_sum(sp["theirs"]["prefill_tps"]), fmt_sum(sp["ours"]["prefill_tps"]),
                         fmt_sum(R["prefill_tps"], 3), "≥ 0.97", verdict(R["prefill_tps"] and R["prefill_tps"]["median"], 0.97)))
            rows.append((label, f"TTFT ms, short chat (~{fmt((sp['theirs']['prompt_n_short'] or {}).get('median'))} tok)",
                         fmt_sum(sp["theirs"]["ttft_ms"]), fmt_sum(sp["ours"]["ttft_ms"]),
                         fmt_sum(R["ttft_ms"], 3), "≤ 1.05", verdict(R["ttft_ms"] and R["ttft_ms"]["median"], 1.05, False)))
            rows.append((label, "TTFT ms, prefill prompt", fmt_sum(sp["theirs"]["ttft_long_ms"]), fmt_sum(sp["ours"]["ttft_long_ms"]),
                         fmt_sum(R["ttft_long_ms"], 3), "(info)", ""))
            rows.append((label, "decode tok/s, client-side", fmt_sum(sp["theirs"]["decode_tps_client"]),
                         fmt_sum(sp["ours"]["decode_tps_client"]), fmt_sum(R["decode_tps_client"], 3), "(cross-check)", ""))
        q = m.get("quality")
        if q:
            def qs(x):
                return (f"{x['known_answer_passed']}/{x['known_answer_total']} right, "
                        f"rep {fmt(x['repetition_max'], 2)}{' FLAGGED' if x['repetition_flagged'] else ''}")
            rows.append((label, "quality: known answers, max repeated 4-grams", qs(q["theirs"]), qs(q["ours"]), "", "(report)", ""))
        c = m.get("concurrency")
        if c:
            def cs(x):
                return (f"{x['served']} served, {x['errors']} err, p50 {fmt(x['ttft_p50_ms'])} / p99 {fmt(x['ttft_p99_ms'])} ms")
            rows.append((label, f"{c['theirs']['clients']} clients × {c['theirs']['seconds']:g} s (max_tokens {c['theirs']['max_tokens']})",
                         cs(c["theirs"]), cs(c["ours"]),
                         fmt(c["ours"]["served"] / c["theirs"]["served"], 3) if c["theirs"]["served"] else "–", "(report)", ""))
        p = m.get("prefix")
        if p:
            def ps(x):
                return f"on {fmt(x['ttft_on_ms'])} / off {fmt(x['ttft_off_ms'])} ms → −{fmt(100 * x['reduction'] if x['reduction'] is not None else None)} %"
            rows.append((label, f"prefix reuse, ~{p['ours'].get('prompt_tokens') or '?'}-tok system prompt, TTFT",
                         ps(p["theirs"]), ps(p["ours"]), "", "ours ≥ 80 % lower",
                         verdict(p["ours"]["reduction"], 0.80)))
        ld = m.get("load_s", {})
        rss = m.get("rss_peak_mb", {})
        rows.append((label, "load s / peak RSS MB", f"{fmt(ld.get('theirs'), 2)} s / {fmt(rss.get('theirs'))}",
                     f"{fmt(ld.get('ours'), 2)} s / {fmt(rss.get('ours'))}", "", "(info)", ""))

    head = ("model", "metric", theirs_name, ours_name, "ratio ours/theirs", "target", "")
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    line = lambda r: "  ".join(str(x).ljust(widths[i]) for i, x in enumerate(r)).rstrip()
    plain = "\n".join([line(head), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])

    md_rows = ["| " + " | ".join(head[:-1]) + " | verdict |", "|" + "---|" * len(head)]
    md_rows += ["| " + " | ".join(str(x).replace("|", "\\|") for x in r) + " |" for r in rows]
    return plain, "\n".join(md_rows)


def markdown_report(results: dict, md_table: str) -> str:
    c, mi = results["config"], results["machine"]
    lines = [
        "# `make bench`: rockchip-llama-agent vs llama.cpp `llama-server`",
        "",
        f"Generated by `make bench` (`hack/bench/run.sh` → `hack/bench/bench.py`) on {results['date']}, "
        f"git `{results['git']}`, total runtime {fmt(results['runtime_s'] / 60, 1)} min. "
        "Raw numbers: [`results.json`](results.json).",
        "",
        "**Caveat:** this VM drifts ±15 % within minutes, so absolute tok/s are only indicative; the "
        "ratios are what counts. They are computed per round from runs interleaved in one invocation "
        f"(round order alternates theirs/ours, ours/theirs …; {c['rounds']} rounds × {c['reps']} requests per "
        "server per round), and reported as median (min–max over rounds). Measured on x86-64, not on an RK3588.",
        "",
        "## Results",
        "",
        md_table,
        "",
        "Targets (issue 2): decode and prefill tok/s ratio ≥ 0.97, TTFT ratio ≤ 1.05 (short chat request), "
        "prefix reuse cuts TTFT of a repeated ~1k-token system prompt by ≥ 80 %. "
        "Quality is reported, not gated: Gemma 3 270M is a *base* model without a chat template, so it "
        "is expected to answer badly and ramble; SmolLM2-135M is tiny and gets some answers wrong.",
        "",
        "## Setup",
        "",
        f"* Machine: {mi['cpu']}, {mi['cores']} vCPU ({mi['simd']}), {mi['memory']}, {mi['os']}, kernel {mi['kernel']}, Python {mi['python']}.",
        f"* Theirs: `llama-server` {results['versions'].get('llama_server', '')} built by "
        "`hack/bench/build-llama-server.sh` from the llama.cpp sources vendored in the PyPI sdist "
        "`llama-cpp-python==0.3.36` (sha256 pinned), `-DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF` and "
        "ggml's default x86 flags (SSE4.2/AVX/AVX2/BMI2/FMA/F16C, no AVX-512), OpenMP — the same CPU "
        "flags llama-cpp-sys-2 uses for our agent without `-C target-cpu=native`, so this compares "
        "engine with engine. "
        f"Started as `{c['llama_server_cmd']}`.",
        f"* Ours: `{c['ours_cmd']}` ({results['versions'].get('ours', '')}).",
        engine_line(results),
        f"* Same GGUF, {c['threads']} threads, 4096-token context, one sequence (`-np 1`) for the single-stream "
        "runs. Both servers stay loaded; requests never overlap.",
        "* Requests: streaming `POST /v1/chat/completions` (SSE), `temperature: 0`, `ignore_eos: true` for "
        f"fixed lengths. Decode: {c['decode_tokens']} tokens after a short chat prompt. Prefill: a ~500-token "
        "prompt, `max_tokens` 4. A per-request nonce opens the system message so no prefix cache helps. "
        "Prefill/decode tok/s are the server-reported llama.cpp `timings` "
        "(`prompt_per_second`, `predicted_per_second`); client-side decode rate (chunks−1)/(last−first chunk) "
        "is shown as a cross-check. TTFT = client-side time to the first content chunk.",
        f"* Quality: {len(QUALITY)} known-answer prompts (non-streaming, `max_tokens` 48, case-insensitive "
        f"word match) and a repetition detector: fraction of repeated word {REPETITION_N}-grams in "
        f"{len(REPETITION_PROMPTS)} 128-token generations (natural stop allowed), flagged above {REPETITION_FLAG}.",
        f"* Concurrency: {c['conc_clients']} client threads for {c['conc_seconds']} s per server, "
        f"`max_tokens` 16, parallel slots: llama-server `-np {c['conc_parallel']}`, agent "
        f"{'`--parallel ' + str(c['conc_parallel']) + '`' if c['conc_parallel'] > 1 else 'default (one sequence)'}.",
        f"* Prefix reuse: {c['prefix_n']} requests with a fixed ~1k-token system prompt and a varying "
        "user question (`max_tokens` 4), after one warm-up; TTFT median. Ours: agent default vs "
        "`--prefix-cache=false` (two instances, interleaved); theirs (reference): llama-server "
        "`cache_prompt` true vs false (two instances, interleaved).",
        "",
        "Reproduce: `make bench` (≈ 20 min cold incl. the llama-server build, "
        f"≈ {fmt(results['runtime_s'] / 60, 0)} min warm). Logs of every server: `~/.cache/rockchip-llama/bench/logs/`.",
        "",
        "## Quality details",
        "",
    ]
    for mk, m in results["models"].items():
        q = m.get("quality")
        if not q:
            continue
        lines.append(f"### {MODELS[mk]['label']}")
        lines.append("")
        lines.append("| prompt | expected | llama-server | " + c["ours_label"] + " |")
        lines.append("|---|---|---|---|")
        for a, b in zip(q["theirs"]["answers"], q["ours"]["answers"]):
            cell = lambda x: ("✅ " if x["pass"] else "❌ ") + short(x["answer"] or x["error"] or "")
            exp = ", ".join(a["expect"]) if isinstance(a["expect"], list) else a["expect"]
            lines.append(f"| {a['prompt']} | {exp} | {cell(a)} | {cell(b)} |")
        for a, b in zip(q["theirs"]["repetition"], q["ours"]["repetition"]):
            cell = lambda x: (f"rep {fmt(x['repeated_ngram_fraction'], 2)}{' ⚠️' if x['flagged'] else ''}, "
                              f"{x['completion_tokens']} tok, {x['finish_reason']}: " + short(x["text"] or x["error"] or "", 90))
            lines.append(f"| {a['prompt']} (128 tok) | rep ≤ {REPETITION_FLAG} | {cell(a)} | {cell(b)} |")
        lines.append("")
    if results.get("notes"):
        lines += ["## Notes", ""] + [f"* {n}" for n in results["notes"]] + [""]
    return "\n".join(lines)


def engine_line(results: dict) -> str:
    eb = results.get("engine_builds") or {}
    t, o = eb.get("theirs") or {}, eb.get("ours") or {}
    keys = [k for k in CMAKE_KEYS if k not in ("CMAKE_BUILD_TYPE", "CMAKE_C_FLAGS")]
    def desc(d):
        if not d:
            return "unknown"
        on = [k.removeprefix("GGML_") for k in keys if d.get(k) == "ON"]
        return f"`{d.get('CMAKE_BUILD_TYPE', '?')}`, GGML_NATIVE={d.get('GGML_NATIVE', '?')}, on: {' '.join(on)}"
    line = f"* llama.cpp build settings (CMakeCache): theirs {desc(t)}; ours (llama-cpp-sys-2) {desc(o)}."
    if t and o and t.get("CMAKE_BUILD_TYPE") != o.get("CMAKE_BUILD_TYPE"):
        line += (f" **Build types differ**: the workspace's `[profile.release] debug = ...` makes llama-cpp-sys-2 "
                 f"build llama.cpp as `{o.get('CMAKE_BUILD_TYPE')}` (-O2 -g) instead of `Release` (-O3); "
                 "`LLAMA_LIB_PROFILE=Release` overrides it.")
    return line


def pretty_argv(argv: list[str]) -> str:
    """Command line with binaries and model paths shortened to their file names, ports elided."""
    out = []
    for i, x in enumerate(argv):
        if "/" in x and (i == 0 or x.endswith(".gguf") or argv[i - 1] == "--models-dir"):
            x = Path(x).name if i == 0 or x.endswith(".gguf") else "DIR"
        if i and argv[i - 1] == "--port":
            x = "PORT"
        out.append(re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", x))
    return " ".join(out)


def short(s: str, n: int = 70) -> str:
    s = " ".join(s.split()).replace("|", "\\|")
    return s if len(s) <= n else s[: n - 1] + "…"


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llama-server", required=True)
    ap.add_argument("--agent", help="rockchip-llama-agent binary (ours)")
    ap.add_argument("--ours-kind", choices=["agent", "llama-server"], default="agent",
                    help="llama-server = run llama-server on both sides (method self-check)")
    ap.add_argument("--smollm2", required=True)
    ap.add_argument("--gemma", required=True)
    ap.add_argument("--models", default="smollm2,gemma")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--decode-tokens", type=int, default=128)
    ap.add_argument("--conc-clients", type=int, default=4)
    ap.add_argument("--conc-seconds", type=float, default=30)
    ap.add_argument("--conc-parallel", type=int, default=1)
    ap.add_argument("--prefix-n", type=int, default=6)
    ap.add_argument("--max-extra-rounds", type=int, default=4,
                    help="extra speed rounds allowed to replace rounds disturbed by other processes")
    ap.add_argument("--quiet-wait", type=float, default=300,
                    help="max seconds to wait at start for other processes to leave the CPU")
    ap.add_argument("--skip", default="", help="comma list of: speed,quality,concurrency,prefix")
    ap.add_argument("--out", default="docs/bench")
    args = ap.parse_args()
    if args.ours_kind == "agent" and not args.agent:
        ap.error("--agent is required unless --ours-kind llama-server")
    skip = set(filter(None, args.skip.split(",")))
    t_begin = time.monotonic()
    logdir = CACHE / "bench" / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    paths = {"smollm2": args.smollm2, "gemma": args.gemma}
    ours_label = "rockchip-llama-agent" if args.ours_kind == "agent" else "llama-server (B)"

    def theirs(mk, tag="", parallel=1):
        return make_llama_server(args, mk, paths[mk], f"llama-server-{mk}{tag}", logdir, parallel)

    def ours(mk, tag="", extra=None, parallel=1):
        if args.ours_kind == "llama-server":
            return make_llama_server(args, mk, paths[mk], f"ours-llama-server-{mk}{tag}", logdir, parallel)
        ex = list(extra or []) + (["--parallel", str(parallel)] if parallel > 1 else [])
        return make_agent(args, mk, paths[mk], f"agent-{mk}{tag}", logdir, ex)

    results = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "git": git_rev(),
        "machine": machine_info(),
        "versions": {"llama_server": cmd_version([args.llama_server, "--version"]),
                     "ours": cmd_version([args.agent, "--version"]) if args.ours_kind == "agent" else "llama-server"},
        "config": {"threads": args.threads, "rounds": args.rounds, "reps": args.reps,
                   "decode_tokens": args.decode_tokens, "conc_clients": args.conc_clients,
                   "conc_seconds": args.conc_seconds, "conc_parallel": args.conc_parallel,
                   "prefix_n": args.prefix_n, "foreign_max_cores": FOREIGN_MAX,
                   "max_extra_rounds": args.max_extra_rounds, "ours_kind": args.ours_kind, "ours_label": ours_label},
        "engine_builds": {
            "theirs": cmake_cache(Path(args.llama_server).resolve().parent.parent / "CMakeCache.txt"),
            "ours": cmake_cache(agent_cmake_cache(args.agent)) if args.ours_kind == "agent" else {},
        },
        "targets": TARGETS,
        "models": {},
        "notes": [],
    }

    q0 = wait_quiet(args.quiet_wait, "start")
    results["quiet_at_start"] = q0
    if not q0["quiet"]:
        results["notes"].append(f"The machine was not quiet at start (others used {fmt(q0['foreign_cores'], 2)} cores "
                                f"after waiting {q0['waited_s']} s); disturbed rounds are retried, see per-round data.")

    for mk in [m.strip() for m in args.models.split(",") if m.strip()]:
        name = MODELS[mk]["name"]
        log(f"=== {MODELS[mk]['label']} ({paths[mk]})")
        m = results["models"].setdefault(mk, {"load_s": {}, "rss_peak_mb": {}})
        a, b = theirs(mk).start(), ours(mk).start()
        results["config"]["llama_server_cmd"] = pretty_argv(a.argv)
        results["config"]["ours_cmd"] = pretty_argv(b.argv)
        m["load_s"] = {"theirs": a.load_s, "ours": b.load_s}
        # Warm-up (first request pays page faults / graph allocation in both).
        for s in (a, b):
            r = chat(s.port, stream_body(name, "Warm-up.", "Hello!", 8, True))
            if not r["ok"]:
                log(f"  warm-up on {s.label} failed: {r['error']}")
                results["notes"].append(f"{mk}: warm-up on {s.label} failed: {r['error']}")

        if "quality" not in skip:
            log("quality: known-answer prompts + repetition detector")
            m["quality"] = {"theirs": run_quality(a, name), "ours": run_quality(b, name)}
            for side in ("theirs", "ours"):
                q = m["quality"][side]
                log(f"  {side}: {q['known_answer_passed']}/{q['known_answer_total']} right, max repetition "
                    f"{fmt(q['repetition_max'], 2)}, flagged {q['repetition_flagged']}/{q['repetition_total']}")
        if "speed" not in skip:
            wait_quiet(QUIET_STEP, "speed")
            log(f"speed: {args.rounds} interleaved rounds x {args.reps} reps (prefill ~500 tok, decode {args.decode_tokens} tok)")
            m["speed"] = sp = run_speed(a, b, name, args.rounds, args.reps, args.decode_tokens, args.max_extra_rounds)
            R = sp["ratios"]
            log(f"  ratios ours/theirs (median of {sp['ratios_from']}, {sp['rounds_clean']}/{sp['rounds_total']} clean): "
                f"decode {fmt(R['decode_tps'] and R['decode_tps']['median'], 3)}, "
                f"prefill {fmt(R['prefill_tps'] and R['prefill_tps']['median'], 3)}, TTFT {fmt(R['ttft_ms'] and R['ttft_ms']['median'], 3)}")
            if sp["rounds_clean"] < 2:
                results["notes"].append(f"{mk}: only {sp['rounds_clean']} of {sp['rounds_total']} speed rounds ran on a quiet "
                                        "machine; ratios use all rounds and are unreliable.")
            for side, s in (("theirs", a), ("ours", b)):
                errs = sp[side]["errors"]
                if errs:
                    results["notes"].append(f"{mk}: {len(errs)} failed speed requests on {s.label}, e.g. {errs[0]}")
        m["rss_peak_mb"] = {"theirs": a.rss_peak_mb(), "ours": b.rss_peak_mb()}
        if "concurrency" not in skip:
            if args.conc_parallel > 1:
                a.stop(); b.stop()
                a2, b2 = theirs(mk, "-np", args.conc_parallel), ours(mk, "-np", parallel=args.conc_parallel)
            else:
                a2, b2 = a, b
            m["concurrency"] = {}
            for side, s in (("theirs", a2), ("ours", b2)):
                if s.proc is None:
                    s.start()
                wait_quiet(QUIET_STEP, "concurrency")
                log(f"concurrency: {args.conc_clients} clients x {args.conc_seconds:.0f} s on {s.label}")
                meter = CpuMeter().start()
                m["concurrency"][side] = c = run_concurrency(s, name, args.conc_clients, args.conc_seconds, 16)
                c.update(meter.stop())
                log(f"  served {c['served']}, errors {c['errors']}, TTFT p50 {fmt(c['ttft_p50_ms'])} ms / "
                    f"p99 {fmt(c['ttft_p99_ms'])} ms (others used {fmt(c['foreign_cores'], 2)} cores)")
                if c["errors"]:
                    results["notes"].append(f"{mk}: concurrency errors on {s.label}: {c['error_samples']}")
                if s is not a and s is not b:
                    s.stop()
        a.stop()
        b.stop()

        if "prefix" not in skip:
            log(f"prefix reuse: ~1k-token system prompt, {args.prefix_n} requests, cache on vs off")
            m["prefix"] = {}
            for side in ("theirs", "ours"):
                if side == "theirs" or args.ours_kind == "llama-server":
                    mkfn = theirs if side == "theirs" else ours
                    on, off = mkfn(mk, "-cache-on").start(), mkfn(mk, "-cache-off").start()
                    on_x, off_x = {"cache_prompt": True}, {"cache_prompt": False}
                else:
                    on, off = ours(mk, "-prefix-on").start(), ours(mk, "-prefix-off", extra=["--prefix-cache=false"]).start()
                    on_x, off_x = {}, {}
                    results["config"]["ours_prefix_off_cmd"] = pretty_argv(off.argv)
                wait_quiet(QUIET_STEP, "prefix")
                meter = CpuMeter().start()
                m["prefix"][side] = p = run_prefix(on, off, name, args.prefix_n, on_x, off_x)
                p.update(meter.stop())
                on.stop()
                off.stop()
                log(f"  {side}: on {fmt(p['ttft_on_ms'])} ms / off {fmt(p['ttft_off_ms'])} ms "
                    f"(-{fmt(100 * (p['reduction'] or 0))} %), prompt {p['prompt_tokens']} tok, "
                    f"evaluated with cache on {p['prompt_n_on']} (others used {fmt(p['foreign_cores'], 2)} cores)")
                if p["errors"]:
                    results["notes"].append(f"{mk}: prefix-test errors ({side}): {p['errors'][:2]}")

    results["runtime_s"] = time.monotonic() - t_begin
    plain, md_table = render(results)
    print()
    print(plain)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    (out / "README.md").write_text(markdown_report(results, md_table) + "\n")
    log(f"wrote {out / 'results.json'} and {out / 'README.md'} ({fmt(results['runtime_s'] / 60, 1)} min)")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGHUP, lambda *_: sys.exit(129))
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        stop_all()
