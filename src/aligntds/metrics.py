"""Per-position metrics between the base and the aligned distribution, vectorized over positions.

Classes come from the exact rank of the aligned model's top-1 token in the base distribution:

    0 unshifted (rank 0), 1 marginal (rank 1-2), 2 shifted (rank >= 3)      (0-based ranks)

The top-k metrics keep the reference's definitions (AlignTDS `compute_dist_diff.compute_similarity`):
probabilities are renormalized over each side's stored top-k (k_stored, usually 30), then the first k
entries of each list are compared (k = 10 or k_stored). With p_b the base and p_a the aligned
renormalized probabilities, B_k and A_k the first k ids of each list:

    jaccard@k = |B_k ∩ A_k| / |B_k ∪ A_k|
    ws@k      = sum over t in B_k ∩ A_k of p_b(t) p_a(t)                 (weighted sum)
    kl@k      = sum over t in B_k ∩ A_k of p_b(t) log(p_b(t) / p_a(t))   (truncated KL(base || aligned); as in the
                reference, a token of probability 0 on either side adds nothing)
    ndcg@k    = DCG / IDCG, relevance of a base entry = 1 / log2(2 + its index in A_k), discount 1 / log2(2 + i)
    tr@k      = index of the aligned top-1 in B_k, or k when absent      (top rank)
    tp@k      = p_b of the aligned top-1, or 0 when absent               (top prob)

Tokens are matched by id (the reference matched decoded strings, which merges distinct tokens), and
nDCG@k cuts both lists at k (the reference's nDCG ignored k and always used the whole lists).

Shapes: N positions, K stored candidates per side, k <= K compared.
"""

from __future__ import annotations

import numpy as np

UNSHIFTED, MARGINAL, SHIFTED = 0, 1, 2
ALIGNED_ONLY = -1  # the `cls` of a position never classed: a token there exists only in the aligned vocabulary
CLASS_NAMES = ("unshifted", "marginal", "shifted")
TOPK_METRICS = ("kl", "jaccard", "ws", "ndcg", "tr", "tp")


def shift_class(aligned_rank: np.ndarray) -> np.ndarray:
    """int8 [N] class of each position from the 0-based base rank of the aligned top-1 token."""
    rank = np.asarray(aligned_rank)
    return np.where(rank == 0, UNSHIFTED, np.where(rank <= 2, MARGINAL, SHIFTED)).astype(np.int8)


def renormalize(topk_logprobs: np.ndarray) -> np.ndarray:
    """float64 [N, K]: probabilities renormalized over the stored top-K (the reference's norm_prob)."""
    lp = np.asarray(topk_logprobs, dtype=np.float64)
    z = np.exp(lp - lp.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def topk_metrics(
    base_topk_ids: np.ndarray, base_topk_logprobs: np.ndarray, aligned_topk_ids: np.ndarray, aligned_topk_logprobs: np.ndarray,
    k: int, chunk: int = 4096,
) -> dict[str, np.ndarray]:
    """The reference's top-k metrics at every position: {name: float64 [N]} for TOPK_METRICS.

    base_topk_ids, aligned_topk_ids: int [N, K] (descending by probability); *_topk_logprobs: float [N, K].
    """
    n, big_k = base_topk_ids.shape
    if not 1 <= k <= big_k:
        raise ValueError(f"k={k} must be between 1 and the stored top-k {big_k}")
    out = {m: np.empty(n, dtype=np.float64) for m in TOPK_METRICS}
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        part = _topk_chunk(base_topk_ids[s:e], renormalize(base_topk_logprobs[s:e]), aligned_topk_ids[s:e],
                           renormalize(aligned_topk_logprobs[s:e]), k)
        for m in TOPK_METRICS:
            out[m][s:e] = part[m]
    return out


def _topk_chunk(b_ids, pb, a_ids, pa, k):
    b_ids, a_ids, pb, pa = b_ids[:, :k], a_ids[:, :k], pb[:, :k], pa[:, :k]
    match = b_ids[:, :, None] == a_ids[:, None, :]  # [n, k, k]: base entry i is aligned entry j
    shared = match.any(axis=2)  # [n, k]: base entry i is in the aligned list (ids are unique within a list)
    j = match.argmax(axis=2)  # [n, k]: ... at this index
    pa_of_b = np.where(shared, np.take_along_axis(pa, j, axis=1), 0.0)  # p_a of each base entry, 0 when absent
    both = shared & (pb > 0) & (pa_of_b > 0)  # as the reference: a token of probability 0 on either side adds nothing
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_terms = np.where(both, pb * np.log(pb / pa_of_b), 0.0)
    discount = 1.0 / np.log2(np.arange(k) + 2.0)  # [k]
    relevance = np.where(shared, discount[j], 0.0)  # 1/log2(2 + j) of base entry i
    idcg = (discount * discount).sum()
    n_shared = shared.sum(axis=1)
    in_base = b_ids == a_ids[:, :1]  # [n, k]: where the aligned top-1 sits in the base list
    found = in_base.any(axis=1)
    where = in_base.argmax(axis=1)
    return {
        "jaccard": n_shared / (2 * k - n_shared),
        "ws": (pb * pa_of_b).sum(axis=1),
        "kl": kl_terms.sum(axis=1),
        "ndcg": (relevance * discount[None, :]).sum(axis=1) / idcg,
        "tr": np.where(found, where, k).astype(np.float64),
        "tp": np.where(found, np.take_along_axis(pb, where[:, None], axis=1)[:, 0], 0.0),
    }
