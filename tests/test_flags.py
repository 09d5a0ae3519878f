"""Flags declared once (`aligntds.flags`, `aligntds.options`): every script's parser, against the parsers the scripts
had before (written out below: names, defaults, required, nargs, choices, types, actions, metavars), the reference's
positional forms, a subcommand reusing a script's parser, and a new flag as one field."""

from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass

import pytest

from aligntds import models, smollm2
from aligntds.errors import UserError
from aligntds.flags import Flags, flag, from_args, make_parser, parse
from aligntds.options import CompareOptions, HtmlOptions, MergeOptions, PrepOptions, ScoreOptions
from helpers import REPO

DTYPES = ("auto", "float32", "bfloat16", "float16")
STORE, TRUE, APPEND = "Store", "StoreTrue", "Append"
# (flag or positional, default, required, nargs, choices, type, action, metavar), as argparse held them before issue 12.
BEFORE = {
    "logit_analysis": ("src/logit_analysis.py", [
        ("--data_file", "None", True, None, None, None, STORE, None),
        ("--logits_folder", "None", True, None, None, None, STORE, None),
        ("--pair", "llama2", False, None, None, None, STORE, None),
        ("--mode", "None", True, None, ("i2i", "i2b", "pair"), None, STORE, None),
        ("--start", "0", False, None, None, "int", STORE, None),
        ("--end", "None", False, None, None, "int", STORE, None),
        ("--top_k", "30", False, None, None, "int", STORE, None),
        ("--enable_template", "False", False, 0, None, None, TRUE, None),
        ("--base_template", "None", False, None, None, None, STORE, "FILE"),
        ("--i2i_pkl_file", "None", False, None, None, None, STORE, None),
        ("--aligned_model", "None", False, None, None, None, STORE, None),
        ("--base_model", "None", False, None, None, None, STORE, None),
        ("--dtype", "auto", False, None, DTYPES, None, STORE, None),
        ("--device", "None", False, None, None, None, STORE, None),
        ("--device_map", "None", False, None, None, None, STORE, None),
        ("--base_device", "None", False, None, None, None, STORE, None),
        ("--batch_tokens", "None", False, None, None, "int", STORE, None),
        ("--overwrite", "False", False, 0, None, None, TRUE, None),
        ("--trust_remote_code", "False", False, 0, None, None, TRUE, None),
        ("--attn_implementation", "None", False, None, None, None, STORE, None),
        ("--tokenization", "chat", False, None, ("chat", "reference"), None, STORE, None),
    ]),
    "merge_logits": ("src/scripts/merge_logits.py", [
        ("directory", "None", True, None, None, None, STORE, "DIR"),
        ("pair", "None", True, None, None, None, STORE, "PAIR"),
        ("mode", "None", True, None, None, None, STORE, "MODE"),
    ]),
    "data_prep": ("src/demo/data_prep.py", [
        ("pair", "None", True, None, None, None, STORE, "PAIR"),
        ("i2i", "None", True, None, None, None, STORE, "I2I_PKL"),
        ("i2b", "None", False, "?", None, None, STORE, "I2B_PKL"),
        ("--out", "None", False, None, None, None, STORE, "FILE"),
        ("--tokenizer", "None", False, None, None, None, STORE, None),
        ("--slice_by", "[]", False, None, None, None, APPEND, "FIELD"),
        ("--data_file", "None", False, None, None, None, STORE, "FILE"),
        ("--slices", "[]", False, None, None, None, APPEND, "FILE"),  # was STORE (one file; a second one replaced it)
        ("--truncate_mismatched", "False", False, 0, None, None, TRUE, None),
    ]),
    "generate_html": ("src/demo/generate_html.py", [
        ("pair", "None", True, None, None, None, STORE, "PAIR"),
        ("--data", "None", False, None, None, None, STORE, "FILE"),
        ("--out", "None", False, None, None, None, STORE, "DIR"),
        ("--limit", "None", False, None, None, "int", STORE, "N"),
    ]),
    "compare_pairs": ("src/demo/compare_pairs.py", [
        ("--chain", "False", False, 0, None, None, TRUE, None),
        ("summaries", "None", True, "+", None, None, STORE, "SUMMARY.json"),
        ("--out", "None", False, None, None, None, STORE, "DIR"),
        ("--labels", "None", False, None, None, None, STORE, None),
    ]),
    "generate_outputs": ("src/generate_outputs.py", [
        ("--data_file", "None", True, None, None, None, STORE, None),
        ("--output_file", "None", True, None, None, None, STORE, None),
        ("--pair", "demo", False, None, None, None, STORE, None),
        ("--model", "None", False, None, None, None, STORE, None),
        ("--base_model", "None", False, None, None, None, STORE, None),  # added since: an adapter's base weights
        ("--max_new_tokens", "256", False, None, None, "int", STORE, None),
        ("--batch_size", "16", False, None, None, "int", STORE, None),
        ("--start", "0", False, None, None, "int", STORE, None),
        ("--end", "None", False, None, None, "int", STORE, None),
        ("--dtype", "auto", False, None, DTYPES, None, STORE, None),
        ("--device", "None", False, None, None, None, STORE, None),
        ("--trust_remote_code", "False", False, 0, None, None, TRUE, None),
        ("--merge", "False", False, 0, None, None, TRUE, None),
        ("--overwrite", "False", False, 0, None, None, TRUE, None),
    ]),
    "findings": ("scripts/demo_findings.py", [
        ("i2b_file", "None", True, None, None, None, STORE, "I2B_PKL"),
        ("--style", str(models.DEMO_DIR / "style.json"), False, None, None, None, STORE, None),
        ("--tokenizer", "None", False, None, None, None, STORE, None),
        ("--early", "0.2", False, None, None, "float", STORE, None),
        ("--json", "False", False, 0, None, None, TRUE, None),
    ]),
    "build_demo_pair": ("scripts/build_demo_pair.py", [
        ("--root", str(models.DEMO_DIR), False, None, None, "Path", STORE, None),
        ("--instructions", str(REPO / "data" / "demo" / "instructions.json"), False, None, None, "Path", STORE, None),
        ("--force", "False", False, 0, None, None, TRUE, None),
    ]),
    "get_smollm2": ("scripts/get_smollm2.py", [
        ("--out", str(smollm2.DEFAULT_DIR), False, None, None, "Path", STORE, None),
        ("--cache", "None", False, None, None, "Path", STORE, None),
        ("--force", "False", False, 0, None, None, TRUE, None),
    ]),
}

# Flags added since, at the end of their scripts' lists: issue 11's data sources (a Parquet file, a datasets folder or hub
# dataset as --data_file) and data_prep's Parquet tables.
SOURCE = [
    ("--data_split", "None", False, None, None, None, STORE, None),
    ("--data_revision", "None", False, None, None, None, STORE, None),
    ("--columns", "None", False, None, None, None, STORE, "SOURCE=FIELD,..."),
]
ADDED = {
    "logit_analysis": SOURCE,
    "generate_outputs": SOURCE,
    "data_prep": [*SOURCE, ("--parquet", "None", False, None, None, None, STORE, "DIR")],
}


def actions(parser: argparse.ArgumentParser) -> list[tuple]:
    return [((a.option_strings or [a.dest])[0], str(a.default), a.required, a.nargs, tuple(a.choices) if a.choices else None,
             getattr(a.type, "__name__", None), type(a).__name__.strip("_").removesuffix("Action"), a.metavar)
            for a in parser._actions if a.dest != "help"]


@pytest.mark.parametrize("script", sorted(BEFORE))
def test_every_flag_name_and_default_is_kept(script):
    prog, before = BEFORE[script]
    parser = importlib.import_module(f"aligntds.cli.{script}").make_parser()
    assert parser.prog == prog
    assert actions(parser) == before + ADDED.get(script, [])
    assert all(a.help for a in parser._actions)  # every flag says what it is
    parser.format_help()  # help texts format (argparse reads % in them)


def test_the_reference_positional_forms_parse():
    def parsed(script, options, argv):
        return from_args(options, importlib.import_module(f"aligntds.cli.{script}").make_parser().parse_args(argv))

    merge = parsed("merge_logits", MergeOptions, ["saved/x/", "llama2", "i2i"])
    assert merge == MergeOptions(directory="saved/x/", pair="llama2", mode="i2i")
    prep = parsed("data_prep", PrepOptions, ["llama2_tp", "a.pkl", "b.pkl", "--slice_by", "x", "--slice_by", "y"])
    assert (prep.pair, prep.i2i, prep.i2b, prep.slice_by, prep.out) == ("llama2_tp", "a.pkl", "b.pkl", ["x", "y"], None)
    assert parsed("data_prep", PrepOptions, ["p", "pair.pkl"]).i2b is None
    assert parsed("generate_html", HtmlOptions, ["llama2_tp", "--limit", "3"]) == HtmlOptions(pair="llama2_tp", limit=3)
    cmp = parsed("compare_pairs", CompareOptions, ["--chain", "a.json", "b.json", "c.json"])
    assert cmp.summaries == ["a.json", "b.json", "c.json"] and cmp.chain
    argv = ["--data_file", "d.json", "--logits_folder", "s", "--mode", "i2b", "--top_k", "5"]
    score = parsed("logit_analysis", ScoreOptions, argv)
    assert score == ScoreOptions(data_file="d.json", logits_folder="s", mode="i2b", top_k=5)
    assert score.pair == "llama2" and score.dtype == "auto" and score.tokenization == "chat" and not score.overwrite


def test_a_subcommand_reuses_a_script_parser_as_is():
    """A console command (`aligntds score ...`) adds a script's flags to its subparser: the same options come back."""
    from aligntds.cli import logit_analysis

    top = argparse.ArgumentParser(prog="aligntds")
    sub = top.add_subparsers(dest="command", required=True)
    logit_analysis.make_parser(sub.add_parser("score", description=ScoreOptions.__doc__))
    argv = ["--data_file", "d.json", "--logits_folder", "s", "--mode", "pair", "--enable_template"]
    as_script = from_args(ScoreOptions, logit_analysis.make_parser().parse_args(argv))
    assert from_args(ScoreOptions, top.parse_args(["score", *argv])) == as_script


def test_a_new_flag_is_one_field(capsys):
    @dataclass(kw_only=True)
    class More(ScoreOptions):
        temperature: float = flag("a flag added in one line", 1.0)

    assert parse(More, ["--data_file", "d", "--logits_folder", "s", "--mode", "i2i", "--temperature", "0.5"]).temperature == 0.5
    with pytest.raises(SystemExit):
        make_parser(More, prog="x").parse_args(["--help"])
    assert "--temperature TEMPERATURE\n" in capsys.readouterr().out.replace("  ", "")
    help_text = make_parser(More, prog="x").format_help()
    assert "a flag added in one line (default: 1.0)" in " ".join(help_text.split())


def test_the_dataclass_checks_choices_as_the_command_line_does():
    with pytest.raises(UserError, match="--mode must be one of i2i, i2b, pair, got 'x2y'"):
        ScoreOptions(data_file="d", logits_folder="s", mode="x2y")
    with pytest.raises(UserError, match="--tokenization must be one of chat, reference"):
        ScoreOptions(data_file="d", logits_folder="s", mode="i2i", tokenization="raw")

    @dataclass(kw_only=True)
    class Kinds(Flags):
        name: str = flag("required, positional", positional=True)
        names: list[str] = flag("one or more", positional=True)
        size: int | None = flag("optional", None)

    assert parse(Kinds, ["a", "b", "c", "--size", "3"]) == Kinds(name="a", names=["b", "c"], size=3)
    with pytest.raises(SystemExit):
        parse(Kinds, ["a"])
