"""Plot helpers shared by the `make bench` reports: one look for every PNG in docs/bench/.

Every report draws its figure with these, from the JSON it writes, so `--render`/`--replot` of a
committed JSON redraws the same PNG without measuring again. matplotlib comes from the project venv
(`py=$(hack/pyenv.sh)`); the benches themselves stay stdlib-only and import this module only when
they draw (call `missing()` first: it returns why plotting is impossible, or None).

    import plots                                  # from a script in hack/bench/
    if (why := plots.missing()) is None:
        fig, axes = plots.figure(1, 2, title="Scale from zero: first request → first token")
        plots.cdf(axes[0], {"blob cached": cached_s, "not cached": download_s}, unit="s", log=True)
        plots.stacked_bars(axes[1], ["cached", "not cached"],
                           {"placement": [0.4, 0.5], "download": [0, 21.0], "load": [3.1, 3.2]},
                           ylabel="seconds (median)")
        plots.save(fig, out / "cold-start.png")  # ~100 dpi, 256-colour PNG: tens of KB

The helpers, each drawing on one matplotlib Axes:

    cdf(ax, {label: samples}, unit)             empirical CDF of raw samples (n, p50, p99 in the legend)
    quantile_cdf(ax, {label: (qs, values)}, unit)   the same from stored quantiles only (says so)
    ladder(ax, groups, {label: [{"p50":…, "p99":…}, …]}, unit)   percentiles per group, when that is all there is
    strip(ax, groups, {label: [[samples], …]}, unit)             every sample as a dot, median as a bar
    grouped_bars(ax, groups, {label: [value, …]}, ylabel)        e.g. tok/s by concurrency, per engine
    stacked_bars(ax, groups, {part: [value, …]}, ylabel)         e.g. a cold start's phases
    ratio_strip(ax, {metric: {label: [ratio per round]}}, targets)   ratios with their target lines
    timeline(ax, t, {label: values}, ylabel)    e.g. bytes per board over time
    target(ax, y, label)                        a labelled horizontal target line
    log_scale(ax, "x")                          a log axis with plain tick labels
    pyplot()                                    styled matplotlib.pyplot, for layouts figure() cannot make

Conventions: say the unit in every axis label, name what a point is ("one round", "one request"),
put the claim's numbers (ratio, target, met or not) in the title or legend, and label a plot drawn
from percentiles as such. Colours are fixed per series name (COLORS), so "gateway" is the same
orange in every PNG.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

DPI = 100

# One colour per series name across all reports; unknown names take the next colour of PALETTE.
COLORS = {
    "theirs": "#4c72b0", "llama-server": "#4c72b0", "library": "#4c72b0", "direct": "#4c72b0",
    "ours": "#dd8452", "agent": "#dd8452", "rockchip-llama-agent": "#dd8452", "gateway": "#dd8452",
    "nginx": "#55a868",
    "LeastLoad": "#4c72b0", "RoundRobin": "#c44e52", "PrefixAffinity": "#8172b3",
    "on": "#55a868", "off": "#c44e52", "cache on": "#55a868", "cache off": "#c44e52", "cached": "#55a868", "blob cached": "#55a868",
    "not cached": "#c44e52", "blob not cached": "#c44e52", "warm": "#4c72b0",
    # The phases of a cold start (cold-start.png), none green or red so they do not read as cached / not.
    "autoscaler": "#8172b3", "placement": "#937860", "download": "#ccb974", "load": "#64b5cd",
    "reported": "#da8bc3", "routed": "#dd8452", "first token": "#8c8c8c",
}
PALETTE = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c",
           "#ccb974", "#64b5cd"]
MARKERS = {"p50": "o", "p90": "s", "p99": "^", "p999": "v", "max": "x"}


def missing() -> str | None:
    """Why no plot can be drawn here (matplotlib not importable), or None."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        return f"matplotlib is not installed ({e}); run through hack/pyenv.sh's venv"
    return None


def pyplot():
    """matplotlib.pyplot on the Agg backend with the house style, for a layout figure() cannot make."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcParams.update({
        "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
        "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False,
        "figure.dpi": DPI, "savefig.dpi": DPI,
    })
    return plt


def color(name: str, i: int = 0) -> str:
    """The series' fixed colour, else the i-th of the palette."""
    for key in (name, name.split(" ")[0], name.split(",")[0]):
        if key in COLORS:
            return COLORS[key]
    return PALETTE[i % len(PALETTE)]


def figure(nrows: int = 1, ncols: int = 1, width: float | None = None, height: float | None = None,
           title: str | None = None):
    """A figure in the house style and its axes as a flat list (row by row)."""
    plt = pyplot()
    fig, axes = plt.subplots(nrows, ncols, figsize=(width or 5.2 * ncols, height or 3.9 * nrows), squeeze=False)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig, [ax for row in axes for ax in row]


def save(fig, path: Path | str, dpi: int = DPI) -> Path:
    """Lay out, write a 256-colour PNG (a third of the size of a full-colour one, same look), close."""
    from PIL import Image

    path = Path(path)
    top = 1 - 0.35 / fig.get_figheight() if fig._suptitle is not None else 1  # room for the title
    fig.tight_layout(rect=(0, 0, 1, top))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    pyplot().close(fig)
    buf.seek(0)
    img = Image.open(buf).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    img.save(path, format="PNG", optimize=True)
    return path


# === distributions ===


def pct(xs: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100) of samples."""
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    return xs[min(len(xs) - 1, max(0, math.ceil(len(xs) * p / 100) - 1))]


def _fmt(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.0f}" if abs(x) >= 1000 else f"{x:.1f}" if abs(x) >= 10 else f"{x:.2f}"


def cdf(ax, series: dict[str, list[float]], unit: str, log: bool = False, title: str | None = None,
        what: str = "requests", xlabel: str | None = None, styles: dict[str, str] | None = None) -> None:
    """Empirical CDF per series (a step per sample); legend: n, p50, p99. `styles`: line style per
    series (e.g. "--" for a second model drawn in the same colour)."""
    for i, (label, xs) in enumerate(series.items()):
        xs = sorted(x for x in xs if x is not None)
        if not xs:
            continue
        ys = [(k + 1) / len(xs) for k in range(len(xs))]
        ax.step(xs, ys, where="post", color=color(label, i), ls=(styles or {}).get(label, "-"),
                label=f"{label}: n {len(xs)}, p50 {_fmt(pct(xs, 50))}, p99 {_fmt(pct(xs, 99))} {unit}")
    _cdf_axes(ax, unit, log, title, what, xlabel)


def quantile_cdf(ax, series: dict[str, tuple[list[float], list[float]]], unit: str, log: bool = False,
                 title: str | None = None, what: str = "requests", xlabel: str | None = None) -> None:
    """CDF drawn through stored quantiles (qs in 0..1, values): what a JSON holding percentiles, not
    samples, can show. The legend and the y label say so."""
    for i, (label, (qs, vals)) in enumerate(series.items()):
        pts = sorted((v, q) for q, v in zip(qs, vals) if v is not None)
        if not pts:
            continue
        # Quantiles of nearest-rank samples are monotone; a rounding blip must not fold the line back.
        xs, ys, top = [], [], 0.0
        for v, q in pts:
            top = max(top, q)
            xs.append(v)
            ys.append(top)
        by_q = dict(zip(qs, vals))
        ax.plot(xs, ys, color=color(label, i), lw=1.4,
                label=f"{label}: p50 {_fmt(by_q.get(0.5))}, p99 {_fmt(_nearest(by_q, 0.99))} {unit}")
    _cdf_axes(ax, unit, log, title, what, xlabel)
    ax.set_ylabel(f"fraction of {what} (from stored quantiles)")


def _nearest(by_q: dict[float, float], q: float) -> float | None:
    k = min(by_q, key=lambda x: abs(x - q)) if by_q else None
    return by_q[k] if k is not None and abs(k - q) < 1e-6 else None


def log_scale(ax, axis: str = "y") -> None:
    """A log axis labelled with plain numbers (0.5, 2, 10), not 5×10⁻¹."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    a = ax.yaxis if axis == "y" else ax.xaxis
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    a.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))  # labels even within one decade
    a.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    a.set_minor_formatter(NullFormatter())


def _cdf_axes(ax, unit, log, title, what, xlabel) -> None:
    for q in (0.5, 0.99):
        ax.axhline(q, color="grey", lw=0.6, ls=":")
    if log:
        log_scale(ax, "x")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(xlabel or f"{unit}{' (log scale)' if log else ''}")
    ax.set_ylabel(f"fraction of {what}")
    if title:
        ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right")


def ladder(ax, groups: list[str], series: dict[str, list[dict[str, float | None]]], unit: str,
           log: bool = False, title: str | None = None, xlabel: str | None = None) -> None:
    """Percentiles per group and series ({"p50": …, "p90": …, "p99": …}): a vertical segment from the
    lowest to the highest stored percentile with a marker at each. For reports that kept percentiles
    only; the y label says so."""
    n = max(1, len(series))
    width = 0.7 / n
    used = set()
    for i, (label, per_group) in enumerate(series.items()):
        c = color(label, i)
        for g, pcts in enumerate(per_group):
            pts = [(k, v) for k, v in (pcts or {}).items() if v is not None]
            if not pts:
                continue
            x = g + (i - (n - 1) / 2) * width
            ax.plot([x, x], [min(v for _, v in pts), max(v for _, v in pts)], color=c, lw=2,
                    label=None if label in used else label)
            used.add(label)
            for k, v in pts:
                ax.plot([x], [v], marker=MARKERS.get(k, "o"), color=c, ms=6, ls="none")
    for k, m in MARKERS.items():
        if any(k in (p or {}) for per in series.values() for p in per):
            ax.plot([], [], marker=m, color="black", ls="none", label=k)
    ax.set_xticks(range(len(groups)), groups)
    if xlabel:
        ax.set_xlabel(xlabel)
    if log:
        log_scale(ax, "y")
    ax.set_ylabel(f"{unit}{' (log scale)' if log else ''}, stored percentiles")
    if title:
        ax.set_title(title)
    ax.legend()


def strip(ax, groups: list[str], series: dict[str, list[list[float]]], unit: str, log: bool = False,
          title: str | None = None, what: str = "one request", xlabel: str | None = None,
          median_fmt: str | None = None) -> None:
    """Every sample as a dot (jittered sideways), the median as a short bar: for a handful of samples
    per group, where a CDF says little. `median_fmt` (e.g. "{:.3f}") writes each median beside its bar."""
    n = max(1, len(series))
    width = 0.7 / n
    for i, (label, per_group) in enumerate(series.items()):
        c = color(label, i)
        for g, xs in enumerate(per_group):
            xs = [x for x in (xs or []) if x is not None]
            if not xs:
                continue
            x0 = g + (i - (n - 1) / 2) * width
            jit = [x0 + width * 0.5 * ((k * 0.618) % 1 - 0.5) for k in range(len(xs))]
            ax.scatter(jit, xs, s=14, color=c, alpha=0.7, label=label if g == 0 else None)
            m = sorted(xs)[len(xs) // 2] if len(xs) % 2 else sum(sorted(xs)[len(xs) // 2 - 1:len(xs) // 2 + 1]) / 2
            ax.plot([x0 - width * 0.4, x0 + width * 0.4], [m, m], color=c, lw=2)
            if median_fmt:
                ax.annotate(median_fmt.format(m), (x0 + width * 0.4, m), fontsize=7, color=c, va="center")
    ax.set_xticks(range(len(groups)), groups)
    if xlabel:
        ax.set_xlabel(xlabel)
    if log:
        log_scale(ax, "y")
    ax.set_ylabel(f"{unit}{' (log scale)' if log else ''}")
    if title:
        ax.set_title(title)
    _dedup_legend(ax, f"dot: {what}, bar: median")


# === bars ===


def grouped_bars(ax, groups: list[str], series: dict[str, list[float | None]], ylabel: str,
                 xlabel: str | None = None, title: str | None = None, annotate: str | None = "{:.0f}",
                 ranges: dict[str, list[tuple[float, float] | None]] | None = None, log: bool = False) -> None:
    """Bars per group (e.g. concurrency) and series (e.g. engine); `ranges` adds min–max whiskers;
    `annotate` is the value label's format (None: no labels)."""
    n = max(1, len(series))
    width = 0.8 / n
    for i, (label, vals) in enumerate(series.items()):
        xs = [g + (i - (n - 1) / 2) * width for g in range(len(groups))]
        ys = [v if v is not None else 0 for v in vals]
        bars = ax.bar(xs, ys, width * 0.95, color=color(label, i), label=label)
        rr = (ranges or {}).get(label)
        if rr:
            lo = [max(0, y - r[0]) if r else 0 for y, r in zip(ys, rr)]
            hi = [max(0, r[1] - y) if r else 0 for y, r in zip(ys, rr)]
            ax.errorbar(xs, ys, yerr=[lo, hi], fmt="none", ecolor="black", elinewidth=0.8, capsize=2)
        if annotate:
            for b, v in zip(bars, vals):
                if v is not None:
                    ax.annotate(annotate.format(v), (b.get_x() + b.get_width() / 2, b.get_height()),
                                ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(groups)), groups)
    if log:
        log_scale(ax, "y")
    else:  # headroom for the value labels and the legend
        top = max((v for vals in series.values() for v in vals if v is not None), default=0)
        if top > 0:
            ax.set_ylim(0, 1.3 * top)
    ax.set_ylabel(ylabel)
    if xlabel:
        ax.set_xlabel(xlabel)
    if title:
        ax.set_title(title)
    ax.grid(axis="x", visible=False)
    ax.legend(loc="upper left", ncol=min(3, len(series)))


def stacked_bars(ax, groups: list[str], parts: dict[str, list[float]], ylabel: str,
                 title: str | None = None, total_fmt: str | None = "{:.1f}") -> None:
    """One bar per group made of its parts, bottom to top in the dict's order (e.g. placement,
    download, load, first token); the total on top."""
    bottoms = [0.0] * len(groups)
    for i, (label, vals) in enumerate(parts.items()):
        vals = [v or 0 for v in vals]
        ax.bar(range(len(groups)), vals, 0.6, bottom=bottoms, color=color(label, i), label=label)
        bottoms = [b + v for b, v in zip(bottoms, vals)]
    if total_fmt:
        for g, t in enumerate(bottoms):
            ax.annotate(total_fmt.format(t), (g, t), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(axis="x", visible=False)
    ax.legend()


def ratio_strip(ax, metrics: dict[str, dict[str, list[float]]], targets: dict[str, tuple[str, float]],
                title: str | None = None, what: str = "one round", ylabel: str = "ratio") -> None:
    """Ratios per metric (x) and series (e.g. model): a dot per round, the median as a bar, the
    target as a red tick ("≥ 0.97" / "≤ 1.05"); 1.0 is drawn as parity."""
    names = list(metrics)
    labels = list(dict.fromkeys(lab for m in metrics.values() for lab in m))
    strip(ax, names, {lab: [metrics[m].get(lab, []) for m in names] for lab in labels}, "", what=what,
          median_fmt="{:.3f}")
    ax.axhline(1.0, color="black", lw=0.7)
    for g, m in enumerate(names):
        if m in targets:
            op, y = targets[m]
            ax.plot([g - 0.42, g + 0.42], [y, y], color="#c44e52", lw=1.5, ls="--")
            ax.annotate(f"target {op} {y:g}", (g - 0.42, y), fontsize=7, color="#c44e52", ha="left",
                        va="top" if op == "≥" else "bottom")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)


def target(ax, y: float, label: str, axis: str = "y") -> None:
    """A labelled target line (red dashed), horizontal by default."""
    line = ax.axhline if axis == "y" else ax.axvline
    line(y, color="#c44e52", lw=1, ls="--", label=label)


# === time ===


def timeline(ax, t: list[float], series: dict[str, list[float]], ylabel: str,
             xlabel: str = "seconds since the start", title: str | None = None,
             styles: dict[str, str] | None = None, legend_cols: int = 1) -> None:
    """One line per series over a shared time axis (e.g. MiB on each board every 0.5 s)."""
    for i, (label, ys) in enumerate(series.items()):
        ax.plot(t[:len(ys)], ys, (styles or {}).get(label, "-"), color=color(label, i), lw=1.3, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(ncol=legend_cols)


def _dedup_legend(ax, title: str | None = None) -> None:
    handles, labels = ax.get_legend_handles_labels()
    seen = {}
    for h, lab in zip(handles, labels):
        seen.setdefault(lab, h)
    if seen:
        ax.legend(list(seen.values()), list(seen), title=title, title_fontsize=7)
