"""docs/bench/gateway.md and its plots from the result gateway_bench.py collects (also alone:
`hack/bench/gateway_bench.py --render docs/bench/gateway.json`). The notes that explain a result are
chosen by the numbers, so a rerun after a fix does not keep an outdated explanation. P5 is here, P6 in
gateway_report_p6.py."""

from __future__ import annotations

from pathlib import Path

P5_PNG = "gateway-p5.png"
P5_PINNED_PNG = "gateway-p5-pinned.png"


def f(x, nd: int = 2) -> str:
    return "–" if x is None else f"{x:.{nd}f}"


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


# === plots (hack/bench/plots.py) ===

# gateway_p5.QUANTILES: the fractions `ttft_quantiles_ms` / `total_quantiles_ms` hold values for.
P5_QUANTILES = [i / 200 for i in range(201)] + [0.999]
P5_TARGETS_MS = {"p50": 0.5, "p99": 2.0}  # issue 10: the gateway adds at most this much


def plot_p5(p5: dict, png: Path) -> None:
    import plots

    concs = [str(c) for c in p5["concurrency"]]
    paths = ("direct", "gateway", "nginx")
    by = p5["by_concurrency"]
    where = ("the proxy alone on a core" if p5.get("layout") == "pinned" else "all processes on all cores")
    fig, ax = plots.figure(2, 3, width=15.5, height=8.6,
                           title=f"P5: the gateway's proxy overhead next to a direct connection and nginx "
                                 f"(1 board, rkllm-sim × {p5['speedup']}, {p5['rounds']} rounds pooled; {where})")
    for a, c in zip(ax[:3], concs):
        series = {}
        for t in paths:
            vals = by[c][t].get("ttft_quantiles_ms")
            if vals and len(vals) == len(P5_QUANTILES):
                series[t] = (P5_QUANTILES, vals)
        if series:
            plots.quantile_cdf(a, series, unit="ms", log=True, xlabel="TTFT, ms (log scale)",
                               title=f"TTFT distribution, {c} client{'s' if c != '1' else ''}")
        else:
            plots.ladder(a, ["TTFT"], {t: [by[c][t]["ttft_ms"]] for t in paths}, unit="TTFT ms",
                         title=f"TTFT, {c} client{'s' if c != '1' else ''}")
    groups = [f"{c} client{'s' if c != '1' else ''}" for c in concs]
    added = {t: [{k: (by[c][t].get("added_ms") or {}).get(f"ttft_{k}") for k in ("p50", "p99")} for c in concs]
             for t in ("gateway", "nginx")}
    positive = all(v is not None and v > 0 for per in added.values() for d in per for v in d.values())
    plots.ladder(ax[3], groups, added, unit="added TTFT, ms", log=positive,
                 title="TTFT added to the direct path (pooled percentiles)")
    for k, y in P5_TARGETS_MS.items():
        plots.target(ax[3], y, f"target: gateway adds ≤ {y:g} ms at {k}")
    ax[3].legend()
    plots.grouped_bars(ax[4], groups, {t: [by[c][t]["rps"] for c in concs] for t in paths},
                       ylabel="requests / s (median of rounds)",
                       title=f"Throughput, closed loop (max: gateway {p5['max_rps']['gateway']:.0f}, "
                             f"nginx {p5['max_rps']['nginx']:.0f})")
    cpu = {"gateway": [by[c]["gateway"]["cpu_us_per_request"].get("operator") for c in concs],
           "nginx": [by[c]["nginx"]["cpu_us_per_request"].get("nginx") for c in concs]}
    g, n = cpu["gateway"][-1], cpu["nginx"][-1]
    plots.grouped_bars(ax[5], groups, cpu, ylabel="proxy CPU, µs per request",
                       title=f"The proxy's own CPU (gateway / nginx at {concs[-1]} clients: "
                             f"{g / n:.1f}×)" if g and n else "The proxy's own CPU")
    plots.save(fig, png)


# === report ===


def p5_rows(p5: dict, judged: bool = True) -> str:
    """P5's table, its paired-round ranges and the targets' verdicts, for one layout (`judged`: the
    layout the targets are checked in; otherwise the verdicts are shown for information)."""
    concs = [str(c) for c in p5["concurrency"]]
    rows = []
    for c in concs:
        for t in ("direct", "gateway", "nginx"):
            s = p5["by_concurrency"][c][t]
            a = s.get("added_ms")
            cpu = s["cpu_us_per_request"]
            proxy_cpu = {"gateway": cpu.get("operator"), "nginx": cpu.get("nginx")}.get(t)
            added = "" if not a else (f"{f(a['ttft_p50'])} / {f(a['ttft_p99'])} | {f(a['total_p50'])} / "
                                      f"{f(a['total_p99'])}")
            rows.append(f"| {c} | {t} | {s['rps']:.0f} | {f(s['ttft_ms']['p50'])} / {f(s['ttft_ms']['p99'])} | "
                        f"{f(s['total_ms']['p50'])} / {f(s['total_ms']['p99'])} | {added or '– | –'} | "
                        f"{f(proxy_cpu, 0) if proxy_cpu is not None else '–'} | {f(cpu.get('agent'), 0)} | "
                        f"{s['requests']} ({s['errors']} errors) |")
    v = p5["verdict"]
    gw = [p5["by_concurrency"][c]["gateway"]["added_ms"] for c in concs]
    ng = [p5["by_concurrency"][c]["nginx"]["added_ms"] for c in concs]
    worst = lambda rows, k: max(r[k] for r in rows)  # noqa: E731
    mr = p5["max_rps"]
    head = "target (issue 10)" if judged else "target (issue 10), for information in this layout"
    say = verdict if judged else (lambda ok: "met" if ok else "not met")
    return f"""| clients | path | req/s | TTFT ms p50 / p99 | total ms p50 / p99 | added TTFT ms p50 / p99 | added total ms p50 / p99 | proxy CPU µs/req | agent CPU µs/req | requests |
|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

"Added" = the path's percentile minus the direct path's, from all rounds pooled. Per round, the
gateway's added TTFT p50 ranged {', '.join(f"{f(g['ttft_p50_round_range'][0])}…{f(g['ttft_p50_round_range'][1])}" for g in gw)} ms and
nginx's {', '.join(f"{f(n['ttft_p50_round_range'][0])}…{f(n['ttft_p50_round_range'][1])}" for n in ng)} ms (at {', '.join(concs)} clients).
Maximum throughput (the best concurrency's median): direct {mr['direct']:.0f}, gateway {mr['gateway']:.0f},
nginx {mr['nginx']:.0f} requests/s.

| {head} | measured (worst concurrency) | |
|---|---|---|
| gateway adds ≤ 0.5 ms at p50 | TTFT {f(worst(gw, 'ttft_p50'))} ms, total {f(worst(gw, 'total_p50'))} ms | {say(v['gateway_p50_ok'])} |
| gateway adds ≤ 2 ms at p99 | TTFT {f(worst(gw, 'ttft_p99'))} ms, total {f(worst(gw, 'total_p99'))} ms | {say(v['gateway_p99_ok'])} |
| gateway at least as fast as nginx | nginx adds TTFT p50 {f(worst(ng, 'ttft_p50'))} ms; max req/s gateway {mr['gateway']:.0f} vs nginx {mr['nginx']:.0f} | {say(v['gateway_vs_nginx_ok'])} |
"""


def p5_pinned(p5: dict) -> str:
    """The pinned layout's subsection: where the targets are judged (absent from reports made
    before it existed)."""
    pinned = p5.get("pinned")
    if not pinned:
        return ""
    cpus = pinned.get("cpus") or {}
    proxy = ", ".join(str(c) for c in cpus.get("proxy", []))
    rest = ", ".join(str(c) for c in cpus.get("rest", []))
    concs = [str(c) for c in pinned["concurrency"]]
    below = [c for c in concs if (pinned["by_concurrency"][c]["gateway"].get("added_ms") or {}).get("ttft_p50", 0) < 0]
    note = ""
    if below:
        rps = ", ".join(f"{pinned['by_concurrency'][c]['gateway']['rps']:.0f} vs {pinned['by_concurrency'][c]['direct']['rps']:.0f}"
                        for c in below)
        note = (f"\nBelow zero at {', '.join(below)} clients: through the gateway the board answered slightly more "
                f"requests per second than straight ({rps}), with the same CPU per request; what the gateway adds "
                "there is below what this setup resolves, not a gain to count on.\n")
    return f"""
### The proxy on a core of its own (the targets are judged here)

The proxy under test (the operator process, or nginx's master and workers) is pinned to CPU {proxy}
and the board and the load generator to CPU {rest}: the proxy no longer takes CPU from the board,
as when the gateway runs on another machine than the boards. What it adds is then its own work on
a request, which is what the targets are about.

{p5_rows(pinned)}{note}
![P5 with the proxy alone on a core: TTFT distributions, added TTFT against the targets, throughput, proxy CPU]({P5_PINNED_PNG})
"""


def littles_law(p5: dict) -> str:
    """Shared layout, most clients: the added latency a proxy's lost board throughput explains."""
    top = str(p5["concurrency"][-1])
    by = p5["by_concurrency"][top]
    d = by["direct"]["rps"]
    parts, measured = [], []
    for t in ("gateway", "nginx"):
        rps, added = by[t]["rps"], (by[t].get("added_ms") or {}).get("ttft_p50")
        if not (rps and d and added is not None):
            return ""
        who = "the gateway" if t == "gateway" else t
        parts.append(f"{top} × (1/{rps:.0f} − 1/{d:.0f}) s = {f(1000 * int(top) * (1 / rps - 1 / d))} ms for {who}")
        measured.append(f(added))
    ng, limit = by["nginx"]["added_ms"]["ttft_p50"], P5_TARGETS_MS["p50"]
    return (f"- **What \"added\" measures here at {top} clients.** The board is never idle and every request "
            "waits behind the others, so TTFT ≈ clients / throughput. A proxy that takes CPU from the board "
            f"lowers its throughput, and every request waits that much longer: {' and '.join(parts)}, against "
            f"{' and '.join(measured)} ms measured. In this layout the added latency at {top} clients is the CPU "
            "the proxy takes from the board more than its own delay"
            + (f"; nginx does not stay within {limit:g} ms here either ({f(ng)} ms)." if ng > limit
               else ".")
            + " The targets are judged with the proxy on a core of its own (above).")


def p5_section(p5: dict) -> str:
    concs = [str(c) for c in p5["concurrency"]]
    mr = p5["max_rps"]
    notes = []
    direct1 = p5["by_concurrency"][concs[0]]["direct"]
    if direct1["total_ms"]["p50"] >= 30 and direct1["ttft_ms"]["p50"] < 10:
        notes.append(
            f"- **The agent shows the same stall at the end of every answer**: direct, the first token comes after "
            f"{f(direct1['ttft_ms']['p50'])} ms but the stream ends after {f(direct1['total_ms']['p50'])} ms "
            "(p50, 1 client), although the simulated generation takes well under a millisecond; its listener "
            "(axum as well) does not set `TCP_NODELAY` either. It hits all three paths alike, so it cancels out of "
            "the added latencies, but it caps one client at ~1 / 44 ms ≈ 23 requests/s and hides sub-millisecond "
            "differences in the totals.")
    top = concs[-1]
    gcpu = p5["by_concurrency"][top]["gateway"]["cpu_us_per_request"].get("operator")
    ncpu = p5["by_concurrency"][top]["nginx"]["cpu_us_per_request"].get("nginx")
    if gcpu and ncpu and ncpu < gcpu <= 2 * ncpu:
        notes.append(
            f"- **CPU per request**: the gateway {gcpu:.0f} µs at {top} clients, nginx {ncpu:.0f} µs "
            f"({gcpu / ncpu:.1f}×). The gateway does more per request than pass bytes on: it reads the body "
            "to find the model, picks a board by its policy, counts metrics per model and board and reads the "
            "answer's token counts. On two shared cores that CPU comes out of the agent's and the client's "
            f"share; here its throughput is {mr['gateway']:.0f} requests/s against nginx's {mr['nginx']:.0f}.")
    if gcpu and ncpu and gcpu > 2 * ncpu:
        notes.append(
            f"- **The gateway also costs more CPU**: {gcpu:.0f} µs per request at {top} clients against nginx's "
            f"{ncpu:.0f} µs ({gcpu / ncpu:.1f}×). On two shared cores that CPU comes out of the agent's and the "
            f"client's share, which is why its throughput at {top} clients is {mr['gateway']:.0f} requests/s "
            f"against nginx's {mr['nginx']:.0f}, and why what it adds grows with the number of clients.")
    lg = max(p5["by_concurrency"][c][t]["cpu_us_per_request"].get("loadgen", 0) for c in concs for t in
             ("direct", "gateway", "nginx"))
    shared = p5.get("layout") == "shared" and p5.get("pinned")
    if shared:
        notes.insert(0, littles_law(p5))
    strategy = (f"routing strategy {p5['strategy']} (the gateway forwards every request at once, as nginx does; "
                "LeastLoad would hold all but one at the gateway until the board's slot frees)"
                if p5.get("strategy") else f"gateway flags `{p5['gateway_args']}` (it never holds a request back)")
    body = f"""{p5_rows(p5, judged=not shared)}
![P5: TTFT distributions per path and concurrency, added TTFT against the targets, throughput, proxy CPU](gateway-p5.png)

{chr(10).join(n for n in notes if n)}
"""
    if shared:
        body = f"""{p5_pinned(p5)}
### All processes on all cores (for information)

The same runs, interleaved round by round with those above: the board, the proxy and the load
generator compete for both CPUs, so a proxy's CPU also slows the board.

{body}"""
    return f"""## P5: proxy overhead
{provenance(p5)}
{body}

Setup: 1 board, rkllm-sim × {p5['speedup']} (`RKLLM_SIM_SPEEDUP`), ModelDeployment nBatch 1, {strategy}, agent defaults (`--parallel 1`, `--max-queue 64`).
Load: `hack/loadgen` (Rust, hyper, one thread), N clients each on one keep-alive connection sending
`{p5['body']['messages'][0]['content']}` streamed with max_tokens {p5['body']['max_tokens']}, back to back; TTFT = the first SSE event
with text, total = the end of the stream. {p5['rounds']} rounds × {1 + bool(p5.get('pinned'))} layout(s) × {len(concs)} concurrencies × 3 paths, each run
{p5['warmup_s']} s warm-up + {p5['duration_s']} s measured; within a round the order of the paths rotates. nginx:
{p5['nginx']}, `worker_processes auto`, upstream `keepalive 256`, `proxy_http_version 1.1`,
`proxy_buffering off`, access log on (the gateway logs each request too). CPU per request from
`/proc/<pid>/stat` around each run, divided by the requests sent (warm-up included): the gateway's is
the whole operator process (its controller is idle here; at 1 client the idle work of every process
weighs on few requests). The load generator used at most {lg:.0f} µs of CPU per request.
"""


def provenance(part: dict) -> str:
    """Where a part's numbers come from (a run with --only leaves the other part's older numbers)."""
    run = part.get("run")
    if not run:
        return ""
    return f"\nMeasured on {run['date']} at `{run['commit']}` by `{run['command']}`.\n"


def markdown(result: dict) -> str:
    from gateway_report_p6 import p6_section

    env = result["environment"]
    parts = []
    if "p5" in result:
        parts.append(p5_section(result["p5"]))
    if "p6" in result:
        parts.append(p6_section(result["p6"]))
    return f"""# Gateway benchmarks (issue 10): proxy overhead (P5) and routing policies (P6)

Generated by `make bench-gateway` on {env['date']} at `{env['commit']}`, {env['minutes']} min in all. Raw
numbers: [gateway.json](gateway.json) (P5 as percentiles per path and concurrency, P6 every request).

```sh
make bench-gateway     # = cargo build --release (agent, operator, loadgen); {result['command']}
```

`hack/bench/gateway_bench.py --help` lists the knobs (`--only p5|p6`, rounds, durations, load levels,
seed); `--render docs/bench/gateway.json` rewrites this page and the plots from the JSON.

**Caveats.** One shared {env['cpus']}-core machine ({env['cpu']}, Linux {env['kernel']}) runs
everything: the API server, etcd, the operator and gateway, the agents, nginx and the load generator
(1-minute load average {env['loadavg_before']:.2f} before, {env.get('loadavg_after', 0):.2f} after). rkllm-sim stands in for
the RK3588 NPU: it sleeps the vendor's prefill and decode times (or 1/1000 of them for P5) and runs
the agent's real RKLLM code path, but it is not a board. Absolute numbers are indicative; what counts is
the comparison inside one run.

{chr(10).join(parts)}"""


def write(result: dict, out: Path) -> None:
    import plots
    from gateway_report_p6 import P6_PNG, plot_p6

    notes = []
    why = plots.missing()
    if why:
        notes.append(f"no plots: {why}")
    else:
        if "p5" in result:
            plot_p5(result["p5"], out / P5_PNG)
            if result["p5"].get("pinned"):
                plot_p5(result["p5"]["pinned"], out / P5_PINNED_PNG)
        if "p6" in result:
            plot_p6(result["p6"], out / P6_PNG)
    (out / "gateway.md").write_text(markdown(result) + "".join(f"\n_{n}_\n" for n in notes))
