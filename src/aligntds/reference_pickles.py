"""The reference implementation's merged pickles (AlignTDS `logit_analysis.py`), read by data_prep so that existing
runs can be re-rendered: a list of `{"id", "prompt", "probe_text", "results": [{"tokens": [{"token_id", "token",
"logit", "prob"}, ...], "prefix"}, ...]}`, one entry per answer position, through the same restricted loader as every
record file.

They hold neither the answer's token ids nor a tokenizer's name: the shown answer token is the aligned top-1 (the
reference's pages assumed greedy answers), the token strings are the pickles' own, and a base rank beyond the stored
candidates is unknown (-1; the class is still exact, it needs only the top 3).

    examples, token_strings, cut = join_reference(i2i_records, i2b_records, i2i_path, i2b_path, truncate=False)
"""

from __future__ import annotations

import numpy as np

from .data import check_json_text
from .errors import UserError
from .join import Joined, ranks_in_topk

PROB_SLACK = 1e-6  # a stored probability may exceed 1 by float32 rounding, no more


def reference_side(rec: dict, path, n: int) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """One side of record n of a reference pickle: its candidates' ids int64 [T, K], log-probs float64 [T, K] (of the
    stored full-softmax probabilities) and {id: token string}.

    Raises UserError naming the file, the record and the position for a record not in the reference's format, a `prob`
    that is not a probability (NaN, ±inf, negative, above 1), and a lone surrogate in its texts or token strings."""
    try:
        rows = [pos["tokens"] for pos in rec["results"]]
        ids = np.array([[int(c["token_id"]) for c in row] for row in rows], dtype=np.int64)
        probs = np.array([[float(c["prob"]) for c in row] for row in rows], dtype=np.float64)
        strings = {int(c["token_id"]): str(c["token"]) for row in rows for c in row}
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path}: record {n} is not in the reference's format ({type(e).__name__}: {e})") from None
    bad = ~np.isfinite(probs) | (probs < 0) | (probs > 1 + PROB_SLACK)
    if bad.any():
        t, c = (int(x) for x in np.argwhere(bad)[0])
        raise UserError(f"{path}: record {n} (id={rec.get('id')!r}), position {t}: candidate {c} (token_id {ids[t, c]}) has "
                        f"prob {probs[t, c]}, not a probability (finite, between 0 and 1)")
    check_json_text({k: rec.get(k) for k in ("id", "prompt", "probe_text")}, f"{path}: record {n}")
    check_json_text({str(i): text for i, text in strings.items()}, f"{path}: record {n}, the token string of id")
    if not rows:
        return np.zeros((0, 1), np.int64), np.zeros((0, 1)), strings
    with np.errstate(divide="ignore"):
        return ids, np.log(probs), strings


def join_reference(a_recs, b_recs, a_path, b_path, truncate: bool) -> tuple[list[Joined], dict[int, str], int]:
    """The reference's records: the shown answer token is the aligned top-1 (its pages assumed greedy
    answers), ranks beyond the stored top-k are unknown, base probabilities are the stored full-softmax ones."""
    if len(a_recs) != len(b_recs):
        raise UserError(f"{a_path} holds {len(a_recs)} examples, {b_path} {len(b_recs)}: not the same data")
    from tqdm.auto import tqdm

    out, strings, cut = [], {}, 0
    pairs = tqdm(zip(a_recs, b_recs), total=len(a_recs), desc="reading reference records", unit="ex", disable=len(a_recs) < 100)
    for n, (a, b) in enumerate(pairs):
        if a.get("id") != b.get("id"):
            raise UserError(f"{b_path}: record {n} has id {b.get('id')!r}, {a_path} has {a.get('id')!r}")
        aligned_ids, aligned_lp, aligned_strings = reference_side(a, a_path, n)
        base_ids, base_lp, base_strings = reference_side(b, b_path, n)
        strings.update(aligned_strings), strings.update(base_strings)
        if len(aligned_ids) != len(base_ids):
            if not truncate:
                raise UserError(
                    f"{b_path}: record {n} (id={a.get('id')}) has {len(base_ids)} positions, {a_path} has {len(aligned_ids)} "
                    "(the reference re-encoded the answer text); --truncate_mismatched cuts both to the shorter, as the "
                    "reference did"
                )
            cut += 1
            t = min(len(aligned_ids), len(base_ids))
            aligned_ids, aligned_lp, base_ids, base_lp = aligned_ids[:t], aligned_lp[:t], base_ids[:t], base_lp[:t]
        rank, lp = ranks_in_topk(aligned_ids[:, 0], base_ids, base_lp)
        out.append(Joined(
            index=n, id=a.get("id"), aligned_prompt=a.get("prompt", ""), base_prompt=b.get("prompt", ""),
            answer_text=a.get("probe_text", ""), response_ids=aligned_ids[:, 0], aligned_topk_ids=aligned_ids,
            aligned_topk_logprobs=aligned_lp, base_topk_ids=base_ids, base_topk_logprobs=base_lp, aligned_rank=rank,
            aligned_logprob=lp, greedy_mismatch=np.zeros(len(aligned_ids), dtype=bool),
        ))
    return out, strings, cut
