"""compare_pairs: several runs side by side (the paper's Fig. 3 and 8), or the stages of a checkpoint chain.

Runs are summaries (summary.json) of different pairs, or of one pair with different base templates.
A chain's summaries are the stages of one post-training (base -> SFT -> DPO -> RL), each scored against
the same base model on the same answers (`scripts/run_chain.sh`), given in stage order.

    from aligntds.compare import compare_chain, compare_pairs
    compare_pairs(["docs/llama2_justeval/summary.json", "docs/mistral_justeval/summary.json"])
    compare_chain(["saved_logits/chain/olmo2/prepared/olmo2-7b-sft.summary.json", ...], out="docs/olmo2_chain")
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from markupsafe import Markup

from .data import read_json
from .errors import UserError
from .store import atomic_write_bytes

log = logging.getLogger("aligntds")

NEEDED = ("pair", "positions", "ratios", "top_shifted_tokens", "by_position")


def load_summary(path: str | Path) -> dict:
    summary = read_json(path, "summary.json")
    missing = [k for k in NEEDED if not isinstance(summary, dict) or k not in summary]
    if missing:
        raise UserError(f"{path}: not a summary.json of this tool (no {', '.join(missing)})")
    return summary


def run_labels(paths: list[Path], summaries: list[dict], labels: list[str] | None) -> list[str]:
    """Labels for the runs: given ones, else each pair name (with its file's folder where names repeat)."""
    if labels:
        if len(labels) != len(summaries):
            raise UserError(f"--labels gives {len(labels)} names for {len(summaries)} summaries")
        repeated = next((label for n, label in enumerate(labels) if label in labels[:n]), None)
        if repeated is not None:
            raise UserError(f"--labels gives '{repeated}' twice: each run needs its own label")
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


def chain_tokens(runs: list[tuple[str, dict]]) -> list[dict]:
    """Every token of some stage's most-shifted list (summary.json's top_shifted_tokens), with its shifted count
    and share at each stage (None where that stage does not list it) and the first stage that lists it
    (0-based `first_stage`, and its label); ordered by first stage, then by the token's largest count."""
    tables = [{tok: (count, share) for tok, count, share in s["top_shifted_tokens"]} for _, s in runs]
    rows = []
    for tok in dict.fromkeys(tok for table in tables for tok in table):
        counts = [table[tok][0] if tok in table else None for table in tables]
        first = next(i for i, c in enumerate(counts) if c is not None)
        rows.append({"token": tok, "first_stage": first, "first_label": runs[first][0], "counts": counts,
                     "shares": [table[tok][1] if tok in table else None for table in tables]})
    return sorted(rows, key=lambda r: (r["first_stage"], -max(c for c in r["counts"] if c is not None), r["token"]))


def same_model(a: str, b: str) -> bool:
    """True when two recorded model names are one model: equal names, or one local folder written two ways (an
    absolute path, as presets record it, and a relative one, as typed: equal when both resolve to one folder here,
    or when the relative path is the end of the absolute one)."""
    if a == b:
        return True
    pa, pb = Path(a), Path(b)
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve()
    if pa.is_absolute() == pb.is_absolute():
        return False
    whole, end = (pa, pb) if pa.is_absolute() else (pb, pa)
    parts = [p for p in end.parts if p != "."]
    return ".." not in parts and len(parts) > 1 and whole.parts[-len(parts):] == tuple(parts)


def check_chain(paths: list[Path], summaries: list[dict]) -> None:
    """A chain's stages share the base model and the answers (their count and `answers_fingerprint`; one-line UserError
    naming both summaries otherwise); positions that differ (a stage whose context cut answers shorter) are only a
    warning, and so is a summary of an earlier data_prep, without a fingerprint."""
    if len(summaries) < 2:
        raise UserError("--chain needs the summaries of at least two stages, in stage order")
    first, p0 = summaries[0], paths[0]
    for path, s in zip(paths[1:], summaries[1:]):
        bases = (first.get("models", {}).get("i2b"), s.get("models", {}).get("i2b"))
        if None not in bases and not same_model(*bases):
            raise UserError(f"{path}: scored against the base {bases[1]}, {p0} against {bases[0]}: a chain's stages share one "
                            "base")
        if s.get("examples") != first.get("examples"):
            raise UserError(f"{path}: {s.get('examples')} examples, {p0} {first.get('examples')}: a chain's stages score the "
                            "same answers")
        prints = (first.get("answers_fingerprint"), s.get("answers_fingerprint"))
        if None not in prints and prints[0] != prints[1]:
            raise UserError(f"{path}: scored on other answers than {p0} (answers fingerprint {prints[1]}, not {prints[0]}): a "
                            "chain's stages score the same answers")
        if None in prints:
            log.warning(f"{path if prints[1] is None else p0}: no answers_fingerprint (written by an earlier data_prep): the "
                        "stages' answers are not checked; run data_prep again")
        if s["positions"] != first["positions"]:
            log.warning(f"{path}: {s['positions']} answer positions, {p0} {first['positions']}: not quite the same answers")


def compare_chain(paths: list[str | Path], out: str | Path | None = None, labels: list[str] | None = None) -> Path:
    """Write OUT/index.html and OUT/chain.json for a checkpoint chain: class ratios and shift by position across
    the stages, and the most shifted tokens with the first stage at which each is shifted (`chain_tokens`)."""
    from .plots import absolute_curves, class_bars, relative_curves
    from .report import environment

    paths = [Path(p) for p in paths]
    summaries = [load_summary(p) for p in paths]
    check_chain(paths, summaries)
    runs = list(zip(run_labels(paths, summaries, labels), summaries))
    tokens = chain_tokens(runs)
    out = Path(out) if out else Path("docs") / "chain"
    out.mkdir(parents=True, exist_ok=True)
    html = environment().get_template("chain.html").render(
        runs=runs,
        tokens=tokens,
        bars_svg=Markup(class_bars(runs)),
        relative_svg=Markup(relative_curves(runs)),
        absolute_svg=Markup(absolute_curves(runs)),
    )
    stages = [{"label": label, "summary": str(path), "model": s.get("models", {}).get("i2i"), "positions": s["positions"],
               "ratios": s["ratios"], "provenance": s.get("provenance")} for (label, s), path in zip(runs, paths)]
    chain = {"base": summaries[0].get("models", {}).get("i2b"), "stages": stages, "tokens": tokens}
    atomic_write_bytes(out / "chain.json", (json.dumps(chain, indent=1, ensure_ascii=False) + "\n").encode(), durable=False)
    atomic_write_bytes(out / "index.html", html.encode(), durable=False)
    log.info(f"wrote {out / 'index.html'} and chain.json for a chain of {len(runs)} stages")
    return out / "index.html"
