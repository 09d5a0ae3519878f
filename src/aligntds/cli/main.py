"""The console command `aligntds`: one subcommand per stage, each with exactly its script's flags.

    aligntds score --data_file data/x.json --pair llama2 --mode i2i --logits_folder saved_logits/just_eval/llama2/shards/
    aligntds merge saved_logits/just_eval/llama2/ llama2 i2i
    aligntds prep llama2_tp saved_logits/just_eval/llama2/llama2-i2i.pkl saved_logits/just_eval/llama2_tp/llama2-i2b.pkl
    aligntds html llama2_tp
    aligntds score --help          # the same flags as python src/logit_analysis.py --help

`pip install .` (or `pip install -e .`) puts the command on the PATH; `python -m aligntds ...` is the same. A
subcommand's parser is its script's (`make_parser(subparser)` of `aligntds.cli.<script>`), so the flags, defaults,
positional forms, logging and exit status (2 and one line for a user's mistake) are the script's. Only the named
subcommand's modules are imported: `aligntds --help` starts without torch.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
from collections.abc import Sequence

from .. import __version__, options

# subcommand: (the script's module in aligntds.cli, its options dataclass in aligntds.options, the line `aligntds --help`
# shows: what it does, and the script it is); the stages in order.
COMMANDS = {
    "generate": ("generate_outputs", "GenOptions", "answer instructions with the aligned model (src/generate_outputs.py)"),
    "score": ("logit_analysis", "ScoreOptions", "score the answers: i2i, i2b or pair, one shard (src/logit_analysis.py)"),
    "merge": ("merge_logits", "MergeOptions", "merge the shards of a pair and mode (src/scripts/merge_logits.py)"),
    "prep": ("data_prep", "PrepOptions", "classes, metrics, summary and Parquet tables of the records (src/demo/data_prep.py)"),
    "html": ("generate_html", "HtmlOptions", "static pages of a prepared pair (src/demo/generate_html.py)"),
    "compare": ("compare_pairs", "CompareOptions", "several runs, or a chain, on one page (src/demo/compare_pairs.py)"),
    "findings": ("findings", "FindingsOptions", "the demo's findings from a merged i2b file (scripts/demo_findings.py)"),
    "build-demo-pair": ("build_demo_pair", "BuildDemoOptions", "build the demo pair (scripts/build_demo_pair.py)"),
    "get-smollm2": ("get_smollm2", "SmolLM2Options", "SmolLM2-135M-Instruct as a plain model folder (scripts/get_smollm2.py)"),
}


def make_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The `aligntds` parser: every subcommand with its one-line help; `command`'s subparser (when it is one) holds its
    script's flags (imported here; the others are not)."""
    top = argparse.ArgumentParser(prog="aligntds", description="Token distribution shift between a base LLM and its aligned "
                                  "version: each subcommand is a stage of the pipeline, with its script's flags.")
    top.add_argument("--version", action="version", version=f"aligntds {__version__}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, options_name, line) in COMMANDS.items():
        parser = sub.add_parser(name, help=line, description=inspect.cleandoc(getattr(options, options_name).__doc__ or ""))
        if name == command:
            importlib.import_module(f"aligntds.cli.{module}").make_parser(parser)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Run `aligntds COMMAND [flags]` (default: the command line); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = make_parser(command).parse_args(argv)
    return args.run(args)
