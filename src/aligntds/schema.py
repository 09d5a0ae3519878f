"""The record schema: every key of a record file, and of its `meta`, declared once.

A record file (a shard or a merged file of `logit_analysis`) is a pickled list of dicts, one per example in data
order; T answer positions, k = `--top_k`, P prompt tokens. `RECORD_KEYS` says, for every on-disk key, its dtype,
its shape, what it means and which modes write it (i2i: the aligned model on its chat prompt; i2b: the base model
on the bare query; pair: both in one process). The record builder (`records.make_record`), the loader's
validation (`records.check_records`, which the merge, i2b reading its i2i file and data_prep all call), and the
scorers' dtypes (`scoring.STAT_DTYPES`) read it from here, and a test checks the README's tables against it. The
declarations are two tables (`_RECORD_TABLE`, `_META_TABLE`), read into `Key` and `MetaKey` objects.

A pair record holds the i2i keys for the aligned side and the same keys with a `base_` prefix for the base side
(`base_prompt`, `base_topk_ids`, ...), besides what i2b adds (`aligned_rank`, `aligned_logprob`, `aligned_only`) and
the exact divergences.

Values are finite, except the keys marked `neg_inf` (log-probs), which are -inf for a token of probability 0 (ruled
out by its model, or one the model does not have; its rank is then -1). NaN and +inf never.

On-disk names stay as the reference and earlier versions wrote them (users have files); `GLOSSARY` maps them to
the names the code uses, one name per thing from the scorer to the page.

    from aligntds.schema import keys_of, META_KEYS
    [k.name for k in keys_of("i2b") if k.positions]   # the [T] arrays of an i2b record
"""

from __future__ import annotations

from dataclasses import dataclass

MODES = ("i2i", "i2b", "pair")
ALL = frozenset(MODES)
ALIGNED_RUNS = frozenset({"i2i", "pair"})  # the unprefixed statistics are the aligned side's (i2b: the base side's)
PAIR = frozenset({"pair"})

# One side's statistics at each position; a pair record holds them twice, the base side's with BASE_PREFIX.
SIDE_STATS = ("topk_ids", "topk_logprobs", "token_logprob", "token_rank", "entropy")
BASE_PREFIX = "base_"
DIVERGENCES = ("kl_aligned_base", "kl_base_aligned", "js", "tv")


@dataclass(frozen=True)
class Key:
    """One on-disk key. dtype: numpy's name for arrays ("int32", "float32", "bool"), else "int", "str", "dict" or
    "any"; shape: "[T]", "[T, k]", "[P]" (P' for the base prompt) for arrays, "" for a scalar; modes: the modes whose
    records hold it; neg_inf: its values may be -inf; optional: absent in files written before it (read as all False)."""

    name: str
    dtype: str
    shape: str
    modes: frozenset
    meaning: str
    neg_inf: bool = False
    optional: bool = False

    @property
    def is_array(self) -> bool:
        return self.shape.startswith("[")

    @property
    def positions(self) -> bool:
        """An array with one row per answer position ([T] or [T, k])."""
        return self.shape.startswith("[T")


# The record's keys, in order: name, dtype, shape ("-": a scalar), modes, flags ("-inf": may be -inf; "optional": absent
# in files written before it; "side": one side's statistic, which a pair record also holds for the base side) and
# meaning (an indented line goes on with it). The row `base_*` stands for the base side's statistics of a pair record.
_RECORD_TABLE = """
index                 int      -      all       -           position of the example in the data file
id                    any      -      all       -           the example's `id`
prompt                str      -      all       -           the text fed to the model (pair: the aligned model's)
probe_text            str      -      all       -           the answer text (`output[0]`)
prompt_ids            int32    [P]    all       -           prompt token ids, special tokens included
response_ids          int32    [T]    all       -           answer token ids (i2b: copied from the i2i record)
topk_ids              int32    [T,k]  all       side        top-k ids of the full-vocabulary log-softmax at each position,
                                                            descending (output rows no token maps to are left out)
topk_logprobs         float32  [T,k]  all       side,-inf   their log-probs
token_logprob         float32  [T]    all       side,-inf   log-prob of the answer token (-inf: a token the model does not have)
token_rank            int32    [T]    all       side        exact 0-based rank of the answer token over the whole vocabulary:
                                                            the number of tokens strictly more likely (-1: a token the model
                                                            does not have)
entropy               float32  [T]    all       side        entropy of the position's distribution, nats
n_truncated           int      -      all       -           answer tokens dropped to fit the context (almost always 0)
final_generated_text  str      -      i2i,pair  -           the answer ids decoded in context (after the prompt)
aligned_rank          int32    [T]    i2b,pair  -           exact 0-based rank, in the whole base distribution, of the aligned
                                                            model's top-1 token at that position (-1 when the base model lacks it)
aligned_logprob       float32  [T]    i2b,pair  -inf        its base log-prob (-inf when the base model does not have it)
aligned_only          bool     [T]    i2b,pair  optional    the answer token or the aligned top-1 exists only in the aligned
                                                            vocabulary (appended tokens), or an earlier answer token does; such
                                                            positions are never classed
base_prompt           str      -      pair      -           the base model's prompt (`pure_input`, templated as in i2b)
base_prompt_ids       int32    [P']   pair      -           its ids
base_*                -        -      pair      -           the base side's statistics, named as the aligned side's with `base_`
kl_aligned_base       float32  [T]    pair      -           exact full-vocabulary KL(P_aligned||P_base), nats
kl_base_aligned       float32  [T]    pair      -           exact full-vocabulary KL(P_base||P_aligned), nats
js                    float32  [T]    pair      -           exact Jensen-Shannon divergence, nats (at most log 2)
tv                    float32  [T]    pair      -           exact total variation (at most 1)
meta                  dict     -      all       -           how the run was made (`META_KEYS`), one dict shared by a file's
                                                            records
"""

# The keys of a record's `meta`, in order: name, modes, "run" for a run setting (the shards of one run, and a shard
# kept on a re-run, must agree on these) or "-", and meaning.
_META_TABLE = """
model               all       run  the model scored (pair: the aligned model): hub id (`id@revision`), folder or adapter
base_model          pair      run  the base model
adapter             all       run  a PEFT adapter: `{name, revision, base}`, else null
base_adapter        pair      run  the base model's adapter, or null
mode                all       run  `i2i`, `i2b` or `pair`
dtype               all       run  the dtype the models ran in
top_k               all       run  candidates stored per position
template            all       run  the text the bare query was put in (null: the query alone; i2i: null)
tokenization        all       run  `chat` or `reference`
n_data              all       run  examples in the data file
data                all       run  fingerprint of the examples' content
aligned             i2i,i2b   run  i2b: the i2i run it scored, `model (dtype)`; i2i: null
vocab               all       run  fingerprint of the (aligned, in pair mode) tokenizer's vocabulary
revision            all       -    the hub commit of the weights loaded (pair: the aligned model's; an adapter's base weights)
base_revision       pair      -    the same for the base model
enable_template     all       -    `--enable_template`
base_template_file  all       -    `--base_template`
data_file           all       -    the data file, as given (a path or hub name; null: rows given in memory to `aligntds.score`)
data_split          all       -    `--data_split`: the split of a datasets folder or hub dataset, or null
data_revision       all       -    `--data_revision`: the hub dataset's revision, or null
data_columns        all       -    `--columns`: the column mapping as given, or null
vocab_size          all       -    the tokenizer's size
base_vocab          pair      -    the base tokenizer's fingerprint
base_vocab_size     pair      -    the base tokenizer's size
shared_vocab        i2b,pair  -    S: the ids 0..S-1 both tokenizers share
divergences         pair      -    over which ids the divergences are computed
shared_weights      pair      -    both sides ran on one copy of the weights (an aligned adapter on the base model)
answer_ids          all       -    where the answer ids come from: `output_ids`, `text`, or (i2b) `i2i records`
versions            all       -    package, git commit, torch, transformers, numpy, python
"""


def _rows(table: str, columns: int) -> list[list[str]]:
    """A table's rows: `columns` - 1 words, then the rest of the line (an indented line goes on with the previous row)."""
    rows: list[list[str]] = []
    for line in table.strip("\n").splitlines():
        if line.startswith(" "):
            rows[-1][-1] += " " + line.strip()
        else:
            rows.append(line.split(None, columns - 1))
    return rows


def _modes(cell: str) -> frozenset:
    return ALL if cell == "all" else frozenset(cell.split(","))


def _record_keys() -> tuple[Key, ...]:
    keys, sides = [], []
    for name, dtype, shape, modes, flags, meaning in _rows(_RECORD_TABLE, 6):
        if name == "base_*":
            keys += [Key(BASE_PREFIX + k.name, k.dtype, k.shape, PAIR, f"the base side's {k.meaning}", k.neg_inf) for k in sides]
            continue
        flags = flags.split(",")
        key = Key(name, dtype, "" if shape == "-" else shape.replace(",", ", "), _modes(modes), meaning, "-inf" in flags,
                  "optional" in flags)
        keys.append(key)
        sides += [key] if "side" in flags else []
    assert tuple(k.name for k in sides) == SIDE_STATS
    return tuple(keys)


RECORD_KEYS = _record_keys()
KEYS: dict[str, Key] = {k.name: k for k in RECORD_KEYS}


@dataclass(frozen=True)
class MetaKey:
    """One key of a record's `meta`. run: a run setting (shards of one run, and a shard kept on a re-run, must agree)."""

    name: str
    modes: frozenset
    meaning: str
    run: bool = False


META_KEYS = tuple(MetaKey(name, _modes(modes), meaning, run == "run") for name, modes, run, meaning in _rows(_META_TABLE, 4))
RUN_KEYS = tuple(k.name for k in META_KEYS if k.run)

# On-disk name -> the names the code uses for it.
GLOSSARY = {
    "probe_text": "answer_text: the answer's text ('probe' is the reference's on-disk name; the code never uses it)",
    "prompt": "aligned_prompt in i2i and pair records, base_prompt in i2b records",
    "prompt_ids": "the aligned prompt's ids in i2i and pair records, the base prompt's in i2b records",
    "topk_ids": "aligned_topk_ids in i2i and pair records, base_topk_ids in i2b records (the side that was scored)",
    "topk_logprobs": "aligned_topk_logprobs / base_topk_logprobs, as topk_ids",
    "token_logprob": "the aligned / base log-prob of the answer token, as topk_ids",
    "token_rank": "the aligned / base rank of the answer token, as topk_ids (aligned: > 0 is a greedy mismatch)",
    "entropy": "aligned_entropy / base_entropy, as topk_ids",
    "aligned_rank": "aligned_rank: the base rank of aligned_top1, the aligned model's top-1 id (topk_ids[:, 0] of the "
                    "aligned side; Request.aligned_top1 when the base model ranks it)",
    "aligned_logprob": "aligned_logprob: the base log-prob of aligned_top1",
}


def keys_of(mode: str) -> tuple[Key, ...]:
    """The keys a record of `mode` holds (optional ones included), in schema order."""
    return tuple(k for k in RECORD_KEYS if mode in k.modes)


def meta_keys_of(mode: str) -> tuple[str, ...]:
    """The keys of a `meta` of `mode`, in schema order."""
    return tuple(k.name for k in META_KEYS if mode in k.modes)


def side_of(mode: str) -> str:
    """Whose statistics a record's unprefixed keys (`topk_ids`, `entropy`, ...) are: "aligned" or "base"."""
    return "aligned" if mode in ALIGNED_RUNS else "base"


def disk_key(mode: str, side: str, key: str) -> str:
    """The on-disk key of one side's `key` (a statistic of `SIDE_STATS`, `prompt` or `prompt_ids`) in a record of `mode`:
    the key itself for the side the record scored (`side_of`), with `base_` for a pair record's base side."""
    if side == side_of(mode):
        return key
    if mode == "pair" and side == "base":
        return BASE_PREFIX + key
    raise KeyError(f"a {mode} record holds no {side} side")


def array_dtypes(names) -> dict[str, str]:
    """{key: numpy dtype name} of the given array keys."""
    return {name: KEYS[name].dtype for name in names}
