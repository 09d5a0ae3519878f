"""One `logit_analysis` run: a slice of the data through one model, written as one shard of records.

    i2i: the aligned model on each example's chat-formatted `input`, scoring `output[0]`.
    i2b: the base model on the bare `pure_input` (optionally in a template), scoring the very same
         answer token ids, read from the i2i records, plus the exact base rank of the aligned
         model's top-1 token at every position.

    from aligntds.analysis import Options, run
    run(Options(data_file="data/x.json", logits_folder="saved_logits/x/shards", pair="llama2", mode="i2i"))
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import models, store
from .data import REFERENCE_TEMPLATE, answer_of, fill_template, load_examples, load_template
from .errors import UserError
from .prompts import encode_answer, encode_prompt, leading_specials
from .records import check_records, make_record, settings_difference, versions
from .scoring import Request, Scorer, Throughput

log = logging.getLogger("aligntds")

MODES = ("i2i", "i2b")


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
    batch_tokens: int | None = None
    overwrite: bool = False
    trust_remote_code: bool = False
    attn_implementation: str | None = None


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


def run(opts: Options) -> Path | None:
    """Score examples [start, end) and write their shard; returns its path (None when the slice is empty)."""
    if opts.mode not in MODES:
        raise UserError(f"--mode must be one of {', '.join(MODES)}, got {opts.mode!r}")
    i2b = opts.mode == "i2b"
    items = load_examples(opts.data_file, fields=("pure_input",) if i2b else ("input",))
    start, end = data_slice(opts.start, opts.end, len(items))
    if start >= end:
        log.info(f"examples [{opts.start}:{opts.end}] are past the end of {opts.data_file} ({len(items)} examples): nothing to do")
        return None

    base_name, aligned_name = models.resolve_pair(opts.pair, opts.base_model, opts.aligned_model)
    model_name = base_name if i2b else aligned_name
    if model_name is None:
        flag = "--base_model" if i2b else "--aligned_model"
        raise UserError(f"--pair {opts.pair!r} is not a preset ({', '.join(models.PAIRS)}): give {flag}")
    template = base_template(opts) if i2b else None
    if not i2b and (opts.enable_template or opts.base_template):
        log.warning("--enable_template/--base_template apply to --mode i2b only; i2i uses each example's 'input'")
    device = models.resolve_device(opts.device)
    dtype = models.resolve_dtype(opts.dtype, device)
    planned = {
        "model": model_name,
        "mode": opts.mode,
        "dtype": models.dtype_name(dtype),
        "top_k": opts.top_k,
        "template": template,
        "n_data": len(items),
    }

    shard = Path(opts.logits_folder) / store.shard_name(opts.pair, opts.mode, start, end)
    if shard.exists() and not opts.overwrite:
        _check_existing(shard, planned)
        log.info(f"{shard} exists: skipping (pass --overwrite to recompute)")
        return shard
    i2i = i2i_records_for(opts.i2i_pkl_file, items, start, end) if i2b else None

    tok = models.load_tokenizer(model_name, opts.trust_remote_code)
    vocab = models.vocab_fingerprint(tok)
    if i2i:
        aligned_meta = i2i[0]["meta"]
        if aligned_meta.get("vocab") != vocab:
            raise UserError(
                f"the base tokenizer of {model_name} (vocabulary {len(tok)}, fingerprint {vocab}) differs from the aligned "
                f"tokenizer of {aligned_meta.get('model')} recorded in {opts.i2i_pkl_file} (vocabulary "
                f"{aligned_meta.get('vocab_size')}, fingerprint {aligned_meta.get('vocab')}): token ids would not mean the same text"
            )
    model = models.load_model(model_name, dtype, device, opts.device_map, opts.trust_remote_code, opts.attn_implementation)

    requests, prompts, truncated = _requests(opts, items, start, end, tok, model, template, i2i)
    batch_tokens = opts.batch_tokens or (16384 if device.startswith("cuda") else 4096)
    pad_id = next((i for i in (tok.pad_token_id, tok.eos_token_id) if i is not None), 0)
    scorer = Scorer(model, opts.top_k, batch_tokens, head_bytes=(2 << 30) if device.startswith("cuda") else (32 << 20), pad_id=pad_id)
    for n, r in enumerate(requests):
        if max([*r.response_ids, *(r.probe_ids or [])], default=-1) >= scorer.head.vocab_size:
            raise UserError(
                f"example {start + n}: answer or aligned token ids exceed the {scorer.head.vocab_size} outputs of {model_name}: "
                "the models do not share a vocabulary"
            )
    first = next((r for r in requests if r.response_ids), None)
    if first is not None:
        scorer.check_head(first)

    stats = _score_with_progress(scorer, requests, f"{opts.pair} {opts.mode}")
    meta = {
        **planned,
        "revision": models.model_revision(model),
        "enable_template": opts.enable_template,
        "base_template_file": opts.base_template,
        "data_file": str(opts.data_file),
        "vocab": vocab,
        "vocab_size": len(tok),
        "versions": versions(),
    }
    records = [
        make_record(
            index=i,
            id=items[i]["id"],
            prompt=prompts[n],
            probe_text=i2i[n]["probe_text"] if i2i else answer_of(items[i]),
            request=requests[n],
            stats=stats[n],
            n_truncated=truncated[n],
            meta=meta,
            final_generated_text=None if i2b else tok.decode(list(requests[n].response_ids)),
        )
        for n, i in enumerate(range(start, end))
    ]
    store.save_records(shard, records)
    n_trunc = sum(1 for t in truncated if t)
    if n_trunc:
        log.warning(f"{n_trunc} answers were cut to fit the context of {model_name} ({sum(truncated)} tokens dropped; see n_truncated)")
    log.info(f"wrote {shard}: {len(records)} examples, {sum(len(r.response_ids) for r in requests)} answer positions")
    return shard


def _requests(opts, items, start, end, tok, model, template, i2i):
    """Token ids of every example in the slice; answers cut to the context, prompts that do not fit refused."""
    leading = leading_specials(tok)
    max_len = models.context_length(model)
    requests, prompts, truncated = [], [], []
    for n, i in enumerate(range(start, end)):
        item = items[i]
        where = f"{opts.data_file}: example {i} (id={item['id']})"
        if i2i:
            prompt = fill_template(template, item["pure_input"])
            response = [int(x) for x in i2i[n]["response_ids"]]
            probes = [int(x) for x in i2i[n]["topk_ids"][:, 0]] if len(response) else []
        else:
            prompt = item["input"]
            response = encode_answer(tok, answer_of(item))
            probes = None
        prompt_ids = encode_prompt(tok, prompt, leading)
        if not prompt_ids:
            raise UserError(f"{where}: the prompt is empty, so the first answer token has no context")
        cut = 0
        if max_len is not None and len(prompt_ids) + len(response) > max_len:
            if len(prompt_ids) >= max_len:
                raise UserError(f"{where}: the prompt alone has {len(prompt_ids)} tokens, the model's context is {max_len}")
            cut = len(prompt_ids) + len(response) - max_len
            response = response[: len(response) - cut]
            probes = None if probes is None else probes[: len(response)]
        requests.append(Request(prompt_ids, response, probes))
        prompts.append(prompt)
        truncated.append(cut)
    return requests, prompts, truncated


def _score_with_progress(scorer: Scorer, requests: list[Request], desc: str, disable: bool = False):
    from tqdm.auto import tqdm

    thr = Throughput()
    with tqdm(total=len(requests), desc=desc, unit="ex", disable=disable, dynamic_ncols=True) as bar:

        def progress(examples: int, tokens: int) -> None:
            thr.add(tokens)
            bar.update(examples)
            bar.set_postfix_str(f"{thr.rate:,.0f} tok/s")

        stats = scorer.score(requests, progress)
    log.info(f"{desc}: {thr.tokens} answer tokens at {thr.rate:,.0f} tokens/s")
    return stats
