"""Benchmark: the reference's per-token loop against the batched path, i2i on one model, in one run.

    python scripts/bench_logits.py                  # CPU: tiny Llama-shaped model, 32000-token vocabulary
    python scripts/bench_logits.py --ref_answers 2 --answers 16   # quicker

Both paths score the same answers with the same randomly initialised model (the cost does not depend
on the weights); prompt and answer lengths follow just-eval-instruct (Llama-2 tokens: prompt about
170, answer about 330 at the median). It prints answer tokens/s of each path, their ratio, the
largest log-prob difference between them, and the bytes per answer position of the records on disk.
"""

from __future__ import annotations

import argparse
import pickle
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from aligntds.records import make_record  # noqa: E402
from aligntds.scoring import Request, Scorer  # noqa: E402
from aligntds.tiny import train_tokenizer  # noqa: E402

# Deciles (0%, 10%, ..., 100%) of just-eval-instruct's prompt and answer lengths for Llama-2-7b-chat
# (prompt with the Llama-2 system prompt; characters / 3.6).
PROMPT_DECILES = [155, 163, 165, 168, 170, 173, 178, 183, 191, 206, 608]
ANSWER_DECILES = [18, 168, 221, 250, 286, 331, 398, 477, 568, 724, 1388]

SHAPES = {
    # name: (hidden, layers, heads, kv heads, intermediate, vocab)
    "tiny": (64, 2, 4, 4, 128, 32000),
}


def sample_lengths(deciles: list[int], n: int, rng: random.Random) -> list[int]:
    """n lengths from the distribution the deciles describe (linear between deciles)."""
    out = []
    for _ in range(n):
        u = rng.random() * 10
        lo = int(u)
        out.append(round(deciles[lo] + (deciles[lo + 1] - deciles[lo]) * (u - lo)))
    return out


def bench_tokenizer(vocab: int):
    """A BPE tokenizer of `vocab` tokens trained on made-up words (the reference loop decodes strings)."""
    rng = random.Random(0)
    syllables = [a + b for a in "bcdfghjklmnprstvwz" for b in "aeiou"] + [
        a + b + c for a in "bcdfgklmnprst" for b in "aeiou" for c in "nrst"
    ]
    texts = [" ".join("".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(50)) for _ in range(8000)]
    return train_tokenizer(texts, vocab, min_frequency=1)


def build_model(shape: str, dtype: torch.dtype, device: str):
    from transformers import AutoModelForCausalLM, LlamaConfig

    hidden, layers, heads, kv, inter, vocab = SHAPES[shape]
    cfg = LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv,
        intermediate_size=inter, max_position_embeddings=4096,
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    return model.eval()


@torch.no_grad()
def reference_get_logits(model, tokenizer, prompt_ids, answer_ids, top_k):
    """The reference's get_logits (AlignTDS src/logit_analysis.py), starting from token ids: for every
    answer token, the whole model on the growing prefix, full-vocabulary arrays copied to the host, one
    dict per candidate with its decoded string, and the decoded prefix."""
    device = model.device
    input_ids = torch.tensor([list(prompt_ids)], device=device)
    results = []
    for token in answer_ids:
        logits = model(input_ids).logits[:, -1, :]
        probs = F.softmax(logits, dim=-1)
        top = logits.topk(k=top_k).indices
        logits, probs, top = logits.cpu().numpy(), probs.cpu().numpy(), top.cpu().numpy()
        prefix = tokenizer.decode(input_ids[0])
        tokens = []
        for j in range(top_k):
            tid = top[0][j]
            tokens.append({"token_id": tid, "token": tokenizer.decode(tid), "logit": logits[0][tid], "prob": probs[0][tid]})
        results.append({"tokens": tokens, "prefix": prefix})
        input_ids = torch.cat((input_ids, torch.tensor([[int(token)]], device=device)), dim=1)
    return results


def timed(fn, device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return out, time.perf_counter() - t


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="tiny", choices=sorted(SHAPES), help="model shape (default tiny)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="model dtype")
    p.add_argument("--answers", type=int, default=32, help="answers for the batched path (default 32)")
    p.add_argument("--ref_answers", type=int, default=3, help="answers for the reference loop (default 3)")
    p.add_argument("--batch_tokens", type=int, default=4096, help="batched path: padded tokens per forward batch")
    p.add_argument("--top_k", type=int, default=30, help="candidates per position (default 30)")
    return p


def main(argv=None) -> int:
    args = make_parser().parse_args(argv)
    torch.set_grad_enabled(False)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    vocab = SHAPES[args.shape][-1]
    tok = bench_tokenizer(vocab)
    model = build_model(args.shape, dtype, args.device)
    params = sum(p.numel() for p in model.parameters())
    rng = random.Random(1)
    n = max(args.answers, args.ref_answers)
    plens, alens = sample_lengths(PROMPT_DECILES, n, rng), sample_lengths(ANSWER_DECILES, n, rng)
    gen = np.random.default_rng(2)
    reqs = [Request([1] + gen.integers(3, vocab, p - 1).tolist(), gen.integers(3, vocab, a).tolist()) for p, a in zip(plens, alens)]
    print(f"model: {args.shape} Llama ({params / 1e6:.1f}M parameters, vocabulary {vocab}), {args.dtype}, {args.device}; "
          f"{torch.get_num_threads()} CPU threads")

    ref_reqs = reqs[: args.ref_answers]
    ref_tokens = sum(len(r.response_ids) for r in ref_reqs)
    ref_out, ref_s = timed(lambda: [reference_get_logits(model, tok, r.prompt_ids, r.response_ids, args.top_k) for r in ref_reqs], args.device)

    scorer = Scorer(model, args.top_k, args.batch_tokens)
    batch_reqs = reqs[: args.answers]
    fast_tokens = sum(len(r.response_ids) for r in batch_reqs)
    fast_out, fast_s = timed(lambda: scorer.score(batch_reqs), args.device)

    # The two paths agree (the reference stores logits; compare top-1 ids and log-probs of its top-1).
    worst = 0.0
    for r_out, f_out in zip(ref_out, fast_out):
        for t, pos in enumerate(r_out):
            ref_lp = float(np.log(pos["tokens"][0]["prob"]))
            worst = max(worst, abs(ref_lp - float(f_out["topk_logprobs"][t, 0])))
    ref_rate, fast_rate = ref_tokens / ref_s, fast_tokens / fast_s
    print(f"reference loop: {args.ref_answers} answers, {ref_tokens} answer tokens in {ref_s:.1f} s = {ref_rate:,.1f} tokens/s")
    print(f"batched path:   {args.answers} answers, {fast_tokens} answer tokens in {fast_s:.2f} s = {fast_rate:,.0f} tokens/s")
    print(f"speed-up: {fast_rate / ref_rate:,.0f}x   (largest top-1 log-prob difference between the paths: {worst:.2e})")

    meta = {"model": "bench", "mode": "i2i", "top_k": args.top_k}
    records = [
        make_record(i, i, "x" * (4 * len(r.prompt_ids)), "x" * (4 * len(r.response_ids)), r, s, 0, meta, "x" * (4 * len(r.response_ids)))
        for i, (r, s) in enumerate(zip(batch_reqs, fast_out))
    ]
    size = len(pickle.dumps(records, protocol=4))
    print(f"storage: {size / fast_tokens:.0f} bytes per answer position on disk (top_k={args.top_k}; "
          f"prompt and answer text at 4 bytes per token); the reference stores "
          f"{len(pickle.dumps(ref_out)) / ref_tokens:,.0f} bytes per position")
    return 0


if __name__ == "__main__":
    sys.exit(main())
