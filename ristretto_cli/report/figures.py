"""The report's pictures, drawn with matplotlib into SVG text.

Figures are made with :class:`matplotlib.figure.Figure` and saved with the SVG backend,
never through pyplot, so drawing changes no global backend or state of the importing
program. Text is drawn as paths (no fonts to load), ids are salted per figure (several
figures can share one page) and no date is written, so the same report gives the same
page.
"""
from __future__ import annotations

import io
import math
import re

COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def _new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=96)


def svg_text(fig, name: str) -> str:
    """``fig`` as an inline ``<svg>`` element (no XML prolog, no doctype)."""
    import matplotlib

    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": f"ristretto-{name}",
                                "svg.image_inline": True}):
        buf = io.StringIO()
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):].strip()
    # ids unique on the page: several figures define the same glyphs and markers
    text = text.replace(' id="', f' id="{name}-')
    return re.sub(r'((?:xlink:)?href="#|url\(#)', lambda m: m.group(1) + f"{name}-", text)


def scores_by_width(candidates: list[dict], baseline: float, margin_percent: float, titles: dict) -> str:
    """Score against bit width, one line per category; the baseline and the lowest
    score within the margin as horizontal lines; failed trials hollow."""
    fig = _new_figure(7.0, 3.8)
    ax = fig.subplots()
    categories = list(dict.fromkeys(c["category"] for c in candidates))
    widths = sorted({int(c["bit_width"]) for c in candidates})
    for k, cat in enumerate(categories):
        trials = [c for c in candidates if c["category"] == cat]
        xs, ys = [int(c["bit_width"]) for c in trials], [c["score"] for c in trials]
        color = COLORS[k % len(COLORS)]
        ax.plot(xs, ys, "-", color=color, label=titles.get(cat, cat), linewidth=1.5)
        for c in trials:
            ax.plot([int(c["bit_width"])], [c["score"]], "o", color=color, markersize=6,
                    markerfacecolor=color if c["passed"] else "white")
    ax.axhline(baseline, color="black", linewidth=1, label="float baseline")
    ax.axhline(baseline - margin_percent / 100.0, color="black", linewidth=1, linestyle="--",
               label=f"baseline - {margin_percent:g}%")
    if widths:
        ax.set_xscale("log", base=2)
        ax.set_xticks(widths)
        ax.set_xticklabels([str(w) for w in widths])
        ax.set_xlim(min(widths) / 1.3, max(widths) * 1.3)
    ax.set_xlabel("bit width")
    ax.set_ylabel("score")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Score against bit width per category (hollow: outside the margin)", fontsize=10)
    return svg_text(fig, "scores")


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: none with a cost <= and a score >=,
    one of them strictly. ``points``: (cost, score). In cost order."""
    front = []
    for i, (c, s) in enumerate(points):
        beaten = any((c2 <= c and s2 >= s) and (c2 < c or s2 > s) for j, (c2, s2) in enumerate(points) if j != i)
        if not beaten:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))


def score_against_cost(configs: list[dict], chosen_label: str | None) -> str:
    """Score against weight memory and against bit operations: every configuration a
    point, the Pareto front as a step line, the float net a square, the chosen a star."""
    fig = _new_figure(9.0, 3.8)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, key, xlabel in ((axes[0], "weight_bits", "weight memory (bits)"),
                            (axes[1], "bitops", "bit operations per forward pass")):
        pts = [(float(c[key]), float(c["score"])) for c in configs]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=22, color=COLORS[0], alpha=0.7,
                   label="configuration tried", zorder=2)
        front = pareto_front(pts)
        if front:
            fx = [pts[i][0] for i in front]
            fy = [pts[i][1] for i in front]
            ax.step(fx, fy, where="post", color=COLORS[1], linewidth=1.5, label="Pareto front", zorder=1)
        for c, p in zip(configs, pts):
            if c["label"] == "float":
                ax.scatter([p[0]], [p[1]], marker="s", s=60, color="black", label="float", zorder=3)
        for c, p in zip(configs, pts):
            if chosen_label is not None and c["label"] == chosen_label:
                ax.scatter([p[0]], [p[1]], marker="*", s=220, color="#d62728", label="chosen", zorder=4)
                break
        if all(p[0] > 0 for p in pts):
            from matplotlib.ticker import LogFormatterSciNotation, NullFormatter

            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(LogFormatterSciNotation())
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(xlabel)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("score")
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle("Score against cost (up and to the left is better)", fontsize=10)
    return svg_text(fig, "pareto")


def format_range(config: dict | None, site: str) -> tuple[float, float] | None:
    """(smallest positive step, largest magnitude) a layer's format represents at
    ``site`` ("in", "out", "weights"); None for float32."""
    if not config:
        return None
    p = config.get("precision")
    if p == "minifloat":
        m, e = int(config["mant_bits"]), int(config["exp_bits"])
        bias = (1 << (e - 1)) - 1
        return 2.0 ** -bias, (2.0 - 2.0 ** -m) * 2.0 ** ((1 << e) - 1 - bias)
    if p == "integer_power_of_2_weights" and site == "weights":
        return 2.0 ** int(config["exp_min"]), 2.0 ** int(config["exp_max"])
    key = {"in": "layer_in", "out": "layer_out", "weights": "params"}[site]
    if f"bw_{key}" not in config:
        return None
    bw, fl = int(config[f"bw_{key}"]), int(config[f"fl_{key}"])
    return 2.0 ** -fl, ((1 << (bw - 1)) - 1) * 2.0 ** -fl if bw > 1 else 2.0 ** -fl


SITES = (("in", "max_in"), ("weights", "max_params"), ("out", "max_out"))


def value_ranges(layers: list[dict], configs: dict[str, dict | None]) -> str:
    """Per layer and site: the chosen format's range (a bar from its step to its largest
    value, log scale) and the largest magnitude observed (a dot; red when above)."""
    rows = []
    for l in layers:
        for site, key in SITES:
            observed = l.get(key)
            rows.append((f"{l['name']} {site}", observed, format_range(configs.get(l["name"]), site)))
    fig = _new_figure(7.5, 0.32 * len(rows) + 1.2)
    ax = fig.subplots()
    ys = list(range(len(rows)))[::-1]
    lo_all, hi_all = [], []
    for y, (label, observed, rng) in zip(ys, rows):
        if rng is not None:
            lo, hi = rng
            if hi > lo:
                ax.barh(y, hi - lo, left=lo, height=0.6, color=COLORS[0], alpha=0.35)
            else:  # one magnitude only (2-bit fixed point: -step, 0, +step)
                ax.plot([lo], [y], "|", color=COLORS[0], markersize=14, markeredgewidth=3, alpha=0.6)
            lo_all.append(lo)
            hi_all.append(hi)
        if observed is not None and observed > 0 and math.isfinite(observed):
            outside = rng is not None and observed > rng[1]
            ax.plot([observed], [y], "o", color="#d62728" if outside else "black", markersize=5)
            lo_all.append(observed)
            hi_all.append(observed)
    ax.set_yticks(ys)
    ax.set_yticklabels([r[0] for r in rows], fontsize=8)
    ax.set_xscale("log", base=2)
    if lo_all:
        ax.set_xlim(min(lo_all) / 4, max(hi_all) * 4)
    ax.set_xlabel("magnitude (bar: the chosen format from its step to its largest value; dot: largest |value| "
                  "observed)", fontsize=8)
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_title("Value ranges per layer against the chosen formats (float32 sites: no bar)", fontsize=10)
    return svg_text(fig, "ranges")
