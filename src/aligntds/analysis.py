"""One `logit_analysis` run: a slice of the data through one model (or both), written as one shard of records.

    i2i:  the aligned model on each example's chat-formatted `input`, scoring `output[0]`.
    i2b:  the base model on the bare `pure_input` (optionally in a template), scoring the very same answer token ids,
          read from the i2i records, plus the exact base rank of the aligned model's top-1 token at every position.
    pair: both models in one process: everything i2i and i2b give, plus exact full-vocabulary divergences between
          the two distributions at every position (see `aligntds.pair`).

A run is planned (`plan_run`: models, template, device, run settings, shard), so that a shard made with the same
settings is kept before any model loads, then executed (`execute`): the same steps for every mode, one side per
model, the requests built by `aligntds.requests`. Under `accelerate launch` or `torchrun` each process scores its part.

    from aligntds.analysis import Options, run
    run(Options(data_file="data/x.json", logits_folder="saved_logits/x/shards", pair="llama2", mode="i2i"))
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import adapters, models, store
from .data import answer_of, base_template, data_fingerprint, data_slice, load_examples
from .distributed import Rank, current_rank, device_for, part_of, select_device
from .errors import UserError
from .options import ScoreOptions as Options
from .pair import make_scorer
from .prompts import ChatEncoder
from .records import i2i_records_for, keep_shard, make_record, save_shard, versions
from .requests import PROMPT_FIELDS, aligned_only, answer_ids, answer_source, check_ids, plan_examples, sides_for, to_requests
from .schema import meta_keys_of
from .scoring import score_with_progress

log = logging.getLogger("aligntds")
NEED = {"i2i": "give --aligned_model", "i2b": "give --base_model", "pair": "--mode pair needs --aligned_model and --base_model"}


@dataclass
class RunPlan:
    """A run before any model loads. names: each side's model (i2i [aligned], i2b [base], pair [aligned, base]);
    weights: the base weights of each side when it is an adapter (--base_model, aligned side); planned: the run
    settings of its `meta`; i2i: i2b's i2i records of [start, end)."""

    opts: Options
    items: list[dict]
    start: int
    end: int
    names: list[str]
    weights: list[str | None]
    device: str
    base_device: str
    dtype: Any
    planned: dict
    shard: Path
    i2i: list[dict] | None

    def where(self, i: int) -> str:
        """Example i, as errors and logs name it."""
        return f"{self.opts.data_file or 'data'}: example {i} (id={self.items[i]['id']})"


def run(opts: Options, rank: Rank | None = None, rows=None) -> Path | None:
    """Score this process's part of examples [start, end) and write its shard; returns its path (None: nothing to do).

    rows: the examples in memory (the Python API, `aligntds.score`: a list of dicts, a DataFrame or a `datasets.Dataset`),
    read and checked as a data file's are, instead of `opts.data_file` (then None; the records' meta `data_file` is null)."""
    rank = rank or current_rank()
    items = load_examples(opts.data_file if rows is None else rows, PROMPT_FIELDS[opts.mode], opts.data_split,
                          opts.data_revision, opts.columns)
    start, end = data_slice(opts.start, opts.end, len(items))
    if start >= end:
        asked = f"[{opts.start}:{'' if opts.end is None else opts.end}]"
        log.info(f"examples {asked} are past the end of {opts.data_file or 'the data'} ({len(items)} examples): nothing to do")
        return None
    start, end = part_of(start, end, rank, "examples")
    if start >= end:
        return None
    plan = plan_run(opts, items, start, end, rank)
    return plan.shard if keep_shard(plan.shard, plan.planned, opts.overwrite) else execute(plan, rank)


def plan_run(opts: Options, items: list[dict], start: int, end: int, rank: Rank) -> RunPlan:
    """The models, template, device and dtype, run settings and shard of a run (one-line errors for what is missing)."""
    mode = opts.mode
    base, aligned = models.resolve_pair(opts.pair, opts.base_model, opts.aligned_model)
    check_folders(opts, base, aligned)
    if mode == "pair" and base is None and aligned is not None:  # an aligned adapter: the base weights it names
        base = (adapters.describe(aligned) or {}).get("base")
    names = {"i2i": [aligned], "i2b": [base], "pair": [aligned, base]}[mode]
    if None in names:
        raise UserError(f"--pair {opts.pair!r} is not a preset ({', '.join(models.PAIRS)}): {NEED[mode]}")
    opts.warn_unused()
    if opts.batch_tokens is not None and opts.batch_tokens < 1:
        raise UserError(f"--batch_tokens must be >= 1, got {opts.batch_tokens}")
    template = None if mode == "i2i" else base_template(opts.enable_template, opts.base_template)
    device = device_for(rank, opts.device, opts.device_map)
    select_device(device)
    base_device = models.check_device(opts.base_device) if mode == "pair" and opts.base_device else device
    dtype = models.resolve_dtype(opts.dtype, device)
    i2i = i2i_records_for(opts.i2i_pkl_file, items, start, end) if mode == "i2b" else None
    made = i2i[0]["meta"].get("tokenization") if i2i else None
    if made is not None and made != opts.tokenization:  # the answer ids are the i2i run's: the contexts must be made alike
        raise UserError(f"{opts.i2i_pkl_file}: its i2i records were scored with --tokenization {made}, this i2b run has "
                        f"--tokenization {opts.tokenization}: give --tokenization {made} (or score i2i again)")
    # the aligned adapter's base weights (i2i, pair): --base_model, or in pair mode the folder it names (adapters.base_weights)
    weights = [adapters.base_weights(names[0], opts.base_model, mode == "pair") if mode != "i2b" else None, None][: len(names)]
    settings = {"model": names[0], "base_model": names[-1], "adapter": adapters.describe(names[0], weights[0]),
                "base_adapter": adapters.describe(names[-1]) if mode == "pair" else None, "mode": mode,
                "dtype": models.dtype_name(dtype), "top_k": opts.top_k, "template": template, "tokenization": opts.tokenization,
                "n_data": len(items), "data": data_fingerprint(items),  # i2b: the run whose answers and top-1 tokens it scores
                "aligned": f"{i2i[0]['meta'].get('model')} ({i2i[0]['meta'].get('dtype')})" if i2i else None}
    planned = {k: settings[k] for k in meta_keys_of(mode) if k in settings}
    shard = Path(opts.logits_folder) / store.shard_name(opts.pair, mode, start, end)
    return RunPlan(opts, items, start, end, names, weights, device, base_device, dtype, planned, shard, i2i)


def check_folders(opts: Options, base: str | None, aligned: str | None) -> None:
    """Each model this run uses (i2i: the aligned one and the base weights of an aligned adapter, --base_model; i2b: the
    base one; pair: both) that is a path: one line naming its flag, before any network access, when it is not there or
    is not a model folder (`models.check_model_folder`)."""
    used = {"i2i": [(aligned, "aligned"), (opts.base_model, "base")], "i2b": [(base, "base")],
            "pair": [(aligned, "aligned"), (base, "base")]}[opts.mode]
    for name, side in used:
        if name is not None:
            given = getattr(opts, f"{side}_model") is not None
            models.check_model_folder(name, f"--{side}_model" if given else f"--pair {opts.pair}'s {side} model")


def execute(plan: RunPlan, rank: Rank) -> Path:
    """Load the tokenizers and models, build the requests, score them and write the shard; returns its path."""
    opts, mode, names, indices = plan.opts, plan.opts.mode, plan.names, range(plan.start, plan.end)
    log.info(f"running on {plan.device}" + (f" (--device_map {opts.device_map})" if opts.device_map else "")
             + (f", the base model on {plan.base_device}" if plan.base_device != plan.device else "")
             + f", {models.dtype_name(plan.dtype)}")
    toks = [models.load_tokenizer(adapters.tokenizer_source(n, w), opts.trust_remote_code) for n, w in zip(names, plan.weights)]
    if mode == "i2b":
        shared = models.shared_with_recorded(toks[0], names[0], plan.i2i[0]["meta"], opts.i2i_pkl_file, opts.trust_remote_code)
    else:
        shared = models.shared_ids(*toks, *names) if mode == "pair" else None
    kw = {k: getattr(opts, k) for k in ("device_map", "trust_remote_code", "attn_implementation")}
    loaded = (adapters.load_pair(*names, plan.dtype, plan.device, plan.base_device, plan.weights[0], **kw) if mode == "pair"
              else [adapters.load(names[0], plan.dtype, plan.device, plan.weights[0], **kw)])
    contexts = [models.context_length(x.model) for x in loaded]
    sides = sides_for(mode, [ChatEncoder(t, opts.tokenization) for t in toks], contexts, plan.planned["template"])
    if plan.i2i:  # i2b: the i2i records' answer ids and aligned top-1 tokens
        answers, top1 = [r["response_ids"] for r in plan.i2i], [r["topk_ids"][:, 0] for r in plan.i2i]
    else:
        answers, top1 = [answer_ids(plan.items[i], sides[0], plan.where(i)) for i in indices], None
    examples = plan_examples(plan.items, indices, sides, answers, plan.where, top1)
    requests = to_requests(examples)
    scorer = make_scorer([x.model for x in loaded], toks, names, opts.top_k, plan.device, opts.batch_tokens,
                         stand_in=mode == "i2b", shared=shared, base_context=loaded[-1].context)
    heads = [scorer.aligned.head, scorer.base.head] if mode == "pair" else [scorer.head]
    if mode != "i2b":
        check_ids(requests, heads[0].vocab_size, plan.start, names[0])
    first = next((n for n, r in enumerate(requests) if r.response_ids), None)  # the once-per-run check of the output layer
    if first is not None:
        scorer.check_head(requests[first], name=plan.where(examples[first].index))
    stats = score_with_progress(scorer, requests, f"{opts.pair} {mode}", not rank.is_main, [plan.where(i) for i in indices])
    shared = scorer.shared if mode == "pair" else shared
    values = {**plan.planned, "revision": models.model_revision(loaded[0].model), "enable_template": opts.enable_template,
              "base_template_file": opts.base_template, "data_file": None if opts.data_file is None else str(opts.data_file),
              "data_split": opts.data_split, "data_revision": opts.data_revision, "data_columns": opts.columns,
              "vocab_size": len(toks[0]),
              "vocab": models.vocab_fingerprint(toks[0]), "versions": versions(), "shared_vocab": shared,
              "answer_ids": "i2i records" if mode == "i2b" else answer_source(plan.items, indices, opts.tokenization),
              "base_revision": models.model_revision(loaded[-1].model), "base_vocab": models.vocab_fingerprint(toks[-1]),
              "base_vocab_size": len(toks[-1]), "shared_weights": loaded[0].model is loaded[-1].model,
              "divergences": "over the whole vocabulary" if mode != "pair" or shared >= max(h.vocab_size for h in heads)
              else f"over ids 0..{shared - 1}, which both vocabularies share, each distribution renormalized over them"}
    meta = {k: values[k] for k in meta_keys_of(mode)}
    records = [_record(plan, p, stats[n], meta, sides[0], heads[-1].vocab_size) for n, p in enumerate(examples)]
    save_shard(plan.shard, records, " / ".join(names))
    return plan.shard


def _record(plan: RunPlan, p, stats: dict, meta: dict, aligned_side, n_base: int) -> dict:
    """The record of one planned example `p` (n_base: the base model's outputs, for `aligned_only`)."""
    mode = plan.opts.mode
    text = None if mode == "i2b" else aligned_side.encoder.decode_answer(p.prompts[0], p.prompt_ids[0], p.response_ids)
    top1 = stats["topk_ids"][:, 0] if p.aligned_top1 is None else p.aligned_top1
    return make_record(mode, index=p.index, id=plan.items[p.index]["id"], answer_text=answer_of(plan.items[p.index]),
                       prompts=p.prompts, prompt_ids=p.prompt_ids, response_ids=p.response_ids, stats=stats,
                       n_truncated=p.n_truncated, meta=meta, final_generated_text=text,
                       aligned_only=None if mode == "i2i" else aligned_only(p.response_ids, top1, n_base))
