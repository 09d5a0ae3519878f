"""The generated pages in a real headless Chromium (Debian's `chromium`, driven by Playwright), from file://.

Chromium is a hard requirement of the test suite: `make test` installs it, and a missing browser
fails this test rather than skipping it. CHROMIUM=/path/to/chromium points at another build.
"""

from __future__ import annotations

import os
import shutil

import pytest

from aligntds.prepare import load_prepared
from conftest import HOSTILE_ANSWER, HOSTILE_PROMPT

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic"]


def visible(text: str) -> str:
    """What the page shows for a token in a table (the page's own visible())."""
    return text.replace(" ", "·").replace("\n", "↵").replace("\t", "→") or "∅"


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
        assert shown[0] == "entropy" and shown[2] == "nats" and float(shown[1]) == pytest.approx(ex[f"{side}_entropy"][t], abs=1.1e-3)
    first = rows.nth(1)
    assert first.locator("td.base-token").inner_text() == visible(tokens[int(ex["base_top_ids"][t, 0])])
    assert first.locator("td.aligned-token").inner_text() == visible(tokens[int(ex["aligned_top_ids"][t, 0])])
    assert "shifted" in page.inner_text("#content .position")
    base_prefix = page.inner_text("#content .prefix.base .text")
    expected = ex["base_prompt"] + "".join(tokens[i] for i in ex["response_ids"][:t].tolist())
    assert base_prefix.strip() == expected.strip()
    # The aligned top-1 is marked in the base column wherever it appears there.
    marked = page.locator("#content td.base-token .mark")
    in_base = int(ex["aligned_top_ids"][t, 0]) in ex["base_top_ids"][t].tolist()
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
    shifted = lambda: [float(v) for v in page.locator("#examples tbody td:nth-child(5)").evaluate_all("els => els.map(e => e.dataset.value)")]  # noqa: E731
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
