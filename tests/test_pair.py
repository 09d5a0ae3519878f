"""--mode pair: both models in one process, exact full-vocabulary divergences, against brute force and the i2i + i2b route."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from aligntds.cli.logit_analysis import main as logit_analysis
from aligntds.cli.merge_logits import main as merge_logits
from aligntds.pair import divergences
from aligntds.records import RUN_KEYS, check_records
from aligntds.store import load_records
from aligntds.tiny import save_pair_member, tiny_model, train_tokenizer
from helpers import CORPUS, assert_same_records, brute_force, one_error_line, run_i2i_i2b
from reference import assert_topk_matches, rank_bounds, reference_logprobs

TOL = 1e-4


def pair_run(data, folder, pair, *extra):
    return logit_analysis(["--data_file", str(data), "--logits_folder", str(folder), "--pair", "t", "--mode", "pair",
                           "--aligned_model", str(pair["aligned"]), "--base_model", str(pair["base"]), "--enable_template",
                           *extra])


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def routes(request, tmp_path_factory, data_file):
    """The pair-mode records, the i2i + i2b records of the same data, and the oracle's full log-probs
    (aligned, base) of each record, for one architecture."""
    pair = request.getfixturevalue(f"pair_{request.param}")
    tmp = tmp_path_factory.mktemp(f"pair_{request.param}")
    assert pair_run(data_file, tmp / "pair", pair) == 0
    recs = load_records(tmp / "pair" / "t-pair.[0:7].pkl")
    i2i, i2b = run_i2i_i2b(tmp, pair, data_file)
    aligned, base = (AutoModelForCausalLM.from_pretrained(pair[role], dtype=torch.float32) for role in ("aligned", "base"))
    oracle = [(reference_logprobs(aligned, r["prompt_ids"], r["response_ids"]),
               reference_logprobs(base, r["base_prompt_ids"], r["response_ids"])) for r in recs]
    return recs, i2i, i2b, oracle


def test_pair_divergences_equal_brute_force(routes):
    recs, _, _, oracle = routes
    check_records(recs, "pair", "pair")
    positions = 0
    for rec, (ref_p, ref_q) in zip(recs, oracle):
        for name, want in brute_force(ref_p, ref_q).items():
            assert rec[name].dtype == np.float32 and rec[name].shape == (len(rec["response_ids"]),)
            np.testing.assert_allclose(rec[name], want, atol=TOL, rtol=1e-4, err_msg=name)
        for prefix, ref in (("", ref_p), ("base_", ref_q)):  # each side's statistics, against the oracle
            assert_topk_matches(rec[f"{prefix}topk_ids"], rec[f"{prefix}topk_logprobs"], ref, TOL)
            tgt = rec["response_ids"].astype(np.int64)
            np.testing.assert_allclose(rec[f"{prefix}token_logprob"], ref[np.arange(len(tgt)), tgt], atol=TOL, rtol=0)
            np.testing.assert_allclose(rec[f"{prefix}entropy"], -(np.exp(ref) * ref).sum(1), atol=TOL, rtol=0)
        positions += len(rec["response_ids"])
    assert positions > 100


def test_pair_agrees_with_the_i2i_i2b_route(routes):
    recs, i2i, i2b, oracle = routes
    checked = 0
    for rec, a, b, (_, ref_q) in zip(recs, i2i, i2b, oracle):
        # Same token ids as the two-run route: the aligned prompt as i2i, the templated bare query as i2b.
        np.testing.assert_array_equal(rec["prompt_ids"], a["prompt_ids"])
        np.testing.assert_array_equal(rec["base_prompt_ids"], b["prompt_ids"])
        np.testing.assert_array_equal(rec["response_ids"], a["response_ids"])
        assert rec["prompt"] == a["prompt"] and rec["base_prompt"] == b["prompt"]
        assert rec["final_generated_text"] == a["final_generated_text"]
        for key in ("topk_logprobs", "token_logprob", "entropy"):
            np.testing.assert_allclose(rec[key], a[key], atol=1e-5, rtol=0)
            np.testing.assert_allclose(rec[f"base_{key}"], b[key], atol=1e-5, rtol=0)
        np.testing.assert_allclose(rec["aligned_logprob"], b["aligned_logprob"], atol=1e-5, rtol=0)
        # aligned_rank: equal, except where near-equal log-probs make the order a matter of rounding.
        for t in range(len(rec["response_ids"])):
            top1 = rec["topk_ids"][t, 0]
            if top1 != a["topk_ids"][t, 0]:  # a tie at the top of the aligned distribution
                continue
            lo, hi = rank_bounds(ref_q[t], ref_q[t, top1], TOL)
            assert lo <= rec["aligned_rank"][t] <= hi and lo <= b["aligned_rank"][t] <= hi
            if hi == lo + 1:  # no other token within TOL: one possible rank
                assert rec["aligned_rank"][t] == b["aligned_rank"][t]
                checked += 1
    assert checked > 100


def test_divergences_match_definitions():
    torch.manual_seed(0)
    logits_p, logits_q = torch.randn(6, 50) * 3, torch.randn(6, 50) * 3
    logits_q[1] = logits_p[1]  # identical rows: every divergence is 0
    logits_q[2] = logits_p[2] + 1e-3 * torch.randn(50)  # nearly identical
    logits_p[3, :10] = -torch.inf  # P rules out ten tokens Q allows
    lp, lq = logits_p.log_softmax(-1), logits_q.log_softmax(-1)
    got = divergences(lp.clone(), lq.clone())
    want = brute_force(lp.double().numpy(), lq.double().numpy())
    assert want["kl_base_aligned"][3] == math.inf  # the definition: Q puts mass where P has none
    for name in ("kl_aligned_base", "js", "tv"):
        np.testing.assert_allclose(got[name].numpy(), want[name], atol=1e-6, rtol=1e-5, err_msg=name)
    kl_qp = got["kl_base_aligned"].numpy()
    np.testing.assert_allclose(np.delete(kl_qp, 3), np.delete(want["kl_base_aligned"], 3), atol=1e-6, rtol=1e-5)
    assert np.isfinite(kl_qp[3]) and kl_qp[3] > 100  # floored: large and finite, never nan
    assert got["js"][1] == 0 and got["tv"][1] == 0 and got["kl_aligned_base"][1] == 0
    assert (got["js"] >= 0).all() and (got["js"] <= math.log(2)).all() and (got["tv"] <= 1).all()


def test_pair_shards_merge_and_must_agree(tmp_path, data_file, pair_llama, capsys):
    whole = tmp_path / "whole"
    assert pair_run(data_file, whole / "shards", pair_llama) == 0
    assert merge_logits([str(whole), "t", "pair"]) == 0
    shards = tmp_path / "sliced" / "shards"
    assert pair_run(data_file, shards, pair_llama, "--end", "3") == 0
    assert pair_run(data_file, shards, pair_llama, "--start", "3") == 0
    assert merge_logits([str(tmp_path / "sliced"), "t", "pair"]) == 0
    merged = load_records(tmp_path / "sliced" / "t-pair.pkl")
    assert_same_records(merged, load_records(whole / "t-pair.pkl"))
    meta = merged[0]["meta"]
    assert meta["mode"] == "pair" and meta["model"] == str(pair_llama["aligned"])
    assert meta["base_model"] == str(pair_llama["base"])
    assert "base_model" in RUN_KEYS

    # A shard made against another base model does not merge with these.
    other = {"aligned": pair_llama["aligned"], "base": pair_llama["aligned"]}
    assert pair_run(data_file, shards, other, "--start", "3", "--overwrite") == 0
    assert merge_logits([str(tmp_path / "sliced"), "t", "pair"]) == 2
    one_error_line(capsys, "other settings", "base_model")


def test_pair_refuses_different_vocabularies(tmp_path, data_file, pair_llama, capsys):
    other_tok = train_tokenizer([t.upper() for t in CORPUS], vocab_size=350)  # other merges: ids differ beyond the byte alphabet
    other = save_pair_member(tmp_path / "other", tiny_model("llama", len(other_tok), seed=1), other_tok)
    assert pair_run(data_file, tmp_path / "s", {"aligned": pair_llama["aligned"], "base": other}) == 2
    one_error_line(capsys, "tokenizers of", "differ", "ids differ", "would not mean the same text")
    assert logit_analysis(["--data_file", str(data_file), "--logits_folder", str(tmp_path), "--pair", "nope", "--mode", "pair",
                           "--aligned_model", str(pair_llama["aligned"])]) == 2
    one_error_line(capsys, "--mode pair needs --aligned_model and --base_model")


def test_pair_cuts_answers_to_the_smaller_context(tmp_path, data_file, pair_llama, tok_bos, capsys):
    assert pair_run(data_file, tmp_path / "full", pair_llama) == 0
    full = load_records(tmp_path / "full" / "t-pair.[0:7].pkl")
    longest = max(full, key=lambda r: len(r["base_prompt_ids"]) + len(r["response_ids"]))
    limit = len(longest["base_prompt_ids"]) + len(longest["response_ids"]) - 4
    short_base = save_pair_member(tmp_path / "short", tiny_model("llama", len(tok_bos), seed=1, max_position_embeddings=limit),
                                  tok_bos)
    assert pair_run(data_file, tmp_path / "cut", {"aligned": pair_llama["aligned"], "base": short_base}) == 0
    cut = load_records(tmp_path / "cut" / "t-pair.[0:7].pkl")[longest["index"]]
    assert cut["n_truncated"] == 4 and len(cut["response_ids"]) == len(longest["response_ids"]) - 4
    assert all(len(cut[k]) == len(cut["response_ids"]) for k in ("js", "base_token_rank", "topk_ids"))
    assert "cut to fit the context" in capsys.readouterr().err
