"""Out of memory: a fault injected into the real backbone's forward makes batches split; records stay the same."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from aligntds import models
from aligntds.cli.logit_analysis import main as logit_analysis
from aligntds.errors import UserError
from aligntds.pair import PairRequest, PairScorer
from aligntds.scoring import Request, Scorer, plan_batches
from aligntds.store import load_records
from helpers import assert_same_records, one_error_line


def inject_oom(model, max_tokens: int) -> list[tuple[str, int]]:
    """Make the model's backbone raise CUDA's out-of-memory error on a batch of more than `max_tokens`
    padded tokens; returns the log of calls: ("oom" | "ok", sequences in the batch)."""
    backbone = model.base_model
    real = backbone.forward
    calls: list[tuple[str, int]] = []

    def forward(*args, input_ids=None, **kwargs):
        if input_ids.numel() > max_tokens:
            calls.append(("oom", input_ids.shape[0]))
            raise torch.OutOfMemoryError(f"CUDA out of memory (injected: batch of {tuple(input_ids.shape)})")
        calls.append(("ok", input_ids.shape[0]))
        return real(*args, input_ids=input_ids, **kwargs)

    backbone.forward = forward
    return calls


def requests(n: int = 9) -> list[Request]:
    gen = np.random.default_rng(0)
    reqs = [Request([1, *gen.integers(3, 300, 2 + i % 4).tolist()], gen.integers(3, 300, 5 + 3 * i).tolist()) for i in range(n)]
    reqs.insert(3, Request([1, 5], []))  # an empty answer is never batched
    return reqs


def assert_same_stats(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            if x[k].dtype.kind == "f":
                np.testing.assert_allclose(x[k], y[k], atol=1e-5, rtol=0, err_msg=k)
            else:
                np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_batch_splits_on_oom_and_every_example_is_scored_once(pair_llama, caplog):
    model = AutoModelForCausalLM.from_pretrained(pair_llama["aligned"], dtype=torch.float32)
    reqs = requests()
    clean = Scorer(model, top_k=5, batch_tokens=10_000).score(reqs)
    calls = inject_oom(model, max_tokens=100)
    scorer = Scorer(model, top_k=5, batch_tokens=10_000)
    with caplog.at_level("WARNING", logger="aligntds"):
        faulty = scorer.score(reqs)
    assert_same_stats(faulty, clean)
    assert ("oom", 9) in calls  # the whole batch failed first
    assert sum(n for kind, n in calls if kind == "ok") == 9  # then each example ran exactly once
    assert scorer.batch_tokens <= 100 < 10_000  # and the budget came down for the following batches
    assert "splitting it" in caplog.text


def test_budget_is_lowered_for_the_following_batches(pair_llama):
    model = AutoModelForCausalLM.from_pretrained(pair_llama["aligned"], dtype=torch.float32)
    reqs = [r for r in requests(12) if r.response_ids]
    lengths = [r.length for r in reqs]
    planned = plan_batches(lengths, 100)
    assert sum(len(b) * max(lengths[i] for i in b) > 50 for b in planned) >= 4  # every planned batch would fail
    calls = inject_oom(model, max_tokens=50)
    scorer = Scorer(model, top_k=5, batch_tokens=100)
    scorer.score(reqs)
    # The first batch fails (maybe twice, as the budget halves); the batches after it are re-planned to fit.
    first_ok = next(i for i, (kind, _) in enumerate(calls) if kind == "ok")
    assert 1 <= first_ok <= 2 and all(kind == "ok" for kind, _ in calls[first_ok:]), calls
    assert sum(n for kind, n in calls if kind == "ok") == len(reqs)
    assert scorer.batch_tokens <= 50


def test_an_example_that_does_not_fit_alone_is_named(pair_llama):
    model = AutoModelForCausalLM.from_pretrained(pair_llama["aligned"], dtype=torch.float32)
    inject_oom(model, max_tokens=15)  # the longest example has 20 tokens
    reqs = requests(4)
    names = [f"data.json: example {i}" for i in range(len(reqs))]
    with pytest.raises(UserError, match=r"data.json: example \d: out of device memory although scored alone \(\d+ tokens\)"):
        Scorer(model, top_k=5, batch_tokens=10_000).score(reqs, names=names)


def test_pair_scorer_splits_too(pair_llama):
    aligned, base = (AutoModelForCausalLM.from_pretrained(pair_llama[r], dtype=torch.float32) for r in ("aligned", "base"))
    reqs = [PairRequest(r, Request([1, 7, *r.prompt_ids[1:]], r.response_ids)) for r in requests()]
    clean = PairScorer(aligned, base, top_k=5, batch_tokens=10_000).score(reqs)
    calls = inject_oom(base, max_tokens=100)  # only the second model runs out of memory
    scorer = PairScorer(aligned, base, top_k=5, batch_tokens=10_000)
    assert_same_stats(scorer.score(reqs), clean)
    assert ("oom", 9) in calls and sum(n for kind, n in calls if kind == "ok") == 9
    assert scorer.batch_tokens <= 100


@pytest.mark.slow  # three logit_analysis runs
def test_oom_end_to_end_gives_the_same_records(tmp_path, data_file, pair_llama, monkeypatch, capsys):
    args = ["--data_file", str(data_file), "--pair", "t", "--mode", "i2i", "--aligned_model", str(pair_llama["aligned"])]
    assert logit_analysis([*args, "--logits_folder", str(tmp_path / "clean")]) == 0
    real_load = models.load_model

    def faulty_loader(max_tokens):
        def load(*a, **kw):
            model = real_load(*a, **kw)
            inject_oom(model, max_tokens)
            return model
        return load

    monkeypatch.setattr(models, "load_model", faulty_loader(90))
    capsys.readouterr()
    assert logit_analysis([*args, "--logits_folder", str(tmp_path / "faulty")]) == 0
    err = capsys.readouterr().err
    assert "out of device memory" in err and "final batch budget is" in err and "--batch_tokens" in err
    assert_same_records(load_records(tmp_path / "faulty" / "t-i2i.[0:7].pkl"),
                        load_records(tmp_path / "clean" / "t-i2i.[0:7].pkl"))

    # Room for the 32-token start-up check, not for the shortest example: one line naming it, exit status 2.
    shortest = min(len(r["prompt_ids"]) + len(r["response_ids"]) for r in load_records(tmp_path / "clean" / "t-i2i.[0:7].pkl")
                   if len(r["response_ids"]))
    assert shortest > 33
    monkeypatch.setattr(models, "load_model", faulty_loader(33))
    assert logit_analysis([*args, "--logits_folder", str(tmp_path / "fail")]) == 2
    one_error_line(capsys, "data.json: example", "out of device memory although scored alone")
    assert list((tmp_path / "fail").iterdir()) == []  # the folder was checked before scoring; no shard, no temp file
