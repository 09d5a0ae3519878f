"""PEFT adapters: i2i and --mode pair with a LoRA adapter equal the runs with the merged full model, and a pair
loads the base weights once.

The adapter is a LoRA made with peft on the tiny base Llama, its B matrices drawn at random (peft starts them at
zero, which would make the adapter do nothing), saved as an adapter folder whose config names the base folder.
The oracle is that adapter merged into a full copy of the weights (`merge_and_unload`), saved and loaded as any
full model.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from aligntds.adapters import load_pair
from aligntds.cli.logit_analysis import main as logit_analysis
from aligntds.errors import UserError
from aligntds.pair import PairRequest, PairScorer
from aligntds.scoring import Request, Scorer
from aligntds.store import load_records
from helpers import make_adapter, one_error_line

# peft, an optional extra, takes seconds to import: it is imported where a test needs it, so that collecting the
# quick loop (pytest -m "not slow") does not pay for it.
pytestmark = pytest.mark.slow  # end-to-end runs with adapters, and the peft import (3 s)

TOL = 1e-4  # merged weights round differently from base + adapter in float32 (seen: 1.6e-5)
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def lora(tmp_path_factory, pair_llama, tok_bos):
    return make_adapter(pair_llama["base"], tmp_path_factory.mktemp("lora") / "adapter", tok_bos, ALL_LINEAR)


@pytest.fixture
def loads(monkeypatch):
    """Every model `from_pretrained` builds during a test (the adapter's layers, injected later, are in them)."""
    original = PreTrainedModel.from_pretrained.__func__
    loaded = []

    def counting(cls, *args, **kwargs):
        model = original(cls, *args, **kwargs)
        loaded.append(model)
        return model

    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(counting))
    return loaded


def held_bytes(models) -> int:
    """Bytes of the distinct parameter tensors the models hold."""
    seen = {p.data_ptr(): p.numel() * p.element_size() for m in models for p in m.parameters()}
    return sum(seen.values())


def run(data, folder, mode, aligned=None, base=None, *extra):
    flags = [*(["--aligned_model", str(aligned)] if aligned else []), *(["--base_model", str(base)] if base else [])]
    assert logit_analysis(["--data_file", str(data), "--logits_folder", str(folder), "--pair", "t", "--mode", mode,
                           *flags, *extra]) == 0
    (shard,) = folder.iterdir()
    return load_records(shard)


def assert_same_scores(a, b):
    """The same examples, ids and statistics (to float tolerance); `meta` may differ (model names)."""
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys()
        for k in ra.keys() - {"meta"}:
            if isinstance(ra[k], np.ndarray) and ra[k].dtype.kind == "f":
                np.testing.assert_allclose(ra[k], rb[k], atol=TOL, rtol=0, err_msg=k)
            elif isinstance(ra[k], np.ndarray):
                np.testing.assert_array_equal(ra[k], rb[k], err_msg=k)
            else:
                assert ra[k] == rb[k], k


def test_i2i_with_an_adapter_equals_the_merged_model(tmp_path, data_file, pair_llama, lora, loads):
    adapter, merged = lora
    with_adapter = run(data_file, tmp_path / "adapter", "i2i", adapter)
    assert len(loads) == 1 and isinstance(loads[0], torch.nn.Module)
    assert_same_scores(with_adapter, run(data_file, tmp_path / "merged", "i2i", merged))
    plain = run(data_file, tmp_path / "base", "i2i", pair_llama["base"])
    # it does change the model
    assert max(np.abs(r["token_logprob"] - p["token_logprob"]).max(initial=0) for r, p in zip(with_adapter, plain)) > 0.1
    meta = with_adapter[0]["meta"]
    assert meta["model"] == str(adapter) and meta["adapter"] == {"name": str(adapter), "revision": None,
                                                                 "base": str(pair_llama["base"])}
    assert run(data_file, tmp_path / "m2", "i2i", merged)[0]["meta"]["adapter"] is None


def test_pair_with_an_adapter_equals_two_full_models_on_one_copy(tmp_path, data_file, pair_llama, lora, loads, capsys):
    adapter, merged = lora
    shared = run(data_file, tmp_path / "adapter", "pair", adapter, None, "--enable_template")  # base: the one the adapter names
    assert "one copy of the weights serves both sides" in capsys.readouterr().err
    one_copy, loads[:] = list(loads), []
    full = run(data_file, tmp_path / "full", "pair", merged, pair_llama["base"], "--enable_template")
    assert_same_scores(shared, full)
    assert len(one_copy) == 1 and len(loads) == 2  # the base weights were loaded once
    base_bytes = held_bytes(loads[:1])
    assert held_bytes(loads) == 2 * base_bytes
    lora_bytes = sum(p.numel() * 4 for n, p in one_copy[0].named_parameters() if "lora_" in n)
    assert 0 < lora_bytes < base_bytes / 4 and held_bytes(one_copy) == base_bytes + lora_bytes
    meta = shared[0]["meta"]
    assert meta["base_model"] == str(pair_llama["base"]) and meta["adapter"]["base"] == str(pair_llama["base"])
    assert meta["shared_weights"] is True and meta["base_adapter"] is None and full[0]["meta"]["shared_weights"] is False
    # --base_model given explicitly: the same base weights, the same run
    again = run(data_file, tmp_path / "adapter", "pair", adapter, pair_llama["base"], "--enable_template", "--overwrite")
    assert_same_scores(again, shared)


def test_one_float32_output_layer_for_a_pair_on_one_model(data_file, pair_llama, lora):
    """In bfloat16 the output layer gets a float32 copy: a pair on one model makes one, and both sides pass check_head."""
    aligned, base = load_pair(str(lora[0]), str(pair_llama["base"]), torch.bfloat16, "cpu", "cpu")
    assert base.model is aligned.model and aligned.model.dtype == torch.bfloat16
    scorer = PairScorer(aligned.model, base.model, top_k=5, batch_tokens=256, base_context=base.context)
    assert scorer.base.head is scorer.aligned.head and scorer.aligned.head.weight.dtype == torch.float32
    request = Request([1, 40, 41, 42], [43, 44, 45, 46, 47])
    scorer.check_head(PairRequest(request, request))
    with base.context():  # the base side is the base model: equal to the model loaded by itself
        own = base.model(input_ids=torch.tensor([request.prompt_ids])).logits
    base_alone = AutoModelForCausalLM.from_pretrained(pair_llama["base"], dtype=torch.bfloat16)
    plain = base_alone(input_ids=torch.tensor([request.prompt_ids])).logits
    assert torch.equal(own, plain) and not torch.equal(aligned.model(input_ids=torch.tensor([request.prompt_ids])).logits, plain)


def test_base_weights_from_the_flag(tmp_path, data_file, pair_llama, lora, capsys):
    """An adapter whose config names a folder that is not here: --base_model gives its base weights."""
    moved = tmp_path / "moved"
    shutil.copytree(lora[0], moved)
    cfg = json.loads((moved / "adapter_config.json").read_text())
    (moved / "adapter_config.json").write_text(json.dumps({**cfg, "base_model_name_or_path": str(tmp_path / "gone")}))
    assert logit_analysis(["--data_file", str(data_file), "--logits_folder", str(tmp_path / "x"), "--pair", "t",
                           "--mode", "i2i", "--aligned_model", str(moved)]) == 2
    one_error_line(capsys, f"the adapter {moved} names the base model {tmp_path / 'gone'}", "which is no folder here",
                   "give its base weights with --base_model")
    assert_same_scores(run(data_file, tmp_path / "flag", "i2i", moved, pair_llama["base"]),
                       run(data_file, tmp_path / "merged", "i2i", lora[1]))
    cfg["base_model_name_or_path"] = None
    (moved / "adapter_config.json").write_text(json.dumps(cfg))
    assert logit_analysis(["--data_file", str(data_file), "--logits_folder", str(tmp_path / "y"), "--pair", "t",
                           "--mode", "i2i", "--aligned_model", str(moved)]) == 2
    one_error_line(capsys, str(moved), "names no base model", "--base_model")


def test_an_adapter_goes_on_the_base_it_names_when_that_folder_is_here(tmp_path, data_file, pair_llama, lora, loads, capsys):
    """A LoRA trained on one model (here the tiny base), compared with another (--base_model: the tiny aligned model):
    the adapter stays on the weights it names, and the base side is the other model, loaded by itself."""
    other = pair_llama["aligned"]
    loads[:] = []
    capsys.readouterr()
    pair = run(data_file, tmp_path / "a", "pair", lora[0], other, "--enable_template")
    assert f"the adapter {lora[0]} goes on the base it names, {pair_llama['base']}" in capsys.readouterr().err
    assert len(loads) == 2 and pair[0]["meta"]["adapter"]["base"] == str(pair_llama["base"])
    assert_same_scores(pair, run(data_file, tmp_path / "m", "pair", lora[1], other, "--enable_template"))
    # in i2i mode --base_model has no other role: it says where the adapter goes (an override), with a warning
    capsys.readouterr()
    i2i = run(data_file, tmp_path / "i", "i2i", lora[0], other)
    assert f"names the base {pair_llama['base']}; it goes on {other} (--base_model) instead" in capsys.readouterr().err
    assert i2i[0]["meta"]["adapter"]["base"] == str(other)


def test_an_adapter_on_the_output_layer_is_merged(tmp_path, data_file, pair_llama, tok_bos, loads, capsys):
    """LoRA on lm_head too: the float32 copy of the output layer must include it. Unmerged, check_head refuses it."""
    adapter, merged = make_adapter(pair_llama["base"], tmp_path / "head", tok_bos, [*ALL_LINEAR, "lm_head"], seed=1)
    loads[:] = []
    assert_same_scores(run(data_file, tmp_path / "a", "i2i", adapter), run(data_file, tmp_path / "m", "i2i", merged))
    loads[:] = []
    pair = run(data_file, tmp_path / "pa", "pair", adapter, None, "--enable_template")
    assert "changes the output layer, so it was merged" in capsys.readouterr().err and len(loads) == 2
    assert_same_scores(pair, run(data_file, tmp_path / "pm", "pair", merged, pair_llama["base"], "--enable_template"))

    from peft import PeftModel

    inner = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(pair_llama["base"]), adapter).eval().get_base_model()
    with pytest.raises(UserError, match="differs from the model's forward pass"):
        Scorer(inner, top_k=5, batch_tokens=256).check_head(Request([1, 40, 41], [42, 43, 44, 45]))


def test_prompt_learning_adapters_are_refused(tmp_path, data_file, pair_llama, capsys):
    """Prompt tuning adds virtual tokens in peft's own forward pass, which scoring does not run: refused, not ignored."""
    from peft import PromptTuningConfig, get_peft_model

    base = AutoModelForCausalLM.from_pretrained(pair_llama["base"], dtype=torch.float32)
    get_peft_model(base, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)).save_pretrained(tmp_path / "prompt")
    assert logit_analysis(["--data_file", str(data_file), "--logits_folder", str(tmp_path / "x"), "--pair", "t",
                           "--mode", "i2i", "--aligned_model", str(tmp_path / "prompt")]) == 2
    one_error_line(capsys, str(tmp_path / "prompt"), "PROMPT_TUNING adapter", "not supported")
