"""Command line of `scripts/demo_findings.py` (the findings of a merged i2b file, in a few lines or as JSON)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

from ..errors import UserError, run_cli, setup_logging
from ..models import DEMO_DIR


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scripts/demo_findings.py",
        description="Summarize a merged i2b file: unshifted/marginal/shifted ratios, the share of shifted positions on "
        "planted style phrases, content positions left unshifted, and how much earlier in the answers the shifts are.",
    )
    p.add_argument("i2b_file", metavar="I2B_PKL", help="merged i2b records, e.g. saved_logits/just_eval/demo_tp/demo-i2b.pkl")
    p.add_argument("--style", default=str(DEMO_DIR / "style.json"),
                   help=f"JSON with a 'phrases' list: the planted style (default: {DEMO_DIR / 'style.json'}); '' for none")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder or hub id (default: the model recorded in the records)")
    p.add_argument("--early", type=float, default=0.2, help="fraction of each answer's first positions counted as early (default 0.2)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON instead of text")
    return p


def _phrases(name: str) -> list[str]:
    """The 'phrases' list of a style file ('' gives none)."""
    if not name:
        return []
    path = Path(name)
    try:
        phrases = json.loads(path.read_text())["phrases"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path}: cannot read the style phrases ({type(e).__name__}: {e})") from None
    if not isinstance(phrases, list) or not all(isinstance(p, str) for p in phrases):
        raise UserError(f"{path}: 'phrases' must be a list of strings")
    return phrases


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    setup_logging()

    def work():
        from ..findings import format_summary, summarize
        from ..models import load_tokenizer
        from ..records import check_records
        from ..store import load_records

        if not 0 < args.early < 1:
            raise UserError(f"--early must be between 0 and 1, got {args.early}")
        records = load_records(args.i2b_file)
        check_records(records, args.i2b_file, "i2b")
        if not records:
            raise UserError(f"{args.i2b_file}: holds no records")
        tok = load_tokenizer(args.tokenizer or records[0]["meta"]["model"])
        summary = summarize(records, tok, _phrases(args.style), early=args.early)
        print(json.dumps(summary, indent=1) if args.json else format_summary(summary))

    return run_cli(work)
