"""Building requests without a model (`aligntds.requests`): prompt and answer ids per side, the cut to the smallest
context, the aligned top-1 ids cut with the answer, aligned_only, and the one-line errors; on the session's trained
tokenizer, against the tokenizer's own encoding (the oracle)."""

from __future__ import annotations

import numpy as np
import pytest

from aligntds.data import REFERENCE_TEMPLATE, fill_template
from aligntds.errors import UserError
from aligntds.prompts import ChatEncoder
from aligntds.requests import (
    PairRequest,
    Request,
    aligned_only,
    answer_ids,
    answer_source,
    check_ids,
    plan_examples,
    sides_for,
    to_requests,
)
from helpers import EXAMPLES, chat_input

ITEMS = [{"id": f"e{i}", "pure_input": q, "input": chat_input(q), "output": [a]} for i, (q, a) in enumerate(EXAMPLES)]


def where(i: int) -> str:
    return f"data.json: example {i} (id={ITEMS[i]['id']})"


def oracle_prompt(tok, text: str) -> list[int]:
    """One BOS, then the text after a leading <s> (the chat format's prompt ids for a byte-level tokenizer)."""
    return [tok.bos_token_id] + tok(text.removeprefix("<s>"), add_special_tokens=False)["input_ids"]


def test_one_code_path_for_the_three_modes(tok_bos):
    enc = ChatEncoder(tok_bos)
    indices = range(len(ITEMS))
    answers = [answer_ids(ITEMS[i], sides_for("i2i", [enc], [None])[0], where(i)) for i in indices]
    for n, i in enumerate(indices):  # byte-level: the answer text encoded as it is, a literal </s> is the EOS
        assert answers[n] == tok_bos(ITEMS[i]["output"][0], add_special_tokens=False)["input_ids"]
    top1 = [[7] * len(a) for a in answers]
    for mode in ("i2i", "i2b", "pair"):
        sides = sides_for(mode, [enc] * (2 if mode == "pair" else 1), [None] * 2, REFERENCE_TEMPLATE)
        examples = plan_examples(ITEMS, indices, sides, answers, where, top1 if mode == "i2b" else None)
        requests = to_requests(examples)
        for p, r, i in zip(examples, requests, indices):
            item = ITEMS[i]
            want = {"input": item["input"], "pure_input": fill_template(REFERENCE_TEMPLATE, item["pure_input"])}
            fields = {"i2i": ["input"], "i2b": ["pure_input"], "pair": ["input", "pure_input"]}[mode]
            assert p.prompts == [want[f] for f in fields]
            assert p.prompt_ids == [oracle_prompt(tok_bos, want[f]) for f in fields]
            assert p.response_ids == answers[i] and p.n_truncated == 0
            if mode == "pair":
                assert isinstance(r, PairRequest) and list(r.base.prompt_ids) == p.prompt_ids[1]
                assert r.aligned.aligned_top1 is None and list(r.response_ids) == answers[i]
            else:
                assert isinstance(r, Request) and list(r.prompt_ids) == p.prompt_ids[0]
                assert r.aligned_top1 == (top1[i] if mode == "i2b" else None)


def test_answers_are_cut_to_the_smallest_context(tok_bos, tok_nobos):
    enc = ChatEncoder(tok_bos)
    i = 4  # the longest answer
    sides = sides_for("pair", [enc, enc], [None, None])
    full = plan_examples(ITEMS, [i], sides, [list(range(40))], where, [list(range(100, 140))])[0]
    p_aligned, p_base = (len(ids) for ids in full.prompt_ids)
    sides = sides_for("pair", [enc, enc], [p_aligned + 30, p_base + 25])
    (cut,) = plan_examples(ITEMS, [i], sides, [list(range(40))], where, [list(range(100, 140))])
    assert cut.n_truncated == 15 and cut.response_ids == list(range(25)) and cut.aligned_top1 == list(range(100, 125))
    with pytest.raises(UserError, match=r"data.json: example 4 \(id=e4\): the base prompt alone has \d+ tokens, the model's "
                                        r"context is 3"):
        plan_examples(ITEMS, [i], sides_for("pair", [enc, enc], [None, 3]), [[1]], where)
    with pytest.raises(UserError, match="example 0 .*the prompt is empty"):
        plan_examples([{**ITEMS[0], "input": ""}], [0], sides_for("i2i", [ChatEncoder(tok_nobos)], [None]), [[1]], where)


def test_output_ids_are_the_answer_and_are_checked(tok_bos):
    side = sides_for("i2i", [ChatEncoder(tok_bos)], [None])[0]
    assert answer_ids({**ITEMS[0], "output_ids": [5, 6, 7]}, side, where(0)) == [5, 6, 7]
    with pytest.raises(UserError, match=r"example 0 \(id=e0\): output_ids holds 400, outside the tokenizer's vocabulary of 400"):
        answer_ids({**ITEMS[0], "output_ids": [5, 400]}, side, where(0))
    reference = sides_for("i2i", [ChatEncoder(tok_bos, "reference")], [None])[0]  # the reference's ids: the text, always
    text_ids = tok_bos(ITEMS[0]["output"][0], add_special_tokens=False)["input_ids"]
    assert answer_ids({**ITEMS[0], "output_ids": [5]}, reference, where(0)) == text_ids
    with_ids = [{**x, "output_ids": [1]} for x in ITEMS[:2]] + ITEMS[2:4]
    assert answer_source(with_ids, range(2), "chat") == "output_ids"
    assert answer_source(with_ids, range(2, 4), "chat") == "text"
    assert answer_source(with_ids, range(4), "chat") == "output_ids (2 of 4 examples), else text"
    assert answer_source(with_ids, range(4), "reference") == "text"
    requests = [Request([1], [5, 6]), Request([1], [399])]
    check_ids(requests, 400, 3, "m")
    with pytest.raises(UserError, match="example 4: answer token ids exceed the 399 outputs of m"):
        check_ids(requests, 399, 3, "m")


def test_aligned_only_marks_what_the_base_model_lacks():
    response, top1 = [5, 400, 6, 7], [5, 6, 7, 401]
    np.testing.assert_array_equal(aligned_only(response, top1, 400), [False, True, True, True])
    np.testing.assert_array_equal(aligned_only([5, 6, 7], [5, 401, 7], 400), [False, True, False])
    np.testing.assert_array_equal(aligned_only([5, 6], [5, 6], 400), [False, False])
    with pytest.raises(ValueError, match="same answer ids"):
        PairRequest(Request([1], [5, 6]), Request([1, 2], [5, 7]))
