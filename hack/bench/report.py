"""`make bench` report: machine / build facts, the plain results table for stdout and the
Markdown report (docs/bench/README.md)."""
from __future__ import annotations

import os
import platform
import re
import subprocess
from pathlib import Path

from common import MODELS, fmt
from quality import QUALITY, REPETITION_FLAG, REPETITION_N, REPETITION_PROMPTS

# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------

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


def markdown_report(results: dict, md_table: str, no_plot: str | None = None) -> str:
    c, mi = results["config"], results["machine"]
    lines = [
        "# `make bench`: rockchip-llama-agent vs llama.cpp `llama-server`",
        "",
        f"Generated by `make bench` (`hack/bench/run.sh` → `hack/bench/bench.py`) on {results['date']}, "
        f"git `{results['git']}`, total runtime {fmt(results['runtime_s'] / 60, 1)} min. "
        "Raw numbers: [`results.json`](results.json).",
        "",
        "The NPU engine (RKLLM, measured against rkllm-sim: agent overhead, concurrency, n_batch, prompt "
        "cache) is in [`npu.md`](npu.md) (`make bench-npu`, also run by `make bench`).",
        "",
        "The cluster benchmarks, also run by `make bench`: model distribution between boards over shaped\n"
        "100 Mbit/s links (P7) in [`distribution.md`](distribution.md) (`make bench-distribution`), the\n"
        "controller at 300 Boards × 1000 ModelDeployments (P8) in [`controller-scale.md`](controller-scale.md)\n"
        "(`make bench-controller`), and the gateway — its proxy overhead next to a direct connection and nginx\n"
        "(P5), and its routing policies compared (P6) — in [`gateway.md`](gateway.md) (`make bench-gateway`).",
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
        (f"_No plot: {no_plot}._" if no_plot else f"![speed ratios per round, TTFT per round, TTFT under "
         f"concurrency, prefix reuse]({PNG})"),
        "",
        "The plot is drawn from `results.json` by `hack/bench/report.py` when the benchmark ends; redraw it "
        "and this page without measuring: `$(hack/pyenv.sh) hack/bench/bench.py --render docs/bench/results.json`.",
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
        f"≈ {fmt(results['runtime_s'] / 60, 0)} min warm; then `make bench` runs `make bench-npu`, ≈ 3 min more). "
        "Logs of every server: `~/.cache/rockchip-llama/bench/logs/`.",
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
# Plot (drawn with hack/bench/plots.py; needs matplotlib, so only the venv's python draws it)
# ----------------------------------------------------------------------------------------------

PNG = "agent-vs-llama-server.png"


def plot(results: dict, png: Path) -> str | None:
    """Writes the report's PNG; returns why not (no matplotlib) or None."""
    import plots
    why = plots.missing()
    if why:
        return why
    ours_name, theirs_name = results["config"]["ours_label"], "llama-server"
    models = list(results["models"])
    names = [MODELS[mk]["name"] for mk in models]
    t = results.get("targets") or {}
    fig, ax = plots.figure(2, 2, width=13, height=9.2,
                           title=f"make bench: {ours_name} vs llama-server ({results['date']}, git {results['git']})")

    # Ratios per round: the report's claim.
    keys = (("decode_tps", "decode tok/s", "≥", t.get("decode", 0.97)),
            ("prefill_tps", "prefill tok/s", "≥", t.get("prefill", 0.97)),
            ("ttft_ms", "TTFT, short chat", "≤", t.get("ttft", 1.05)))
    metrics, targets = {}, {}
    for key, label, op, y in keys:
        metrics[label] = {}
        targets[label] = (op, y)
        for mk, name in zip(models, names):
            sp = results["models"][mk].get("speed") or {}
            rounds = [r for r in sp.get("rounds", []) if r.get("clean", True) or sp.get("ratios_from") != "clean rounds"]
            metrics[label][name] = [r["ratios"].get(key) for r in rounds if r.get("ratios")]
    plots.ratio_strip(ax[0], metrics, targets, what="one round", ylabel="ratio ours / theirs",
                      title="Speed ratios per interleaved round (the claim: median vs target)")

    # TTFT per round, both servers: how much the rounds spread.
    per = {theirs_name: [], ours_name: []}
    for mk in models:
        sp = results["models"][mk].get("speed") or {}
        for side, label in (("theirs", theirs_name), ("ours", ours_name)):
            per[label].append([r[side].get("ttft_ms") for r in sp.get("rounds", []) if r.get(side)])
    plots.strip(ax[1], names, per, "TTFT ms", what="one round (mean of its requests)",
                title="TTFT, short chat request, every round")

    # Concurrency: the whole TTFT distribution when the run kept the samples, else its percentiles.
    conc = [(mk, name, results["models"][mk].get("concurrency")) for mk, name in zip(models, names)]
    conc = [c for c in conc if c[2]]
    if conc and all(c[2][s].get("ttft_ms") for c in conc for s in ("theirs", "ours")):
        series = {f"{side_label}, {name}": c[side]["ttft_ms"] for _, name, c in conc
                  for side, side_label in (("theirs", theirs_name), ("ours", ours_name))}
        plots.cdf(ax[2], series, unit="TTFT ms", title=_conc_title(conc),
                  styles={k: ("-" if k.endswith(names[0]) else "--") for k in series})
    elif conc:
        groups = [f"{name}\n{fmt(c['theirs']['req_per_s'], 2)} vs {fmt(c['ours']['req_per_s'], 2)} req/s"
                  for _, name, c in conc]
        plots.ladder(ax[2], groups, {
            theirs_name: [{"p50": c["theirs"]["ttft_p50_ms"], "p99": c["theirs"]["ttft_p99_ms"]} for _, _, c in conc],
            ours_name: [{"p50": c["ours"]["ttft_p50_ms"], "p99": c["ours"]["ttft_p99_ms"]} for _, _, c in conc]},
            unit="TTFT ms", title=_conc_title(conc) + "\n(this run kept p50/p99 only; later runs keep every request)")
    else:
        ax[2].set_visible(False)

    # Prefix reuse: every request's TTFT with the cache on and off.
    groups, on, off = [], [], []
    for mk, name in zip(models, names):
        p = results["models"][mk].get("prefix")
        if not p:
            continue
        for side, label in (("theirs", theirs_name), ("ours", ours_name)):
            red = p[side].get("reduction")
            groups.append(f"{name.split('-')[0]}\n{label}\n−{fmt(100 * red if red is not None else None)} %")
            on.append(p[side]["on"])
            off.append(p[side]["off"])
    if groups:
        plots.strip(ax[3], groups, {"cache on": on, "cache off": off}, "TTFT ms", log=True,
                    title=f"Prefix reuse, ~1.2k-token system prompt, cache on vs off\n(target: ours ≥ "
                          f"{100 * t.get('prefix_reduction', 0.8):.0f} % lower TTFT)")
        for lab in ax[3].get_xticklabels():
            lab.set_fontsize(7)
    else:
        ax[3].set_visible(False)
    plots.save(fig, png)
    return None


def _conc_title(conc) -> str:
    c = conc[0][2]["theirs"]
    return f"{c['clients']} clients × {c['seconds']:g} s, max_tokens {c['max_tokens']}: TTFT"


def write_report(results: dict, out: Path) -> str:
    """README.md and its PNG into `out` (results.json is the caller's); returns the plain table."""
    plain, md_table = render(results)
    why = plot(results, out / PNG)
    (out / "README.md").write_text(markdown_report(results, md_table, why) + "\n")
    return plain
