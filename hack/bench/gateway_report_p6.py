"""P6's part of docs/bench/gateway.md (routing policies) and gateway-p6.png, from the result
gateway_p6.py collects; gateway_report.py assembles the page."""

from __future__ import annotations

from pathlib import Path

from gateway_report import f, provenance, verdict

P6_PNG = "gateway-p6.png"
P6_TARGET_RATIO = 0.5  # issue 10: LeastLoad's p99 TTFT at most half RoundRobin's


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
        f"keep the {p6['boards']} slots busy without waiting. Requests queue, but never more than the users have sent, as "
        f"with people or agents in front of the boards. The rate reading (Poisson arrivals at {levels[0]}× the "
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
{f(cal['service_s']['long'])} s; the mix's mean {f(cal['mean_service_s'])} s, so the {p6['boards']} slots complete {p6['boards']} /
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
