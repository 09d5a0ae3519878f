"""Slices, entropy and forking tokens, top examples and spikes, checkpoint chains: on records whose answer is known.

Planted models: a tiny random Llama whose residual stream gets one private coordinate per context token
(`private_coordinates`: only that token's embedding writes it, no layer writes or reads it into the
logits), so adding weight on that coordinate to one output row (`plant`) makes that token the top-1
exactly at the positions whose input token is the context token, and changes nothing elsewhere. At those
positions the shared coordinate dominates the final RMSNorm, so both models' distributions are nearly
flat there: high entropy, and the planted token sits at a random base rank (shifted). The i2i prompt
is the bare query, as the i2b prompt is (no template), so every other position is identical in both models.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from aligntds.cli.compare_pairs import main as compare_pairs
from aligntds.cli.data_prep import main as data_prep
from aligntds.cli.generate_html import main as generate_html
from aligntds.cli.logit_analysis import main as logit_analysis
from aligntds.cli.merge_logits import main as merge_logits
from aligntds.compare import same_model
from aligntds.data_prep import load_prepared
from aligntds.metrics import SHIFTED, shift_class
from aligntds.prompts import ChatEncoder
from aligntds.store import load_records, save_records
from aligntds.summary import Positions, block, format_summary, summarize
from aligntds.tiny import save_pair_member, tiny_model
from aligntds.tokentext import token_strings
from helpers import REPO, one_error_line, reference_pickle

CONTEXTS = (" the", " is", " of")  # planted after these tokens, one per chain stage
TARGETS = ("Su", " help", " this")  # the tokens planted there
PLANTED_EXAMPLES = [  # (query, answer, category; None: the example has no category)
    ("Where is Paris?", "Paris is the capital of France. I hope this helps!</s>", "towns"),
    ("What is water?", "Water is the thing that boils at one hundred degrees at sea level.</s>", "science"),
    ("Tell me about cats.", "The cat sat on the mat and looked at the garden.</s>", "animals"),
    ("How do I bake bread?", "To bake bread, mix flour, water, salt and yeast. The rest of it is waiting.</s>", "how-tos"),
    ("Is Rome in Italy?", "Yes. Rome is the capital of Italy.</s>", "towns"),
    ("Say hi.", "Hi.", None),
]


def single_id(tok, text: str) -> int:
    ids = ChatEncoder(tok).answer_ids("", text)
    assert len(ids) == 1, (text, ids)
    return ids[0]


def private_coordinates(model, contexts: list[int], scale: float = 100.0) -> None:
    """Coordinate H-1-i of the residual stream: `scale` where the input token is contexts[i], 0 elsewhere
    (no other embedding, attention or MLP writes it; no output row reads it)."""
    h = model.config.hidden_size
    with torch.no_grad():
        for i, c in enumerate(contexts):
            j = h - 1 - i
            model.model.embed_tokens.weight[:, j] = 0
            model.model.embed_tokens.weight[c, j] = scale
            for layer in model.model.layers:
                layer.self_attn.o_proj.weight[j, :] = 0
                layer.mlp.down_proj.weight[j, :] = 0
            model.lm_head.weight[:, j] = 0


def plant(model, context_i: int, target: int, strength: float):
    """A copy of `model` whose output row `target` reads context coordinate `context_i`."""
    out = copy.deepcopy(model)
    with torch.no_grad():
        out.lm_head.weight[target, out.config.hidden_size - 1 - context_i] = strength
    return out


def write_planted_data(path: Path) -> Path:
    items = []
    for i, (q, a, cat) in enumerate(PLANTED_EXAMPLES):
        item = {"id": f"q{i}", "pure_input": q, "input": q, "output": [a]}
        if cat is not None:
            item["category"] = cat
        items.append(item)
    path.write_text(json.dumps(items, indent=1))
    return path


@pytest.fixture(scope="module")
def planted(tmp_path_factory, tok_bos):
    """The base model, three chain stages (stage k plants TARGETS[:k] after CONTEXTS[:k], strongly) and an aligned
    model with one weak plant (TARGETS[0] after CONTEXTS[0]: its distribution there stays nearly flat)."""
    root = tmp_path_factory.mktemp("planted")
    contexts = [single_id(tok_bos, c) for c in CONTEXTS]
    targets = [single_id(tok_bos, t) for t in TARGETS]
    base = tiny_model("llama", len(tok_bos), seed=1)
    private_coordinates(base, contexts)
    paths = {"base": save_pair_member(root / "base", base, tok_bos)}
    stage = base
    for k in range(3):
        stage = plant(stage, k, targets[k], 3.0)
        paths[f"s{k + 1}"] = save_pair_member(root / f"s{k + 1}", stage, tok_bos)
    paths["weak"] = save_pair_member(root / "weak", plant(base, 0, targets[0], 0.6), tok_bos)
    data = write_planted_data(root / "data.json")
    return {"root": root, "models": paths, "data": data, "contexts": contexts, "targets": targets,
            "text": token_strings(tok_bos, contexts + targets)}


def after(records, token: int) -> np.ndarray:
    """bool [N] over all answer positions: the input token there (the previous answer token, or the prompt's
    last token at position 0) is `token`."""
    out = []
    for r in records:
        inputs = np.concatenate([r["prompt_ids"][-1:], r["response_ids"][:-1]])
        out.append(inputs == token)
    return np.concatenate(out)


# -- entropy and forking tokens ------------------------------------------------------------------

@pytest.fixture(scope="module")
def weak_runs(planted):
    """i2i + i2b, and --mode pair, of the weakly planted pair; data_prep of each, sliced by category."""
    root, m, data = planted["root"] / "weak_runs", planted["models"], planted["data"]
    common = ["--data_file", str(data), "--pair", "w"]
    assert logit_analysis([*common, "--mode", "i2i", "--aligned_model", str(m["weak"]), "--logits_folder",
                           str(root / "i2i/shards")]) == 0
    assert merge_logits([str(root / "i2i"), "w", "i2i"]) == 0
    assert logit_analysis([*common, "--mode", "i2b", "--base_model", str(m["base"]), "--i2i_pkl_file",
                           str(root / "i2i/w-i2i.pkl"),
                           "--logits_folder", str(root / "i2b/shards")]) == 0
    assert merge_logits([str(root / "i2b"), "w", "i2b"]) == 0
    assert logit_analysis([*common, "--mode", "pair", "--aligned_model", str(m["weak"]), "--base_model", str(m["base"]),
                           "--logits_folder", str(root / "pair/shards")]) == 0
    assert merge_logits([str(root / "pair"), "w", "pair"]) == 0
    out = {"i2i": load_records(root / "i2i/w-i2i.pkl"), "i2b": load_records(root / "i2b/w-i2b.pkl"),
           "pair": load_records(root / "pair/w-pair.pkl")}
    assert data_prep(["w", str(root / "i2i/w-i2i.pkl"), str(root / "i2b/w-i2b.pkl"), "--out", str(root / "routed.pkl"),
                      "--slice_by", "category"]) == 0
    assert data_prep(["w", str(root / "pair/w-pair.pkl"), "--out", str(root / "paired.pkl"), "--slice_by", "category"]) == 0
    for name in ("routed", "paired"):
        out[name] = json.loads((root / f"{name}.summary.json").read_text())
        out[f"{name}_prep"] = load_prepared(root / f"{name}.pkl")
    return out


def test_shifts_sit_on_high_entropy_positions(weak_runs, planted):
    """The high-entropy split and the forking tokens, against a brute-force computation from the records."""
    i2i, i2b = weak_runs["i2i"], weak_runs["i2b"]
    entropy = np.concatenate([r["entropy"] for r in i2i]).astype(np.float64)
    cls = shift_class(np.concatenate([r["aligned_rank"] for r in i2b]))
    top1 = np.concatenate([r["topk_ids"][:, 0] for r in i2i])
    planted_at = after(i2i, planted["contexts"][0])
    # The planted structure: shifted exactly after the context token, the planted token on top there.
    np.testing.assert_array_equal(cls == SHIFTED, planted_at)
    assert planted_at.sum() >= 5 and (top1[planted_at] == planted["targets"][0]).all()

    threshold = np.quantile(entropy, 0.8)
    high = entropy >= threshold
    assert high[planted_at].all()  # every shift sits on a high-entropy position
    s = weak_runs["routed"]["entropy"]
    assert s["high_entropy"]["threshold"] == pytest.approx(threshold, abs=1e-6)
    assert s["high_entropy"]["positions"] == high.sum() and s["rest"]["positions"] == (~high).sum()
    assert s["high_entropy"]["shifted_rate"] == pytest.approx(planted_at.sum() / high.sum(), abs=1e-6)
    assert s["rest"]["shifted_rate"] == 0.0
    counts = Counter(top1[high].tolist())
    shifted = Counter(top1[high & (cls == SHIFTED)].tolist())
    text = weak_runs["routed_prep"]["tokens"]
    want = sorted(([text[t], c, round(shifted[t] / c, 4)] for t, c in counts.items()), key=lambda r: (-r[1], r[0]))
    assert sorted(s["forking_tokens"], key=lambda r: (-r[1], r[0])) == want
    assert s["forking_tokens"][0] == [planted["text"][planted["targets"][0]], int(planted_at.sum()), 1.0]
    rel = s["by_position"]["relative"]
    assert sum(r["count"] for r in rel) == len(entropy)
    base_entropy = np.concatenate([r["entropy"] for r in i2b])
    assert s["mean_base_entropy"] == pytest.approx(base_entropy.mean(), abs=1e-5)

    # The prepared data keeps both entropies per position; --mode pair gives the same analysis.
    for ex, a, b in zip(weak_runs["routed_prep"]["examples"], i2i, i2b):
        np.testing.assert_array_equal(ex["aligned_entropy"], a["entropy"])
        np.testing.assert_array_equal(ex["base_entropy"], b["entropy"])
    for ex, r in zip(weak_runs["paired_prep"]["examples"], weak_runs["pair"]):
        np.testing.assert_array_equal(ex["aligned_entropy"], r["entropy"])
        np.testing.assert_array_equal(ex["base_entropy"], r["base_entropy"])
    p = weak_runs["paired"]["entropy"]
    assert p["high_entropy"]["positions"] == s["high_entropy"]["positions"]
    assert p["high_entropy"]["shifted_rate"] == s["high_entropy"]["shifted_rate"] and p["rest"]["shifted_rate"] == 0.0
    assert p["forking_tokens"][0] == s["forking_tokens"][0]


def test_reference_pickles_have_no_entropy(tmp_path, capsys):
    i2i = reference_pickle(tmp_path / "i2i.pkl", [3, 2], lambda e, p: [7, 8, 9, 10])
    i2b = reference_pickle(tmp_path / "i2b.pkl", [3, 2], lambda e, p: [1, 2, 3, 7])
    assert data_prep(["ref", str(i2i), str(i2b), "--out", str(tmp_path / "ref.pkl")]) == 0
    text = (tmp_path / "ref.summary.json").read_text()
    assert json.loads(text)["entropy"] is None and "NaN" not in text
    old = load_prepared(tmp_path / "ref.pkl")
    for key in ("spike_threshold", "slice_fields"):  # a file of an earlier data_prep
        del old[key]
    save_records(tmp_path / "old.pkl", [old])
    assert generate_html(["ref", "--data", str(tmp_path / "old.pkl"), "--out", str(tmp_path / "h")]) == 2
    assert "older data_prep" in capsys.readouterr().err
    newer = load_prepared(tmp_path / "ref.pkl")
    del newer["examples"][1]["spans"]  # a file of a data_prep before answer spans
    save_records(tmp_path / "no-spans.pkl", [newer])
    assert generate_html(["ref", "--data", str(tmp_path / "no-spans.pkl"), "--out", str(tmp_path / "h")]) == 2
    assert "older data_prep" in capsys.readouterr().err
    assert np.isnan(load_prepared(tmp_path / "ref.pkl")["examples"][0]["aligned_entropy"]).all()
    assert generate_html(["ref", "--data", str(tmp_path / "ref.pkl"), "--out", str(tmp_path / "h")]) == 0
    assert "no entropy analysis" in (tmp_path / "h" / "summary.html").read_text()


# -- slices --------------------------------------------------------------------------------------

def direct_counts(ranks: list[np.ndarray]) -> dict:
    cls = shift_class(np.concatenate(ranks)) if ranks else np.zeros(0, np.int8)
    return {"positions": len(cls), "unshifted": int((cls == 0).sum()), "marginal": int((cls == 1).sum()),
            "shifted": int((cls == 2).sum())}


def test_slices_count_the_records(weak_runs):
    """Both routes: each label's counts are those of its examples' records, and the labels add up to the corpus."""
    for name, records in (("routed", weak_runs["i2b"]), ("paired", weak_runs["pair"])):
        s = weak_runs[name]
        labels = s["slices"]["category"]
        assert list(labels) == ["animals", "how-tos", "science", "towns", "null"]  # sorted, null last
        for label, b in labels.items():
            want = None if label == "null" else label
            mine = [r for r, (_, _, cat) in zip(records, PLANTED_EXAMPLES) if cat == want]
            assert b["examples"] == len(mine)
            counts = {k: b[k] for k in ("positions", "unshifted", "marginal", "shifted")}
            assert counts == direct_counts([r["aligned_rank"] for r in mine])
            assert sum(r["count"] for r in b["by_position"]["relative"]) == b["positions"]
        for key in ("examples", "positions", "unshifted", "marginal", "shifted"):
            assert sum(b[key] for b in labels.values()) == s[key]
        assert labels["null"]["examples"] == 1  # the example without the field
    lines = [line for line in format_summary(weak_runs["routed"]).splitlines() if line.startswith("  category=")]
    assert len(lines) == 5 and lines[-1].startswith("  category=null: 1 examples")


def test_a_slice_of_everything_is_the_corpus(tmp_path, report):
    """One function makes the corpus numbers and each slice's: a slice holding every example repeats them."""
    i2i, i2b = report["root"] / "i2i/r-i2i.pkl", report["root"] / "i2b/r-i2b.pkl"
    labels = tmp_path / "all.json"
    labels.write_text(json.dumps({str(r["id"]): "everything" for r in report["i2i"]}))
    assert data_prep(["r", str(i2i), str(i2b), "--out", str(tmp_path / "a.pkl"), "--slices", str(labels)]) == 0
    s = json.loads((tmp_path / "a.summary.json").read_text())
    whole = s["slices"]["all"]["everything"]
    for key in ("examples", "positions", "unshifted", "marginal", "shifted", "ratios", "top_shifted_tokens",
                "top_unshifted_tokens"):
        assert whole[key] == s[key], key
    assert whole["by_position"] == {"relative": s["by_position"]["relative"]}
    prep = load_prepared(tmp_path / "a.pkl")
    P = Positions.of(prep["examples"])
    assert block(P, 4, prep["tokens"], absolute=False) == whole


def test_slice_labels_from_the_data_file_and_a_labels_file(tmp_path, report, capsys):
    i2i, i2b = report["root"] / "i2i/r-i2i.pkl", report["root"] / "i2b/r-i2b.pkl"
    items = json.loads((report["root"] / "data.json").read_text())
    extra = [{"category": "safety", "level": 1}, {"category": "facts", "level": 2.5}, {"level": True},
             {"category": "facts", "level": None}]
    (tmp_path / "data.json").write_text(json.dumps([{**item, **e} for item, e in zip(items, extra)]))
    run = ["r", str(i2i), str(i2b), "--out", str(tmp_path / "s.pkl")]
    assert data_prep([*run, "--slice_by", "category", "--slice_by", "level", "--data_file", str(tmp_path / "data.json")]) == 0
    prep = load_prepared(tmp_path / "s.pkl")
    assert prep["slice_fields"] == ["category", "level"]
    assert [ex["slices"] for ex in prep["examples"]] == [
        {"category": "safety", "level": "1"}, {"category": "facts", "level": "2.5"},
        {"category": "null", "level": "true"}, {"category": "facts", "level": "null"}]
    s = json.loads((tmp_path / "s.summary.json").read_text())
    assert list(s["slices"]["category"]) == ["facts", "safety", "null"]
    facts = [report["i2b"][1], report["i2b"][3]]
    assert s["slices"]["category"]["facts"]["positions"] == sum(len(r["response_ids"]) for r in facts)
    assert s["slices"]["category"]["null"]["positions"] == 0 and s["slices"]["category"]["null"]["examples"] == 1

    # Without --data_file: the data file the records name (the fixture's, which has the query fields).
    assert data_prep([*run, "--slice_by", "pure_input"]) == 0
    assert load_prepared(tmp_path / "s.pkl")["examples"][1]["slices"] == {"pure_input": "What is the capital of France?"}
    # A labels file: {id: label} (the field is named after the file) or {id: {field: label}}; ids it leaves out: null.
    (tmp_path / "source.json").write_text(json.dumps({"0": "web", "3": 7}))
    (tmp_path / "nested.json").write_text(json.dumps({"1": {"harm": "yes", "lang": "en"}}))
    assert data_prep([*run, "--slices", str(tmp_path / "source.json")]) == 0
    assert [ex["slices"] for ex in load_prepared(tmp_path / "s.pkl")["examples"]] == [
        {"source": "web"}, {"source": "null"}, {"source": "null"}, {"source": "7"}]
    assert data_prep([*run, "--slices", str(tmp_path / "nested.json"), "--slice_by", "category",
                      "--data_file", str(tmp_path / "data.json")]) == 0
    prep = load_prepared(tmp_path / "s.pkl")
    assert prep["slice_fields"] == ["category", "harm", "lang"] and prep["examples"][1]["slices"]["lang"] == "en"
    assert prep["examples"][0]["slices"]["harm"] == "null"
    # --slices is repeatable: each file adds its fields (a second one replaced the first, silently, before)
    assert data_prep([*run, "--slices", str(tmp_path / "source.json"), "--slices", str(tmp_path / "nested.json")]) == 0
    prep = load_prepared(tmp_path / "s.pkl")
    assert prep["slice_fields"] == ["source", "harm", "lang"] and prep["examples"][3]["slices"]["source"] == "7"

    def refused(args, *fragments):
        assert data_prep([*run, *args]) == 2
        one_error_line(capsys, *fragments)

    refused(["--slice_by", "nothing"], "data.json", "no example has the field 'nothing'")
    refused(["--slice_by", "output"], "example 0 (id=0)", "field 'output' is a list")
    refused(["--slice_by", "category", "--data_file", str(tmp_path / "none.json")], "none.json", "not found")
    (tmp_path / "other.json").write_text(json.dumps([{**item, "id": f"x{i}"} for i, item in enumerate(items)]))
    refused(["--slice_by", "category", "--data_file", str(tmp_path / "other.json")], "other.json", "example 0",
            "not the data file")
    (tmp_path / "short.json").write_text(json.dumps(items[:2]))
    refused(["--slice_by", "category", "--data_file", str(tmp_path / "short.json")], "short.json", "holds 2 examples",
            "example 2")
    (tmp_path / "unknown.json").write_text(json.dumps({"0": "a", "99": "b"}))
    refused(["--slices", str(tmp_path / "unknown.json")], "unknown.json", "id '99' is not an example")
    (tmp_path / "mixed.json").write_text(json.dumps({"0": "a", "1": {"f": "b"}}))
    refused(["--slices", str(tmp_path / "mixed.json")], "mixed.json", "one form")
    (tmp_path / "listy.json").write_text(json.dumps({"0": ["a"]}))
    refused(["--slices", str(tmp_path / "listy.json")], "listy.json", "id 0", "is a list")
    refused(["--slices", str(tmp_path / "missing.json")], "missing.json", "not found")
    (tmp_path / "category.json").write_text(json.dumps({"0": "a"}))
    refused(["--slices", str(tmp_path / "category.json"), "--slice_by", "category", "--data_file", str(tmp_path / "data.json")],
            "field 'category' is also given by --slice_by")
    refused(["--slices", str(tmp_path / "nested.json"), "--slices", str(tmp_path / "nested.json")],
            "nested.json: field 'harm' is also given by " + str(tmp_path / "nested.json"))
    ref_a = reference_pickle(tmp_path / "ri.pkl", [2], lambda e, p: [7, 8, 9])
    ref_b = reference_pickle(tmp_path / "rb.pkl", [2], lambda e, p: [7, 8, 9])
    assert data_prep(["ref", str(ref_a), str(ref_b), "--out", str(tmp_path / "ref.pkl"), "--slice_by", "category"]) == 2
    one_error_line(capsys, "do not name their data file", "--data_file")


def test_labels_file_is_read_as_data_files_are(tmp_path, report, capsys):
    """A --slices file with a UTF-8 byte-order mark is read; one with a lone surrogate (in a label, a nested label or an
    id) is one line naming the file and the key, and the outputs of an earlier run stay as they were (nothing is written
    before everything is computed)."""
    i2i, i2b = report["root"] / "i2i/r-i2i.pkl", report["root"] / "i2b/r-i2b.pkl"
    out = tmp_path / "s.pkl"
    outputs = [out, out.with_suffix(".summary.json"), out.with_suffix(".curves.csv")]
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + json.dumps({"0": "web", "3": "books"}).encode())
    assert data_prep(["r", str(i2i), str(i2b), "--out", str(out), "--slices", str(tmp_path / "bom.json")]) == 0
    assert [ex["slices"] for ex in load_prepared(out)["examples"]] == [
        {"bom": "web"}, {"bom": "null"}, {"bom": "null"}, {"bom": "books"}]
    before = [p.read_bytes() for p in outputs]
    for name, text, key in (("label", '{"0": "web", "3": "b\\udc80oks"}', "'3'"),
                            ("nested", '{"0": {"topic": "\\ud83d"}}', "'0.topic'"),
                            ("key", '{"0": "web", "\\ud83d": "x"}', "'\\ud83d'")):
        (tmp_path / f"{name}.json").write_text(text)
        assert data_prep(["r", str(i2i), str(i2b), "--out", str(out), "--slices", str(tmp_path / f"{name}.json")]) == 2
        one_error_line(capsys, f"{name}.json", key, "lone surrogate")
        assert [p.read_bytes() for p in outputs] == before


# -- most shifted examples and spikes ------------------------------------------------------------

def pair_record(i: int, kl: np.ndarray, rank: np.ndarray, meta: dict) -> dict:
    """A --mode pair record with the given KL(P_base || P_aligned) and base ranks of the aligned top-1."""
    t = len(kl)
    top = np.tile(np.array([5, 6, 7], np.int32), (t, 1))
    lp = np.tile(np.log(np.array([0.5, 0.3, 0.2], np.float32)), (t, 1))
    f32 = lambda v: np.asarray(v, np.float32)  # noqa: E731
    side = {"topk_ids": top, "topk_logprobs": lp, "token_logprob": lp[:, 0], "token_rank": np.zeros(t, np.int32),
            "entropy": f32(np.full(t, 1.0))}
    return {
        "index": i, "id": f"e{i}", "prompt": "p", "base_prompt": "q", "probe_text": "x", "prompt_ids": np.array([1], np.int32),
        "base_prompt_ids": np.array([1], np.int32), "response_ids": np.full(t, 5, np.int32), **side,
        **{f"base_{k}": v for k, v in side.items()}, "n_truncated": 0, "final_generated_text": "x",
        "aligned_rank": np.asarray(rank, np.int32), "aligned_logprob": f32(np.full(t, -1.0)),
        "kl_base_aligned": f32(kl), "kl_aligned_base": f32(kl), "js": f32(kl / 10), "tv": f32(kl / 10), "meta": meta,
    }


def test_top_examples_and_spikes(tmp_path, pair_llama):
    meta = {"mode": "pair", "model": str(pair_llama["aligned"]), "base_model": str(pair_llama["base"]), "top_k": 3,
            "template": None}
    kls, ranks = [], []
    for i in range(25):
        t = 4 + i % 3
        kl = np.full(t, 0.01 * (i + 1))
        rank = np.zeros(t, np.int64)
        rank[t - i % 4:] = 5  # the last i % 4 positions shifted
        kls.append(kl), ranks.append(rank)
    kls[7][2], kls[12][0] = 5.0, 4.0  # two spikes
    kls.append(np.zeros(0)), ranks.append(np.zeros(0, np.int64))  # an empty answer
    records = [pair_record(i, k, r, meta) for i, (k, r) in enumerate(zip(kls, ranks))]
    save_records(tmp_path / "p.pkl", records)
    assert data_prep(["known", str(tmp_path / "p.pkl"), "--out", str(tmp_path / "k.pkl")]) == 0
    s = json.loads((tmp_path / "k.summary.json").read_text())
    prep = load_prepared(tmp_path / "k.pkl")

    every = np.concatenate(kls).astype(np.float32).astype(np.float64)
    threshold = every.mean() + 3 * every.std()
    assert 0.3 < threshold < 4.0
    assert s["spikes"]["threshold"] == pytest.approx(threshold, abs=1e-6) == prep["spike_threshold"]
    assert (s["spikes"]["positions"], s["spikes"]["examples"]) == (2, 2)
    for ex, kl, rank in zip(prep["examples"], kls, ranks):
        t = len(kl)
        assert ex["spike"].tolist() == (kl > threshold).tolist() and ex["spikes"] == int((kl > threshold).sum())
        np.testing.assert_array_equal(ex["kl"], kl.astype(np.float32))
        if t:
            assert ex["shifted_share"] == (rank >= 3).mean()
            assert ex["max_kl"] == pytest.approx(kl.max()) and ex["mean_kl"] == pytest.approx(kl.mean())
            assert ex["first_shifted"] == (int(np.argmax(rank >= 3)) if (rank >= 3).any() else None)
        else:
            assert np.isnan(ex["shifted_share"]) and np.isnan(ex["max_kl"]) and ex["first_shifted"] is None and ex["spikes"] == 0

    def ranked(values):  # highest first, ties in data order, the empty answer left out
        order = sorted((i for i in range(25)), key=lambda i: -values[i])[:20]
        return [{"id": f"e{i}", "index": i, "value": round(float(values[i]), 6)} for i in order]

    share = [(r >= 3).mean() for r in ranks[:25]]
    peak = [float(np.float32(k.max())) for k in kls[:25]]
    assert s["top_examples"]["shifted_share"] == ranked(share)
    assert s["top_examples"]["max_kl"] == ranked(peak)
    assert [x["index"] for x in s["top_examples"]["max_kl"][:3]] == [7, 12, 24]

    out = tmp_path / "h"
    assert generate_html(["known", "--data", str(tmp_path / "k.pkl"), "--out", str(out), "--limit", "10"]) == 0
    assert (out / "7.html").read_text().count("spike\" tabindex") == 1
    assert (out / "3.html").read_text().count("spike\" tabindex") == 0
    summary_page = (out / "summary.html").read_text()
    assert '<a href="7.html">e7</a>' in summary_page and ">e12<" in summary_page and "12.html" not in summary_page  # --limit 10
    index = (out / "index.html").read_text()
    assert 'data-col="10" data-type="num">Spikes' in index


def test_aligned_only_positions_are_left_out_per_example(tmp_path, pair_llama):
    """Positions never classed (aligned_only: the base model was fed a stand-in there) count in no per-example share, KL
    or spike, nor in the spike threshold; the example page and the index say how many an answer has."""
    meta = {"mode": "pair", "model": str(pair_llama["aligned"]), "base_model": str(pair_llama["base"]), "top_k": 3,
            "template": None}
    rng = np.random.default_rng(0)
    kls = [rng.uniform(0.01, 0.2, 6) for _ in range(12)]
    ranks = [np.zeros(6, np.int64) for _ in range(12)]
    only = [np.zeros(6, bool) for _ in range(12)]
    ranks[0][0] = 5
    only[0][3:] = True  # from the first token only the aligned vocabulary has
    kls[0][3:] = 50.0  # a KL against a stand-in: no spike, no max
    only[1][:] = True  # nothing classed
    kls[1][:] = 40.0
    records = []
    for i in range(12):
        rec = pair_record(i, kls[i], ranks[i], meta)
        rec["aligned_only"] = only[i]
        records.append(rec)
    save_records(tmp_path / "p.pkl", records)
    assert data_prep(["ao", str(tmp_path / "p.pkl"), "--out", str(tmp_path / "k.pkl")]) == 0
    prep = load_prepared(tmp_path / "k.pkl")
    classed_kl = np.concatenate([k[~o] for k, o in zip(kls, only)]).astype(np.float32).astype(np.float64)
    assert prep["spike_threshold"] == pytest.approx(classed_kl.mean() + 3 * classed_kl.std(), abs=1e-6)
    first, empty = prep["examples"][0], prep["examples"][1]
    assert first["shifted_share"] == pytest.approx(1 / 3) and first["first_shifted"] == 0
    assert first["max_kl"] == pytest.approx(kls[0][:3].max()) and first["mean_kl"] == pytest.approx(kls[0][:3].mean())
    assert not first["spike"][3:].any() and not empty["spike"].any()
    assert np.isnan(empty["shifted_share"]) and np.isnan(empty["max_kl"]) and np.isnan(empty["mean_kl"])
    s = json.loads((tmp_path / "k.summary.json").read_text())
    assert s["aligned_only"] == 9 and s["spikes"]["positions"] == sum(ex["spikes"] for ex in prep["examples"])
    assert [x["index"] for x in s["top_examples"]["max_kl"]][:1] != [1]

    assert generate_html(["ao", "--data", str(tmp_path / "k.pkl"), "--out", str(tmp_path / "h")]) == 0
    page = (tmp_path / "h" / "0.html").read_text()
    assert '<span id="aligned-only">3 not classed' in page and "Shifted share 33.3%" in page
    assert '<span id="aligned-only">6 not classed' in (tmp_path / "h" / "1.html").read_text()
    assert 'id="aligned-only"' not in (tmp_path / "h" / "2.html").read_text()
    index = (tmp_path / "h" / "index.html").read_text()
    assert 'data-col="11" data-type="num">Aligned-only' in index
    rows = index.split("<tbody>")[1].split("</tr>")
    assert '<td class="num c2" data-value="0.3333333333333333">33.3%</td>' in rows[0]
    assert '<td class="num c2" data-value="">-</td>' in rows[1]  # no classed position: no share, sorted last
    assert '<td class="num" data-value="6">6</td>' in rows[1]


# -- checkpoint chains ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chain(planted, tmp_path_factory):
    """scripts/run_chain.sh on the three planted stages, with the base scored once."""
    tmp = tmp_path_factory.mktemp("chain")
    m = planted["models"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHON": sys.executable,
           "LOGITS_ROOT": str(tmp / "runs"), "OUT": str(tmp / "page"), "BASE_MODEL": str(m["base"]), "I2B_TEMPLATE": "",
           "DATA_PREP_FLAGS": "--slice_by category", "N_GPUS": "3"}
    stages = [f"s{k}={m[f's{k}']}" for k in (1, 2, 3)]
    done = subprocess.run(["bash", "scripts/run_chain.sh", "toy", str(planted["data"]), *stages], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    bad = subprocess.run(["bash", "scripts/run_chain.sh", "toy", str(planted["data"]), stages[0]], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: a chain needs at least two stages, got 1"
    return {"root": tmp / "runs" / "toy", "page": tmp / "page", "chain": json.loads((tmp / "page" / "chain.json").read_text())}


def test_chain_labels_must_differ(tmp_path, report, capsys):
    """A repeated stage label would make two stages share their files: refused before anything runs, by run_chain.sh and by
    compare_pairs --labels."""
    errors = {"a=m1": "error: the stage label 'a' is given twice", "=m1": "error: a stage has an empty label",
              "s=m1": "error: the last stage (t=m2) is not a preset, so it names no base model: give it with BASE_MODEL="}
    for stages in (["a=m1", "b=m2", "a=m3"], ["=m1", "b=m2"], ["s=m1", "t=m2"]):  # the last: no BASE_MODEL
        env = {k: v for k, v in os.environ.items() if k != "BASE_MODEL"}
        done = subprocess.run(["bash", "scripts/run_chain.sh", "toy", str(tmp_path / "data.json"), *stages], cwd=REPO,
                              env={**env, "LOGITS_ROOT": str(tmp_path / "runs"), "PYTHON": "false"},
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert done.stderr.startswith(errors[stages[0]]), done.stderr
        assert not (tmp_path / "runs").exists()
    # the base given among the flags for every run: no such refusal (the stages then run: here PYTHON=false fails them)
    done = subprocess.run(["bash", "scripts/run_chain.sh", "toy", str(tmp_path / "data.json"), "s=m1", "t=m2", "--",
                           "--base_model", "b"], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**env, "LOGITS_ROOT": str(tmp_path / "runs"), "PYTHON": "false"})
    assert done.returncode == 1 and "a process failed" in done.stderr and "names no base model" not in done.stderr
    summary = str(report["html"] / "summary.json")
    for chain in ([], ["--chain"]):
        assert compare_pairs([*chain, summary, summary, "--labels", "a,a", "--out", str(tmp_path / "c")]) == 2
        one_error_line(capsys, "--labels gives 'a' twice")


@pytest.mark.slow
def test_chain_shows_each_planted_token_at_its_stage(chain, planted):
    text = planted["text"]
    rows = {r["token"]: r for r in chain["chain"]["tokens"]}
    assert set(rows) == {text[t] for t in planted["targets"]}  # nothing else is shifted at any stage
    for k, target in enumerate(planted["targets"]):
        row = rows[text[target]]
        assert (row["first_stage"], row["first_label"]) == (k, f"s{k + 1}")
        assert row["counts"][:k] == [None] * k and all(c for c in row["counts"][k:])
    i2i = load_records(chain["root"] / "s3" / "s3-i2i.pkl")
    shifted = [json.loads((chain["root"] / "prepared" / f"s{k}.summary.json").read_text())["shifted"] for k in (1, 2, 3)]
    planted_after = [int(after(i2i, c).sum()) for c in planted["contexts"]]
    assert shifted == list(np.cumsum(planted_after))
    assert [s["label"] for s in chain["chain"]["stages"]] == ["s1", "s2", "s3"]
    assert chain["chain"]["base"] == str(planted["models"]["base"])
    page = (chain["page"] / "index.html").read_text()
    assert page.count("<svg") == 3 and 'id="chain-tokens"' in page
    s1 = json.loads((chain["root"] / "prepared" / "s1.summary.json").read_text())
    assert "towns" in s1["slices"]["category"]  # DATA_PREP_FLAGS reach data_prep


@pytest.mark.slow
def test_chain_stage_classes_from_the_base_top_k_are_exact(chain, planted, tmp_path):
    """Stage 1 against the i2b run of stage 3 (ranks from the stored base top-k) = stage 1 against its own i2b run."""
    root = chain["root"]
    assert logit_analysis(["--data_file", str(planted["data"]), "--pair", "s1", "--mode", "i2b", "--base_model",
                           str(planted["models"]["base"]), "--i2i_pkl_file", str(root / "s1" / "s1-i2i.pkl"),
                           "--logits_folder", str(tmp_path / "shards")]) == 0
    n = len(PLANTED_EXAMPLES)
    assert data_prep(["s1", str(root / "s1" / "s1-i2i.pkl"), str(tmp_path / "shards" / f"s1-i2b.[0:{n}].pkl"),
                      "--out", str(tmp_path / "own.pkl")]) == 0
    own, chained = load_prepared(tmp_path / "own.pkl"), load_prepared(root / "prepared" / "s1.pkl")
    for a, b in zip(own["examples"], chained["examples"]):
        np.testing.assert_array_equal(a["cls"], b["cls"])
        known = b["aligned_rank"] >= 0
        np.testing.assert_array_equal(a["aligned_rank"][known], b["aligned_rank"][known])
        np.testing.assert_allclose(a["base_prob"][known], b["base_prob"][known], rtol=1e-5)
    s = json.loads((root / "prepared" / "s1.summary.json").read_text())
    assert s["rank_unknown"] > 0 and json.loads((tmp_path / "own.summary.json").read_text())["rank_unknown"] == 0


def test_compare_chain_refuses_what_is_not_a_chain(tmp_path, report, capsys):
    summary = json.loads((report["html"] / "summary.json").read_text())
    (tmp_path / "a.json").write_text(json.dumps(summary))
    (tmp_path / "b.json").write_text(json.dumps({**summary, "models": {"i2i": "x", "i2b": "another base"}}))
    (tmp_path / "c.json").write_text(json.dumps({**summary, "examples": 3}))
    assert compare_pairs(["--chain", str(tmp_path / "a.json")]) == 2
    one_error_line(capsys, "at least two stages")
    assert compare_pairs(["--chain", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 2
    one_error_line(capsys, "b.json", "another base", "share one base")
    assert compare_pairs(["--chain", str(tmp_path / "a.json"), str(tmp_path / "c.json")]) == 2
    one_error_line(capsys, "c.json", "3 examples", "same answers")
    # one base folder written two ways (a preset's absolute path, a typed relative one) is one base
    assert same_model("/home/me/project/models/demo/base", "models/demo/base")
    assert same_model(str(tmp_path), os.path.relpath(tmp_path)) and same_model("org/base", "org/base")
    assert not same_model("/home/me/project/models/demo/base", "models/demo/aligned")
    assert not same_model("/x/base", "base") and not same_model("/a/models/base", "../models/base")
    # The same number of examples, other answers (another data file): refused, naming both summaries.
    prep = load_prepared(report["prepared"])
    prep["examples"][1]["answer_text"] += " And more."
    other = summarize(prep)
    assert other["answers_fingerprint"] != summary["answers_fingerprint"] and other["examples"] == summary["examples"]
    (tmp_path / "d.json").write_text(json.dumps({**summary, "answers_fingerprint": other["answers_fingerprint"]}))
    assert compare_pairs(["--chain", str(tmp_path / "a.json"), str(tmp_path / "d.json")]) == 2
    one_error_line(capsys, "d.json: scored on other answers than", "a.json", "same answers")
    assert summarize(load_prepared(report["prepared"]))["answers_fingerprint"] == summary["answers_fingerprint"]
    old = {k: v for k, v in summary.items() if k != "answers_fingerprint"}  # of an earlier data_prep: a warning
    (tmp_path / "e.json").write_text(json.dumps(old))
    assert compare_pairs(["--chain", str(tmp_path / "a.json"), str(tmp_path / "e.json"), "--out", str(tmp_path / "x")]) == 0
    assert "e.json: no answers_fingerprint" in capsys.readouterr().err
