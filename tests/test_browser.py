"""The generated pages in a real headless Chromium (Debian's `chromium`, driven by Playwright), from file://.

Besides the tiny pair's pages (`report`), the pages of answers in many scripts (`multilingual`: emoji with a ZWJ
sequence and a flag, CJK, Hebrew and Arabic, Devanagari, e + U+0301) scored with a byte-level BPE tokenizer and with
Mistral's SentencePiece tokenizer, whose tokens split characters: each answer must read exactly, with no U+FFFD.

Chromium is a hard requirement of the test suite: `make test` installs it, and a missing browser
fails this test rather than skipping it. CHROMIUM=/path/to/chromium points at another build.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from aligntds.cli.compare_pairs import main as compare_pairs
from aligntds.cli.data_prep import main as data_prep
from aligntds.cli.generate_html import main as generate_html
from aligntds.cli.logit_analysis import main as logit_analysis
from aligntds.data_prep import load_prepared
from aligntds.store import load_records
from aligntds.summary import format_summary
from aligntds.tiny import save_pair_member, tiny_model
from aligntds.tokentext import MARKS, WHITESPACE, show_token, zero_width
from helpers import HOSTILE_ANSWER, HOSTILE_PROMPT, MULTILINGUAL_ANSWERS, slow_answer_spans, sp_folder, write_data

pytestmark = pytest.mark.slow  # a real browser, and the pipeline on answers in many scripts

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic"]


visible = show_token  # what the page shows for a token in a table (the page's visible() gets its marks)


def unmarked(shown: str) -> str:
    """The answer's text back from what the page shows: whitespace and control marks undone (a line break is a mark and
    <br>)."""
    shown = shown.replace(WHITESPACE["\n"] + "\n", "\n")
    for ch, mark in MARKS.items():
        shown = shown.replace(mark, ch)
    return shown


# A carriage return (the HTML parser reads a raw one as a line break), control characters, and a ZWJ and a variation
# selector that both tokenizers put in tokens of their own.
CONTROL_ANSWER = "Line one\r\nline two \x1b[1mbold\x08 ok \u200d x\ufe0f!</s>"
PAGE_ANSWERS = [*MULTILINGUAL_ANSWERS, CONTROL_ANSWER]


@pytest.fixture(scope="module")
def browser():
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's chromium (make test does) or set CHROMIUM")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    """A page that records console errors, uncaught exceptions, dialogs and any request off file://."""
    ctx = browser.new_context()
    p = ctx.new_page()
    p.problems = []
    p.on("console", lambda m: m.type == "error" and p.problems.append(f"console: {m.text}"))
    p.on("pageerror", lambda e: p.problems.append(f"exception: {e}"))
    p.on("dialog", lambda d: (p.problems.append(f"dialog: {d.message}"), d.dismiss()))
    p.on("request", lambda r: r.url.startswith(("file:", "data:", "about:")) or p.problems.append(f"request: {r.url}"))
    yield p
    ctx.close()


def test_clicking_a_shifted_token_shows_both_distributions(page, report):
    prep = load_prepared(report["prepared"])
    n = 1
    ex = prep["examples"][n]
    t = int(next(i for i, c in enumerate(ex["cls"]) if c == 2))  # a shifted position
    tokens = prep["tokens"]
    page.goto((report["html"] / f"{n}.html").as_uri())
    page.click(f'#answer .tok[data-t="{t}"]')
    rows = page.locator("#content table tr")
    assert rows.count() == 12  # header + top-10 + both entropies
    for side in ("base", "aligned"):  # shown in nats to 3 decimals
        shown = page.inner_text(f"#content td.{side}-entropy").split()
        assert shown[0] == "entropy" and shown[2] == "nats"
        assert float(shown[1]) == pytest.approx(ex[f"{side}_entropy"][t], abs=1.1e-3)
    first = rows.nth(1)
    assert first.locator("td.base-token").inner_text() == visible(tokens[int(ex["base_topk_ids"][t, 0])])
    assert first.locator("td.aligned-token").inner_text() == visible(tokens[int(ex["aligned_topk_ids"][t, 0])])
    assert "shifted" in page.inner_text("#content .position")
    base_prefix = page.inner_text("#content .prefix.base .text")
    assert base_prefix.strip() == (ex["base_prompt"] + "".join(ex["spans"][:t])).strip()
    # The aligned top-1 is marked in the base column wherever it appears there.
    marked = page.locator("#content td.base-token .mark")
    in_base = int(ex["aligned_topk_ids"][t, 0]) in ex["base_topk_ids"][t].tolist()
    assert marked.count() == (1 if in_base else 0)
    assert page.locator(f'#answer .tok.sel[data-t="{t}"]').count() == 1
    assert page.problems == []


def test_keyboard_access(page, report):
    page.goto((report["html"] / "1.html").as_uri())
    for _ in range(30):  # Tab through the page until a token has the focus
        page.keyboard.press("Tab")
        focused = page.evaluate("document.activeElement.classList.contains('tok') ? document.activeElement.dataset.t : null")
        if focused is not None:
            break
    assert focused is not None, "no answer token is reachable with Tab"
    page.keyboard.press("Enter")
    assert page.inner_text("#content .position").startswith(f"Position {focused}:")
    page.keyboard.press("Tab")
    page.keyboard.press(" ")
    assert page.inner_text("#content .position").startswith(f"Position {int(focused) + 1}:")
    assert page.problems == []


def test_hostile_text_renders_literally(page, report):
    page.goto((report["html"] / "0.html").as_uri())
    assert page.inner_text("#prompt") == HOSTILE_PROMPT
    assert page.locator("#answer img, #prompt img, #prompt b, #answer script").count() == 0
    shown = page.inner_text("#answer").replace("·", " ").replace("↵", "")
    assert shown.replace("\n", "") == HOSTILE_ANSWER
    page.click('#answer .tok[data-t="5"]')
    assert "<script>alert('prompt')</script>" in page.inner_text("#content .prefix.aligned .text")
    assert page.problems == []  # no alert dialog, no error


def test_index_sorts_and_summary_renders(page, report):
    page.goto((report["html"] / "index.html").as_uri())

    def shifted():  # the empty answer has no share ("-"): last either way
        values = page.locator("#examples tbody td:nth-child(5)").evaluate_all("els => els.map(e => e.dataset.value)")
        assert values[-1] == "" and "" not in values[:-1]
        return [float(v) for v in values[:-1]]

    page.click("th button[data-col='4']")
    assert shifted() == sorted(shifted())
    page.click("th button[data-col='4']")
    assert shifted() == sorted(shifted(), reverse=True)
    page.click("#examples tbody tr:first-child td:nth-child(2) a")
    assert page.url.endswith(".html") and page.locator("#answer").count() == 1
    page.goto((report["html"] / "summary.html").as_uri())
    assert page.locator(".figure svg").count() == 4  # class bars, two curves, entropy
    assert page.locator("#ratios tr").count() == 4
    assert page.problems == []


HOSTILE_LABEL = "<i>x</i> & $y$"


@pytest.fixture(scope="module")
def sliced(tmp_path_factory, report):
    """The report's records sliced by two fields (one label is hostile markup), and a three-stage chain page."""
    root = tmp_path_factory.mktemp("sliced")
    labels = root / "labels.json"
    labels.write_text(json.dumps({"0": {"topic": HOSTILE_LABEL, "source": "web"}, "1": {"topic": "facts"},
                                  "3": {"topic": "facts", "source": "books"}}))
    i2i, i2b = report["root"] / "i2i/r-i2i.pkl", report["root"] / "i2b/r-i2b.pkl"
    assert data_prep(["r", str(i2i), str(i2b), "--out", str(root / "s.pkl"), "--slices", str(labels)]) == 0
    assert generate_html(["r", "--data", str(root / "s.pkl"), "--out", str(root / "html")]) == 0
    summary = json.loads((root / "html" / "summary.json").read_text())
    stages = []
    for k in range(3):  # stage k lists the first k + 1 of the corpus's shifted tokens
        stage = {**summary, "pair": f"stage{k + 1}", "top_shifted_tokens": summary["top_shifted_tokens"][: k + 1]}
        stages.append(root / f"stage{k + 1}.json")
        stages[-1].write_text(json.dumps(stage))
    assert compare_pairs(["--chain", *map(str, stages), "--out", str(root / "chain")]) == 0
    return {"html": root / "html", "chain": root / "chain", "summary": summary}


def test_summary_page_with_slices(page, sliced):
    page.goto((sliced["html"] / "summary.html").as_uri())
    sections = page.locator("section.slice")
    assert sections.count() == 2  # in the labels file's order
    assert [sections.nth(n).locator("h2").inner_text() for n in range(2)] == ["By topic", "By source"]
    for n in range(2):
        assert sections.nth(n).locator(".figure svg").count() == 2  # class ratios per label, shifted rate by position
    topic = sections.nth(0)
    assert topic.locator("table.slice-labels tr").count() == 4  # header, facts, the hostile label, null
    assert HOSTILE_LABEL in topic.inner_text() and page.locator("section.slice i").count() == 0  # shown as text
    assert page.locator("#entropy").count() == 1 and page.locator("#forking-tokens tr").count() > 1
    first = sliced["summary"]["top_examples"]["max_kl"][0]
    page.click("#top-max-kl a >> nth=0")
    assert page.url.endswith(f"/{first['index']}.html") and page.locator("#answer").count() == 1
    assert page.problems == []


def test_index_sorts_new_columns_with_missing_values_last(page, sliced):
    page.goto((sliced["html"] / "index.html").as_uri())

    def column(n):
        return page.locator(f"#examples tbody td:nth-child({n})").evaluate_all("els => els.map(e => e.dataset.value)")

    assert page.inner_text("#examples th:nth-child(12)") == "topic" and page.inner_text("#examples th:nth-child(13)") == "source"
    for _ in range(2):  # descending, then ascending: the empty answer (no KL) stays last
        page.click("th button[data-col='7']")
        values = column(8)
        assert values[-1] == "" and all(v != "" for v in values[:-1])
        numbers = [float(v) for v in values[:-1]]
        assert numbers in (sorted(numbers), sorted(numbers, reverse=True))
    assert page.problems == []


def test_chain_page(page, sliced):
    page.goto((sliced["chain"] / "index.html").as_uri())
    assert page.locator(".figure svg").count() == 3
    assert page.locator("#stages tr").count() == 4
    firsts = page.locator("#chain-tokens tr[data-first]").evaluate_all("els => els.map(e => e.dataset.first)")
    assert firsts == ["1", "2", "3"]  # each stage adds one shifted token
    assert page.problems == []


# -- answers in many scripts -------------------------------------------------------------------------------

CLICK_EVERY_TOKEN = """() => Array.from(document.querySelectorAll('#answer .tok')).map(span => {
  span.click();
  const content = document.getElementById('content');
  return {text: content.innerText, aligned: content.querySelector('.prefix.aligned .text').textContent,
          base: content.querySelector('.prefix.base .text').textContent};
})"""


@pytest.fixture(scope="module", params=["bpe", "sentencepiece"])
def multilingual(request, tmp_path_factory, tok_multi):
    """i2i, i2b, data_prep, generate_html, compare_pairs (a comparison and a chain) on PAGE_ANSWERS, with a
    tiny random Llama pair on a byte-level BPE tokenizer (`tok_multi`) or on Mistral-7B's SentencePiece tokenizer."""
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp(f"multilingual-{request.param}")
    tok = tok_multi if request.param == "bpe" else AutoTokenizer.from_pretrained(sp_folder(root, "v1", legacy=False))
    models = {role: save_pair_member(root / role, tiny_model("llama", len(tok), seed=seed), tok)
              for role, seed in (("base", 1), ("aligned", 2))}
    data = write_data(root / "data.json", [(f"Question {n}?", a) for n, a in enumerate(PAGE_ANSWERS)])
    common = ["--data_file", str(data), "--pair", "m", "--logits_folder", str(root / "shards")]
    assert logit_analysis([*common, "--mode", "i2i", "--aligned_model", str(models["aligned"])]) == 0
    i2i = root / "shards" / "m-i2i.[0:3].pkl"
    assert logit_analysis([*common, "--mode", "i2b", "--base_model", str(models["base"]), "--enable_template",
                           "--i2i_pkl_file", str(i2i)]) == 0
    prepared = root / "m.pkl"
    assert data_prep(["m", str(i2i), str(root / "shards" / "m-i2b.[0:3].pkl"), "--out", str(prepared)]) == 0
    assert generate_html(["m", "--data", str(prepared), "--out", str(root / "html")]) == 0
    summary = root / "html" / "summary.json"
    assert compare_pairs([str(summary), str(summary), "--labels", "a,b", "--out", str(root / "compare")]) == 0
    assert compare_pairs(["--chain", str(summary), str(summary), "--labels", "a,b", "--out", str(root / "chain")]) == 0
    return {"root": root, "kind": request.param, "tok": tok, "html": root / "html",
            "prepared": load_prepared(prepared), "i2i": load_records(i2i),
            "summary": json.loads(summary.read_text())}


def test_each_script_is_shown_exactly(page, multilingual):
    """The answer reads as its text; no U+FFFD in the page or in what clicking every token shows (top-10 tables, the
    position's token: its bytes where it is part of a character); the prefixes are the prompts and the decoded text."""
    tok, prep = multilingual["tok"], multilingual["prepared"]
    parts = 0
    zero_width_tokens = 0
    for n, (answer, ex, rec) in enumerate(zip(PAGE_ANSWERS, prep["examples"], multilingual["i2i"])):
        html = (multilingual["html"] / f"{n}.html").read_text(encoding="utf-8")
        island = json.loads(html.split('id="tds-data">')[1].split("</script>")[0])  # JSON escapes U+FFFD as \ufffd
        assert "\ufffd" not in html + json.dumps(island, ensure_ascii=False)
        page.goto((multilingual["html"] / f"{n}.html").as_uri())
        assert unmarked(page.inner_text("#answer")) == answer
        assert "".join(ex["spans"]) == answer
        ids, prompt_ids = rec["response_ids"].tolist(), rec["prompt_ids"].tolist()
        expected = slow_answer_spans(tok, ids, ex["aligned_prompt"], prompt_ids)
        shown = page.evaluate(CLICK_EVERY_TOKEN)
        assert len(shown) == len(ids)
        # SentencePiece: the answer's first token carries a space that the base template (ending in ```) lacks
        assert ex["base_boundary"] == ("" if multilingual["kind"] == "bpe" else " ") and ex["aligned_boundary"] == ""
        for t, got in enumerate(shown):
            assert "\ufffd" not in got["text"], (t, got["text"])
            assert got["aligned"] == ex["aligned_prompt"] + "".join(expected[:t])
            assert got["base"] == ex["base_prompt"] + (ex["base_boundary"] if t else "") + "".join(expected[:t])
            if "\ufffd" in tok.decode(ids[t: t + 1]):  # only part of a character: the position shows its bytes
                parts += 1
                assert visible(prep["tokens"][ids[t]]) in got["text"].split("\n")[0] and "<0x" in prep["tokens"][ids[t]]
        assert "\ufffd" not in page.inner_text("body")
        # every token can be seen and clicked: a token whose text shows nothing by itself (a combining mark, a ZWJ) has a
        # stub, titled with its code points
        widths = page.locator("#answer .tok").evaluate_all("els => els.map(e => e.getBoundingClientRect().width)")
        assert [t for t, w in enumerate(widths) if w < 2] == []
        for t in (t for t, span in enumerate(expected) if zero_width(span)):
            zero_width_tokens += 1
            assert page.get_attribute(f'#answer .tok[data-t="{t}"]', "title").startswith(f"U+{ord(expected[t][0]):04X} ")
            page.click(f'#answer .tok[data-t="{t}"]')
            assert page.inner_text("#content .position").startswith(f"Position {t}: ")
        # a token with no text of its own is a stub, titled with its bytes and clicked like any other
        stub = next((t for t, span in enumerate(expected) if not span and "<0x" in prep["tokens"][ids[t]]), None)
        if stub is not None:
            assert page.get_attribute(f'#answer .tok[data-t="{stub}"]', "title") == visible(prep["tokens"][ids[stub]])
            page.click(f'#answer .tok[data-t="{stub}"]')
            assert page.inner_text("#content .position").startswith(f"Position {stub}: ")
        assert page.problems == []
    assert parts >= 8  # 🦩, 鬱 and the flag split in both vocabularies, and more
    assert zero_width_tokens >= 5  # U+0301, the virama and a vowel sign, the ZWJ and the variation selector


def test_token_lists_show_bytes_never_u_fffd(multilingual):
    """The summary's token lists, the terminal summary, the index, the comparison and the chain pages."""
    html, summary = multilingual["html"], multilingual["summary"]
    pages = [html / "summary.html", html / "index.html", multilingual["root"] / "compare" / "index.html",
             multilingual["root"] / "chain" / "index.html", multilingual["root"] / "chain" / "chain.json"]
    for path in pages:
        assert "\ufffd" not in path.read_text(encoding="utf-8"), path
    assert "\ufffd" not in json.dumps(summary, ensure_ascii=False) and "\ufffd" not in format_summary(summary)
    tokens = multilingual["prepared"]["tokens"]
    assert "\ufffd" not in "".join(tokens.values()) and any("<0x" in s for s in tokens.values())
