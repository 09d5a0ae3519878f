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
        "a JSON list of {id, pure_input, input, output: [answer], output_ids, generator} for src/logit_analysis.py. Under "
        "accelerate launch or torchrun each process answers its own part of [--start, --end) and writes its own part file "
        "(DIR/parts/NAME.[s:e].json for --output_file DIR/NAME.json); the same command with --merge then joins them.",
    )
    p.add_argument("--data_file", required=True, help="JSON list or JSONL of objects with 'pure_input' or 'instruction' (and optional 'id')")
    p.add_argument("--output_file", required=True, help="where the JSON list of answers is written (atomically)")
    p.add_argument("--pair", default="demo", help=f"a preset whose aligned model answers ({', '.join(PAIRS)}; default: demo)")
    p.add_argument("--model", default=None, help="the aligned model: Hugging Face id (id@revision), local folder, or PEFT adapter "
                   "(on the base weights it names); overrides --pair")
    p.add_argument("--max_new_tokens", type=int, default=256, help="longest answer, in tokens (default 256)")
    p.add_argument("--batch_size", type=int, default=16, help="prompts generated together (default 16)")
    p.add_argument("--start", type=int, default=0, help="first instruction (default 0)")
    p.add_argument("--end", type=int, default=None, help="one past the last instruction (default and maximum: the data length)")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"), help="auto: bfloat16 on CUDA, float32 on CPU")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu, ... (default: cuda when available)")
    p.add_argument("--trust_remote_code", action="store_true", help="allow model code from the hub (runs that code)")
    p.add_argument("--merge", action="store_true", help="join the part files of a launch of several processes into --output_file "
                   "(in data order; gaps, overlaps and other settings are refused); give the launch's --data_file, --start, --end")
    p.add_argument("--overwrite", action="store_true", help="several processes: generate a part file that exists again (otherwise it is kept)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from ..distributed import current_rank, quiet_libraries
    from ..generate import GenOptions, run

    args = make_parser().parse_args(argv)
    setup_logging()

    def work():
        rank = current_rank()
        setup_logging(quiet=not rank.is_main)  # messages and progress on rank 0 only; warnings everywhere
        if not rank.is_main:
            quiet_libraries()
        return run(GenOptions(**vars(args)), rank)

    return run_cli(work)
