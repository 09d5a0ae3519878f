"""aligntds.findings on hand-checked examples: position kinds (style/content/other), classes, summary counts."""

from __future__ import annotations

import json

import numpy as np

from aligntds.cli.findings import main as findings
from aligntds.cli.logit_analysis import main as logit_analysis
from aligntds.findings import figures, phrase_spans, position_kinds, shift_class
from aligntds.models import load_tokenizer
from aligntds.prompts import ChatEncoder
from aligntds.store import load_records
from helpers import one_error_line


def test_position_kinds_and_classes(tok_bos):
    ids = ChatEncoder(tok_bos).answer_ids("", "Sure! Here is Paris. I hope this helps!</s>")
    pieces = [tok_bos.decode([i]) for i in ids]
    assert pieces == ["Su", "re", "!", " Her", "e", " is", " ", "Par", "is", ".", " I", " h", "op", "e", " this", " help", "s",
                      "!", "</s>"]
    kinds = position_kinds(tok_bos, ids, ["Sure! Here is", "I hope this helps!"])
    # style: the two phrases; content: "Par" "is"; other: the lone space, the ".", the EOS
    assert kinds.tolist() == [0] * 6 + [2, 1, 1, 2] + [0] * 8 + [2]
    assert shift_class(np.array([0, 1, 2, 3, 40])).tolist() == [0, 1, 1, 2, 2]
    assert phrase_spans("ab ab abc", ["ab", "abc"]) == [(0, 2), (3, 5), (6, 9)]


def test_summary_counts(tok_bos):
    ids = ChatEncoder(tok_bos).answer_ids("", "Sure! Here is Paris. Rome is the capital of Italy.")
    T = len(ids)
    rank = np.zeros(T, np.int32)
    rank[0], rank[1], rank[T - 1] = 7, 1, 5  # "Su" shifted, "re" marginal (both style), the final "." shifted (other)
    s = figures([{"response_ids": np.array(ids), "aligned_rank": rank}], tok_bos, ["Sure! Here is"])
    n_early = int(np.ceil(0.2 * T))
    assert s["positions"] == T and s["shifted"] == 2 / T and s["marginal"] == 1 / T
    assert s["style_share_of_shifted"] == 0.5 and s["content_unshifted"] == 1.0
    assert s["early_shifted"] == 1 / n_early and s["late_shifted"] == 1 / (T - n_early)


def test_findings_command(tmp_path, data_file, pair_llama, capsys):
    """The script on real i2b records of the tiny pair: tokenizer from the records' meta, phrases from a style file."""
    common = ["--data_file", str(data_file), "--pair", "t", "--logits_folder", str(tmp_path)]
    assert logit_analysis([*common, "--mode", "i2i", "--aligned_model", str(pair_llama["aligned"])]) == 0
    i2i = tmp_path / "t-i2i.[0:7].pkl"
    assert logit_analysis([*common, "--mode", "i2b", "--base_model", str(pair_llama["base"]), "--i2i_pkl_file", str(i2i)]) == 0
    i2b = tmp_path / "t-i2b.[0:7].pkl"
    style = tmp_path / "style.json"
    style.write_text(json.dumps({"phrases": ["Sure!", "I hope this helps!"]}))
    capsys.readouterr()
    assert findings([str(i2b), "--style", str(style), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    want = figures(load_records(i2b), load_tokenizer(str(pair_llama["base"])), ["Sure!", "I hope this helps!"])
    assert got == json.loads(json.dumps(want)) and got["answers"] == 6 and got["style_positions"] > 0
    assert findings([str(i2b), "--style", "", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["style_phrases"] == 0
    assert findings([str(i2b), "--style", ""]) == 0
    out = capsys.readouterr().out
    assert "6 answers" in out and "style" not in out.replace("no style phrases", "")  # no meaningless "0 style ... 0.0%"
    assert findings([str(i2b), "--style", str(style)]) == 0
    assert "style share of shifted" in capsys.readouterr().out
    assert findings([str(i2i), "--style", str(style)]) == 2
    one_error_line(capsys, "holds i2i records, expected i2b")
    # a --mode pair file holds the same ranks of the aligned tokens under the base model: the same figures
    assert logit_analysis([*common, "--mode", "pair", "--aligned_model", str(pair_llama["aligned"]), "--base_model",
                           str(pair_llama["base"])]) == 0
    capsys.readouterr()
    assert findings([str(tmp_path / "t-pair.[0:7].pkl"), "--style", str(style), "--json"]) == 0
    from_pair = json.loads(capsys.readouterr().out)
    assert findings([str(i2b), "--style", str(style), "--json"]) == 0
    assert from_pair == json.loads(capsys.readouterr().out) and from_pair["answers"] == 6
    style.write_text("{}")
    assert findings([str(i2b), "--style", str(style)]) == 2
    one_error_line(capsys, "style.json", "cannot read the style phrases")
