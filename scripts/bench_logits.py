"""Benchmark: the reference's per-token loop against the batched path, i2i on one model, in one run.

    python scripts/bench_logits.py                  # CPU: tiny Llama-shaped model, 32000-token vocabulary
    python scripts/bench_logits.py --ref_answers 2 --answers 16   # quicker
    python scripts/bench_logits.py --device cuda --shape llama2-7b   # GPU: Llama-2-7B shape, bfloat16, 1000 answers
    python scripts/bench_logits.py --dtype bfloat16 --answers 4 --ref_answers 1   # CPU smoke test of the GPU report

Both paths score the same answers with the same randomly initialised model (the cost does not depend
on the weights, so nothing is downloaded); prompt and answer lengths follow just-eval-instruct (Llama-2
tokens: prompt about 170, answer about 330 at the median). It prints answer tokens/s of each path,
their ratio, the largest log-prob difference between them, the achieved TFLOP/s of the batched path
(2 x parameters x tokens per second: the layers without the input embedding on every prompt and
answer token, the output layer on answer tokens; attention scores and padding not counted) and its
share of the device's bf16 dense peak, peak GPU memory, the cost of the float32 output layer against
one in the model's dtype, and the bytes per answer position of the records on disk. On CUDA it then checks the
targets of an H100 (>= 40% of peak, 1000 answers in under a minute, >= 500x the reference loop).
"""

from __future__ import annotations

import pickle
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from aligntds.flags import Flags, flag, parse  # noqa: E402
from aligntds.records import make_record  # noqa: E402
from aligntds.scoring import Request, Scorer, device_defaults  # noqa: E402
from aligntds.tiny import train_tokenizer  # noqa: E402

# Deciles (0%, 10%, ..., 100%) of just-eval-instruct's prompt and answer lengths for Llama-2-7b-chat
# (prompt with the Llama-2 system prompt; characters / 3.6).
PROMPT_DECILES = [155, 163, 165, 168, 170, 173, 178, 183, 191, 206, 608]
ANSWER_DECILES = [18, 168, 221, 250, 286, 331, 398, 477, 568, 724, 1388]

SHAPES = {
    # name: (hidden, layers, heads, kv heads, intermediate, vocab)
    "tiny": (64, 2, 4, 4, 128, 32000),
    "mini": (32, 2, 4, 4, 64, 1000),  # for the test of this script
    "llama2-7b": (4096, 32, 32, 32, 11008, 32000),
}

# bf16 dense peak TFLOP/s (no sparsity), by a part of torch.cuda.get_device_name(); the first match wins.
BF16_PEAK_TFLOPS = [
    ("H100 PCIe", 756),
    ("H100 NVL", 835),
    ("H100", 989),  # SXM ("NVIDIA H100 80GB HBM3")
    ("H200", 989),  # also GH200
    ("H800", 989),
    ("A100", 312),
    ("A800", 312),
    ("L40S", 362),
    ("L40", 181),
    ("L4", 121),
]

# The targets of the scale issue, on one H100.
TARGET_PEAK_SHARE, TARGET_SECONDS, TARGET_SPEEDUP = 0.40, 60.0, 500.0


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
    n_texts = 8000 if vocab > 5000 else 500

    def text() -> str:
        return " ".join("".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(50))

    texts = [text() for _ in range(n_texts)]
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


def flops_per_token(model) -> tuple[int, int]:
    """(2 x parameters of the layers, 2 x parameters of the output layer): the matmul FLOPs per token."""
    total = sum(p.numel() for p in model.parameters())
    embed = model.get_input_embeddings().weight.numel()
    head = model.get_output_embeddings().weight.numel()
    return 2 * (total - embed - head), 2 * head


def bf16_peak_tflops(device: str) -> tuple[str, float | None]:
    """The device's name and its bf16 dense peak (None when not in the table)."""
    if not device.startswith("cuda"):
        return "CPU", None
    name = torch.cuda.get_device_name(torch.device(device))
    return name, next((peak for part, peak in BF16_PEAK_TFLOPS if part in name), None)


@torch.no_grad()
def reference_get_logits(model, tokenizer, prompt_ids, answer_ids, top_k):
    """The reference's get_logits (AlignTDS src/logit_analysis.py), starting from token ids: for every
    answer token, the whole model on the growing prefix, full-vocabulary arrays copied to the host, one
    dict per candidate with its decoded string, and the decoded prefix. (`.float()` before the copy:
    numpy has no bfloat16.)"""
    device = model.device
    input_ids = torch.tensor([list(prompt_ids)], device=device)
    results = []
    for token in answer_ids:
        logits = model(input_ids).logits[:, -1, :].float()
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


def make_requests(n: int, vocab: int) -> list[Request]:
    """n requests with just-eval-instruct's lengths and random token ids (BOS first)."""
    rng = random.Random(1)
    plens, alens = sample_lengths(PROMPT_DECILES, n, rng), sample_lengths(ANSWER_DECILES, n, rng)
    gen = np.random.default_rng(2)
    return [Request([1] + gen.integers(3, vocab, p - 1).tolist(), gen.integers(3, vocab, a).tolist())
            for p, a in zip(plens, alens)]


def largest_difference(ref_out, fast_out) -> float:
    """The reference stores probabilities: compare log-probs of its top-1 with the batched path's."""
    worst = 0.0
    for r_out, f_out in zip(ref_out, fast_out):
        for t, pos in enumerate(r_out):
            worst = max(worst, abs(float(np.log(pos["tokens"][0]["prob"])) - float(f_out["topk_logprobs"][t, 0])))
    return worst


def storage_line(reqs, stats, top_k: int, ref_out, ref_tokens: int) -> str:
    meta = {"model": "bench", "mode": "i2i", "top_k": top_k}
    records = [
        make_record("i2i", index=i, id=i, answer_text="x" * (4 * len(r.response_ids)), prompts=["x" * (4 * len(r.prompt_ids))],
                    prompt_ids=[r.prompt_ids], response_ids=r.response_ids, stats=s, n_truncated=0, meta=meta,
                    final_generated_text="x" * (4 * len(r.response_ids)))
        for i, (r, s) in enumerate(zip(reqs, stats))
    ]
    size = len(pickle.dumps(records, protocol=4))
    tokens = sum(len(r.response_ids) for r in reqs)
    return (f"storage: {size / tokens:.0f} bytes per answer position on disk (top_k={top_k}; prompt and answer text at "
            f"4 bytes per token); the reference stores {len(pickle.dumps(ref_out)) / ref_tokens:,.0f} bytes per position")


def head_cost_line(scorer: Scorer, model, reqs, device: str, fast_s: float, fast_tokens: int) -> str:
    """The cost of the float32 output layer: the head alone on one batch's answer hidden states, in float32
    (as scored) and in the model's dtype (a bfloat16 matmul rounding the logits), scaled to the whole run."""
    batch = []
    for r in sorted(reqs, key=lambda r: -r.length):
        if batch and (len(batch) + 1) * batch[0].length > scorer.batch_tokens:
            break
        batch.append(r)
    hidden = scorer.answer_hidden(batch)
    n = hidden.shape[0]

    def run(head):
        for s in range(0, n, scorer.chunk):
            head(hidden[s : s + scorer.chunk])

    run(scorer.head), run(lambda h: model.lm_head(h).float())  # warm-up
    _, t32 = timed(lambda: run(scorer.head), device)
    _, tlow = timed(lambda: run(lambda h: model.lm_head(h).float()), device)
    extra = (t32 - tlow) * fast_tokens / n
    copy = scorer.head.weight.numel() * 4 / 2**30 if scorer.head.model_dtype != torch.float32 else 0.0
    return (f"output layer: {1e3 * t32 / n * 1000:.1f} ms per 1000 answer positions in float32 (as scored), "
            f"{1e3 * tlow / n * 1000:.1f} ms in {str(scorer.head.model_dtype).removeprefix('torch.')}; over this run "
            f"{extra:+.2f} s ({extra / fast_s:+.1%} of the batched path), float32 weight copy {copy:.2f} GiB")


@dataclass(kw_only=True)
class BenchOptions(Flags):
    """Benchmark: the reference's per-token loop against the batched path, i2i on one model, in one run."""

    shape: str | None = flag("model shape (default: llama2-7b on CUDA, tiny otherwise)", None, choices=sorted(SHAPES))
    device: str = flag("cpu or cuda", "cpu")
    dtype: str | None = flag("model dtype (default: bfloat16 on CUDA, float32 otherwise)", None, choices=("float32", "bfloat16"))
    answers: int | None = flag("answers for the batched path (default: 1000 on CUDA, 32 otherwise)", None)
    ref_answers: int = flag("answers for the reference loop", 3)
    batch_tokens: int | None = flag("batched path: padded tokens per forward batch (default: as logit_analysis)", None)
    top_k: int = flag("candidates per position", 30)
    peak_tflops: float | None = flag("the device's bf16 dense peak, when it is not in the table", None)


def main(argv=None) -> int:
    args = parse(BenchOptions, argv, prog="scripts/bench_logits.py", description=BenchOptions.__doc__)
    torch.set_grad_enabled(False)
    cuda = args.device.startswith("cuda")
    shape = args.shape or ("llama2-7b" if cuda else "tiny")
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype or ("bfloat16" if cuda else "float32")]
    n_answers = args.answers or (1000 if cuda else 32)
    scoring = device_defaults(args.device)
    if args.batch_tokens:
        scoring["batch_tokens"] = args.batch_tokens

    vocab = SHAPES[shape][-1]
    tok = bench_tokenizer(vocab)
    model = build_model(shape, dtype, args.device)
    layer_flops, head_flops = flops_per_token(model)
    device_name, peak = bf16_peak_tflops(args.device)
    peak = args.peak_tflops or peak
    reqs = make_requests(max(n_answers, args.ref_answers), vocab)
    threads = "" if cuda else f"; {torch.get_num_threads()} CPU threads"
    print(f"model: {shape} Llama ({sum(p.numel() for p in model.parameters()) / 1e6:,.1f}M parameters, vocabulary {vocab}), "
          f"{str(dtype).removeprefix('torch.')}, {device_name}{threads}; batch budget {scoring['batch_tokens']} tokens")

    scorer = Scorer(model, args.top_k, **scoring)
    short = Request(reqs[0].prompt_ids[:8], reqs[0].response_ids[:4])
    timed(lambda: (scorer.score(reqs[:2]), reference_get_logits(model, tok, short.prompt_ids, short.response_ids, args.top_k)),
          args.device)  # warm-up: kernels, allocator, cuBLAS
    ref_reqs = reqs[: args.ref_answers]
    ref_tokens = sum(len(r.response_ids) for r in ref_reqs)
    ref_out, ref_s = timed(lambda: [reference_get_logits(model, tok, r.prompt_ids, r.response_ids, args.top_k) for r in ref_reqs],
                           args.device)

    batch_reqs = reqs[:n_answers]
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    fast_out, fast_s = timed(lambda: scorer.score(batch_reqs), args.device)
    fast_tokens = sum(len(r.response_ids) for r in batch_reqs)
    all_tokens = sum(r.length for r in batch_reqs)

    ref_rate, fast_rate = ref_tokens / ref_s, fast_tokens / fast_s
    speedup = fast_rate / ref_rate
    tflops = (layer_flops * all_tokens + head_flops * fast_tokens) / fast_s / 1e12
    print(f"reference loop: {len(ref_reqs)} answers, {ref_tokens} answer tokens in {ref_s:.1f} s = {ref_rate:,.1f} tokens/s")
    print(f"batched path:   {n_answers} answers, {fast_tokens} answer tokens ({all_tokens} with prompts) in {fast_s:.2f} s "
          f"= {fast_rate:,.0f} answer tokens/s")
    print(f"speed-up: {speedup:,.0f}x   (largest top-1 log-prob difference between the paths: "
          f"{largest_difference(ref_out, fast_out):.2e})")
    share = f" = {tflops / peak:.0%} of the {peak:g} TFLOP/s bf16 dense peak" if peak else ""
    rate = f"{tflops:,.1f} TFLOP/s" if tflops >= 1 else f"{tflops * 1e3:,.1f} GFLOP/s"
    print(f"achieved: {rate} (batched path){share}")
    if cuda:
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB "
              f"(weights {sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30:.1f} GiB)")
        seconds_1000 = fast_s * 1000 / n_answers
        print(f"targets (one H100): >= {TARGET_PEAK_SHARE:.0%} of peak: "
              f"{'yes' if peak and tflops / peak >= TARGET_PEAK_SHARE else 'no'}; "
              f"1000 answers in < {TARGET_SECONDS:.0f} s: {'yes' if seconds_1000 < TARGET_SECONDS else 'no'} "
              f"({seconds_1000:.0f} s); "
              f">= {TARGET_SPEEDUP:.0f}x the reference loop: {'yes' if speedup >= TARGET_SPEEDUP else 'no'}")
    print(head_cost_line(scorer, model, batch_reqs, args.device, fast_s, fast_tokens))
    print(storage_line(batch_reqs, fast_out, args.top_k, ref_out, ref_tokens))
    return 0


if __name__ == "__main__":
    sys.exit(main())
