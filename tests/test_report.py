"""data_prep, the summary, generate_html and compare_pairs, on records the real pipeline wrote for tiny models."""

from __future__ import annotations

import csv
import json
import pickle
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from aligntds.cli.compare_pairs import main as compare_pairs
from aligntds.cli.data_prep import main as data_prep
from aligntds.cli.generate_html import main as generate_html
from aligntds.cli.logit_analysis import main as logit_analysis
from aligntds.compare import token_overlap
from aligntds.data import REFERENCE_TEMPLATE
from aligntds.data_prep import load_prepared
from aligntds.metrics import shift_class, topk_metrics
from aligntds.records import make_record
from aligntds.scoring import Request
from aligntds.store import load_records, save_records
from aligntds.tiny import save_pair_member, tiny_model
from aligntds.tokentext import answer_spans, token_strings
from helpers import REPORT_EXAMPLES, one_error_line, reference_pickle


def test_prepared_data_matches_the_records(report):
    prep = load_prepared(report["prepared"])
    assert prep["pair"] == "r" and prep["source"] == "aligntds" and prep["top_k"] == 30
    assert [ex["query"] for ex in prep["examples"]] == [q for q, _ in REPORT_EXAMPLES]  # the template stripped off
    for ex, a, b in zip(prep["examples"], report["i2i"], report["i2b"]):
        np.testing.assert_array_equal(ex["cls"], shift_class(b["aligned_rank"]))
        np.testing.assert_allclose(ex["base_prob"], np.exp(b["aligned_logprob"]), rtol=1e-6)
        np.testing.assert_array_equal(ex["greedy_mismatch"], a["token_rank"] > 0)
        np.testing.assert_array_equal(ex["top1_differs"], a["topk_ids"][:, 0] != b["topk_ids"][:, 0])
        if len(a["response_ids"]):
            direct = topk_metrics(b["topk_ids"], b["topk_logprobs"], a["topk_ids"], a["topk_logprobs"], 10)
            for name in ("kl", "jaccard", "ws", "ndcg", "tr", "tp"):
                np.testing.assert_allclose(ex["metrics"][f"{name}@10"], direct[name], rtol=1e-5, atol=1e-6)
    # Token strings: the answer's pieces put together give the answer back; so do the answer's spans.
    first = prep["examples"][1]
    assert "".join(prep["tokens"][i] for i in first["response_ids"].tolist()) == REPORT_EXAMPLES[1][1]
    assert ["".join(ex["spans"]) for ex in prep["examples"]] == [a for _, a in REPORT_EXAMPLES]
    assert [len(ex["spans"]) for ex in prep["examples"]] == [len(a["response_ids"]) for a in report["i2i"]]

    positions = sum(len(a["response_ids"]) for a in report["i2i"])
    with open(report["prepared"].with_suffix(".curves.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == positions
    assert {"step", "class", "kl@10", "kl@30", "jaccard@10", "ndcg@30", "tr@30", "tp@30", "ws@10"} <= rows[0].keys()
    summary = json.loads(report["prepared"].with_suffix(".summary.json").read_text())
    assert summary["positions"] == positions and summary["examples"] == 4
    assert summary == json.loads((report["html"] / "summary.json").read_text())


def _records(tmp_path, ranks, top1, token_rank, ids=None):
    """Hand-made i2i/i2b records with known aligned ranks (the classes) and aligned top-1 ids (`ids`: the examples' ids,
    default their index)."""
    meta_a = {"mode": "i2i", "model": "m", "top_k": 3}
    meta_b = {"mode": "i2b", "model": "b", "top_k": 3, "template": None}
    a_recs, b_recs = [], []
    for i, (r, t1, tr) in enumerate(zip(ranks, top1, token_rank)):
        t = len(r)
        req = Request([1], list(range(10, 10 + t)))
        top = np.stack([np.array(t1), np.full(t, 40), np.full(t, 41)], axis=1).astype(np.int32)
        lp = np.log(np.tile([0.5, 0.3, 0.1], (t, 1))).astype(np.float32)
        stats = {"topk_ids": top, "topk_logprobs": lp, "token_logprob": lp[:, 0], "token_rank": np.array(tr, np.int32),
                 "entropy": np.ones(t, np.float32)}
        common = dict(index=i, id=i if ids is None else ids[i], answer_text="x",
                      prompt_ids=[req.prompt_ids], response_ids=req.response_ids, n_truncated=0)
        a_recs.append(make_record("i2i", **common, prompts=["p"], stats=stats, meta=meta_a, final_generated_text="x"))
        base = {**stats, "topk_ids": top[:, ::-1].copy(), "aligned_rank": np.array(r, np.int32),
                "aligned_logprob": np.log(np.full(t, 0.25)).astype(np.float32)}
        b_recs.append(make_record("i2b", **common, prompts=["q"], stats=base, meta=meta_b))
    save_records(tmp_path / "a.pkl", a_recs)
    save_records(tmp_path / "b.pkl", b_recs)
    return tmp_path / "a.pkl", tmp_path / "b.pkl"


def test_summary_counts_on_known_classes(tmp_path, pair_llama, tok_bos):
    a, b = _records(tmp_path, ranks=[[0, 0, 1, 5, 0], [3, 2, 0]], top1=[[50, 51, 52, 50, 53], [50, 51, 51]],
                    token_rank=[[0, 0, 0, 2, 0], [0, 0, 0]])
    assert data_prep(["known", str(a), str(b), "--out", str(tmp_path / "k.pkl"), "--tokenizer", str(pair_llama["aligned"])]) == 0
    s = json.loads((tmp_path / "k.summary.json").read_text())
    assert (s["examples"], s["positions"], s["unshifted"], s["marginal"], s["shifted"]) == (2, 8, 4, 2, 2)
    assert s["ratios"] == {"unshifted": 0.5, "marginal": 0.25, "shifted": 0.25}
    text = lambda i: tok_bos.decode([tok_bos("a", add_special_tokens=False)["input_ids"][0], i])[1:]  # noqa: E731
    # Shifted positions: id 50 at (0, 3) and (1, 0): 2 of the 3 positions whose aligned top-1 is 50.
    assert s["top_shifted_tokens"] == [[text(50), 2, round(2 / 3, 4)]]
    assert s["top_unshifted_tokens"] == [[text(51), 2, round(2 / 3, 4)], [text(50), 1, round(1 / 3, 4)], [text(53), 1, 1.0]]
    absolute = s["by_position"]["absolute"]
    assert [r["count"] for r in absolute] == [2, 2, 2, 1, 1]
    assert [r["shifted_rate"] for r in absolute] == [0.5, 0.0, 0.0, 1.0, 0.0]
    assert absolute[0]["mean_base_rank"] == 2.5 and absolute[0]["mean_base_prob"] == pytest.approx(0.25)  # 1-based ranks 1, 4
    assert s["greedy_mismatch"] == {"positions": 1, "ratio": 0.125, "examples": 1, "rest_ratio": 0.166667,
                                   "first_position": {"examples": 2, "mismatches": 0, "ratio": 0.0}}
    assert s["ties"] == 0
    relative = s["by_position"]["relative"]
    assert sum(r["count"] for r in relative) == 8
    assert relative[0]["shifted_rate"] == 0.5  # positions 0 of both answers


def test_no_positions_means_no_ratios(tmp_path, pair_llama, capsys):
    """A slice whose answers are all empty, and a corpus of only empty answers: ratios null (no 0.0 that reads as
    'never shifted'), '-' on the pages and in the printout; the corpus keeps the records' top_k."""
    a, b = _records(tmp_path, ranks=[[0, 5, 1], []], top1=[[50, 51, 52], []], token_rank=[[0, 0, 0], []])
    (tmp_path / "part.json").write_text(json.dumps({"0": "full", "1": "empty"}))
    tok = ["--tokenizer", str(pair_llama["aligned"])]
    labels = ["--slices", str(tmp_path / "part.json")]
    assert data_prep(["mixed", str(a), str(b), "--out", str(tmp_path / "m.pkl"), *labels, *tok]) == 0
    s = json.loads((tmp_path / "m.summary.json").read_text())
    assert s["slices"]["part"]["empty"]["ratios"] == {"unshifted": None, "marginal": None, "shifted": None}
    assert s["slices"]["part"]["full"]["ratios"]["shifted"] == round(1 / 3, 6)
    assert "part=empty: 1 examples, 0 positions, - / - / - unshifted / marginal / shifted" in capsys.readouterr().out
    assert generate_html(["mixed", "--data", str(tmp_path / "m.pkl"), "--out", str(tmp_path / "h")]) == 0
    rows = (tmp_path / "h" / "index.html").read_text().split("<tbody>")[1].split("</tr>")
    assert '<td class="num c0" data-value="">-</td>' in rows[1] and '<td class="num c2" data-value="">-</td>' in rows[1]
    labels = (tmp_path / "h" / "summary.html").read_text().split('class="slice-labels"')[1].split("</table>")[0]
    assert '<td class="num c1">-</td>' in labels

    (tmp_path / "e").mkdir()
    c, d = _records(tmp_path / "e", ranks=[[], []], top1=[[], []], token_rank=[[], []])
    assert data_prep(["empty", str(c), str(d), "--out", str(tmp_path / "e.pkl"), *tok]) == 0
    s = json.loads((tmp_path / "e.summary.json").read_text())
    assert s["top_k"] == 3 and load_prepared(tmp_path / "e.pkl")["top_k"] == 3  # the records', not 10
    assert s["ratios"] == {"unshifted": None, "marginal": None, "shifted": None} and s["positions"] == 0
    assert "  shifted            0       -" in capsys.readouterr().out
    assert generate_html(["empty", "--data", str(tmp_path / "e.pkl"), "--out", str(tmp_path / "he")]) == 0
    assert "- unshifted" in (tmp_path / "he" / "index.html").read_text()


def test_ids_that_are_not_strings(tmp_path, pair_llama, capsys):
    """Ids null, true, 3 and 2.5 show as JSON writes them (not None, True) on the pages, in the printout and the curves, and
    are their --slices keys; ids that repeat are one warning with their count."""
    ids = [None, True, 3, 2.5, None, "x"]
    ranks = [[5, 0], [5, 5], [0, 0], [5, 0], [0, 0], [0, 0]]
    a, b = _records(tmp_path, ranks=ranks, top1=[[50, 51]] * 6, token_rank=[[0, 0]] * 6, ids=ids)
    (tmp_path / "src.json").write_text(json.dumps({"null": "n", "true": "t", "3": "three", "2.5": "half", "x": "ex"}))
    assert data_prep(["ids", str(a), str(b), "--out", str(tmp_path / "i.pkl"), "--slices", str(tmp_path / "src.json"),
                      "--tokenizer", str(pair_llama["aligned"])]) == 0
    out, err = capsys.readouterr()
    assert err.count("have the id of an earlier example") == 1 and "warning: 1 examples have the id of an earlier example (the " \
        "first: null)" in err
    assert "None" not in out and "True" not in out and "most shifted examples by shifted share: true (1), null (0.5)" in out
    prep = load_prepared(tmp_path / "i.pkl")
    assert [ex["slices"]["src"] for ex in prep["examples"]] == ["n", "t", "three", "half", "n", "ex"]
    with open(tmp_path / "i.curves.csv") as f:
        assert [row["id"] for row in csv.DictReader(f)][::2] == ["null", "true", "3", "2.5", "null", "x"]
    assert generate_html(["ids", "--data", str(tmp_path / "i.pkl"), "--out", str(tmp_path / "h")]) == 0
    for n, shown in enumerate(["null", "true", "3", "2.5"]):
        assert f"<h1>ID: {shown}</h1>" in (tmp_path / "h" / f"{n}.html").read_text()
    index, summary = (tmp_path / "h" / "index.html").read_text(), (tmp_path / "h" / "summary.html").read_text()
    assert '<a href="0.html">null</a>' in index and '<a href="1.html">true</a>' in index
    top = summary.split('id="top-shifted-share"')[1].split("</table>")[0]
    assert '<a href="1.html">true</a>' in top and '<a href="0.html">null</a>' in top
    assert ">None<" not in index + top and ">True<" not in index + top


def test_reference_pickles_are_accepted(tmp_path, capsys):
    i2i = reference_pickle(tmp_path / "i2i.pkl", [3, 2, 0], lambda e, p: [7, 8, 9, 10])
    # Base lists: the aligned top-1 (7) at index 0, 2, absent / 1, 5.
    base_ids = {(0, 0): [7, 1, 2, 3, 4, 5], (0, 1): [1, 2, 7, 3, 4, 5], (0, 2): [1, 2, 3, 4, 5, 6],
                (1, 0): [1, 7, 2, 3, 4, 5], (1, 1): [1, 2, 3, 4, 5, 7]}
    i2b = reference_pickle(tmp_path / "i2b.pkl", [3, 2, 0], lambda e, p: base_ids[e, p])
    assert data_prep(["ref", str(i2i), str(i2b), "--out", str(tmp_path / "ref.pkl")]) == 0
    prep = load_prepared(tmp_path / "ref.pkl")
    assert prep["source"] == "reference"
    assert [ex["cls"].tolist() for ex in prep["examples"]] == [[0, 1, 2], [1, 2], []]  # an empty answer too
    assert prep["examples"][0]["aligned_rank"].tolist() == [0, 2, -1]  # -1: beyond the stored list
    assert prep["examples"][0]["base_prob"][1] == pytest.approx(0.125)
    assert prep["tokens"][7] == "w7" and prep["examples"][0]["query"] == "q"
    assert prep["examples"][0]["spans"] == ["w7"] * 3  # the reference's own token strings
    s = json.loads((tmp_path / "ref.summary.json").read_text())
    assert s["greedy_mismatch"] is None and s["shifted"] == 2 and s["rank_unknown"] == 1
    assert s["provenance"] == {"aligned": "reference", "base": "reference"}

    short = reference_pickle(tmp_path / "short.pkl", [3, 1, 0], lambda e, p: base_ids[e, p])
    assert data_prep(["ref", str(i2i), str(short), "--out", str(tmp_path / "x.pkl")]) == 2
    one_error_line(capsys, "short.pkl", "record 1", "--truncate_mismatched")
    assert data_prep(["ref", str(i2i), str(short), "--out", str(tmp_path / "x.pkl"), "--truncate_mismatched"]) == 0
    assert [len(ex["cls"]) for ex in load_prepared(tmp_path / "x.pkl")["examples"]] == [3, 1, 0]
    other = reference_pickle(tmp_path / "other.pkl", [3, 2, 0], lambda e, p: base_ids[e, p], id_offset=5)
    assert data_prep(["ref", str(i2i), str(other), "--out", str(tmp_path / "y.pkl")]) == 2
    one_error_line(capsys, "other.pkl", "record 0 has id 5")


def test_reference_pickles_with_a_tokenizer(tmp_path, tok_bos, pair_llama):
    """--tokenizer gives the reference's pickles the tokenizer's token strings (by id, as for this tool's records) and
    spans cut from the answer ids decoded as a whole; without it, the pickles' own strings."""
    answer = tok_bos("Sure! Paris is the capital of France.", add_special_tokens=False)["input_ids"]
    others = tok_bos(" the cat sat on the mat", add_special_tokens=False)["input_ids"][:3]
    i2i = reference_pickle(tmp_path / "i2i.pkl", [len(answer)], lambda e, p: [answer[p], *others])
    i2b = reference_pickle(tmp_path / "i2b.pkl", [len(answer)], lambda e, p: [*others, answer[p]])
    assert data_prep(["ref", str(i2i), str(i2b), "--out", str(tmp_path / "own.pkl")]) == 0
    own = load_prepared(tmp_path / "own.pkl")
    assert own["examples"][0]["spans"] == [f"w{i}" for i in answer] and own["tokens"][answer[0]] == f"w{answer[0]}"
    assert data_prep(["ref", str(i2i), str(i2b), "--out", str(tmp_path / "tok.pkl"), "--tokenizer",
                      str(pair_llama["aligned"])]) == 0
    prep = load_prepared(tmp_path / "tok.pkl")
    assert prep["tokens"] == token_strings(tok_bos, [*answer, *others])
    assert prep["examples"][0]["spans"] == answer_spans(tok_bos, answer)
    assert "".join(prep["examples"][0]["spans"]) == "Sure! Paris is the capital of France."
    shifted = json.loads((tmp_path / "tok.summary.json").read_text())["top_shifted_tokens"]
    assert {t for t, _, _ in shifted} == {token_strings(tok_bos, answer)[i] for i in answer if i not in others}


@pytest.mark.parametrize("prob", [float("nan"), float("inf"), -0.25, 1.5])
def test_reference_pickles_with_a_prob_that_is_not_a_probability_are_refused(tmp_path, capsys, prob):
    """A NaN, infinite, negative or above-1 `prob` would put NaN into the metrics and curves: one line naming the file, the
    record and the position, and nothing written."""
    ok = reference_pickle(tmp_path / "i2i.pkl", [3, 2], lambda e, p: [7, 8, 9, 10])
    recs = pickle.loads(reference_pickle(tmp_path / "bad.pkl", [3, 2], lambda e, p: [1, 2, 7, 3]).read_bytes())
    recs[1]["results"][1]["tokens"][2]["prob"] = np.float32(prob)
    (tmp_path / "bad.pkl").write_bytes(pickle.dumps(recs, protocol=4))
    for a, b in ((ok, tmp_path / "bad.pkl"), (tmp_path / "bad.pkl", ok)):
        assert data_prep(["ref", str(a), str(b), "--out", str(tmp_path / "ref.pkl")]) == 2
        one_error_line(capsys, "bad.pkl", "record 1 (id=1), position 1: candidate 2 (token_id 7)", f"prob {float(prob)}",
                       "not a probability")
    assert not list(tmp_path.glob("ref.*"))


def test_reference_pickles_with_a_lone_surrogate_are_refused(tmp_path, capsys):
    ok = reference_pickle(tmp_path / "i2i.pkl", [2], lambda e, p: [7, 8, 9])
    for where, key in (("token", "the token string of id: '8'"), ("probe_text", "'probe_text'")):
        recs = pickle.loads(ok.read_bytes())
        if where == "token":
            recs[0]["results"][1]["tokens"][1]["token"] = "\ud83d"
        else:
            recs[0]["probe_text"] = "ok \udc80"
        (tmp_path / "bad.pkl").write_bytes(pickle.dumps(recs, protocol=4))
        assert data_prep(["ref", str(ok), str(tmp_path / "bad.pkl"), "--out", str(tmp_path / "ref.pkl")]) == 2
        one_error_line(capsys, "bad.pkl: record 0", key, "lone surrogate")


def test_data_prep_refuses_mismatched_records(tmp_path, report, capsys):
    i2i, i2b = report["root"] / "i2i/r-i2i.pkl", report["root"] / "i2b/r-i2b.pkl"
    b = load_records(i2b)
    save_records(tmp_path / "short.pkl", b[:3])
    assert data_prep(["r", str(i2i), str(tmp_path / "short.pkl"), "--out", str(tmp_path / "o.pkl")]) == 2
    one_error_line(capsys, "holds 4 examples", "3")
    b[1] = {**b[1], "id": "other"}
    save_records(tmp_path / "ids.pkl", b)
    assert data_prep(["r", str(i2i), str(tmp_path / "ids.pkl"), "--out", str(tmp_path / "o.pkl")]) == 2
    one_error_line(capsys, "ids.pkl", "example 1")
    b = load_records(i2b)
    b[3] = {k: v[:-1] if isinstance(v, np.ndarray) and k != "prompt_ids" else v for k, v in b[3].items()}  # one position short
    save_records(tmp_path / "len.pkl", b)
    assert data_prep(["r", str(i2i), str(tmp_path / "len.pkl"), "--out", str(tmp_path / "o.pkl")]) == 2
    one_error_line(capsys, "len.pkl", "example 3")
    assert data_prep(["r", str(tmp_path / "missing.pkl"), str(i2b)]) == 2
    one_error_line(capsys, "missing.pkl", "not found")
    assert data_prep(["r", str(i2b), str(i2i), "--out", str(tmp_path / "o.pkl")]) == 2
    one_error_line(capsys, "expected i2i")
    assert generate_html(["nothing-here", "--out", str(tmp_path / "h")]) == 2
    one_error_line(capsys, "no prepared data", "data_prep")


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls, self.scripts, self.tags = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        for key in ("src", "href"):
            if key in attrs:
                self.urls.append((tag, attrs[key]))
        if tag == "script":
            self.scripts.append(attrs)


def parse(path: Path) -> Links:
    p = Links()
    p.feed(path.read_text())
    return p


def test_pages_are_self_contained_and_links_resolve(report):
    html = report["html"]
    pages = sorted(html.glob("*.html"))
    assert {p.name for p in pages} == {"index.html", "summary.html", "0.html", "1.html", "2.html", "3.html"}
    for page in pages:
        text = page.read_text()
        parsed = parse(page)
        assert "link" not in parsed.tags and all("src" not in s for s in parsed.scripts), page  # inline CSS and JS only
        for tag, url in parsed.urls:
            assert not url.startswith(("http:", "https:", "//")), (page, tag, url)
            if tag == "a" and not url.startswith("#"):
                assert (html / url).exists(), (page, url)
        assert "@import" not in text and "url(http" not in text
    assert "<svg" in (html / "summary.html").read_text()
    first, last = parse(html / "0.html"), parse(html / "3.html")
    assert ("a", "1.html") in first.urls and not any(u.endswith("-1.html") for _, u in first.urls)
    assert ("a", "2.html") in last.urls and ("a", "4.html") not in last.urls
    index = parse(html / "index.html")
    assert {u for t, u in index.urls if t == "a"} >= {"0.html", "1.html", "2.html", "3.html", "summary.html"}


def test_model_text_is_escaped(report):
    page = (report["html"] / "0.html").read_text()
    for raw in ("<script>alert('x')</script>", "<img src=x", "<script>alert('prompt')", "<b>bold</b>"):
        assert raw not in page
    assert "&lt;script&gt;alert(&#39;prompt&#39;)&lt;/script&gt;" in page  # the prompt, shown as text
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; &#34;quoted&#34;" in page
    assert page.count("<script") == 2  # the JSON data island and the page's own script, nothing from the model
    island = page.split('<script type="application/json" id="tds-data">')[1].split("</script>")[0]
    assert "<" not in island and json.loads(island)["aligned_prompt"].endswith("<script>alert('prompt')</script> [/INST] ")
    index = (report["html"] / "index.html").read_text()
    assert "<script>alert" not in index and "&lt;script&gt;alert(&#39;prompt&#39;)" in index


@pytest.mark.slow  # generate_html twice
def test_limit_writes_only_reachable_pages(tmp_path, report):
    out = tmp_path / "h"
    out.mkdir()
    (out / "7.html").write_text("<html>someone else's page</html>")
    assert generate_html(["r", "--data", str(report["prepared"]), "--out", str(out)]) == 0
    assert generate_html(["r", "--data", str(report["prepared"]), "--out", str(out), "--limit", "2"]) == 0
    # the earlier pages 2, 3 are gone; a numbered page this tool did not write stays
    assert sorted(p.name for p in out.glob("[0-9]*.html")) == ["0.html", "1.html", "7.html"]
    assert ("a", "2.html") not in parse(out / "1.html").urls
    index = (out / "index.html").read_text()
    assert "first 2 of 4 examples" in index and "2.html" not in index
    assert json.loads((out / "summary.json").read_text())["examples"] == 4


def test_compare_pairs_page(tmp_path, report, capsys):
    summary = report["html"] / "summary.json"
    other = json.loads(summary.read_text())
    other["pair"] = "other"
    other["top_shifted_tokens"] = other["top_shifted_tokens"][:1] + [["only-here", 3, 1.0]]
    (tmp_path / "other.json").write_text(json.dumps(other))
    out = tmp_path / "cmp"
    assert compare_pairs([str(summary), str(tmp_path / "other.json"), "--out", str(out)]) == 0
    page = (out / "index.html").read_text()
    assert page.count("<svg") == 3 and "only-here" in page and ">r<" in page and ">other<" in page
    assert all(not u.startswith("http") for _, u in parse(out / "index.html").urls)
    assert compare_pairs([str(summary), str(tmp_path / "other.json"), "--out", str(out), "--labels",
                          r"$\foo$,run $5 vs $10"]) == 0
    assert "$\\foo$" in (out / "index.html").read_text() and "run $5 vs $10" in (out / "index.html").read_text()
    assert compare_pairs([str(tmp_path / "nope.json")]) == 2
    one_error_line(capsys, "nope.json", "not found")
    (tmp_path / "bad.json").write_text("{}")
    assert compare_pairs([str(tmp_path / "bad.json")]) == 2
    one_error_line(capsys, "bad.json", "not a summary.json")


def test_token_overlap():
    a = {"top_shifted_tokens": [["Sure", 5, 0.9], ["However", 2, 0.5], ["Thank", 1, 0.2]]}
    b = {"top_shifted_tokens": [["However", 3, 0.6], ["Sure", 1, 0.1], ["Hmm", 3, 0.3]]}
    shared, unique = token_overlap([("a", a), ("b", b)])
    assert [r["token"] for r in shared] == ["Sure", "However"] and shared[0]["counts"] == [5, 1]
    assert [r["token"] for r in unique["a"]] == ["Thank"] and [r["token"] for r in unique["b"]] == ["Hmm"]


def test_pair_records_give_exact_divergences(tmp_path, report, pair_llama):
    """data_prep on one --mode pair file: the same classes as the i2i + i2b route, and the exact KL in the summary."""
    data = report["root"] / "data.json"
    assert logit_analysis(["--data_file", str(data), "--logits_folder", str(tmp_path / "shards"), "--pair", "r", "--mode", "pair",
                           "--aligned_model", str(pair_llama["aligned"]), "--base_model", str(pair_llama["base"]),
                           "--enable_template"]) == 0
    pair_file = tmp_path / "shards" / "r-pair.[0:4].pkl"
    assert data_prep(["r", str(pair_file), "--out", str(tmp_path / "p.pkl")]) == 0
    prep, routed = load_prepared(tmp_path / "p.pkl"), load_prepared(report["prepared"])
    assert prep["source"] == "pair" and prep["kl"] == "exact"
    records = load_records(pair_file)
    for ex, other, rec in zip(prep["examples"], routed["examples"], records):
        np.testing.assert_array_equal(ex["cls"], other["cls"])
        np.testing.assert_array_equal(ex["exact"]["kl_base_aligned"], rec["kl_base_aligned"])
        assert ex["query"] == other["query"]
    s = json.loads((tmp_path / "p.summary.json").read_text())
    assert s["kl"] == "exact"
    assert s["models"] == {"i2i": str(pair_llama["aligned"]), "i2b": str(pair_llama["base"])}
    aligned, base = s["provenance"]["aligned"], s["provenance"]["base"]  # the base side from the pair meta's base_ keys
    assert (aligned["mode"], aligned["model"], aligned["template"]) == ("pair", str(pair_llama["aligned"]), None)
    assert (base["mode"], base["model"], base["template"]) == ("pair", str(pair_llama["base"]), REFERENCE_TEMPLATE)
    first = [ex["exact"]["kl_base_aligned"][0] for ex in prep["examples"] if len(ex["cls"])]
    assert s["by_position"]["absolute"][0]["mean_kl"] == pytest.approx(float(np.mean(first)), rel=1e-5)
    assert generate_html(["r", "--data", str(tmp_path / "p.pkl"), "--out", str(tmp_path / "h")]) == 0
    page = (tmp_path / "h" / "1.html").read_text()
    assert '"kl_base_aligned"' in page and "KL(base" in (tmp_path / "h" / "summary.html").read_text()
    assert 'id="kl-note"' not in (tmp_path / "h" / "summary.html").read_text()  # the exact KL is a divergence
    for name in ("summary.html", "index.html"):  # and the pages say which one
        assert "exact: KL(P_base ‖ P_aligned) over the whole vocabulary, in nats" in (tmp_path / "h" / name).read_text()
    for name in ("summary.html", "index.html"):  # KL@10 can be negative: said where it is shown
        assert "it can be negative" in (report["html"] / name).read_text().split('id="kl-note">')[1].split("</span>")[0]
    assert data_prep(["r", str(pair_file), str(report["root"] / "i2b/r-i2b.pkl"), "--out", str(tmp_path / "q.pkl")]) == 2


def test_answers_cut_to_the_context_are_shown(tmp_path, report, tok_bos, capsys):
    """Tokens left unscored to fit a context (the records' n_truncated: the i2i record's, plus what a shorter base context
    cut in i2b) are carried per example, counted in summary.json and the printed summary, and shown on the example page
    and as an index column."""
    a = load_records(report["root"] / "i2i/r-i2i.pkl")
    a[1] = {**a[1], "n_truncated": 2}  # as if the aligned model's context had cut 2 tokens
    save_records(tmp_path / "a.pkl", a)
    b0 = report["i2b"][0]
    limit = len(b0["prompt_ids"]) + 10  # the base model's context leaves 10 of example 0's answer tokens (the longest prompt)
    base = save_pair_member(tmp_path / "short", tiny_model("llama", len(tok_bos), seed=1, max_position_embeddings=limit), tok_bos)
    assert logit_analysis(["--data_file", str(report["root"] / "data.json"), "--logits_folder", str(tmp_path / "s"),
                           "--pair", "r", "--mode", "i2b", "--base_model", str(base), "--enable_template", "--i2i_pkl_file",
                           str(tmp_path / "a.pkl")]) == 0
    i2b = tmp_path / "s" / "r-i2b.[0:4].pkl"
    b = load_records(i2b)
    assert data_prep(["r", str(tmp_path / "a.pkl"), str(i2b), "--out", str(tmp_path / "p.pkl")]) == 0
    printed = capsys.readouterr().out
    want = [ra["n_truncated"] + len(ra["response_ids"]) - len(rb["response_ids"]) for ra, rb in zip(a, b)]
    assert want == [len(b0["response_ids"]) - 10, 2, 0, 0]
    prep = load_prepared(tmp_path / "p.pkl")
    assert [ex["n_truncated"] for ex in prep["examples"]] == want
    s = json.loads((tmp_path / "p.summary.json").read_text())
    assert s["truncated"] == {"examples": 2, "tokens": sum(want)}
    assert f"truncated: 2 answers were cut to fit the context, {sum(want)} answer tokens not scored" in printed
    assert generate_html(["r", "--data", str(tmp_path / "p.pkl"), "--out", str(tmp_path / "h")]) == 0
    assert f"Answer cut to the context: {want[0]} tokens not scored" in (tmp_path / "h" / "0.html").read_text()
    assert 'id="truncated"' not in (tmp_path / "h" / "3.html").read_text()
    index = (tmp_path / "h" / "index.html").read_text()
    assert 'data-col="11" data-type="num">Not scored (cut)' in index
    cells = re.findall(r'<td class="num" data-value="(\d+)">\d+</td>\n</tr>', index)
    assert [int(c) for c in cells] == want
    assert 'id="truncated"' in (tmp_path / "h" / "summary.html").read_text()
    assert "Not scored" not in (report["html"] / "index.html").read_text()  # no column when nothing was cut
    del prep["examples"][2]["n_truncated"]  # prepared data of a data_prep before n_truncated
    save_records(tmp_path / "old.pkl", [prep])
    assert generate_html(["r", "--data", str(tmp_path / "old.pkl"), "--out", str(tmp_path / "h2")]) == 2
    one_error_line(capsys, "old.pkl", "older data_prep")


def test_different_top_k_for_i2i_and_i2b(tmp_path, report, pair_llama, capsys):
    """i2b stored 5 candidates, i2i 30: the top-k metrics use the 5 both have, and say so."""
    data, i2i = report["root"] / "data.json", report["root"] / "i2i/r-i2i.pkl"
    assert logit_analysis(["--data_file", str(data), "--logits_folder", str(tmp_path / "s"), "--pair", "r", "--mode", "i2b",
                           "--base_model", str(pair_llama["base"]), "--enable_template", "--i2i_pkl_file", str(i2i),
                           "--top_k", "5"]) == 0
    assert data_prep(["r", str(i2i), str(tmp_path / "s" / "r-i2b.[0:4].pkl"), "--out", str(tmp_path / "k.pkl")]) == 0
    prep = load_prepared(tmp_path / "k.pkl")
    assert prep["top_k"] == 5 and "KL@5 over the stored top-5" in prep["kl"]
    assert set(prep["examples"][1]["metrics"]) == {f"{m}@5" for m in ("kl", "jaccard", "ws", "ndcg", "tr", "tp")}
    assert "different numbers of candidates" in capsys.readouterr().err
    assert generate_html(["r", "--data", str(tmp_path / "k.pkl"), "--out", str(tmp_path / "h")]) == 0
    page = (tmp_path / "h" / "1.html").read_text()
    island = json.loads(page.split('id="tds-data">')[1].split("</script>")[0])
    assert island["k"] == 5 and all(v is not None for v in island["kl"])


def test_prepared_data_of_an_older_data_prep_is_refused(tmp_path, report, capsys):
    """The prepared data's keys were renamed (aligned_top_ids -> aligned_topk_ids, probe_text -> answer_text, ...): a file
    of the data_prep before is one line, run data_prep again."""
    old = load_prepared(report["prepared"])
    del old["format"]
    for ex in old["examples"]:
        renamed = (("aligned_topk_ids", "aligned_top_ids"), ("base_topk_ids", "base_top_ids"), ("answer_text", "probe_text"))
        for new, before in renamed:
            ex[before] = ex.pop(new)
    save_records(tmp_path / "old.pkl", [old])
    assert generate_html(["r", "--data", str(tmp_path / "old.pkl"), "--out", str(tmp_path / "h")]) == 2
    one_error_line(capsys, "old.pkl", "written by an older data_prep", "run data_prep again")
    assert not (tmp_path / "h").exists()


def test_provenance_in_the_summary_and_on_the_pages(tmp_path, report, pair_llama):
    """summary.json says how each side was made (from the records' meta); two runs that differ only in --base_template
    (two templates whose first lines agree) are told apart there, on their summary pages and on the comparison page."""
    s = json.loads((report["html"] / "summary.json").read_text())
    meta_a, meta_b = report["i2i"][0]["meta"], report["i2b"][0]["meta"]
    common = {"dtype": "float32", "top_k": 30, "tokenization": "chat", "adapter": None, "revision": None,
              "version": meta_a["versions"]["aligntds"], "git": meta_a["versions"]["git"]}
    assert s["provenance"] == {"aligned": {"mode": "i2i", "model": str(pair_llama["aligned"]), "template": None, **common},
                               "base": {"mode": "i2b", "model": str(pair_llama["base"]), "template": meta_b["template"],
                                        **common}}
    assert meta_b["template"] == REFERENCE_TEMPLATE
    assert "the reference&#39;s (--enable_template)" in (report["html"] / "summary.html").read_text()

    data, i2i = report["root"] / "data.json", report["root"] / "i2i/r-i2i.pkl"
    summaries = []
    for name, template in (("short", "Query: {query}\nAnswer:"), ("long", "Query: {query}\nAnswer, in full sentences:")):
        (tmp_path / f"{name}.txt").write_text(template)
        assert logit_analysis(["--data_file", str(data), "--logits_folder", str(tmp_path / name), "--pair", "r", "--mode", "i2b",
                               "--base_model", str(pair_llama["base"]), "--base_template", str(tmp_path / f"{name}.txt"),
                               "--i2i_pkl_file", str(i2i)]) == 0
        assert data_prep(["r", str(i2i), str(tmp_path / name / "r-i2b.[0:4].pkl"), "--out", str(tmp_path / f"{name}.pkl")]) == 0
        summaries.append(tmp_path / f"{name}.summary.json")
        assert json.loads(summaries[-1].read_text())["provenance"]["base"]["template"] == template
    assert compare_pairs([*map(str, summaries), "--labels", "short,long", "--out", str(tmp_path / "cmp")]) == 0
    page = (tmp_path / "cmp" / "index.html").read_text()
    table = page.split('<table id="provenance"')[1].split("</table>")[0]
    header, *rows = [re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, flags=re.S) for row in table.split("<tr>")[1:]]
    assert header == ["", "short: aligned", "short: base", "long: aligned", "long: base"]  # a column per side of each run
    cells = {row[0]: row[1:] for row in rows}  # a row per setting
    assert list(cells) == ["scored in", "model", "revision", "dtype", "prompt template", "top_k", "tokenization", "adapter",
                           "aligntds", "git commit"]
    assert cells["scored in"] == ["i2i", "i2b", "i2i", "i2b"]
    templates = cells["prompt template"]
    assert templates[1] != templates[3] and all(t.startswith("Query: {query} (") for t in (templates[1], templates[3]))
    assert templates[0] == templates[2] == "the chat prompt (input)"


def _answer_example(spans: list[str]) -> dict:
    """A prepared example of the given spans (one token each), every position unshifted, for the page's markup."""
    t = len(spans)
    return {"spans": spans, "response_ids": np.arange(100, 100 + t), "cls": np.zeros(t, np.int8),
            "top1_differs": np.zeros(t, bool), "spike": np.zeros(t, bool)}


class AnswerTokens(HTMLParser):
    """Each answer token's attributes and its text as the HTML parser reads it (a raw CR would become a line break)."""

    def __init__(self):
        super().__init__()
        self.tokens, self.depth = [], 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "span" and "tok" in attrs.get("class", "").split():
            self.tokens.append({**attrs, "text": ""})
            self.depth = 1
        elif self.depth and tag == "span":
            self.depth += 1

    def handle_endtag(self, tag):
        if self.depth and tag == "span":
            self.depth -= 1

    def handle_data(self, data):
        if self.depth:
            self.tokens[-1]["text"] += data


def test_answer_marks_carriage_returns_controls_and_zero_width_tokens():
    """A token that shows nothing (a combining mark, a ZWJ, a variation selector) keeps its text and gets a stub (class
    zw) titled with its code points; a CR shows as its mark (raw, the HTML parser reads it as a line break), control
    characters as their code, escaped."""
    from aligntds.report import answer_html

    spans = ["cafe", "\u0301", " ok", "\r", "\n", "👩", "\u200d", "👩", "❤", "\ufe0f", "\x1b[1m", "नम", "\u094d", "",
             "👩\u200d", "👩"]
    html = str(answer_html(_answer_example(spans), {113: "<0xF0>"}))
    assert "\r" not in html and "\x1b" not in html
    parsed = AnswerTokens()
    parsed.feed(html)
    got = parsed.tokens
    assert len(got) == len(spans)
    zw = [int(t["data-t"]) for t in got if "zw" in t["class"].split()]
    assert zw == [1, 6, 7, 9, 12, 15]  # 7 and 15: the second 👩 of a ZWJ sequence, drawn with the cluster the first began
    assert got[15]["title"] == "U+1F469 WOMAN" and got[15]["text"] == "👩"
    assert got[1]["title"] == "U+0301 COMBINING ACUTE ACCENT" and got[1]["text"] == "\u0301"
    assert got[6]["title"] == "U+200D ZERO WIDTH JOINER" and got[9]["title"].startswith("U+FE0F VARIATION SELECTOR-16")
    assert got[3]["text"] == "␍" and got[4]["text"] == "↵" and got[10]["text"] == "<0x1B>[1m"
    assert got[13]["text"] == "" and got[13]["title"] == "<0xF0>"  # the empty stub, as before
    assert all("title" not in got[t] for t in (0, 2, 5, 11))


def test_provenance_table_of_runs_that_record_none():
    """A summary.json of an earlier version (no provenance) and the reference's pickles: said in the table's first row."""
    from aligntds.report import environment

    page = environment().from_string('{% from "provenance.html" import provenance_table %}{{ provenance_table(runs) }}').render(
        runs=[("old", {}), ("ref", {"provenance": {"aligned": "reference", "base": "reference"}})])
    first = re.findall(r"<td>(.*?)</td>", page.split("<th>scored in</th>")[1].split("</tr>")[0])
    assert first == ["not recorded (a summary.json of an earlier version)"] * 2 + [
        "the reference implementation&#39;s pickles (they record none of this)"] * 2
