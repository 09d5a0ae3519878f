"""PEFT adapters (LoRA and its kin): a model given as an adapter on base weights, loaded with peft.

`--aligned_model` and `--base_model` (and `generate_outputs.py --model`) accept an adapter folder or hub id, i.e.
one with an `adapter_config.json`. Its base weights are those it names (`base_model_name_or_path`), or, for the
aligned model, `--base_model` (`base_weights`: in pair mode, where --base_model is the base side, a named base that is a
folder here is kept; a warning whenever the two differ). peft injects the adapter's layers into the base model in
place, so the transformers model underneath (`PeftModel.get_base_model()`) computes base + adapter, and inside
`PeftModel.disable_adapter()` the base model alone. `--mode pair` uses this to score both sides of a pair on one
copy of the weights.

    loaded = load("org/llama2-lora", torch.bfloat16, "cuda")           # base weights + adapter
    aligned, base = load_pair("org/llama2-lora", "meta-llama/Llama-2-7b-hf", torch.bfloat16, "cuda", "cuda")
    with base.context():                                                # the adapter switched off
        base.model(input_ids)

Only adapters that change the model's layers are supported (LoRA, DoRA, LoHa, IA3, ...); prompt learning (prefix
or prompt tuning) adds virtual tokens in peft's own forward pass, which scoring does not run, and is refused.
An adapter on the output layer (`lm_head` in `target_modules` or `modules_to_save`) is merged into its base
weights on load, so that the float32 copy of the output layer scoring makes includes it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import models
from .errors import UserError

log = logging.getLogger("aligntds")


@dataclass
class Loaded:
    """A model ready to score.

    model: the transformers causal LM to run (an adapter's layers are inside it). context: a context manager
    factory under which `model` computes this side (the base side of a shared pair: the adapter switched off).
    peft: the PeftModel around `model` (None: a full checkpoint, or an adapter merged into its weights).
    """

    model: Any
    context: Callable[[], AbstractContextManager] = contextlib.nullcontext
    peft: Any = field(default=None, repr=False)


def adapter_config(name: str):
    """The peft config of `name` when it is an adapter (a folder or hub id with `adapter_config.json`), else None.

    A name that is neither a folder nor a valid hub id is not an adapter: loading it then fails with the usual error.
    """
    from transformers.utils import find_adapter_config_file

    models.check_exists(name)
    path, rev = models._split_revision(name)
    try:
        if find_adapter_config_file(path, revision=rev) is None:
            return None
    except (OSError, ValueError):
        return None
    try:
        from peft import PeftConfig
    except ImportError:
        raise UserError(f"{name} is a PEFT adapter (it has adapter_config.json): install peft to load it (pip install "
                        "'peft>=0.10')") from None
    try:
        cfg = PeftConfig.from_pretrained(path, revision=rev)
    except (OSError, ValueError, TypeError) as e:
        raise models._load_error("adapter", name, e) from None
    if cfg.is_prompt_learning or cfg.is_adaption_prompt:
        raise UserError(f"{name} is a {cfg.peft_type} adapter, which adds virtual tokens rather than changing the model's "
                        "layers: not supported (LoRA and the other layer adapters are)")
    return cfg


def describe(name: str | None, base: str | None = None) -> dict | None:
    """What `meta` records of an adapter: {"name", "revision", "base"}, or None when `name` is a full model.

    revision: the hub commit of the adapter's files (None for a folder); base: the base weights it goes on (`base`,
    as `base_weights` chose them, else those it names). Raises `UserError` for an adapter that names no base, or names a
    local folder that is not there (an adapter trained on another machine: give --base_model).
    """
    if name is None:
        return None
    cfg = adapter_config(name)
    if cfg is None:
        return None
    weights = base or cfg.base_model_name_or_path
    if not weights:
        raise UserError(f"the adapter {name} names no base model (base_model_name_or_path in adapter_config.json): give "
                        "--base_model")
    if not base:
        try:
            models.check_exists(weights)
        except UserError:
            raise UserError(f"the adapter {name} names the base model {weights} (base_model_name_or_path in its "
                            "adapter_config.json), which is no folder here: give its base weights with --base_model") from None
    return {"name": name, "revision": _commit(name), "base": weights}


def base_weights(name: str | None, base: str | None, pair: bool = False) -> str | None:
    """The base weights the adapter `name` goes on, given `base` (--base_model; None: those it names), with a warning
    when `base` differs from the base it names (`base_model_name_or_path`). Returns `base` for a full model.

    In pair mode (`pair`), `base` is also the base side: when the base the adapter names is a folder here, the adapter
    goes on it (a LoRA trained on an SFT model and compared with the pretrained base stays on the SFT weights), and
    the base side is `base`, loaded by itself. Otherwise (i2i, generation, or a named base that is a hub id or a
    folder not here, e.g. on the machine it was trained on) `base` is where it goes: --base_model overrides.
    """
    cfg = adapter_config(name) if name else None
    named = cfg.base_model_name_or_path if cfg is not None else None
    if not base or not named or same_weights(named, base):
        return base
    if pair and Path(models._split_revision(named)[0]).is_dir():
        log.warning(f"the adapter {name} goes on the base it names, {named} (a folder here), not on {base}: the base side "
                    f"is {base}, a model of its own")
        return named
    log.warning(f"the adapter {name} names the base {named}; it goes on {base} (--base_model) instead: its scores are "
                f"right only if {base} holds {named}'s weights")
    return base


def _commit(name: str) -> str | None:
    from transformers.utils import find_adapter_config_file
    from transformers.utils.hub import extract_commit_hash

    path, rev = models._split_revision(name)
    return extract_commit_hash(find_adapter_config_file(path, revision=rev), None)


def tokenizer_source(name: str, base: str | None = None) -> str:
    """Where the tokenizer of `name` comes from: the model itself, or an adapter's base weights when the adapter
    ships no tokenizer (`tokenizer_config.json`)."""
    info = describe(name, base)
    if info is None:
        return name
    from transformers.utils import cached_file

    path, rev = models._split_revision(name)
    try:
        own = cached_file(path, "tokenizer_config.json", revision=rev, _raise_exceptions_for_missing_entries=False,
                          _raise_exceptions_for_connection_errors=False)
    except (OSError, ValueError):
        own = None
    return name if own else info["base"]


def same_weights(a: str, b: str) -> bool:
    """True when two model names load the same weights: equal ids, or the same local folder."""
    if a == b:
        return True
    pa, pb = Path(models._split_revision(a)[0]), Path(models._split_revision(b)[0])
    return pa.is_dir() and pb.is_dir() and pa.resolve() == pb.resolve()


def changes_output_layer(model) -> bool:
    """True when peft wrapped the output layer (a LoRA on `lm_head`, or `lm_head` in `modules_to_save`)."""
    head = model.get_output_embeddings()
    return head is not None and any(type(m).__module__.startswith("peft.") for m in head.modules())


def load(name: str, dtype, device: str, base: str | None = None, **kwargs) -> Loaded:
    """Load `name` (a full model, or an adapter on its base weights or on `base`) for inference.

    kwargs: `models.load_model`'s (device_map, trust_remote_code, attn_implementation). An adapter that changes
    the output layer is merged into the weights (`merge_and_unload`); any other stays a separate set of layers.
    """
    info = describe(name, base)
    if info is None:
        return Loaded(models.load_model(name, dtype, device, **kwargs))
    from peft import PeftModel

    weights = models.load_model(info["base"], dtype, device, **kwargs)
    path, rev = models._split_revision(name)
    try:
        peft_model = PeftModel.from_pretrained(weights, path, revision=rev, is_trainable=False)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise models._load_error(f"adapter (on {info['base']})", name, e) from None
    peft_model.eval()
    peft_model.requires_grad_(False)
    inner = peft_model.get_base_model()
    if changes_output_layer(inner):
        log.info(f"the adapter {name} changes the output layer: merged into its base weights")
        return Loaded(peft_model.merge_and_unload())
    return Loaded(inner, peft=peft_model)


def load_pair(aligned: str, base: str, dtype, device: str, base_device: str, aligned_base: str | None = None,
              **kwargs) -> tuple[Loaded, Loaded]:
    """Both models of a pair. An aligned adapter on the base model's own weights (on one device) loads them
    ONCE: the base side is the same model with the adapter switched off (`PeftModel.disable_adapter`), so the
    pair costs one model's memory plus the adapter's. Otherwise each model is loaded by itself.

    aligned_base: the aligned adapter's base weights when given (`base_weights(aligned, --base_model, pair=True)`), else those
    it names.
    """
    info = describe(aligned, aligned_base)
    if info and same_weights(info["base"], base) and base_device == device and describe(base) is None:
        loaded = load(aligned, dtype, device, base=base, **kwargs)
        if loaded.peft is not None:
            log.info(f"{aligned} is an adapter on {base}: one copy of the weights serves both sides, the base side "
                     "with the adapter disabled")
            return loaded, Loaded(loaded.model, context=loaded.peft.disable_adapter)
        log.warning(f"the adapter {aligned} changes the output layer, so it was merged: {base} is loaded a second time")
        return loaded, load(base, dtype, base_device, **kwargs)
    return load(aligned, dtype, device, base=aligned_base, **kwargs), load(base, dtype, base_device, **kwargs)
