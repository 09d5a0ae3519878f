"""Command line of `src/logit_analysis.py` (the reference's flags, plus model, dtype and batching flags)."""

from __future__ import annotations

import argparse
from typing import Sequence

from ..errors import run_cli, setup_logging
from ..models import PAIRS


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="src/logit_analysis.py",
        description="Score the aligned model's answers under the aligned model (i2i) or the base model (i2b), "
        "one forward pass per answer, and write one shard of records.",
    )
    p.add_argument("--data_file", required=True, help="JSON list or JSONL of {id, pure_input, input, output: [answer]}")
    p.add_argument("--logits_folder", required=True, help="folder for the shard {pair}-{mode}.[{start}:{end}].pkl")
    p.add_argument("--pair", default="llama2", help=f"a preset ({', '.join(PAIRS)}) or any name for the output files (default: llama2)")
    p.add_argument("--mode", required=True, choices=("i2i", "i2b"), help="i2i: aligned model on its chat prompt; i2b: base model on the bare query")
    p.add_argument("--start", type=int, default=0, help="first example (default 0)")
    p.add_argument("--end", type=int, default=None, help="one past the last example (default and maximum: the data length)")
    p.add_argument("--top_k", type=int, default=30, help="candidates stored per position (default 30)")
    p.add_argument("--enable_template", action="store_true", help="i2b: wrap the query in the reference's '# Query: ... # Answer:' template")
    p.add_argument("--base_template", default=None, metavar="FILE", help="i2b: wrap the query in this file's text, at its {query} placeholder")
    p.add_argument("--i2i_pkl_file", default=None, help="i2b: the i2i records of the same data; the answer token ids come from it")
    p.add_argument("--aligned_model", default=None, help="aligned model: Hugging Face id (id@revision) or local folder; overrides --pair")
    p.add_argument("--base_model", default=None, help="base model: Hugging Face id (id@revision) or local folder; overrides --pair")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"), help="auto: bfloat16 on CUDA, float32 on CPU")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu, ... (default: cuda when available)")
    p.add_argument("--device_map", default=None, help="'auto' spreads a model too large for one GPU over all visible GPUs (accelerate)")
    p.add_argument("--batch_tokens", type=int, default=None, help="padded tokens per forward batch (default 16384 on CUDA, 4096 on CPU)")
    p.add_argument("--overwrite", action="store_true", help="recompute a shard that already exists (otherwise it is kept)")
    p.add_argument("--trust_remote_code", action="store_true", help="allow model code from the hub (runs that code)")
    p.add_argument("--attn_implementation", default=None, help="sdpa, eager, flash_attention_2 (default: the model's)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from ..analysis import Options, run

    args = make_parser().parse_args(argv)
    setup_logging()
    return run_cli(lambda: run(Options(**vars(args))))
