"""`scripts/demo_findings.py I2B_PKL`: the findings of a merged i2b (or pair) file, as text or JSON (`FindingsOptions`)."""

import json
from pathlib import Path

from ..errors import UserError
from ..options import FindingsOptions
from . import script


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


def work(o: FindingsOptions) -> None:
    from ..findings import figures, format_figures
    from ..join import record_kind
    from ..models import load_tokenizer
    from ..records import check_records
    from ..store import load_records

    if not 0 < o.early < 1:
        raise UserError(f"--early must be between 0 and 1, got {o.early}")
    records = load_records(o.i2b_file)
    check_records(records, o.i2b_file, "pair" if record_kind(records, o.i2b_file) == "pair" else "i2b")
    tok = load_tokenizer(o.tokenizer or records[0]["meta"]["model"])
    result = figures(records, tok, _phrases(o.style), early=o.early)
    print(json.dumps(result, indent=1) if o.json else format_figures(result))


make_parser, main = script(FindingsOptions, "scripts/demo_findings.py", work)
