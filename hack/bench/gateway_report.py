"""docs/bench/gateway.md and its plots from the result gateway_bench.py collects (also alone:
`hack/bench/gateway_bench.py --render docs/bench/gateway.json`). The notes that explain a result are
chosen by the numbers, so a rerun after a fix does not keep an outdated explanation."""

from __future__ import annotations

from pathlib import Path

P5_PNG = "gateway-p5.png"
P5_PINNED_PNG = "gateway-p5-pinned.png"
P6_PNG = "gateway-p6.png"


def f(x, nd: int = 2) -> str:
    return "–" if x is None else f"{x:.{nd}f}"


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


# === plots (hack/bench/plots.py) ===

# gateway_p5.QUANTILES: the fractions `ttft_quantiles_ms` / `total_quantiles_ms` hold values for.
P5_QUANTILES = [i / 200 for i in range(201)] + [0.999]
P5_TARGETS_MS = {"p50": 0.5, "p99": 2.0}  # issue 10: the gateway adds at most this much
P6_TARGET_RATIO = 0.5  # issue 10: LeastLoad's p99 TTFT at most half RoundRobin's


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


def plot_p6(p6: dict, png: Path) -> None:
    import plots

    levels = list(p6["levels"])
    fig, ax = plots.figure(3, 2, width=13, height=13,
                           title=f"P6: routing policies, {p6['boards']} boards at vendor speed (rkllm-sim)")
    users = p6["users"]
    readings = [("users", users, f"Part A, {users['load']}× in users ({users['users']} users, "
                                 f"{users['requests']} requests, {users['long']} long)")]
    readings += [(lv, p6["levels"][lv], f"Part A, {lv}× in requests/s ({p6['levels'][lv]['requests']} requests, "
                                        f"{p6['levels'][lv]['long']} long)") for lv in levels[:1]]
    for a, (key, e, name) in zip(ax[:2], readings):
        pols = e["policies"]
        plots.cdf(a, {pol: [r["ttft"] for r in s["records"] if r["ttft"] is not None] for pol, s in pols.items()},
                  unit="s", log=True, xlabel="TTFT, s (log scale; from the send time)")
        for i, (pol, s) in enumerate(pols.items()):
            a.axvline(s["ttft_s"]["p99"], color=plots.color(pol, i), lw=0.8, ls=":")
        ratio = e.get("p99_ratio_ll_rr")
        rr = pols.get("RoundRobin", {}).get("ttft_s", {}).get("p99")
        claim = ""
        if key == "users" and rr:
            plots.target(a, P6_TARGET_RATIO * rr, f"target: LeastLoad p99 ≤ {P6_TARGET_RATIO:g} × RoundRobin's "
                         f"= {P6_TARGET_RATIO * rr:.2f} s", axis="x")
            claim = f" (target ≤ {P6_TARGET_RATIO:g}×)"
        elif key != "users":
            ideal = ideal_fifo_p99(p6, key)
            if ideal is not None:
                a.axvline(ideal, color="grey", lw=1, ls="-.",
                          label=f"one FIFO line over {p6['boards']} boards (simulated): p99 {ideal:.2f} s")
        a.legend(loc="upper left")
        a.set_title(f"{name}: TTFT CDF\np99 LeastLoad / RoundRobin = {f(ratio)}×{claim}; dotted: each policy's p99")
    a = ax[2]
    for i, (pol, s) in enumerate(users["policies"].items()):
        for kind, marker in (("short", "o"), ("long", "^")):
            pts = [(r["at"], r["ttft"]) for r in s["records"] if r["ttft"] is not None and r["kind"] == kind]
            a.scatter([p[0] for p in pts], [p[1] for p in pts], s=14, marker=marker, color=plots.color(pol, i),
                      alpha=0.6, label=f"{pol}, {kind}")
    a.set_xlabel("send time, s")
    a.set_ylabel("TTFT, s")
    a.set_title(f"Part A, {users['load']}× in users: TTFT by send time")
    a.legend(ncol=2)
    conv = p6["conversations"]
    kinds = [("hit_rate", "all requests"), ("hit_rate_first_turn", "first turns"),
             ("hit_rate_later_turns", "later turns")]
    plots.grouped_bars(ax[3], [k for _, k in kinds], {pol: [100 * s[k] for k, _ in kinds] for pol, s in conv.items()},
                       ylabel="prefix-cache hit rate, %", annotate="{:.0f} %",
                       title=f"Part B: hit rate, {p6['conversation_setup']['conversations']} multi-turn conversations "
                             f"over {p6['conversation_setup']['apps']} system prompts")
    plots.target(ax[3], 90, "target 90 % (PrefixAffinity, all requests)")
    ax[3].set_ylim(0, 125)
    ax[3].legend(loc="upper left", ncol=3)
    turns = max((len(s.get("ttft_by_turn_s", [])) for s in conv.values()), default=0)
    plots.grouped_bars(ax[4], [str(k + 1) for k in range(turns)],
                       {f"{pol} (mean {f(s['ttft_mean_s'])} s)": s.get("ttft_by_turn_s", []) + [None] * (
                           turns - len(s.get("ttft_by_turn_s", []))) for pol, s in conv.items()},
                       ylabel="mean TTFT, s", xlabel="turn of the conversation", annotate="{:.2f}",
                       title="Part B: TTFT by turn")
    runs = [(f"A users\n{pol}", s["per_board"]) for pol, s in users["policies"].items()]
    runs += [(f"A {lv}×/s\n{pol}", s["per_board"]) for lv in levels for pol, s in p6["levels"][lv]["policies"].items()]
    runs += [(f"B\n{pol}", s["per_board"]) for pol, s in conv.items()]
    boards = sorted({b for _, pb in runs for b in pb})
    plots.grouped_bars(ax[5], [r for r, _ in runs],
                       {b: [100 * pb.get(b, 0) / max(1, sum(pb.values())) for _, pb in runs] for b in boards},
                       ylabel="share of the run's requests, %", annotate=None, title="Requests per board")
    ax[5].axhline(100 / max(1, len(boards)), color="grey", lw=0.7, ls=":")
    for lab in ax[5].get_xticklabels():
        lab.set_fontsize(7)
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
        parts.append(f"{top} × (1/{rps:.0f} − 1/{d:.0f}) s = {f(1000 * int(top) * (1 / rps - 1 / d))} ms for {'the gateway' if t == 'gateway' else t}")
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


def ideal_fifo_p99(p6: dict, level: str) -> float | None:
    """p99 TTFT of the level's schedule served in arrival order by boards that never idle while a
    request waits: calibrated service time per kind, plus the least TTFT measured for that kind."""
    service = p6["calibration"]["service_s"]
    recs = [r for pol in p6["levels"][level]["policies"].values() for r in pol.get("records", [])]
    if not recs:
        return None
    alone = {}
    for lv in p6["levels"].values():
        for pol in lv["policies"].values():
            for r in pol.get("records", []):
                if r.get("ttft") is not None:
                    alone[r["kind"]] = min(alone.get(r["kind"], r["ttft"]), r["ttft"])
    schedule = sorted({(r["at"], r["kind"]) for r in recs})
    free = [0.0] * p6["boards"]
    ttfts = []
    for at, kind in schedule:
        i = min(range(len(free)), key=free.__getitem__)
        start = max(at, free[i])
        free[i] = start + service[kind]
        ttfts.append(start - at + alone.get(kind, 0.0))
    ttfts.sort()
    return ttfts[min(len(ttfts) - 1, int(0.99 * len(ttfts)))]


def p6_section(p6: dict) -> str:
    cal = p6["calibration"]
    levels = list(p6["levels"])
    users = p6["users"]
    rows = []

    def row(load: str, s: dict, pol: str) -> str:
        t = s["ttft_s"]
        return (f"| {load} | {pol} | {s['ok']}/{s['requests']} | {f(t['p50'])} | {f(t['p90'])} | {f(t['p99'])} | "
                f"{f(s['ttft_short_s']['p99'])} | {f(t['mean'])} | {', '.join(f'{v}' for v in s['per_board'].values())} |")

    for pol, s in users["policies"].items():
        rows.append(row(f"{users['load']}× in users ({users['users']})", s, pol))
    for lv in levels:
        e = p6["levels"][lv]
        for pol, s in e["policies"].items():
            rows.append(row(f"{lv}× in requests/s ({e['rate_rps']:.2f}/s)", s, pol))
    first = p6["levels"][levels[0]]
    ratio = users["p99_ratio_ll_rr"]
    ull, urr = users["policies"]["LeastLoad"]["ttft_s"], users["policies"]["RoundRobin"]["ttft_s"]
    conv = p6["conversations"]
    cs = p6["conversation_setup"]
    crow = []
    for pol, s in conv.items():
        bc = s["board_counters"]
        crow.append(f"| {pol} | {100 * s['hit_rate']:.0f} % | {100 * s['hit_rate_first_turn']:.0f} % | "
                    f"{100 * s['hit_rate_later_turns']:.0f} % | {f(s['ttft_mean_s'])} | {f(s['ttft_p99_s'])} | "
                    f"{s['cached_tokens_mean']:.0f} / {s['prompt_tokens_mean']:.0f} | "
                    f"{', '.join(str(v) for v in s['per_board'].values())} | "
                    f"{', '.join(str(v) for v in s['apps_per_board'].values())} | "
                    f"{bc.get('prompt_cache_loads', 0)} / {bc.get('prompt_cache_creates', 0)} |")
    pa = conv.get("PrefixAffinity", {})
    rr = conv.get("RoundRobin", {})
    bound = (cs["turns"] - 1) / cs["turns"]
    # RoundRobin's first choices per board (routing decisions with reason "turn") tell which
    # RoundRobin ran: a strict rotation gives every board the same count (±1); one that falls back
    # to a board with room when its turn is full does not.
    notes = []
    rr_a = users["policies"].get("RoundRobin", {})
    turns: dict[str, int] = {}
    for k, v in rr_a.get("decisions", {}).items():
        board, _, reason = k.rpartition("/")
        if reason == "turn":
            turns[board] = turns.get(board, 0) + v
    counts = [turns[b] for b in sorted(turns)]
    notes.append(
        f"- **Two readings of \"{users['load']}× their capacity\".** The issue counts a board's capacity in "
        "slots (nBatch), so the target is checked with users: "
        f"{users['users']} users, each thinking {f(users['think_mean_s'])} s on average (the mix's mean service "
        f"time) between reading an answer and sending the next request, where {round(users['users'] / users['load'])} would "
        "keep the 3 slots busy without waiting. Requests queue, but never more than the users have sent, as "
        "with people or agents in front of the boards. The rate reading (Poisson arrivals at 1.5× the "
        "requests/s the boards complete) is shown as well; there the backlog grows for as long as arrivals "
        "come, whatever the policy (see below).")
    long_ttft = [r["ttft"] for pol in users["policies"].values() for r in pol["records"]
                 if r["kind"] == "long" and r["ttft"] is not None]
    if counts:
        notes.append(
            f"- RoundRobin rotated strictly (first choices per board {', '.join(map(str, counts))}): a board "
            "got its turn whatever it already held, so a short request could wait on a board behind a long "
            f"request ({f(cal['service_s']['long'], 1)} s each) while another board was free. LeastLoad binds late: "
            "a board gets a request only "
            "into a free slot, the rest wait at the gateway and go to whichever board frees first. With "
            f"{users['users']} users, TTFT p50 was {f(ull['p50'])} s with LeastLoad and {f(urr['p50'])} s with "
            f"RoundRobin, the mean {f(ull['mean'])} s and {f(urr['mean'])} s, the p99 {f(ull['p99'])} s and "
            f"{f(urr['p99'])} s. A long request's TTFT includes its own prefill whatever the policy (at least "
            f"{f(min(long_ttft, default=0), 1)} s here), and "
            "the p99 of a few hundred requests is one of the slowest few, so the ratio moves from run to run.")
    ideal = ideal_fifo_p99(p6, levels[0])
    if ideal is not None and first.get("p99_ratio_ll_rr") is not None:
        rr_p99 = first["policies"]["RoundRobin"]["ttft_s"]["p99"]
        notes.append(
            f"- **The bound at {levels[0]}× in requests/s.** Replaying the same schedule through one "
            f"first-come-first-served line over {p6['boards']} boards that are never idle while a request waits "
            f"(a simulation: the calibrated service times, no network, each request's TTFT = its wait + the "
            f"least TTFT measured for its kind) gives a p99 TTFT of {f(ideal)} s; LeastLoad measured "
            f"{f(first['policies']['LeastLoad']['ttft_s']['p99'])} s, and half RoundRobin's p99 is "
            f"{f(0.5 * rr_p99)} s. Above capacity the backlog grows for as long as arrivals come, and the last "
            "arrivals wait for all of it whichever board they get: the p99 is set by the overload and the "
            "window's length"
            + (", so in this reading halving RoundRobin's p99 is at or past the best the schedule allows."
               if ideal > 0.5 * rr_p99 else ", not by the policy."))
    over = p6["levels"][levels[0]]["policies"]
    unfair = []
    for pol, s in over.items():
        dec = s.get("ttft_by_arrival_decile_s") or []
        if len(dec) == 10 and max(dec[:7]) > 1.3 * dec[-1]:
            w = s["worst"]
            unfair.append(f"{pol} {', '.join(f'{d:.1f}' for d in dec)} s (its slowest request, sent at "
                          f"{w['at']:.1f} s, waited {w['ttft']:.1f} s for its first token while {w['overtaken_by']} "
                          f"requests sent after it got theirs sooner)")
    if unfair:
        refused = sum(s["errors"] for s in over.values())
        notes.append(
            f"- **The gateway's queue is not first come, first served**, and above capacity that, not the policy, "
            f"sets the p99. With more arrivals than the boards serve, the backlog grows until arrivals stop, so "
            f"in a FIFO queue the wait rises from one arrival decile to the next; the mean TTFT per arrival decile "
            f"at {levels[0]}× was instead: {'; '.join(unfair)}."
            + (f" {refused} request(s) got 429 after the 30 s `--queue-timeout`." if refused else "")
            + " In `operator/src/gateway/dispatch.rs` `acquire`, newcomers do not overtake waiters, but among "
            "the waiters whichever task runs first after a wake-up (`Notify::notify_waiters` wakes them all; a "
            "250 ms backstop timer wakes each too) takes the board that freed up; nothing orders them by arrival.")
    if pa and all(s["hit_rate_first_turn"] == 0 for s in conv.values()) and \
            all(s["board_counters"].get("prompt_cache_loads", 0) == 0 for s in conv.values()):
        notes.append(
            "- **No request reused a system prompt it had not itself sent on an earlier turn** (0 % of first "
            "turns hit, no prompt-cache file loaded or created on any board). In cluster mode the agent loads "
            "the model from its store as `blobs/sha256-…`, so it cannot tell the model's family from the file "
            "name (`Family::detect`), treats the chat template as fixed, and folds every system prompt into the "
            "first user message: the system-prompt part of the KV cache (`keep_system`) and the RKLLM "
            "prompt-cache files never apply. Only the next turn of the conversation a board just ran can reuse "
            f"its cache, so with {cs['turns']} turns per conversation no policy can exceed {100 * bound:.0f} %.")
    if pa:
        cold = cs["apps"] / max(1, cs["conversations"] * cs["turns"])
        first_pa, later_pa = pa["hit_rate_first_turn"], pa["hit_rate_later_turns"]
        notes.append(
            f"- **Cold misses**: the first conversation of each of the {cs['apps']} system prompts misses on any "
            f"policy (no board has seen it), so of {cs['conversations']} × {cs['turns']} requests at most "
            f"{100 * (1 - cold):.1f} % can hit. PrefixAffinity's first turns hit {100 * first_pa:.0f} % and its later "
            f"turns {100 * later_pa:.0f} %; a first turn also misses when its system prompt's board was over the "
            "CHWBL cap and the request spilled over to a board that had not seen that prompt (the boards "
            f"held {', '.join(str(v) for v in pa['apps_per_board'].values())} system prompts, "
            f"{sum(pa['apps_per_board'].values())} in all for {cs['apps']}).")
    if pa and rr and pa["ttft_mean_s"] > rr["ttft_mean_s"]:
        notes.append(
            f"- **PrefixAffinity's TTFT is higher** ({f(pa['ttft_mean_s'])} s mean against {f(rr['ttft_mean_s'])} s) "
            "even though it hits more often: a request goes to its system prompt's board while that board is "
            "under the CHWBL cap (⌈mean load × 1.25⌉, never below its slots), which with "
            f"{cs['users']} users on {p6['boards']} boards lets it wait there behind another user's turn (the "
            "`--board-queue 1` place) while another board idles. With 8 system prompts the boards got "
            f"{', '.join(str(v) for v in pa['apps_per_board'].values())} of them and "
            f"{', '.join(str(v) for v in pa['per_board'].values())} requests.")
    if pa:
        notes.append(
            f"- PrefixAffinity keeps a conversation on one board, so its later turns hit "
            f"{100 * pa['hit_rate_later_turns']:.0f} % of the time against RoundRobin's "
            f"{100 * rr.get('hit_rate_later_turns', 0):.0f} %; they miss when another user's conversation ran "
            "on the same board in between (nBatch 1: the KV cache holds one conversation), or when a request "
            "spilled over to another board.")
    return f"""## P6: routing policies
{provenance(p6)}
### Part A: LeastLoad vs RoundRobin under a skewed mix

Calibrated service time (sequential, through the gateway): short {f(cal['service_s']['short'])} s, long
{f(cal['service_s']['long'])} s; the mix's mean {f(cal['mean_service_s'])} s, so the 3 slots complete {p6['boards']} /
{f(cal['mean_service_s'])} s = {f(cal['capacity_rps'])} requests/s.

| offered load | policy | answered | TTFT p50 s | p90 s | p99 s | p99 of short requests s | mean s | requests per board |
|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

| target (issue 10) | measured | |
|---|---|---|
| LeastLoad p99 TTFT ≤ 0.5 × RoundRobin's at {users['load']}× capacity ({users['users']} users) | {f(ull['p99'])} s vs {f(urr['p99'])} s: {f(ratio)} × | {verdict(ratio is not None and ratio <= P6_TARGET_RATIO)} |
{''.join(f"| (info) the same at {lv}× in requests/s | {f(p6['levels'][lv]['p99_ratio_ll_rr'])} × | |{chr(10)}" for lv in levels)}
### Part B: PrefixAffinity vs RoundRobin on multi-turn conversations

{cs['users']} users, {cs['conversations']} conversations × {cs['turns']} turns, {cs['apps']} system prompts of
{min(cs['system_tokens'])}–{max(cs['system_tokens'])} tokens (each longer than routing.prefixChars {cs['prefix_chars']}: the
affinity key is the system prompt), {cs['think_s']} s between a user's turns, max_tokens {cs['max_tokens']}.

| policy | hit rate | first turns | later turns | mean TTFT s | p99 TTFT s | cached / prompt tokens (mean) | requests per board | system prompts per board | prompt-cache files loaded / created |
|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(crow)}

| target (issue 10) | measured | |
|---|---|---|
| PrefixAffinity hit rate ≥ 90 % | {100 * pa.get('hit_rate', 0):.0f} % | {verdict(pa.get('hit_rate', 0) >= 0.9)} |

**Hit**: the board reused at least the shared prefix, i.e. the agent's
`usage.prompt_tokens_details.cached_tokens` (prompt tokens not computed again: what the KV cache
still held of the conversation, plus a system prompt loaded from an RKLLM prompt-cache file) is at
least the system prompt's length in tokens. The boards' `prompt_cache_loads` / `prompt_cache_creates`
counters over the run are shown next to it.

![P6: TTFT CDFs with the p99 target, TTFT by arrival, hit rates, TTFT by turn, requests per board](gateway-p6.png)

{chr(10).join(notes)}

Setup: {p6['boards']} boards, rkllm-sim at the vendor's speed (Qwen3-0.6B-sim: 199 ms per 128 prompt
tokens, 32.9 tokens/s), nBatch 1, the gateway's defaults (`--board-queue 1` for PrefixAffinity,
`--queue-depth 256`, `--queue-timeout 30s`). Part A: {int(100 * p6['short_share'])} % short requests (~20-token
prompt, max_tokens {p6['short_max_tokens']}) and {100 - int(100 * p6['short_share'])} % long ones (~1000-token prompt asking for a
{p6['long_answer_words']}-word answer, max_tokens {p6['long_max_tokens']}; the sim answers with that many words), seed {p6['seed']}.
Users reading: one script per user (kinds, exponential think times, prompts), replayed once per
policy, RoundRobin first. Rate reading: Poisson arrivals over {p6['window_s']:.0f} s, one schedule per load
level, replayed once per policy (the order alternates between levels). Every prompt opens with a
nonce so nothing is reused. TTFT counts from the send time (the scheduled one in the rate
reading; queueing at the gateway included). Strategies are switched by re-applying the
ModelDeployment's `routing.strategy`; each run starts with idle boards.
"""


def markdown(result: dict) -> str:
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
