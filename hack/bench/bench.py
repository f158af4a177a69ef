#!/usr/bin/env python3
"""`make bench`: our agent vs llama.cpp's own llama-server, side by side (issue 2).

Stdlib only (Python 3.11), plus matplotlib for the plot (without it the report says so). Normally
started by hack/bench/run.sh, which fetches the models, builds llama-server and the agent, then runs
in the project venv (hack/pyenv.sh):

    python3 hack/bench/bench.py --llama-server BIN --agent BIN --smollm2 GGUF --gemma GGUF --out docs/bench
    python3 hack/bench/bench.py --render docs/bench/results.json     (README.md and its plot again)

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

# Split by responsibility (all stdlib, imported from this directory, which Python puts on sys.path
# when the script is run as `python3 hack/bench/bench.py`):
#   common.py   cache path, models, targets, log(), fmt()
#   servers.py  llama-server / agent processes, free ports, CPU-contention monitor (wait_quiet)
#   measure.py  SSE chat requests, timing, speed / concurrency / prefix-reuse tests
#   quality.py  known-answer prompts, repetition detector
#   report.py   machine / build facts, stdout table, Markdown report and its plot (plots.py)
import argparse
import datetime as dt
import json
import signal
import sys
import time
from pathlib import Path

from common import CACHE, MODELS, TARGETS, fmt, log
from measure import chat, run_concurrency, run_prefix, run_speed, stream_body
from quality import run_quality
from report import agent_cmake_cache, cmake_cache, cmd_version, git_rev, machine_info, pretty_argv, write_report
from servers import FOREIGN_MAX, QUIET_STEP, CpuMeter, make_agent, make_llama_server, stop_all, wait_quiet

# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--render", metavar="JSON", type=Path,
                    help="only rewrite README.md and its plot next to this results.json (no measuring)")
    ap.add_argument("--llama-server")
    ap.add_argument("--agent", help="rockchip-llama-agent binary (ours)")
    ap.add_argument("--ours-kind", choices=["agent", "llama-server"], default="agent",
                    help="llama-server = run llama-server on both sides (method self-check)")
    ap.add_argument("--smollm2")
    ap.add_argument("--gemma")
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
    if args.render:
        print(write_report(json.loads(args.render.read_text()), args.render.parent))
        log(f"wrote {args.render.parent / 'README.md'} and its plot from {args.render}")
        return 0
    for need in ("llama_server", "smollm2", "gemma"):
        if not getattr(args, need):
            ap.error(f"--{need.replace('_', '-')} is required (unless --render)")
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
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    plain = write_report(results, out)
    print()
    print(plain)
    log(f"wrote {out / 'results.json'}, {out / 'README.md'} and its plot ({fmt(results['runtime_s'] / 60, 1)} min)")
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
