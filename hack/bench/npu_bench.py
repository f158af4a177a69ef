#!/usr/bin/env python3
"""`make bench-npu`: the agent's RKLLM (NPU) engine against rkllm-sim at vendor speed.

Stdlib only (Python 3.11), plus matplotlib for the plot (hack/pyenv.sh's venv). Normally started by
hack/bench/npu_run.sh, which builds rkllm-sim and the agent, then runs:

    python hack/bench/npu_bench.py --agent BIN --lib librkllmrt.so(1.3) --model Qwen3-0.6B-sim_w8a8_rk3588.rkllm
    python hack/bench/npu_bench.py --render docs/bench/npu.json      (npu.md and npu.png again)

rkllm-sim replays the vendor's published RK3588 timings (TTFT 199.09 ms for 128 prompt tokens,
32.91 tok/s for Qwen3-0.6B w8a8) by sleeping against absolute deadlines on x86, so these numbers
say nothing about real NPU speed; they measure the agent's overhead and its scheduling and
caching policies. Tests:
  (a) overhead: the same prompt and max_new_tokens through the agent (HTTP client, streaming)
      and through the same librkllmrt.so driven directly from Python ctypes (npu_ctypes.py),
      interleaved rounds; decode tok/s ratio and added TTFT.
  (b) 8 concurrent clients, one model, n_batch 1: all served, TTFT p50/p99, total time.
  (c) n_batch 4 vs n_batch 1 under the same 8 clients: aggregate tok/s (ABBA order).
  (d) prompt cache on vs off: alternating ~1k-token system prompts A, B, A, B, ...; TTFT medians.
  (e) concurrency sweep: 1, 2, 4, 8 clients against the two agents of (c): aggregate tok/s, TTFT
      and per-request decode tok/s by concurrency, next to what the sim's cost model predicts.
"""
from __future__ import annotations

# Modules (this directory is on sys.path when the script runs):
#   npu_ctypes.py   ctypes binding of the 1.3.0 ABI (sizes asserted)
#   npu_measure.py  the agent process, prompt scouting, the tests
#   npu_report.py   stdout summary, docs/bench/npu.md and npu.png (plots.py)
import argparse
import datetime as dt
import json
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path

from common import CACHE, fmt, log
from measure import chat, stream_body
from npu_ctypes import Rkllm
from npu_measure import MODEL, NpuAgent, run_clients, run_overhead, run_prompt_cache, scout_prompts
from npu_report import PNG, TARGETS, markdown, plot, summary_lines
from report import cmd_version, git_rev, machine_info
from servers import CpuMeter, stop_all, wait_quiet

# Variables that would change the simulated timing away from the vendor's table.
SIM_TIMING_ENV = ("RKLLM_SIM_PREFILL_MS_PER_TOKEN", "RKLLM_SIM_DECODE_TOK_S", "RKLLM_SIM_PLATFORM",
                  "RKLLM_SIM_TRACE", "RKLLM_LOG_LEVEL")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agent", help="rockchip-llama-agent binary")
    ap.add_argument("--lib", help="rkllm-sim librkllmrt.so built for ABI 1.3")
    ap.add_argument("--model", help="Qwen3-0.6B-sim_w8a8_rk3588.rkllm")
    ap.add_argument("--rounds", type=int, default=20, help="(a) interleaved rounds")
    ap.add_argument("--max-extra-rounds", type=int, default=8,
                    help="(a) extra rounds allowed to replace rounds disturbed by other processes")
    ap.add_argument("--tokens", type=int, default=40, help="max_new_tokens / max_tokens of every request")
    ap.add_argument("--clients", type=int, default=8, help="(b)/(c) concurrent clients")
    ap.add_argument("--per-client", type=int, default=3, help="(b)/(c) requests per client, back to back")
    ap.add_argument("--batch", type=int, default=4, help="(c) n_batch compared with 1")
    ap.add_argument("--batch-factor", default="0.12", help="RKLLM_SIM_BATCH_FACTOR (the sim's default)")
    ap.add_argument("--cache-n", type=int, default=8, help="(d) measured requests per server")
    ap.add_argument("--quiet-wait", type=float, default=120, help="max seconds to wait for a quiet CPU at start")
    ap.add_argument("--sweep", default="1,2,4,8", help="(e) client counts of the concurrency sweep")
    ap.add_argument("--sweep-requests", type=int, default=8,
                    help="(e) requests per level: each client sends max(2, this / clients) back to back")
    ap.add_argument("--skip", default="", help="comma list of: overhead,clients,sweep,cache")
    ap.add_argument("--out", default="docs/bench")
    ap.add_argument("--render", metavar="JSON", type=Path,
                    help="only rewrite npu.md and npu.png next to this npu.json (no measuring)")
    args = ap.parse_args()
    if args.render:
        write(json.loads(args.render.read_text()), args.render.parent)
        log(f"wrote {args.render.parent / 'npu.md'} and {PNG} from {args.render}")
        return 0
    for need in ("agent", "lib", "model"):
        if not getattr(args, need):
            ap.error(f"--{need} is required (unless --render)")
    skip = set(filter(None, args.skip.split(",")))
    t_begin = time.monotonic()

    for k in SIM_TIMING_ENV:
        os.environ.pop(k, None)
    sim_env = {"RKLLM_SIM_SPEEDUP": "1", "RKLLM_SIM_BATCH_FACTOR": args.batch_factor}
    os.environ.update(sim_env)  # the direct ctypes handle reads them at rkllm_init too

    logdir = CACHE / "bench" / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    work = CACHE / "bench" / "npu"
    shutil.rmtree(work, ignore_errors=True)
    (work / "models").mkdir(parents=True)
    (work / "models" / Path(args.model).name).symlink_to(Path(args.model).resolve())
    for n in sorted({1, args.batch}):
        (work / f"n_batch{n}.yaml").write_text(f"models: {{{MODEL}: {{n_batch: {n}}}}}\n")

    def pretty_argv(argv: list[str]) -> str:
        """The command line with the run's models directory as DIR, the cache as ~ and the port as
        PORT (a free one per start, as in `make bench`)."""
        s = " ".join([Path(argv[0]).name] + argv[1:]).replace(str(work / "models"), "DIR")
        s = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", s)
        return s.replace(str(CACHE), "~/.cache/rockchip-llama")

    def agent(label: str, n_batch: int = 1, extra: list[str] | None = None) -> NpuAgent:
        # `agent serve --listen 127.0.0.1:PORT` + these (NpuAgent, through the shared launcher)
        serve_args = ["--models-dir", str(work / "models"),
                      "--engine", "rkllm", "--rkllm-lib", args.lib, "--default-model", MODEL,
                      "--config", str(work / f"n_batch{n_batch}.yaml")] + (extra or [])
        return NpuAgent(label, args.agent, serve_args, sim_env, logdir, logdir / f"{label}.trace")

    results = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "git": git_rev(),
        "machine": machine_info(),
        "versions": {"agent": cmd_version([args.agent, "--version"]),
                     "runtime": _embedded_version(args.lib)},
        "sim": {"lib": args.lib, "model": Path(args.model).name, "env": sim_env,
                "vendor": {"ttft_ms_128": 199.09, "decode_tok_s": 32.91}},
        "config": {k: getattr(args, k) for k in ("rounds", "max_extra_rounds", "tokens", "clients", "per_client", "batch",
                                                 "batch_factor", "cache_n", "sweep", "sweep_requests")},
        "commands": {},
        "targets": TARGETS,
        "notes": [],
    }
    q0 = wait_quiet(args.quiet_wait, "start")
    results["quiet_at_start"] = q0
    if not q0["quiet"]:
        results["notes"].append(f"The machine was not quiet at start (others used {fmt(q0['foreign_cores'], 2)} "
                                f"cores after waiting {q0['waited_s']} s).")

    # (e): the same number of requests per level (as many TTFT samples; each n_batch 1 level takes
    # ~11 s), but at least 2 per client, so every level also shows the steady state in which a
    # client's next request queues behind the others' (8 clients: 16 requests, ~23 s).
    sweep = {c: max(2, -(-args.sweep_requests // c)) for c in map(int, filter(None, args.sweep.split(",")))}
    need = max([args.rounds, args.clients * args.per_client] + [c * k for c, k in sweep.items()])
    t0 = time.monotonic()
    prompts, scout = scout_prompts(args.lib, args.model, need, args.tokens)
    scout["seconds"] = round(time.monotonic() - t0, 2)
    results["prompts"] = {"scout": scout, "example": prompts[0]}
    log(f"prompts: {len(prompts)} with >= {args.tokens} single-byte answer tokens among {scout['tried']} "
        f"candidates ({scout['seconds']} s at 10000x), prompt tokens {scout['prompt_tokens']}")

    a1 = None
    if not ({"overhead", "clients", "sweep"} <= skip):
        a1 = agent("npu-agent-n_batch1").start()
        results["commands"]["agent"] = pretty_argv(a1.argv)
        results["commands"]["config_n_batch1"] = (work / "n_batch1.yaml").read_text()
        warm = chat(a1.port, stream_body(MODEL, None, prompts[-1], 8, False), timeout=60)
        if not warm["ok"]:
            raise RuntimeError(f"warm-up request failed: {warm['error']}")

    if "overhead" not in skip:
        log(f"(a) overhead: {args.rounds} interleaved rounds, direct ctypes vs agent, {args.tokens} tokens")
        direct = Rkllm(args.lib, args.model)
        try:
            direct.clear_kv_cache(True)
            direct.run(prompts[-1], 8)  # warm-up, as the agent's
            meter = CpuMeter().start()
            results["overhead"] = o = run_overhead(direct, a1, prompts, args.rounds, args.tokens,
                                                   args.max_extra_rounds)
            o.update(meter.stop())
        finally:
            direct.close()
        log(f"  decode ratio agent/direct {fmt(o['decode_ratio'] and o['decode_ratio']['median'], 4)}, "
            f"TTFT added {fmt(o['ttft_added_ms'] and o['ttft_added_ms']['median'], 2)} ms "
            f"(direct TTFT {fmt(o['direct_ttft_ms'] and o['direct_ttft_ms']['median'], 1)} ms)")
        if o["medians_from"] != "clean rounds":
            results["notes"].append(f"(a): only {o['rounds_clean']} of {o['rounds']} rounds ran on a quiet machine; "
                                    "the medians use all rounds.")
        if o["rounds_ok"] < o["rounds"]:
            results["notes"].append(f"(a): {o['rounds'] - o['rounds_ok']} of {o['rounds']} rounds failed or "
                                    "had unequal token counts; they are excluded.")

    ab = None
    if not ({"clients", "sweep"} <= skip):
        ab = agent(f"npu-agent-n_batch{args.batch}", args.batch).start()
        results["commands"][f"agent_n_batch{args.batch}"] = pretty_argv(ab.argv)
        results["commands"][f"config_n_batch{args.batch}"] = (work / f"n_batch{args.batch}.yaml").read_text()
        chat(ab.port, stream_body(MODEL, None, prompts[-1], 8, False), timeout=60)
    def load(n_batch: int, srv: NpuAgent, clients: int, per_client: int) -> dict:
        """(b), (c) and (e)'s unit: `clients` back-to-back streams against one agent, labelled."""
        meter = CpuMeter().start()
        c = run_clients(srv, prompts, clients, per_client, args.tokens)
        c.update(meter.stop())
        c["n_batch"] = n_batch
        return c

    if "clients" not in skip:
        passes = []
        for n, srv in ((1, a1), (args.batch, ab), (args.batch, ab), (1, a1)):  # ABBA
            log(f"(b/c) {args.clients} clients x {args.per_client} requests, n_batch {n}")
            c = load(n, srv, args.clients, args.per_client)
            passes.append(c)
            log(f"  served {c['served']}/{c['requests']}, total {fmt(c['total_s'], 2)} s, "
                f"{fmt(c['agg_tps'], 1)} tok/s, TTFT p50 {fmt(c['ttft_p50_ms'])} / p99 {fmt(c['ttft_p99_ms'])} ms, "
                f"runtime runs by active slots {c['runs_by_active_slots']}")
        results["clients"] = {"passes": passes, "batch": args.batch}
    if "sweep" not in skip:
        # Each level against n_batch 1 then n_batch B, the order alternating between levels.
        points = []
        for i, (n_clients, per_client) in enumerate(sweep.items()):
            servers = ((1, a1), (args.batch, ab))
            for n, srv in (servers if i % 2 == 0 else servers[::-1]):
                c = load(n, srv, n_clients, per_client)
                points.append(c)
                log(f"(e) {n_clients} clients x {per_client}, n_batch {n}: {fmt(c['agg_tps'], 1)} tok/s, "
                    f"TTFT p50 {fmt(c['ttft_p50_ms'])} / p99 {fmt(c['ttft_p99_ms'])} ms, decode "
                    f"{fmt(c['decode_tps_p50'], 2)} tok/s per request, served {c['served']}/{c['requests']}")
        results["sweep"] = {"points": points, "batch": args.batch}
    if ab is not None:
        ab.stop()
    if a1 is not None:
        a1.stop()

    if "cache" not in skip:
        log(f"(d) prompt cache on vs off: ~1k-token system prompts A,B,A,B..., {args.cache_n} requests each")
        pc_dir = work / "prompt-cache"
        on = agent("npu-agent-prompt-cache-on", extra=["--prompt-cache", "true",
                                                       "--prompt-cache-dir", str(pc_dir)]).start()
        off = agent("npu-agent-prompt-cache-off", extra=["--prompt-cache", "false"]).start()
        results["commands"]["cache_on"] = pretty_argv(on.argv)
        results["commands"]["cache_off"] = pretty_argv(off.argv)
        meter = CpuMeter().start()
        results["prompt_cache"] = p = run_prompt_cache(on, off, args.cache_n)
        p.update(meter.stop())
        p["files"] = sorted(x.name for x in pc_dir.glob("*.prompt-cache"))
        on.stop()
        off.stop()
        log(f"  TTFT on {fmt(p['ttft_on_ms'])} / off {fmt(p['ttft_off_ms'])} ms, ratio {fmt(p['ratio_on_off'], 3)}; "
            f"reused tokens on {p['reused_on']}, off {p['reused_off']}")
        if p["errors"]:
            results["notes"].append(f"(d): request errors: {p['errors'][:2]}")

    results["runtime_s"] = time.monotonic() - t_begin
    print()
    print("\n".join(summary_lines(results)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "npu.json").write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    write(results, out)
    log(f"wrote {out / 'npu.json'}, {out / 'npu.md'} and its plot ({fmt(results['runtime_s'] / 60, 1)} min)")
    return 0


def write(results: dict, out: Path) -> None:
    """npu.md and npu.png from a result (a fresh one or a committed npu.json)."""
    why = plot(results, out / PNG)
    if why:
        log(f"no plot: {why}")
    (out / "npu.md").write_text(markdown(results, why) + "\n")


def _embedded_version(lib: str) -> str:
    """The `rkllm-runtime version: X.Y.Z` literal the library embeds (how the agent detects it)."""
    try:
        data = Path(lib).read_bytes()
    except OSError:
        return ""
    i = data.find(b"rkllm-runtime version: ")
    return data[i:i + 40].split(b"\0")[0].split(b",")[0].decode(errors="replace") if i >= 0 else ""


def _exit_on(code: int):
    """A signal handler that stops the agents and exits at once. Not sys.exit(): while the main
    thread is inside the runtime library (test (a) drives it through ctypes), Python runs the
    handler inside a ctypes callback, which prints and ignores the SystemExit, and the run went on."""
    def handler(*_):
        stop_all()
        os._exit(code)
    return handler


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _exit_on(143))
    signal.signal(signal.SIGHUP, _exit_on(129))
    signal.signal(signal.SIGINT, _exit_on(130))
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        stop_all()
