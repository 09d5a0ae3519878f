"""The corpus summary: class counts and ratios, the most shifted and unshifted tokens, shift by position,
entropy and forking tokens, spikes, the most shifted examples, and the same numbers per slice.

    from aligntds.summary import summarize, format_summary
    summary = summarize(prepared)      # prepared: aligntds.data_prep.prepare(...)
    print(format_summary(summary))

A position's token is the aligned model's top-1 there (the token the paper classes). In `by_position`,
`mean_base_rank` and `median_base_rank` are 1-based (1 = the base model's top token, the paper's
convention) and `mean_kl` is the exact KL(P_base || P_aligned) when pair mode computed it, else the
reference's KL@10 over the stored top-k; `kl` says which, and every KL below (spikes, top examples) is
that one. Positions whose base rank is unknown (the reference's pickles stop at their top-k; counted in
`rank_unknown`) are left out of the rank and probability means, which then lean towards the unshifted.
Positions never classed (a token there, or earlier in the answer, exists only in the aligned vocabulary;
counted in `aligned_only`) are left out of the class counts, the ratios, the token tables, the curves
and the entropy split.

The corpus numbers and each slice's numbers come from one function, `block`, over a subset of positions.

`entropy` (None when the records hold no entropies: the reference's pickles): the aligned and base
entropies (nats) by relative position, and the *high-entropy positions*: those whose aligned entropy is
at or above the corpus 80th percentile of the aligned entropies (numpy's default, linear interpolation).
Positions tied at that threshold all count as high-entropy, so the group holds at least 20% of the
positions, more when many share the threshold's value (`share` says how many). `forking_tokens` are the
aligned top-1 tokens at those positions, `[token, count, shifted share]`, most frequent first.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from .metrics import ALIGNED_ONLY, CLASS_NAMES, MARGINAL, SHIFTED, UNSHIFTED
from .records import provenance
from .slices import id_key
from .store import atomic_write_bytes
from .tokentext import show_token

TOP_TOKENS = 50
TOP_EXAMPLES = 20
RELATIVE_BINS = 10
HIGH_ENTROPY_QUANTILE = 0.8


@dataclass
class Positions:
    """Every answer position of a prepared corpus as flat arrays of length N, answers in order."""

    example: np.ndarray  # int64 [N]: the position's example (its index in prepared["examples"])
    cls: np.ndarray  # int8 [N]
    aligned_rank: np.ndarray  # int64 [N] 0-based base rank of the aligned top-1, -1 unknown
    base_prob: np.ndarray  # float64 [N] base probability of the aligned top-1, NaN unknown
    kl: np.ndarray  # float64 [N] the KL that prepared["kl"] names
    aligned_top1: np.ndarray  # int64 [N] the aligned model's top-1 id
    pos: np.ndarray  # int64 [N] position in the answer
    rel: np.ndarray  # float64 [N] position / answer length
    greedy_mismatch: np.ndarray  # bool [N] the answer token is not the aligned top-1
    tie: np.ndarray  # bool [N] the aligned top-1 ties another token in the base distribution
    aligned_entropy: np.ndarray  # float64 [N] nats, NaN unknown
    base_entropy: np.ndarray  # float64 [N]

    @classmethod
    def of(cls, examples: list[dict]) -> Positions:
        def cat(get, dtype):
            parts = [np.asarray(get(ex), dtype=dtype) for ex in examples]
            return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)

        lengths = [len(ex["response_ids"]) for ex in examples]
        return cls(
            example=np.repeat(np.arange(len(examples)), lengths).astype(np.int64),
            cls=cat(lambda e: e["cls"], np.int8),
            aligned_rank=cat(lambda e: e["aligned_rank"], np.int64),
            base_prob=cat(lambda e: e["base_prob"], np.float64),
            kl=cat(lambda e: e["kl"], np.float64),
            aligned_top1=cat(lambda e: e["aligned_topk_ids"][:, 0], np.int64),
            pos=cat(lambda e: np.arange(len(e["response_ids"])), np.int64),
            rel=cat(lambda e: np.arange(len(e["response_ids"])) / max(len(e["response_ids"]), 1), np.float64),
            greedy_mismatch=cat(lambda e: e["greedy_mismatch"], bool),
            tie=cat(lambda e: e["tie"], bool),
            aligned_entropy=cat(lambda e: e["aligned_entropy"], np.float64),
            base_entropy=cat(lambda e: e["base_entropy"], np.float64),
        )

    def where(self, mask: np.ndarray) -> Positions:
        """The positions where `mask` (bool [N]) holds."""
        return Positions(**{f.name: getattr(self, f.name)[mask] for f in fields(self)})


def _token_table(top1, cls, wanted, tokens, n):
    counts = Counter(top1[cls == wanted].tolist())
    totals = Counter(top1[cls != ALIGNED_ONLY].tolist())
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    return [[tokens.get(t, f"<{t}>"), c, round(c / totals[t], 4)] for t, c in ranked]


def _mean(values) -> float | None:
    finite = np.isfinite(values)
    return round(float(values[finite].mean()), 6) if finite.any() else None


def _curve(groups, P: Positions):
    """Mean metrics of the positions in each group (a list of index arrays)."""
    rows = []
    for idx in groups:
        if not len(idx):
            rows.append({"count": 0, "shifted_rate": None, "mean_kl": None, "mean_base_prob": None,
                         "mean_base_rank": None, "median_base_rank": None})
            continue
        r = P.aligned_rank[idx]
        known = r[r >= 0] + 1
        rows.append({
            "count": int(len(idx)),
            "shifted_rate": round(float((P.cls[idx] == SHIFTED).mean()), 6),
            "mean_kl": _mean(P.kl[idx]),
            "mean_base_prob": _mean(P.base_prob[idx]),
            "mean_base_rank": round(float(known.mean()), 4) if len(known) else None,
            "median_base_rank": float(np.median(known)) if len(known) else None,
        })
    return rows


def _relative_bins(P: Positions, bins: int) -> list[np.ndarray]:
    b = np.minimum((P.rel * bins).astype(np.int64), bins - 1)
    return [np.flatnonzero(b == k) for k in range(bins)]


def _bin_edges(k: int, bins: int) -> list[float]:
    return [round(k / bins, 4), round((k + 1) / bins, 4)]


def class_counts(cls: np.ndarray) -> dict[str, int]:
    """{"unshifted": n, "marginal": n, "shifted": n}: the positions of each class in `cls` (int8 [N], metrics' classes;
    ALIGNED_ONLY positions count in none)."""
    return {name: int((cls == c).sum()) for c, name in zip((UNSHIFTED, MARGINAL, SHIFTED), CLASS_NAMES)}


def ratios(counts: dict[str, int]) -> dict[str, float | None]:
    """Each class's share of the classed positions (None each when there are none: a share of nothing is no number)."""
    n = sum(counts.values())
    return {k: v / n if n else None for k, v in counts.items()}


def block(P: Positions, examples: int, tokens: dict, top_n: int = TOP_TOKENS, bins: int = RELATIVE_BINS,
          absolute: bool = True) -> dict:
    """The class numbers of a set of positions (the corpus, or one slice label's answers): `examples` (given:
    answers without positions count too), `positions`, the three class counts, `ratios`, `top_shifted_tokens`
    and `top_unshifted_tokens` (`[token, count, share of that token's positions]`), and `by_position`
    (`relative`: per 1/bins of the answer; `absolute`, per answer position, when asked)."""
    n = len(P.cls)
    P = P.where(P.cls != ALIGNED_ONLY)  # never classed: counted apart, left out of everything below
    n_classed = len(P.cls)
    counts = class_counts(P.cls)
    by_position = {}
    if absolute:
        max_pos = int(P.pos.max()) + 1 if n_classed else 0
        by_position["absolute"] = _curve([np.flatnonzero(P.pos == t) for t in range(max_pos)], P)
        for t, row in enumerate(by_position["absolute"]):
            row["position"] = t
    by_position["relative"] = _curve(_relative_bins(P, bins), P)
    for k, row in enumerate(by_position["relative"]):
        row["bin"] = _bin_edges(k, bins)
    return {
        "examples": examples,
        "positions": n,
        **counts,
        "ratios": {k: None if v is None else round(v, 6) for k, v in ratios(counts).items()},
        "aligned_only": n - n_classed,
        "top_shifted_tokens": _token_table(P.aligned_top1, P.cls, SHIFTED, tokens, top_n),
        "top_unshifted_tokens": _token_table(P.aligned_top1, P.cls, UNSHIFTED, tokens, top_n),
        "by_position": by_position,
    }


def _share(mask: np.ndarray, P: Positions) -> dict:
    n = int(mask.sum())
    shifted = int((P.cls[mask] == SHIFTED).sum())
    return {"positions": n, "shifted": shifted, "shifted_rate": round(shifted / n, 6) if n else None}


def entropy_section(P: Positions, tokens: dict, top_n: int = TOP_TOKENS, bins: int = RELATIVE_BINS) -> dict | None:
    """Entropies by relative position, the shifted rate of the high-entropy positions against the rest, and the
    forking tokens (the module docstring defines them); None when no position has an aligned entropy."""
    known = np.isfinite(P.aligned_entropy)
    if not known.any():
        return None
    threshold = float(np.quantile(P.aligned_entropy[known], HIGH_ENTROPY_QUANTILE))
    high = known & (P.aligned_entropy >= threshold)
    rest = known & ~high
    rows = []
    for k, idx in enumerate(_relative_bins(P, bins)):
        rows.append({"bin": _bin_edges(k, bins), "count": len(idx),
                     "mean_aligned_entropy": _mean(P.aligned_entropy[idx]), "mean_base_entropy": _mean(P.base_entropy[idx])})
    top1, shifted = P.aligned_top1[high], P.cls[high] == SHIFTED
    counts = Counter(top1.tolist())
    shifted_counts = Counter(top1[shifted].tolist())
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top_n]
    return {
        "unit": "nats",
        "mean_aligned_entropy": _mean(P.aligned_entropy),
        "mean_base_entropy": _mean(P.base_entropy),
        "by_position": {"relative": rows},
        "high_entropy": {"quantile": HIGH_ENTROPY_QUANTILE, "threshold": round(threshold, 6),
                         "share": round(float(high.sum() / known.sum()), 6), **_share(high, P)},
        "rest": _share(rest, P),
        "forking_tokens": [[tokens.get(t, f"<{t}>"), c, round(shifted_counts[t] / c, 4)] for t, c in ranked],
    }


def plain_id(value):
    """An example id as a JSON value (reference pickles may hold numpy scalars)."""
    return value.item() if isinstance(value, np.generic) else value


def top_examples(examples: list[dict], n: int = TOP_EXAMPLES) -> dict:
    """The `n` examples with the highest `shifted_share` and the `n` with the highest `max_kl`, each
    `{id, index, value}`, highest first (ties: data order); answers without positions are left out."""
    out = {}
    for key in ("shifted_share", "max_kl"):
        ranked = sorted((e for e in examples if np.isfinite(e[key])), key=lambda e: -e[key])[:n]
        out[key] = [{"id": plain_id(e["id"]), "index": int(e["index"]), "value": round(float(e[key]), 6)} for e in ranked]
    return out


def _slice_order(label: str):
    return (label == "null", label)


def slices(prepared: dict, P: Positions, top_n: int = TOP_TOKENS, bins: int = RELATIVE_BINS) -> dict:
    """{field: {label: block}} for each slice field of the prepared data, labels sorted ("null" last)."""
    out = {}
    for name in prepared.get("slice_fields", []):
        labels = np.array([ex["slices"][name] for ex in prepared["examples"]], dtype=object)
        out[name] = {}
        for label in sorted(set(labels.tolist()), key=_slice_order):
            chosen = labels == label
            out[name][label] = block(P.where(chosen[P.example]), int(chosen.sum()), prepared["tokens"], top_n, bins,
                                     absolute=False)
    return out


def summarize(prepared: dict, top_n: int = TOP_TOKENS, bins: int = RELATIVE_BINS) -> dict:
    """The summary of a prepared pair (see the module docstring); plain JSON types only."""
    exs = prepared["examples"]
    P = Positions.of(exs)
    threshold = prepared["spike_threshold"]
    return {
        "pair": prepared["pair"],
        "source": prepared["source"],
        "kl": prepared["kl"],
        **block(P, len(exs), prepared["tokens"], top_n, bins),
        "rank_unknown": int(((P.aligned_rank < 0) & (P.cls != ALIGNED_ONLY)).sum()),
        "ties": int(P.tie.sum()),
        "truncated": {"examples": int(sum(e["n_truncated"] > 0 for e in exs)), "tokens": int(sum(e["n_truncated"] for e in exs))},
        "greedy_mismatch": None if prepared["source"] == "reference" else _mismatch(exs, P.greedy_mismatch, P.pos),
        "entropy": entropy_section(P.where(P.cls != ALIGNED_ONLY), prepared["tokens"], top_n, bins),
        "spikes": {
            "threshold": threshold,
            "rule": "KL above the corpus mean + 3 standard deviations",
            "positions": int(sum(e["spikes"] for e in exs)),
            "examples": int(sum(e["spikes"] > 0 for e in exs)),
        },
        "top_examples": top_examples(exs),
        "slices": slices(prepared, P, top_n, bins),
        "models": {side: prepared["meta"][side].get("model") for side in ("i2i", "i2b")},
        "provenance": {side: provenance(prepared["meta"][run], side) for side, run in (("aligned", "i2i"), ("base", "i2b"))},
        "top_k": prepared["top_k"],
        "answers_fingerprint": answers_fingerprint(exs),
    }


def answers_fingerprint(examples: list[dict]) -> str:
    """A short hash (16 hex digits of sha256) of the answers the examples score: each one's index, id (`id_key`) and
    answer text, in order. Two summaries with the same fingerprint scored the same answers (a chain's stages must)."""
    rows = [[int(e["index"]), id_key(e["id"]), e["answer_text"]] for e in examples]
    return hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode()).hexdigest()[:16]


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


def summary_bytes(summary: dict) -> bytes:
    """summary.json's content: indented JSON, UTF-8."""
    return (json.dumps(summary, indent=1, ensure_ascii=False) + "\n").encode()


def write_summary(path: str | Path, summary: dict) -> None:
    atomic_write_bytes(path, summary_bytes(summary))


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _num(v, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def _tokens(rows, n: int) -> str:
    return ", ".join(f"{show_token(t)!s} {c} ({100 * r:.0f}%)" for t, c, r in rows[:n]) or "-"


def _analyses_lines(s: dict, tokens: int) -> list[str]:
    """Entropy, spikes, the most shifted examples and one line per slice label."""
    lines = []
    e = s["entropy"]
    if e is None:
        lines.append("  entropy: unknown (the records hold no entropies)")
    else:
        hi, rest = e["high_entropy"], e["rest"]
        lines.append(f"  entropy (nats): aligned {_num(e['mean_aligned_entropy'])}, base {_num(e['mean_base_entropy'])} "
                     f"on average; shifted: {_pct(hi['shifted_rate'])} of the {_pct(hi['share'])} highest-entropy positions "
                     f"of the aligned model (entropy >= {hi['threshold']:.3f}), {_pct(rest['shifted_rate'])} of the rest")
        lines.append(f"  forking tokens (count at high-entropy positions, shifted share): {_tokens(e['forking_tokens'], tokens)}")
    sp = s["spikes"]
    if sp["threshold"] is not None:
        lines.append(f"  spikes (KL > {sp['threshold']:.4g}, {sp['rule']}): {sp['positions']:,} positions in {sp['examples']} "
                     "examples")
    for key, title in (("shifted_share", "shifted share"), ("max_kl", "max KL")):
        shown = ", ".join(f"{id_key(x['id'])} ({x['value']:.3g})" for x in s["top_examples"][key][:5])
        lines.append(f"  most shifted examples by {title}: {shown or '-'}")
    for name, labels in s["slices"].items():
        for label, b in labels.items():
            r = b["ratios"]
            lines.append(f"  {name}={label}: {b['examples']} examples, {b['positions']:,} positions, "
                         f"{_pct(r['unshifted'])} / {_pct(r['marginal'])} / {_pct(r['shifted'])} unshifted / marginal / shifted; "
                         f"most shifted: {_tokens(b['top_shifted_tokens'], 6)}")
    return lines


def format_summary(s: dict, tokens: int = 12) -> str:
    """The summary as a terminal table."""
    lines = [f"{s['pair']}: {s['examples']} examples, {s['positions']:,} answer positions"]
    for name in CLASS_NAMES:
        lines.append(f"  {name:<10} {s[name]:>9,}  {_pct(s['ratios'][name]):>6}")
    gm = s["greedy_mismatch"]
    if gm is None:
        lines.append("  greedy mismatches: unknown (reference pickles hold no answer token ids)")
    elif gm["positions"]:
        lines.append(f"  greedy mismatches: {gm['positions']:,} positions ({100 * gm['ratio']:.2f}%) in {gm['examples']} "
                     "examples:"
                     " there the answer token is not the aligned model's top-1")
        first = gm["first_position"]
        lines.append(f"    at position 0: {first['mismatches']} of {first['examples']} examples ({100 * first['ratio']:.1f}%); "
                     f"after it: {100 * gm['rest_ratio']:.2f}% of positions")
    if s.get("aligned_only"):
        lines.append(f"  aligned_only: {s['aligned_only']:,} positions not classed: a token there (or earlier in the answer) "
                     "exists only in the aligned vocabulary; the ratios are of the other positions")
    cut = s.get("truncated") or {}
    if cut.get("examples"):
        lines.append(f"  truncated: {cut['examples']} answers were cut to fit the context, {cut['tokens']:,} answer tokens not "
                     "scored (n_truncated)")
    if s.get("ties"):
        lines.append(f"  ties: at {s['ties']:,} positions the aligned top-1 has exactly the base log-prob of another token "
                     "(ranks count only tokens strictly more likely)")
    if s.get("rank_unknown"):
        lines.append(f"  {s['rank_unknown']:,} positions have base ranks beyond the stored top-k (reference pickles, or an i2b "
                     "run that ranked another model's top-1 tokens): "
                     "left out of the mean base rank (too low) and base probability (too high) by position")
    for key, title in (("top_shifted_tokens", "most shifted"), ("top_unshifted_tokens", "most unshifted")):
        lines.append(f"  {title} tokens (count, share of the token's positions): {_tokens(s[key], tokens)}")
    lines.append(f"  by relative position (KL: {s['kl']}):")
    lines.append("    position   shifted   mean KL   base prob   base rank")
    for row in s["by_position"]["relative"]:
        lo, hi = row["bin"]
        fmt = lambda v, f: format(v, f) if v is not None else "-"  # noqa: E731
        rate = f"{100 * row['shifted_rate']:6.1f}%" if row["count"] else "      -"
        lines.append(f"    {lo:.1f}-{hi:.1f}    {rate}  {fmt(row['mean_kl'], '8.3f')}"
                     f"  {fmt(row['mean_base_prob'], '10.3f')}  {fmt(row['mean_base_rank'], '10.1f')}")
    lines.extend(_analyses_lines(s, tokens))
    return "\n".join(lines)
