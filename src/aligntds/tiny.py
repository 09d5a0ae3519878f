"""Tiny models and tokenizers built locally, for the tests, the benchmark and the demo pair.

Nothing here downloads anything: tokenizers are trained with `tokenizers` on text we pass in,
models are built from small configs with seeded random weights, and both are saved with
`save_pretrained` so that the pipeline loads them through `from_pretrained`, as it loads real ones.

    tok = train_tokenizer(texts, vocab_size=400)
    model = tiny_model("llama", vocab_size=len(tok), seed=0)
    save_pair_member(tmp / "aligned", model, tok)
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch

BOS, EOS, PAD = "<s>", "</s>", "<pad>"


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    add_bos: bool = True,
    extra_special: Iterable[str] = (),
    chat_template: str | None = None,
    min_frequency: int = 2,
):
    """A byte-level BPE tokenizer trained on `texts`, with <pad>=0, <s>=1, </s>=2.

    add_bos: prepend <s> to every text encoded with special tokens (as Llama's tokenizer does);
    without it the tokenizer adds no special tokens and has no BOS (as Qwen's).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [PAD, BOS, EOS, *extra_special]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, tok.token_to_id(BOS))]
        )
    kwargs = dict(eos_token=EOS, pad_token=PAD, additional_special_tokens=list(extra_special))
    if add_bos:
        kwargs["bos_token"] = BOS
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)
    if chat_template:
        hf.chat_template = chat_template
    return hf


def tiny_config(arch: str, vocab_size: int, **overrides):
    """A small config of a real architecture: llama, qwen2 (grouped-query attention, tied embeddings) or gemma2."""
    from transformers import Gemma2Config, LlamaConfig, Qwen2Config

    common = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        # Wider weights than a real init so logits are spread out: exact ties are then rare.
        initializer_range=0.3,
    )
    if arch == "llama":
        cfg = LlamaConfig(**{**common, "num_key_value_heads": 4, **overrides})
    elif arch == "qwen2":
        cfg = Qwen2Config(**{**common, "tie_word_embeddings": True, "use_sliding_window": False, **overrides})
    elif arch == "gemma2":
        cfg = Gemma2Config(**{**common, "head_dim": 8, "final_logit_softcapping": 5.0, "sliding_window": 16, **overrides})
    else:
        raise ValueError(f"unknown tiny architecture {arch!r}")
    return cfg


def tiny_model(arch: str, vocab_size: int, seed: int = 0, **overrides):
    """A randomly initialised model of `tiny_config(arch, ...)` (seeded, so reproducible)."""
    from transformers import AutoModelForCausalLM

    cfg = tiny_config(arch, vocab_size, **overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    return model.eval()


def save_pair_member(folder: str | Path, model, tokenizer) -> Path:
    """Save a model and its tokenizer the way a hub checkpoint is laid out (safetensors, tokenizer.json)."""
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
