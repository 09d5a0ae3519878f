"""Metric functions: hand-computed values, and the reference's formulas (tests/reference.py) on random lists."""

from __future__ import annotations

import math

import numpy as np
import pytest

from aligntds.metrics import renormalize, shift_class, topk_metrics
from reference import ref_compute_similarity

REF_NAMES = {"jaccard": "jaccard", "ws": "weighted_sum", "kl": "KL", "tr": "top_rank", "tp": "top_prob"}


def test_shift_classes_from_ranks():
    assert shift_class(np.array([0, 1, 2, 3, 4, 1000])).tolist() == [0, 1, 1, 2, 2, 2]


def test_hand_computed_values():
    # Base top-3: ids 5, 6, 7 with probabilities .5 .3 .2; aligned top-3: 6, 5, 9 with .6 .3 .1 (already normalized).
    b_ids, a_ids = np.array([[5, 6, 7]]), np.array([[6, 5, 9]])
    pb, pa = np.log(np.array([[0.5, 0.3, 0.2]])), np.log(np.array([[0.6, 0.3, 0.1]]))
    m = {k: v[0] for k, v in topk_metrics(b_ids, pb, a_ids, pa, k=3).items()}
    assert m["jaccard"] == pytest.approx(2 / 4)  # {5, 6} of {5, 6, 7, 9}
    assert m["ws"] == pytest.approx(0.5 * 0.3 + 0.3 * 0.6)
    assert m["kl"] == pytest.approx(0.5 * math.log(0.5 / 0.3) + 0.3 * math.log(0.3 / 0.6))
    assert m["tr"] == 1 and m["tp"] == pytest.approx(0.3)  # the aligned top-1 (6) is the base's 2nd
    d = [1 / math.log2(i + 2) for i in range(3)]
    dcg = d[1] * d[0] + d[0] * d[1]  # base entry 0 (id 5) is aligned entry 1; base entry 1 (id 6) is aligned entry 0
    assert m["ndcg"] == pytest.approx(dcg / sum(x * x for x in d))
    # At k=1 only the first entries count: 5 vs 6, disjoint.
    m1 = {k: v[0] for k, v in topk_metrics(b_ids, pb, a_ids, pa, k=1).items()}
    assert m1["jaccard"] == 0 and m1["ws"] == 0 and m1["kl"] == 0 and m1["tr"] == 1 and m1["tp"] == 0 and m1["ndcg"] == 0


def test_identical_lists():
    ids = np.array([[3, 1, 2, 8]])
    lp = np.log(np.array([[0.4, 0.3, 0.2, 0.1]]))
    m = {k: v[0] for k, v in topk_metrics(ids, lp, ids, lp, k=4).items()}
    assert m["jaccard"] == 1 and m["kl"] == pytest.approx(0) and m["ndcg"] == pytest.approx(1) and m["tr"] == 0
    assert m["tp"] == pytest.approx(0.4) and m["ws"] == pytest.approx(0.16 + 0.09 + 0.04 + 0.01)


def test_renormalized_over_the_stored_list():
    p = renormalize(np.log(np.array([[0.2, 0.1, 0.1]])))  # full-vocabulary probs of the stored top-3
    np.testing.assert_allclose(p, [[0.5, 0.25, 0.25]])


@pytest.mark.parametrize("k", [10, 30])
def test_against_the_reference_formulas(k):
    rng = np.random.default_rng(0)
    vocab, big_k, n = 60, 30, 200
    b_ids = np.array([rng.permutation(vocab)[:big_k] for _ in range(n)])
    a_ids = np.array([np.where(rng.random(big_k) < 0.5, b, rng.permutation(vocab)[:big_k]) for b in b_ids])
    a_ids = np.array([list(dict.fromkeys(row.tolist() + rng.permutation(vocab).tolist()))[:big_k] for row in a_ids])
    b_lp = -np.sort(rng.exponential(2, (n, big_k)), axis=1) - 1
    a_lp = -np.sort(rng.exponential(2, (n, big_k)), axis=1) - 1
    ours = topk_metrics(b_ids, b_lp, a_ids, a_lp, k)

    def as_list(ids, lps, cut=None):  # the reference's candidates: one dict per token, logits = log-probs
        rows = [{"token_id": int(i), "token": f"tok{i}", "logit": float(lp)} for i, lp in zip(ids, lps)]
        return rows[:cut] if cut else rows

    for row in range(n):
        for ours_name, ref_name in REF_NAMES.items():
            ref = ref_compute_similarity(as_list(b_ids[row], b_lp[row]), as_list(a_ids[row], a_lp[row]), ref_name, top_k=k)
            assert ours[ours_name][row] == pytest.approx(ref, abs=1e-9), (ours_name, row)
        # The reference's nDCG ignored top_k (it always ranked whole lists); ours cuts both lists at k, which
        # is its formula applied to the first k entries (probabilities do not enter nDCG).
        ref = ref_compute_similarity(as_list(b_ids[row], b_lp[row], k), as_list(a_ids[row], a_lp[row], k), "nDCG")
        assert ours["ndcg"][row] == pytest.approx(ref, abs=1e-9)


def test_tokens_of_probability_zero_add_nothing_to_kl():
    """A stored log-prob of -inf (probability 0: a token its model rules out) gave 0 * log 0 = NaN or inf; the reference
    adds a token's term only when both probabilities are positive."""
    b_ids, a_ids = np.array([[1, 2, 3, 4]]), np.array([[2, 1, 4, 3]])
    with np.errstate(divide="ignore"):
        b_lp = np.log(np.array([[0.6, 0.3, 0.1, 0.0]]))  # id 4: 0 in the base list
    with np.errstate(divide="ignore"):
        a_lp = np.log(np.array([[0.7, 0.3, 0.0, 0.0]]))  # ids 4 and 3: 0 in the aligned list
    ours = topk_metrics(b_ids, b_lp, a_ids, a_lp, 4)
    rows = [[{"token_id": int(i), "token": f"t{i}", "logit": float(lp)} for i, lp in zip(ids, lps)]
            for ids, lps in ((b_ids[0], b_lp[0]), (a_ids[0], a_lp[0]))]
    ref = ref_compute_similarity(*rows, "KL", top_k=4)
    assert np.isfinite(ours["kl"][0]) and ours["kl"][0] == pytest.approx(ref, abs=1e-12)
