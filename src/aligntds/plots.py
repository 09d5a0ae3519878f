"""Plots of the summary as inline SVG (matplotlib), for self-contained pages.

    from aligntds.plots import class_bars, position_curves
    svg = position_curves(summary)          # a string starting with <svg, ids prefixed, no external references

Each figure's element ids get their own prefix, so several figures can share one page.
"""

from __future__ import annotations

import io
import itertools
import re

import numpy as np

from .metrics import CLASS_NAMES

COLORS = {"unshifted": "#1f4fd1", "marginal": "#b07000", "shifted": "#d62020"}
_ids = itertools.count()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({
        "svg.fonttype": "none",  # text stays text: small, selectable
        "svg.hashsalt": "aligntds",  # deterministic ids
        "font.size": 9,
        "axes.spines.top": False,
        "axes.spines.right": False,
    })
    return plt


def plain(text: str) -> str:
    """A label shown as typed: matplotlib would read $...$ as math."""
    return str(text).replace("$", r"\$")


def to_svg(fig) -> str:
    """The figure as an <svg> element: no XML prolog or DOCTYPE, ids unique within the page."""
    plt = _pyplot()
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    prefix = f"f{next(_ids)}-"
    svg = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{prefix}{m[1]}"', svg)
    svg = re.sub(r'(href="#|url\(#)([^")]+)', lambda m: f"{m[1]}{prefix}{m[2]}", svg)
    return svg


def class_bars(runs: list[tuple[str, dict]]) -> str:
    """Grouped bars: the share of unshifted / marginal / shifted positions of each run (label, summary)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 + 1.1 * len(runs)), 2.8))
    width = 0.8 / len(CLASS_NAMES)
    x = np.arange(len(runs))
    for i, name in enumerate(CLASS_NAMES):
        values = [np.nan if s["ratios"][name] is None else 100 * s["ratios"][name] for _, s in runs]  # None: no positions
        bars = ax.bar(x + (i - 1) * width, values, width, label=name, color=COLORS[name])
        ax.bar_label(bars, labels=["-" if np.isnan(v) else f"{v:.1f}" for v in values], fontsize=7, padding=1)
    ax.set_xticks(x, [plain(label) for label, _ in runs], rotation=15 if len(runs) > 3 else 0)
    ax.set_ylabel("% of answer positions")
    ax.set_ylim(0, 105)
    ax.legend(frameon=False, ncols=3, loc="upper center", bbox_to_anchor=(0.5, 1.15))
    return to_svg(fig)


def _series(rows, key):
    return np.array([np.nan if r[key] is None else r[key] for r in rows], dtype=float)


def _absolute_rows(summary: dict, min_count: int) -> list[dict]:
    """The absolute positions with enough answers behind them to make a mean."""
    return [r for r in summary["by_position"]["absolute"] if r["count"] >= min_count]


def absolute_curves(runs: list[tuple[str, dict]], min_count: int = 5) -> str:
    """Mean KL and base probability of the aligned token by answer position, one line per run."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(8.5, 2.8))
    for label, s in runs:
        rows = _absolute_rows(s, min_count)
        pos = [r["position"] for r in rows]
        axes[0].plot(pos, _series(rows, "mean_kl"), linewidth=0.9, label=plain(label))
        axes[1].plot(pos, _series(rows, "mean_base_prob"), linewidth=0.9, label=plain(label))
    axes[0].set_ylabel("mean KL")
    axes[1].set_ylabel("base prob. of aligned token")
    for ax in axes:
        ax.set_xlabel("answer position t")
    axes[0].legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return to_svg(fig)


def position_curves(summary: dict, min_count: int = 5) -> str:
    """The paper's Fig. 4: KL, base probability and base rank of the aligned token, and the shifted rate, by position."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(11, 2.6))
    rows = _absolute_rows(summary, min_count) or summary["by_position"]["absolute"]
    pos = np.array([r["position"] for r in rows])
    panels = (
        ("mean_kl", "KL(base ‖ aligned)" if summary["kl"] == "exact" else f"KL@{min(10, summary['top_k'])} (top-k)", None),
        ("mean_base_prob", "base prob. of aligned token", None),
        ("mean_base_rank", "base rank of aligned token", "log"),
        ("shifted_rate", "shifted rate", None),
    )
    for ax, (key, title, scale) in zip(axes, panels):
        ax.plot(pos, _series(rows, key), color="#333", linewidth=0.8)
        ax.set_title(title)
        ax.set_xlabel("answer position t")
        if scale:
            ax.set_yscale(scale)
    fig.tight_layout()
    return to_svg(fig)


def relative_curves(runs: list[tuple[str, dict]]) -> str:
    """Shifted rate and mean KL by relative position (tenths of the answer), one line per run."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(8.5, 2.8))
    for label, s in runs:
        rows = s["by_position"]["relative"]
        mid = [(r["bin"][0] + r["bin"][1]) / 2 for r in rows]
        axes[0].plot(mid, 100 * _series(rows, "shifted_rate"), marker="o", markersize=3, label=plain(label))
        axes[1].plot(mid, _series(rows, "mean_kl"), marker="o", markersize=3, label=plain(label))
    axes[0].set_ylabel("% shifted")
    axes[1].set_ylabel("mean KL")
    for ax in axes:
        ax.set_xlabel("relative position in the answer")
        ax.set_xlim(0, 1)
    if len(runs) > 1:
        axes[0].legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return to_svg(fig)


def entropy_plot(entropy: dict) -> str:
    """summary["entropy"]: mean aligned and base entropy by relative position, and the shifted rate of the
    high-entropy positions of the aligned model against the rest."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(8.5, 2.8), gridspec_kw={"width_ratios": [2, 1]})
    rows = entropy["by_position"]["relative"]
    mid = [(r["bin"][0] + r["bin"][1]) / 2 for r in rows]
    axes[0].plot(mid, _series(rows, "mean_aligned_entropy"), marker="o", markersize=3, color="#1f4fd1", label="aligned")
    axes[0].plot(mid, _series(rows, "mean_base_entropy"), marker="o", markersize=3, color="#e08a00", label="base")
    axes[0].set_xlabel("relative position in the answer")
    axes[0].set_ylabel("mean entropy (nats)")
    axes[0].set_xlim(0, 1)
    axes[0].legend(frameon=False, fontsize=7)
    high, rest = entropy["high_entropy"], entropy["rest"]
    values = [100 * (g["shifted_rate"] or 0.0) for g in (high, rest)]
    bars = axes[1].bar([0, 1], values, 0.6, color=[COLORS["shifted"], "#999"])
    axes[1].bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
    axes[1].set_xticks([0, 1], [f"top {100 * high['share']:.0f}%\nentropy", "the rest"])
    axes[1].set_ylabel("% shifted")
    fig.tight_layout()
    return to_svg(fig)
