"""Chat-format token ids on the tokenizers users really have, against authoritative oracles.

The SentencePiece tokenizers are Mistral's real ones, shipped in the `mistral-common` package
(`tokenizer.model.v1` is Mistral-7B-v0.1's, `..._240323.model.v3` the v0.3 one with control tokens),
loaded as users load them (`AutoTokenizer`, `LlamaTokenizer`, in both `legacy` modes). The oracles:

- mistral-common's `encode_chat_completion` (the format Mistral's models were trained on);
- Meta's Llama-2 format, with the SentencePiece library itself: `[BOS] + sp.encode(prompt.rstrip(" ") + " "
  + answer) + [EOS]` (the v1 model stands in for Llama-2's, which cannot be downloaded here);
- for a byte-level BPE ChatML tokenizer, `apply_chat_template` of [user, assistant] (and today's ids).

The models are tiny and random: only the ids are under test, end to end through `logit_analysis`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
from mistral_common.protocol.instruct.messages import AssistantMessage, SystemMessage, UserMessage
from mistral_common.protocol.instruct.request import ChatCompletionRequest
from mistral_common.protocol.instruct.validator import ValidationMode
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer
from transformers import AutoTokenizer

from aligntds.cli.logit_analysis import main as logit_analysis
from aligntds.cli.merge_logits import main as merge_logits
from aligntds.prompts import ChatEncoder, adds_prefix_space, document_start
from aligntds.store import load_records
from aligntds.tiny import save_pair_member, tiny_model, train_tokenizer
from helpers import CORPUS, LLAMA2_TEMPLATE, SP_FILES, mistral_data, sp_folder

LLAMA2_SYSTEM = "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible."
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
ANSWERS = [
    "Thank you for your question! I'm happy to help. There are many ways to get there.",
    "Sure!\n\nHere is a list:\n1. One\n2. Two",
    "Café, 世界 and 😀 ok. That's all.",
    "  Two spaces first, then\ttabs.",
]
QUERIES = ["How do I get to Broadway?", "List two things.", "Say something in three scripts.", "Mind the spaces."]


@pytest.fixture(scope="module")
def sp_tokenizers(tmp_path_factory):
    root = tmp_path_factory.mktemp("sp")
    return {(v, legacy): sp_folder(root, v, legacy) for v in SP_FILES for legacy in (False, True)}


def mistral_oracle(version: str, system: str | None, query: str, answer: str) -> list[int]:
    """mistral-common's ids of one conversation ending in the assistant's answer (fine-tuning mode: answer + EOS)."""
    mt = MistralTokenizer.from_file(str(mistral_data() / SP_FILES[version]), mode=ValidationMode.finetuning)
    messages = ([SystemMessage(content=system)] if system else []) + [UserMessage(content=query),
                                                                      AssistantMessage(content=answer)]
    return mt.encode_chat_completion(ChatCompletionRequest(messages=messages)).tokens


def mistral_prompt(version: str, system: str | None, query: str) -> str:
    """The text form of Mistral's instruct prompt (v1: spaces around the query; v3: [INST] and [/INST] are control tokens)."""
    content = f"{system}\n\n{query}" if system else query
    return f"<s>[INST] {content} [/INST]" if version == "v1" else f"<s>[INST] {content}[/INST]"


def llama2_prompt(query: str) -> str:
    """The just-eval file's `input`: Llama-2's chat prompt as text, ending in a space."""
    return f"<s>[INST] <<SYS>>\n{LLAMA2_SYSTEM}\n<</SYS>>\n\n{query} [/INST] "


def meta_oracle(folder: Path, prompt: str, answer: str) -> list[int]:
    """Meta's Llama-2 format with the SentencePiece library: [BOS] + encode(prompt.rstrip(" ") + " " + answer) + [EOS]."""
    sp = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    body = prompt.removeprefix("<s>").rstrip(" ")
    return [sp.bos_id(), *sp.encode(body + " " + answer), sp.eos_id()]


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("version", ["v1", "v3"])
def test_mistral_conversations_equal_mistral_common(sp_tokenizers, version, legacy):
    enc = ChatEncoder(AutoTokenizer.from_pretrained(sp_tokenizers[(version, legacy)]))
    assert enc.prefix_space and enc.start == [1]
    for system in (None, "Be nice."):
        for query, answer in zip(QUERIES, ANSWERS):
            prompt = mistral_prompt(version, system, query)
            ours = enc.prompt_ids(prompt) + enc.answer_ids(prompt, answer + "</s>")
            assert ours == mistral_oracle(version, system, query, answer), (version, legacy, system, query)


@pytest.mark.parametrize("legacy", [False, True])
def test_llama2_prompts_equal_meta_format(sp_tokenizers, legacy):
    folder = sp_tokenizers[("v1", legacy)]
    tok = AutoTokenizer.from_pretrained(folder)
    enc = ChatEncoder(tok)
    space = tok.convert_tokens_to_ids("▁")
    for query, answer in zip(QUERIES, ANSWERS):
        prompt = llama2_prompt(query)
        prompt_ids, answer_ids = enc.prompt_ids(prompt), enc.answer_ids(prompt, answer + "</s>")
        assert prompt_ids + answer_ids == meta_oracle(folder, prompt, answer)
        assert prompt_ids[:2] == [1, tok.convert_tokens_to_ids("▁[")]  # one BOS, then `▁[INST]`
        assert prompt_ids.count(tok.bos_token_id) == 1
        assert prompt_ids[-1] != space  # no lone space token before the answer
        assert tok.convert_ids_to_tokens(answer_ids[0]).startswith("▁")  # the answer's first word carries the space
        assert enc.decode_answer(prompt, prompt_ids, answer_ids) == answer + "</s>"  # decoded in context, without that space
        assert answer_ids[-1] == tok.eos_token_id and answer_ids.count(tok.eos_token_id) == 1  # the literal </s> is EOS


def test_reference_tokenization_reproduces_the_reference(sp_tokenizers):
    """AlignTDS: tokenizer.encode(prompt, add_special_tokens=True) (a second BOS), the answer encoded alone after the space."""
    tok = AutoTokenizer.from_pretrained(sp_tokenizers[("v1", False)])
    enc = ChatEncoder(tok, "reference")
    prompt, answer = llama2_prompt(QUERIES[0]), ANSWERS[0] + "</s>"
    assert enc.prompt_ids(prompt) == tok.encode(prompt, add_special_tokens=True)
    assert enc.prompt_ids(prompt)[:2] == [1, 1] and enc.prompt_ids(prompt)[-1] == tok.convert_tokens_to_ids("▁")
    assert enc.answer_ids(prompt, answer) == tok.encode(answer, add_special_tokens=False)
    assert enc.prompt_ids(prompt) != ChatEncoder(tok).prompt_ids(prompt)


def test_line_break_before_the_answer_continues_the_text(sp_tokenizers):
    """Zephyr's format (`<|assistant|>\\n`, the whole conversation tokenized as one text): no space is added after the line
    break."""
    tok = AutoTokenizer.from_pretrained(sp_tokenizers[("v1", False)])
    enc = ChatEncoder(tok)
    for answer in ANSWERS:
        prompt = f"<s><|user|>\n{QUERIES[0]}</s>\n<|assistant|>\n"
        joined = [1] + tok.encode(prompt.removeprefix("<s>") + answer + "</s>", add_special_tokens=False)
        assert enc.prompt_ids(prompt) + enc.answer_ids(prompt, answer + "</s>") == joined


def test_bytelevel_chatml_ids_are_unchanged():
    tok = train_tokenizer(CORPUS, vocab_size=400, add_bos=False, extra_special=["<|im_start|>", "<|im_end|>"],
                          chat_template=CHATML)
    enc = ChatEncoder(tok)
    assert not enc.prefix_space and enc.start == [] and not adds_prefix_space(tok)
    for query, answer in zip(QUERIES, ANSWERS):
        prompt = tok.apply_chat_template([{"role": "user", "content": query}], tokenize=False, add_generation_prompt=True)
        ours = enc.prompt_ids(prompt) + enc.answer_ids(prompt, answer + "<|im_end|>")
        before = tok(prompt, add_special_tokens=False)["input_ids"]
        before += tok(answer + "<|im_end|>", add_special_tokens=False)["input_ids"]
        conversation = [{"role": "user", "content": query}, {"role": "assistant", "content": answer}]
        oracle = tok.apply_chat_template(conversation)["input_ids"]
        assert ours == before == oracle[: len(ours)] and tok.decode(oracle[len(ours):]) == "\n"


def test_named_bos_that_is_never_added_starts_every_prompt():
    """An OLMo-2-like tokenizer names a BOS it never adds itself (its chat template writes it): i2i and i2b prompts alike
    start with it."""
    tok = train_tokenizer(CORPUS, vocab_size=400, add_bos=False)
    tok.bos_token = "<s>"
    assert tok("a")["input_ids"] == tok("a", add_special_tokens=False)["input_ids"]  # the premise: nothing added
    enc = ChatEncoder(tok)
    assert document_start(tok) == [tok.bos_token_id]
    chat, bare = enc.prompt_ids("<s>### User:\nHi\n### Assistant:\n"), enc.prompt_ids("# Query: Hi")
    assert chat[0] == bare[0] == tok.bos_token_id and chat.count(tok.bos_token_id) == bare.count(tok.bos_token_id) == 1
    assert chat[1:] == tok("### User:\nHi\n### Assistant:\n", add_special_tokens=False)["input_ids"]


# -- end to end: the records' ids --------------------------------------------------------------------------------

def run(data: Path, out: Path, pair: dict, mode: str, *extra) -> list[dict]:
    args = ["--data_file", str(data), "--logits_folder", str(out / "shards"), "--pair", "t", "--mode", mode,
            "--aligned_model", str(pair["aligned"]), "--base_model", str(pair["base"]), *extra]
    assert logit_analysis(args) == 0
    assert merge_logits([str(out), "t", mode]) == 0
    return load_records(out / f"t-{mode}.pkl")


@pytest.fixture(scope="module")
def sp_pair(tmp_path_factory, sp_tokenizers):
    """A tiny random Llama pair with Mistral-7B-v0.1's tokenizer (legacy=False, as transformers 5 loads Llama-2's)."""
    root = tmp_path_factory.mktemp("sp_pair")
    tok = AutoTokenizer.from_pretrained(sp_tokenizers[("v1", False)])
    return {role: save_pair_member(root / role, tiny_model("llama", len(tok), seed=seed), tok)
            for role, seed in (("base", 1), ("aligned", 2))}


@pytest.fixture(scope="module")
def llama2_data(tmp_path_factory) -> Path:
    items = [{"id": i, "pure_input": q, "input": llama2_prompt(q), "output": [a + "</s>"]}
             for i, (q, a) in enumerate(zip(QUERIES, ANSWERS))]
    path = tmp_path_factory.mktemp("llama2_data") / "data.json"
    path.write_text(json.dumps(items))
    return path


@pytest.mark.slow
def test_every_mode_scores_the_chat_format(tmp_path, sp_pair, llama2_data, sp_tokenizers):
    folder = sp_tokenizers[("v1", False)]
    tok = AutoTokenizer.from_pretrained(folder)
    items = json.loads(llama2_data.read_text())
    i2i = run(llama2_data, tmp_path / "i2i", sp_pair, "i2i")
    i2b = run(llama2_data, tmp_path / "i2b", sp_pair, "i2b", "--enable_template", "--i2i_pkl_file",
              str(tmp_path / "i2i/t-i2i.pkl"))
    pair = run(llama2_data, tmp_path / "pair", sp_pair, "pair", "--enable_template")
    for item, a, b, p in zip(items, i2i, i2b, pair):
        meta = meta_oracle(folder, item["input"], item["output"][0].removesuffix("</s>"))
        assert a["prompt_ids"].tolist() + a["response_ids"].tolist() == meta
        assert p["prompt_ids"].tolist() == a["prompt_ids"].tolist() and p["response_ids"].tolist() == a["response_ids"].tolist()
        base_prompt = [1] + tok.encode(b["prompt"], add_special_tokens=False)  # the templated query after one BOS
        assert b["prompt_ids"].tolist() == p["base_prompt_ids"].tolist() == base_prompt
        np.testing.assert_array_equal(b["response_ids"], a["response_ids"])
        assert a["final_generated_text"] == item["output"][0]  # decoded in context
    assert i2i[0]["meta"]["tokenization"] == "chat" and i2i[0]["meta"]["answer_ids"] == "text"

    ref = run(llama2_data, tmp_path / "ref", sp_pair, "i2i", "--tokenization", "reference")
    for item, r in zip(items, ref):
        assert r["prompt_ids"].tolist() == tok.encode(item["input"], add_special_tokens=True)
        assert r["response_ids"].tolist() == tok.encode(item["output"][0], add_special_tokens=False)
    assert ref[0]["meta"]["tokenization"] == "reference"


def test_output_ids_are_scored_as_they_are(tmp_path, sp_pair, llama2_data, capsys):
    items = json.loads(llama2_data.read_text())
    odd = [1, 2, 3, 29871, 13, 13, 2]  # ids no text would encode to (BOS and EOS inside an answer, a lone space)
    for item in items:
        item["output_ids"] = odd
    data = tmp_path / "ids.json"
    data.write_text(json.dumps(items))
    recs = run(data, tmp_path / "out", sp_pair, "i2i")
    assert all(r["response_ids"].tolist() == odd for r in recs) and recs[0]["meta"]["answer_ids"] == "output_ids"
    items[1]["output_ids"] = [5, 32000]
    data.write_text(json.dumps(items))
    args = ["--data_file", str(data), "--logits_folder", str(tmp_path / "bad"), "--pair", "t", "--mode", "i2i",
            "--aligned_model", str(sp_pair["aligned"])]
    assert logit_analysis(args) == 2
    err = capsys.readouterr().err
    assert "example 1 (id=1): output_ids holds 32000, outside the tokenizer's vocabulary of 32000 ids" in err
    assert "Traceback" not in err
    items[1]["output_ids"] = [5, "6"]
    data.write_text(json.dumps(items))
    assert logit_analysis(args) == 2
    assert "example 1 (id=1): field 'output_ids' must be a list of token ids" in capsys.readouterr().err


@pytest.mark.slow
def test_generated_answers_are_scored_as_generated(tmp_path, sp_pair, sp_tokenizers, capsys):
    """generate_outputs -> i2i -> data_prep with a SentencePiece chat model: the prompt is Meta's format, the scored
    ids are the generated ones, every answer token is the model's top-1, and no warning; the same answers scored
    with the reference's ids (another context) lose that, and data_prep warns."""
    from aligntds.cli.data_prep import main as data_prep
    from aligntds.cli.generate_outputs import main as generate

    tok = AutoTokenizer.from_pretrained(sp_pair["aligned"])
    tok.chat_template = LLAMA2_TEMPLATE
    model = save_pair_member(tmp_path / "chat", tiny_model("llama", len(tok), seed=2), tok)
    pair = {"aligned": model, "base": sp_pair["base"]}
    (tmp_path / "q.json").write_text(json.dumps([{"id": i, "pure_input": q} for i, q in enumerate(QUERIES)]))
    assert generate(["--data_file", str(tmp_path / "q.json"), "--output_file", str(tmp_path / "a.json"), "--model", str(model),
                     "--max_new_tokens", "12", "--device", "cpu"]) == 0
    items = json.loads((tmp_path / "a.json").read_text())
    sp = spm.SentencePieceProcessor(model_file=str(sp_tokenizers[("v1", False)] / "tokenizer.model"))
    for name, extra in (("chat", ()), ("reference", ("--tokenization", "reference"))):
        out = tmp_path / name
        i2i = run(tmp_path / "a.json", out / "i2i", pair, "i2i", *extra)
        run(tmp_path / "a.json", out / "i2b", pair, "i2b", "--i2i_pkl_file", str(out / "i2i/t-i2i.pkl"), *extra)
        capsys.readouterr()
        assert data_prep(["t", str(out / "i2i/t-i2i.pkl"), str(out / "i2b/t-i2b.pkl"), "--out", str(out / "prep.pkl")]) == 0
        err, summary = capsys.readouterr().err, json.loads((out / "prep.summary.json").read_text())
        if name == "chat":
            for item, rec in zip(items, i2i):
                assert rec["prompt_ids"].tolist() == [1, *sp.encode(f"[INST] {item['pure_input']} [/INST]")]
                assert rec["response_ids"].tolist() == item["output_ids"] and (rec["token_rank"] == 0).all()
            assert summary["greedy_mismatch"]["positions"] == 0 and summary["ties"] == 0 and "warning" not in err
        else:
            assert i2i[0]["prompt_ids"][:2].tolist() == [1, 1]
            assert summary["greedy_mismatch"]["first_position"]["ratio"] > 0.25
            assert "warning: in" in err and "first token is not the aligned model's top-1" in err
            assert "scored with --tokenization reference: try the default --tokenization chat" in err


def test_each_prefix_reads_as_its_model_read_it(tmp_path, sp_pair, llama2_data, sp_tokenizers):
    """With SentencePiece the answer's first token carries the boundary space (`▁Thank`). The aligned chat prompt's text
    ends in it; the reference's base template ends in ``` and the base model read "``` Thank": each side's prefix on the
    example page is its prompt, its boundary and the spans, and reads as the model's ids decode after its prompt."""
    from aligntds.cli.data_prep import main as data_prep
    from aligntds.data_prep import load_prepared
    from aligntds.report import page_data

    tok = AutoTokenizer.from_pretrained(sp_tokenizers[("v1", False)])
    kw = dict(skip_special_tokens=False, clean_up_tokenization_spaces=False)
    i2i = run(llama2_data, tmp_path / "i2i", sp_pair, "i2i")
    i2i_file, i2b_file = tmp_path / "i2i/t-i2i.pkl", tmp_path / "i2b/t-i2b.pkl"
    i2b = run(llama2_data, tmp_path / "i2b", sp_pair, "i2b", "--enable_template", "--i2i_pkl_file", str(i2i_file))
    assert data_prep(["t", str(i2i_file), str(i2b_file), "--out", str(tmp_path / "p.pkl")]) == 0
    prep = load_prepared(tmp_path / "p.pkl")
    checked = 0
    for ex, a, b in zip(prep["examples"], i2i, i2b):
        assert (ex["aligned_boundary"], ex["base_boundary"]) == ("", " ")
        data = page_data(ex, prep["tokens"])
        assert (data["aligned_boundary"], data["base_boundary"]) == ("", " ")
        ids = ex["response_ids"].tolist()
        for side, prompt, prompt_ids in (("aligned", ex["aligned_prompt"], a["prompt_ids"].tolist()),
                                         ("base", ex["base_prompt"], b["prompt_ids"].tolist())):
            head = tok.decode(prompt_ids, **kw)
            for t in range(1, len(ids) + 1):
                read = tok.decode(prompt_ids + ids[:t], **kw)[len(head):]  # what the model read after its prompt
                if "\ufffd" in read:  # a character not yet complete: its bytes are on later tokens
                    continue
                shown = prompt + ex[f"{side}_boundary"] + "".join(ex["spans"][:t])  # what the page shows (t > 0)
                assert shown == prompt.rstrip(" ") + read, (side, t)
                checked += 1
    assert ex["base_prompt"].endswith("```") and checked > 100
