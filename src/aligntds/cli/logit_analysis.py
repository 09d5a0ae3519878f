"""Command line of `src/logit_analysis.py` (the reference's flags, plus model, dtype, batching and pair flags)."""

from __future__ import annotations

import argparse
from typing import Sequence

from ..errors import run_cli, setup_logging
from ..models import PAIRS


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="src/logit_analysis.py",
        description="Score the aligned model's answers under the aligned model (i2i), the base model (i2b) or both "
        "(pair: exact divergences), one forward pass per answer, and write one shard of records. Under accelerate launch "
        "or torchrun each process takes its own part of [--start, --end) and writes its own shard.",
    )
    p.add_argument("--data_file", required=True, help="JSON list or JSONL of {id, pure_input, input, output: [answer]}")
    p.add_argument("--logits_folder", required=True, help="folder for the shard {pair}-{mode}.[{start}:{end}].pkl")
    p.add_argument("--pair", default="llama2", help=f"a preset ({', '.join(PAIRS)}) or any name for the output files (default: llama2)")
    p.add_argument("--mode", required=True, choices=("i2i", "i2b", "pair"),
                   help="i2i: aligned model on its chat prompt; i2b: base model on the bare query; pair: both models in one "
                   "process, with exact full-vocabulary KL, JS and TV at every position")
    p.add_argument("--start", type=int, default=0, help="first example (default 0)")
    p.add_argument("--end", type=int, default=None, help="one past the last example (default and maximum: the data length)")
    p.add_argument("--top_k", type=int, default=30, help="candidates stored per position (default 30)")
    p.add_argument("--enable_template", action="store_true", help="i2b, pair: wrap the query in the reference's '# Query: ... # Answer:' template")
    p.add_argument("--base_template", default=None, metavar="FILE", help="i2b, pair: wrap the query in this file's text, at its {query} placeholder")
    p.add_argument("--i2i_pkl_file", default=None, help="i2b: the i2i records of the same data; the answer token ids come from it")
    p.add_argument("--aligned_model", default=None, help="aligned model: Hugging Face id (id@revision), local folder, or PEFT adapter "
                   "(on the base weights it names, or --base_model); overrides --pair")
    p.add_argument("--base_model", default=None, help="base model: Hugging Face id (id@revision), local folder, or PEFT adapter; "
                   "overrides --pair. Pair mode with an aligned adapter on these weights loads them once")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"), help="auto: bfloat16 on CUDA, float32 on CPU")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu, ... (default: cuda when available; cuda:LOCAL_RANK under accelerate/torchrun)")
    p.add_argument("--device_map", default=None, help="'auto' spreads a model too large for one GPU over all visible GPUs (accelerate)")
    p.add_argument("--base_device", default=None, help="pair: device of the base model, e.g. cuda:1 (default: the aligned model's)")
    p.add_argument("--batch_tokens", type=int, default=None, help="padded tokens per forward batch (default 16384 on CUDA, 4096 on CPU); lowered after an out-of-memory error")
    p.add_argument("--overwrite", action="store_true", help="recompute a shard that already exists (otherwise it is kept)")
    p.add_argument("--trust_remote_code", action="store_true", help="allow model code from the hub (runs that code)")
    p.add_argument("--attn_implementation", default=None, help="sdpa, eager, flash_attention_2 (default: the model's)")
    p.add_argument("--tokenization", default="chat", choices=("chat", "reference"),
                   help="chat (default): each model's own chat-format ids (one BOS, no stray space token before the answer, "
                   "the data's output_ids when present); reference: the reference implementation's ids (double BOS, answer "
                   "encoded alone), to reproduce published numbers")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from ..analysis import Options, run

    from ..distributed import current_rank, quiet_libraries

    args = make_parser().parse_args(argv)
    setup_logging()

    def work():
        rank = current_rank()
        setup_logging(quiet=not rank.is_main)  # messages and progress on rank 0 only; warnings everywhere
        if not rank.is_main:
            quiet_libraries()
        return run(Options(**vars(args)), rank)

    return run_cli(work)
