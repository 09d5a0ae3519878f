"""compare_pairs: several runs side by side (the paper's Fig. 3 and 8).

Runs are summaries (summary.json) of different pairs, or of one pair with different base templates.

    from aligntds.compare import compare_pairs
    compare_pairs(["docs/llama2_justeval/summary.json", "docs/mistral_justeval/summary.json"])
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from markupsafe import Markup

from .errors import UserError
from .store import atomic_write_bytes

log = logging.getLogger("aligntds")

NEEDED = ("pair", "positions", "ratios", "top_shifted_tokens", "by_position")


def load_summary(path: str | Path) -> dict:
    path = Path(path)
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not a summary.json ({e})") from None
    missing = [k for k in NEEDED if not isinstance(summary, dict) or k not in summary]
    if missing:
        raise UserError(f"{path}: not a summary.json of this tool (no {', '.join(missing)})")
    return summary


def run_labels(paths: list[Path], summaries: list[dict], labels: list[str] | None) -> list[str]:
    """Labels for the runs: given ones, else each pair name (with its file's folder where names repeat)."""
    if labels:
        if len(labels) != len(summaries):
            raise UserError(f"--labels gives {len(labels)} names for {len(summaries)} summaries")
        return labels
    names = [s["pair"] for s in summaries]
    return [n if names.count(n) == 1 else f"{n} ({p.parent.name or p.stem})" for n, p in zip(names, paths)]


def token_overlap(runs: list[tuple[str, dict]]) -> tuple[list[dict], dict[str, list[dict]]]:
    """Shifted tokens shared by every run and those found in one run only (among each run's most-shifted list)."""
    tables = [{tok: (count, share) for tok, count, share in s["top_shifted_tokens"]} for _, s in runs]
    shared = set.intersection(*(set(t) for t in tables)) if tables else set()
    shared_rows = sorted(
        ({"token": tok, "counts": [t[tok][0] for t in tables], "shares": [t[tok][1] for t in tables]} for tok in shared),
        key=lambda r: (-sum(r["counts"]), r["token"]),
    )
    unique = {}
    for (label, _), table in zip(runs, tables):
        others = set().union(*(set(t) for t in tables if t is not table))
        rows = [{"token": tok, "count": c, "share": sh} for tok, (c, sh) in table.items() if tok not in others]
        unique[label] = sorted(rows, key=lambda r: (-r["count"], r["token"]))
    return shared_rows, unique


def compare_pairs(paths: list[str | Path], out: str | Path | None = None, labels: list[str] | None = None) -> Path:
    """Write OUT/index.html comparing the runs' class ratios, shifted tokens and shift-by-position curves."""
    from .plots import absolute_curves, class_bars, relative_curves
    from .report import environment

    if not paths:
        raise UserError("give at least one summary.json")
    paths = [Path(p) for p in paths]
    summaries = [load_summary(p) for p in paths]
    runs = list(zip(run_labels(paths, summaries, labels), summaries))
    shared, unique = token_overlap(runs)
    out = Path(out) if out else Path("docs") / "compare"
    out.mkdir(parents=True, exist_ok=True)
    html = environment().get_template("compare.html").render(
        runs=runs,
        shared=shared,
        unique=unique,
        bars_svg=Markup(class_bars(runs)),
        relative_svg=Markup(relative_curves(runs)),
        absolute_svg=Markup(absolute_curves(runs)),
    )
    atomic_write_bytes(out / "index.html", html.encode(), durable=False)
    log.info(f"wrote {out / 'index.html'} comparing {len(runs)} runs")
    return out / "index.html"
