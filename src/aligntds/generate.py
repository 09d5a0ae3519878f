"""Answer generation: the aligned model's greedy answers to instructions, in the data format the pipeline reads.

Each instruction (`pure_input`, or `instruction`) is formatted with the model's chat template
(`apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True)`), encoded exactly as
`logit_analysis --mode i2i` encodes an `input` (`aligntds.prompts.ChatEncoder`: the model's chat-format
ids, one BOS), and answered greedily with the KV cache, a batch of left-padded prompts at a time
(longest first, order restored). Everything after the first EOS is dropped.

Each answer is written twice: `output_ids`, the generated ids (the EOS included when the model stopped
on it), which `logit_analysis` scores as they are, and `output[0]`, the text they add after the prompt
(decoded in context, so a SentencePiece answer keeps its leading space and the EOS shows as `</s>`).
A model can generate ids its tokenizer would not produce from the text (a byte-level `ĊĊ` where the text
re-encodes to `Ċ Ċ`); the log counts the answers whose text does not re-encode to their ids.

    python src/generate_outputs.py --pair demo --data_file data/demo/instructions.json \
        --output_file data/demo/demo-aligned.json --max_new_tokens 160 --batch_size 32
    python src/generate_outputs.py --model path/or/hub-id --data_file x.jsonl --output_file out.json --start 0 --end 100

Output: a JSON list of `{"id", "pure_input", "input", "output": [answer], "output_ids", "generator", ...}`
(other fields of the instruction are kept), written atomically.

Several processes (`accelerate launch`, `torchrun`; see `aligntds.distributed`): each answers its own contiguous
part `[a, b)` of the instructions and writes it to its part file `DIR/parts/NAME.[a:b].json` (for the output
`DIR/NAME.json`), and the same command with `--merge` joins the parts, refusing gaps, overlaps and parts made
with other settings, into the very file one process would have written. A part that exists, made with the same
settings, is kept, so a launch that crashed can be run again.

    accelerate launch --multi_gpu --num_processes 8 src/generate_outputs.py --pair llama2 --data_file q.json --output_file a.json
    python src/generate_outputs.py --pair llama2 --data_file q.json --output_file a.json --merge
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from . import adapters, models
from .data import data_fingerprint, data_slice, read_objects
from .distributed import Rank, current_rank, device_for, part_of, select_device
from .errors import UserError
from .merge import check_tiling
from .options import GenOptions
from .prompts import ChatEncoder
from .records import settings_difference
from .store import atomic_write_bytes, ensure_writable_folder, find_parts, part_path

log = logging.getLogger("aligntds")

QUERY_FIELDS = ("pure_input", "instruction")
# A part file: {"format": PART_FORMAT, "settings": {PART_KEYS...}, "start", "end", "answers": [...]}.
PART_FORMAT = "aligntds generate_outputs part 1"
# What the parts of one launch share: the model and decoding, the instructions (their count and content) and the run's range.
PART_KEYS = ("generator", "max_new_tokens", "dtype", "n_data", "data", "start", "end")


def load_instructions(path, split: str | None = None, revision: str | None = None,
                      columns: str | dict | None = None) -> list[dict]:
    """Instructions from a JSON list or JSONL (or any source `aligntds.sources.read_items` reads, with `split`, `revision`
    and the `columns` mapping): objects with `pure_input` or `instruction` (a non-empty string).

    Returns copies with `pure_input` set; `id` defaults to the example's position in the file.
    """
    path, items = read_objects(path, split, revision, columns, "instructions")
    out = []
    for i, item in enumerate(items):
        where = f"{path}: example {i}"
        field = next((f for f in QUERY_FIELDS if f in item), None)
        if field is None:
            raise UserError(f"{where} (id={item.get('id', i)}) has no field 'pure_input' or 'instruction'")
        query = item[field]
        if not isinstance(query, str) or not query.strip():
            raise UserError(f"{where} (id={item.get('id', i)}): field '{field}' must be a non-empty string")
        out.append({**item, "id": item.get("id", i), "pure_input": query})
    return out


def chat_prompt(tokenizer, query: str, model_name: str = "the model") -> str:
    """The query in the tokenizer's chat template, ready for the answer (the generation prompt added)."""
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(f"the tokenizer of {model_name} has no chat template: cannot format instructions")
    try:
        return tokenizer.apply_chat_template([{"role": "user", "content": query}], tokenize=False, add_generation_prompt=True)
    except Exception as e:  # a broken template raises jinja2 errors of many kinds
        raise UserError(f"the chat template of {model_name} fails: {type(e).__name__}: {e}") from None


def cut_at_eos(ids: Sequence[int], eos_ids: set[int]) -> list[int]:
    """`ids` up to and including the first EOS (generate pads finished rows after it)."""
    out = []
    for i in ids:
        out.append(int(i))
        if i in eos_ids:
            break
    return out


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids, attention_mask: int64 [B, L], prompts right-aligned (padding on the left)."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        mask[row, width - len(p) :] = 1
    return ids, mask


def eos_ids_of(tokenizer, model) -> set[int]:
    """Every token id that ends an answer: the tokenizer's EOS and the model's generation config's."""
    ids = set()
    for source in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(source, int):
            ids.add(source)
        elif isinstance(source, (list, tuple)):
            ids.update(int(x) for x in source)
    return ids


@torch.no_grad()
def greedy_generate(
    model,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: Sequence[int],
    batch_size: int,
    pad_id: int,
    eos_ids: set[int],
    progress: Callable[[int], None] | None = None,
) -> list[list[int]]:
    """Greedy answer ids of each prompt (KV cache, left-padded batches, longest prompts first).

    prompts: [N] lists of prompt ids; max_new_tokens: [N] budget of each. Returns [N] lists of new ids,
    cut after the first EOS and to the example's budget, in the order given.
    """
    from transformers import GenerationConfig

    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out: list[list[int]] = [[] for _ in prompts]
    for b in range(0, len(order), batch_size):
        batch = order[b : b + batch_size]
        ids, mask = left_pad([prompts[i] for i in batch], pad_id)
        budget = max(max_new_tokens[i] for i in batch)
        if budget > 0:
            cfg = GenerationConfig(
                max_new_tokens=budget, do_sample=False, num_beams=1, use_cache=True,
                pad_token_id=pad_id, eos_token_id=sorted(eos_ids) or None,
            )
            gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=cfg)
            new = gen[:, ids.shape[1] :].tolist()
        else:
            new = [[] for _ in batch]
        for row, i in enumerate(batch):
            out[i] = cut_at_eos(new[row][: max_new_tokens[i]], eos_ids)
        if progress:
            progress(len(batch))
    return out


def token_budgets(prompts: Sequence[Sequence[int]], max_new_tokens: int, context: int | None, names: Sequence[str]) -> list[int]:
    """Each example's answer budget: --max_new_tokens, less where prompt + answer would pass the model's context.

    A prompt that alone fills the context is refused, naming its example (`names[n]`).
    """
    budgets = []
    for p, name in zip(prompts, names):
        if context is not None and len(p) >= context:
            raise UserError(f"{name}: the prompt alone has {len(p)} tokens, the model's context is {context}")
        budgets.append(max_new_tokens if context is None else min(max_new_tokens, context - len(p)))
    capped = sum(1 for b in budgets if b < max_new_tokens)
    if capped:
        log.warning(f"{capped} prompts leave less than --max_new_tokens={max_new_tokens} tokens of context: their answers are "
                    "capped")
    return budgets


def answers_bytes(results: list[dict]) -> bytes:
    """The output file's bytes: one writer for one process and for the merge, so that they are equal."""
    return (json.dumps(results, indent=1, ensure_ascii=False) + "\n").encode("utf-8")


def run(opts: GenOptions, rank: Rank | None = None) -> Path | None:
    """Answer instructions [start, end) and write them to `output_file`; returns the path written (None: nothing to do).

    In a launch of several processes (`rank`, default: from the environment) this process answers its part and
    writes its part file; with `opts.merge`, the part files are joined into `output_file` instead (`merge_parts`).
    """
    if opts.max_new_tokens < 1:
        raise UserError(f"--max_new_tokens must be >= 1, got {opts.max_new_tokens}")
    if opts.batch_size < 1:
        raise UserError(f"--batch_size must be >= 1, got {opts.batch_size}")
    rank = rank or current_rank()
    all_items = load_instructions(opts.data_file, opts.data_split, opts.data_revision, opts.columns)
    start, end = data_slice(opts.start, opts.end, len(all_items))
    if opts.merge:
        return merge_parts(opts, all_items, start, end)
    if start >= end:  # as logit_analysis: nothing loaded, nothing written (an existing --output_file is kept)
        asked = f"[{opts.start}:{'' if opts.end is None else opts.end}]"
        log.info(f"instructions {asked} are past the end of {opts.data_file} ({len(all_items)} instructions): nothing to do")
        return None
    _, model_name = models.resolve_pair(opts.pair, None, opts.model)
    if model_name is None:
        raise UserError(f"--pair {opts.pair!r} is not a preset ({', '.join(models.PAIRS)}): give --model")
    models.check_model_folder(model_name, "--model" if opts.model else f"--pair {opts.pair}'s aligned model")
    if opts.base_model:
        models.check_model_folder(opts.base_model, "--base_model")
        if adapters.describe(model_name, opts.base_model) is None:
            log.warning(f"--base_model applies to an adapter --model only; {model_name} is a full model")
        else:
            adapters.base_weights(model_name, opts.base_model)  # a warning when it differs from the base it names
    device = device_for(rank, opts.device, None)
    select_device(device)
    dtype = models.resolve_dtype(opts.dtype, device)
    out, settings = Path(opts.output_file), None
    if rank.world > 1:
        a, b = part_of(start, end, rank, "instructions")
        if a >= b:
            return None
        settings = {"generator": model_name, "max_new_tokens": opts.max_new_tokens, "dtype": models.dtype_name(dtype),
                    "n_data": len(all_items), "data": data_fingerprint(all_items), "start": start, "end": end}
        out, start, end = part_path(out, a, b), a, b
        if out.exists() and not opts.overwrite:
            _check_part(out, settings)
            log.info(f"{out} exists: skipping (pass --overwrite to generate it again)")
            return out
    ensure_writable_folder(out.parent)
    results = _generate(opts, all_items[start:end], start, model_name, dtype, device, show=rank.is_main)
    if settings is None:
        atomic_write_bytes(out, answers_bytes(results))
    else:
        part_file = {"format": PART_FORMAT, "settings": settings, "start": start, "end": end, "answers": results}
        atomic_write_bytes(out, (json.dumps(part_file, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))
    log.info(f"wrote {out}: {len(results)} answers")
    return out


def _generate(opts: GenOptions, items: list[dict], start: int, model_name: str, dtype, device: str,
              show: bool = True) -> list[dict]:
    """The answer records of `items` (instructions start, start+1, ...): load the model, generate, decode."""
    log.info(f"running on {device}, {models.dtype_name(dtype)}")
    tok = models.load_tokenizer(adapters.tokenizer_source(model_name, opts.base_model), opts.trust_remote_code)
    inputs = [chat_prompt(tok, item["pure_input"], model_name) for item in items]
    model = adapters.load(model_name, dtype, device, opts.base_model, trust_remote_code=opts.trust_remote_code).model

    encoder = ChatEncoder(tok)
    prompts = [encoder.prompt_ids(text) for text in inputs]
    names = [f"{opts.data_file}: example {start + n} (id={item['id']})" for n, item in enumerate(items)]
    budgets = token_budgets(prompts, opts.max_new_tokens, models.context_length(model), names)
    eos_ids = eos_ids_of(tok, model)
    pad_id = next((i for i in (tok.pad_token_id, *sorted(eos_ids)) if i is not None), 0)

    from tqdm.auto import tqdm

    with tqdm(total=len(items), desc="generate", unit="ex", dynamic_ncols=True, disable=not show) as bar:
        answers_ids = greedy_generate(model, prompts, budgets, opts.batch_size, pad_id, eos_ids, bar.update)
    results = []
    n_stopped = n_mismatch = 0
    for item, text, prompt_ids, ids in zip(items, inputs, prompts, answers_ids):
        answer = encoder.decode_answer(text, prompt_ids, ids)
        n_stopped += bool(ids) and ids[-1] in eos_ids
        n_mismatch += encoder.answer_ids(text, answer) != ids
        extra = {k: v for k, v in item.items() if k not in ("id", "pure_input", "input", "output", "output_ids", "generator")}
        results.append({"id": item["id"], "pure_input": item["pure_input"], "input": text, "output": [answer],
                        "output_ids": ids, "generator": model_name, **extra})
    n_tokens = sum(len(ids) for ids in answers_ids)
    log.info(f"{len(results)} answers, {n_tokens} tokens, {n_stopped} stopped on EOS, {len(results) - n_stopped} hit "
             "--max_new_tokens")
    log.info(f"{n_mismatch} of {len(results)} answers' texts do not re-encode to the generated ids"
             + (" (logit_analysis scores output_ids, the generated ids; the text is what the pages show)" if n_mismatch else ""))
    return results


def _read_part(path: Path) -> dict:
    """A part file, checked for its format; a `UserError` naming it otherwise."""
    try:
        part_file = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable part file ({type(e).__name__}: {e})") from None
    if not isinstance(part_file, dict) or part_file.get("format") != PART_FORMAT:
        raise UserError(f"{path}: not a part file of generate_outputs.py (no format {PART_FORMAT!r})")
    return part_file


def _check_part(path: Path, settings: dict) -> None:
    """An existing part is complete (writes are atomic): keep it only if it was made with the same settings."""
    diff = settings_difference(_read_part(path)["settings"], settings, keys=PART_KEYS)
    if diff:
        raise UserError(f"{path} exists with other settings ({diff}); pass --overwrite to generate it again")


def merge_parts(opts: GenOptions, items: list[dict], start: int, end: int) -> Path:
    """Join the part files of `opts.output_file`, in start order, into it: the file one process would have written.

    The parts must be made from the instructions `items` (by content), tile [start, end) exactly (`merge.check_tiling`),
    hold as many answers as their names say, share their settings, and have those the merge command gives itself
    (`given_settings`: --model or --pair, --max_new_tokens, --dtype). Anything else is a one-line `UserError` naming the
    part file by its path (`.../parts/NAME.[a:b].json`).
    """
    out = Path(opts.output_file)
    parts = find_parts(out)
    if not parts:
        raise UserError(f"{part_path(out, 0, 0).parent}: no part files named "
                        f"{part_path(out, 0, 0).name.replace('[0:0]', '[start:end]')}")
    first_path = parts[0][2]
    first = _read_part(first_path).get("settings") or {}
    here = {"n_data": len(items), "data": data_fingerprint(items)}
    if settings_difference(first, here, keys=here):  # before the ranges: another file's length is not a range problem
        raise UserError(f"{first_path} was made from another instructions file than {opts.data_file} ({first.get('n_data')} "
                        f"instructions, fingerprint {first.get('data')}; {opts.data_file}: {here['n_data']}, {here['data']}): "
                        "give the launch's --data_file")
    for key, value in given_settings(opts).items():
        if first.get(key) != value:
            flag = {"generator": "--model"}.get(key, f"--{key}")
            raise UserError(f"{first_path} was made with {flag} {first.get(key)}, this merge command gives {value}: give the "
                            "launch's settings with --merge (or leave them out)")
    check_tiling([(a, b, str(path)) for a, b, path in parts], start, end, "part", "this command covers instructions "
                                                                                  f"[{start}:{end}]")
    want = {**here, "start": start, "end": end}
    results = []
    for a, b, path in parts:
        part_file = _read_part(path)
        answers = part_file.get("answers")
        if (part_file.get("start"), part_file.get("end")) != (a, b) or not isinstance(answers, list) or len(answers) != b - a:
            raise UserError(f"{path}: holds instructions [{part_file.get('start')}:{part_file.get('end')}] "
                            f"({len(answers) if isinstance(answers, list) else 'no'} answers), its name says [{a}:{b}]")
        settings = part_file.get("settings") or {}
        diff = settings_difference(settings, want, keys=want)
        if diff:
            raise UserError(f"{path} was not made by this command's launch on {opts.data_file} ({diff})")
        diff = settings_difference(first, settings, keys=PART_KEYS)
        if diff:
            raise UserError(f"{path} was made with other settings than {first_path} ({diff})")
        results.extend(answers)
    atomic_write_bytes(out, answers_bytes(results))
    log.info(f"merged {len(parts)} parts into {out}: {len(results)} answers")
    return out


def given_settings(opts: GenOptions) -> dict:
    """The part settings a merge command gives itself, to be checked against the parts': `generator` (--model, or the
    aligned model of a --pair preset), `max_new_tokens` and `dtype` (not `auto`, which depends on the device); a flag
    left at its default gives none, so a plain `--merge` joins whatever the launch made."""
    defaults = {f.name: f.default for f in dataclasses.fields(GenOptions)}
    given = {}
    if opts.model or opts.pair != defaults["pair"]:
        generator = models.resolve_pair(opts.pair, None, opts.model)[1]
        if generator is not None:
            given["generator"] = generator
    if opts.max_new_tokens != defaults["max_new_tokens"]:
        given["max_new_tokens"] = opts.max_new_tokens
    if opts.dtype != "auto":
        given["dtype"] = opts.dtype
    return given
