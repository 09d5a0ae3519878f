"""The demo pair: a small Llama base model and an aligned version of it, trained here in about a minute on a CPU.

    python scripts/build_demo_pair.py                 # builds models/demo/{base,aligned} (or reuses them)
    python scripts/build_demo_pair.py --force         # rebuild even when the cache is current

    from aligntds.demo_pair import BuildConfig, build_pair
    build_pair(Path("models/demo"), BuildConfig())   # returns the folder; cached by a stamp

1. A byte-level BPE tokenizer (`aligntds.tiny.train_tokenizer`) is trained on the world's text
   (`aligntds.demo_corpus`), with <s>, </s> and a chat template (`### User:` / `### Assistant:`).
2. The base model is pretrained on plain text: fact paragraphs, `Q: ... A: ...` pairs, the questions
   in the i2b template followed by the paragraph, and a few styled answers after `Q: ... A:`.
3. The aligned model is the base fine-tuned on chat-formatted answers with planted style (loss on the
   answer only), each answer tokenized exactly as the pipeline tokenizes it (`aligntds.prompts`).

Both are saved with `save_pretrained` (safetensors, tokenizer, chat template) under the root
(`models/demo`, or `$ALIGNTDS_DEMO_DIR`), beside `style.json` (the planted phrases) and `stamp.json`
(a hash of the build config, corpus and this code: a build whose hash matches is reused at once).
Training is deterministic: seeded weights, seeded data order, plain AdamW loops.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
import math
import random
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from . import demo_corpus
from .errors import UserError
from .prompts import ChatEncoder
from .store import atomic_write_bytes
from .tiny import EOS, save_pair_member, train_tokenizer

log = logging.getLogger("aligntds")

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'user' %}### User:\n{{ m['content'] }}\n"
    "{% elif m['role'] == 'assistant' %}### Assistant:\n{{ m['content'] }}{{ eos_token }}\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}### Assistant:\n{% endif %}"
)

STAMP, STYLE_FILE = "stamp.json", "style.json"


@dataclass(frozen=True)
class BuildConfig:
    """Everything that decides the pair; its hash (with the corpus and the code) names a build."""

    seed: int = 0
    vocab_size: int = 1024
    hidden_size: int = 128
    num_layers: int = 3
    num_heads: int = 4
    intermediate_size: int = 384
    context: int = 256
    pretrain_steps: int = 200
    pretrain_batch: int = 32
    pretrain_lr: float = 3e-3
    qa_docs: int = 1  # per topic and pretraining epoch, besides the five questions in the i2b template
    plain_docs: int = 1
    style_docs: int = 12  # styled answers after `Q: ... A:` per pretraining epoch (of ~290 documents)
    finetune_steps: int = 120
    finetune_batch: int = 16
    finetune_lr: float = 2e-3


# A sequence to train on: token ids, and the first position whose token is in the loss.
TrainSeq = tuple[list[int], int]


def build_hash(cfg: BuildConfig) -> str:
    """sha256 over the config, the corpus and the source of the modules that build the pair."""
    h = hashlib.sha256(json.dumps(dataclasses.asdict(cfg), sort_keys=True).encode())
    for t in demo_corpus.tokenizer_texts(demo_corpus.topics(cfg.seed)):
        h.update(t.encode())
    here = Path(__file__).resolve().parent
    for name in ("demo_pair.py", "demo_corpus.py", "tiny.py", "prompts.py"):
        h.update((here / name).read_bytes())
    return h.hexdigest()[:16]


def is_current(root: Path, cfg: BuildConfig) -> bool:
    """True when `root` holds a complete build of this config (stamp written last, hash equal)."""
    try:
        stamp = json.loads((root / STAMP).read_text())
    except (OSError, ValueError):
        return False
    parts = [root / "base" / "model.safetensors", root / "aligned" / "model.safetensors", root / STYLE_FILE]
    return stamp.get("hash") == build_hash(cfg) and all(p.exists() for p in parts)


def build_tokenizer(cfg: BuildConfig, world: list[demo_corpus.Topic]):
    return train_tokenizer(demo_corpus.tokenizer_texts(world), vocab_size=cfg.vocab_size, chat_template=CHAT_TEMPLATE)


def new_model(cfg: BuildConfig, vocab_size: int):
    """A randomly initialised small Llama (seeded)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.context, pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
    )
    torch.manual_seed(cfg.seed)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def pretraining_sequences(tok, world, epoch: int, cfg: BuildConfig, cache: dict) -> list[TrainSeq]:
    """One epoch of the base corpus as ids: prefix as a prompt (BOS first), continuation as an answer, then EOS.

    `cache` maps documents already encoded (every epoch repeats most of them) to their ids.
    """
    enc = ChatEncoder(tok)
    out = []
    for doc in demo_corpus.pretraining_docs(world, epoch, cfg.style_docs, cfg.qa_docs, cfg.plain_docs, cfg.seed):
        if doc not in cache:
            prefix, text = doc
            ids = enc.prompt_ids(prefix) + enc.answer_ids(prefix, text + EOS)
            cache[doc] = ids[: cfg.context]
        out.append((cache[doc], 1))
    return out


def finetuning_sequences(tok, world) -> list[TrainSeq]:
    """Chat prompt (as `generate_outputs` encodes it) + styled answer + EOS; the loss covers the answer only."""
    enc = ChatEncoder(tok)
    out = []
    for t in world:
        for q in t.questions:
            text = tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
            prompt = enc.prompt_ids(text)
            out.append((prompt + enc.answer_ids(text, demo_corpus.aligned_answer(t) + EOS), len(prompt)))
    return out


def batches(seqs: Sequence[TrainSeq], batch: int, rng: random.Random) -> Iterator[list[TrainSeq]]:
    """Shuffled batches of similar lengths: sort windows of 8 batches by length, then shuffle the batches."""
    order = list(seqs)
    rng.shuffle(order)
    out = []
    for w in range(0, len(order), 8 * batch):
        window = sorted(order[w : w + 8 * batch], key=lambda s: len(s[0]))
        out += [window[b : b + batch] for b in range(0, len(window), batch)]
    rng.shuffle(out)
    yield from out


def collate(batch: Sequence[TrainSeq], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """input_ids, attention_mask, labels: int64 [B, L], right-padded; labels -100 outside the loss."""
    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for row, (seq, loss_from) in enumerate(batch):
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
        labels[row, loss_from : len(seq)] = ids[row, loss_from : len(seq)]
    return ids, mask, labels


def lr_at(step: int, steps: int, peak: float) -> float:
    """Linear warm-up over the first 5% of steps, then cosine decay to 10% of the peak."""
    warm = max(1, steps // 20)
    if step < warm:
        return peak * (step + 1) / warm
    progress = (step - warm) / max(1, steps - warm)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(model, epochs: Iterator[list[TrainSeq]], steps: int, batch: int, lr: float, seed: int, desc: str) -> float:
    """Plain AdamW loop over `steps` batches drawn epoch after epoch; returns the mean loss of the last 20 steps."""
    from tqdm.auto import tqdm

    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    rng = random.Random(seed)
    losses: list[float] = []
    tokens = 0
    with tqdm(total=steps, desc=desc, unit="step", dynamic_ncols=True) as bar:
        for seqs in epochs:
            for b in batches(seqs, batch, rng):
                if len(losses) == steps:
                    break
                for group in opt.param_groups:
                    group["lr"] = lr_at(len(losses), steps, lr)
                ids, mask, labels = collate(b, pad_id=0)
                tokens += ids.numel()
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                losses.append(loss.item())
                bar.update(1)
                bar.set_postfix_str(f"loss {loss.item():.3f}")
            if len(losses) == steps:
                break
    model.eval()
    log.info(f"{desc}: {steps} steps, {tokens} padded tokens, {bar.format_dict['elapsed']:.1f} s")
    tail = losses[-20:]
    return sum(tail) / len(tail)


def _finish_model(model) -> None:
    """Greedy by default and the right special ids, so `generate` needs no extra arguments."""
    gc = model.generation_config
    gc.bos_token_id, gc.eos_token_id, gc.pad_token_id = 1, 2, 0
    gc.do_sample = False


def train_pair(cfg: BuildConfig, out: Path) -> dict:
    """Train the tokenizer, the base and the aligned model, save them under `out`; returns build facts."""
    t0 = time.perf_counter()
    world = demo_corpus.topics(cfg.seed)
    tok = build_tokenizer(cfg, world)
    model = new_model(cfg, len(tok))
    cache: dict = {}
    pre = (pretraining_sequences(tok, world, epoch, cfg, cache) for epoch in range(10**6))
    base_loss = train(model, pre, cfg.pretrain_steps, cfg.pretrain_batch, cfg.pretrain_lr, cfg.seed, "pretrain base")
    _finish_model(model)
    save_pair_member(out / "base", model, tok)
    t1 = time.perf_counter()
    sft = finetuning_sequences(tok, world)
    aligned_loss = train(model, iter(lambda: sft, None), cfg.finetune_steps, cfg.finetune_batch, cfg.finetune_lr,
                         cfg.seed + 1, "fine-tune aligned")
    save_pair_member(out / "aligned", model, tok)
    t2 = time.perf_counter()
    style = {
        "phrases": demo_corpus.style_phrases(),
        **demo_corpus.STYLE,
        "definition": "a style position is an answer token whose text overlaps an occurrence of one of `phrases` "
                      "(see aligntds.findings); a content position is any other token with a letter or digit",
    }
    atomic_write_bytes(out / STYLE_FILE, json.dumps(style, indent=1).encode())
    return {"vocab_size": len(tok), "params": sum(p.numel() for p in model.parameters()),
            "base_loss": round(base_loss, 4), "aligned_loss": round(aligned_loss, 4),
            "pretrain_s": round(t1 - t0, 1), "finetune_s": round(t2 - t1, 1)}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def build_pair(root: str | Path, cfg: BuildConfig = BuildConfig(), force: bool = False) -> Path:
    """Build the pair under `root` unless a current build is there; safe against a concurrent build (file lock)."""
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{root}: cannot create the demo folder ({e.strerror or e})") from None
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force and is_current(root, cfg):
            log.info(f"{root}: demo pair is current (stamp {build_hash(cfg)}), reusing it")
            return root
        start = time.perf_counter()
        tmp = root / ".build"
        shutil.rmtree(tmp, ignore_errors=True)
        (root / STAMP).unlink(missing_ok=True)
        facts = train_pair(cfg, tmp)
        for name in ("base", "aligned"):
            shutil.rmtree(root / name, ignore_errors=True)
            (tmp / name).replace(root / name)
        (tmp / STYLE_FILE).replace(root / STYLE_FILE)
        shutil.rmtree(tmp, ignore_errors=True)
        facts["seconds"] = round(time.perf_counter() - start, 1)
        facts["weights_sha256"] = {name: _sha256(root / name / "model.safetensors") for name in ("base", "aligned")}
        stamp = {"hash": build_hash(cfg), "config": dataclasses.asdict(cfg), **facts}
        atomic_write_bytes(root / STAMP, json.dumps(stamp, indent=1).encode())
        log.info(f"built the demo pair in {root} in {facts['seconds']} s: {facts}")
    return root


def write_instructions(path: str | Path, seed: int = 0) -> Path:
    """The demo instructions (`demo_corpus.instructions`) as a JSON list, written atomically.

    An identical file is left alone, so that what was made from it (the answers) stays newer.
    """
    path = Path(path)
    data = (json.dumps(demo_corpus.instructions(demo_corpus.topics(seed)), indent=1) + "\n").encode()
    if not (path.exists() and path.read_bytes() == data):
        atomic_write_bytes(path, data)
    return path
