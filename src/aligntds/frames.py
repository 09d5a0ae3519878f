"""The prepared data as pandas tables and Parquet files: what a notebook, polars or DuckDB reads.

    prepared = aligntds.prepare(i2i_records, i2b_records, slice_by=["category"])   # or a pair file's records alone
    positions = prepared.positions()          # one row per answer position
    positions.groupby("category")["class"].value_counts(normalize=True)
    prepared.examples()                       # one row per example
    prepared.summary()                        # what summary.json holds
    prepared.to_parquet("tables/")            # tables/positions.parquet and tables/examples.parquet

`Prepared` wraps the prepared data of data_prep (`aligntds.data_prep.prepare`: the same function, the same numbers as
`summary.json` and the pages); the tables are its arrays, one column per array, nothing recomputed. The Parquet files
carry the run's provenance (the summary's `provenance`: models, revisions, dtype, template, top_k, tokenization,
package version and git commit of each side) in their file metadata, under the key `aligntds` (JSON).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np

from . import __version__, store
from .metrics import CLASS_NAMES
from .summary import plain_id, summarize

# The file metadata key of the Parquet tables, and the version of what it holds.
PARQUET_KEY = b"aligntds"
PARQUET_FORMAT = 1
POSITIONS_FILE, EXAMPLES_FILE = "positions.parquet", "examples.parquet"


def _cat(examples: list[dict], get, dtype) -> np.ndarray:
    """The per-position arrays `get(ex)` of every example, end to end."""
    parts = [np.asarray(get(ex), dtype=dtype) for ex in examples]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


def _column(values: list, rows: np.ndarray | None = None):
    """A pandas Series of `values` (one per example; pandas infers the type: int64, str, or object when mixed), or of
    `values[rows]` (rows: int [N], each row's example)."""
    import pandas as pd

    column = pd.Series(values)
    return column if rows is None else column.take(rows).reset_index(drop=True)


def _metric_names(examples: list[dict], key: str) -> list[str]:
    """The metric arrays of `key` ("metrics": kl@10, ...; "exact": pair mode's divergences), ordered as the CSV orders them."""
    names = {m for ex in examples for m in ex[key]}
    return sorted(names, key=lambda m: (int(m.split("@")[1]), m) if "@" in m else (0, m))


class Prepared:
    """The prepared data of a pair, as tables: `positions()`, `examples()`, `summary()`, `to_parquet(folder)`.

    Made by `aligntds.prepare` (records in memory or files) or `data_prep --parquet`. `data` is the prepared data
    itself (the dict `aligntds.data_prep.prepare` returns; its module docstring lists every field).
    """

    def __init__(self, data: dict, summary: dict | None = None):
        self.data = data
        self._summary = summary

    def __repr__(self) -> str:
        exs = self.data["examples"]
        return (f"<Prepared {self.data['pair']!r}: {len(exs)} examples, {sum(len(e['response_ids']) for e in exs)} positions, "
                f"kl: {self.data['kl']}>")

    def summary(self) -> dict:
        """The corpus summary: exactly what data_prep writes to summary.json (`aligntds.summary.summarize`; plain JSON
        types: class counts and ratios, token tables, shift by position, entropy, spikes, slices, provenance); a copy,
        so that editing it changes neither a later call's nor the provenance `to_parquet` writes."""
        return copy.deepcopy(self._computed_summary())

    def _computed_summary(self) -> dict:
        if self._summary is None:
            self._summary = summarize(self.data)
        return self._summary

    def _slice_columns(self, taken: set[str]) -> dict[str, str]:
        """{slice field: its column name}: the field's name, or `slice:FIELD` when a column of the table has that name."""
        return {name: name if name not in taken else f"slice:{name}" for name in self.data.get("slice_fields", [])}

    def positions(self):
        """One row per answer position (examples in data order, positions in answer order): a `pandas.DataFrame`.

        Columns (N rows; "nats": natural-log units):

            id              the example's `id` (as in the data)
            index           int64    the example's position in the data file
            t               int32    the answer position, 0-based (its distribution predicts answer token t)
            relative        float64  t / the answer's length, in [0, 1) (the summary's relative position)
            token_id        int32    the answer token
            token           str      its display text (a token's text with its leading space; a token that is only
                                     part of a character shows its bytes, `<0xF0><0x9F>`: `aligntds.tokentext`)
            span            str      its part of the answer text (the spans put together are the answer)
            aligned_top1    int32    the aligned model's top-1 token (the token the class is about)
            aligned_top1_token  str  its display text
            class           category unshifted / marginal / shifted: the base rank of aligned_top1 is 0, 1-2, >= 3
                                     (0-based); missing (NaN) where `aligned_only`
            aligned_only    bool     never classed: a token there, or earlier in the answer, exists only in the aligned
                                     vocabulary (the summary leaves these positions out of every count and ratio)
            aligned_rank    Int32    the exact 0-based rank of aligned_top1 in the base distribution; <NA> where
                                     unknown (beyond the stored top-k: the reference's pickles, a checkpoint chain)
            base_prob, base_logprob               float32  the base model's probability and log-prob (nats) of
                                     aligned_top1 (the records' `aligned_logprob`); NaN where unknown
            aligned_top1_prob, aligned_top1_logprob  float32  the aligned model's own probability and log-prob of it
            kl              float32  the KL every number of the summary uses, nats: the exact full-vocabulary
                                     KL(P_base || P_aligned) from `--mode pair`, else kl@10 (`prepared.data["kl"]` says)
            spike           bool     kl above the corpus mean + 3 standard deviations
            greedy_mismatch bool     the answer token is not the aligned model's top-1
            top1_differs    bool     the base top-1 is not the aligned top-1
            tie             bool     aligned_top1 has exactly the base log-prob of another token
            aligned_entropy, base_entropy  float32  each distribution's entropy, nats (NaN for the reference's pickles)
            kl@10, jaccard@10, ws@10, ndcg@10, tr@10, tp@10, kl@K, ...  float32  the reference's top-k metrics at
                                     k = 10 and k = the stored top-k (`aligntds.metrics`; kl@k in nats)
            kl_aligned_base, kl_base_aligned, js, tv  float32  pair mode only: exact divergences (nats; tv <= 1)
            FIELD           str      one column per slice field (`slice_by`, `slices`), the example's label ("null"
                                     when it has none); `slice:FIELD` when FIELD is one of the names above

        The class counts of `positions()["class"].value_counts()` are the summary's `unshifted`/`marginal`/`shifted`,
        per slice label too. Raises nothing for a prepared corpus; an empty one gives a table of no rows.
        """
        import pandas as pd

        exs, tokens = self.data["examples"], self.data["tokens"]
        lengths = np.array([len(ex["response_ids"]) for ex in exs], dtype=np.int64)
        example = np.repeat(np.arange(len(exs)), lengths)
        token_id = _cat(exs, lambda e: e["response_ids"], np.int32)
        top1 = _cat(exs, lambda e: e["aligned_topk_ids"][:, 0], np.int32)
        top1_logprob = _cat(exs, lambda e: e["aligned_topk_logprobs"][:, 0], np.float32)
        cls = _cat(exs, lambda e: e["cls"], np.int8)
        rank = _cat(exs, lambda e: e["aligned_rank"], np.int32)
        t = _cat(exs, lambda e: np.arange(len(e["response_ids"])), np.int32)
        base_prob = _cat(exs, lambda e: e["base_prob"], np.float32)
        if all("base_logprob" in ex for ex in exs):
            base_logprob = _cat(exs, lambda e: e["base_logprob"], np.float32)
        else:  # prepared data of an earlier data_prep: from the probability
            with np.errstate(divide="ignore"):
                base_logprob = np.log(base_prob)
        columns = {
            "id": _column([plain_id(ex["id"]) for ex in exs], example),
            "index": np.array([int(ex["index"]) for ex in exs], dtype=np.int64)[example],
            "t": t,
            "relative": t / np.maximum(lengths[example], 1),
            "token_id": token_id,
            "token": [tokens.get(i, f"<{i}>") for i in token_id.tolist()],
            "span": [s for ex in exs for s in ex["spans"]],
            "aligned_top1": top1,
            "aligned_top1_token": [tokens.get(i, f"<{i}>") for i in top1.tolist()],
            "class": pd.Categorical.from_codes(cls.astype(np.int64), categories=list(CLASS_NAMES)),
            "aligned_only": cls < 0,
            "aligned_rank": pd.arrays.IntegerArray(np.maximum(rank, 0), rank < 0),
            "base_prob": base_prob,
            "base_logprob": base_logprob,
            "aligned_top1_prob": np.exp(top1_logprob),
            "aligned_top1_logprob": top1_logprob,
            "kl": _cat(exs, lambda e: e["kl"], np.float32),
        }
        for name in ("spike", "greedy_mismatch", "top1_differs", "tie"):
            columns[name] = _cat(exs, lambda e, name=name: e[name], bool)
        for name in ("aligned_entropy", "base_entropy"):
            columns[name] = _cat(exs, lambda e, name=name: e[name], np.float32)
        for key in ("metrics", "exact"):
            for name in _metric_names(exs, key):
                columns[name] = _cat(exs, lambda e, key=key, name=name: e[key][name], np.float32)
        for name, column in self._slice_columns(set(columns)).items():
            columns[column] = _column([ex["slices"][name] for ex in exs], example)
        return pd.DataFrame(columns)

    def examples(self):
        """One row per example, in data order: a `pandas.DataFrame`.

        Columns:

            id              the example's `id`
            index           int64    its position in the data file
            positions       int64    answer positions (T)
            unshifted, marginal, shifted, aligned_only   int64  positions of each class, and never classed
            unshifted_share, marginal_share, shifted_share   float64  each class's share of the T positions (NaN when
                                     T = 0); shifted_share is what the index page sorts by and the summary's
                                     `top_examples` ranks
            max_kl, mean_kl float64  max and mean of the positions' `kl`, nats (NaN when T = 0)
            first_shifted   Int32    the first shifted position, <NA> when none
            spikes          int64    positions with a KL spike
            greedy_mismatches, ties  int64  positions where the answer token is not the aligned top-1; where the
                                     aligned top-1 ties another base token
            query           str      the bare query (the base prompt without its template)
            answer_text     str      the answer
            FIELD           str      one column per slice field, as in `positions()`
        """
        import pandas as pd

        exs = self.data["examples"]
        counts = {name: [int((ex["cls"] == c).sum()) for ex in exs] for c, name in enumerate(CLASS_NAMES)}
        n = np.array([len(ex["response_ids"]) for ex in exs], dtype=np.int64)
        first = [ex["first_shifted"] for ex in exs]
        columns = {
            "id": _column([plain_id(ex["id"]) for ex in exs]),
            "index": np.array([int(ex["index"]) for ex in exs], dtype=np.int64),
            "positions": n,
            **{name: np.array(v, dtype=np.int64) for name, v in counts.items()},
            "aligned_only": np.array([int((ex["cls"] < 0).sum()) for ex in exs], dtype=np.int64),
        }
        with np.errstate(invalid="ignore", divide="ignore"):
            for name in CLASS_NAMES:
                columns[f"{name}_share"] = np.where(n > 0, columns[name] / n, np.nan)
        columns.update({
            "max_kl": np.array([ex["max_kl"] for ex in exs], dtype=np.float64),
            "mean_kl": np.array([ex["mean_kl"] for ex in exs], dtype=np.float64),
            "first_shifted": pd.arrays.IntegerArray(np.array([f or 0 for f in first], dtype=np.int32),
                                                    np.array([f is None for f in first], dtype=bool)),
            "spikes": np.array([ex["spikes"] for ex in exs], dtype=np.int64),
            "greedy_mismatches": np.array([int(ex["greedy_mismatch"].sum()) for ex in exs], dtype=np.int64),
            "ties": np.array([int(ex["tie"].sum()) for ex in exs], dtype=np.int64),
            "query": [ex["query"] for ex in exs],
            "answer_text": [ex["answer_text"] for ex in exs],
        })
        for name, column in self._slice_columns(set(columns)).items():
            columns[column] = _column([ex["slices"][name] for ex in exs])
        return pd.DataFrame(columns)

    def parquet_metadata(self) -> dict:
        """What the Parquet files' metadata key `aligntds` holds (JSON): `format`, `pair`, `source`, `kl` (which KL the
        `kl` column is), `top_k`, `slice_fields`, `models`, `provenance` (the summary's: how each side was made), and
        `written_by` (the package version and git commit that wrote the tables)."""
        from .records import git_revision

        s = self._computed_summary()
        return {"format": PARQUET_FORMAT, "pair": s["pair"], "source": s["source"], "kl": s["kl"], "top_k": s["top_k"],
                "slice_fields": list(self.data.get("slice_fields", [])), "models": s["models"], "provenance": s["provenance"],
                "written_by": {"version": __version__, "git": git_revision()}}

    def to_parquet(self, folder) -> tuple[Path, Path]:
        """Write `folder/positions.parquet` and `folder/examples.parquet` (pyarrow; each written atomically), the tables of
        `positions()` and `examples()`, with `parquet_metadata()` as JSON under the file metadata key `aligntds`.

        pandas (`read_parquet`) reads the tables back equal, class as a category and the nullable integers as such;
        polars and DuckDB read them as they read any Parquet file (`class` is dictionary-encoded). Ids of mixed types
        (a JSON file may mix numbers and strings) are written as strings. Returns the two paths; raises `UserError` when
        the folder cannot be created or written.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        folder = Path(folder)
        store.ensure_writable_folder(folder)
        meta = json.dumps(self.parquet_metadata(), ensure_ascii=False).encode()
        paths = []
        for name, frame in ((POSITIONS_FILE, self.positions()), (EXAMPLES_FILE, self.examples())):
            if len({type(x) for x in frame["id"]}) > 1:
                frame["id"] = frame["id"].astype(str)
            table = pa.Table.from_pandas(frame, preserve_index=False)
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), PARQUET_KEY: meta})
            sink = pa.BufferOutputStream()
            pq.write_table(table, sink)
            store.atomic_write_bytes(folder / name, sink.getvalue().to_pybytes())
            paths.append(folder / name)
        return paths[0], paths[1]


def read_metadata(path) -> dict:
    """The `aligntds` metadata (JSON) of a table written by `Prepared.to_parquet`."""
    import pyarrow.parquet as pq

    return json.loads(pq.read_schema(path).metadata[PARQUET_KEY])

