"""logit_analysis and merge_logits end to end through their `main([...])`: shards, merging, bad input."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from aligntds.cli.logit_analysis import main as logit_analysis
from aligntds.cli.merge_logits import main as merge_logits
from aligntds.store import load_records, save_records
from aligntds.tiny import save_pair_member, tiny_model, train_tokenizer
from helpers import CORPUS, EXAMPLES, REPO, assert_same_records, i2b, i2i, one_error_line, write_data


@pytest.fixture(scope="module")
def full_i2i(tmp_path_factory, data_file, pair_llama):
    """One run over all examples, merged: the file the sliced runs must reproduce."""
    out = tmp_path_factory.mktemp("full")
    assert i2i(data_file, out / "shards", pair_llama["aligned"]) == 0
    assert merge_logits([str(out), "t", "i2i"]) == 0
    return out / "t-i2i.pkl"


def test_slices_merge_to_the_full_run(tmp_path, data_file, pair_llama, full_i2i):
    shards = tmp_path / "shards"
    for s, e in ((0, 2), (2, 5), (5, 1000)):  # the last --end is clamped to the data length
        assert i2i(data_file, shards, pair_llama["aligned"], "--start", str(s), "--end", str(e)) == 0
    assert sorted(p.name for p in shards.iterdir()) == ["t-i2i.[0:2].pkl", "t-i2i.[2:5].pkl", "t-i2i.[5:7].pkl"]
    assert merge_logits([str(tmp_path), "t", "i2i"]) == 0
    assert_same_records(load_records(tmp_path / "t-i2i.pkl"), load_records(full_i2i))

    # i2b in slices, each reading the merged i2i file, merges to the i2b of one run.
    for s, e in ((0, 3), (3, 7)):
        assert i2b(data_file, shards, pair_llama["base"], full_i2i, "--start", str(s), "--end", str(e)) == 0
    assert merge_logits([str(tmp_path), "t", "i2b"]) == 0
    whole = tmp_path / "whole"
    assert i2b(data_file, whole / "shards", pair_llama["base"], full_i2i) == 0
    assert merge_logits([str(whole), "t", "i2b"]) == 0
    assert_same_records(load_records(tmp_path / "t-i2b.pkl"), load_records(whole / "t-i2b.pkl"))


def test_merge_refuses_gaps_and_overlaps(tmp_path, full_i2i, capsys):
    records = load_records(full_i2i)
    shards = tmp_path / "shards"
    shards.mkdir()

    def put(s, e):
        save_records(shards / f"t-i2i.[{s}:{e}].pkl", records[s:e])

    put(0, 3), put(4, 7)
    assert merge_logits([str(tmp_path), "t", "i2i"]) == 2
    one_error_line(capsys, f"{shards}: gap", "[3:4]", "t-i2i.[4:7].pkl")
    put(2, 4)
    assert merge_logits([str(tmp_path), "t", "i2i"]) == 2
    one_error_line(capsys, "overlap", "t-i2i.[2:4].pkl")
    (shards / "t-i2i.[2:4].pkl").unlink()
    put(3, 4)
    (shards / "t-i2i.[4:7].pkl").unlink()
    assert merge_logits([str(tmp_path), "t", "i2i"]) == 2
    one_error_line(capsys, f"{shards}: gap", "[4:7]", "7 examples")
    (shards / "t-i2i.[0:3].pkl").unlink()
    put(4, 7)
    assert merge_logits([str(tmp_path), "t", "i2i"]) == 2
    one_error_line(capsys, "gap", "[0:3]")
    put(0, 3)
    save_records(shards / "t-i2i.[0:3].pkl", records[0:2])  # a file whose name lies about its content
    assert merge_logits([str(tmp_path), "t", "i2i"]) == 2
    one_error_line(capsys, "t-i2i.[0:3].pkl", "its name says [0:3]")
    put(0, 3)
    assert merge_logits([str(tmp_path), "t", "i2i"]) == 0
    assert not (tmp_path / "t-i2b.pkl").exists()
    assert [r["index"] for r in load_records(tmp_path / "t-i2i.pkl")] == list(range(7))


def test_merge_refuses_shards_of_different_settings(tmp_path, data_file, pair_llama, capsys):
    shards = tmp_path / "shards"
    assert i2i(data_file, shards, pair_llama["aligned"], "--end", "3") == 0
    assert i2i(data_file, shards, pair_llama["aligned"], "--start", "3", "--top_k", "5") == 0
    assert merge_logits([str(tmp_path), "t", "i2i"]) == 2
    one_error_line(capsys, "other settings", "top_k: 30 != 5")


def test_existing_shard_is_kept_unless_overwrite(tmp_path, data_file, pair_llama, capsys):
    shards = tmp_path / "shards"
    assert i2i(data_file, shards, pair_llama["aligned"], "--end", "2") == 0
    shard = shards / "t-i2i.[0:2].pkl"
    before = shard.stat().st_mtime_ns
    assert i2i(data_file, shards, pair_llama["aligned"], "--end", "2") == 0
    assert shard.stat().st_mtime_ns == before
    assert i2i(data_file, shards, pair_llama["aligned"], "--end", "2", "--top_k", "7") == 2
    one_error_line(capsys, "exists with other settings", "top_k", "--overwrite")
    assert i2i(data_file, shards, pair_llama["aligned"], "--end", "2", "--top_k", "7", "--overwrite") == 0
    assert load_records(shard)[0]["topk_ids"].shape[1] == 7
    changed = [dict(x) for x in json.loads(Path(data_file).read_text())]
    changed[0]["output"] = ["A new answer.</s>"]  # same ids, same number of examples, other content
    other = tmp_path / "changed.json"
    other.write_text(json.dumps(changed))
    assert i2i(other, shards, pair_llama["aligned"], "--end", "2", "--top_k", "7") == 2
    one_error_line(capsys, "exists with other settings", "data:", "--overwrite")
    assert not [p for p in shards.iterdir() if p.name.startswith(".")]  # no temp files left


def test_slice_past_the_end_writes_nothing(tmp_path, data_file, pair_llama):
    assert i2i(data_file, tmp_path / "s", pair_llama["aligned"], "--start", "750", "--end", "1000") == 0
    assert not (tmp_path / "s").exists()


def test_no_double_bos(tmp_path, data_file, pair_llama, pair_qwen2, tok_bos):
    recs = {}
    for name, pair in (("llama", pair_llama), ("qwen2", pair_qwen2)):
        assert i2i(data_file, tmp_path / name, pair["aligned"], "--end", "1") == 0
        assert i2b(data_file, tmp_path / name, pair["base"], tmp_path / name / "t-i2i.[0:1].pkl", "--end", "1") == 0
        recs[name] = [load_records(tmp_path / name / f"t-{m}.[0:1].pkl")[0] for m in ("i2i", "i2b")]
    bos = tok_bos.bos_token_id
    llama_i2i, llama_i2b = recs["llama"]
    assert llama_i2i["prompt"].startswith("<s>[INST]")
    assert llama_i2i["prompt_ids"][0] == bos and bos not in llama_i2i["prompt_ids"][1:].tolist()
    assert llama_i2b["prompt_ids"][0] == bos and bos not in llama_i2b["prompt_ids"][1:].tolist()  # bare query: BOS added
    qwen_i2i, qwen_i2b = recs["qwen2"]
    assert bos not in qwen_i2b["prompt_ids"].tolist()  # this tokenizer adds no BOS
    assert qwen_i2i["prompt_ids"][0] == bos  # ... but a literal <s> in the text is kept, once
    assert bos not in qwen_i2i["prompt_ids"][1:].tolist()


def test_eos_and_empty_answers(tmp_path, data_file, pair_llama, tok_bos):
    assert i2i(data_file, tmp_path, pair_llama["aligned"]) == 0
    recs = load_records(tmp_path / "t-i2i.[0:7].pkl")
    assert recs[0]["response_ids"][-1] == tok_bos.eos_token_id  # a literal </s> is the EOS token
    assert recs[0]["final_generated_text"] == EXAMPLES[0][1]
    empty = recs[2]
    assert empty["probe_text"] == "" and empty["topk_ids"].shape == (0, 30) and empty["token_rank"].shape == (0,)
    meta = recs[0]["meta"]
    assert meta["mode"] == "i2i" and meta["top_k"] == 30 and meta["dtype"] == "float32" and meta["n_data"] == 7
    assert meta["model"] == str(pair_llama["aligned"]) and meta["versions"]["aligntds"]


def test_jsonl_data_gives_the_same_records(tmp_path, data_file, pair_llama):
    jsonl = write_data(tmp_path / "data.jsonl", jsonl=True)
    assert i2i(jsonl, tmp_path / "a", pair_llama["aligned"]) == 0
    assert i2i(data_file, tmp_path / "b", pair_llama["aligned"]) == 0
    a, b = (load_records(tmp_path / x / "t-i2i.[0:7].pkl") for x in "ab")
    for ra, rb in zip(a, b):
        np.testing.assert_array_equal(ra["topk_ids"], rb["topk_ids"])


def test_custom_base_template(tmp_path, data_file, pair_llama, full_i2i, capsys):
    template = tmp_path / "urial.txt"
    template.write_text("Query: {query}\nAnswer (with {braces} kept):")
    assert i2b(data_file, tmp_path / "s", pair_llama["base"], full_i2i, "--base_template", str(template), "--end", "2") == 0
    rec = load_records(tmp_path / "s" / "t-i2b.[0:2].pkl")[0]
    assert rec["prompt"] == f"Query: {EXAMPLES[0][0]}\nAnswer (with {{braces}} kept):"
    assert rec["meta"]["template"] == template.read_text()
    template.write_text("no placeholder here")
    assert i2b(data_file, tmp_path / "s2", pair_llama["base"], full_i2i, "--base_template", str(template)) == 2
    one_error_line(capsys, "urial.txt", "{query}")


def test_answers_cut_to_the_context(tmp_path, data_file, pair_llama, tok_bos, full_i2i, capsys):
    recs = load_records(full_i2i)
    longest = max(recs, key=lambda r: len(r["prompt_ids"]) + len(r["response_ids"]))
    limit = len(longest["prompt_ids"]) + len(longest["response_ids"]) - 5
    short = save_pair_member(tmp_path / "short", tiny_model("llama", len(tok_bos), seed=2, max_position_embeddings=limit),
                             tok_bos)
    assert i2i(data_file, tmp_path / "s", short) == 0
    cut = load_records(tmp_path / "s" / "t-i2i.[0:7].pkl")[longest["index"]]
    assert cut["n_truncated"] == 5 and len(cut["response_ids"]) == len(longest["response_ids"]) - 5
    assert "cut to fit the context" in capsys.readouterr().err
    tiny = save_pair_member(tmp_path / "tiny", tiny_model("llama", len(tok_bos), seed=2, max_position_embeddings=8), tok_bos)
    assert i2i(data_file, tmp_path / "t", tiny) == 2
    one_error_line(capsys, "example 0", "the prompt alone has", "context is 8")


# -- bad input: one line naming the file or example, exit status 2 --------------------------------------------

def test_bad_data_files(tmp_path, pair_llama, capsys):
    m = pair_llama["aligned"]
    assert i2i(tmp_path / "missing.json", tmp_path, m) == 2
    one_error_line(capsys, "missing.json", "not found")
    bad = tmp_path / "bad.json"
    bad.write_text('[{"id": 0, "input": "x", "output": ["y"]},')
    assert i2i(bad, tmp_path, m) == 2
    one_error_line(capsys, "bad.json", "invalid JSON")
    bad.write_text('{"id": 0, "input": "x", "output": ["y"]}\nnot json\n')
    assert i2i(bad, tmp_path, m) == 2
    one_error_line(capsys, "bad.json", "line 2")
    bad.write_text(json.dumps([{"id": 0, "pure_input": "x", "output": ["y"]}]))
    assert i2i(bad, tmp_path, m) == 2
    one_error_line(capsys, "bad.json", "example 0", "'input'")
    bad.write_text(json.dumps([{"id": 0, "input": "x", "output": []}]))
    assert i2i(bad, tmp_path, m) == 2
    one_error_line(capsys, "example 0", "'output'")
    bad.write_text(json.dumps({"id": 0}))
    assert i2i(bad, tmp_path, m) == 2
    one_error_line(capsys, "bad.json")
    bad.write_text(json.dumps([{"id": 0, "input": "x", "output": "y"}, {"id": 1, "input": "x", "output": []}]))
    assert i2i(bad, tmp_path, m) == 2  # a plain string is an answer too: the message says so
    one_error_line(capsys, "example 1 (id=1)", "'output' must be a string or a non-empty list of strings")
    examples = [{"id": 0, "input": "x", "output": ["y"]}]
    for content in (json.dumps({"data": examples}), json.dumps({"data": examples}, indent=1)):  # one line, pretty-printed
        bad.write_text(content)
        assert i2i(bad, tmp_path, m) == 2
        one_error_line(capsys, "bad.json: the top level is an object", "must be a JSON list of examples or JSONL (one object "
                       "per line)", "its key 'data' holds a list of 1")
    one = {"id": 0, "input": "x", "output": ["y"], "messages": [{"role": "user", "content": "x"}]}
    bad.write_text(json.dumps(one) + "\n")  # a JSONL file of one example (a field holds a list of objects)
    assert i2i(bad, tmp_path / "one", m, "--top_k", "3") == 0
    bad.write_text(json.dumps({"meta": "x", "id": 0, "input": "x", "output": ["y"]}, indent=1))  # one example, not a list
    assert i2i(bad, tmp_path, m) == 2
    assert "its key" not in one_error_line(capsys, "bad.json: the top level is an object", "JSONL")
    for content, kind in (("42", "a number"), ('"text"', "a string"), ("null", "null")):
        bad.write_text(content)
        assert i2i(bad, tmp_path, m) == 2
        one_error_line(capsys, f"bad.json: the top level is {kind}: a data file must be a JSON list")
    bad.write_text("1\n2\n")
    assert i2i(bad, tmp_path, m) == 2
    one_error_line(capsys, "bad.json: example 0 is a number, not an object")
    bad.write_text("[]")
    assert i2i(bad, tmp_path, m) == 2  # not "nothing to do", exit status 0
    one_error_line(capsys, "bad.json: holds no examples")
    bad.write_text(json.dumps([{"id": 0, "input": "x", "output": ["y"]}]))
    assert logit_analysis(["--data_file", str(bad), "--logits_folder", str(tmp_path), "--pair", "t", "--mode", "i2b",
                           "--base_model", str(m), "--i2i_pkl_file", "x.pkl"]) == 2
    one_error_line(capsys, "example 0", "'pure_input'")


def no_network(monkeypatch):
    """Any connection attempt fails at once (as with no network, without the hub client's minutes of retries): a name
    refused before any network access gives its own message, not a failed download."""
    def refuse(*args, **kwargs):
        raise OSError("no network in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_bad_models(tmp_path, data_file, pair_llama, monkeypatch, capsys):
    no_network(monkeypatch)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    for name in (str(tmp_path / "no-such-model"), "./nope", "work/tiny/nope", "models/nope", "models/nope@v1"):
        assert i2i(data_file, tmp_path, name) == 2
        one_error_line(capsys, f"--aligned_model {name}: no such folder")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert i2i(data_file, tmp_path, "~/models") == 2  # the shell expands ~ only where it is not quoted
    one_error_line(capsys, "--aligned_model ~/models: no such folder (a ~ is not expanded here: give the full path)")
    assert i2b(data_file, tmp_path, "models/nope", tmp_path / "x.pkl") == 2
    one_error_line(capsys, "--base_model models/nope: no such folder")
    assert i2i(data_file, tmp_path, pair_llama["aligned"], "--base_model", "./gone") == 2  # an adapter's base weights
    one_error_line(capsys, "--base_model ./gone: no such folder")
    assert i2i(data_file, tmp_path, "models") == 2
    one_error_line(capsys, "--aligned_model models: this folder is not a model: it has no config.json")
    (tmp_path / "weights.bin").write_text("x")
    assert i2i(data_file, tmp_path, "weights.bin") == 2
    one_error_line(capsys, "--aligned_model weights.bin: a file, not a model folder")
    (tmp_path / "models" / "config.json").write_text((pair_llama["aligned"] / "config.json").read_text())
    assert i2i(data_file, tmp_path, "models") == 2  # a model's config, no tokenizer: the library's message, whole
    line = one_error_line(capsys, "cannot load tokenizer 'models'")
    assert not line.endswith(":"), line
    assert logit_analysis(["--data_file", str(data_file), "--logits_folder", str(tmp_path), "--pair", "nope", "--mode",
                           "i2i"]) == 2
    one_error_line(capsys, "'nope' is not a preset", "--aligned_model")


def test_bad_i2i_files(tmp_path, data_file, pair_llama, full_i2i, capsys):
    base = pair_llama["base"]
    assert logit_analysis(["--data_file", str(data_file), "--logits_folder", str(tmp_path), "--pair", "t", "--mode", "i2b",
                           "--base_model", str(base)]) == 2
    one_error_line(capsys, "--i2i_pkl_file")
    assert i2b(data_file, tmp_path, base, tmp_path / "none.pkl") == 2
    one_error_line(capsys, "none.pkl", "not found")

    other = [dict(x) for x in json.loads(Path(data_file).read_text())]
    other[3]["id"] = "changed"
    changed_ids = tmp_path / "ids.json"
    changed_ids.write_text(json.dumps(other))
    assert i2b(changed_ids, tmp_path, base, full_i2i) == 2
    one_error_line(capsys, "t-i2i.pkl", "example 3", "'changed'")
    other[3]["id"] = 3
    other[4]["output"] = ["another answer"]
    changed_answer = tmp_path / "answer.json"
    changed_answer.write_text(json.dumps(other))
    assert i2b(changed_answer, tmp_path, base, full_i2i) == 2
    one_error_line(capsys, "t-i2i.pkl", "example 4", "differs from output[0]")

    partial = tmp_path / "partial.pkl"
    save_records(partial, load_records(full_i2i)[:3])
    assert i2b(data_file, tmp_path, base, partial) == 2
    one_error_line(capsys, "partial.pkl", "no record for example 3", "0..2")
    assert i2b(data_file, tmp_path / "ok", base, partial, "--end", "3") == 0  # a shard that covers the slice is enough

    assert i2b(data_file, tmp_path, base, tmp_path / "ok" / "t-i2b.[0:3].pkl") == 2
    one_error_line(capsys, "holds i2b records, expected i2i")


def test_vocabulary_mismatch_is_refused(tmp_path, data_file, full_i2i, capsys):
    other_tok = train_tokenizer([t.upper() for t in CORPUS], vocab_size=350)  # other merges: ids differ beyond the byte alphabet
    other = save_pair_member(tmp_path / "other", tiny_model("llama", len(other_tok), seed=1), other_tok)
    assert i2b(data_file, tmp_path, other, full_i2i) == 2
    one_error_line(capsys, "differs from the aligned tokenizer", "vocabulary 350",
                   "do not mean the same text".replace("do not", "would not"))


@pytest.mark.slow
def test_scripts_run_as_commands(tmp_path, data_file, full_i2i):
    """The thin entry points, as users run them: errors are one line and exit status 2, never a traceback."""
    bad = subprocess.run([sys.executable, str(REPO / "src/logit_analysis.py"), "--data_file", str(tmp_path / "x.json"),
                          "--logits_folder", str(tmp_path), "--mode", "i2i", "--aligned_model", "m"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [f"error: {tmp_path / 'x.json'}: data file not found"]
    (tmp_path / "shards").mkdir()
    save_records(tmp_path / "shards" / "t-i2i.[0:7].pkl", load_records(full_i2i))
    ok = subprocess.run([sys.executable, str(REPO / "src/scripts/merge_logits.py"), str(tmp_path), "t", "i2i"],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "7 examples" in ok.stderr and (tmp_path / "t-i2i.pkl").exists()
    none = subprocess.run([sys.executable, str(REPO / "src/scripts/merge_logits.py"), str(tmp_path), "t", "i2b"],
                          capture_output=True, text=True)
    assert none.returncode == 2 and "Traceback" not in none.stderr and "no shards named t-i2b" in none.stderr


def test_bad_output_folder_and_device_fail_before_scoring(tmp_path, data_file, pair_llama, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert i2i(data_file, blocker / "shards", pair_llama["aligned"]) == 2
    one_error_line(capsys, "a-file/shards", "cannot create the output folder")
    assert i2i(data_file, blocker, pair_llama["aligned"]) == 2
    one_error_line(capsys, "a-file: is a file, where the output needs a folder")
    assert i2i(data_file, tmp_path / "s", pair_llama["aligned"], "--device", "gpu") == 2
    one_error_line(capsys, "--device 'gpu' is not a device")
    assert i2i(data_file, tmp_path / "s", pair_llama["aligned"], "--device", "cuda:99") == 2
    one_error_line(capsys, "--device cuda:99")
    assert not (tmp_path / "s").exists()


# -- flags that would do nothing, or something else than asked -------------------------------------------------

def test_flags_that_do_nothing_are_refused_or_warned(tmp_path, data_file, pair_llama, full_i2i, capsys):
    for value in ("0", "-5"):
        assert i2i(data_file, tmp_path / "s", pair_llama["aligned"], "--batch_tokens", value) == 2
        one_error_line(capsys, f"--batch_tokens must be >= 1, got {value}")
    assert not (tmp_path / "s").exists()
    assert i2i(data_file, tmp_path / "s", pair_llama["aligned"], "--end", "1", "--i2i_pkl_file", str(full_i2i)) == 0
    err = capsys.readouterr().err
    assert "--i2i_pkl_file is for --mode i2b; --mode i2i scores the data file's answers itself" in err
    default = "cuda, bfloat16" if torch.cuda.is_available() else "cpu, float32"  # --device, --dtype: cuda when available
    assert err.count(f"running on {default}\n") == 1  # the device a run uses, said once


def test_tokenizations_are_not_mixed(tmp_path, data_file, pair_llama, full_i2i, capsys):
    """i2b reads its answer ids from the i2i records, and data_prep joins both sides: each refuses records scored with
    the other --tokenization. A slice of the data is analysed from its shards themselves (the merge tiles whole files)."""
    from aligntds.cli.data_prep import main as data_prep

    ref, chat = tmp_path / "ref", tmp_path / "chat"
    assert i2b(data_file, tmp_path / "x", pair_llama["base"], full_i2i, "--tokenization", "reference") == 2
    one_error_line(capsys, "t-i2i.pkl: its i2i records were scored with --tokenization chat", "this i2b run has "
                   "--tokenization reference")
    assert i2i(data_file, ref, pair_llama["aligned"], "--end", "4", "--tokenization", "reference") == 0
    assert i2b(data_file, tmp_path / "x", pair_llama["base"], ref / "t-i2i.[0:4].pkl", "--end", "4") == 2
    one_error_line(capsys, "t-i2i.[0:4].pkl: its i2i records were scored with --tokenization reference",
                   "--tokenization chat")
    assert not (tmp_path / "x").exists()
    assert i2b(data_file, ref, pair_llama["base"], ref / "t-i2i.[0:4].pkl", "--end", "4", "--tokenization", "reference") == 0
    assert i2i(data_file, chat, pair_llama["aligned"], "--end", "4") == 0
    assert i2b(data_file, chat, pair_llama["base"], chat / "t-i2i.[0:4].pkl", "--end", "4") == 0
    capsys.readouterr()

    warnings = {}
    for name, i2i_file, i2b_file in (("ref", ref, ref), ("chat", chat, chat), ("mixed", ref, chat)):
        argv = ["t", str(i2i_file / "t-i2i.[0:4].pkl"), str(i2b_file / "t-i2b.[0:4].pkl"), "--out", str(tmp_path / f"{name}.pkl")]
        if name == "mixed":
            assert data_prep(argv) == 2
            one_error_line(capsys, f"{ref / 't-i2i.[0:4].pkl'} was scored with --tokenization reference",
                           f"{chat / 't-i2b.[0:4].pkl'} with --tokenization chat")
        else:
            assert data_prep(argv) == 0
            warnings[name] = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: in")]
    # the premise: tiny random models did not write these answers, so both runs warn of the context
    assert len(warnings["ref"]) == len(warnings["chat"]) == 1
    assert "try the default --tokenization chat" in warnings["ref"][0]
    assert "--tokenization" not in warnings["chat"][0]  # the run already used chat: no advice to use it
