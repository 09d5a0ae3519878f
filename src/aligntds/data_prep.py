"""data_prep: every position's metrics from the joined records, the prepared data the pages are made from.

The records are read and joined by `aligntds.join` (this project's i2i + i2b files, or one `--mode pair` file with
exact divergences) and `aligntds.reference_pickles` (the reference implementation's merged pickles), slice labels
come from `aligntds.slices`. Writes the prepared data (a record file), the corpus summary (`summary.json`) and the
per-position curves (CSV), and prints the summary.

    from aligntds.data_prep import prepare_files
    prepare_files("llama2_tp", "saved_logits/.../llama2-i2i.pkl", "saved_logits/.../llama2-i2b.pkl",
                  slice_by=["category"])   # labels from the data file the records were made from

The prepared data is one dict: `format` (PREPARED_FORMAT: a file of another data_prep is refused, "run data_prep
again"), `pair`, `source` ("aligntds", "pair" or "reference"), `kl` (which KL the
`kl` arrays below hold), `top_k`, `spike_threshold` (float, or None without positions), `slice_fields`
(the slice fields, in order), `meta`, `tokens` {id: text} and `examples`, one dict per example. `tokens` is what
each token shows (tokentext.token_strings): its text with its leading space, or, for a token that is only part of
a character, its bytes (`<0xF0><0x9F>`); never U+FFFD for a partial character. For the reference's pickles, which
name no tokenizer, the pickles' own token strings, unless `--tokenizer` names one.

Per example, per position (T positions; each a numpy array of length T):

    response_ids      int32 [T]     the answer token ids
    spans             list of T str each answer token's part of the answer text (tokentext.answer_spans): put
                                    together, the answer decoded after the aligned prompt (ChatEncoder.decode_answer);
                                    a character split over several tokens is on the token that completes it, the
                                    tokens before it hold what precedes it (often ""); reference pickles: their
                                    token strings, or with --tokenizer the answer ids decoded alone, cut the same way
    aligned_boundary, base_boundary
                      str           what each model read between its prompt and the spans that its prompt's text
                                    does not end with (data_prep.boundary): position t's prefix on a side is its prompt,
                                    then (t > 0) its boundary, then the first t spans. With a SentencePiece tokenizer
                                    the answer's first token carries a space: the chat prompt's text ends in it (""),
                                    the reference's base template does not (" "); "" for the reference's pickles
    aligned_topk_ids, aligned_topk_logprobs, base_topk_ids, base_topk_logprobs
                      int32 / float32 [T, 10]: each side's top-10
    aligned_rank      int32 [T]     0-based base rank of the aligned top-1 (-1: beyond the stored base top-k,
                                    for reference pickles and for an i2b file scored against another i2i run)
    cls               int8 [T]      0 unshifted, 1 marginal, 2 shifted (metrics.shift_class); -1 (ALIGNED_ONLY):
                                    never classed, a token at or before it exists only in the aligned vocabulary
                                    (the records' `aligned_only`)
    base_prob         float32 [T]   base probability of the aligned top-1 (NaN where its rank is unknown)
    base_logprob      float32 [T]   its base log-prob, nats (the records' `aligned_logprob`; NaN where unknown)
    top1_differs      bool [T]      base top-1 != aligned top-1
    greedy_mismatch   bool [T]      the answer token is not the aligned model's top-1
    tie               bool [T]      the aligned top-1 has exactly the base log-prob of another token (`tied_top1`)
    aligned_entropy   float32 [T]   entropy of the aligned distribution, nats (NaN for reference pickles)
    base_entropy      float32 [T]   entropy of the base distribution, nats (NaN for reference pickles)
    kl                float32 [T]   the KL named by `kl`: exact KL(P_base || P_aligned) from pair mode, else
                                    KL@10 over the stored top-k (the reference's definition, metrics.py: summed
                                    over the tokens both lists share, so 0 where they share none)
    spike             bool [T]      kl > spike_threshold (the corpus mean of kl + 3 standard deviations, over the
                                    classed positions); never at an aligned-only position
    metrics           {"kl@10", ..., "tp@30": float32 [T]}   the reference's top-k metrics
    exact             {"kl_base_aligned", "kl_aligned_base", "js", "tv": float32 [T]}   pair mode only, else {}

Per example, scalars (answers without classed positions: NaN, or None for `first_shifted`; aligned-only positions,
`cls` -1, are left out of all of them: the base model was fed a stand-in there):

    index, id, query, aligned_prompt, base_prompt, answer_text (the records' `probe_text`)
    n_truncated       int     answer tokens not scored: cut to fit the context (the records' `n_truncated`, the i2i
                                    record's plus the i2b record's); 0 for the reference's pickles, which do not say
    shifted_share     float   shifted positions / classed positions
    max_kl, mean_kl   float   max and mean of `kl` over the answer's classed positions
    first_shifted     int     position of the first shifted token, None if none
    spikes            int     positions with `spike`
    slices            {field: label}   the example's label of each slice field (`slice_fields`); "null" when
                                    the example has no such field (see `slices.slice_label`)
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import numpy as np

from . import store
from .data import QUERY_PLACEHOLDER
from .errors import UserError
from .join import Joined, load_joined
from .metrics import ALIGNED_ONLY, SHIFTED, shift_class, topk_metrics
from .slices import add_slices, duplicate_ids, id_key
from .tokentext import answer_spans, token_strings

log = logging.getLogger("aligntds")

SHOWN = 10  # candidates per side kept for the pages
# The prepared data's format: a file of another (older) data_prep is refused by `load_prepared`. 2: the keys renamed
# to the code's names (aligned_topk_ids, base_topk_logprobs, answer_text, ...), provenance in the summary.
PREPARED_FORMAT = 2
# Keys added to format 2 since: a file without them is of an earlier data_prep, refused as the older formats are.
EXAMPLE_KEYS = {"spans", "n_truncated", "aligned_boundary", "base_boundary"}


def default_output(pair: str) -> Path:
    return Path("saved_logits") / "prepared" / f"just_eval+{pair}.pkl"


# -- metrics for every position --------------------------------------------------------------------

def bare_query(prompt: str, template: str | None, source: str) -> str:
    """The query without the template around it (the prompt itself when it does not fit the template)."""
    if source == "reference":  # as the reference's pages did
        return prompt.replace("# Query:", "").replace("# Answer:", "").replace("```", "").strip()
    if template and QUERY_PLACEHOLDER in template:
        head, tail = template.split(QUERY_PLACEHOLDER, 1)
        if prompt.startswith(head) and prompt.endswith(tail) and len(prompt) >= len(head) + len(tail):
            return prompt[len(head): len(prompt) - len(tail)]
    return prompt


def stored_k(joined: list[Joined], metas: tuple[dict, ...] = ()) -> int:
    """Candidates stored per position on both sides (the smaller, when i2i and i2b used different --top_k); without any
    position (only empty answers), the records' `top_k` (their metas'), else SHOWN."""
    found = [min(j.aligned_topk_ids.shape[1], j.base_topk_ids.shape[1]) for j in joined if len(j.response_ids)]
    recorded = [m["top_k"] for m in metas if isinstance(m.get("top_k"), int)]
    return min(found or recorded or [SHOWN])


def position_kl(metrics: dict[str, np.ndarray], exact: dict[str, np.ndarray], t: int) -> np.ndarray:
    """float32 [T]: the exact KL(P_base || P_aligned) when pair mode computed it, else the reference's KL@10
    over the stored top-k (KL@k when fewer than 10 were stored)."""
    if "kl_base_aligned" in exact:
        return np.asarray(exact["kl_base_aligned"], dtype=np.float32)
    ks = sorted(int(name.split("@")[1]) for name in metrics if name.startswith("kl@"))
    return np.asarray(metrics[f"kl@{ks[0]}"], dtype=np.float32) if ks else np.full(t, np.nan, np.float32)


def _entropy(values, t: int) -> np.ndarray:
    return np.full(t, np.nan, np.float32) if values is None else np.asarray(values, dtype=np.float32)


def compute(joined: list[Joined], ks: tuple[int, ...]) -> list[dict]:
    """Prepared examples: metrics over all positions at once, then split back per example."""
    lengths = [len(j.response_ids) for j in joined]
    bounds = np.cumsum([0] + lengths)
    k_stored = stored_k(joined)

    def cat(name, width=None):
        parts = [getattr(j, name)[:, :width] if width else getattr(j, name) for j in joined if len(j.response_ids)]
        return np.concatenate(parts) if parts else np.zeros((0, width) if width else 0)

    aligned_ids, aligned_lp = cat("aligned_topk_ids", k_stored), cat("aligned_topk_logprobs", k_stored)
    base_ids, base_lp = cat("base_topk_ids", k_stored), cat("base_topk_logprobs", k_stored)
    metrics = {}
    if len(aligned_ids):
        for k in sorted(set(min(k, k_stored) for k in ks)):
            for name, values in topk_metrics(base_ids, base_lp, aligned_ids, aligned_lp, k).items():
                metrics[f"{name}@{k}"] = values.astype(np.float32)
    rank = cat("aligned_rank")
    cls = np.where(rank < 0, 2, shift_class(np.maximum(rank, 0))).astype(np.int8) if len(rank) else np.zeros(0, np.int8)
    cls[cat("aligned_only").astype(bool)] = ALIGNED_ONLY
    examples = []
    for n, j in enumerate(joined):
        s, e = bounds[n], bounds[n + 1]
        examples.append({
            "index": j.index,
            "id": j.id,
            "aligned_prompt": j.aligned_prompt,
            "base_prompt": j.base_prompt,
            "answer_text": j.answer_text,
            "response_ids": np.asarray(j.response_ids, dtype=np.int32),
            "aligned_topk_ids": np.asarray(j.aligned_topk_ids[:, :SHOWN], dtype=np.int32),
            "aligned_topk_logprobs": np.asarray(j.aligned_topk_logprobs[:, :SHOWN], dtype=np.float32),
            "base_topk_ids": np.asarray(j.base_topk_ids[:, :SHOWN], dtype=np.int32),
            "base_topk_logprobs": np.asarray(j.base_topk_logprobs[:, :SHOWN], dtype=np.float32),
            "aligned_rank": np.asarray(j.aligned_rank, dtype=np.int32),
            "cls": cls[s:e],
            "base_prob": np.exp(j.aligned_logprob).astype(np.float32),
            "base_logprob": np.asarray(j.aligned_logprob, dtype=np.float32),
            "top1_differs": j.aligned_topk_ids[:, 0] != j.base_topk_ids[:, 0] if len(j.aligned_topk_ids) else np.zeros(0, bool),
            "tie": tied_top1(j),
            "greedy_mismatch": np.asarray(j.greedy_mismatch, dtype=bool),
            "metrics": {name: v[s:e] for name, v in metrics.items()},
            "exact": {name: v.astype(np.float32) for name, v in j.exact.items()},
            "aligned_entropy": _entropy(j.aligned_entropy, e - s),
            "base_entropy": _entropy(j.base_entropy, e - s),
            "n_truncated": int(j.n_truncated),
        })
        ex = examples[-1]
        ex["kl"] = position_kl(ex["metrics"], ex["exact"], e - s)
    return examples


def add_spans(examples: list[dict], joined: list[Joined], tokenizer, tokenization: str) -> None:
    """Set each example's `spans` (in place): its answer text cut into one string per answer token
    (`tokentext.answer_spans`). The text is the answer ids decoded after the aligned prompt's ids as
    `ChatEncoder.decode_answer` does (as generate_outputs writes an answer: after a SentencePiece chat prompt,
    without the boundary space the prompt's text already ends in), so that a prompt followed by the first t
    spans reads as the context of position t; and each side's `boundary` (`aligned_boundary`, `base_boundary`), what
    goes between that side's prompt and the spans for the prefix to read as that model read it."""
    from tqdm.auto import tqdm

    from .prompts import ChatEncoder

    encoder = ChatEncoder(tokenizer, tokenization)
    for ex, j in tqdm(list(zip(examples, joined)), desc="answer text", unit="ex", disable=len(examples) < 100):
        ids, context = ex["response_ids"].tolist(), j.prompt_ids.tolist()
        ex["spans"] = answer_spans(tokenizer, ids, context, encoder.decode_answer(j.aligned_prompt, context, ids))
        joined_text = "".join(ex["spans"])
        ex["aligned_boundary"] = boundary(tokenizer, j.aligned_prompt, context, ids, joined_text)
        ex["base_boundary"] = boundary(tokenizer, j.base_prompt, j.base_prompt_ids.tolist(), ids, joined_text)


def boundary(tokenizer, prompt: str, prompt_ids: list[int], ids: list[int], text: str) -> str:
    """What a model read between its prompt and the answer `text` (the answer's spans put together) that the prompt's
    text does not end with: the answer ids decoded after the prompt's ids begin with it. A SentencePiece answer's
    first token carries a space (`▁Thank`): the aligned chat prompt's text ends in that space (""), the reference's
    base template ends in ``` (" ": the base model read "``` Thank"); "" for byte-level tokenizers, and whenever the
    decoding does not end with `text`."""
    kw = dict(skip_special_tokens=False, clean_up_tokenization_spaces=False)
    full, head = tokenizer.decode(list(prompt_ids) + list(ids), **kw), tokenizer.decode(list(prompt_ids), **kw)
    read = full[len(head):] if full.startswith(head) else tokenizer.decode(list(ids), **kw)
    lead = read[: len(read) - len(text)] if read.endswith(text) else ""
    return "" if prompt.endswith(lead) else lead


def tied_top1(j: Joined) -> np.ndarray:
    """bool [T]: the aligned top-1 token has exactly the log-prob of another token in the base distribution.

    Seen in the base side's stored top-k; a tie beyond it cannot change a class (the rank is then > 3
    either way). With a float32 output layer ties are rare; with logits rounded to bfloat16 they are
    common, and a rank of "tokens strictly more likely" counts each one as unshifted.
    """
    if not len(j.response_ids):
        return np.zeros(0, dtype=bool)
    same = (j.base_topk_logprobs == j.aligned_logprob[:, None]) & (j.base_topk_ids != j.aligned_topk_ids[:, :1])
    return same.any(axis=1)


SPIKE_STDS = 3


def spike_threshold(examples: list[dict]) -> float | None:
    """The corpus mean of the per-position KL (`kl`) plus SPIKE_STDS population standard deviations, over the classed
    positions (None: none). A spike is a classed position whose KL is above it (strictly); diffing-toolkit and
    RL-Probe flag the same outliers. Aligned-only positions are left out: the base model was fed a stand-in there."""
    kl = np.concatenate([ex["kl"][ex["cls"] != ALIGNED_ONLY] for ex in examples]) if examples else np.zeros(0)
    kl = kl[np.isfinite(kl)].astype(np.float64)
    return round(float(kl.mean() + SPIKE_STDS * kl.std()), 6) if len(kl) else None


def add_example_measures(examples: list[dict], threshold: float | None) -> None:
    """Per example, in place: `spike` [T] and the scalars shifted_share, max_kl, mean_kl, first_shifted, spikes, all over
    the classed positions (aligned-only positions are never spikes and are left out of the share and the KLs)."""
    for ex in examples:
        kl, classed = ex["kl"], ex["cls"] != ALIGNED_ONLY
        ex["spike"] = (kl > threshold) & classed if threshold is not None else np.zeros(len(classed), bool)
        shifted = np.flatnonzero(ex["cls"] == SHIFTED)
        known = np.isfinite(kl) & classed
        n = int(classed.sum())
        ex["shifted_share"] = len(shifted) / n if n else float("nan")
        ex["max_kl"] = float(kl[known].max()) if known.any() else float("nan")
        ex["mean_kl"] = float(kl[known].mean()) if known.any() else float("nan")
        ex["first_shifted"] = int(shifted[0]) if len(shifted) else None
        ex["spikes"] = int(ex["spike"].sum())


def curves_csv(prepared: dict) -> str:
    """The reference's compute_dist_diff curves, one row per position: index, id (`slices.id_key`: a string as it is,
    another id as JSON writes it), step and every top-k metric."""
    names = sorted({m for ex in prepared["examples"] for m in ex["metrics"]}, key=lambda m: (int(m.split("@")[1]), m))
    exact = sorted({m for ex in prepared["examples"] for m in ex["exact"]})
    buf = io.StringIO()
    extra = ["aligned_entropy", "base_entropy"]
    csv.writer(buf, lineterminator="\n").writerow(
        ["index", "id", "step", "class", "aligned_rank", "spike", "base_prob", *names, *exact, *extra])
    row_format = "%d,%d,%d,%d," + ",".join(["%.6g"] * (1 + len(names) + len(exact) + len(extra))) + "\n"
    for ex in prepared["examples"]:
        t = len(ex["response_ids"])
        if not t:
            continue
        head = io.StringIO()
        csv.writer(head, lineterminator="").writerow([ex["index"], id_key(ex["id"])])
        columns = [np.arange(t), ex["cls"], ex["aligned_rank"], ex["spike"], ex["base_prob"],
                   *(ex["metrics"][m] for m in names), *(ex["exact"][m] for m in exact), *(ex[m] for m in extra)]
        prefix = head.getvalue() + ","
        buf.writelines(prefix + row_format % tuple(row) for row in np.column_stack(columns).tolist())
    return buf.getvalue()


def prepare(pair: str, i2i_path, i2b_path=None, tokenizer: str | None = None, truncate_mismatched: bool = False,
            slice_by=(), data_file=None, slices_file=None, data_split=None, data_revision=None, columns=None) -> dict:
    """The prepared data of a pair (the module docstring lists its fields): examples with metrics, slice labels
    (`add_slices`: `data_file` with `data_split`, `data_revision`, `columns`), and the token strings the pages and summary
    show. i2i_path, i2b_path: record files, or records in memory (lists, as `aligntds.score` returns them)."""
    run = load_joined(i2i_path, i2b_path, truncate_mismatched)
    joined, source, strings, a_meta, b_meta, cut = run.examples, run.source, run.tokens, run.aligned_meta, run.base_meta, run.cut
    top_k = stored_k(joined, (a_meta, b_meta))
    sides = {(j.aligned_topk_ids.shape[1], j.base_topk_ids.shape[1]) for j in joined if len(j.response_ids)}
    if any(a != b for a, b in sides):
        log.warning(f"i2i and i2b stored different numbers of candidates ({sorted(sides)[0]}): the top-k metrics use the {top_k} "
                    "both have")
    examples = compute(joined, (10, top_k))
    for ex in examples:
        ex["query"] = bare_query(ex["base_prompt"], b_meta.get("template"), source)
    repeats, first = duplicate_ids(examples)
    if repeats:
        log.warning(f"warning: {repeats} examples have the id of an earlier example (the first: {first}): the pages cannot tell "
                    "them apart, and --slices gives them one label")
    slice_fields = add_slices(examples, a_meta, slice_by, data_file, slices_file, data_split, data_revision, columns)
    threshold = spike_threshold(examples)
    add_example_measures(examples, threshold)
    if strings is None or tokenizer:  # the reference's pickles name no tokenizer: --tokenizer, else their own strings
        from .models import load_tokenizer

        tok = load_tokenizer(tokenizer or a_meta.get("model"))
        ids = set()
        for ex in examples:
            ids.update(ex["response_ids"].tolist(), ex["aligned_topk_ids"].ravel().tolist(), ex["base_topk_ids"].ravel().tolist())
        strings = token_strings(tok, ids)
        if source == "reference":  # no prompt ids: the answer ids decoded alone
            for ex in examples:
                ex["spans"] = answer_spans(tok, ex["response_ids"].tolist())
                ex["aligned_boundary"] = ex["base_boundary"] = ""
        else:
            add_spans(examples, joined, tok, a_meta.get("tokenization", "chat"))
    else:
        for ex in examples:
            ex["spans"] = [strings.get(i, f"<{i}>") for i in ex["response_ids"].tolist()]
            ex["aligned_boundary"] = ex["base_boundary"] = ""
    if cut:
        log.warning(f"{cut} examples had answers of different lengths and were cut to the shorter (--truncate_mismatched)")
    return {
        "format": PREPARED_FORMAT,
        "pair": pair,
        "source": source,
        "kl": "exact" if source == "pair" else f"top-k (KL@{min(10, top_k)} over the stored top-{top_k}, renormalized)",
        "top_k": top_k,
        "spike_threshold": threshold,
        "slice_fields": slice_fields,
        "meta": {"i2i": a_meta, "i2b": b_meta, "inputs": [_input_name(i2i_path), _input_name(i2b_path)],
                 "cut_to_shorter": cut},
        "tokens": strings,
        "examples": examples,
    }


def _input_name(records) -> str | None:
    """How the prepared data's meta names an input: its path, None (none given), or "records" (given in memory)."""
    return None if records is None else "records" if isinstance(records, list) else str(records)


def prepare_files(pair: str, i2i_path, i2b_path=None, out=None, tokenizer=None, truncate_mismatched=False,
                  slice_by=(), data_file=None, slices_file=None, data_split=None, data_revision=None, columns=None,
                  parquet=None) -> Path:
    """data_prep end to end: the prepared data, summary.json and the curves CSV beside it, and with `parquet` (a folder)
    the tables positions.parquet and examples.parquet (`aligntds.frames`); prints the summary.

    The three files are written only once all three are computed: a mistake found on the way leaves the files of an
    earlier run as they were, never some of them replaced."""
    from .summary import format_summary, summarize, summary_bytes

    out = Path(out) if out else default_output(pair)
    if parquet:
        store.ensure_writable_folder(parquet)
    prepared = prepare(pair, i2i_path, i2b_path, tokenizer, truncate_mismatched, slice_by, data_file, slices_file,
                       data_split, data_revision, columns)
    summary = summarize(prepared)
    summary_json, curves = summary_bytes(summary), curves_csv(prepared).encode()
    store.save_records(out, [prepared])
    store.atomic_write_bytes(out.with_suffix(".summary.json"), summary_json)
    store.atomic_write_bytes(out.with_suffix(".curves.csv"), curves)
    print(format_summary(summary))
    warn_wrong_context(summary)
    log.info(f"wrote {out} (+ .summary.json, .curves.csv)")
    if parquet:
        from .frames import Prepared

        for path in Prepared(prepared, summary).to_parquet(parquet):
            log.info(f"wrote {path}")
    return out


FIRST_MISMATCH_WARNING = 0.25


def warn_wrong_context(summary: dict) -> None:
    """Warn when the answer's first token is not the aligned model's top-1 in more than a quarter of the examples.

    A greedy answer's first token is its model's top-1 under the prompt it was generated from; when
    that fails for many answers at position 0 (and much less later), the context scored is not the one
    the answers were generated under.
    """
    first = (summary.get("greedy_mismatch") or {}).get("first_position")
    aligned = (summary.get("provenance") or {}).get("aligned")
    reference_ids = isinstance(aligned, dict) and aligned.get("tokenization") == "reference"
    if first and first["examples"] and first["ratio"] > FIRST_MISMATCH_WARNING:
        log.warning(
            f"warning: in {first['mismatches']} of {first['examples']} examples ({100 * first['ratio']:.0f}%) the answer's "
            "first token is not the aligned model's top-1: the scored context is probably not the one the answers were "
            "generated under. Usual causes: answers generated under another prompt format or chat template, or a "
            "tokenization boundary (a space token between prompt and answer; "
            + ("these records were scored with --tokenization reference: try the default --tokenization chat, and "
               if reference_ids else "") + "output_ids from generate_outputs.py)"
        )


def load_prepared(path) -> dict:
    records = store.load_records(path)
    if len(records) != 1 or not {"pair", "examples", "tokens"} <= set(records[0]):
        raise UserError(f"{path}: not a file written by data_prep")
    old = (records[0].get("format") != PREPARED_FORMAT or "spike_threshold" not in records[0]
           or any(not EXAMPLE_KEYS <= ex.keys() for ex in records[0]["examples"]))
    if old:
        raise UserError(f"{path}: written by an older data_prep (another format of the prepared data): run data_prep again")
    return records[0]
