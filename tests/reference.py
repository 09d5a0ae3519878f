"""The slow, obviously-correct oracle: the reference implementation's per-token loop.

For every answer token the whole model runs again on the growing prefix and the last position's
full distribution is kept; nothing is batched, padded, chunked or cached.
"""

from __future__ import annotations

import math

import numpy as np
import torch


@torch.no_grad()
def reference_logprobs(model, prompt_ids, answer_ids) -> np.ndarray:
    """Full-vocabulary log-probabilities at each answer position: float32 [T, V]."""
    input_ids = torch.tensor([list(prompt_ids)], dtype=torch.long)
    rows = []
    for token in answer_ids:
        logits = model(input_ids).logits[:, -1, :]
        rows.append(torch.log_softmax(logits.float(), dim=-1)[0])
        input_ids = torch.cat([input_ids, torch.tensor([[int(token)]])], dim=1)
    if not rows:
        return np.zeros((0, model.config.vocab_size), dtype=np.float32)
    return torch.stack(rows).numpy()


def rank_bounds(logp_row: np.ndarray, value: float, tol: float) -> tuple[int, int]:
    """The 0-based ranks a token of log-prob `value` may have, counting tokens within `tol` as ties."""
    return int((logp_row > value + tol).sum()), int((logp_row > value - tol).sum())


def assert_topk_matches(ids: np.ndarray, vals: np.ndarray, ref: np.ndarray, tol: float = 1e-4) -> None:
    """ids/vals [T, k] from the fast path against the oracle's full distributions ref [T, V].

    The values must be the k largest log-probs (within tol), in descending order, and each id must be
    a token that really has that log-prob: ids may differ from a sort of ref only among exact ties.
    """
    k = ids.shape[1]
    assert ids.shape == vals.shape == (ref.shape[0], k)
    expected = -np.sort(-ref, axis=1)[:, :k]
    np.testing.assert_allclose(vals, expected, atol=tol, rtol=0)
    np.testing.assert_allclose(np.take_along_axis(ref, ids.astype(np.int64), axis=1), vals, atol=tol, rtol=0)
    assert all(len(set(row)) == k for row in ids.tolist()), "duplicate ids in a top-k row"


# -- the reference's metric code (AlignTDS src/compute_dist_diff.py), ported as is, bugs included ---------------

def ref_norm_prob(token_list):
    max_logit = max(token["logit"] for token in token_list)
    sum_exp_logit = sum(math.exp(token["logit"] - max_logit) for token in token_list)
    for token in token_list:
        token["norm_prob"] = math.exp(token["logit"] - max_logit) / sum_exp_logit
    return token_list


def ref_compute_similarity(token_list_1, token_list_2, metric="jaccard", top_k=100):
    """token_list_1: the base model's candidates, token_list_2: the aligned model's (dicts with token_id, token, logit)."""
    token_list_1 = ref_norm_prob(token_list_1)
    token_list_2 = ref_norm_prob(token_list_2)
    list1 = [i["token"] for i in token_list_1[:top_k]]
    list2 = [i["token"] for i in token_list_2[:top_k]]
    set1, set2 = set(list1), set(list2)
    similarity = 0.0
    if metric == "jaccard":
        similarity = len(set1 & set2) / len(set1 | set2)
    elif metric == "weighted_sum":
        for t in set1 | set2:
            w1 = token_list_1[list1.index(t)]["norm_prob"] if t in list1 else 0
            w2 = token_list_2[list2.index(t)]["norm_prob"] if t in list2 else 0
            similarity += w1 * w2
    elif metric == "KL":
        for t in set1 | set2:
            w1 = token_list_1[list1.index(t)]["norm_prob"] if t in list1 else 0
            w2 = token_list_2[list2.index(t)]["norm_prob"] if t in list2 else 0
            if w1 > 0 and w2 > 0:
                similarity += w1 * math.log(w1 / w2)
    elif metric == "nDCG":
        relevance_scores = {}
        for i, token in enumerate(token_list_2):
            relevance_scores[token["token_id"]] = 1 / math.log2(i + 2)
        dcg = 0.0
        for i, token in enumerate(token_list_1):
            dcg += relevance_scores.get(token["token_id"], 0.0) / math.log2(i + 2)
        ideal_scores = sorted(relevance_scores.values(), reverse=True)
        idcg = sum(ideal_scores[i] / math.log2(i + 2) for i in range(len(token_list_1)))
        similarity = 0.0 if idcg == 0 else dcg / idcg
    elif metric == "top_rank":
        top_token = list2[0]
        similarity = list1.index(top_token) if top_token in list1 else top_k
    elif metric == "top_prob":
        top_token = list2[0]
        similarity = token_list_1[list1.index(top_token)]["norm_prob"] if top_token in list1 else 0.0
    return similarity
