"""Faults found by trying public bug reports (issue 9), each input with its right value.

- float16 overflow: non-finite logits stop the run with one line naming the example, the answer position and the
  dtype (never stored); data_prep refuses records holding non-finite values;
- data that is not text: a lone surrogate anywhere, an id that is NaN, both refused before any model loads; a
  UTF-8 byte-order mark simply read;
- extended vocabularies: an aligned tokenizer that is the base one plus `<|im_end|>`, its model resized (and
  padded to a multiple of 64): i2b and pair run over the shared ids, against a brute force.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from aligntds.cli.data_prep import main as data_prep
from aligntds.cli.generate_outputs import main as generate_outputs
from aligntds.cli.logit_analysis import main as logit_analysis
from aligntds.generate import load_instructions
from aligntds.scoring import Request, Scorer
from aligntds.store import load_records, save_records
from aligntds.tiny import save_pair_member, tiny_model
from helpers import REPO, brute_force, i2b, i2i, one_error_line, write_data
from reference import assert_topk_matches, rank_bounds

TOL = 1e-4

# The issue's data: two examples, only the second answer holds " garden".
OVERFLOW_EXAMPLES = [
    ("What is the capital of France?", "Sure! Paris is the capital of France.</s>"),
    ("Tell me about cats.", "The cat looked at the garden.</s>"),
]


def no_records(folder) -> bool:
    return not list(folder.rglob("*.pkl")) if folder.exists() else True


# -- 1. non-finite logits ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def overflow(tmp_path_factory, tok_bos):
    """The issue's models: a tiny Llama whose input embedding row of one token (one only the second answer holds)
    is multiplied by 3e5, and one whose output layer is multiplied by 2e4; both overflow in float16."""
    root = tmp_path_factory.mktemp("overflow")
    data = write_data(root / "data.json", OVERFLOW_EXAMPLES)
    ids = [tok_bos(a, add_special_tokens=False)["input_ids"] for _, a in OVERFLOW_EXAMPLES]
    (token,) = [t for t in ids[1] if t not in ids[0] and tok_bos.convert_ids_to_tokens(t) == "Ġgar"]  # " garden" = Ġgar de n
    emb = tiny_model("llama", len(tok_bos), seed=2)
    with torch.no_grad():
        emb.model.embed_tokens.weight[token] *= 3e5
    head = tiny_model("llama", len(tok_bos), seed=2)
    with torch.no_grad():
        head.lm_head.weight *= 2e4
    return {"data": data, "root": root, "token": token,
            "embedding": save_pair_member(root / "embedding", emb, tok_bos),
            "output_layer": save_pair_member(root / "output_layer", head, tok_bos)}


def first_nonfinite_position(model_dir, record_like) -> int:
    """The oracle: the model's own float16 forward pass over one example, and its first answer position whose
    logits are not all finite."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float16)
    prompt, answer = list(record_like["prompt_ids"]), list(record_like["response_ids"])
    with torch.no_grad():
        logits = model(torch.tensor([prompt + answer])).logits[0, len(prompt) - 1 : len(prompt) - 1 + len(answer)]
    bad = (~torch.isfinite(logits)).any(dim=1).nonzero()
    assert len(bad), "the premise: float16 overflows on this example"
    return int(bad[0, 0])


def test_float16_overflow_in_the_backbone_stops_the_run(tmp_path, overflow, pair_llama, capsys):
    data, model = overflow["data"], overflow["embedding"]
    # The same runs in float32 are fine; their ids of the second example (aligned and base prompt) feed the oracle.
    f32 = tmp_path / "f32"
    assert i2i(data, f32, model) == 0
    assert i2b(data, f32, model, f32 / "t-i2i.[0:2].pkl") == 0
    recs = {m: load_records(f32 / f"t-{m}.[0:2].pkl")[1] for m in ("i2i", "i2b")}
    assert overflow["token"] in recs["i2i"]["response_ids"].tolist() and np.isfinite(recs["i2i"]["entropy"]).all()
    position = {m: first_nonfinite_position(model, rec) for m, rec in recs.items()}

    out = tmp_path / "f16"
    assert i2i(data, out, model, "--dtype", "float16") == 2
    one_error_line(capsys, f"{data}: example 1 (id=1): the logits of {model} in float16 are not finite",
                   f"at answer position {position['i2i']}", "--dtype bfloat16 or float32")
    assert no_records(out)

    # i2b: the base model overflows (the aligned records are fine).
    assert i2b(data, out, model, f32 / "t-i2i.[0:2].pkl", "--dtype", "float16") == 2
    one_error_line(capsys, f"{data}: example 1 (id=1): the logits of {model} in float16 are not finite",
                   f"at answer position {position['i2b']}", "--dtype bfloat16 or float32")
    assert no_records(out)

    # pair: either side overflowing stops the run, naming that model (the aligned side on the chat prompt, the base
    # side on the templated query: here no template, so the i2b prompt).
    for aligned, base, side in ((model, pair_llama["base"], "i2i"), (pair_llama["aligned"], model, "i2b")):
        assert logit_analysis(["--data_file", str(data), "--logits_folder", str(out), "--pair", "t", "--mode", "pair",
                               "--aligned_model", str(aligned), "--base_model", str(base), "--dtype", "float16"]) == 2
        one_error_line(capsys, f"{data}: example 1 (id=1): the logits of {model} in float16 are not finite",
                       f"at answer position {position[side]}", "--dtype bfloat16 or float32")
        assert no_records(out)


def test_float16_overflow_in_the_output_layer_is_named(tmp_path, overflow, capsys):
    """The output layer x 2e4: our float32 output layer is fine, the model's own float16 logits overflow, so the
    once-per-run check cannot compare them. It must say overflow, not 'not supported'."""
    out = tmp_path / "s"
    assert i2i(overflow["data"], out, overflow["output_layer"], "--dtype", "float16") == 2
    line = one_error_line(capsys, f"{overflow['data']}: example 0 (id=0)", "float16", "not finite", "overflow",
                          "--dtype bfloat16 or float32")
    assert "not supported" not in line
    assert no_records(out)


def test_data_prep_refuses_non_finite_records(tmp_path, report, capsys):
    def prep(i2i_recs, i2b_recs):
        save_records(tmp_path / "a.pkl", i2i_recs)
        save_records(tmp_path / "b.pkl", i2b_recs)
        return data_prep(["r", str(tmp_path / "a.pkl"), str(tmp_path / "b.pkl"), "--out", str(tmp_path / "p.pkl")])

    a, b = copy.deepcopy(report["i2i"]), copy.deepcopy(report["i2b"])
    a[3]["token_logprob"][2] = -np.inf  # a token ruled out by its model: log-prob -inf is a value, not a fault
    a[3]["topk_logprobs"][1, -1] = -np.inf
    assert prep(a, b) == 0
    capsys.readouterr()
    for rec_list, key, pos, value in ((a, "entropy", 4, np.nan), (b, "aligned_logprob", 1, np.inf), (b, "entropy", 0, -np.inf),
                                      (a, "topk_logprobs", 5, np.nan)):
        bad = copy.deepcopy(rec_list)
        bad[1][key][pos] = value
        assert (prep(bad, b) if rec_list is a else prep(a, bad)) == 2
        name = "a.pkl" if rec_list is a else "b.pkl"
        one_error_line(capsys, f"{tmp_path / name}: record 1 (id=1)", f"{key} holds {value}", f"answer position {pos}")


# -- 2. data that is not text --------------------------------------------------------------------------------------

def test_a_lone_surrogate_is_refused_before_any_model_loads(tmp_path, capsys):
    bad = tmp_path / "surrogate.json"
    # The issue's input, as a file holds it: the JSON escape of half an emoji.
    bad.write_text('[{"id": "a", "pure_input": "q", "input": "q", "output": ["half \\ud83d emoji"]}]')
    missing = tmp_path / "no-model"  # never loaded: the data is checked first
    assert i2i(bad, tmp_path / "s", missing) == 2
    one_error_line(capsys, str(bad), "example 0 (id=a)", "field 'output[0]'", "lone surrogate", "\\ud83d")
    # At any depth and in any field, keys included; and in generate_outputs' instruction files.
    for content, field in (('{"id": 1, "input": "q", "output": ["a"], "extra": {"notes": [1, "x\\udc00"]}}', "extra.notes[1]"),
                           ('{"id": 1, "input": "q", "output": ["a"], "k\\ud800": 1}', "k\\ud800"),
                           ('{"id": "\\udfff", "input": "q", "output": ["a"]}', "'id'")):
        bad.write_text(content + "\n")
        assert i2i(bad, tmp_path / "s", missing) == 2
        one_error_line(capsys, str(bad), "example 0", field, "lone surrogate")
    bad.write_text('[{"instruction": "half \\ud83d emoji"}]')
    assert generate_outputs(["--data_file", str(bad), "--output_file", str(tmp_path / "o.json"), "--model", str(missing)]) == 2
    one_error_line(capsys, str(bad), "example 0", "field 'instruction'", "lone surrogate")
    assert not (tmp_path / "s").exists() and not (tmp_path / "o.json").exists()


@pytest.mark.slow  # the script as a command, in a process of its own
def test_a_lone_surrogate_is_one_line_on_a_real_stderr(tmp_path):
    """As users run it: the one line reaches a real stderr (a surrogate in it would fail to encode)."""
    bad, missing = tmp_path / "surrogate.json", tmp_path / "no-model"
    bad.write_text('[{"id": "a", "input": "q", "output": ["half \\ud83d emoji"]}]')
    run = subprocess.run([sys.executable, str(REPO / "src/logit_analysis.py"), "--data_file", str(bad), "--logits_folder",
                          str(tmp_path / "s"), "--mode", "i2i", "--aligned_model", str(missing)], capture_output=True, text=True)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1 and "lone surrogate" in run.stderr


def test_an_id_that_is_not_a_number_is_refused(tmp_path, capsys):
    bad = tmp_path / "nan.jsonl"
    bad.write_text('{"id": 0, "pure_input": "q", "input": "q", "output": ["a"]}\n'
                   '{"id": NaN, "pure_input": "q", "input": "q", "output": ["a"]}\n')
    assert i2i(bad, tmp_path / "s", tmp_path / "no-model") == 2
    one_error_line(capsys, str(bad), "example 1", "field 'id' is nan", "not a finite number")
    bad.write_text('[{"id": Infinity, "input": "q", "output": ["a"]}]')
    assert i2i(bad, tmp_path / "s", tmp_path / "no-model") == 2
    one_error_line(capsys, str(bad), "example 0", "field 'id' is inf")
    bad.write_text('[{"id": -Infinity, "instruction": "q"}]')
    assert generate_outputs(["--data_file", str(bad), "--output_file", str(tmp_path / "o.json"), "--model", "m"]) == 2
    one_error_line(capsys, str(bad), "example 0", "field 'id' is -inf")


@pytest.mark.parametrize("jsonl", [False, True])
def test_a_byte_order_mark_is_read(tmp_path, pair_llama, jsonl):
    plain = write_data(tmp_path / ("plain.jsonl" if jsonl else "plain.json"), OVERFLOW_EXAMPLES, jsonl=jsonl)
    bom = tmp_path / ("bom.jsonl" if jsonl else "bom.json")
    bom.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    assert i2i(plain, tmp_path / "a", pair_llama["aligned"]) == 0
    assert i2i(bom, tmp_path / "b", pair_llama["aligned"]) == 0
    a, b = (load_records(tmp_path / x / "t-i2i.[0:2].pkl") for x in "ab")
    assert [r["id"] for r in b] == [0, 1] and a[0]["meta"]["data"] == b[0]["meta"]["data"]
    for ra, rb in zip(a, b):
        np.testing.assert_array_equal(ra["response_ids"], rb["response_ids"])
        np.testing.assert_array_equal(ra["topk_ids"], rb["topk_ids"])
    instructions = tmp_path / "instructions.json"
    instructions.write_bytes(b"\xef\xbb\xbf" + json.dumps([{"instruction": "Hi"}]).encode())
    assert load_instructions(instructions)[0]["pure_input"] == "Hi"


# -- 3. extended vocabularies --------------------------------------------------------------------------------------

IM_END = "<|im_end|>"
EXTENDED_EXAMPLES = [
    ("What is the capital of France?", f"Sure! Paris is the capital of France.{IM_END}"),
    ("Tell me about cats.", f"The cat{IM_END} sat on the mat and looked at the garden."),  # mid-answer: later contexts differ
    ("Is Rome in Italy?", "Yes. Rome is the capital of Italy. I hope this helps!"),
    ("Where does water boil?", "Water boils at one hundred degrees at sea level."),
]


@pytest.fixture(scope="module", params=[None, 64], ids=["resized", "padded-to-64"])
def extended(request, tmp_path_factory, tok_bos, pair_llama):
    """The issue's pair: base = the session's tiny base Llama; aligned tokenizer = the base one + <|im_end|> (ids
    0..399 identical, 400 added), aligned model resized to it (or padded to a multiple of 64: rows 401..447 no token
    maps to). <|im_end|>'s output row is raised so that it is the aligned top-1 at some positions; the padded rows are
    raised above every token, so that a top-k over the model's rows would be full of them."""
    root = tmp_path_factory.mktemp("extended")
    tok_a = copy.deepcopy(tok_bos)
    assert tok_a.add_tokens([IM_END], special_tokens=True) == 1
    added = tok_a.convert_tokens_to_ids(IM_END)
    assert added == len(tok_bos) == 400
    model = tiny_model("llama", len(tok_bos), seed=2)
    model.resize_token_embeddings(len(tok_a), pad_to_multiple_of=request.param)
    rows = model.lm_head.weight.shape[0]
    assert rows == (448 if request.param else 401)
    with torch.no_grad():
        # The token the model most often ranks first on these answers; <|im_end|> gets 1.3 times its row, so it wins
        # wherever that token leads with a positive logit.
        text = tok_bos(" ".join(a for _, a in EXTENDED_EXAMPLES).replace(IM_END, " "), return_tensors="pt")["input_ids"]
        leader = int(model(text).logits[0].argmax(dim=1).mode().values)
        w = model.lm_head.weight
        w[added] = 1.3 * w[leader]
        w[401:] = 4 * w[leader]
    aligned = save_pair_member(root / "aligned", model, tok_a)
    data = write_data(root / "data.json", EXTENDED_EXAMPLES)
    out = root / "out"
    assert i2i(data, out, aligned) == 0
    assert i2b(data, out, pair_llama["base"], out / "t-i2i.[0:4].pkl") == 0
    assert logit_analysis(["--data_file", str(data), "--logits_folder", str(out), "--pair", "t", "--mode", "pair",
                           "--aligned_model", str(aligned), "--base_model", str(pair_llama["base"])]) == 0
    recs = {m: load_records(out / f"t-{m}.[0:4].pkl") for m in ("i2i", "i2b", "pair")}
    return {"root": root, "aligned": aligned, "added": added, "rows": rows, "data": data, **recs}


@torch.no_grad()
def full_logits(model_dir, prompt_ids, answer_ids, stand_in: int = 0, vocab: int | None = None) -> np.ndarray:
    """The oracle's float64 logits [T, rows] at each answer position: one plain forward pass of the model over
    prompt + answer, an id the model does not have (>= vocab) fed as `stand_in`."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    seq = [i if vocab is None or i < vocab else stand_in for i in [*prompt_ids, *answer_ids]]
    logits = model(torch.tensor([seq])).logits[0].double().numpy()
    p = len(prompt_ids)
    return logits[p - 1 : p - 1 + len(answer_ids)]


def log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))


def expected_aligned_only(response, top1, n_base) -> np.ndarray:
    """Written out: position t is marked when its answer token, its aligned top-1, or an earlier answer token is >= n_base."""
    return np.array([any(r >= n_base for r in response[: t + 1]) or top1[t] >= n_base for t in range(len(response))], dtype=bool)


def test_extended_vocabulary_i2i_leaves_out_rows_without_a_token(extended):
    added, seen_added = extended["added"], 0
    for rec in extended["i2i"]:
        logits = full_logits(extended["aligned"], rec["prompt_ids"], rec["response_ids"])
        assert logits.shape[1] == extended["rows"]
        # The distribution is over the 401 tokens: rows without a token are left out of the top-k and the normalizer.
        ref = log_softmax(logits[:, : added + 1])
        assert_topk_matches(rec["topk_ids"], rec["topk_logprobs"], ref, TOL)
        assert rec["topk_ids"].max() <= added
        if extended["rows"] > added + 1:  # the premise: over every row, the padded ones would fill the top-k
            assert (np.argsort(-logits, axis=1)[:, : rec["topk_ids"].shape[1]] > added).any()
        seen_added += int((rec["topk_ids"][:, 0] == added).sum())
    assert seen_added >= 2, "the premise: <|im_end|> is the aligned top-1 at some positions"


def test_extended_vocabulary_i2b_ranks_equal_a_brute_force(extended, pair_llama):
    added, checked = extended["added"], 0
    assert extended["i2b"][0]["meta"]["shared_vocab"] == added
    answers_with_added = 0
    for a, b in zip(extended["i2i"], extended["i2b"]):
        response, top1 = a["response_ids"].tolist(), a["topk_ids"][:, 0].tolist()
        np.testing.assert_array_equal(b["response_ids"], a["response_ids"])
        want = expected_aligned_only(response, top1, added)
        np.testing.assert_array_equal(b["aligned_only"], want)
        answers_with_added += added in response
        # Brute force: the base model's full softmax over its 400 tokens, on the same ids.
        ref = log_softmax(full_logits(pair_llama["base"], b["prompt_ids"], response, stand_in=0, vocab=added))
        for t in range(len(response)):
            if top1[t] == added:  # a token the base model does not have
                assert b["aligned_rank"][t] == -1 and b["aligned_logprob"][t] == -np.inf
                continue
            assert abs(b["aligned_logprob"][t] - ref[t, top1[t]]) < TOL
            if not want[t]:
                lo, hi = rank_bounds(ref[t], ref[t, top1[t]], TOL)
                assert lo <= b["aligned_rank"][t] <= hi
                checked += 1
            if response[t] == added:
                assert b["token_logprob"][t] == -np.inf and b["token_rank"][t] == -1
            else:
                assert abs(b["token_logprob"][t] - ref[t, response[t]]) < TOL
    assert answers_with_added == 2 and checked > 40


def test_extended_vocabulary_pair_divergences_over_shared_ids(extended, pair_llama):
    added = extended["added"]
    meta = extended["pair"][0]["meta"]
    assert meta["shared_vocab"] == added and "renormalized" in meta["divergences"] and meta["base_vocab_size"] == added
    checked = 0
    for p, b, a in zip(extended["pair"], extended["i2b"], extended["i2i"]):
        np.testing.assert_array_equal(p["aligned_only"], b["aligned_only"])
        np.testing.assert_array_equal(p["aligned_rank"], b["aligned_rank"])
        np.testing.assert_allclose(p["topk_logprobs"], a["topk_logprobs"], atol=1e-5)
        response = p["response_ids"].tolist()
        keep = ~p["aligned_only"]
        aligned = full_logits(extended["aligned"], p["prompt_ids"], response)
        base = full_logits(pair_llama["base"], p["base_prompt_ids"], response, stand_in=0, vocab=added)
        # Over the 400 shared ids, each distribution renormalized there.
        want = brute_force(log_softmax(aligned[:, :added]), log_softmax(base[:, :added]))
        for name, values in want.items():
            np.testing.assert_allclose(p[name][keep], values[keep], atol=TOL, rtol=1e-4, err_msg=name)
        checked += int(keep.sum())
    assert checked > 40


def test_extended_vocabulary_counted_apart_in_the_summary(extended, tmp_path):
    marked = sum(int(r["aligned_only"].sum()) for r in extended["i2b"])
    assert marked >= 3
    for inputs in ([extended["root"] / "out/t-i2i.[0:4].pkl", extended["root"] / "out/t-i2b.[0:4].pkl"],
                   [extended["root"] / "out/t-pair.[0:4].pkl"]):
        out = tmp_path / f"p{len(inputs)}.pkl"
        assert data_prep(["t", *map(str, inputs), "--out", str(out)]) == 0
        s = json.loads(out.with_suffix(".summary.json").read_text())
        assert s["aligned_only"] == marked
        assert s["unshifted"] + s["marginal"] + s["shifted"] + marked == s["positions"]
        classed = s["positions"] - marked
        assert s["ratios"]["shifted"] == round(s["shifted"] / classed, 6)
        assert sum(row["count"] for row in s["by_position"]["relative"]) == classed


def test_i2b_without_the_aligned_tokenizer_keeps_todays_refusal(tmp_path, extended, pair_llama, capsys):
    """i2b checks an extended vocabulary against the aligned tokenizer named in the i2i records; when that cannot be
    loaded any more, the vocabularies are refused as before, saying why."""
    moved = tmp_path / "moved"
    extended["aligned"].rename(moved)
    try:
        assert i2b(extended["data"], tmp_path / "s", pair_llama["base"], extended["root"] / "out/t-i2i.[0:4].pkl") == 2
    finally:
        moved.rename(extended["aligned"])
    one_error_line(capsys, "differs from the aligned tokenizer", "would not mean the same text", "did not load")
    assert no_records(tmp_path / "s")


def test_output_rows_no_token_maps_to_are_left_out(pair_llama):
    """Token ids with holes (rows 5 and 77 map to no token) and output rows past the last token (390..399): the
    distribution, its top-k and ranks are over the 388 tokens only, equal to a brute force over them."""
    model = AutoModelForCausalLM.from_pretrained(pair_llama["aligned"], dtype=torch.float32)
    unmapped = [5, 77, *range(390, 400)]
    with torch.no_grad():  # rows without a token that would lead every distribution if they counted
        model.lm_head.weight[unmapped] = 5 * model.lm_head.weight[40]
    tokens = [i for i in range(400) if i not in unmapped]
    scorer = Scorer(model, top_k=len(tokens), batch_tokens=1000, token_ids=tokens)
    assert (scorer.head.vocab_size, scorer.head.n_tokens) == (390, 388)
    req = Request([1, 40, 41, 42], [43, 44, 45, 46, 47, 48])
    assert scorer.check_head(req) < 1e-4
    stats = scorer.score([req])[0]
    with torch.no_grad():
        logits = model(torch.tensor([[*req.prompt_ids, *req.response_ids]])).logits[0, 3:9].double().numpy()
    assert np.isin(logits.argmax(axis=1), unmapped).any()  # the premise
    ref = np.full_like(logits, -np.inf)
    ref[:, tokens] = log_softmax(logits[:, tokens])
    assert_topk_matches(stats["topk_ids"], stats["topk_logprobs"], ref[:, :390], TOL)
    assert not np.isin(stats["topk_ids"], unmapped).any()
    for t, target in enumerate(req.response_ids):
        lo, hi = rank_bounds(ref[t], ref[t, target], TOL)
        assert lo <= stats["token_rank"][t] <= hi and abs(stats["token_logprob"][t] - ref[t, target]) < TOL
