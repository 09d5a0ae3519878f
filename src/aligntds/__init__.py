"""aligntds: what did alignment tuning change? Token distribution shifts between a base LLM and its aligned version.

The pipeline, as commands (`aligntds COMMAND`, or the scripts under src/, each calling one function of this package):

    aligntds score --mode i2i ...      aligned model on its chat prompt       -> shards/<pair>-i2i.[s:e].pkl
    aligntds score --mode i2b ...      base model on the bare query, same ids -> shards/<pair>-i2b.[s:e].pkl
    aligntds score --mode pair ...     both models, exact divergences          -> shards/<pair>-pair.[s:e].pkl
    aligntds merge DIR PAIR MODE                                                -> DIR/<pair>-<mode>.pkl
    aligntds prep PAIR I2I_PKL [I2B_PKL] [--parquet DIR]                        -> prepared data, summary.json, Parquet
    aligntds html PAIR                                                          -> docs/PAIR_justeval/index.html

and from Python (`import aligntds` is light: torch, pandas and the models load when a function needs them):

    records = aligntds.score("data/x.json", aligned="org/chat", base="org/base", mode="pair", enable_template=True)
    prepared = aligntds.prepare(records, slice_by=["category"])     # or prepare(i2i_records, i2b_records)
    prepared.positions()     # pandas.DataFrame, one row per answer position (class, ranks, probabilities, KL, entropies)
    prepared.examples()      # one row per example
    prepared.summary()       # what summary.json holds
    prepared.to_parquet("tables/")

`score` runs the code of `src/logit_analysis.py` (`aligntds.analysis.run`, on the options a command line would give,
into a temporary folder) and returns the records it writes, read back through the same loader; `prepare` runs
data_prep's (`aligntds.data_prep.prepare`); `Prepared` is `aligntds.frames`'.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UserError

if TYPE_CHECKING:
    from .frames import Prepared

__version__ = "0.1.0"
__all__ = ["Prepared", "__version__", "prepare", "score"]

API_PAIR = "api"  # the run's name in the shard name and the progress bar, when no preset is given


def _data_file(data) -> tuple[str | None, object]:
    """(data_file, rows): a path or hub name goes to --data_file, rows in memory (a list, a DataFrame, a Dataset) as rows."""
    if isinstance(data, (str, Path)):
        return str(data), None
    return None, data


def score(data, *, mode: str = "i2i", aligned: str | None = None, base: str | None = None, pair: str | None = None,
          i2i=None, top_k: int = 30, enable_template: bool = False, base_template: str | None = None,
          dtype: str = "auto", device: str | None = None, tokenization: str = "chat", start: int = 0, end: int | None = None,
          split: str | None = None, revision: str | None = None, columns: str | dict | None = None, **options) -> list[dict]:
    """Score the aligned model's answers in `data`: `logit_analysis.py`'s records, one dict per example in data order.

    data: a data file or hub dataset (a path or `org/name`, read as `--data_file` with `split`, `revision`, `columns`:
        `SOURCE=FIELD,...` or a dict {column: field}),
        or the examples in memory (a list of dicts, a `pandas.DataFrame`, a `datasets.Dataset`), checked as a file's are: each
        `{"id", "pure_input", "input", "output": [answer], ...}` (`output_ids` optional).
    mode: "i2i" (the aligned model on its chat prompt `input`), "i2b" (the base model on the bare query `pure_input`,
        scoring the i2i records' answer ids: give `i2i`) or "pair" (both models, exact KL/JS/TV).
    aligned, base: the models (Hugging Face id, `id@revision`, local folder or PEFT adapter); `pair`: a preset instead
        (`aligntds.presets.PAIRS`). i2i: the i2i records of the same data (the list `score` returned, or a file).
    top_k, enable_template, base_template, dtype, device, tokenization, start, end: as the flags of the same names
        (`python src/logit_analysis.py --help`); **options: the other flags (`batch_tokens`, `device_map`,
        `base_device`, `trust_remote_code`, `attn_implementation`).

    Returns the records as `src/logit_analysis.py` writes them (the README's record schema): per example `index`,
    `id`, `response_ids` int32 [T], `topk_ids` int32 [T, k], `topk_logprobs` float32 [T, k] (nats), `token_rank`,
    `entropy` (nats), i2b/pair `aligned_rank` int32 [T] (0-based), ..., and `meta` (how the run was made; `data_file`
    is null for rows in memory). [] when [start, end) holds no example. Raises `UserError` (one line naming the data,
    the example and what is wrong) for every mistake the script reports with exit status 2.
    """
    from .options import ScoreOptions

    if pair is None and (base if mode == "i2b" else aligned) is None:
        side = "base" if mode == "i2b" else "aligned"
        raise UserError(f"score(mode={mode!r}) needs {side}= (the {side} model: hub id, folder or adapter) or pair= (a preset)")
    if mode == "i2b" and i2i is None:
        raise UserError("score(mode='i2b') needs i2i= (the i2i records of the same data: the list score(mode='i2i') "
                        "returned, or their file)")
    data_file, rows = _data_file(data)
    with tempfile.TemporaryDirectory(prefix="aligntds-score-") as tmp:
        given = None  # the records given as i2i=, written to a file for the script's code
        if isinstance(i2i, list):
            from .store import save_records

            given = str(Path(tmp) / "i2i.pkl")
            save_records(given, i2i)
            i2i = given
        opts = ScoreOptions(data_file=data_file, logits_folder=str(Path(tmp) / "shards"), pair=pair or API_PAIR, mode=mode,
                            start=start, end=end, top_k=top_k, enable_template=enable_template, base_template=base_template,
                            i2i_pkl_file=None if i2i is None else str(i2i), aligned_model=aligned, base_model=base,
                            dtype=dtype, device=device, tokenization=tokenization, data_split=split, data_revision=revision,
                            columns=columns, **_flags(options))
        from .analysis import run
        from .distributed import Rank
        from .store import load_records

        try:
            shard = run(opts, Rank(), rows)  # one process: this call scores all of [start, end)
        except UserError as e:
            if given is None:
                raise
            raise UserError(str(e).replace(given, "i2i= (the records given)")) from None  # not the temporary file
        return [] if shard is None else load_records(shard)


def _flags(options: dict) -> dict:
    from .options import ScoreOptions

    known = {f.name for f in dataclasses.fields(ScoreOptions)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"score() got unknown options {', '.join(unknown)} (the flags of src/logit_analysis.py are "
                        f"{', '.join(sorted(known))})")
    return options


def prepare(i2i, i2b=None, *, slice_by=(), data=None, slices: str | list[str] | None = None, tokenizer: str | None = None,
            pair: str = API_PAIR, truncate_mismatched: bool = False, split: str | None = None, revision: str | None = None,
            columns: str | dict | None = None) -> Prepared:
    """data_prep on records: join, class every position, compute the metrics and the summary; as tables.

    i2i: the i2i records (the list `score` returned, or a record file), or the records of one `mode="pair"` run
        alone, or the reference implementation's merged i2i pickle. i2b: the i2b records (list or file), or None for
        pair records.
    slice_by: fields of each example to give every number per label of (e.g. ["category"]), read from `data` (a path,
        hub name with `split`/`revision`/`columns`, or the examples in memory), else from the data file the records
        name (rows scored in memory name none: give `data`). slices: a JSON labels file (`--slices`), or a list of them.
    tokenizer: the tokenizer for the token strings (default: the aligned model's, from the records). pair: the name
        the summary carries. truncate_mismatched: as `--truncate_mismatched` (the reference's pickles only).

    Returns a `Prepared` (`aligntds.frames`): `positions()` and `examples()` (pandas DataFrames), `summary()` (what
    summary.json holds), `to_parquet(folder)`. Raises `UserError` (one line) for records that do not join (other
    examples or answers, a mode that is not i2i + i2b or pair), non-finite values, or slice data that is missing or
    does not match the records.
    """
    from .data_prep import prepare as prepare_data
    from .frames import Prepared

    if isinstance(slice_by, str):
        raise UserError(f"slice_by must be a list of fields, e.g. [{slice_by!r}]")
    return Prepared(prepare_data(pair, i2i, i2b, tokenizer, truncate_mismatched, list(slice_by), data, slices, split, revision,
                                 columns))


def __getattr__(name: str):
    if name == "Prepared":
        from .frames import Prepared

        return Prepared
    raise AttributeError(f"module 'aligntds' has no attribute {name!r}")
