"""The slow, obviously-correct oracle: the reference implementation's per-token loop.

For every answer token the whole model runs again on the growing prefix and the last position's
full distribution is kept; nothing is batched, padded, chunked or cached.
"""

from __future__ import annotations

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
