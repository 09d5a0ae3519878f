"""The batched, chunked scoring path against the reference's per-token loop, on tiny real models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from aligntds.cli.logit_analysis import main as logit_analysis
from aligntds.scoring import Request, Scorer, answer_positions, plan_batches
from aligntds.store import load_records
from aligntds.tiny import save_pair_member, tiny_model
from helpers import run_i2i_i2b
from reference import assert_topk_matches, rank_bounds, reference_logprobs

TOL = 1e-4


def oracle_prompt_ids(tok, text):
    """How the reference encoded a prompt, minus its double BOS."""
    return tok(text, add_special_tokens=not (tok.bos_token and text.startswith(tok.bos_token)))["input_ids"]


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_batched_path_equals_reference_loop(arch, request, tmp_path, data_file):
    pair = request.getfixturevalue(f"pair_{arch}")
    i2i, i2b = run_i2i_i2b(tmp_path, pair, data_file)
    aligned = AutoModelForCausalLM.from_pretrained(pair["aligned"], dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(pair["base"], dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(pair["aligned"])
    assert len(i2i) == len(i2b) == 7
    positions = 0
    for a, b in zip(i2i, i2b):
        # Token ids: the reference's tokenization, and i2b scores exactly the i2i answer ids.
        assert a["prompt_ids"].tolist() == oracle_prompt_ids(tok, a["prompt"])
        assert a["response_ids"].tolist() == tok(a["probe_text"], add_special_tokens=False)["input_ids"]
        assert b["prompt_ids"].tolist() == oracle_prompt_ids(tok, b["prompt"])
        np.testing.assert_array_equal(a["response_ids"], b["response_ids"])

        ref_a = reference_logprobs(aligned, a["prompt_ids"], a["response_ids"])
        ref_b = reference_logprobs(base, b["prompt_ids"], b["response_ids"])
        for rec, ref in ((a, ref_a), (b, ref_b)):
            assert_topk_matches(rec["topk_ids"], rec["topk_logprobs"], ref, TOL)
            tgt = rec["response_ids"].astype(np.int64)
            true_lp = ref[np.arange(len(tgt)), tgt]
            np.testing.assert_allclose(rec["token_logprob"], true_lp, atol=TOL, rtol=0)
            for t in range(len(tgt)):
                lo, hi = rank_bounds(ref[t], true_lp[t], TOL)
                assert lo <= rec["token_rank"][t] <= hi
            entropy = -(np.exp(ref) * ref).sum(axis=1)
            np.testing.assert_allclose(rec["entropy"], entropy, atol=TOL, rtol=0)

        # aligned_rank: a brute-force rank of the aligned top-1 token over the whole base distribution.
        top1 = a["topk_ids"][:, 0].astype(np.int64)
        base_lp = ref_b[np.arange(len(top1)), top1]
        np.testing.assert_allclose(b["aligned_logprob"], base_lp, atol=TOL, rtol=0)
        for t in range(len(top1)):
            brute = int((ref_b[t] > ref_b[t, top1[t]]).sum())
            lo, hi = rank_bounds(ref_b[t], ref_b[t, top1[t]], TOL)
            assert lo <= b["aligned_rank"][t] <= hi, (t, b["aligned_rank"][t], brute)
        positions += len(top1)
    assert positions > 100
    assert any(len(r["response_ids"]) == 0 for r in i2i), "the data has an empty answer"


def test_answer_positions_shift():
    # A 3-token prompt: the output at position 2 predicts answer token 0, at position 3 answer token 1, ...
    assert answer_positions(3, 4).tolist() == [2, 3, 4, 5]
    assert answer_positions(1, 0).tolist() == []
    with pytest.raises(ValueError):
        answer_positions(0, 2)


def test_plan_batches_budget_and_order():
    lengths = [5, 50, 7, 50, 20, 3, 200]
    batches = plan_batches(lengths, batch_tokens=100)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert batches[0] == [6]  # longer than the budget: alone, and first
    for b in batches:
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 100
    firsts = [lengths[b[0]] for b in batches]
    assert firsts == sorted(firsts, reverse=True)


def test_batch_composition_does_not_change_results(tmp_path, pair_llama, data_file):
    def records(budget):
        folder = tmp_path / f"b{budget}"
        args = ["--data_file", str(data_file), "--pair", "t", "--mode", "i2i", "--aligned_model", str(pair_llama["aligned"])]
        assert logit_analysis([*args, "--logits_folder", str(folder), "--batch_tokens", str(budget)]) == 0
        return load_records(folder / "t-i2i.[0:7].pkl")

    one_by_one, all_at_once = records(1), records(100_000)
    for a, b in zip(one_by_one, all_at_once):
        for key in ("prompt_ids", "response_ids"):
            np.testing.assert_array_equal(a[key], b[key])
        np.testing.assert_array_equal(a["token_rank"], b["token_rank"])
        for key in ("topk_logprobs", "token_logprob", "entropy"):
            np.testing.assert_allclose(a[key], b[key], atol=1e-5, rtol=0)
        agree = a["topk_ids"] == b["topk_ids"]
        np.testing.assert_allclose(a["topk_logprobs"][~agree], b["topk_logprobs"][~agree], atol=1e-5)


def test_head_chunks_do_not_change_results(pair_llama, tok_bos):
    model = AutoModelForCausalLM.from_pretrained(pair_llama["aligned"], dtype=torch.float32)
    reqs = [Request([1, 5, 6], list(range(10, 40))), Request([1, 7], list(range(50, 53)))]
    wide = Scorer(model, top_k=5, batch_tokens=1000).score(reqs)
    narrow = Scorer(model, top_k=5, batch_tokens=1000, head_bytes=1)  # one position per chunk
    assert narrow.chunk == 1
    for a, b in zip(wide, narrow.score(reqs)):
        np.testing.assert_array_equal(a["topk_ids"], b["topk_ids"])
        np.testing.assert_array_equal(a["token_rank"], b["token_rank"])
        for k in ("topk_logprobs", "token_logprob", "entropy"):
            np.testing.assert_allclose(a[k], b[k], atol=1e-5, rtol=0)


def test_fast_head_matches_softcapped_architecture(tmp_path, tok_bos):
    """Gemma-2 soft-caps its logits after the output layer; the fast path must do the same."""
    folder = save_pair_member(tmp_path / "gemma2", tiny_model("gemma2", len(tok_bos), seed=3), tok_bos)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    scorer = Scorer(model, top_k=10, batch_tokens=1000)
    req = Request([1, 40, 41, 42], [43, 44, 45, 46, 47, 48])
    assert scorer.check_head(req) < 1e-4
    stats = scorer.score([req])[0]
    ref = reference_logprobs(model, req.prompt_ids, req.response_ids)
    assert_topk_matches(stats["topk_ids"], stats["topk_logprobs"], ref, TOL)
    scorer.head.softcap = None  # forget the soft-cap: the check must notice
    from aligntds.errors import UserError

    with pytest.raises(UserError, match="differs from the model's forward pass"):
        scorer.check_head(req)


def _tied_top4(logits: torch.Tensor) -> np.ndarray:
    """bool [n]: two of a row's four largest logits are exactly equal."""
    top = torch.topk(logits.float(), 4, dim=1).values
    return (top[:, 1:] == top[:, :-1]).any(dim=1).numpy()


def test_bfloat16_model_gets_a_float32_output_layer(pair_llama, data_file):
    """Logits rounded to bfloat16 tie often among the top tokens; the float32 output layer on the same hidden states
    does not, and its ranks are those of a float64 product of the same hidden states and weights."""
    model = AutoModelForCausalLM.from_pretrained(pair_llama["aligned"], dtype=torch.bfloat16)
    scorer = Scorer(model, top_k=4, batch_tokens=4096)
    tok = AutoTokenizer.from_pretrained(pair_llama["aligned"])
    reqs = [Request(tok(q)["input_ids"], tok(a, add_special_tokens=False)["input_ids"])
            for q, a in [(x["input"], x["output"][0]) for x in json.loads(data_file.read_text())] if a]
    hidden = scorer.answer_hidden(reqs)
    assert hidden.dtype == torch.bfloat16
    with torch.no_grad():
        exact = hidden.double() @ model.lm_head.weight.double().T  # [N, V], the same hidden states and weights
        rounded = model.lm_head(hidden)  # what a bfloat16 output layer gives
    assert _tied_top4(rounded).mean() > 0.05  # the premise: ties are common in bfloat16
    ours = scorer.head(hidden)
    assert ours.dtype == torch.float32 and model.lm_head.weight.dtype == torch.bfloat16  # the model is left as it is
    np.testing.assert_array_equal(_tied_top4(ours)[~_tied_top4(exact)], False)
    stats = scorer.score(reqs)
    targets = np.concatenate([r.response_ids for r in reqs])
    ranks = np.concatenate([s["token_rank"] for s in stats])
    lp = torch.log_softmax(exact, dim=1).numpy()
    for n, (t, r) in enumerate(zip(targets, ranks)):
        lo, hi = rank_bounds(lp[n], lp[n, t], 1e-5)
        assert lo <= r <= hi
    assert scorer.check_head(reqs[0]) < 0.1  # against the model's own bfloat16 logits, within their rounding
