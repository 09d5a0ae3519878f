"""Reading the records data_prep joins: i2i + i2b files, one `--mode pair` file, or the reference's merged pickles.

Each example becomes a `Joined`: both sides' arrays under the names the code uses (`aligned_topk_ids`,
`base_topk_logprobs`, ..., the glossary of `aligntds.schema`), whichever file and key they came from. The records
are checked first (`records.check_records`: keys, lengths, finite values), and i2i and i2b records must be of the
same examples and answers.

    run = load_joined("saved_logits/.../llama2-i2i.pkl", "saved_logits/.../llama2-i2b.pkl")
    run.examples[0].aligned_topk_ids      # int [T, K]
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from . import store
from .errors import UserError
from .records import check_records
from .schema import MODES, disk_key

log = logging.getLogger("aligntds")

EXACT_KEYS = ("kl_base_aligned", "kl_aligned_base", "js", "tv")  # pair mode's divergences, the KL data_prep uses first


@dataclass
class Joined:
    """One example with both sides' arrays, before metrics (T positions, K stored candidates)."""

    index: int
    id: object
    aligned_prompt: str
    base_prompt: str
    answer_text: str
    response_ids: np.ndarray  # int [T]
    aligned_topk_ids: np.ndarray  # int [T, K]
    aligned_topk_logprobs: np.ndarray  # float [T, K]
    base_topk_ids: np.ndarray  # int [T, K]
    base_topk_logprobs: np.ndarray  # float [T, K]
    aligned_rank: np.ndarray  # int [T]: base rank of the aligned top-1, -1 unknown
    aligned_logprob: np.ndarray  # float [T]: its base log-prob, NaN unknown
    greedy_mismatch: np.ndarray  # bool [T]
    exact: dict = field(default_factory=dict)  # name -> float [T]: pair mode's divergences
    prompt_ids: np.ndarray | None = None  # int [P] the aligned prompt's ids, None: not stored (reference pickles)
    base_prompt_ids: np.ndarray | None = None  # int [P'] the base prompt's ids, None: not stored (reference pickles)
    aligned_entropy: np.ndarray | None = None  # float [T] nats, None: not stored (reference pickles)
    base_entropy: np.ndarray | None = None
    aligned_only: np.ndarray | None = None  # bool [T] (None: all False)
    n_truncated: int = 0  # answer tokens not scored, dropped to fit a context (the aligned model's or the base model's)

    def __post_init__(self):
        if self.aligned_only is None:
            self.aligned_only = np.zeros(len(self.response_ids), dtype=bool)


@dataclass
class JoinedRun:
    """What `load_joined` read: the examples, where they came from (`source`: "aligntds", "pair" or "reference"),
    the reference's own token strings (None for this project's records: a tokenizer gives them), each side's meta
    (for the reference's pickles `{"source": "reference"}`), and how many examples were cut to the shorter side."""

    examples: list[Joined]
    source: str
    tokens: dict[int, str] | None
    aligned_meta: dict
    base_meta: dict
    cut: int = 0


def record_kind(records: list[dict], path) -> str:
    """The mode the records were scored in (their meta's), or "reference" for the reference's pickles; a one-line
    `UserError` naming `path` for no records or records of neither."""
    if not records:
        raise UserError(f"{path}: holds no records")
    first = records[0]
    if "results" in first:
        return "reference"
    mode = first.get("meta", {}).get("mode") if isinstance(first.get("meta"), dict) else None
    if mode in MODES:
        return mode
    raise UserError(f"{path}: neither records of this tool nor the reference's merged pickles")


def ranks_in_topk(top1: np.ndarray, topk_ids: np.ndarray, topk_logprobs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each position's `top1` (int [T]) sits in a (base) top-K list (topk_ids int [T, K], topk_logprobs float [T, K]).

    Returns (rank int64 [T]: the 0-based index in the list, -1 when absent; log-prob float64 [T], NaN when
    absent). With K >= 3 the class is exact either way (absent means rank >= K >= 3: shifted); the index is
    the exact rank unless tokens tie with it.
    """
    hit = topk_ids == np.asarray(top1)[:, None]
    found = hit.any(axis=1)
    where = hit.argmax(axis=1) if hit.shape[1] else np.zeros(len(hit), np.int64)
    lp = np.take_along_axis(topk_logprobs, where[:, None], axis=1)[:, 0] if hit.shape[1] else np.full(len(hit), np.nan)
    return np.where(found, where, -1).astype(np.int64), np.where(found, lp, np.nan).astype(np.float64)


def _scored_other_run(aligned_meta: dict, base_meta: dict) -> bool:
    """True when the i2b records ranked the top-1 tokens of another i2i run (another model or dtype) than
    these i2i records: a checkpoint chain scores every stage against one i2b run (scripts/run_chain.sh)."""
    scored = base_meta.get("aligned")
    return scored is not None and scored != f"{aligned_meta.get('model')} ({aligned_meta.get('dtype')})"


def join_example(aligned: dict, base: dict, t: int, modes: tuple[str, str] = ("i2i", "i2b"), other_run: bool = False) -> Joined:
    """One example from the record holding its aligned side and the one holding its base side (`modes`: theirs; one
    record in pair mode), cut to its first t positions (the base side's, when a shorter context cut the i2b answer);
    its `n_truncated` counts every answer token left unscored (the i2i record's cut, plus the i2b record's).
    other_run: the base record ranked another run's top-1 tokens, so ranks come from the stored base top-k."""
    a = {k: aligned[disk_key(modes[0], "aligned", k)] for k in ("prompt", "topk_ids", "topk_logprobs", "token_rank", "entropy")}
    b = {k: base[disk_key(modes[1], "base", k)] for k in ("prompt", "topk_ids", "topk_logprobs", "entropy")}
    if other_run:
        rank, logprob = ranks_in_topk(a["topk_ids"][:t, 0], b["topk_ids"], b["topk_logprobs"])
    else:
        rank, logprob = base["aligned_rank"].astype(np.int64), base["aligned_logprob"].astype(np.float64)
    return Joined(
        aligned["index"], aligned["id"], a["prompt"], b["prompt"], aligned["probe_text"], base["response_ids"],
        a["topk_ids"][:t], a["topk_logprobs"][:t], b["topk_ids"], b["topk_logprobs"], rank, logprob, a["token_rank"][:t] > 0,
        {k: np.asarray(base[k], dtype=np.float64) for k in EXACT_KEYS if k in base},
        prompt_ids=aligned["prompt_ids"], base_prompt_ids=base[disk_key(modes[1], "base", "prompt_ids")],
        aligned_entropy=a["entropy"][:t], base_entropy=b["entropy"],
        aligned_only=base.get("aligned_only"), n_truncated=int(len(aligned["response_ids"]) + aligned["n_truncated"] - t),
    )


def _join_ours(a_recs, b_recs, a_path, b_path) -> list[Joined]:
    if len(a_recs) != len(b_recs):
        raise UserError(f"{a_path} holds {len(a_recs)} examples, {b_path} {len(b_recs)}: not the same data")
    made = [recs[0]["meta"].get("tokenization") for recs in (a_recs, b_recs)] if a_recs else []
    if None not in made and len(set(made)) > 1:
        raise UserError(f"{a_path} was scored with --tokenization {made[0]}, {b_path} with --tokenization {made[1]}: the "
                        "two sides' contexts were made differently; score them with the same")
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
        out.append(join_example(a, b, t, other_run=other_run))
    return out


def _records(source, name: str) -> tuple[list[dict], object]:
    """(records, how messages name them): a record file's (its path), or records given in memory (a list: `name`, the
    argument of `aligntds.prepare` they came in)."""
    if isinstance(source, list):
        return source, name
    return store.load_records(source), source


def load_joined(i2i_path, i2b_path, truncate_mismatched: bool = False) -> JoinedRun:
    """The examples of the input files, joined (see `JoinedRun`): an i2i and an i2b file, one pair file (i2b_path None),
    or the reference's two merged pickles (`aligntds.reference_pickles`); or such records in memory (lists, as
    `aligntds.score` returns them), checked as a file's are. One-line errors for anything else."""
    from .reference_pickles import join_reference

    a_recs, i2i_path = _records(i2i_path, "i2i=[records]")
    b_source, i2b_path = i2b_path, "i2b=[records]" if isinstance(i2b_path, list) else i2b_path
    kind = record_kind(a_recs, i2i_path)
    if kind == "pair":
        if i2b_path is not None:
            raise UserError(f"{i2i_path} holds --mode pair records (both models): give it alone, without {i2b_path}")
        check_records(a_recs, i2i_path, "pair")
        meta = a_recs[0]["meta"]
        examples = [join_example(r, r, len(r["response_ids"]), ("pair", "pair")) for r in a_recs]
        return JoinedRun(examples, "pair", None, meta, {**meta, "model": meta.get("base_model")})
    if i2b_path is None:
        raise UserError(f"{i2i_path} holds {kind} records: data_prep also needs the i2b file")
    b_recs = _records(b_source, i2b_path)[0]
    if kind == "reference":
        if record_kind(b_recs, i2b_path) != "reference":
            raise UserError(f"{i2b_path}: expected the reference's records, like {i2i_path}")
        examples, strings, cut = join_reference(a_recs, b_recs, i2i_path, i2b_path, truncate_mismatched)
        return JoinedRun(examples, "reference", strings, {"source": "reference"}, {"source": "reference"}, cut)
    if kind != "i2i":
        raise UserError(f"{i2i_path}: holds {kind} records, expected i2i")
    if record_kind(b_recs, i2b_path) == "pair":
        raise UserError(f"{i2b_path} holds --mode pair records (both models): give it alone, without {i2i_path}")
    check_records(a_recs, i2i_path, "i2i")
    check_records(b_recs, i2b_path, "i2b")
    return JoinedRun(_join_ours(a_recs, b_recs, i2i_path, i2b_path), "aligntds", None, a_recs[0]["meta"], b_recs[0]["meta"])
