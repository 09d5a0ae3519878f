"""The demo pair shows the URIAL paper's findings in miniature, through the real pipeline.

The pair is built once per machine by `scripts/build_demo_pair.py` (about a minute on 2 cores) into
`models/demo` (or `$ALIGNTDS_DEMO_DIR`) and reused while its stamp matches. The module fixture answers every
other demo instruction (100) with the aligned model through `generate_outputs`, scores the answers with
`logit_analysis` i2i then i2b (`--enable_template`), each in two shards merged by `merge_logits`, and
summarizes the merged i2b records with `aligntds.findings.figures`: classes by `aligned_rank` (0 unshifted, 1-2
marginal, >= 3 shifted), positions as style (the token overlaps a planted phrase of `style.json`) or
content (any other token with a letter or digit).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from aligntds import demo_corpus, models
from aligntds.cli.build_demo_pair import main as build_demo_pair
from aligntds.cli.generate_outputs import main as generate
from aligntds.cli.logit_analysis import main as logit_analysis
from aligntds.cli.merge_logits import main as merge_logits
from aligntds.demo_pair import STAMP, BuildConfig
from aligntds.findings import figures, format_figures
from aligntds.prompts import ChatEncoder
from aligntds.store import load_records

pytestmark = pytest.mark.slow  # builds the demo pair (a minute) when it is not built yet, then the pipeline on 100 answers


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, demo_pair) -> dict:
    """The pipeline on every other demo instruction; returns the answers, records and findings."""
    tmp = tmp_path_factory.mktemp("demo")
    rows = demo_corpus.instructions(demo_corpus.topics())[::2]
    (tmp / "instructions.json").write_text(json.dumps(rows))
    data = tmp / "demo-aligned.json"
    assert generate(["--pair", "demo", "--data_file", str(tmp / "instructions.json"), "--output_file", str(data),
                     "--max_new_tokens", "160", "--batch_size", "50"]) == 0
    half = len(rows) // 2
    for mode, folder, extra in (("i2i", tmp / "demo", []),
                                ("i2b", tmp / "demo_tp", ["--enable_template", "--i2i_pkl_file",
                                                          str(tmp / "demo" / "demo-i2i.pkl")])):
        for start, end in ((0, half), (half, len(rows))):
            assert logit_analysis(["--data_file", str(data), "--logits_folder", str(folder / "shards"), "--pair", "demo",
                                   "--mode", mode, "--start", str(start), "--end", str(end), *extra]) == 0
        assert merge_logits([str(folder), "demo", mode]) == 0
    tok = models.load_tokenizer(str(demo_pair / "aligned"))
    style = json.loads((demo_pair / "style.json").read_text())
    i2b = load_records(tmp / "demo_tp" / "demo-i2b.pkl")
    return {
        "rows": rows,
        "answers": json.loads(data.read_text()),
        "i2i": load_records(tmp / "demo" / "demo-i2i.pkl"),
        "i2b": i2b,
        "tok": tok,
        "summary": figures(i2b, tok, style["phrases"]),
    }


def test_pair_is_saved_and_reused(demo_pair, tmp_path, capsys):
    stamp = (demo_pair / STAMP).read_text()
    assert json.loads(stamp)["config"] == dataclasses.asdict(BuildConfig())
    style = json.loads((demo_pair / "style.json").read_text())
    assert style["phrases"] == demo_corpus.style_phrases()
    base, aligned = (models.load_tokenizer(str(demo_pair / m)) for m in ("base", "aligned"))
    assert models.vocab_fingerprint(base) == models.vocab_fingerprint(aligned)
    assert aligned.chat_template and aligned.bos_token == "<s>" and aligned.eos_token == "</s>"
    assert json.loads((demo_pair / "base" / "config.json").read_text())["model_type"] == "llama"
    assert build_demo_pair(["--root", str(demo_pair), "--instructions", str(tmp_path / "instr.json")]) == 0
    assert "reusing it" in capsys.readouterr().err
    assert (demo_pair / STAMP).read_text() == stamp
    assert json.loads((tmp_path / "instr.json").read_text()) == demo_corpus.instructions(demo_corpus.topics())


def test_aligned_answers_carry_the_planted_style(demo_run):
    """Greedy answers are the tuned ones (planted style around the base's facts), end in EOS, and re-encode exactly."""
    planted = {q: demo_corpus.aligned_answer(t) + "</s>" for t in demo_corpus.topics() for q in t.questions}
    answers = [a["output"][0] for a in demo_run["answers"]]
    assert all(a.endswith("</s>") for a in answers)
    same = sum(a == planted[x["pure_input"]] for a, x in zip(answers, demo_run["answers"]))
    assert same >= 0.9 * len(answers), f"{same} of {len(answers)} answers are the planted ones"
    tok = demo_run["tok"]
    for rec in demo_run["i2i"]:
        assert rec["response_ids"].tolist() == ChatEncoder(tok).answer_ids(rec["prompt"], rec["probe_text"])
    ranks = np.concatenate([r["token_rank"] for r in demo_run["i2i"]])
    assert (ranks == 0).mean() >= 0.999  # teacher forcing reproduces greedy decoding


def test_most_positions_are_unshifted(demo_run):
    s = demo_run["summary"]
    assert s["answers"] == len(demo_run["rows"]) and s["positions"] > 50 * s["answers"]
    assert s["unshifted"] > 0.5 and s["shifted"] < 1 / 6, format_figures(s)


def test_shifted_positions_are_planted_style(demo_run):
    s = demo_run["summary"]
    assert s["style_share_of_shifted"] >= 0.7, format_figures(s)
    assert s["content_unshifted"] >= 0.8, format_figures(s)


def test_shift_is_concentrated_early(demo_run):
    s = demo_run["summary"]
    assert s["early_shifted"] > s["late_shifted"], format_figures(s)
