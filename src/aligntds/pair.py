"""Exact paired scoring: the aligned and the base model in one process, compared over the whole vocabulary.

At every answer position both models' full next-token distributions are in memory together (a chunk
of positions at a time, float32 [n, V] each, on one device), so the divergences are exact, not
approximations from stored top-k lists; full distributions are never copied to the host.

Extended vocabularies: when one tokenizer is the other's plus appended tokens (an aligned model's
`<|im_end|>`), ids 0..S-1 mean the same text in both (S = `shared`). Each side's own statistics are
over its own tokens, the aligned top-1's `aligned_rank` over the base model's tokens (-1 when the
base model does not have it), and the divergences over the S shared ids, both distributions
renormalized there (over the whole vocabulary when both models have the same tokens).

Shapes: B pairs in a batch, N answer positions in it, H hidden size, V vocabulary, k = top_k.
P = P_aligned (the aligned model on its chat prompt), Q = P_base (the base model on the bare query).

    scorer = PairScorer(aligned_model, base_model, top_k=30, batch_tokens=8192)
    stats = scorer.score([PairRequest(Request(aligned_prompt_ids, answer_ids), Request(base_prompt_ids, answer_ids))])
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

import numpy as np
import torch
import torch.nn.functional as F

from . import models
from .errors import UserError
from .requests import PairRequest, Request  # noqa: F401  (Request: PairRequest's sides, imported from here too)
from .schema import BASE_PREFIX, DIVERGENCES, SIDE_STATS, array_dtypes
from .scoring import RANKED_STATS, STAT_DTYPES, BatchedScorer, Scorer, device_defaults, empty_stats, log_softmax_stats, to_host

# Log-probs below this (zero probability in float32) are floored, so that a token one model rules out
# entirely (log-prob -inf) adds a large finite term to a divergence instead of inf or nan.
LOGPROB_FLOOR = -1e4
LOG2 = math.log(2)

PAIR_CASTS = {
    **STAT_DTYPES,
    **array_dtypes(BASE_PREFIX + k for k in SIDE_STATS),
    **array_dtypes(DIVERGENCES),
    "base_finite": "bool",
}


def divergences(lp_p: torch.Tensor, lp_q: torch.Tensor) -> dict[str, torch.Tensor]:
    """Exact divergences between two full-vocabulary distributions at each of n positions.

    lp_p, lp_q: float32 [n, V] log-probabilities of P (aligned) and Q (base), overwritten (floored at
    LOGPROB_FLOOR). Returns float32 [n] each, natural log:
      kl_aligned_base = KL(P||Q) = sum p (log p - log q)
      kl_base_aligned = KL(Q||P) = sum q (log q - log p)
      js = JS(P, Q) = (KL(P||M) + KL(Q||M)) / 2, M = (P + Q) / 2, in [0, log 2]
      tv = sum |p - q| / 2, in [0, 1]
    With d = log p - log q: log(p / m) = log 2 - softplus(-d) and log(q / m) = log 2 - softplus(d),
    so JS needs no log of a sum and sums small terms (no cancellation of two numbers near log 2).
    Rounding can put a value a hair outside its range: values are clamped to it.
    """
    lp_p.clamp_(min=LOGPROB_FLOOR)
    lp_q.clamp_(min=LOGPROB_FLOOR)
    d = lp_p - lp_q
    p, q = lp_p.exp_(), lp_q.exp_()  # the log-probs are no longer needed
    kl_pq = torch.linalg.vecdot(p, d)
    kl_qp = -torch.linalg.vecdot(q, d)
    js = torch.linalg.vecdot(p, F.softplus(-d).neg_().add_(LOG2))  # KL(P||M)
    js += torch.linalg.vecdot(q, F.softplus(d).neg_().add_(LOG2))  # + KL(Q||M)
    js *= 0.5
    tv = 0.5 * torch.sub(p, q, out=d).abs_().sum(dim=1)
    return {
        "kl_aligned_base": kl_pq.clamp_(min=0),
        "kl_base_aligned": kl_qp.clamp_(min=0),
        "js": js.clamp_(0, LOG2),
        "tv": tv.clamp_(0, 1),
    }


def shared_logprobs(logprobs: torch.Tensor, shared: int) -> torch.Tensor:
    """log-probs [n, V] -> [n, shared]: the distribution restricted to ids 0..shared-1 and renormalized there
    (the input itself, not a copy, when shared == V)."""
    if shared >= logprobs.shape[1]:
        return logprobs
    kept = logprobs[:, :shared]
    return kept - kept.logsumexp(dim=1, keepdim=True)


def pair_stats(
    logits_p: torch.Tensor, logits_q: torch.Tensor, targets: torch.Tensor, top_k: int, shared: int | None = None
) -> dict[str, torch.Tensor]:
    """Everything a pair record holds at n positions, from both models' logits (float32 [n, V_p] and
    [n, V_q], same device, overwritten) and the answer ids (long [n]).

    The aligned side's statistics keep the i2i names, the base side's get a `base_` prefix, the
    aligned top-1 token's rank and log-prob in the base distribution are `aligned_rank` and
    `aligned_logprob` (as in i2b; -1 and -inf for an id >= V_q), plus the four `divergences`, over
    ids 0..shared-1 (default: min(V_p, V_q)), both distributions renormalized there when either has more.
    """
    shared = min(logits_p.shape[1], logits_q.shape[1]) if shared is None else shared
    out = log_softmax_stats(logits_p, targets, top_k, keep_logprobs=True)
    base = log_softmax_stats(logits_q, targets, top_k, aligned_top1=out["topk_ids"][:, 0], keep_logprobs=True)
    out.update({k: base.pop(k) for k in RANKED_STATS})
    out.update({BASE_PREFIX + k: v for k, v in base.items()})
    out.update(divergences(shared_logprobs(logits_p, shared), shared_logprobs(logits_q, shared)))
    return out


def empty_pair_stats(top_k: int) -> dict[str, np.ndarray]:
    """The statistics of an empty answer (T = 0)."""
    side = empty_stats(top_k, ranked=True)
    out = {**side, **{BASE_PREFIX + k: side[k] for k in SIDE_STATS}}
    out.update({k: np.zeros(0, dtype=np.float32) for k in DIVERGENCES})
    return out


class PairScorer(BatchedScorer):
    """Scores each answer under both models: each backbone on its own sequences, then both output
    layers chunk by chunk, everything computed from the two float32 logit chunks on the aligned
    model's output device.

    The models may live on different devices (the base chunk is moved over). head_bytes: memory for
    one chunk's float32 work (about eight [n, V] buffers).
    token_ids: (aligned, base) ids each tokenizer maps to a token (see `LogitHead`); shared: how many
    leading ids mean the same text in both tokenizers (`aligntds.models.shared_vocab`). Without
    `shared` both models must have the same number of outputs. An answer id the base model does not
    have is fed to it as its pad id (`Scorer`'s stand_in); the caller marks those positions.
    base_context: a context manager factory under which base_model computes the base side (an aligned adapter
    on the base weights: one model, the adapter disabled for the base side; `aligntds.adapters`). When both
    sides share their output layer, they share its float32 copy.
    """

    def __init__(self, aligned_model, base_model, top_k: int, batch_tokens: int, head_bytes: int = 32 << 20,
                 pad_ids: tuple[int, int] = (0, 0), token_ids: tuple = (None, None), shared: int | None = None,
                 names: tuple[str | None, str | None] = (None, None),
                 base_context: Callable[[], AbstractContextManager] = contextlib.nullcontext):
        self.aligned = Scorer(aligned_model, top_k, batch_tokens, head_bytes, pad_ids[0], token_ids[0], name=names[0])
        same_head = base_model.get_output_embeddings() is aligned_model.get_output_embeddings()
        self.base = Scorer(base_model, top_k, batch_tokens, head_bytes, pad_ids[1], token_ids[1], stand_in=pad_ids[1],
                           name=names[1], head=self.aligned.head if same_head else None)
        self.base_context = base_context
        va, vb = self.aligned.head.vocab_size, self.base.head.vocab_size
        if shared is None and va != vb:
            raise UserError(f"the aligned model has {va} outputs, the base model {vb}: the distributions cannot be compared")
        self.shared = min(va, vb) if shared is None else min(shared, va, vb)
        self.top_k = top_k
        self.batch_tokens = batch_tokens
        self.chunk = max(1, head_bytes // (8 * 4 * max(va, vb)))
        self.device = self.aligned.head.device

    @torch.inference_mode()
    def _score_batch(self, requests: Sequence[PairRequest]) -> list[dict[str, np.ndarray]]:
        hidden_p = self.aligned.answer_hidden([r.aligned for r in requests])
        with self.base_context():
            hidden_q = self.base.answer_hidden([r.base for r in requests])
        targets = self.aligned.ids_tensor([r.aligned for r in requests], "response_ids")
        parts: dict[str, list[torch.Tensor]] = {}
        for s in range(0, hidden_p.shape[0], self.chunk):
            e = s + self.chunk
            logits_p = self.aligned.head(hidden_p[s:e])
            logits_q = self.base.head(hidden_q[s:e]).to(self.device)
            for k, v in pair_stats(logits_p, logits_q, targets[s:e], self.top_k, self.shared).items():
                parts.setdefault(k, []).append(v)
        return to_host(parts, [len(r.response_ids) for r in requests], PAIR_CASTS)

    def check_head(self, request: PairRequest, name: str | None = None) -> None:
        """`Scorer.check_head` for both sides, on one example (`name` names it in errors)."""
        self.aligned.check_head(request.aligned, name=name)
        with self.base_context():
            self.base.check_head(request.base, name=name)

    def _validate(self, requests: Sequence[PairRequest]) -> None:
        for r in requests:
            if len(r.aligned.prompt_ids) < 1 or len(r.base.prompt_ids) < 1:
                raise ValueError("every request needs prompts of at least one token")

    def _empty(self, request: PairRequest) -> dict[str, np.ndarray]:
        return empty_pair_stats(self.top_k)

    def _finite_keys(self) -> dict[str, Scorer]:
        return {"finite": self.aligned, "base_finite": self.base}


def make_scorer(model_list: Sequence, toks: Sequence, names: Sequence[str], top_k: int, device: str,
                batch_tokens: int | None = None, stand_in: bool = False, shared: int | None = None,
                base_context: Callable[[], AbstractContextManager] = contextlib.nullcontext) -> Scorer | PairScorer:
    """The scorer of a run: a `Scorer` of one model, a `PairScorer` of two (aligned first), each with its tokenizer's
    pad id and token ids, under `batch_tokens` padded tokens per batch (default: the device's, `device_defaults`).

    stand_in: one model that is fed a stand-in (its pad id) for an answer id it does not have (i2b: a token only the
    aligned vocabulary has; the caller marks those positions). shared, base_context: see `PairScorer`.
    """
    kw = {**device_defaults(device), "top_k": top_k}
    kw["batch_tokens"] = batch_tokens or kw["batch_tokens"]
    pads, ids = [models.pad_id(t) for t in toks], [models.token_ids(t) for t in toks]
    if len(model_list) == 2:
        return PairScorer(*model_list, pad_ids=tuple(pads), token_ids=tuple(ids), shared=shared, names=tuple(names),
                          base_context=base_context, **kw)
    return Scorer(model_list[0], pad_id=pads[0], token_ids=ids[0], stand_in=pads[0] if stand_in else None, name=names[0], **kw)
