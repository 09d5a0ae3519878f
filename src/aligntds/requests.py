"""What each model scores for each example: prompt ids and answer ids, built from the data without a model.

The contracts (lm-evaluation-harness's request dataclasses): a `Request` is one example for one model, a
`PairRequest` the same answer ids after two prompts (`--mode pair`); the scorers (`aligntds.scoring`,
`aligntds.pair`) take lists of them.

One code path serves the three modes: a run has one `Side` per model (`sides_for`: i2i, the aligned model on the
chat prompt `input`; i2b, the base model on the bare query `pure_input`, templated; pair, both), and every example
gets, per side, its prompt text and ids, plus the one answer all sides score (`plan_examples`):

- the answer's ids are the example's `output_ids` when it has them (the ids `generate_outputs.py`
  generated, checked against the vocabulary), else `output[0]` encoded after the aligned prompt
  (`ChatEncoder.answer_ids`), or, for i2b, the ids of the i2i record, so that positions line up;
- with an extended vocabulary (the aligned tokenizer is the base one plus appended tokens), the
  positions the base model cannot be compared at are marked (`aligned_only`);
- an answer longer than a side's context (`max_position_embeddings`) minus that side's prompt is cut
  to fit every side (`n_truncated` counts the dropped tokens); a prompt that alone fills the context,
  or an empty prompt, is a one-line error naming the example.

    sides = sides_for("i2i", [ChatEncoder(tok)], contexts=[4096])
    examples = plan_examples(items, range(0, 10), sides, [answer_ids(items[i], sides[0], where(i)) for i in range(10)], where)
    requests = to_requests(examples)           # [Request(prompt_ids, response_ids), ...]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .data import answer_of, fill_template
from .errors import UserError
from .prompts import ChatEncoder

# The prompt fields each mode reads from the data: the aligned model's chat prompt, the base model's bare query.
PROMPT_FIELDS = {"i2i": ("input",), "i2b": ("pure_input",), "pair": ("input", "pure_input")}


@dataclass
class Request:
    """One example to score with one model.

    prompt_ids: [P] ids of the prompt (P >= 1), special tokens included.
    response_ids: [T] ids of the answer; position t's distribution is scored against response_ids[t].
    aligned_top1: [T] or None: the aligned model's top-1 id at each position, when this model (the base model, i2b)
        ranks it: its exact rank and log-prob are the record's `aligned_rank` and `aligned_logprob`.
    """

    prompt_ids: Sequence[int]
    response_ids: Sequence[int]
    aligned_top1: Sequence[int] | None = None

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)


@dataclass
class PairRequest:
    """One example for both models: the same answer ids after two different prompts."""

    aligned: Request
    base: Request

    def __post_init__(self):
        if list(self.aligned.response_ids) != list(self.base.response_ids):
            raise ValueError("both sides of a pair must score the same answer ids")

    @property
    def response_ids(self):
        return self.aligned.response_ids

    @property
    def length(self) -> int:
        """Tokens the pair costs in a padded batch of either model (the longer of its two sequences)."""
        return max(self.aligned.length, self.base.length)


@dataclass(frozen=True)
class Side:
    """How one model sees every example.

    encoder: the model's tokenizer and tokenization. field: the data field its prompt comes from
    (`input`, the aligned model's chat prompt, or `pure_input`, the bare query). template: a text with
    `{query}` around the field (the base model's), or None. context: the model's longest sequence in
    tokens (None: no limit). what: how errors name its prompt.
    """

    encoder: ChatEncoder
    field: str
    template: str | None = None
    context: int | None = None
    what: str = "prompt"

    def prompt(self, item: dict) -> str:
        return fill_template(self.template, item[self.field])


def sides_for(mode: str, encoders: Sequence[ChatEncoder], contexts: Sequence[int | None],
              template: str | None = None) -> list[Side]:
    """One `Side` per model of a run of `mode`, in the order of `PROMPT_FIELDS[mode]` (pair: aligned, then base):
    the aligned model on `input`, the base model on `pure_input` in `template`. encoders, contexts: one per side."""
    return [
        Side(enc, field, template if field == "pure_input" else None, context,
             "prompt" if field == "input" or mode == "i2b" else "base prompt")
        for enc, context, field in zip(encoders, contexts, PROMPT_FIELDS[mode])
    ]


@dataclass
class PlannedExample:
    """One example as every side scores it (S sides, T answer tokens after the cut).

    prompts: [S] prompt texts; prompt_ids: [S] lists of ids; response_ids: [T] the answer ids;
    aligned_top1: [T] the aligned model's top-1 id at each position (i2b), else None;
    n_truncated: answer tokens dropped to fit the smallest context.
    """

    index: int
    prompts: list[str]
    prompt_ids: list[list[int]]
    response_ids: list[int]
    aligned_top1: list[int] | None
    n_truncated: int


def answer_ids(item: dict, side: Side, where: str) -> list[int]:
    """The answer ids of one example for the aligned side: [T] ints.

    `output_ids` when present (every id must be in the tokenizer's vocabulary, else a `UserError`
    naming the example), else `output[0]` encoded after the example's prompt in `side`'s format.
    """
    ids = item.get("output_ids")
    if ids is None or side.encoder.tokenization == "reference":
        return side.encoder.answer_ids(side.prompt(item), answer_of(item))
    vocab = len(side.encoder.tokenizer)
    bad = next((i for i in ids if not 0 <= i < vocab), None)
    if bad is not None:
        raise UserError(f"{where}: output_ids holds {bad}, outside the tokenizer's vocabulary of {vocab} ids: "
                        "generated by a model with another vocabulary?")
    return [int(i) for i in ids]


def answer_source(items: Sequence[dict], indices: Sequence[int], tokenization: str) -> str:
    """Where the answer ids of `items[indices]` come from, for `meta`'s `answer_ids`: the data's `output_ids`, or the
    answer text encoded (always, with the reference's tokenization)."""
    if tokenization == "reference":
        return "text"
    n = len(indices)
    have = sum(1 for i in indices if items[i].get("output_ids") is not None)
    return "output_ids" if have == n else "text" if have == 0 else f"output_ids ({have} of {n} examples), else text"


def room(where: str, prompt_ids: Sequence[int], context: int | None, what: str = "prompt") -> int | None:
    """Answer tokens that fit after the prompt in the context (None: no limit).

    Raises `UserError` for an empty prompt (the first answer token would have no context) or one
    that alone fills the context.
    """
    if not prompt_ids:
        raise UserError(f"{where}: the {what} is empty, so the first answer token has no context")
    if context is None:
        return None
    if len(prompt_ids) >= context:
        raise UserError(f"{where}: the {what} alone has {len(prompt_ids)} tokens, the model's context is {context}")
    return context - len(prompt_ids)


def cut(response: Sequence[int], *rooms: int | None) -> int:
    """How many answer tokens to drop so that the answer fits every room (the smallest context wins)."""
    limits = [r for r in rooms if r is not None]
    return max(0, len(response) - min(limits)) if limits else 0


def plan_examples(
    items: Sequence[dict],
    indices: Sequence[int],
    sides: Sequence[Side],
    answers: Sequence[Sequence[int]],
    where: Callable[[int], str],
    aligned_top1: Sequence[Sequence[int]] | None = None,
) -> list[PlannedExample]:
    """Every example of `indices` as each side scores it: one `PlannedExample` per example, in order.

    answers: [N] answer ids (see `answer_ids`, or the i2i records' `response_ids`); aligned_top1: [N]
    lists of the aligned model's top-1 ids, cut with the answer. where(i) names example i in errors.
    """
    out = []
    for n, i in enumerate(indices):
        item = items[i]
        prompts = [side.prompt(item) for side in sides]
        prompt_ids = [side.encoder.prompt_ids(p) for side, p in zip(sides, prompts)]
        response = [int(x) for x in answers[n]]
        dropped = cut(response, *(room(where(i), ids, s.context, s.what) for s, ids in zip(sides, prompt_ids)))
        response = response[: len(response) - dropped]
        top1 = None if aligned_top1 is None else [int(x) for x in aligned_top1[n]][: len(response)]
        out.append(PlannedExample(i, prompts, prompt_ids, response, top1, dropped))
    return out


def to_requests(examples: Sequence[PlannedExample]) -> list[Request | PairRequest]:
    """What the scorer takes: a `Request` per example of a one-model run (with its aligned_top1), a `PairRequest` per
    example of a two-model run (aligned prompt first)."""
    out: list[Request | PairRequest] = []
    for p in examples:
        sides = [Request(ids, p.response_ids, p.aligned_top1) for ids in p.prompt_ids]
        out.append(sides[0] if len(sides) == 1 else PairRequest(*sides))
    return out


def check_ids(requests: Sequence[Request | PairRequest], vocab_size: int, start: int, model_name: str) -> None:
    """Refuse answer ids that the model (its `vocab_size` outputs) has no output for; request n is example start + n."""
    for n, r in enumerate(requests):
        if max(r.response_ids, default=-1) >= vocab_size:
            raise UserError(
                f"example {start + n}: answer token ids exceed the {vocab_size} outputs of {model_name}: "
                "its tokenizer has tokens its model has no output for"
            )


def aligned_only(response_ids: Sequence[int], aligned_top1: Sequence[int], n_base: int) -> np.ndarray:
    """bool [T]: the positions at which a token exists only on the aligned side (id >= n_base, the base model's
    vocabulary size): the answer token, or the aligned top-1, or an earlier answer token (the base model was fed a
    stand-in for it, so its context there is not the answer's). Such positions are never classed.
    """
    response = np.asarray(response_ids, dtype=np.int64)
    foreign = np.cumsum(response >= n_base) > 0  # at and after the first answer token the base model lacks
    return foreign | (np.asarray(aligned_top1, dtype=np.int64).reshape(-1)[: len(response)] >= n_base)
