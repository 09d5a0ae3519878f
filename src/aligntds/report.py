"""generate_html: the static report of a prepared pair, self-contained pages that work from file://.

    from aligntds.report import generate_html
    generate_html("llama2_tp")   # docs/llama2_tp_justeval/{index.html, 0.html, ..., summary.html, summary.json}

Pages are jinja2 templates with autoescape and StrictUndefined: model text is data, shown literally,
never markup. Each example page carries its positions as JSON (escaped for a script element) and
builds a position's table and both prefixes in the browser, so its size is linear in the answer.
No CDN, no network: CSS, scripts and plots (matplotlib SVG) are inline.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from pathlib import Path

import numpy as np
from markupsafe import Markup, escape

from . import __version__
from .data import REFERENCE_TEMPLATE
from .data_prep import default_output, load_prepared
from .errors import UserError
from .metrics import ALIGNED_ONLY, MARGINAL, SHIFTED, UNSHIFTED
from .slices import id_key
from .store import atomic_write_bytes
from .summary import summarize, write_summary
from .tokentext import EMPTY, MARKS, WHITESPACE, code_points, show_token, zero_width_spans

log = logging.getLogger("aligntds")

TEMPLATES = Path(__file__).resolve().parent / "templates"
PAGE_RE = re.compile(r"^\d+\.html$")
NEWLINE = WHITESPACE["\n"]


def environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    env.globals.update(version=__version__, show=show_token, show_id=id_key, marks=WHITESPACE, template_label=template_label)
    env.filters["pct"] = percent
    env.globals["truncated_kl_note"] = TRUNCATED_KL_NOTE
    env.globals["exact_kl"] = EXACT_KL
    return env


EXACT_KL = "exact: KL(P_base ‖ P_aligned) over the whole vocabulary, in nats (--mode pair)"
TRUNCATED_KL_NOTE = ("KL@k is the reference's: Σ p_b log(p_b / p_a) over only the tokens both top-k lists share (probabilities "
                     "renormalized over each side's stored top-k), so it is not a divergence: it can be negative "
                     "(by tenths of a nat where the shared tokens are likelier under the aligned model), and it is 0 "
                     "where the lists share no token.")


def percent(share: float | None) -> str:
    """A share as the pages show it: `12.5%`, or `-` for none (a ratio of no positions is null)."""
    return "-" if share is None else f"{100 * share:.1f}%"


def template_label(template: str | None, side: str) -> str:
    """A prompt template, as the provenance tables show it: the reference's by name, another by its first line, its
    length and a fingerprint (two templates that start alike still differ there); None: the chat prompt (the aligned
    side) or the bare query (the base side)."""
    if template is None:
        return "the chat prompt (input)" if side == "aligned" else "none: the bare query"
    if template == REFERENCE_TEMPLATE:
        return "the reference's (--enable_template)"
    first = template.strip().split("\n")[0]
    short = first if len(first) <= 40 else first[:40] + "…"
    return f"{short} ({len(template):,} characters, sha256 {hashlib.sha256(template.encode()).hexdigest()[:8]})"


def is_our_page(path: Path) -> bool:
    """A page this module wrote (its head names the generator); other files are never deleted."""
    with open(path, "rb") as f:
        return b'<meta name="generator" content="aligntds' in f.read(1024)


def default_folder(pair: str) -> Path:
    return Path("docs") / f"{pair}_justeval"


def visible_parts(text: str) -> list[tuple[bool, str]]:
    """A span of the answer as (is_mark, text) parts, whitespace and control characters as their marks
    (`tokentext.MARKS`: · ↵ → ␍, `<0x1B>`; a carriage return in the page's text would be read as a line break);
    no parts for an empty span."""
    parts: list[tuple[bool, str]] = []
    for ch in text:
        if ch in MARKS:
            parts.append((True, MARKS[ch]))
        elif parts and not parts[-1][0]:
            parts[-1] = (False, parts[-1][1] + ch)
        else:
            parts.append((False, ch))
    return parts


def _rounded(values, decimals: int = 4) -> list:
    """Floats for JSON: rounded to `decimals` places, NaN and inf as null (JSON has no NaN)."""
    arr = np.round(np.asarray(values, dtype=np.float64), decimals)
    if np.isfinite(arr).all():
        return arr.tolist()
    if arr.ndim != 1:
        raise ValueError("non-finite values are only expected in per-position vectors")
    return [v if math.isfinite(v) else None for v in arr.tolist()]


def _ppm(logprobs: np.ndarray) -> list[list[int]]:
    """[T, 10] probabilities as integer parts per million: compact, and quick to write as JSON."""
    return np.rint(np.exp(np.asarray(logprobs, dtype=np.float64)) * 1e6).astype(np.int64).tolist()


def page_data(ex: dict, tokens: dict[int, str], k: int = 10) -> dict:
    """Everything the example page's script needs, keyed for it; linear in the answer length.

    Top-10 probabilities go as integer parts per million; the base probability of the aligned
    token, often far smaller, with four significant digits. KL, Jaccard and WS are at k (10, or the
    stored top-k when fewer were stored). `spans` are the answer text per token (position t's prefixes are the
    prompts, each side's boundary when t > 0, and the first t spans: `data_prep.boundary`), `marks` and `empty` what
    the tables show for whitespace and control characters (those of `tokentext.MARKS` that the page's tokens hold)
    and for an empty token."""
    ids = {*ex["response_ids"].tolist(), *ex["aligned_topk_ids"].ravel().tolist(), *ex["base_topk_ids"].ravel().tolist()}
    m = ex["metrics"]
    t = len(ex["response_ids"])
    shown = {str(i): tokens.get(i, f"<{i}>") for i in sorted(ids)}
    used = set("".join(shown.values()))
    return {
        "tokens": shown,
        "response_ids": ex["response_ids"].tolist(),
        "spans": list(ex["spans"]),
        "marks": {c: mark for c, mark in MARKS.items() if c in WHITESPACE or c in used},
        "empty": EMPTY,
        "cls": ex["cls"].tolist(),
        "aligned_rank": ex["aligned_rank"].tolist(),
        "base_prob": [float(f"{v:.4g}") if math.isfinite(v) else None for v in ex["base_prob"].tolist()],
        "greedy_mismatch": ex["greedy_mismatch"].tolist(),
        "aligned_topk_ids": ex["aligned_topk_ids"].tolist(),
        "aligned_topk_ppm": _ppm(ex["aligned_topk_logprobs"]),
        "base_topk_ids": ex["base_topk_ids"].tolist(),
        "base_topk_ppm": _ppm(ex["base_topk_logprobs"]),
        "k": k,
        "kl": _rounded(m.get(f"kl@{k}", np.full(t, np.nan))),
        "jaccard": _rounded(m.get(f"jaccard@{k}", np.full(t, np.nan))),
        "ws": _rounded(m.get(f"ws@{k}", np.full(t, np.nan))),
        "exact": {k: _rounded(v) for k, v in ex["exact"].items()},
        "aligned_entropy": _rounded(ex["aligned_entropy"]),
        "base_entropy": _rounded(ex["base_entropy"]),
        "spike": ex["spike"].tolist(),
        "aligned_prompt": ex["aligned_prompt"],
        "base_prompt": ex["base_prompt"],
        "aligned_boundary": ex["aligned_boundary"],
        "base_boundary": ex["base_boundary"],
    }


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


def class_counts(ex: dict) -> dict:
    """An example's class counts (`aligned_only`: its positions never classed) and its per-example measures (None where
    the answer has no classed positions)."""
    cls = ex["cls"]
    return {
        "positions": len(cls),
        "unshifted": int((cls == UNSHIFTED).sum()),
        "marginal": int((cls == MARGINAL).sum()),
        "shifted": int((cls == SHIFTED).sum()),
        "aligned_only": int((cls == ALIGNED_ONLY).sum()),
        "mismatch": int(ex["greedy_mismatch"].sum()),
        "shifted_share": _finite(ex["shifted_share"]),
        "max_kl": _finite(ex["max_kl"]),
        "mean_kl": _finite(ex["mean_kl"]),
        "first_shifted": ex["first_shifted"],
        "spikes": ex["spikes"],
        "n_truncated": ex["n_truncated"],
    }


def answer_html(ex: dict, tokens: dict[int, str]) -> Markup:
    """The answer as one focusable span per token, coloured by class, spikes marked; every text part escaped.

    A token's span holds its part of the answer text (`ex["spans"]`), so the answer reads exactly as its text;
    a token with no text of its own (part of a character that a later token completes) is an empty span,
    which the style sheet marks, titled with what the token is (its bytes, `<0xF0><0x9F>`). A token whose text
    shows nothing by itself (`tokentext.zero_width_spans`: a combining mark, a ZWJ, a variation selector, the rest of
    a character cluster an earlier token started) keeps its text,
    so the answer still reads as written, and gets the class `zw`, which the style sheet follows with the same
    stub, titled with its code points; whitespace and control characters show as their marks (`visible_parts`).
    Built here rather than in a template loop: it is the only per-token markup, and a page can hold
    thousands of tokens.
    """
    spans = []
    rows = zip(ex["spans"], ex["response_ids"].tolist(), ex["cls"].tolist(), ex["top1_differs"].tolist(), ex["spike"].tolist(),
               zero_width_spans(ex["spans"]))
    for t, (text, i, c, d, spike, zw) in enumerate(rows):
        inner = "".join(
            (f'<span class="ws">{escape(part)}</span>' + ("<br>" if part == NEWLINE else "<wbr>")) if ws else str(escape(part))
            for ws, part in visible_parts(text)
        )
        marks = (" u" if d else "") + (" spike" if spike else "") + (" zw" if zw else "")
        what = show_token(tokens.get(i, f"<{i}>")) if not inner else code_points(text) if zw else None
        title = f' title="{escape(what)}"' if what is not None else ""
        spans.append(f'<span class="tok c{int(c)}{marks}"{title} tabindex="0" role="button" data-t="{t}">{inner}</span>')
    return Markup("".join(spans))


def render_example(env, pair: str, ex: dict, tokens: dict, n: int, pages: int, k: int = 10,
                   kl: str = "", spike_threshold: float | None = None) -> str:
    return env.get_template("example.html").render(
        pair=pair,
        ex=ex,
        kl=kl,
        spike_threshold=spike_threshold,
        answer=answer_html(ex, tokens),
        counts=class_counts(ex),
        data=page_data(ex, tokens, k),
        prev_page=f"{n - 1}.html" if n > 0 else None,
        next_page=f"{n + 1}.html" if n + 1 < pages else None,
    )


# Index columns shown only when some example has a value there: (header, row key).
INDEX_EXTRA = (("Aligned-only", "aligned_only"), ("Not scored (cut)", "n_truncated"))


def index_rows(examples: list[dict], pages: int) -> list[dict]:
    """One row per example page: class shares of the classed positions and the per-example measures (None: no classed
    positions, e.g. an empty answer), aligned-only positions, tokens not scored, slice labels."""
    rows = []
    for n, ex in enumerate(examples[:pages]):
        c = class_counts(ex)
        classed = c["unshifted"] + c["marginal"] + c["shifted"]
        share = {name: c[name] / classed if classed else None for name in ("shifted", "marginal", "unshifted")}
        rows.append({
            "n": n, "id": id_key(ex["id"]), "query": ex["query"], "page": f"{n}.html", "positions": c["positions"], **share,
            "max_kl": c["max_kl"], "mean_kl": c["mean_kl"], "first_shifted": c["first_shifted"], "spikes": c["spikes"],
            "aligned_only": c["aligned_only"], "n_truncated": c["n_truncated"], "slices": ex["slices"],
        })
    return rows


def render_summary(env, summary: dict, pages: dict | None = None, min_count: int = 5) -> str:
    """summary.html; `pages` maps an example's data index to its page (examples without one are not linked)."""
    from .plots import class_bars, entropy_plot, position_curves, relative_curves

    slice_figures = {
        name: {"bars": Markup(class_bars(list(labels.items()))), "relative": Markup(relative_curves(list(labels.items())))}
        for name, labels in summary["slices"].items()
    }
    return env.get_template("summary.html").render(
        summary=summary,
        min_count=min_count,
        pages=pages or {},
        bars_svg=Markup(class_bars([(summary["pair"], summary)])),
        curves_svg=Markup(position_curves(summary, min_count)),
        relative_svg=Markup(relative_curves([(summary["pair"], summary)])),
        entropy_svg=Markup(entropy_plot(summary["entropy"])) if summary["entropy"] else None,
        slice_figures=slice_figures,
    )


def generate_html(pair: str, data: str | Path | None = None, out: str | Path | None = None, limit: int | None = None) -> Path:
    """Write DIR/index.html, DIR/<n>.html per example (the first `limit`), DIR/summary.html and DIR/summary.json."""
    from tqdm.auto import tqdm

    data = Path(data) if data else default_output(pair)
    if not data.exists():
        raise UserError(f"{data}: no prepared data (run src/demo/data_prep.py {pair} I2I_PKL I2B_PKL first, or pass --data)")
    if limit is not None and limit < 0:
        raise UserError(f"--limit must be >= 0, got {limit}")
    prepared = load_prepared(data)
    out = Path(out) if out else default_folder(pair)
    out.mkdir(parents=True, exist_ok=True)
    env = environment()
    examples = prepared["examples"]
    pages = len(examples) if limit is None else min(limit, len(examples))
    summary = summarize(prepared)
    tokens = prepared["tokens"]

    for n in tqdm(range(pages), desc="pages", unit="page", disable=pages < 50):
        html = render_example(env, prepared["pair"], examples[n], tokens, n, pages, min(10, prepared["top_k"]),
                              prepared["kl"], prepared["spike_threshold"])
        atomic_write_bytes(out / f"{n}.html", html.encode(), durable=False)
    for stale in out.iterdir():  # pages of an earlier, longer run would be unreachable leftovers
        if PAGE_RE.match(stale.name) and int(stale.stem) >= pages and is_our_page(stale):
            stale.unlink()
    rows = index_rows(examples, pages)
    extra = [(name, key) for name, key in INDEX_EXTRA if any(row[key] for row in rows)]
    index = env.get_template("index.html").render(
        pair=prepared["pair"], models=summary["models"], summary=summary, rows=rows, pages=pages,
        slice_fields=prepared["slice_fields"], extra=extra,
    )
    atomic_write_bytes(out / "index.html", index.encode(), durable=False)
    linked = {int(ex["index"]): f"{n}.html" for n, ex in enumerate(examples[:pages])}
    atomic_write_bytes(out / "summary.html", render_summary(env, summary, linked).encode(), durable=False)
    write_summary(out / "summary.json", summary)
    log.info(f"wrote {pages} example pages, index.html and summary.html to {out}")
    return out / "index.html"

