"""The record schema (`aligntds.schema`), declared once: the README's two tables say the same, the records every mode
writes hold exactly its keys with its dtypes and shapes, and `check_records` applies its -inf rule key by key."""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest

from aligntds.cli.logit_analysis import main as logit_analysis
from aligntds.errors import UserError
from aligntds.records import check_records
from aligntds.schema import GLOSSARY, KEYS, META_KEYS, RECORD_KEYS, keys_of, meta_keys_of
from aligntds.store import load_records
from helpers import REPO

TYPE = re.compile(r"(int32|float32|bool|int|str|dict|any)( \[[^\]]+\])?")


def readme_table(header: str) -> list[list[str]]:
    """The rows (cells) of the README table whose header row starts with `header`, in the Record schema section."""
    section = (REPO / "README.md").read_text().split("## Record schema", 1)[1].split("\n## ", 1)[0]
    lines = section.split(header, 1)[1].splitlines()[2:]  # past the header and the --- row
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


def modes(cell: str) -> frozenset:
    return frozenset(m.strip() for m in cell.split(","))


def test_the_readme_record_table_is_the_schema():
    seen = {}
    for keys, types, mode_cell, _ in readme_table("| key | type | modes |"):
        names = re.findall(r"`([^`]+)`", keys)
        found = [(t, s.strip()) for t, s in TYPE.findall(types)]
        assert len(found) in (1, len(names)), (keys, types)
        for name, (dtype, shape) in zip(names, found * len(names) if len(found) == 1 else found):
            seen[name] = (dtype, shape, modes(mode_cell))
    assert seen == {k.name: (k.dtype, k.shape, k.modes) for k in RECORD_KEYS}


def test_the_readme_meta_table_is_the_schema():
    rows = readme_table("| meta key | modes |")
    assert {re.findall(r"`([^`]+)`", key)[0]: modes(cell) for key, cell, _ in rows} == {k.name: k.modes for k in META_KEYS}
    assert [re.findall(r"`([^`]+)`", r[0])[0] for r in rows] == [k.name for k in META_KEYS]


def test_the_glossary_names_keys_of_the_schema():
    assert set(GLOSSARY) <= set(KEYS) and "probe_text" in GLOSSARY


@pytest.fixture(scope="module")
def written(report, pair_llama):
    """The records of each mode, as logit_analysis wrote them (i2i and i2b: the report's; pair: a run on its data)."""
    root = report["root"]
    models = ["--aligned_model", str(pair_llama["aligned"]), "--base_model", str(pair_llama["base"])]
    assert logit_analysis(["--data_file", str(root / "data.json"), "--logits_folder", str(root / "schema_pair"), "--pair", "r",
                           "--mode", "pair", *models, "--enable_template"]) == 0
    return {"i2i": report["i2i"], "i2b": report["i2b"], "pair": load_records(root / "schema_pair" / "r-pair.[0:4].pkl")}


@pytest.mark.parametrize("mode", ["i2i", "i2b", "pair"])
def test_written_records_hold_exactly_the_schema(written, mode):
    records = written[mode]
    check_records(records, mode, mode)
    for rec in records:
        assert list(rec) == [k.name for k in keys_of(mode)]  # every key, optional ones included, in schema order
        t, k = len(rec["response_ids"]), rec["meta"]["top_k"]
        for key in keys_of(mode):
            value = rec[key.name]
            if key.is_array:
                assert value.dtype == np.dtype(key.dtype), key.name
                if key.positions:
                    assert value.shape == ((t, k) if key.shape == "[T, k]" else (t,)), key.name
            else:
                assert {"int": int, "str": str, "dict": dict}.get(key.dtype, object) in type(value).__mro__, key.name
        assert list(rec["meta"]) == list(meta_keys_of(mode))


def test_minus_infinity_only_where_the_schema_allows_it(written):
    rec = written["pair"][1]
    floats = [k for k in keys_of("pair") if k.is_array and k.dtype == "float32"]
    assert {k.name for k in floats if k.neg_inf} == {"topk_logprobs", "token_logprob", "aligned_logprob", "base_topk_logprobs",
                                                     "base_token_logprob"}
    for key in floats:
        bad = copy.deepcopy(rec)
        bad[key.name][(0, -1) if bad[key.name].ndim == 2 else 0] = -np.inf
        if key.neg_inf:
            check_records([bad], "p.pkl", "pair")
        else:
            with pytest.raises(UserError, match=f"p.pkl: record 0 \\(id=1\\): {key.name} holds -inf at answer position 0"):
                check_records([bad], "p.pkl", "pair")
    missing = {k: v for k, v in rec.items() if k != "js"}
    with pytest.raises(UserError, match="p.pkl: record 0 has no js: not pair records of this tool"):
        check_records([missing], "p.pkl", "pair")
    older = {k: v for k, v in rec.items() if k != "aligned_only"}  # optional: files written before it lack it
    check_records([older], "p.pkl", "pair")


def test_ranks_are_0_based_or_minus_1(written):
    rec = written["pair"][1]
    ranks = [k.name for k in keys_of("pair") if k.name.endswith("rank")]
    assert sorted(ranks) == ["aligned_rank", "base_token_rank", "token_rank"]
    for name in ranks:
        edited = copy.deepcopy(rec)
        edited[name][1] = -1  # a token the model does not have
        check_records([edited], "p.pkl", "pair")
        edited[name][1] = -5
        with pytest.raises(UserError, match=f"p.pkl: record 0 \\(id=1\\): {name} holds -5 at answer position 1: a rank is "
                                            "0-based, or -1"):
            check_records([edited], "p.pkl", "pair")
