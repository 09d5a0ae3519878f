"""What a merged i2b file says, in a few numbers: class ratios, where the shifted tokens are, how early.

Classes, by the base rank of the aligned model's top-1 token (`aligned_rank`): 0 unshifted, 1-2 marginal,
>= 3 shifted. With a list of planted style phrases (the demo pair's `style.json`), each answer position is
also one of:

- **style**: the position's answer token overlaps (ignoring its surrounding whitespace) a character span
  where a planted phrase occurs in the answer text;
- **content**: any other token with a letter or digit in it (a word of the answer's content);
- **other**: the rest: punctuation and whitespace outside the phrases, and special tokens (the EOS).

The position's token is the answer's token there (`response_ids`), which for greedy answers is the
aligned model's top-1. Character spans are cut from the decoded answer (`tokentext.answer_spans`), so they
are the spans of exactly the tokens that were scored.

    python scripts/demo_findings.py saved_logits/just_eval/demo_tp/demo-i2b.pkl --style models/demo/style.json

    from aligntds.findings import figures, format_figures
    print(format_figures(figures(load_records(path), tokenizer, phrases)))

The class counts are the corpus summary's (`aligntds.summary.class_counts`); these figures add the position kinds.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from .metrics import CLASS_NAMES as CLASSES
from .metrics import shift_class
from .summary import class_counts
from .tokentext import answer_spans, token_strings

KINDS = ("style", "content", "other")


def token_spans(tokenizer, ids: Sequence[int]) -> tuple[str, list[tuple[int, int]]]:
    """The decoded text of `ids` and each token's [start, end) character span in it (`tokentext.answer_spans`:
    a character split over several byte-level tokens is in the span of the token that completes it)."""
    pieces = answer_spans(tokenizer, ids)
    ends = np.cumsum([len(p) for p in pieces]).tolist()
    return "".join(pieces), list(zip([0, *ends[:-1]], ends))


def phrase_spans(text: str, phrases: Sequence[str]) -> list[tuple[int, int]]:
    """Non-overlapping [start, end) spans of every occurrence of the phrases in `text` (longer phrases first)."""
    spans: list[tuple[int, int]] = []
    for phrase in sorted(set(p for p in phrases if p), key=len, reverse=True):
        at = text.find(phrase)
        while at >= 0:
            end = at + len(phrase)
            if all(end <= s or at >= e for s, e in spans):
                spans.append((at, end))
            at = text.find(phrase, at + 1)
    return sorted(spans)


def position_kinds(tokenizer, ids: Sequence[int], phrases: Sequence[str]) -> np.ndarray:
    """int8 [T]: 0 style, 1 content, 2 other, for each answer token (see the module docstring)."""
    text, spans = token_spans(tokenizer, ids)
    styled = phrase_spans(text, phrases)
    special = set(tokenizer.all_special_ids)
    kinds = np.full(len(ids), 2, dtype=np.int8)
    for t, (s, e) in enumerate(spans):
        if int(ids[t]) in special:
            continue
        piece = text[s:e]
        s2 = s + (len(piece) - len(piece.lstrip()))
        e2 = e - (len(piece) - len(piece.rstrip()))
        if s2 < e2 and any(s2 < pe and e2 > ps for ps, pe in styled):
            kinds[t] = 0
        elif any(c.isalnum() for c in piece):
            kinds[t] = 1
    return kinds


def _rate(num: int, den: int) -> float:
    return num / den if den else float("nan")


def figures(i2b_records: Sequence[dict], tokenizer, phrases: Sequence[str] = (), early: float = 0.2, top: int = 10) -> dict:
    """Figures of one i2b run (see the module docstring for the classes and kinds).

    `early`: the first ceil(early * T) positions of each answer are "early"; the shifted rate there is
    compared with the rest's.
    """
    cls, kind, is_early, shifted_tokens = [], [], [], Counter()
    for rec in i2b_records:
        ids = [int(i) for i in rec["response_ids"]]
        if not ids:
            continue
        c = shift_class(rec["aligned_rank"])
        cls.append(c)
        kind.append(position_kinds(tokenizer, ids, phrases))
        n_early = math.ceil(early * len(ids))
        is_early.append(np.arange(len(ids)) < n_early)
        shifted_tokens.update(ids[t] for t in np.flatnonzero(c == 2))
    c = np.concatenate(cls) if cls else np.zeros(0, np.int8)
    k = np.concatenate(kind) if kind else np.zeros(0, np.int8)
    e = np.concatenate(is_early) if is_early else np.zeros(0, bool)
    n, shifted = len(c), c == 2
    out = {"answers": len(cls), "positions": n, "early": early, "style_phrases": len({p for p in phrases if p})}
    counts = class_counts(c)
    out.update({name: _rate(counts[name], n) for name in CLASSES})
    out.update({f"{name}_count": counts[name] for name in CLASSES})
    out.update({f"{name}_positions": int((k == i).sum()) for i, name in enumerate(KINDS)})
    out["style_share_of_shifted"] = _rate(int((shifted & (k == 0)).sum()), int(shifted.sum()))
    out["content_unshifted"] = _rate(int(((c == 0) & (k == 1)).sum()), int((k == 1).sum()))
    out["style_shifted"] = _rate(int((shifted & (k == 0)).sum()), int((k == 0).sum()))
    out["early_shifted"] = _rate(int((shifted & e).sum()), int(e.sum()))
    out["late_shifted"] = _rate(int((shifted & ~e).sum()), int((~e).sum()))
    shown = token_strings(tokenizer, list(shifted_tokens))  # a part of a character as its bytes, <0xF0><0x9F>
    out["top_shifted_tokens"] = [(shown[i], n) for i, n in shifted_tokens.most_common(top)]
    return out


def format_figures(s: dict) -> str:
    """A few lines for a terminal (the style figures only when style phrases were given)."""
    pct = lambda x: "n/a" if x != x else f"{100 * x:.1f}%"  # noqa: E731  (x != x: NaN)
    if s.get("style_phrases", 1):
        kinds = (f"positions: {s['style_positions']} style, {s['content_positions']} content, {s['other_positions']} other; "
                 f"style share of shifted {pct(s['style_share_of_shifted'])}, content unshifted {pct(s['content_unshifted'])}")
    else:
        kinds = (f"positions: {s['content_positions']} content, {s['other_positions']} other (no style phrases); "
                 f"content unshifted {pct(s['content_unshifted'])}")
    lines = [
        f"{s['answers']} answers, {s['positions']} positions: "
        + ", ".join(f"{name} {s[name + '_count']} ({pct(s[name])})" for name in CLASSES),
        kinds,
        f"shifted in the first {100 * s['early']:.0f}% of each answer's positions {pct(s['early_shifted'])}, "
        f"in the rest {pct(s['late_shifted'])}",
        "most shifted tokens: " + ", ".join(f"{t!r} {n}" for t, n in s["top_shifted_tokens"]),
    ]
    return "\n".join(lines)
