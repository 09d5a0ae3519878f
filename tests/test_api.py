"""The Python API (`aligntds.score`, `aligntds.prepare`, `Prepared`) on the tiny pair: the records are the script's,
`positions()` has one row per answer position whose values are the records' and whose class counts are the summary's
(per slice too), `examples()` adds up, `summary()` is data_prep's summary.json, and the Parquet tables read back equal,
with the run's provenance in their metadata (pandas and pyarrow; polars and DuckDB when installed)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import aligntds
from aligntds.cli.data_prep import main as data_prep
from aligntds.errors import UserError
from aligntds.frames import read_metadata
from aligntds.metrics import ALIGNED_ONLY
from aligntds.store import load_records
from helpers import assert_same_records, run_i2i_i2b

CATEGORIES = ["geo", "food", "geo", None, "geo", "geo", "safety"]  # one per example of helpers.EXAMPLES; None: no label


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, data_file):
    """The test data with a `category` field (one example without it)."""
    rows = json.loads(data_file.read_text())
    for row, category in zip(rows, CATEGORIES):
        if category is not None:
            row["category"] = category
    path = tmp_path_factory.mktemp("labelled") / "data.json"
    path.write_text(json.dumps(rows))
    return path


@pytest.fixture(scope="module")
def scripts(tmp_path_factory, labelled, pair_llama):
    """i2i and i2b by the scripts, merged, and data_prep's outputs with --slice_by category and --parquet."""
    root = tmp_path_factory.mktemp("scripts")
    i2i, i2b = run_i2i_i2b(root, pair_llama, labelled)
    out = root / "prep" / "t.pkl"
    assert data_prep(["t", str(root / "out/t-i2i.pkl"), str(root / "out/t-i2b.pkl"), "--out", str(out), "--slice_by",
                      "category", "--parquet", str(root / "tables")]) == 0
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    return {"i2i": i2i, "i2b": i2b, "summary": summary, "tables": root / "tables"}


@pytest.fixture(scope="module")
def api(labelled, pair_llama):
    i2i = aligntds.score(labelled, aligned=str(pair_llama["aligned"]), mode="i2i")
    i2b = aligntds.score(labelled, base=str(pair_llama["base"]), mode="i2b", i2i=i2i, enable_template=True)
    return {"i2i": i2i, "i2b": i2b, "prepared": aligntds.prepare(i2i, i2b, slice_by=["category"], pair="t")}


def test_score_returns_the_records_the_script_writes(api, scripts):
    assert_same_records(api["i2i"], scripts["i2i"])  # meta included: data_file, versions, ...
    assert_same_records(api["i2b"], scripts["i2b"])
    for a, b in zip(api["i2i"], scripts["i2i"]):  # the same code path: bit for bit
        for key, value in a.items():
            if isinstance(value, np.ndarray):
                assert value.dtype == b[key].dtype and np.array_equal(value, b[key]), key


def test_score_takes_rows_in_memory_and_a_path_to_the_i2i_records(api, labelled, pair_llama, tmp_path):
    rows = json.loads(labelled.read_text())
    records = aligntds.score(rows, aligned=str(pair_llama["aligned"]), mode="i2i", start=2, end=5)
    assert [r["index"] for r in records] == [2, 3, 4] and records[0]["meta"]["data_file"] is None
    for mine, theirs in zip(records, api["i2i"][2:5]):
        assert np.array_equal(mine["topk_logprobs"], theirs["topk_logprobs"])
    from aligntds.store import save_records

    save_records(tmp_path / "i2i.pkl", api["i2i"])
    i2b = aligntds.score(labelled, base=str(pair_llama["base"]), mode="i2b", i2i=tmp_path / "i2i.pkl", enable_template=True)
    assert_same_records(i2b, api["i2b"])
    assert aligntds.score(rows, aligned=str(pair_llama["aligned"]), mode="i2i", start=50, end=60) == []
    assert aligntds.score(rows, aligned=str(pair_llama["aligned"]), mode="i2i", start=50) == []  # no --end: the same
    with pytest.raises(UserError, match="needs aligned="):
        aligntds.score(rows, mode="i2i")
    with pytest.raises(UserError, match=r"data: example 1 \(id=1\) has no field 'output'"):
        aligntds.score([rows[0], {"id": 1, "input": "x"}], aligned=str(pair_llama["aligned"]))
    with pytest.raises(TypeError, match="unknown options temperature"):
        aligntds.score(rows, aligned=str(pair_llama["aligned"]), temperature=1.0)


def test_score_takes_a_dataframe_and_columns_as_a_dict(api, labelled, pair_llama):
    renamed = pd.DataFrame(json.loads(labelled.read_text())).rename(columns={"input": "prompt", "output": "answers"})
    records = aligntds.score(renamed, aligned=str(pair_llama["aligned"]), mode="i2i", end=3,
                             columns={"prompt": "input", "answers": "output"})
    assert [r["id"] for r in records] == [r["id"] for r in api["i2i"][:3]] and records[0]["meta"]["data_file"] is None
    for mine, theirs in zip(records, api["i2i"][:3]):
        assert np.array_equal(mine["response_ids"], theirs["response_ids"])
        assert np.array_equal(mine["topk_logprobs"], theirs["topk_logprobs"])
    with pytest.raises(UserError, match=r"'input;answers=output' \(in 'prompt=input;answers=output'\) is not a field name"):
        aligntds.score(renamed, aligned=str(pair_llama["aligned"]), columns="prompt=input;answers=output")


def test_a_dataframe_read_from_parquet_is_read_as_the_file(api, labelled, pair_llama, tmp_path):
    """pandas gives list cells as numpy arrays and a missing value as NaN: the rows must still be the file's (lists,
    None), not their text ("['ans']" scored as the answer) or NaN (a slice label 'NaN')."""
    rows = json.loads(labelled.read_text())
    rows[0]["output_ids"] = [int(i) for i in api["i2i"][0]["response_ids"]]  # one example with ids, the others without
    pd.DataFrame(rows).to_parquet(tmp_path / "rows.parquet")
    frame = pd.read_parquet(tmp_path / "rows.parquet")
    assert isinstance(frame["output"][0], np.ndarray) and frame["category"].isna().sum() == 1  # the premise
    records = aligntds.score(frame, aligned=str(pair_llama["aligned"]), mode="i2i", end=3)
    for mine, theirs in zip(records, api["i2i"][:3]):
        assert np.array_equal(mine["response_ids"], theirs["response_ids"])
        assert mine["final_generated_text"] == theirs["final_generated_text"]
    by_frame = aligntds.prepare(api["i2i"], api["i2b"], slice_by=["category"], data=frame).positions()
    pd.testing.assert_series_equal(by_frame["category"], api["prepared"].positions()["category"])
    assert "null" in set(by_frame["category"]) and "NaN" not in set(by_frame["category"])


def test_score_errors_name_the_arguments(api, labelled, pair_llama):
    with pytest.raises(UserError, match=r"score\(mode='i2b'\) needs i2i="):
        aligntds.score(labelled, base=str(pair_llama["base"]), mode="i2b")
    with pytest.raises(UserError) as error:  # i2b records given as i2i: named as the argument, not a temporary file
        aligntds.score(labelled, base=str(pair_llama["base"]), mode="i2b", i2i=api["i2b"])
    assert str(error.value).startswith("i2i= (the records given): holds i2b records, expected i2i")


def test_positions_one_row_per_position_with_the_records_values(api):
    prepared, i2i, i2b = api["prepared"], api["i2i"], api["i2b"]
    pos = prepared.positions()
    lengths = [len(r["response_ids"]) for r in i2i]
    assert len(pos) == sum(lengths) and len(pos) > 0
    assert pos["id"].tolist() == [r["id"] for r, n in zip(i2i, lengths) for _ in range(n)]
    assert pos["t"].tolist() == [t for n in lengths for t in range(n)]
    cat = lambda key, records, f=lambda a: a: np.concatenate([f(r[key]) for r in records])  # noqa: E731
    assert np.array_equal(pos["token_id"], cat("response_ids", i2i))
    assert np.array_equal(pos["aligned_top1"], cat("topk_ids", i2i, lambda a: a[:, 0]))
    assert np.array_equal(pos["aligned_top1_logprob"], cat("topk_logprobs", i2i, lambda a: a[:, 0]))
    assert np.array_equal(pos["aligned_rank"].to_numpy(), cat("aligned_rank", i2b))  # every rank known here
    assert np.array_equal(pos["base_logprob"], cat("aligned_logprob", i2b))
    np.testing.assert_allclose(pos["base_prob"], np.exp(cat("aligned_logprob", i2b)), rtol=1e-6)
    assert np.array_equal(pos["aligned_entropy"], cat("entropy", i2i))
    assert np.array_equal(pos["base_entropy"], cat("entropy", i2b))
    assert np.array_equal(pos["greedy_mismatch"], cat("token_rank", i2i) > 0)
    rank = cat("aligned_rank", i2b)
    expected = np.where(rank == 0, "unshifted", np.where(rank <= 2, "marginal", "shifted"))
    assert pos["class"].astype(str).tolist() == expected.tolist()
    assert np.array_equal(pos["kl"], pos["kl@10"])  # i2i + i2b: the KL is the reference's KL@10
    assert pos["token"].tolist() == [prepared.data["tokens"][i] for i in pos["token_id"]]
    assert "".join(pos["span"][pos["index"] == 0]) == i2i[0]["final_generated_text"]
    assert pos["category"].tolist() == [str(c).replace("None", "null") for c, n in zip(CATEGORIES, lengths) for _ in range(n)]
    assert pos["class"].dtype == "category" and list(pos["class"].cat.categories) == ["unshifted", "marginal", "shifted"]


def test_class_counts_and_examples_add_up_to_the_summary(api, scripts):
    prepared = api["prepared"]
    summary = prepared.summary()
    assert summary == {**scripts["summary"], "pair": "t"}  # data_prep's summary.json (its pair named "t" too)
    pos, exs = prepared.positions(), prepared.examples()
    counts = pos["class"].value_counts()
    for name in ("unshifted", "marginal", "shifted"):
        assert counts[name] == summary[name] == exs[name].sum()
    by_label = pos.groupby("category")["class"].value_counts().unstack()
    for label, block in summary["slices"]["category"].items():
        assert {name: int(by_label.loc[label, name]) for name in ("unshifted", "marginal", "shifted")} == \
            {name: block[name] for name in ("unshifted", "marginal", "shifted")}, label
        assert (exs["category"] == label).sum() == block["examples"]
    assert len(exs) == summary["examples"] and exs["positions"].sum() == summary["positions"]
    for ex, row in zip(prepared.data["examples"], exs.itertuples()):
        assert row.id == ex["id"] and row.max_kl == pytest.approx(ex["max_kl"], nan_ok=True)
        assert (row.first_shifted if row.first_shifted is not pd.NA else None) == ex["first_shifted"]
        assert row.shifted_share == pytest.approx(ex["shifted_share"], nan_ok=True)
    empty = exs[exs["positions"] == 0]
    assert len(empty) == 1 and empty["shifted_share"].isna().all() and empty["first_shifted"].isna().all()


def test_aligned_only_positions_have_no_class(api):
    """Positions data_prep never classes (cls ALIGNED_ONLY, from the records' `aligned_only`) show no class, count in
    none of the summary's classes, and are flagged."""
    from aligntds.frames import Prepared

    data = {**api["prepared"].data, "examples": [dict(ex) for ex in api["prepared"].data["examples"]]}
    ex = data["examples"][0]
    ex["cls"] = ex["cls"].copy()
    ex["cls"][3:6] = ALIGNED_ONLY
    prepared = Prepared(data)
    pos = prepared.positions()
    first = pos[pos["index"] == 0]
    assert first["aligned_only"].tolist()[3:6] == [True] * 3 and first["class"].iloc[3:6].isna().all()
    assert pos["aligned_only"].sum() == 3 == prepared.summary()["aligned_only"]
    counts = pos["class"].value_counts()
    assert all(counts[name] == prepared.summary()[name] for name in ("unshifted", "marginal", "shifted"))
    assert prepared.examples()["aligned_only"].tolist()[0] == 3


def test_pair_records_give_the_exact_kl(tmp_path, labelled, pair_llama):
    records = aligntds.score(labelled, aligned=str(pair_llama["aligned"]), base=str(pair_llama["base"]), mode="pair",
                             enable_template=True)
    prepared = aligntds.prepare(records)
    pos = prepared.positions()
    kl = np.concatenate([r["kl_base_aligned"] for r in records])
    assert np.array_equal(pos["kl"], kl) and np.array_equal(pos["kl_base_aligned"], kl)
    assert np.array_equal(pos["js"], np.concatenate([r["js"] for r in records]))
    assert prepared.summary()["kl"] == "exact"
    alone = r"i2i=\[records\] holds --mode pair records \(both models\): give it alone, without i2b=\[records\]"
    with pytest.raises(UserError, match=alone):
        aligntds.prepare(records, records)
    i2i = aligntds.score(labelled, aligned=str(pair_llama["aligned"]), mode="i2i", end=2)
    with pytest.raises(UserError, match=r"i2b=\[records\] holds --mode pair records \(both models\): give it alone"):
        aligntds.prepare(i2i, records[:2])


def test_parquet_round_trips_with_the_provenance(api, scripts, tmp_path):
    prepared = api["prepared"]
    positions, examples = prepared.to_parquet(tmp_path / "tables")
    pd.testing.assert_frame_equal(pd.read_parquet(positions), prepared.positions())
    pd.testing.assert_frame_equal(pd.read_parquet(examples), prepared.examples())
    table = pq.read_table(positions)
    assert table.num_rows == len(prepared.positions()) and table.column_names == list(prepared.positions().columns)
    meta = read_metadata(positions)
    summary = prepared.summary()
    assert meta["provenance"] == summary["provenance"] and meta["models"] == summary["models"]
    assert meta["provenance"]["base"]["template"].startswith("# Query:") and meta["provenance"]["aligned"]["dtype"] == "float32"
    assert meta["written_by"]["version"] == aligntds.__version__ and meta["top_k"] == 30
    assert read_metadata(examples) == meta
    # data_prep --parquet wrote the same tables (its pair is named "t" too)
    for name in ("positions.parquet", "examples.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(scripts["tables"] / name), pd.read_parquet(tmp_path / "tables" / name))
    assert read_metadata(scripts["tables"] / "positions.parquet")["provenance"] == meta["provenance"]
    shifted = int((prepared.positions()["class"] == "shifted").sum())
    # polars and DuckDB read them as any Parquet file (test tools, not dependencies: requirements-dev.txt)
    import duckdb
    import polars as pl

    frame = pl.read_parquet(positions)
    assert frame.height == table.num_rows and frame.filter(pl.col("class") == "shifted").height == shifted
    assert frame["aligned_rank"].to_list() == prepared.positions()["aligned_rank"].tolist()
    query = f"select count(*), sum(\"kl@10\") from read_parquet('{positions}') where class = 'shifted'"
    (count, kl_sum), = duckdb.sql(query).fetchall()
    assert count == shifted
    assert kl_sum == pytest.approx(prepared.positions().query("`class` == 'shifted'")["kl@10"].sum(), rel=1e-5)
    # the summary is a copy: editing it changes neither the next call nor the provenance written later
    edited = prepared.summary()
    edited["provenance"]["aligned"]["model"], edited["top_k"] = "edited", 999
    prepared.to_parquet(tmp_path / "again")
    assert read_metadata(tmp_path / "again" / "positions.parquet") == meta and prepared.summary() == summary


def test_mixed_ids_are_written_as_strings(api, tmp_path):
    from aligntds.frames import Prepared

    data = {**api["prepared"].data, "examples": [dict(ex) for ex in api["prepared"].data["examples"]]}
    data["examples"][1]["id"] = "b"
    positions, _ = Prepared(data).to_parquet(tmp_path)
    ids = pd.read_parquet(positions)["id"]
    assert ids.map(type).eq(str).all() and "b" in set(ids) and "0" in set(ids)


def test_records_from_files_and_a_bad_slice_request(scripts, tmp_path):
    out = tmp_path / "t.pkl"
    assert data_prep(["t", str(scripts["tables"].parent / "out/t-i2i.pkl"), str(scripts["tables"].parent / "out/t-i2b.pkl"),
                      "--out", str(out)]) == 0
    from_files = aligntds.prepare(scripts["tables"].parent / "out/t-i2i.pkl", scripts["tables"].parent / "out/t-i2b.pkl")
    assert len(from_files.positions()) == sum(len(r["response_ids"]) for r in load_records(out)[0]["examples"])
    rows_only = [{**r, "meta": {**r["meta"], "data_file": None}} for r in scripts["i2i"]]
    with pytest.raises(UserError, match="give --data_file|data="):
        aligntds.prepare(rows_only, scripts["i2b"], slice_by=["category"])
    with pytest.raises(UserError, match="must be a list of fields"):
        aligntds.prepare(scripts["i2i"], scripts["i2b"], slice_by="category")
