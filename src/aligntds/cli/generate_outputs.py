"""Command line of `src/generate_outputs.py` (greedy answers of the aligned model, in the pipeline's data format)."""

from __future__ import annotations

import argparse
from typing import Sequence

from ..errors import run_cli, setup_logging
from ..models import PAIRS


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="src/generate_outputs.py",
        description="Answer instructions greedily with the aligned model (its chat template, batched, KV cache) and write "
        "a JSON list of {id, pure_input, input, output: [answer], generator} for src/logit_analysis.py.",
    )
    p.add_argument("--data_file", required=True, help="JSON list or JSONL of objects with 'pure_input' or 'instruction' (and optional 'id')")
    p.add_argument("--output_file", required=True, help="where the JSON list of answers is written (atomically)")
    p.add_argument("--pair", default="demo", help=f"a preset whose aligned model answers ({', '.join(PAIRS)}; default: demo)")
    p.add_argument("--model", default=None, help="the aligned model: Hugging Face id (id@revision) or local folder; overrides --pair")
    p.add_argument("--max_new_tokens", type=int, default=256, help="longest answer, in tokens (default 256)")
    p.add_argument("--batch_size", type=int, default=16, help="prompts generated together (default 16)")
    p.add_argument("--start", type=int, default=0, help="first instruction (default 0)")
    p.add_argument("--end", type=int, default=None, help="one past the last instruction (default and maximum: the data length)")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"), help="auto: bfloat16 on CUDA, float32 on CPU")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu, ... (default: cuda when available)")
    p.add_argument("--trust_remote_code", action="store_true", help="allow model code from the hub (runs that code)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from ..generate import GenOptions, run

    args = make_parser().parse_args(argv)
    setup_logging()
    return run_cli(lambda: run(GenOptions(**vars(args))))
