"""generate_outputs end to end through its `main([...])`, against a slow greedy loop written here (the oracle).

The model is a tiny Llama with a Llama-2-like chat template (its output starts with the BOS string). Its
EOS output row is a scaled copy of a token's row, so it stops on EOS after some answers' first tokens and
runs to --max_new_tokens on others: both cases are exercised.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aligntds.cli.generate_outputs import main as generate
from aligntds.cli.logit_analysis import main as logit_analysis
from aligntds.prompts import ChatEncoder
from aligntds.store import load_records
from aligntds.tiny import save_pair_member, tiny_model, train_tokenizer
from helpers import CORPUS, LLAMA2_TEMPLATE, REPO, TIMEOUT, launcher, make_adapter, one_error_line, run_ranks, subprocess_env

QUERIES = ["What is the capital of France?", "Hi", "Tell me about cats and the garden and the mat.", "Water?",
           "How do I bake bread with flour, water and salt?", "Is Rome in Italy?", "Say nothing at all, please.", "Why?"]
MAX_NEW = 24


@torch.no_grad()
def reference_greedy(model, prompt_ids: list[int], max_new: int, eos: int) -> list[int]:
    """Greedy decoding the slow, obvious way: the whole sequence through the model for every new token, no cache."""
    ids, out = list(prompt_ids), []
    for _ in range(max_new):
        nxt = int(model(torch.tensor([ids])).logits[0, -1].argmax())
        out.append(nxt)
        ids.append(nxt)
        if nxt == eos:
            break
    return out


def template_ids(tok, query: str) -> list[int]:
    """The chat prompt tokenized by the tokenizer itself (an independent path from ChatEncoder)."""
    return list(tok.apply_chat_template([{"role": "user", "content": query}], add_generation_prompt=True)["input_ids"])


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    """(folder, tokenizer, model, oracle answers ids): a tiny chat model that stops on EOS for some queries only."""
    tok = train_tokenizer(CORPUS, vocab_size=400, chat_template=LLAMA2_TEMPLATE)
    model = tiny_model("llama", len(tok), seed=0)
    prompts = [template_ids(tok, q) for q in QUERIES]
    plain = [reference_greedy(model, p, MAX_NEW, tok.eos_token_id) for p in prompts]
    # A token generated in some answers (after their first 4 tokens) but not all: EOS now wins wherever it would.
    seen = [set(a[4:]) for a in plain]
    stop = next(t for t in sorted(set().union(*seen)) if 2 <= sum(t in s for s in seen) <= len(QUERIES) - 2)
    with torch.no_grad():
        model.lm_head.weight[tok.eos_token_id] = 1.2 * model.lm_head.weight[stop]
    oracle = [reference_greedy(model, p, MAX_NEW, tok.eos_token_id) for p in prompts]
    stopped = [a[-1] == tok.eos_token_id for a in oracle]
    assert 2 <= sum(stopped) <= len(QUERIES) - 2, stopped  # the premise: both kinds of answers occur
    folder = save_pair_member(tmp_path_factory.mktemp("chat") / "aligned", model, tok)
    return folder, tok, model, oracle


def write_instructions(path: Path, rows) -> Path:
    path.write_text(json.dumps(rows))
    return path


@pytest.fixture(scope="module")
def instructions(tmp_path_factory) -> Path:
    rows = [{"id": f"q{i}", "pure_input": q, "category": "test"} for i, q in enumerate(QUERIES)]
    return write_instructions(tmp_path_factory.mktemp("instr") / "instructions.json", rows)


def run_generate(data, out, model, *extra) -> int:
    return generate(["--data_file", str(data), "--output_file", str(out), "--model", str(model),
                     "--max_new_tokens", str(MAX_NEW), *extra])


def test_batched_answers_equal_the_slow_greedy_loop(tmp_path, chat_model, instructions, capsys):
    folder, tok, _, oracle = chat_model
    outputs = {}
    for bs in (1, 3, 8):
        assert run_generate(instructions, tmp_path / f"b{bs}.json", folder, "--batch_size", str(bs)) == 0
        outputs[bs] = json.loads((tmp_path / f"b{bs}.json").read_text())
    assert outputs[1] == outputs[3] == outputs[8]  # batch composition does not change answers
    items = outputs[3]
    assert [x["id"] for x in items] == [f"q{i}" for i in range(len(QUERIES))]
    for item, q, ids in zip(items, QUERIES, oracle):
        assert item["pure_input"] == q and item["category"] == "test" and item["generator"] == str(folder)
        answer = item["output"][0]
        assert item["output_ids"] == ids  # the generated ids, EOS included when the model stopped on it
        assert answer == tok.decode(ids, skip_special_tokens=False)
        if ids[-1] == tok.eos_token_id:
            assert answer.endswith("</s>") and answer.count("</s>") == 1  # EOS text kept, nothing after it
        else:
            assert len(ids) == MAX_NEW and "</s>" not in answer
        # The `input` field re-creates the prompt the answer was generated from: one BOS, then the template.
        assert item["input"].startswith("<s>[INST]")
        assert ChatEncoder(tok).prompt_ids(item["input"]) == template_ids(tok, q)
    enc = ChatEncoder(tok)
    mismatched = sum(enc.answer_ids(x["input"], x["output"][0]) != ids for x, ids in zip(items, oracle))
    err = capsys.readouterr().err
    assert f"{mismatched} of {len(QUERIES)} answers' texts do not re-encode to the generated ids" in err
    default = "cuda, bfloat16" if torch.cuda.is_available() else "cpu, float32"  # --device, --dtype: cuda when available
    assert err.count(f"running on {default}\n") == 3  # once per run: the device it uses


def test_teacher_forcing_sees_the_generated_tokens(tmp_path, chat_model, instructions):
    """i2i on the generated file scores the generated ids (`output_ids`), not a re-encoding of the text: every
    answer token is the model's top-1 at its position, although this random model emits bytes that BPE merges
    differently when the text is encoded again."""
    folder, tok, _, oracle = chat_model
    assert run_generate(instructions, tmp_path / "answers.json", folder, "--batch_size", "4") == 0
    assert logit_analysis(["--data_file", str(tmp_path / "answers.json"), "--logits_folder", str(tmp_path / "s"),
                           "--pair", "t", "--mode", "i2i", "--aligned_model", str(folder)]) == 0
    records = load_records(tmp_path / "s" / f"t-i2i.[0:{len(QUERIES)}].pkl")
    items = json.loads((tmp_path / "answers.json").read_text())
    enc = ChatEncoder(tok)
    assert any(enc.answer_ids(x["input"], x["output"][0]) != ids for x, ids in zip(items, oracle))  # the premise
    for rec, ids in zip(records, oracle):
        assert rec["prompt_ids"].tolist() == template_ids(tok, QUERIES[rec["index"]])
        assert rec["response_ids"].tolist() == ids
        assert (rec["token_rank"] == 0).all() and (rec["topk_ids"][:, 0] == rec["response_ids"]).all()
        assert rec["meta"]["answer_ids"] == "output_ids" and rec["meta"]["tokenization"] == "chat"


def test_jsonl_instruction_field_and_slices(tmp_path, chat_model):
    folder, _, _, _ = chat_model
    data = tmp_path / "q.jsonl"
    data.write_text("".join(json.dumps({"instruction": q}) + "\n" for q in QUERIES))
    assert run_generate(data, tmp_path / "all.json", folder) == 0
    assert run_generate(data, tmp_path / "part.json", folder, "--start", "2", "--end", "5") == 0
    whole = json.loads((tmp_path / "all.json").read_text())
    part = json.loads((tmp_path / "part.json").read_text())
    assert [x["id"] for x in whole] == list(range(len(QUERIES)))  # ids default to the position in the file
    assert part == whole[2:5]
    assert whole[0]["pure_input"] == QUERIES[0] and whole[0]["instruction"] == QUERIES[0]


# -- bad input: one line naming the file or example, exit status 2 --------------------------------------------

def test_bad_instruction_files(tmp_path, chat_model, capsys):
    folder = chat_model[0]
    out = tmp_path / "out.json"
    assert run_generate(tmp_path / "missing.json", out, folder) == 2
    one_error_line(capsys, "missing.json", "not found")
    bad = tmp_path / "bad.json"
    for content, fragments in [
        ('[{"pure_input": "x"},', ("bad.json", "invalid JSON")),
        ('{"pure_input": "x"}\n{oops\n', ("bad.json", "line 2")),
        (json.dumps([{"pure_input": "x"}, {"id": "b", "query": "y"}]),
         ("bad.json", "example 1", "id=b", "'pure_input' or 'instruction'")),
        (json.dumps([{"pure_input": 3}]), ("example 0", "'pure_input'", "non-empty string")),
        (json.dumps([{"instruction": "  "}]), ("example 0", "'instruction'", "non-empty string")),
        (json.dumps(["just a string"]), ("example 0 is a string, not an object",)),
        (json.dumps([42]), ("example 0 is a number, not an object",)),
        ("42", ("bad.json: the top level is a number: a data file must be a JSON list of examples or JSONL",)),
        (json.dumps({"questions": [{"pure_input": "x"}]}, indent=1), ("the top level is an object", "its key 'questions'")),
        ("[]", ("bad.json: holds no examples",)),
    ]:
        bad.write_text(content)
        assert run_generate(bad, out, folder) == 2, content
        one_error_line(capsys, *fragments)
    assert not out.exists()


def test_bad_models_and_flags(tmp_path, chat_model, instructions, capsys):
    out = tmp_path / "out.json"
    plain_tok = train_tokenizer(CORPUS, vocab_size=400)  # no chat template
    plain = save_pair_member(tmp_path / "plain", tiny_model("llama", len(plain_tok), seed=0), plain_tok)
    assert run_generate(instructions, out, plain) == 2
    one_error_line(capsys, str(plain), "no chat template")
    assert run_generate(instructions, out, tmp_path / "nowhere") == 2
    one_error_line(capsys, f"--model {tmp_path / 'nowhere'}: no such folder")
    assert run_generate(instructions, out, chat_model[0], "--base_model", "./gone/base") == 2
    one_error_line(capsys, "--base_model ./gone/base: no such folder")
    assert run_generate(instructions, out, tmp_path) == 2
    one_error_line(capsys, f"--model {tmp_path}: this folder is not a model")
    assert generate(["--data_file", str(instructions), "--output_file", str(out), "--pair", "nope"]) == 2
    one_error_line(capsys, "'nope' is not a preset", "--model")
    assert run_generate(instructions, out, chat_model[0], "--max_new_tokens", "0") == 2
    one_error_line(capsys, "--max_new_tokens")
    assert run_generate(instructions, out, chat_model[0], "--batch_size", "0") == 2
    one_error_line(capsys, "--batch_size")
    assert run_generate(instructions, out, chat_model[0], "--start", "5", "--end", "2") == 2
    one_error_line(capsys, "--end (2) is before --start (5)")
    assert not out.exists()
    out.write_text("[]\n# kept")  # a slice past the end: nothing to do, and an existing file is not written over
    for past in (["--start", "50"], ["--start", "50", "--end", "60"]):
        assert run_generate(instructions, out, tmp_path / "not-loaded", *past) == 0
        assert out.read_text() == "[]\n# kept"


def test_answers_capped_to_the_context(tmp_path, chat_model, instructions, capsys):
    _, tok, _, _ = chat_model
    context = max(len(template_ids(tok, q)) for q in QUERIES) + 3
    model = tiny_model("llama", len(tok), seed=0, max_position_embeddings=context)
    short = save_pair_member(tmp_path / "short", model, tok)
    assert run_generate(instructions, tmp_path / "a.json", short, "--batch_size", "8") == 0
    assert "prompts leave less than --max_new_tokens=24 tokens of context" in capsys.readouterr().err
    for item, q in zip(json.loads((tmp_path / "a.json").read_text()), QUERIES):
        prompt = template_ids(tok, q)
        want = reference_greedy(model, prompt, min(MAX_NEW, context - len(prompt)), tok.eos_token_id)
        assert item["output"][0] == tok.decode(want, skip_special_tokens=False)
    tiny = save_pair_member(tmp_path / "tiny", tiny_model("llama", len(tok), seed=0, max_position_embeddings=8), tok)
    assert run_generate(instructions, tmp_path / "b.json", tiny) == 2
    one_error_line(capsys, "instructions.json: example 0 (id=q0)", "the prompt alone has", "context is 8")


@pytest.mark.slow
def test_script_runs_as_a_command(tmp_path):
    """The thin entry point, as users run it: a mistake is one line and exit status 2, never a traceback."""
    bad = subprocess.run([sys.executable, str(REPO / "src/generate_outputs.py"), "--data_file", str(tmp_path / "x.json"),
                          "--output_file", str(tmp_path / "b.json"), "--model", "m"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [f"error: {tmp_path / 'x.json'}: data file not found"]


# -- several processes: parts, merged into the file one process writes ---------------------------------------

@pytest.fixture(scope="module")
def one_output(tmp_path_factory, chat_model, instructions) -> bytes:
    """The output file of one process: what the parts of a launch must merge to, byte for byte."""
    out = tmp_path_factory.mktemp("one") / "answers.json"
    assert run_generate(instructions, out, chat_model[0], "--batch_size", "3") == 0
    return out.read_bytes()


def gen_flags(data, out, model):
    return ["--data_file", str(data), "--output_file", str(out), "--model", str(model), "--max_new_tokens", str(MAX_NEW),
            "--batch_size", "3"]


def test_ranks_write_parts_that_merge_to_one_process(tmp_path, chat_model, instructions, one_output, monkeypatch, capsys):
    out = tmp_path / "answers.json"
    args = gen_flags(instructions, out, chat_model[0])
    errs = run_ranks(generate, 3, args, monkeypatch, capsys)
    parts = tmp_path / "parts"
    assert sorted(p.name for p in parts.iterdir()) == ["answers.[0:2].json", "answers.[2:5].json", "answers.[5:8].json"]
    assert not out.exists()
    assert "3 processes share instructions [0:8]; this is rank 0: [0:2]" in errs[0] and "wrote" in errs[0]
    assert not any("wrote" in e or "%|" in e for e in errs[1:])  # messages and progress bars on rank 0 only
    assert generate([*args, "--merge"]) == 0
    assert out.read_bytes() == one_output

    (parts / "answers.[2:5].json").unlink()  # a process that failed
    assert generate([*args, "--merge"]) == 2
    one_error_line(capsys, "gap: no part holds examples [2:5]", "answers.[5:8].json")
    errs = run_ranks(generate, 3, args, monkeypatch, capsys)  # the launch again: only the missing part is made
    assert "exists: skipping" in errs[0] and "exists: skipping" not in errs[1]
    assert generate([*args, "--merge"]) == 0 and out.read_bytes() == one_output

    monkeypatch.setenv("RANK", "0"), monkeypatch.setenv("WORLD_SIZE", "3")
    assert generate([*args, "--max_new_tokens", "5"]) == 2  # a part of another launch is not kept silently
    one_error_line(capsys, "answers.[0:2].json exists with other settings", "max_new_tokens: 24 != 5")
    monkeypatch.delenv("RANK"), monkeypatch.delenv("WORLD_SIZE")
    assert generate([*args, "--merge", "--end", "6"]) == 2
    one_error_line(capsys, "parts/answers.[5:8].json holds examples up to 8, past the end 6")
    (parts / "answers.[0:4].json").write_text((parts / "answers.[0:2].json").read_text())  # a launch with 2 processes
    assert generate([*args, "--merge"]) == 2
    one_error_line(capsys, "overlap: " + str(parts / "answers.[0:4].json starts at 0"), "already hold examples up to 2")
    (parts / "answers.[0:4].json").unlink()
    other = tmp_path / "other.json"
    other.write_text(json.dumps([{"id": f"q{i}", "pure_input": q + "!"} for i, q in enumerate(QUERIES)]))
    assert generate([*gen_flags(other, out, chat_model[0]), "--merge"]) == 2
    one_error_line(capsys, "parts/answers.[0:2].json was made from another instructions file than", "give the launch's "
                   "--data_file")
    shorter = write_instructions(tmp_path / "shorter.json", [{"id": f"q{i}", "pure_input": q} for i, q in enumerate(QUERIES[:6])])
    assert generate([*gen_flags(shorter, out, chat_model[0]), "--merge"]) == 2  # another file, not a range problem
    one_error_line(capsys, "parts/answers.[0:2].json was made from another instructions file than", "8 instructions",
                   f"{shorter}: 6")
    for flag, value, fragment in [("--max_new_tokens", "5", "--max_new_tokens 24, this merge command gives 5"),
                                  ("--model", str(tmp_path), f"--model {chat_model[0]}, this merge command gives {tmp_path}"),
                                  ("--dtype", "bfloat16", "--dtype float32, this merge command gives bfloat16")]:
        assert generate([*args, "--merge", flag, value]) == 2  # the merge command's own settings are the parts'
        one_error_line(capsys, "parts/answers.[0:2].json was made with " + fragment)
    assert generate(["--data_file", str(instructions), "--output_file", str(out), "--merge"]) == 0  # none given: none checked
    assert out.read_bytes() == one_output
    (parts / "answers.[5:8].json").write_text("[1, 2")
    assert generate([*args, "--merge"]) == 2
    one_error_line(capsys, "answers.[5:8].json", "not a readable part file")
    assert out.read_bytes() == one_output  # refused merges leave the output as it was


@pytest.mark.slow
@pytest.mark.parametrize("name", ["accelerate", "torchrun"])
def test_launch_two_processes_merges_to_one_process(name, tmp_path, chat_model, instructions, one_output):
    """`accelerate launch` and `torchrun` start two processes (see `helpers.launcher`); the merge of their parts is
    the file of one process, byte for byte."""
    out = tmp_path / "answers.json"
    flags = gen_flags(instructions, out, chat_model[0])
    done = subprocess.run([*launcher(name, 2), "src/generate_outputs.py", *flags, "--device", "cpu"],
                          cwd=REPO, env=subprocess_env(tmp_path), capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "parts").iterdir()) == ["answers.[0:4].json", "answers.[4:8].json"]
    assert done.stderr.count("wrote ") == 1  # rank 0's message only
    assert generate([*flags, "--merge"]) == 0
    assert out.read_bytes() == one_output


@pytest.mark.slow
def test_run_shards_generates_then_scores(tmp_path, chat_model, instructions, one_output):
    """scripts/run_shards.sh with GENERATE_FROM: answers in 2 processes, merged, then i2i and i2b on them."""
    folder, tok = chat_model[:2]
    base = save_pair_member(tmp_path / "base", tiny_model("llama", len(tok), seed=5), tok)
    data = tmp_path / "answers.json"
    env = {**subprocess_env(tmp_path), "LOGITS_ROOT": str(tmp_path / "runs"), "PYTHON": sys.executable,
           "GENERATE_FROM": str(instructions), "GENERATE_FLAGS": f"--model {folder} --max_new_tokens {MAX_NEW} --batch_size 3"}
    done = subprocess.run(["bash", "scripts/run_shards.sh", "2", "t", str(data), "--aligned_model", str(folder), "--base_model",
                           str(base)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "parts").iterdir()) == ["answers.[0:4].json", "answers.[4:8].json"]
    assert data.read_bytes() == one_output
    i2i = load_records(tmp_path / "runs" / "t" / "t-i2i.pkl")
    assert [r["response_ids"].tolist() for r in i2i] == [x["output_ids"] for x in json.loads(one_output)]  # scored as generated
    assert len(load_records(tmp_path / "runs" / "t_tp" / "t-i2b.pkl")) == len(QUERIES)


@pytest.mark.slow  # peft
def test_answers_of_an_adapter(tmp_path, chat_model, instructions, capsys):
    """--model accepts a PEFT adapter (on the base weights it names, or --base_model's; the tokenizer and chat template
    are the base's): its answers are those of the merged full model."""
    folder, tok = chat_model[:2]
    adapter, merged = make_adapter(folder, tmp_path / "adapter", tok, ["q_proj", "v_proj", "up_proj"])
    for model in (adapter, merged, folder):
        assert run_generate(instructions, tmp_path / f"{model.name}.json", model) == 0
    with_adapter, full, plain = (json.loads((tmp_path / f"{m.name}.json").read_text()) for m in (adapter, merged, folder))
    assert [x["generator"] for x in with_adapter] == [str(adapter)] * len(QUERIES)
    strip = lambda items: [{k: v for k, v in x.items() if k != "generator"} for x in items]  # noqa: E731
    assert strip(with_adapter) == strip(full) != strip(plain)

    cfg = json.loads((adapter / "adapter_config.json").read_text())  # an adapter made on another machine
    (adapter / "adapter_config.json").write_text(json.dumps({**cfg, "base_model_name_or_path": "/elsewhere/base"}))
    assert run_generate(instructions, tmp_path / "moved.json", adapter) == 2
    one_error_line(capsys, f"the adapter {adapter} names the base model /elsewhere/base", "give its base weights with "
                   "--base_model")
    assert run_generate(instructions, tmp_path / "moved.json", adapter, "--base_model", str(folder)) == 0
    assert strip(json.loads((tmp_path / "moved.json").read_text())) == strip(full)
