"""Data sources (`aligntds.sources`): a Parquet file, a folder written by `datasets`' save_to_disk, and a folder laid
out as a hub dataset (read by the very `datasets.load_dataset(name, split=, revision=)` call a hub name takes) give the
examples, and the records, of the JSON file; just-eval-instruct's column names map without flags; a bad `--columns` is
one line; every source's rows get the JSON file's checks; data_prep reads slice labels from the source the records
name. (The hub itself cannot be reached here.)"""

from __future__ import annotations

import json
import sys

import datasets  # the extra aligntds[datasets]: requirements-dev.txt installs it
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aligntds.cli.data_prep import main as data_prep
from aligntds.cli.generate_outputs import main as generate
from aligntds.cli.logit_analysis import main as logit_analysis
from aligntds.data import load_examples
from aligntds.errors import UserError
from aligntds.generate import load_instructions
from aligntds.sources import is_hub_name, read_items
from aligntds.store import load_records
from aligntds.tiny import save_pair_member, tiny_model, train_tokenizer
from helpers import CORPUS, LLAMA2_TEMPLATE, one_error_line

# just-eval-instruct's columns on the hub (re-align/just-eval-instruct): `instruction` is the query.
JUST_EVAL = [
    {"id": 0, "instruction": "What is the capital of France?", "output": "N/A", "category": "geo", "dataset": "alpaca_eval",
     "source_id": "alpaca_eval-1"},
    {"id": 1, "instruction": "How do I bake bread?", "output": "N/A", "category": "food", "dataset": "lima",
     "source_id": "lima-7"},
    {"id": 2, "instruction": "Tell me about cats.", "output": "N/A", "category": "animals", "dataset": "mt",
     "source_id": "mt-3"},
]


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    """datasets' cache of this test under its tmp_path, offline."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)


def write_sources(rows: list[dict], root) -> dict:
    """The rows as a Parquet file, a save_to_disk Dataset, a save_to_disk DatasetDict (splits test, train) and a folder laid
    out as a hub dataset repository (data/test-00000-of-00001.parquet, data/train-...)."""
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, root / "data.parquet")
    ds = datasets.Dataset.from_list(rows)
    ds.save_to_disk(str(root / "saved"))
    datasets.DatasetDict({"test": ds, "train": ds.select(range(1))}).save_to_disk(str(root / "saved_dict"))
    (root / "hub" / "data").mkdir(parents=True)
    pq.write_table(table, root / "hub/data/test-00000-of-00001.parquet")
    pq.write_table(table.slice(0, 1), root / "hub/data/train-00000-of-00001.parquet")
    return {"parquet": (root / "data.parquet", []), "saved": (root / "saved", []),
            "saved_dict": (root / "saved_dict", ["--data_split", "test"]), "hub": (root / "hub", ["--data_split", "test"])}


@pytest.fixture(scope="module")
def json_run(tmp_path_factory, data_file, pair_llama):
    """i2i of the JSON data file: the records every other source must give."""
    out = tmp_path_factory.mktemp("json")
    assert logit_analysis(["--data_file", str(data_file), "--logits_folder", str(out), "--pair", "t", "--mode", "i2i",
                           "--aligned_model", str(pair_llama["aligned"])]) == 0
    return load_records(out / "t-i2i.[0:7].pkl")


@pytest.mark.parametrize("kind", ["parquet", "saved", "saved_dict", "hub"])
def test_a_table_gives_the_examples_and_records_of_the_json_file(kind, tmp_path, data_file, pair_llama, json_run):
    rows = json.loads(data_file.read_text())
    source, flags = write_sources(rows, tmp_path)[kind]
    split = flags[1] if flags else None
    assert load_examples(source, fields=("input", "pure_input"), split=split) == rows
    assert logit_analysis(["--data_file", str(source), *flags, "--logits_folder", str(tmp_path / "out"), "--pair", "t",
                           "--mode", "i2i", "--aligned_model", str(pair_llama["aligned"])]) == 0
    records = load_records(tmp_path / "out/t-i2i.[0:7].pkl")
    for mine, theirs in zip(records, json_run, strict=True):
        assert mine.keys() == theirs.keys()
        for key in mine:
            if key == "meta":
                continue
            same = np.array_equal(mine[key], theirs[key]) if isinstance(mine[key], np.ndarray) else mine[key] == theirs[key]
            assert same, key
    meta, json_meta = records[0]["meta"], json_run[0]["meta"]
    assert meta["data"] == json_meta["data"]  # the content fingerprint: the same examples
    assert (meta["data_file"], meta["data_split"], meta["data_columns"]) == (str(source), split, None)
    assert {k: v for k, v in meta.items() if not k.startswith("data")} == {k: v for k, v in json_meta.items()
                                                                          if not k.startswith("data")}


def test_just_eval_columns_map_without_flags(tmp_path, capsys):
    sources = write_sources(JUST_EVAL, tmp_path)
    for source, flags in sources.values():
        split = flags[1] if flags else None
        items = load_examples(source, fields=("pure_input",), split=split)
        assert [x["pure_input"] for x in items] == [r["instruction"] for r in JUST_EVAL]
        assert "instruction" not in items[0] and items[0]["category"] == "geo" and items[0]["source_id"] == "alpaca_eval-1"
        assert load_instructions(source, split)[1]["pure_input"] == "How do I bake bread?"
    # --columns renames as asked; the other columns are kept
    items = read_items(tmp_path / "data.parquet", columns="instruction=pure_input,category=topic")
    assert items[0]["topic"] == "geo" and "category" not in items[0] and items[0]["pure_input"].startswith("What")
    # a JSON file is read as it is (generate_outputs takes `instruction` there itself)
    (tmp_path / "je.json").write_text(json.dumps(JUST_EVAL))
    assert read_items(tmp_path / "je.json") == JUST_EVAL


def test_generate_outputs_reads_a_saved_dataset(tmp_path):
    tok = train_tokenizer(CORPUS, vocab_size=400, chat_template=LLAMA2_TEMPLATE)
    model = save_pair_member(tmp_path / "chat", tiny_model("llama", len(tok), seed=0), tok)
    write_sources(JUST_EVAL, tmp_path)
    (tmp_path / "q.json").write_text(json.dumps([{"id": r["id"], "pure_input": r["instruction"]} for r in JUST_EVAL]))
    common = ["--model", str(model), "--max_new_tokens", "5", "--device", "cpu"]
    assert generate(["--data_file", str(tmp_path / "saved"), "--output_file", str(tmp_path / "a.json"), *common]) == 0
    assert generate(["--data_file", str(tmp_path / "q.json"), "--output_file", str(tmp_path / "b.json"), *common]) == 0
    a, b = (json.loads((tmp_path / f"{x}.json").read_text()) for x in "ab")
    assert [(x["id"], x["pure_input"], x["output"], x["output_ids"]) for x in a] == \
        [(x["id"], x["pure_input"], x["output"], x["output_ids"]) for x in b]
    assert a[0]["category"] == "geo"  # the dataset's other columns are kept, as a JSON file's fields are


@pytest.mark.parametrize("columns, fragments", [
    ("instruction", ["--columns: 'instruction' is not SOURCE=FIELD"]),
    ("question=pure_input", ["data.json: --columns names the column 'question', which it does not have (its columns: id, "
                             "pure_input, input, output, reference)"]),
    ("reference=pure_input", ["--columns maps 'reference' onto 'pure_input', which is also a column of it"]),
    ("reference=pure_input,input=pure_input", ["--columns: columns 'reference' and 'input' both map onto the field "
                                               "'pure_input'"]),
    ("input=x,input=y", ["--columns: column 'input' is mapped twice"]),
    ("input=prompt;output=answer", ["--columns: 'prompt;output=answer' (in 'input=prompt;output=answer') is not a field name",
                                    "separate mappings with commas"]),
])
def test_a_bad_column_mapping_is_one_line(columns, fragments, tmp_path, data_file, capsys):
    assert logit_analysis(["--data_file", str(data_file), "--columns", columns, "--logits_folder", str(tmp_path), "--mode",
                           "i2i", "--aligned_model", "unused"]) == 2
    one_error_line(capsys, *fragments)


def test_every_source_gets_the_checks_of_a_json_file(tmp_path, data_file, capsys):
    rows = json.loads(data_file.read_text())

    def refused(source_rows, *fragments, **kw):
        pq.write_table(pa.Table.from_pylist(source_rows), tmp_path / "x.parquet")
        with pytest.raises(UserError) as e:
            load_examples(tmp_path / "x.parquet", fields=("input",), **kw)
        for f in fragments:
            assert f in str(e.value), str(e.value)

    refused([{**r, "id": float(i)} if i != 3 else {**r, "id": float("nan")} for i, r in enumerate(rows)],
            "x.parquet: example 3: field 'id' is nan, not a finite number")
    refused([{**r, "output_ids": [5, -1] if i == 1 else [5]} for i, r in enumerate(rows)],
            "x.parquet: example 1 (id=1): field 'output_ids' must be a list of token ids")
    refused([{k: v for k, v in r.items() if k != "input"} for r in rows], "x.parquet: example 0 (id=0) has no field 'input'")
    with pytest.raises(UserError, match=r"data: example 2 \(id=2\): field 'pure_input' holds a lone surrogate"):
        load_examples([*rows[:2], {**rows[2], "pure_input": "half \ud83d emoji"}])
    sources = write_sources(rows, tmp_path)
    with pytest.raises(UserError, match="saved_dict: holds the splits test, train: choose one with --data_split"):
        load_examples(sources["saved_dict"][0])
    with pytest.raises(UserError, match=r"saved_dict: has no split 'dev' \(its splits: test, train\)"):
        load_examples(sources["saved_dict"][0], split="dev")
    with pytest.raises(UserError, match="data.parquet: a Parquet file has no splits"):
        load_examples(sources["parquet"][0], split="test")
    with pytest.raises(UserError, match="hub: datasets.load_dataset failed"):
        load_examples(sources["hub"][0], split="dev")
    with pytest.raises(UserError, match="nothing.parquet: data file not found"):
        load_examples(tmp_path / "nothing.parquet")
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(UserError, match="bad.parquet: not a readable Parquet file"):
        load_examples(tmp_path / "bad.parquet")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("a line\n")  # load_dataset would read it as a table of lines
    with pytest.raises(UserError, match=r"notes: a folder that is no dataset: neither save_to_disk's \(state.json, "
                                        r"dataset_dict.json\) nor data files \(.json, .jsonl, .parquet"):
        load_examples(tmp_path / "notes")


def test_without_the_datasets_extra_a_folder_is_one_line(tmp_path, monkeypatch, data_file):
    write_sources(json.loads(data_file.read_text()), tmp_path)
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` fails, as when the extra is not installed
    with pytest.raises(UserError, match=r"saved: reading a datasets folder or a hub dataset needs Hugging Face datasets: "
                                        r"pip install 'aligntds\[datasets\]'"):
        read_items(tmp_path / "saved")
    assert read_items(tmp_path / "data.parquet")[0]["pure_input"]  # Parquet needs only pyarrow


def test_hub_names():
    assert is_hub_name("re-align/just-eval-instruct") and is_hub_name("org/name.v2")
    assert not is_hub_name("data/x.json") and not is_hub_name("x.parquet") and not is_hub_name("a/b/c")


def test_data_prep_reads_slices_from_the_source_the_records_name(tmp_path, data_file, pair_llama):
    rows = [{**r, "category": c} for r, c in zip(json.loads(data_file.read_text()), "aabbccd")]
    hub = write_sources(rows, tmp_path)["hub"][0]
    common = ["--data_file", str(hub), "--data_split", "test", "--pair", "t"]
    assert logit_analysis([*common, "--mode", "i2i", "--aligned_model", str(pair_llama["aligned"]), "--logits_folder",
                           str(tmp_path / "a")]) == 0
    assert logit_analysis([*common, "--mode", "i2b", "--base_model", str(pair_llama["base"]), "--i2i_pkl_file",
                           str(tmp_path / "a/t-i2i.[0:7].pkl"), "--logits_folder", str(tmp_path / "b")]) == 0
    out = tmp_path / "prep.pkl"
    assert data_prep(["t", str(tmp_path / "a/t-i2i.[0:7].pkl"), str(tmp_path / "b/t-i2b.[0:7].pkl"), "--out", str(out),
                      "--slice_by", "category"]) == 0
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    assert {k: v["examples"] for k, v in summary["slices"]["category"].items()} == {"a": 2, "b": 2, "c": 2, "d": 1}
    # --data_file with its own split: the same labels from the Parquet file
    assert data_prep(["t", str(tmp_path / "a/t-i2i.[0:7].pkl"), str(tmp_path / "b/t-i2b.[0:7].pkl"), "--out", str(out),
                      "--slice_by", "category", "--data_file", str(tmp_path / "data.parquet")]) == 0
    assert json.loads(out.with_suffix(".summary.json").read_text())["slices"] == summary["slices"]


def test_a_dataset_in_memory_is_read_as_its_file(data_file):
    rows = json.loads(data_file.read_text())
    ds = datasets.Dataset.from_list(rows)
    assert load_examples(ds, fields=("input", "pure_input")) == rows
    both = datasets.DatasetDict({"test": ds, "train": ds.select(range(2))})
    assert load_examples(both, split="train") == rows[:2]
    with pytest.raises(UserError, match="data: holds the splits test, train: choose one with --data_split"):
        load_examples(both)
    with pytest.raises(UserError, match=r"data: example 0 \(id=0\) has no field 'input'"):
        load_examples(ds.remove_columns("input"), fields=("input",))
