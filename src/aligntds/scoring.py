"""Teacher-forced scoring: one forward pass over prompt + answer gives every answer position at once.

The reference re-ran the model on the growing prefix for each answer token (n passes per answer, no
cache, full-vocabulary arrays copied to the host every step). Here each batch of examples goes
through the model's backbone once; the output layer then runs only on answer positions, a chunk of
positions at a time, so memory for logits is bounded by `head_bytes`, not by vocabulary x batch length.

Shapes: B examples, L padded length, H hidden size, V vocabulary, N answer positions in a batch,
T answer tokens of one example, k = top_k.

    scorer = Scorer(model, top_k=30, batch_tokens=8192)
    stats = scorer.score([Request(prompt_ids, response_ids)])   # one dict of arrays per request, named as in a record

Non-finite logits (float16 overflow, usually in the backbone's hidden states) are never stored: every
position's log-normalizer is checked on the device (a NaN or +inf logit, or a row of -inf, makes it
non-finite), and the first such position stops the run with a `UserError` naming the example, the
answer position and the dtype.

Out of memory: after a CUDA out-of-memory error on a batch the token budget is halved (below that
batch's cost) and the batch is split under it and retried, recursively; the batches still to come
are planned under the lowered budget. Every example is scored exactly once. An example that does not
fit alone is a `UserError` naming it.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .errors import UserError
from .models import dtype_name
from .requests import Request
from .schema import SIDE_STATS, array_dtypes

log = logging.getLogger("aligntds")

# What an accelerator raises when an allocation fails (torch.OutOfMemoryError is the same class on torch >= 2.5).
OOM_ERRORS: tuple[type[BaseException], ...] = tuple(
    {e for e in (getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None)) if e is not None}
)


def answer_positions(prompt_len: int, answer_len: int) -> np.ndarray:
    """Indices j of the sequence positions whose output predicts the answer tokens.

    The model's output at position j is the distribution of token j + 1. Answer token t sits at
    position prompt_len + t, so it is predicted by position prompt_len + t - 1: for t in [0, T),
    j = prompt_len - 1 + t. This is the only place the shift is written.
    """
    if prompt_len < 1:
        raise ValueError("the prompt must hold at least one token")
    return np.arange(prompt_len - 1, prompt_len - 1 + answer_len)


def plan_batches(lengths: Sequence[int], batch_tokens: int) -> list[list[int]]:
    """Group example indices into batches of at most `batch_tokens` padded tokens, longest first.

    Sorting by length cuts padding, and the longest batch comes first so that an out-of-memory
    error shows at once (lm-evaluation-harness's Collator does the same). A batch costs
    len(batch) x its longest length; an example longer than the budget gets a batch of its own.
    Callers put results back in data order.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    for i in order:
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= batch_tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


class LogitHead:
    """hidden [n, H] -> float32 logits [n, V]: the model's output layer, computed in float32 whatever the
    model's dtype, and the final transforms some architectures apply after it (Gemma-2's soft-capping,
    Cohere's and Granite's scaling).

    The output layer runs on a float32 copy of its weights (made once; the model's own weights are left
    as they are): a bfloat16 output layer rounds logits to 8 significant bits, which makes exact ties
    among the top tokens common (11.1% of 3,000 positions of a tiny random Llama had one among their top 4, 0% in
    float32: tests/test_scoring.py checks both),
    and a rank of "tokens strictly more likely" counts every tie as unshifted. The backbone still runs
    in the model's dtype; products of its bfloat16 hidden states and weights are exact in float32, so
    this equals a bfloat16 matmul with a float32 result. Cost: V x H x 4 bytes (0.5 GB for Llama-2-7B).

    token_ids: the ids the tokenizer maps to a token (None: every output row is a token). The
    distribution is then over those tokens only: output rows beyond the last token id (embeddings
    padded to a multiple of 64, or resized past the tokenizer) are cut off, and rows inside that no
    token maps to get logit -inf, so no top-k holds a row without a token and no rank counts one.
    `vocab_size` is then the last token id + 1.

    `Scorer.check_head` compares this against the model's own forward pass once, so an
    architecture that does something else after its output layer is refused, not mis-scored.
    """

    def __init__(self, model, token_ids: Sequence[int] | None = None):
        linear = model.get_output_embeddings()
        if linear is None:
            raise UserError(f"{type(model).__name__} has no output layer: not a causal language model")
        cfg = model.config
        self.softcap = getattr(cfg, "final_logit_softcapping", None)
        self.scale = getattr(cfg, "logit_scale", None)  # Cohere: logits * logit_scale
        self.divisor = getattr(cfg, "logits_scaling", None)  # Granite: logits / logits_scaling
        self.model_dtype = linear.weight.dtype
        weight = linear.weight.detach().float()  # the same tensor when the model is float32
        bias = getattr(linear, "bias", None)
        bias = None if bias is None else bias.detach().float()
        self.unmapped: torch.Tensor | None = None  # long [u]: rows below vocab_size that no token maps to
        if token_ids is not None:
            ids = np.unique(np.asarray(token_ids, dtype=np.int64))
            ids = ids[(ids >= 0) & (ids < weight.shape[0])]
            if len(ids):
                n = int(ids[-1]) + 1
                weight, bias = weight[:n], None if bias is None else bias[:n]
                holes = np.setdiff1d(np.arange(n), ids)
                if len(holes):
                    self.unmapped = torch.as_tensor(holes, device=weight.device)
        self.weight, self.bias = weight, bias
        self.device = self.weight.device

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = F.linear(hidden.to(self.device, torch.float32), self.weight, self.bias)
        if self.scale is not None:
            logits = logits * self.scale
        if self.divisor is not None:
            logits = logits / self.divisor
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return self.mask_unmapped(logits)

    def mask_unmapped(self, logits: torch.Tensor) -> torch.Tensor:
        """logits [n, vocab_size] with the rows no token maps to set to -inf (in place)."""
        if self.unmapped is not None:
            logits.index_fill_(1, self.unmapped.to(logits.device), float("-inf"))
        return logits

    @property
    def vocab_size(self) -> int:
        """Outputs kept: the last token id + 1 (every output row when no token ids were given)."""
        return self.weight.shape[0]

    @property
    def n_tokens(self) -> int:
        """Outputs that are tokens (vocab_size less the unmapped rows)."""
        return self.vocab_size - (0 if self.unmapped is None else len(self.unmapped))


def log_softmax_stats(
    logits: torch.Tensor, targets: torch.Tensor, top_k: int, aligned_top1: torch.Tensor | None = None, keep_logprobs: bool = False
) -> dict[str, torch.Tensor]:
    """Per-position statistics of the full-vocabulary distribution log_softmax(logits).

    logits: float32 [n, V] (overwritten; with keep_logprobs it holds the log-probs on return); -inf
    is allowed (a token ruled out), NaN and +inf are not (see `finite`).
    targets: long [n], the answer tokens; aligned_top1: long [n], the aligned model's top-1 tokens (when this is the
    base model, which ranks them). An id >= V (a token this model does not have) gets log-prob -inf and rank -1.
    Returns, named as in a record: topk_ids [n, k] and topk_logprobs [n, k] (descending), token_logprob [n], token_rank
    [n] (0-based: the number of tokens strictly more likely than the target), entropy [n] in nats, with aligned_top1
    aligned_logprob [n] and aligned_rank [n], and finite [n] (bool: the row's log-normalizer is finite, i.e. no NaN or
    +inf logit and not all -inf; where it is False every other statistic of the row is meaningless).

    One exp() pass serves the normaliser and the entropy, and log-probs are never materialised:
    shifting a row by a constant changes neither its order nor its ranks. Ranks come from the
    top-k when the token is in it, from one comparison over the row otherwise.
    """
    z = logits.sub_(logits.amax(dim=1, keepdim=True))  # z = logits - max, so exp(z) <= 1
    e = z.exp()
    total = e.sum(dim=1)
    log_total = total.log()  # log p = z - log_total
    entropy = log_total - torch.linalg.vecdot(e, z) / total
    if not torch.isfinite(entropy).all():  # a -inf logit makes 0 * -inf: take those rows the slow way
        bad = ~torch.isfinite(entropy)
        entropy[bad] = log_total[bad] - torch.where(e[bad] > 0, e[bad] * z[bad], 0.0).sum(dim=1) / total[bad]
    del e
    top_z, top_ids = torch.topk(z, top_k, dim=1)
    out = {"topk_ids": top_ids, "topk_logprobs": top_z - log_total[:, None], "entropy": entropy,
           "finite": torch.isfinite(log_total)}
    vocab = z.shape[1]
    for name, ids in (("token", targets), ("aligned", aligned_top1)):
        if ids is None:
            continue
        inside = ids < vocab
        ids = torch.where(inside, ids, 0)
        tz = z.gather(1, ids[:, None])
        outside = (tz[:, 0] < top_z[:, -1]).nonzero()[:, 0]  # not in the top-k: count over the whole row
        if len(outside) > len(ids) // 4:
            rank = (z > tz).sum(dim=1, dtype=torch.int32)
        else:
            rank = (top_z > tz).sum(dim=1, dtype=torch.int32)
            if len(outside):
                rank[outside] = (z[outside] > tz[outside]).sum(dim=1, dtype=torch.int32)
        out[f"{name}_logprob"] = torch.where(inside, tz[:, 0] - log_total, float("-inf"))
        out[f"{name}_rank"] = torch.where(inside, rank, -1)
    if keep_logprobs:
        z.sub_(log_total[:, None])
    return out


RANKED_STATS = ("aligned_logprob", "aligned_rank")  # what a base model adds when it ranks the aligned top-1
STAT_DTYPES = {**array_dtypes(SIDE_STATS + RANKED_STATS), "finite": "bool"}


def empty_stats(top_k: int, ranked: bool) -> dict[str, np.ndarray]:
    """The statistics of an empty answer (T = 0); `ranked`: with aligned_logprob and aligned_rank."""
    names = SIDE_STATS + (RANKED_STATS if ranked else ())
    return {k: np.zeros((0, top_k) if k.startswith("topk") else (0,), dtype=STAT_DTYPES[k]) for k in names}


def device_defaults(device: str) -> dict[str, int]:
    """`batch_tokens` and `head_bytes` for a device: a large budget and output-layer chunk on a GPU;
    on a CPU small chunks, which stay in its caches."""
    if str(device).startswith("cuda"):
        return {"batch_tokens": 16384, "head_bytes": 2 << 30}
    return {"batch_tokens": 4096, "head_bytes": 32 << 20}


def free_accelerator_memory() -> None:
    """Give the cached memory of dropped tensors back to every GPU (after an out-of-memory error)."""
    gc.collect()
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):  # a model spread with --device_map uses several
            with torch.cuda.device(i):
                torch.cuda.empty_cache()


def to_host(parts: dict[str, list[torch.Tensor]], lengths: Sequence[int], casts: dict[str, type]) -> list[dict[str, np.ndarray]]:
    """Per-chunk device tensors ([n, ...] each, n summing to sum(lengths)) -> one dict of numpy arrays per request.

    One device-to-host copy per key and batch (not per chunk), so the device runs the chunks back to back.
    """
    merged = {k: torch.cat(v).cpu().numpy().astype(casts[k], copy=False) for k, v in parts.items()}
    bounds = np.cumsum([0, *lengths])
    return [{k: v[bounds[i] : bounds[i + 1]] for k, v in merged.items()} for i in range(len(lengths))]


class BatchedScorer:
    """Length-sorted batches under a token budget, split on out-of-memory, results in request order.

    A subclass defines `_score_batch(requests) -> [stats]`, `_empty(request) -> stats` (T = 0),
    `_validate(requests)` and `_finite_keys()`; a request has `.length` (the tokens it costs in a padded
    batch) and `.response_ids`. The bool [T] arrays named by `_finite_keys` are taken out of each result
    and checked: a position whose logits were not finite is a `UserError` naming the example.
    `batch_tokens` is the budget; it only ever goes down (after an out-of-memory error).
    """

    batch_tokens: int

    def _score_batch(self, requests: Sequence) -> list[dict[str, np.ndarray]]:
        raise NotImplementedError

    def _empty(self, request) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _validate(self, requests: Sequence) -> None:
        pass

    def _finite_keys(self) -> dict[str, Scorer]:
        """{stats key of a bool [T] `finite` array: the scorer whose logits it describes}."""
        raise NotImplementedError

    def _check_finite(self, stats: dict[str, np.ndarray], name: str) -> None:
        for key, scorer in self._finite_keys().items():
            finite = stats.pop(key, None)
            if finite is not None and not finite.all():
                raise UserError(scorer.nonfinite_error(name, int(np.argmin(finite))))

    def score(
        self, requests: Sequence, progress: Callable[[int, int], None] | None = None, names: Sequence[str] | None = None
    ) -> list[dict[str, np.ndarray]]:
        """Score every request; one dict of numpy arrays per request, in request order.

        progress(examples_done, answer_tokens_done) is called after each batch; names[i] names
        request i in an error (default: 'request i').
        """
        self._validate(requests)
        results: list[dict[str, np.ndarray] | None] = [None] * len(requests)
        todo = []
        for i, r in enumerate(requests):
            if len(r.response_ids) == 0:
                results[i] = self._empty(r)
            else:
                todo.append(i)
        if progress and len(todo) < len(requests):
            progress(len(requests) - len(todo), 0)
        pending = self._plan(requests, todo)
        while pending:
            budget = self.batch_tokens
            self._score_or_split(pending.pop(0), requests, results, progress, names)
            if self.batch_tokens < budget and pending:  # re-plan what is left under the lowered budget
                pending = self._plan(requests, [i for b in pending for i in b])
        assert all(r is not None for r in results)
        return results  # type: ignore[return-value]

    def _plan(self, requests: Sequence, todo: list[int]) -> list[list[int]]:
        return [[todo[j] for j in b] for b in plan_batches([requests[i].length for i in todo], self.batch_tokens)]

    def _score_or_split(self, idx: list[int], requests: Sequence, results: list, progress, names) -> None:
        """Score requests[idx] as one batch; on out-of-memory, halve the budget and score the batch's parts
        under it the same way (recursively). Every example is scored exactly once."""
        batch = [requests[i] for i in idx]
        try:
            stats = self._score_batch(batch)
        except OOM_ERRORS:
            stats = None  # handled below, outside the except block, so the error's frames and their tensors are freed
        if stats is None:
            self._after_oom(idx, requests, names)  # halves the budget below this batch's cost
            for part in self._plan(requests, idx):  # so this makes two batches or more
                self._score_or_split(part, requests, results, progress, names)
            return
        for i, st in zip(idx, stats):
            self._check_finite(st, names[i] if names is not None else f"request {i}")
            results[i] = st
        if progress:
            progress(len(idx), sum(len(r.response_ids) for r in batch))

    def _after_oom(self, idx: list[int], requests: Sequence, names) -> None:
        free_accelerator_memory()
        longest = max(requests[i].length for i in idx)
        if len(idx) == 1:
            name = names[idx[0]] if names is not None else f"request {idx[0]}"
            raise UserError(
                f"{name}: out of device memory although scored alone ({longest} tokens): spread the model over more GPUs "
                "(--device_map auto), use a smaller --dtype, or cut this answer"
            )
        cost = len(idx) * longest
        self.batch_tokens = max(1, min(self.batch_tokens, cost // 2))
        log.warning(f"out of device memory on a batch of {len(idx)} examples ({cost} padded tokens): splitting it; "
                    f"batch budget now {self.batch_tokens} tokens")


class Scorer(BatchedScorer):
    """Scores answers with one model: batched backbone passes, chunked output layer.

    model: a Hugging Face causal LM in eval mode (one device, or spread with device_map).
    batch_tokens: padded tokens per forward batch. head_bytes: memory for one chunk of
    full-vocabulary float32 work (two [n, V] buffers); small chunks stay in cache on a CPU.
    token_ids: the ids its tokenizer maps to tokens (see `LogitHead`; None: every output row).
    stand_in: when given, an input id the model does not have (>= `head.vocab_size`: a token only the
    other model of a pair has) is fed as this id instead; its positions are the caller's to mark.
    name: the model in error messages (default: the folder or hub id it was loaded from).
    head: the `LogitHead` of this model's output layer when one exists already (a pair on one model).
    """

    def __init__(self, model, top_k: int, batch_tokens: int, head_bytes: int = 32 << 20, pad_id: int = 0,
                 token_ids: Sequence[int] | None = None, stand_in: int | None = None, name: str | None = None,
                 head: LogitHead | None = None):
        self.model = model
        self.backbone = model.base_model
        self.head = head or LogitHead(model, token_ids)
        self.name = name or getattr(model, "name_or_path", None) or type(model).__name__
        self.stand_in = stand_in
        vocab = self.head.vocab_size
        if not 1 <= top_k <= self.head.n_tokens:
            raise UserError(f"--top_k must be between 1 and the vocabulary size {self.head.n_tokens}, got {top_k}")
        self.top_k = top_k
        self.batch_tokens = batch_tokens
        self.chunk = max(1, head_bytes // (2 * 4 * vocab))
        self.pad_id = pad_id
        self.input_device = model.get_input_embeddings().weight.device

    # -- the forward pass ----------------------------------------------------------------------
    def _padded(self, requests: Sequence[Request]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded input ids and attention mask [B, L]: real tokens keep positions 0..len-1."""
        length = max(r.length for r in requests)
        ids = torch.full((len(requests), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(requests), length), dtype=torch.long)
        for b, r in enumerate(requests):
            seq = list(r.prompt_ids) + list(r.response_ids)
            ids[b, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[b, : len(seq)] = 1
        if self.stand_in is not None:
            ids[ids >= self.head.vocab_size] = self.stand_in
        return ids.to(self.input_device), mask.to(self.input_device)

    @torch.inference_mode()
    def answer_hidden(self, requests: Sequence[Request]) -> torch.Tensor:
        """Final hidden states at the answer positions of a batch: [N, H], N = sum of T, example-major."""
        ids, mask = self._padded(requests)
        hidden = self.backbone(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        rows = np.concatenate([np.full(len(r.response_ids), b) for b, r in enumerate(requests)])
        cols = np.concatenate([answer_positions(len(r.prompt_ids), len(r.response_ids)) for r in requests])
        index_device = hidden.device
        return hidden[torch.as_tensor(rows, device=index_device), torch.as_tensor(cols, device=index_device)]

    def ids_tensor(self, requests: Sequence, field: str) -> torch.Tensor | None:
        """The concatenated `field` ids (response_ids or aligned_top1) of a batch: long [N] on the head's device."""
        if getattr(requests[0], field) is None:
            return None
        ids = np.concatenate([np.asarray(getattr(r, field), dtype=np.int64) for r in requests])
        return torch.as_tensor(ids, device=self.head.device)

    @torch.inference_mode()
    def _score_batch(self, requests: Sequence[Request]) -> list[dict[str, np.ndarray]]:
        hidden = self.answer_hidden(requests)
        targets, top1 = self.ids_tensor(requests, "response_ids"), self.ids_tensor(requests, "aligned_top1")
        parts: dict[str, list[torch.Tensor]] = {}
        for s in range(0, hidden.shape[0], self.chunk):
            e = s + self.chunk
            stats = log_softmax_stats(self.head(hidden[s:e]), targets[s:e], self.top_k, None if top1 is None else top1[s:e])
            for k, v in stats.items():
                parts.setdefault(k, []).append(v)
        return to_host(parts, [len(r.response_ids) for r in requests], STAT_DTYPES)

    def _validate(self, requests: Sequence[Request]) -> None:
        ranked = bool(requests) and requests[0].aligned_top1 is not None
        for r in requests:
            if len(r.prompt_ids) < 1:
                raise ValueError("every request needs a prompt of at least one token")
            if (r.aligned_top1 is not None) != ranked:
                raise ValueError("either every request has aligned_top1 or none has")

    def _empty(self, request: Request) -> dict[str, np.ndarray]:
        return empty_stats(self.top_k, request.aligned_top1 is not None)

    def _finite_keys(self) -> dict[str, Scorer]:
        return {"finite": self}

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the model's backbone runs in."""
        return getattr(self.model, "dtype", self.head.model_dtype)

    def nonfinite_error(self, name: str, position: int | None = None) -> str:
        """The one-line message for logits that are not finite: the example (`name`), the answer position (None: the
        model's own forward pass in `check_head`), the model and its dtype, and what to do."""
        dtype = dtype_name(self.dtype)
        where = (f"at answer position {position}" if position is not None
                 else "in its own forward pass (the once-per-run check of the output layer)")
        if self.dtype == torch.float16:
            hint = "float16 overflow (its largest value is 65504): run with --dtype bfloat16 or float32"
        elif self.dtype == torch.float32:
            hint = "the model's weights, or what they compute, hold NaN or inf"
        else:
            hint = "run with --dtype float32; if that fails too, the model's weights hold NaN or inf"
        return (f"{name}: the logits of {self.name} in {dtype} are not finite (NaN or inf) {where}: {hint}; "
                "no records were written")

    @torch.inference_mode()
    def check_head(self, request: Request, max_tokens: int = 32, name: str | None = None) -> float:
        """Compare the fast path with the model's own forward pass on the start of one example.

        Returns the largest difference in log-probability. The model's own logits are rounded to its
        dtype and ours are not, so the allowed difference is that rounding: 1e-3 in float32, else
        4 units in the last place of the dtype at the largest logit (plus 1e-3). Raises `UserError`
        when the model's logits are not finite (float16 overflow; named as such, with the example
        `name`), or differ by more, i.e. when this architecture transforms its logits in a way
        `LogitHead` does not reproduce.
        """
        seq = (list(request.prompt_ids) + list(request.response_ids))[:max_tokens]
        if len(seq) < 2:
            return 0.0
        start = Request(seq[:1], seq[1:])
        ids, _ = self._padded([start])
        own = self.model(input_ids=ids).logits[0, :-1, : self.head.vocab_size].float().to(self.head.device)
        dtype = self.head.model_dtype
        if not torch.isfinite(own).all():
            raise UserError(self.nonfinite_error(name or "the first example"))
        tol = 1e-3 if dtype == torch.float32 else 1e-3 + 4 * torch.finfo(dtype).eps * own.abs().max().item()
        full = self.head.mask_unmapped(own).log_softmax(-1)
        fast = self.head(self.answer_hidden([start])).log_softmax(-1)
        diff = torch.where(torch.isfinite(fast), full - fast, 0.0).abs().max().item()
        if not diff <= tol:
            raise UserError(
                f"{type(self.model).__name__}: the fast output layer differs from the model's forward pass by {diff:.3g} "
                f"in log-probability (allowed {tol:.3g} in {dtype_name(dtype)}); this architecture is not supported yet"
            )
        return diff


class Throughput:
    """Answer tokens per second over a run, for progress bars and the final report."""

    def __init__(self):
        self.start = time.perf_counter()
        self.tokens = 0

    def add(self, tokens: int) -> None:
        self.tokens += tokens

    @property
    def rate(self) -> float:
        return self.tokens / max(time.perf_counter() - self.start, 1e-9)


def score_with_progress(scorer: BatchedScorer, requests: list, desc: str, disable: bool = False, names=None) -> list[dict]:
    """`scorer.score(requests, names=names)` under a progress bar (answer tokens per second; `disable` on ranks > 0),
    logging the throughput and, after out-of-memory errors, the final batch budget."""
    from tqdm.auto import tqdm

    thr = Throughput()
    budget = scorer.batch_tokens
    with tqdm(total=len(requests), desc=desc, unit="ex", disable=disable, dynamic_ncols=True) as bar:

        def progress(examples: int, tokens: int) -> None:
            thr.add(tokens)
            bar.update(examples)
            bar.set_postfix_str(f"{thr.rate:,.0f} tok/s")

        stats = scorer.score(requests, progress, names)
    log.info(f"{desc}: {thr.tokens} answer tokens at {thr.rate:,.0f} tokens/s (batch budget {scorer.batch_tokens} tokens)")
    if scorer.batch_tokens < budget:
        log.warning(f"{desc}: out-of-memory errors split batches; the final batch budget is {scorer.batch_tokens} tokens "
                    f"(pass --batch_tokens {scorer.batch_tokens} to start there)")
    return stats
