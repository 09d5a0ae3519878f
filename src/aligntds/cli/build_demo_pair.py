"""Command line of `scripts/build_demo_pair.py` (build or reuse the demo pair, write the demo instructions)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from ..errors import run_cli, setup_logging
from ..models import DEMO_DIR, REPO_ROOT

DEFAULT_INSTRUCTIONS = REPO_ROOT / "data" / "demo" / "instructions.json"


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scripts/build_demo_pair.py",
        description="Train the demo pair (a small Llama base model and its aligned version, planted style) under ROOT, "
        "or reuse it when its stamp matches the build config; write the demo instructions.",
    )
    p.add_argument("--root", type=Path, default=DEMO_DIR, help=f"where base/, aligned/, style.json and stamp.json go (default: {DEMO_DIR}, "
                   "or $ALIGNTDS_DEMO_DIR)")
    p.add_argument("--instructions", type=Path, default=DEFAULT_INSTRUCTIONS,
                   help=f"where the demo instructions (JSON list) are written (default: {DEFAULT_INSTRUCTIONS})")
    p.add_argument("--force", action="store_true", help="rebuild even when the pair under ROOT is current")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from ..demo_pair import build_pair, write_instructions

    args = make_parser().parse_args(argv)
    setup_logging()

    def work():
        build_pair(args.root, force=args.force)
        write_instructions(args.instructions)

    return run_cli(work)
