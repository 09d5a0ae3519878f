"""data_prep: join i2i and i2b records by example and compute every position's metrics.

Accepts this project's records (i2i + i2b files, or one `--mode pair` file with exact divergences)
and the reference implementation's merged pickles (`results` -> `tokens` -> `token_id/token/logit/prob`),
all read through the restricted loader. Writes the prepared data (a record file), the corpus summary
(`summary.json`) and the per-position curves (CSV), and prints the summary.

    from aligntds.prepare import prepare_files
    prepare_files("llama2_tp", "saved_logits/.../llama2-i2i.pkl", "saved_logits/.../llama2-i2b.pkl",
                  slice_by=["category"])   # labels from the data file the records were made from

The prepared data is one dict: `pair`, `source` ("aligntds", "pair" or "reference"), `kl` (which KL the
`kl` arrays below hold), `top_k`, `spike_threshold` (float, or None without positions), `slice_fields`
(the slice fields, in order), `meta`, `tokens` {id: text} and `examples`, one dict per example. `tokens` is what
each token shows (tokentext.token_strings): its text with its leading space, or, for a token that is only part of
a character, its bytes (`<0xF0><0x9F>`); never U+FFFD for a partial character.

Per example, per position (T positions; each a numpy array of length T):

    response_ids      int32 [T]     the answer token ids
    spans             list of T str each answer token's part of the answer text (tokentext.answer_spans): put
                                    together, the answer decoded after the aligned prompt (ChatEncoder.decode_answer);
                                    a character split over several tokens is on the token that completes it, the
                                    tokens before it hold what precedes it (often ""); reference pickles: their
                                    token strings
    aligned_top_ids, aligned_top_logprobs, base_top_ids, base_top_logprobs   int32 / float32 [T, 10]: each side's top-10
    aligned_rank      int32 [T]     0-based base rank of the aligned top-1 (-1: beyond the stored base top-k,
                                    for reference pickles and for an i2b file scored against another i2i run)
    cls               int8 [T]      0 unshifted, 1 marginal, 2 shifted (metrics.shift_class); -1 (ALIGNED_ONLY):
                                    never classed, a token at or before it exists only in the aligned vocabulary
                                    (the records' `aligned_only`)
    base_prob         float32 [T]   base probability of the aligned top-1 (NaN where its rank is unknown)
    top1_differs      bool [T]      base top-1 != aligned top-1
    greedy_mismatch   bool [T]      the answer token is not the aligned model's top-1
    tie               bool [T]      the aligned top-1 has exactly the base log-prob of another token (`tied_top1`)
    aligned_entropy   float32 [T]   entropy of the aligned distribution, nats (NaN for reference pickles)
    base_entropy      float32 [T]   entropy of the base distribution, nats (NaN for reference pickles)
    kl                float32 [T]   the KL named by `kl`: exact KL(P_base || P_aligned) from pair mode, else
                                    KL@10 over the stored top-k (the reference's definition, metrics.py: summed
                                    over the tokens both lists share, so 0 where they share none)
    spike             bool [T]      kl > spike_threshold (the corpus mean of kl + 3 standard deviations)
    metrics           {"kl@10", ..., "tp@30": float32 [T]}   the reference's top-k metrics
    exact             {"kl_base_aligned", "kl_aligned_base", "js", "tv": float32 [T]}   pair mode only, else {}

Per example, scalars (answers without positions: NaN, or None for `first_shifted`):

    index, id, query, aligned_prompt, base_prompt, probe_text
    shifted_share     float   shifted positions / positions
    max_kl, mean_kl   float   max and mean of `kl` over the answer
    first_shifted     int     position of the first shifted token, None if none
    spikes            int     positions with `spike`
    slices            {field: label}   the example's label of each slice field (`slice_fields`); "null" when
                                    the example has no such field (see `slice_label`)
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import store
from .data import QUERY_PLACEHOLDER, read_json_items
from .errors import UserError
from .metrics import ALIGNED_ONLY, SHIFTED, shift_class, topk_metrics
from .records import check_records
from .tokentext import answer_spans, token_strings

log = logging.getLogger("aligntds")

SHOWN = 10  # candidates per side kept for the pages
EXACT_KEYS = ("kl_base_aligned", "kl_aligned_base", "js", "tv")


def default_output(pair: str) -> Path:
    return Path("saved_logits") / "prepared" / f"just_eval+{pair}.pkl"


@dataclass
class Joined:
    """One example with both sides' arrays, before metrics (T positions, K stored candidates)."""

    index: int
    id: object
    aligned_prompt: str
    base_prompt: str
    probe_text: str
    response_ids: np.ndarray  # int [T]
    a_ids: np.ndarray  # int [T, K] aligned top-K
    a_lp: np.ndarray  # float [T, K]
    b_ids: np.ndarray  # int [T, K] base top-K
    b_lp: np.ndarray  # float [T, K]
    aligned_rank: np.ndarray  # int [T], -1 unknown
    aligned_logprob: np.ndarray  # float [T], NaN unknown
    greedy_mismatch: np.ndarray  # bool [T]
    exact: dict = field(default_factory=dict)  # name -> float [T]
    prompt_ids: np.ndarray | None = None  # int [P] the aligned prompt's ids, None: not stored (reference pickles)
    aligned_entropy: np.ndarray | None = None  # float [T] nats, None: not stored (reference pickles)
    base_entropy: np.ndarray | None = None
    aligned_only: np.ndarray | None = None  # bool [T] (None: all False)

    def __post_init__(self):
        if self.aligned_only is None:
            self.aligned_only = np.zeros(len(self.response_ids), dtype=bool)


# -- reading the three input formats ------------------------------------------------------------

def _kind(records: list[dict], path) -> str:
    if not records:
        raise UserError(f"{path}: holds no records")
    first = records[0]
    if "results" in first:
        return "reference"
    mode = first.get("meta", {}).get("mode") if isinstance(first.get("meta"), dict) else None
    if mode in ("i2i", "i2b", "pair"):
        return mode
    raise UserError(f"{path}: neither records of this tool nor the reference's merged pickles")


def ranks_in_topk(top1: np.ndarray, b_ids: np.ndarray, b_lp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each position's `top1` (int [T]) sits in the base top-K list (b_ids int [T, K], b_lp float [T, K]).

    Returns (rank int64 [T]: the 0-based index in the list, -1 when absent; log-prob float64 [T], NaN when
    absent). With K >= 3 the class is exact either way (absent means rank >= K >= 3: shifted); the index is
    the exact rank unless tokens tie with it.
    """
    hit = b_ids == np.asarray(top1)[:, None]
    found = hit.any(axis=1)
    where = hit.argmax(axis=1) if hit.shape[1] else np.zeros(len(hit), np.int64)
    lp = np.take_along_axis(b_lp, where[:, None], axis=1)[:, 0] if hit.shape[1] else np.full(len(hit), np.nan)
    return np.where(found, where, -1).astype(np.int64), np.where(found, lp, np.nan).astype(np.float64)


def _scored_other_run(a_meta: dict, b_meta: dict) -> bool:
    """True when the i2b records ranked the top-1 tokens of another i2i run (another model or dtype) than
    these i2i records: a checkpoint chain scores every stage against one i2b run (scripts/run_chain.sh)."""
    scored = b_meta.get("aligned")
    return scored is not None and scored != f"{a_meta.get('model')} ({a_meta.get('dtype')})"


def _join_ours(a_recs, b_recs, a_path, b_path) -> list[Joined]:
    if len(a_recs) != len(b_recs):
        raise UserError(f"{a_path} holds {len(a_recs)} examples, {b_path} {len(b_recs)}: not the same data")
    other_run = bool(a_recs) and _scored_other_run(a_recs[0]["meta"], b_recs[0]["meta"])
    if other_run:
        log.info(f"{b_path} ranked the top-1 tokens of {b_recs[0]['meta']['aligned']}, not of {a_recs[0]['meta'].get('model')}: "
                 f"the base ranks of this model's top-1 come from the base's stored top-{b_recs[0]['meta'].get('top_k')} "
                 "(classes exact; ranks and probabilities beyond it unknown)")
    out = []
    for a, b in zip(a_recs, b_recs):
        where = f"example {a['index']} (id={a['id']})"
        if a["index"] != b["index"] or a["id"] != b["id"]:
            raise UserError(f"{b_path}: {where} is paired with example {b['index']} (id={b['id']}) of {a_path}")
        t = len(b["response_ids"])
        cut_ok = t + b["n_truncated"] == len(a["response_ids"])  # the base model's context was shorter
        if t != len(a["response_ids"]) and not cut_ok:
            raise UserError(f"{b_path}: {where} has {t} answer positions, {a_path} has {len(a['response_ids'])}")
        if not np.array_equal(a["response_ids"][:t], b["response_ids"]):
            raise UserError(f"{b_path}: {where} scores other answer tokens than {a_path}")
        if other_run:
            rank, lp = ranks_in_topk(a["topk_ids"][:t, 0], b["topk_ids"], b["topk_logprobs"])
        else:
            rank, lp = b["aligned_rank"].astype(np.int64), b["aligned_logprob"].astype(np.float64)
        out.append(Joined(
            a["index"], a["id"], a["prompt"], b["prompt"], a["probe_text"], b["response_ids"],
            a["topk_ids"][:t], a["topk_logprobs"][:t], b["topk_ids"], b["topk_logprobs"],
            rank, lp, a["token_rank"][:t] > 0, aligned_only=b.get("aligned_only"), prompt_ids=a["prompt_ids"],
            aligned_entropy=a["entropy"][:t], base_entropy=b["entropy"],
        ))
    return out


def _from_pair(recs) -> list[Joined]:
    return [
        Joined(
            r["index"], r["id"], r["prompt"], r["base_prompt"], r["probe_text"], r["response_ids"],
            r["topk_ids"], r["topk_logprobs"], r["base_topk_ids"], r["base_topk_logprobs"],
            r["aligned_rank"].astype(np.int64), r["aligned_logprob"].astype(np.float64), r["token_rank"] > 0,
            {k: np.asarray(r[k], dtype=np.float64) for k in EXACT_KEYS},
            aligned_only=r.get("aligned_only"), prompt_ids=r["prompt_ids"], aligned_entropy=r["entropy"],
            base_entropy=r["base_entropy"],
        )
        for r in recs
    ]


def _reference_side(rec, path, n):
    try:
        rows = [pos["tokens"] for pos in rec["results"]]
        ids = np.array([[int(c["token_id"]) for c in row] for row in rows], dtype=np.int64)
        probs = np.array([[float(c["prob"]) for c in row] for row in rows], dtype=np.float64)
        strings = {int(c["token_id"]): str(c["token"]) for row in rows for c in row}
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path}: record {n} is not in the reference's format ({type(e).__name__}: {e})") from None
    if not rows:
        return np.zeros((0, 1), np.int64), np.zeros((0, 1)), strings
    with np.errstate(divide="ignore"):
        return ids, np.log(probs), strings


def _join_reference(a_recs, b_recs, a_path, b_path, truncate: bool) -> tuple[list[Joined], dict[int, str], int]:
    """The reference's records: the shown answer token is the aligned top-1 (its pages assumed greedy
    answers), ranks beyond the stored top-k are unknown, base probabilities are the stored full-softmax ones."""
    if len(a_recs) != len(b_recs):
        raise UserError(f"{a_path} holds {len(a_recs)} examples, {b_path} {len(b_recs)}: not the same data")
    from tqdm.auto import tqdm

    out, strings, cut = [], {}, 0
    pairs = tqdm(zip(a_recs, b_recs), total=len(a_recs), desc="reading reference records", unit="ex", disable=len(a_recs) < 100)
    for n, (a, b) in enumerate(pairs):
        if a.get("id") != b.get("id"):
            raise UserError(f"{b_path}: record {n} has id {b.get('id')!r}, {a_path} has {a.get('id')!r}")
        a_ids, a_lp, sa = _reference_side(a, a_path, n)
        b_ids, b_lp, sb = _reference_side(b, b_path, n)
        strings.update(sa), strings.update(sb)
        if len(a_ids) != len(b_ids):
            if not truncate:
                raise UserError(
                    f"{b_path}: record {n} (id={a.get('id')}) has {len(b_ids)} positions, {a_path} has {len(a_ids)} "
                    "(the reference re-encoded the answer text); --truncate_mismatched cuts both to the shorter, as the reference did"
                )
            cut += 1
            t = min(len(a_ids), len(b_ids))
            a_ids, a_lp, b_ids, b_lp = a_ids[:t], a_lp[:t], b_ids[:t], b_lp[:t]
        rank, lp = ranks_in_topk(a_ids[:, 0], b_ids, b_lp)
        out.append(Joined(
            n, a.get("id"), a.get("prompt", ""), b.get("prompt", ""), a.get("probe_text", ""), a_ids[:, 0],
            a_ids, a_lp, b_ids, b_lp, rank, lp, np.zeros(len(a_ids), dtype=bool),
        ))
    return out, strings, cut


def load_joined(i2i_path, i2b_path, truncate_mismatched: bool = False):
    """(joined examples, source, token strings or None, i2i meta, i2b meta, number cut) from the input files."""
    a_recs = store.load_records(i2i_path)
    kind = _kind(a_recs, i2i_path)
    if kind == "pair":
        if i2b_path is not None:
            raise UserError(f"{i2i_path} holds --mode pair records (both models): give it alone, without {i2b_path}")
        check_records(a_recs, i2i_path, "pair")
        meta = a_recs[0]["meta"]
        return _from_pair(a_recs), "pair", None, meta, {**meta, "model": meta.get("base_model")}, 0
    if i2b_path is None:
        raise UserError(f"{i2i_path} holds {kind} records: data_prep also needs the i2b file")
    b_recs = store.load_records(i2b_path)
    if kind == "reference":
        if _kind(b_recs, i2b_path) != "reference":
            raise UserError(f"{i2b_path}: expected the reference's records, like {i2i_path}")
        joined, strings, cut = _join_reference(a_recs, b_recs, i2i_path, i2b_path, truncate_mismatched)
        return joined, "reference", strings, {"source": "reference"}, {"source": "reference"}, cut
    if kind != "i2i":
        raise UserError(f"{i2i_path}: holds {kind} records, expected i2i")
    check_records(a_recs, i2i_path, "i2i")
    check_records(b_recs, i2b_path, "i2b")
    return _join_ours(a_recs, b_recs, i2i_path, i2b_path), "aligntds", None, a_recs[0]["meta"], b_recs[0]["meta"], 0


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


def stored_k(joined: list[Joined]) -> int:
    """Candidates stored per position on both sides (the smaller, when i2i and i2b used different --top_k)."""
    return min((min(j.a_ids.shape[1], j.b_ids.shape[1]) for j in joined if len(j.response_ids)), default=SHOWN)


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

    a_ids, a_lp, b_ids, b_lp = cat("a_ids", k_stored), cat("a_lp", k_stored), cat("b_ids", k_stored), cat("b_lp", k_stored)
    metrics = {}
    if len(a_ids):
        for k in sorted(set(min(k, k_stored) for k in ks)):
            for name, values in topk_metrics(b_ids, b_lp, a_ids, a_lp, k).items():
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
            "probe_text": j.probe_text,
            "response_ids": np.asarray(j.response_ids, dtype=np.int32),
            "aligned_top_ids": np.asarray(j.a_ids[:, :SHOWN], dtype=np.int32),
            "aligned_top_logprobs": np.asarray(j.a_lp[:, :SHOWN], dtype=np.float32),
            "base_top_ids": np.asarray(j.b_ids[:, :SHOWN], dtype=np.int32),
            "base_top_logprobs": np.asarray(j.b_lp[:, :SHOWN], dtype=np.float32),
            "aligned_rank": np.asarray(j.aligned_rank, dtype=np.int32),
            "cls": cls[s:e],
            "base_prob": np.exp(j.aligned_logprob).astype(np.float32),
            "top1_differs": j.a_ids[:, 0] != j.b_ids[:, 0] if len(j.a_ids) else np.zeros(0, bool),
            "tie": tied_top1(j),
            "greedy_mismatch": np.asarray(j.greedy_mismatch, dtype=bool),
            "metrics": {name: v[s:e] for name, v in metrics.items()},
            "exact": {name: v.astype(np.float32) for name, v in j.exact.items()},
            "aligned_entropy": _entropy(j.aligned_entropy, e - s),
            "base_entropy": _entropy(j.base_entropy, e - s),
        })
        ex = examples[-1]
        ex["kl"] = position_kl(ex["metrics"], ex["exact"], e - s)
    return examples


def add_spans(examples: list[dict], joined: list[Joined], tokenizer, tokenization: str) -> None:
    """Set each example's `spans` (in place): its answer text cut into one string per answer token
    (`tokentext.answer_spans`). The text is the answer ids decoded after the aligned prompt's ids as
    `ChatEncoder.decode_answer` does (as generate_outputs writes an answer: after a SentencePiece chat prompt,
    without the boundary space the prompt's text already ends in), so that a prompt followed by the first t
    spans reads as the context of position t."""
    from tqdm.auto import tqdm

    from .prompts import ChatEncoder

    encoder = ChatEncoder(tokenizer, tokenization)
    for ex, j in tqdm(list(zip(examples, joined)), desc="answer text", unit="ex", disable=len(examples) < 100):
        ids, context = ex["response_ids"].tolist(), j.prompt_ids.tolist()
        ex["spans"] = answer_spans(tokenizer, ids, context, encoder.decode_answer(j.aligned_prompt, context, ids))


def tied_top1(j: Joined) -> np.ndarray:
    """bool [T]: the aligned top-1 token has exactly the log-prob of another token in the base distribution.

    Seen in the base side's stored top-k; a tie beyond it cannot change a class (the rank is then > 3
    either way). With a float32 output layer ties are rare; with logits rounded to bfloat16 they are
    common, and a rank of "tokens strictly more likely" counts each one as unshifted.
    """
    if not len(j.response_ids):
        return np.zeros(0, dtype=bool)
    same = (j.b_lp == j.aligned_logprob[:, None]) & (j.b_ids != j.a_ids[:, :1])
    return same.any(axis=1)


SPIKE_STDS = 3


def spike_threshold(examples: list[dict]) -> float | None:
    """The corpus mean of the per-position KL (`kl`) plus SPIKE_STDS population standard deviations (None: no
    position). A spike is a position whose KL is above it (strictly); diffing-toolkit and RL-Probe flag the
    same outliers."""
    kl = np.concatenate([ex["kl"] for ex in examples]) if examples else np.zeros(0)
    kl = kl[np.isfinite(kl)].astype(np.float64)
    return round(float(kl.mean() + SPIKE_STDS * kl.std()), 6) if len(kl) else None


def add_example_measures(examples: list[dict], threshold: float | None) -> None:
    """Per example, in place: `spike` [T] and the scalars shifted_share, max_kl, mean_kl, first_shifted, spikes."""
    for ex in examples:
        kl, t = ex["kl"], len(ex["cls"])
        ex["spike"] = kl > threshold if threshold is not None else np.zeros(t, bool)
        shifted = np.flatnonzero(ex["cls"] == SHIFTED)
        known = np.isfinite(kl)
        ex["shifted_share"] = len(shifted) / t if t else float("nan")
        ex["max_kl"] = float(kl[known].max()) if known.any() else float("nan")
        ex["mean_kl"] = float(kl[known].mean()) if known.any() else float("nan")
        ex["first_shifted"] = int(shifted[0]) if len(shifted) else None
        ex["spikes"] = int(ex["spike"].sum())


# -- slices: a label per example from the data file or a labels file -------------------------------

def slice_label(value, where: str, field_name: str) -> str:
    """The label of a field's value: a string as is; null or a missing field "null"; a number or a boolean as
    JSON writes it (3, 2.5, true); a list or an object is refused (one-line UserError naming `where`)."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        return json.dumps(value)
    raise UserError(f"{where}: field '{field_name}' is a {type(value).__name__}, not a label (a string, a number or null)")


def _labels_from_data(examples: list[dict], fields: list[str], path: Path) -> dict[str, list[str]]:
    """{field: label per example} read from the data file the records were made from, by `index`, checked by `id`."""
    items = read_json_items(path)
    if not isinstance(items, list):
        raise UserError(f"{path}: expected a JSON list of examples (or JSONL), found {type(items).__name__}")
    rows = []
    for ex in examples:
        i = ex["index"]
        if not 0 <= i < len(items):
            raise UserError(f"{path}: holds {len(items)} examples, the records hold example {i} (id={ex['id']}): "
                            "not the data file the records were made from")
        item = items[i]
        if not isinstance(item, dict) or item.get("id") != ex["id"]:
            found = item.get("id") if isinstance(item, dict) else type(item).__name__
            raise UserError(f"{path}: example {i} is {found!r}, the records' example {i} has id {ex['id']!r}: "
                            "not the data file the records were made from")
        rows.append(item)
    out = {}
    for name in fields:
        if rows and not any(name in item for item in rows):
            raise UserError(f"{path}: no example has the field '{name}' (--slice_by {name})")
        out[name] = [slice_label(item.get(name), f"{path}: example {ex['index']} (id={ex['id']})", name)
                     for item, ex in zip(rows, examples)]
    return out


def _labels_from_file(examples: list[dict], path: Path) -> dict[str, list[str]]:
    """{field: label per example} from `--slices FILE`: JSON {id: label} (one field, named after the file) or
    {id: {field: label}}; ids are matched as strings, an example the file does not name gets "null"."""
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: slices file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not a JSON slices file ({e})") from None
    if not isinstance(table, dict):
        raise UserError(f"{path}: expected a JSON object {{id: label}} or {{id: {{field: label}}}}, found {type(table).__name__}")
    if not table:
        raise UserError(f"{path}: holds no labels")
    nested = {isinstance(v, dict) for v in table.values()}
    if len(nested) > 1:
        raise UserError(f"{path}: mixes {{id: label}} and {{id: {{field: label}}}} entries; use one form")
    known = {str(ex["id"]) for ex in examples}
    unknown = [k for k in table if k not in known]
    if unknown:
        raise UserError(f"{path}: id {unknown[0]!r} is not an example of the records ({len(unknown)} unknown ids)")
    if nested != {True}:
        table = {k: {path.stem: v} for k, v in table.items()}
    fields = list(dict.fromkeys(f for entry in table.values() for f in entry))
    return {name: [slice_label(table.get(str(ex["id"]), {}).get(name), f"{path}: id {ex['id']!r}", name) for ex in examples]
            for name in fields}


def add_slices(examples: list[dict], a_meta: dict, slice_by=(), data_file=None, slices_file=None) -> list[str]:
    """Set each example's `slices` {field: label} (in place); returns the slice fields in order.

    `slice_by` fields are read from `data_file`, else from the data file named in the records' meta
    (`data_file`, as given to logit_analysis); `slices_file` is a JSON labels file (see `_labels_from_file`).
    """
    labels: dict[str, list[str]] = {}
    if slice_by:
        path = data_file or a_meta.get("data_file")
        if path is None:
            raise UserError("--slice_by: these records do not name their data file (reference pickles): pass --data_file")
        path = Path(path)
        if not path.exists():
            how = "--data_file" if data_file else "the records' data file (meta data_file); pass --data_file"
            raise UserError(f"{path}: data file not found ({how})")
        labels.update(_labels_from_data(examples, list(dict.fromkeys(slice_by)), path))
    if slices_file:
        for name, values in _labels_from_file(examples, Path(slices_file)).items():
            if name in labels:
                raise UserError(f"{slices_file}: field '{name}' is also given by --slice_by")
            labels[name] = values
    for n, ex in enumerate(examples):
        ex["slices"] = {name: values[n] for name, values in labels.items()}
    return list(labels)


def curves_csv(prepared: dict) -> str:
    """The reference's compute_dist_diff curves, one row per position: index, id, step and every top-k metric."""
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
        csv.writer(head, lineterminator="").writerow([ex["index"], ex["id"]])
        columns = [np.arange(t), ex["cls"], ex["aligned_rank"], ex["spike"], ex["base_prob"],
                   *(ex["metrics"][m] for m in names), *(ex["exact"][m] for m in exact), *(ex[m] for m in extra)]
        prefix = head.getvalue() + ","
        buf.writelines(prefix + row_format % tuple(row) for row in np.column_stack(columns).tolist())
    return buf.getvalue()


def prepare(pair: str, i2i_path, i2b_path=None, tokenizer: str | None = None, truncate_mismatched: bool = False,
            slice_by=(), data_file=None, slices_file=None) -> dict:
    """The prepared data of a pair (the module docstring lists its fields): examples with metrics, slice labels
    (`add_slices`), and the token strings the pages and summary show."""
    joined, source, strings, a_meta, b_meta, cut = load_joined(i2i_path, i2b_path, truncate_mismatched)
    top_k = stored_k(joined)
    sides = {(j.a_ids.shape[1], j.b_ids.shape[1]) for j in joined if len(j.response_ids)}
    if any(a != b for a, b in sides):
        log.warning(f"i2i and i2b stored different numbers of candidates ({sorted(sides)[0]}): the top-k metrics use the {top_k} both have")
    examples = compute(joined, (10, top_k))
    for ex in examples:
        ex["query"] = bare_query(ex["base_prompt"], b_meta.get("template"), source)
    slice_fields = add_slices(examples, a_meta, slice_by, data_file, slices_file)
    threshold = spike_threshold(examples)
    add_example_measures(examples, threshold)
    if strings is None:
        from .models import load_tokenizer

        tok = load_tokenizer(tokenizer or a_meta.get("model"))
        ids = set()
        for ex in examples:
            ids.update(ex["response_ids"].tolist(), ex["aligned_top_ids"].ravel().tolist(), ex["base_top_ids"].ravel().tolist())
        strings = token_strings(tok, ids)
        add_spans(examples, joined, tok, a_meta.get("tokenization", "chat"))
    else:  # the reference's pickles name no prompt ids and no tokenizer: their own token strings
        for ex in examples:
            ex["spans"] = [strings.get(i, f"<{i}>") for i in ex["response_ids"].tolist()]
    if cut:
        log.warning(f"{cut} examples had answers of different lengths and were cut to the shorter (--truncate_mismatched)")
    return {
        "pair": pair,
        "source": source,
        "kl": "exact" if source == "pair" else f"top-k (KL@{min(10, top_k)} over the stored top-{top_k}, renormalized)",
        "top_k": top_k,
        "spike_threshold": threshold,
        "slice_fields": slice_fields,
        "meta": {"i2i": a_meta, "i2b": b_meta, "inputs": [str(i2i_path), str(i2b_path) if i2b_path else None],
                 "cut_to_shorter": cut},
        "tokens": strings,
        "examples": examples,
    }


def prepare_files(pair: str, i2i_path, i2b_path=None, out=None, tokenizer=None, truncate_mismatched=False,
                  slice_by=(), data_file=None, slices_file=None) -> Path:
    """data_prep end to end: the prepared data, summary.json and the curves CSV beside it; prints the summary."""
    from .summary import format_summary, summarize, write_summary

    out = Path(out) if out else default_output(pair)
    prepared = prepare(pair, i2i_path, i2b_path, tokenizer, truncate_mismatched, slice_by, data_file, slices_file)
    store.save_records(out, [prepared])
    summary = summarize(prepared)
    write_summary(out.with_suffix(".summary.json"), summary)
    store.atomic_write_bytes(out.with_suffix(".curves.csv"), curves_csv(prepared).encode())
    print(format_summary(summary))
    warn_wrong_context(summary)
    log.info(f"wrote {out} (+ .summary.json, .curves.csv)")
    return out


FIRST_MISMATCH_WARNING = 0.25


def warn_wrong_context(summary: dict) -> None:
    """Warn when the answer's first token is not the aligned model's top-1 in more than a quarter of the examples.

    A greedy answer's first token is its model's top-1 under the prompt it was generated from; when
    that fails for many answers at position 0 (and much less later), the context scored is not the one
    the answers were generated under.
    """
    first = (summary.get("greedy_mismatch") or {}).get("first_position")
    if first and first["examples"] and first["ratio"] > FIRST_MISMATCH_WARNING:
        log.warning(
            f"warning: in {first['mismatches']} of {first['examples']} examples ({100 * first['ratio']:.0f}%) the answer's "
            "first token is not the aligned model's top-1: the scored context is probably not the one the answers were "
            "generated under. Usual causes: answers generated under another prompt format or chat template, or a "
            "tokenization boundary (a space token between prompt and answer; try the default --tokenization chat, and "
            "output_ids from generate_outputs.py)"
        )


def load_prepared(path) -> dict:
    records = store.load_records(path)
    if len(records) != 1 or not {"pair", "examples", "tokens"} <= set(records[0]):
        raise UserError(f"{path}: not a file written by data_prep")
    if "spike_threshold" not in records[0] or any("spans" not in ex for ex in records[0]["examples"]):
        raise UserError(f"{path}: written by an older data_prep (no entropy, spikes, slices or answer spans): run data_prep again")
    return records[0]
