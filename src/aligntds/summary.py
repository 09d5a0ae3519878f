"""The corpus summary: class counts and ratios, the most shifted and unshifted tokens, shift by position.

    from aligntds.summary import summarize, format_summary
    summary = summarize(prepared)      # prepared: aligntds.prepare.prepare(...)
    print(format_summary(summary))

A position's token is the aligned model's top-1 there (the token the paper classes). In `by_position`,
`mean_base_rank` and `median_base_rank` are 1-based (1 = the base model's top token, the paper's
convention) and `mean_kl` is the exact KL(P_base || P_aligned) when pair mode computed it, else the
reference's KL@10 over the stored top-k; `kl` says which. Positions whose base rank is unknown (the
reference's pickles stop at their top-k; counted in `rank_unknown`) are left out of the rank and
probability means, which then lean towards the unshifted. Positions never classed (a token there
exists only in the aligned vocabulary; counted in `aligned_only`) are left out of the class counts,
the ratios, the token tables and the curves.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from .metrics import ALIGNED_ONLY, CLASS_NAMES, MARGINAL, SHIFTED, UNSHIFTED
from .store import atomic_write_bytes

TOP_TOKENS = 50
RELATIVE_BINS = 10


def _concat(examples, get, dtype=None):
    parts = [np.asarray(get(ex), dtype=dtype) for ex in examples]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype or np.float64)


def position_kl(ex: dict) -> np.ndarray:
    """float [T]: the exact KL(base || aligned) when present, else the reference's KL@10 (KL@k when k < 10 were stored)."""
    if "kl_base_aligned" in ex["exact"]:
        return ex["exact"]["kl_base_aligned"]
    ks = sorted(int(name.split("@")[1]) for name in ex["metrics"] if name.startswith("kl@"))
    return ex["metrics"][f"kl@{ks[0]}"] if ks else np.full(len(ex["response_ids"]), np.nan)


def _token_table(top1, cls, wanted, tokens, n):
    counts = Counter(top1[cls == wanted].tolist())
    totals = Counter(top1[cls != ALIGNED_ONLY].tolist())
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    return [[tokens.get(t, f"<{t}>"), c, round(c / totals[t], 4)] for t, c in ranked]


def _curve(groups, cls, kl, prob, rank):
    """Mean metrics of the positions in each group (a list of index arrays)."""
    rows = []
    for idx in groups:
        if not len(idx):
            rows.append({"count": 0, "shifted_rate": None, "mean_kl": None, "mean_base_prob": None,
                         "mean_base_rank": None, "median_base_rank": None})
            continue
        r = rank[idx]
        known = r[r >= 0] + 1
        rows.append({
            "count": int(len(idx)),
            "shifted_rate": round(float((cls[idx] == SHIFTED).mean()), 6),
            "mean_kl": round(float(np.nanmean(kl[idx])), 6) if np.isfinite(kl[idx]).any() else None,
            "mean_base_prob": round(float(np.nanmean(prob[idx])), 6) if np.isfinite(prob[idx]).any() else None,
            "mean_base_rank": round(float(known.mean()), 4) if len(known) else None,
            "median_base_rank": float(np.median(known)) if len(known) else None,
        })
    return rows


def summarize(prepared: dict, top_n: int = TOP_TOKENS, bins: int = RELATIVE_BINS) -> dict:
    """The summary of a prepared pair (see the module docstring); plain JSON types only."""
    exs = prepared["examples"]
    cls = _concat(exs, lambda e: e["cls"], np.int8)
    rank = _concat(exs, lambda e: e["aligned_rank"], np.int64)
    prob = _concat(exs, lambda e: e["base_prob"], np.float64)
    kl = _concat(exs, position_kl, np.float64)
    top1 = _concat(exs, lambda e: e["aligned_top_ids"][:, 0], np.int64)
    pos = _concat(exs, lambda e: np.arange(len(e["response_ids"])), np.int64)
    rel = _concat(exs, lambda e: np.arange(len(e["response_ids"])) / max(len(e["response_ids"]), 1), np.float64)
    mismatch = _concat(exs, lambda e: e["greedy_mismatch"], bool)
    tie = _concat(exs, lambda e: e.get("tie", np.zeros(len(e["response_ids"]), bool)), bool)
    n = len(cls)
    counts = {name: int((cls == c).sum()) for c, name in zip((UNSHIFTED, MARGINAL, SHIFTED), CLASS_NAMES)}
    classed = cls != ALIGNED_ONLY
    n_classed = int(classed.sum())
    max_pos = int(pos.max()) + 1 if n else 0
    by_abs = _curve([np.flatnonzero((pos == t) & classed) for t in range(max_pos)], cls, kl, prob, rank)
    for t, row in enumerate(by_abs):
        row["position"] = t
    rel_bin = np.minimum((rel * bins).astype(np.int64), bins - 1)
    by_rel = _curve([np.flatnonzero((rel_bin == b) & classed) for b in range(bins)], cls, kl, prob, rank)
    for b, row in enumerate(by_rel):
        row["bin"] = [round(b / bins, 4), round((b + 1) / bins, 4)]
    return {
        "pair": prepared["pair"],
        "source": prepared["source"],
        "kl": prepared["kl"],
        "examples": len(exs),
        "positions": n,
        **counts,
        "ratios": {k: round(v / n_classed, 6) if n_classed else 0.0 for k, v in counts.items()},
        "aligned_only": n - n_classed,
        "top_shifted_tokens": _token_table(top1, cls, SHIFTED, prepared["tokens"], top_n),
        "top_unshifted_tokens": _token_table(top1, cls, UNSHIFTED, prepared["tokens"], top_n),
        "by_position": {"absolute": by_abs, "relative": by_rel},
        "rank_unknown": int(((rank < 0) & classed).sum()),
        "ties": int(tie.sum()),
        "greedy_mismatch": None if prepared["source"] == "reference" else _mismatch(exs, mismatch, pos),
        "models": {side: prepared["meta"][side].get("model") for side in ("i2i", "i2b")},
        "top_k": prepared["top_k"],
    }


def _mismatch(exs: list[dict], mismatch: np.ndarray, pos: np.ndarray) -> dict:
    """Greedy mismatches (the answer token is not the aligned top-1): overall, at position 0, and after it."""
    first = np.array([bool(e["greedy_mismatch"][0]) for e in exs if len(e["greedy_mismatch"])], dtype=bool)
    rest = mismatch[pos > 0]
    return {
        "positions": int(mismatch.sum()),
        "ratio": round(float(mismatch.mean()), 6) if len(mismatch) else 0.0,
        "examples": int(sum(bool(e["greedy_mismatch"].any()) for e in exs)),
        "first_position": {"examples": len(first), "mismatches": int(first.sum()),
                           "ratio": round(float(first.mean()), 6) if len(first) else 0.0},
        "rest_ratio": round(float(rest.mean()), 6) if len(rest) else 0.0,
    }


def write_summary(path: str | Path, summary: dict) -> None:
    atomic_write_bytes(path, (json.dumps(summary, indent=1, ensure_ascii=False) + "\n").encode())


def show_token(text: str) -> str:
    """A token for a terminal or a table: spaces and newlines made visible."""
    return text.replace(" ", "·").replace("\n", "↵").replace("\t", "→") or "∅"


def format_summary(s: dict, tokens: int = 12) -> str:
    """The summary as a terminal table."""
    lines = [f"{s['pair']}: {s['examples']} examples, {s['positions']:,} answer positions"]
    for name in CLASS_NAMES:
        lines.append(f"  {name:<10} {s[name]:>9,}  {100 * s['ratios'][name]:5.1f}%")
    gm = s["greedy_mismatch"]
    if gm is None:
        lines.append("  greedy mismatches: unknown (reference pickles hold no answer token ids)")
    elif gm["positions"]:
        lines.append(f"  greedy mismatches: {gm['positions']:,} positions ({100 * gm['ratio']:.2f}%) in {gm['examples']} examples:"
                     " there the answer token is not the aligned model's top-1")
        first = gm["first_position"]
        lines.append(f"    at position 0: {first['mismatches']} of {first['examples']} examples ({100 * first['ratio']:.1f}%); "
                     f"after it: {100 * gm['rest_ratio']:.2f}% of positions")
    if s.get("aligned_only"):
        lines.append(f"  aligned_only: {s['aligned_only']:,} positions not classed: a token there (or earlier in the answer) "
                     "exists only in the aligned vocabulary; the ratios are of the other positions")
    if s.get("ties"):
        lines.append(f"  ties: at {s['ties']:,} positions the aligned top-1 has exactly the base log-prob of another token "
                     "(ranks count only tokens strictly more likely)")
    if s.get("rank_unknown"):
        lines.append(f"  {s['rank_unknown']:,} positions have base ranks beyond the stored top-k (reference pickles): "
                     "left out of the mean base rank (too low) and base probability (too high) by position")
    for key, title in (("top_shifted_tokens", "most shifted"), ("top_unshifted_tokens", "most unshifted")):
        shown = ", ".join(f"{show_token(t)!s} {c} ({100 * r:.0f}%)" for t, c, r in s[key][:tokens])
        lines.append(f"  {title} tokens (count, share of the token's positions): {shown or '-'}")
    lines.append(f"  by relative position (KL: {s['kl']}):")
    lines.append("    position   shifted   mean KL   base prob   base rank")
    for row in s["by_position"]["relative"]:
        lo, hi = row["bin"]
        fmt = lambda v, f: format(v, f) if v is not None else "-"  # noqa: E731
        rate = f"{100 * row['shifted_rate']:6.1f}%" if row["count"] else "      -"
        lines.append(f"    {lo:.1f}-{hi:.1f}    {rate}  {fmt(row['mean_kl'], '8.3f')}"
                     f"  {fmt(row['mean_base_prob'], '10.3f')}  {fmt(row['mean_base_rank'], '10.1f')}")
    return "\n".join(lines)
