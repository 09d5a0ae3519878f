"""The record: what `logit_analysis` stores for one example, and how a result was made (`meta`).

One dict per example (T answer positions, k = top_k); the README documents every key:

    index            int        position of the example in the data file
    id, prompt, probe_text      the example's id, the text fed to the model, the answer text
    prompt_ids       int32 [P]  prompt token ids (special tokens included)
    response_ids     int32 [T]  answer token ids (i2b: copied from the i2i record)
    topk_ids         int32 [T, k], topk_logprobs float32 [T, k]: top-k of the full-vocabulary log-softmax
    token_logprob    float32 [T], token_rank int32 [T]: the answer token's log-prob and exact 0-based rank
    entropy          float32 [T]  in nats
    n_truncated      int        answer tokens dropped to fit the model's context (0 almost always)
    final_generated_text        i2i only: the answer ids decoded
    aligned_rank     int32 [T], aligned_logprob float32 [T]: i2b and pair: exact rank / log-prob, in the
                     whole base distribution, of the aligned model's top-1 token at that position
                     (-1 and -inf where the base model does not have that token)
    aligned_only     bool [T]   i2b and pair (absent in older files: all False): the answer token or the aligned
                     top-1 exists only in the aligned vocabulary (appended tokens), or an earlier answer token
                     does; such positions are never classed
    meta             dict       model, revision, adapter, mode, dtype, top_k, template, data, versions, shared_vocab, ...

Values are finite, except log-probs (`*logprob*` keys), which are -inf for a token with probability 0
(ruled out by its model, or one the model does not have; its rank is then -1). `check_records` refuses
a file holding NaN or +inf anywhere, or -inf in any other key.

Mode `pair` (both models in one process) holds the i2i keys for the aligned side, and besides:

    base_prompt, base_prompt_ids     the base model's prompt (the bare query, templated as in i2b) and its ids
    base_topk_ids ... base_entropy   the base side's statistics, named as the aligned side's with `base_`
    kl_aligned_base, kl_base_aligned, js, tv   float32 [T]: exact full-vocabulary KL(P_aligned||P_base),
                     KL(P_base||P_aligned), Jensen-Shannon (nats) and total variation at each position
"""

from __future__ import annotations

import platform
import subprocess
from functools import lru_cache
from pathlib import Path

import numpy as np

from . import __version__
from .errors import UserError

ARRAY_KEYS = ("topk_ids", "topk_logprobs", "token_logprob", "token_rank", "entropy")
COMMON_KEYS = ("index", "id", "prompt", "probe_text", "prompt_ids", "response_ids", *ARRAY_KEYS, "n_truncated", "meta")
DIVERGENCE_KEYS = ("kl_aligned_base", "kl_base_aligned", "js", "tv")
MODE_ARRAYS = {
    "i2i": (),
    "i2b": ("aligned_rank", "aligned_logprob"),
    "pair": (*(f"base_{k}" for k in ARRAY_KEYS), "aligned_rank", "aligned_logprob", *DIVERGENCE_KEYS),
}
MODE_KEYS = {
    "i2i": ("final_generated_text",),
    "i2b": MODE_ARRAYS["i2b"],
    "pair": ("base_prompt", "base_prompt_ids", "final_generated_text", *MODE_ARRAYS["pair"]),
}
# Optional arrays: [T] when present (older files lack them).
OPTIONAL_ARRAYS = {"i2i": (), "i2b": ("aligned_only",), "pair": ("aligned_only",)}
# Arrays that may hold -inf (the log-prob of a token with probability 0); no array may hold NaN or +inf.
LOGPROB_KEYS = ("topk_logprobs", "token_logprob", "aligned_logprob", "base_topk_logprobs", "base_token_logprob")
# Meta keys that must agree between shards of one run (and between a shard and a re-run's settings).
RUN_KEYS = ("model", "base_model", "adapter", "base_adapter", "mode", "dtype", "top_k", "template", "tokenization", "n_data", "data",
            "aligned", "vocab")


@lru_cache(maxsize=1)
def git_revision() -> str | None:
    """The project's git commit (with `-dirty` when the checkout has changes), or None outside git."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=10
        )
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str]:
    import torch
    import transformers

    return {
        "aligntds": __version__,
        "git": git_revision(),
        "torch": str(torch.__version__),
        "transformers": str(transformers.__version__),
        "numpy": str(np.__version__),
        "python": platform.python_version(),
    }


def make_record(
    index: int,
    id,
    prompt: str,
    probe_text: str,
    request,
    stats: dict[str, np.ndarray],
    n_truncated: int,
    meta: dict,
    final_generated_text: str | None = None,
    aligned_only=None,
) -> dict:
    """One record from a scored `Request` and its statistics (`Scorer.score`); i2b when they hold probe ranks
    (then `aligned_only`, bool [T], is given too).

    `meta` is shared by all records of a run: pickle stores one copy per file.
    """
    rec = {
        "index": index,
        "id": id,
        "prompt": prompt,
        "probe_text": probe_text,
        "prompt_ids": np.asarray(request.prompt_ids, dtype=np.int32),
        "response_ids": np.asarray(request.response_ids, dtype=np.int32),
        **{k: stats[k] for k in ARRAY_KEYS},
        "n_truncated": n_truncated,
    }
    if "probe_rank" in stats:
        rec["aligned_rank"], rec["aligned_logprob"] = stats["probe_rank"], stats["probe_logprob"]
    if aligned_only is not None:
        rec["aligned_only"] = np.asarray(aligned_only, dtype=bool)
    if final_generated_text is not None:
        rec["final_generated_text"] = final_generated_text
    rec["meta"] = meta
    return rec


def make_pair_record(
    index: int,
    id,
    prompt: str,
    base_prompt: str,
    probe_text: str,
    request,
    stats: dict[str, np.ndarray],
    n_truncated: int,
    meta: dict,
    final_generated_text: str,
    aligned_only=None,
) -> dict:
    """One `--mode pair` record from a scored `PairRequest` and its statistics (`PairScorer.score`);
    aligned_only: bool [T] (default: all False)."""
    rec = {
        "index": index,
        "id": id,
        "prompt": prompt,
        "base_prompt": base_prompt,
        "probe_text": probe_text,
        "prompt_ids": np.asarray(request.aligned.prompt_ids, dtype=np.int32),
        "base_prompt_ids": np.asarray(request.base.prompt_ids, dtype=np.int32),
        "response_ids": np.asarray(request.response_ids, dtype=np.int32),
        **{k: stats[k] for k in ARRAY_KEYS + MODE_ARRAYS["pair"]},
        "aligned_only": np.zeros(len(request.response_ids), bool) if aligned_only is None else np.asarray(aligned_only, dtype=bool),
        "n_truncated": n_truncated,
        "final_generated_text": final_generated_text,
        "meta": meta,
    }
    return rec


def check_records(records: list[dict], path: str | Path, mode: str) -> None:
    """Refuse, naming the file and the example, a record list this project did not write for `mode`, or one
    holding non-finite values (NaN or +inf anywhere, -inf outside the log-probs: see the module docstring)."""
    need = COMMON_KEYS + MODE_KEYS.get(mode, ())
    for n, rec in enumerate(records):
        meta = rec.get("meta")
        if isinstance(meta, dict) and meta.get("mode") not in (None, mode):
            raise UserError(f"{path}: holds {meta['mode']} records, expected {mode}")
        missing = [k for k in need if k not in rec]
        if missing:
            hint = " (a file of the reference implementation? data_prep reads those)" if "results" in rec else ""
            raise UserError(f"{path}: record {n} has no {', '.join(missing)}: not {mode} records of this tool{hint}")
        t = len(rec["response_ids"])
        for k in ARRAY_KEYS + MODE_ARRAYS.get(mode, ()) + tuple(k for k in OPTIONAL_ARRAYS.get(mode, ()) if k in rec):
            if not isinstance(rec[k], np.ndarray) or rec[k].shape[:1] != (t,):
                raise UserError(f"{path}: record {n} (id={rec['id']}): {k} is not an array of {t} positions (the answer's length)")
            _check_finite(rec[k], k, f"{path}: record {n} (id={rec['id']})")


def _check_finite(values: np.ndarray, key: str, where: str) -> None:
    if values.dtype.kind != "f":
        return
    bad = np.isnan(values) | (values == np.inf)
    if key not in LOGPROB_KEYS:
        bad |= values == -np.inf
    if bad.any():
        first = tuple(np.argwhere(bad)[0])
        raise UserError(f"{where}: {key} holds {values[first]} at answer position {first[0]}: made from logits that were not "
                        "finite (float16 overflow?); recompute it with --dtype bfloat16 or float32")


def run_settings(meta: dict) -> dict:
    return {k: meta.get(k) for k in RUN_KEYS}


def settings_difference(a: dict, b: dict, keys=RUN_KEYS) -> str:
    """'top_k: 30 != 50; dtype: ...' for the run settings on which two metas disagree ('' if none)."""
    diffs = []
    for k in keys:
        if a.get(k) != b.get(k):
            va, vb = (repr(x) if not isinstance(x, str) or len(x) < 60 else repr(x[:57] + "...") for x in (a.get(k), b.get(k)))
            diffs.append(f"{k}: {va} != {vb}")
    return "; ".join(diffs)
