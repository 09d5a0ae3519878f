"""One `logit_analysis` run: a slice of the data through one model (or both), written as one shard of records.

    i2i:  the aligned model on each example's chat-formatted `input`, scoring `output[0]`.
    i2b:  the base model on the bare `pure_input` (optionally in a template), scoring the very same
          answer token ids, read from the i2i records, plus the exact base rank of the aligned
          model's top-1 token at every position.
    pair: both models in one process: everything i2i and i2b give, plus exact full-vocabulary
          divergences between the two distributions at every position (see `aligntds.pair`).

Under `accelerate launch` or `torchrun` each process scores its own contiguous part of the slice
and writes the shard named by that part (see `aligntds.distributed`).

    from aligntds.analysis import Options, run
    run(Options(data_file="data/x.json", logits_folder="saved_logits/x/shards", pair="llama2", mode="i2i"))
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from . import adapters, models, store
from .data import REFERENCE_TEMPLATE, answer_of, data_fingerprint, load_examples, load_template
from .distributed import Rank, current_rank, device_for, part, select_device
from .errors import UserError
from .pair import PairRequest, PairScorer
from .prompts import TOKENIZATIONS, ChatEncoder
from .records import check_records, make_pair_record, make_record, settings_difference, versions
from .requests import Side, aligned_only, answer_ids, plan
from .scoring import BatchedScorer, Request, Scorer, Throughput, device_defaults

log = logging.getLogger("aligntds")

MODES = ("i2i", "i2b", "pair")
# The prompt fields each mode reads from the data.
FIELDS = {"i2i": ("input",), "i2b": ("pure_input",), "pair": ("input", "pure_input")}


@dataclass
class Options:
    """The flags of `src/logit_analysis.py` (see its --help)."""

    data_file: str
    logits_folder: str
    pair: str
    mode: str
    start: int = 0
    end: int | None = None
    top_k: int = 30
    enable_template: bool = False
    base_template: str | None = None
    i2i_pkl_file: str | None = None
    aligned_model: str | None = None
    base_model: str | None = None
    dtype: str = "auto"
    device: str | None = None
    device_map: str | None = None
    base_device: str | None = None
    batch_tokens: int | None = None
    overwrite: bool = False
    trust_remote_code: bool = False
    attn_implementation: str | None = None
    tokenization: str = "chat"


def data_slice(start: int, end: int | None, n: int) -> tuple[int, int]:
    """[start, end) clamped to the data; `end` defaults to the data length."""
    if start < 0:
        raise UserError(f"--start must be >= 0, got {start}")
    end = n if end is None else end
    if end < start:
        raise UserError(f"--end ({end}) is before --start ({start})")
    return min(start, n), min(end, n)


def base_template(opts: Options) -> str | None:
    """The text the bare query is wrapped in for i2b (None: the query alone)."""
    if opts.enable_template and opts.base_template:
        raise UserError("give --enable_template or --base_template, not both")
    if opts.base_template:
        return load_template(opts.base_template)
    return REFERENCE_TEMPLATE if opts.enable_template else None


def i2i_records_for(path: str | None, items: list[dict], start: int, end: int) -> list[dict]:
    """The i2i record of each example in [start, end), checked against the data file."""
    if not path:
        raise UserError("--mode i2b needs --i2i_pkl_file: the i2i records of the same data (merged, or a shard covering the slice)")
    records = store.load_records(path)
    check_records(records, path, "i2i")
    by_index: dict[int, dict] = {}
    for rec in records:
        if rec["index"] in by_index:
            raise UserError(f"{path}: example {rec['index']} appears twice")
        by_index[rec["index"]] = rec
    held = f"it holds examples {min(by_index)}..{max(by_index)}" if by_index else "it is empty"
    out = []
    for i in range(start, end):
        rec = by_index.get(i)
        if rec is None:
            raise UserError(f"{path}: no record for example {i} (id={items[i]['id']}); {held}")
        if rec["id"] != items[i]["id"]:
            raise UserError(f"{path}: example {i} has id {rec['id']!r} but the data file says {items[i]['id']!r}: made from another data file?")
        if rec["probe_text"] != answer_of(items[i]):
            raise UserError(f"{path}: the answer of example {i} (id={rec['id']}) differs from output[0] in the data file")
        out.append(rec)
    return out


def _check_existing(shard: Path, planned: dict) -> None:
    """An existing shard is complete (writes are atomic): keep it if it was made with the same settings."""
    records = store.load_records(shard)
    if records:
        diff = settings_difference(records[0]["meta"], planned, keys=planned)
        if diff:
            raise UserError(f"{shard} exists with other settings ({diff}); pass --overwrite to recompute it")


def run(opts: Options, rank: Rank | None = None) -> Path | None:
    """Score this process's part of examples [start, end) and write its shard; returns its path (None: nothing to do)."""
    if opts.mode not in MODES:
        raise UserError(f"--mode must be one of {', '.join(MODES)}, got {opts.mode!r}")
    if opts.tokenization not in TOKENIZATIONS:
        raise UserError(f"--tokenization must be one of {', '.join(TOKENIZATIONS)}, got {opts.tokenization!r}")
    rank = rank or current_rank()
    items = load_examples(opts.data_file, fields=FIELDS[opts.mode])
    start, end = data_slice(opts.start, opts.end, len(items))
    if start >= end:
        log.info(f"examples [{opts.start}:{opts.end}] are past the end of {opts.data_file} ({len(items)} examples): nothing to do")
        return None
    if rank.world > 1:
        a, b = part(start, end, rank)
        log.info(f"{rank.world} processes share examples [{start}:{end}]; this is rank {rank.rank}: [{a}:{b}]"
                 + ("" if a < b else ", nothing to do"))
        if a >= b:
            return None
        start, end = a, b
    return (_run_pair if opts.mode == "pair" else _run_one)(opts, items, start, end, rank)


def _device_dtype(opts: Options, rank: Rank):
    device = device_for(rank, opts.device, opts.device_map)
    select_device(device)
    return device, models.resolve_dtype(opts.dtype, device)


def _keep_existing(shard: Path, planned: dict, opts: Options) -> bool:
    """True when a shard made with the same settings exists; otherwise checks, before any scoring, that it can be written."""
    if shard.exists() and not opts.overwrite:
        _check_existing(shard, planned)
        log.info(f"{shard} exists: skipping (pass --overwrite to recompute)")
        return True
    store.ensure_writable_folder(shard.parent)
    return False


def _load_kwargs(opts: Options) -> dict:
    return {"device_map": opts.device_map, "trust_remote_code": opts.trust_remote_code, "attn_implementation": opts.attn_implementation}


def _scoring_args(opts: Options, device: str) -> dict:
    """Batch budget (--batch_tokens or the device's default) and memory for one output-layer chunk."""
    args = device_defaults(device)
    return {**args, "batch_tokens": opts.batch_tokens or args["batch_tokens"]}


def _pad_id(tok) -> int:
    return next((i for i in (tok.pad_token_id, tok.eos_token_id) if i is not None), 0)


def _check_ids(requests, vocab_size: int, start: int, model_name: str) -> None:
    for n, r in enumerate(requests):
        if max(r.response_ids, default=-1) >= vocab_size:
            raise UserError(
                f"example {start + n}: answer token ids exceed the {vocab_size} outputs of {model_name}: "
                "its tokenizer has tokens its model has no output for"
            )


def _vocab_refusal(tok, model_name: str, vocab: str, aligned_meta: dict, i2i_file, why: str = "") -> UserError:
    return UserError(
        f"the base tokenizer of {model_name} (vocabulary {len(tok)}, fingerprint {vocab}) differs from the aligned "
        f"tokenizer of {aligned_meta.get('model')} recorded in {i2i_file} (vocabulary "
        f"{aligned_meta.get('vocab_size')}, fingerprint {aligned_meta.get('vocab')}): token ids would not mean the same text{why}"
    )


def _shared_with_i2i(tok, model_name: str, aligned_meta: dict, opts: Options) -> int:
    """i2b: how many leading ids mean the same text in the base tokenizer and the aligned one that made the i2i records.

    Equal fingerprints: all of them. Otherwise the aligned tokenizer named in the i2i records' meta is loaded
    again (it must still have the recorded fingerprint) and the two are compared id by id: one may be the
    other plus appended tokens (`models.shared_vocab`). Anything else is a `UserError`.
    """
    vocab = models.vocab_fingerprint(tok)
    if aligned_meta.get("vocab") == vocab:
        return models.token_ids(tok)[-1] + 1
    try:
        tok_a = models.load_tokenizer(aligned_meta.get("model"), opts.trust_remote_code)
    except UserError as e:
        raise _vocab_refusal(tok, model_name, vocab, aligned_meta, opts.i2i_pkl_file,
                             f" (and the aligned tokenizer, needed to see whether one vocabulary extends the other, did not load: {e})") from None
    if models.vocab_fingerprint(tok_a) != aligned_meta.get("vocab"):
        raise _vocab_refusal(tok, model_name, vocab, aligned_meta, opts.i2i_pkl_file,
                             f" (and the tokenizer at {aligned_meta.get('model')} is no longer the one recorded, so whether one vocabulary "
                             "extends the other cannot be checked)")
    shared = models.shared_vocab(tok_a, tok)
    if shared is None:
        raise _vocab_refusal(tok, model_name, vocab, aligned_meta, opts.i2i_pkl_file)
    log.info(f"the aligned vocabulary ({len(tok_a)} tokens) and the base one ({len(tok)}) share ids 0..{shared - 1}: "
             "positions with a token only one side has are marked aligned_only")
    return shared


def _count_aligned_only(records: list[dict]) -> None:
    n = sum(int(r["aligned_only"].sum()) for r in records)
    if n:
        log.info(f"{n} answer positions hold a token only the aligned vocabulary has (or follow one): marked aligned_only, never classed")


def _base_meta(opts: Options, planned: dict, model, vocab: str, tok) -> dict:
    return {
        **planned,
        "revision": models.model_revision(model),
        "enable_template": opts.enable_template,
        "base_template_file": opts.base_template,
        "data_file": str(opts.data_file),
        "vocab": vocab,
        "vocab_size": len(tok),
        "versions": versions(),
    }


def _answer_source(items: list[dict], start: int, end: int, opts: Options) -> str:
    """Where the answer ids come from, for `meta`: the data's `output_ids`, or the answer text encoded."""
    if opts.tokenization == "reference":
        return "text"
    have = sum(1 for i in range(start, end) if items[i].get("output_ids") is not None)
    return "output_ids" if have == end - start else "text" if have == 0 else f"output_ids ({have} of {end - start} examples), else text"


def _sides(opts: Options, toks: list, model_list: list, template: str | None) -> list[Side]:
    """One `Side` per model of the run: the aligned model on `input`, the base model on the templated `pure_input`."""
    fields = {"i2i": ["input"], "i2b": ["pure_input"], "pair": ["input", "pure_input"]}[opts.mode]
    return [
        Side(ChatEncoder(tok, opts.tokenization), field, template if field == "pure_input" else None,
             models.context_length(model), "prompt" if field == "input" or opts.mode == "i2b" else "base prompt")
        for tok, model, field in zip(toks, model_list, fields)
    ]


def _run_one(opts: Options, items: list[dict], start: int, end: int, rank: Rank) -> Path | None:
    """--mode i2i or i2b: one model."""
    i2b = opts.mode == "i2b"
    base_name, aligned_name = models.resolve_pair(opts.pair, opts.base_model, opts.aligned_model)
    model_name = base_name if i2b else aligned_name
    if model_name is None:
        flag = "--base_model" if i2b else "--aligned_model"
        raise UserError(f"--pair {opts.pair!r} is not a preset ({', '.join(models.PAIRS)}): give {flag}")
    template = base_template(opts) if i2b else None
    if not i2b and (opts.enable_template or opts.base_template):
        log.warning("--enable_template/--base_template apply to --mode i2b and pair only; i2i uses each example's 'input'")
    if opts.base_device:
        log.warning("--base_device applies to --mode pair only; this run uses --device")
    device, dtype = _device_dtype(opts, rank)
    i2i = i2i_records_for(opts.i2i_pkl_file, items, start, end) if i2b else None
    adapter_base = None if i2b else opts.base_model  # --base_model: the base weights of an aligned adapter
    planned = {
        "model": model_name,
        "adapter": adapters.describe(model_name, adapter_base),
        "mode": opts.mode,
        "dtype": models.dtype_name(dtype),
        "top_k": opts.top_k,
        "template": template,
        "tokenization": opts.tokenization,
        "n_data": len(items),
        "data": data_fingerprint(items),
        # i2b: the run whose answer ids and top-1 tokens it scores
        "aligned": f"{i2i[0]['meta'].get('model')} ({i2i[0]['meta'].get('dtype')})" if i2i else None,
    }
    shard = Path(opts.logits_folder) / store.shard_name(opts.pair, opts.mode, start, end)
    if _keep_existing(shard, planned, opts):
        return shard

    tok = models.load_tokenizer(adapters.tokenizer_source(model_name, adapter_base), opts.trust_remote_code)
    vocab = models.vocab_fingerprint(tok)
    shared = _shared_with_i2i(tok, model_name, i2i[0]["meta"], opts) if i2i else None
    model = adapters.load(model_name, dtype, device, adapter_base, **_load_kwargs(opts)).model

    (side,) = _sides(opts, [tok], [model], template)
    where = _where(opts, items)
    if i2i:
        answers = [r["response_ids"] for r in i2i]
        top1 = [r["topk_ids"][:, 0] if len(r["response_ids"]) else [] for r in i2i]
    else:
        answers, top1 = [answer_ids(items[i], side, where(i)) for i in range(start, end)], None
    planned_ex = plan(items, range(start, end), [side], answers, where, top1)
    requests = [Request(p.prompt_ids[0], p.response_ids, p.aligned_top1) for p in planned_ex]
    # i2b: an answer id the base model does not have (an appended aligned token) is fed as a stand-in, its positions marked
    scorer = Scorer(model, opts.top_k, pad_id=_pad_id(tok), token_ids=models.token_ids(tok), stand_in=_pad_id(tok) if i2b else None,
                    name=model_name, **_scoring_args(opts, device))
    if not i2b:
        _check_ids(requests, scorer.head.vocab_size, start, model_name)
    _check_head(scorer, requests, planned_ex, where)

    stats = _score_with_progress(scorer, requests, f"{opts.pair} {opts.mode}", not rank.is_main, [where(i) for i in range(start, end)])
    meta = {**_base_meta(opts, planned, model, vocab, tok), "answer_ids": "i2i records" if i2b else _answer_source(items, start, end, opts)}
    if i2b:
        meta["shared_vocab"] = shared
    records = [
        make_record(
            index=p.index,
            id=items[p.index]["id"],
            prompt=p.prompts[0],
            probe_text=i2i[n]["probe_text"] if i2i else answer_of(items[p.index]),
            request=requests[n],
            stats=stats[n],
            n_truncated=p.n_truncated,
            meta=meta,
            final_generated_text=None if i2b else side.encoder.decode_answer(p.prompts[0], p.prompt_ids[0], p.response_ids),
            aligned_only=aligned_only(p.response_ids, p.aligned_top1, scorer.head.vocab_size) if i2b else None,
        )
        for n, p in enumerate(planned_ex)
    ]
    if i2b:
        _count_aligned_only(records)
    _save(shard, records, [p.n_truncated for p in planned_ex], model_name)
    return shard


def _run_pair(opts: Options, items: list[dict], start: int, end: int, rank: Rank) -> Path | None:
    """--mode pair: both models in this process, exact divergences at every position."""
    base_name, aligned_name = models.resolve_pair(opts.pair, opts.base_model, opts.aligned_model)
    if base_name is None and aligned_name is not None:  # an aligned adapter: the base weights it names
        base_name = (adapters.describe(aligned_name) or {}).get("base")
    if base_name is None or aligned_name is None:
        raise UserError(f"--pair {opts.pair!r} is not a preset ({', '.join(models.PAIRS)}): --mode pair needs --aligned_model and --base_model")
    if opts.i2i_pkl_file:
        log.warning("--i2i_pkl_file is for --mode i2b; --mode pair scores both models itself")
    template = base_template(opts)
    device, dtype = _device_dtype(opts, rank)
    base_device = models.check_device(opts.base_device) if opts.base_device else device
    planned = {
        "model": aligned_name,
        "base_model": base_name,
        "adapter": adapters.describe(aligned_name, opts.base_model),
        "base_adapter": adapters.describe(base_name),
        "mode": "pair",
        "dtype": models.dtype_name(dtype),
        "top_k": opts.top_k,
        "template": template,
        "tokenization": opts.tokenization,
        "n_data": len(items),
        "data": data_fingerprint(items),
    }
    shard = Path(opts.logits_folder) / store.shard_name(opts.pair, "pair", start, end)
    if _keep_existing(shard, planned, opts):
        return shard

    tok_a = models.load_tokenizer(adapters.tokenizer_source(aligned_name, opts.base_model), opts.trust_remote_code)
    tok_b = models.load_tokenizer(adapters.tokenizer_source(base_name), opts.trust_remote_code)
    vocab, base_vocab = models.vocab_fingerprint(tok_a), models.vocab_fingerprint(tok_b)
    shared = models.token_ids(tok_a)[-1] + 1 if base_vocab == vocab else models.shared_vocab(tok_a, tok_b)
    if shared is None:
        raise UserError(f"the tokenizers of {aligned_name} and {base_name} differ ({models.vocab_difference(tok_a, tok_b)}): "
                        "token ids would not mean the same text")
    aligned, base = adapters.load_pair(aligned_name, base_name, dtype, device, base_device, opts.base_model, **_load_kwargs(opts))
    model_a, model_b = aligned.model, base.model

    sides = _sides(opts, [tok_a, tok_b], [model_a, model_b], template)
    where = _where(opts, items)
    answers = [answer_ids(items[i], sides[0], where(i)) for i in range(start, end)]
    planned_ex = plan(items, range(start, end), sides, answers, where)
    requests = [PairRequest(Request(p.prompt_ids[0], p.response_ids), Request(p.prompt_ids[1], p.response_ids)) for p in planned_ex]
    scorer = PairScorer(model_a, model_b, opts.top_k, pad_ids=(_pad_id(tok_a), _pad_id(tok_b)),
                        token_ids=(models.token_ids(tok_a), models.token_ids(tok_b)), shared=shared,
                        names=(aligned_name, base_name), base_context=base.context, **_scoring_args(opts, device))
    _check_ids(requests, scorer.aligned.head.vocab_size, start, aligned_name)
    _check_head(scorer, requests, planned_ex, where)

    stats = _score_with_progress(scorer, requests, f"{opts.pair} pair", not rank.is_main, [where(i) for i in range(start, end)])
    n_base = scorer.base.head.vocab_size
    everything = scorer.shared >= max(scorer.aligned.head.vocab_size, n_base)
    meta = {**_base_meta(opts, planned, model_a, vocab, tok_a), "base_revision": models.model_revision(model_b),
            "answer_ids": _answer_source(items, start, end, opts), "base_vocab": base_vocab, "base_vocab_size": len(tok_b),
            "shared_vocab": scorer.shared, "shared_weights": model_a is model_b,
            "divergences": "over the whole vocabulary" if everything else
            f"over ids 0..{scorer.shared - 1}, which both vocabularies share, each distribution renormalized over them"}
    records = [
        make_pair_record(
            index=p.index,
            id=items[p.index]["id"],
            prompt=p.prompts[0],
            base_prompt=p.prompts[1],
            probe_text=answer_of(items[p.index]),
            request=requests[n],
            stats=stats[n],
            n_truncated=p.n_truncated,
            meta=meta,
            final_generated_text=sides[0].encoder.decode_answer(p.prompts[0], p.prompt_ids[0], p.response_ids),
            aligned_only=aligned_only(p.response_ids, stats[n]["topk_ids"][:, 0], n_base),
        )
        for n, p in enumerate(planned_ex)
    ]
    _count_aligned_only(records)
    _save(shard, records, [p.n_truncated for p in planned_ex], f"{aligned_name} / {base_name}")
    return shard


def _check_head(scorer: Scorer | PairScorer, requests: list, planned_ex: list, where) -> None:
    """The output-layer check (`Scorer.check_head`, `PairScorer.check_heads`) on the first example with an answer."""
    n = next((n for n, r in enumerate(requests) if r.response_ids), None)
    if n is not None:
        check = scorer.check_heads if isinstance(scorer, PairScorer) else scorer.check_head
        check(requests[n], name=where(planned_ex[n].index))


def _save(shard: Path, records: list[dict], truncated: list[int], model_name: str) -> None:
    store.save_records(shard, records)
    n_trunc = sum(1 for t in truncated if t)
    if n_trunc:
        log.warning(f"{n_trunc} answers were cut to fit the context of {model_name} ({sum(truncated)} tokens dropped; see n_truncated)")
    log.info(f"wrote {shard}: {len(records)} examples, {sum(len(r['response_ids']) for r in records)} answer positions")


def _where(opts: Options, items: list[dict]):
    """where(i): example i named in errors and logs."""
    return lambda i: f"{opts.data_file}: example {i} (id={items[i]['id']})"


def _score_with_progress(scorer: BatchedScorer, requests: list, desc: str, disable: bool = False, names=None):
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
