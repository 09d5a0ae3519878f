"""The record schema: every key of a record file, and of its `meta`, declared once.

A record file (a shard or a merged file of `logit_analysis`) is a pickled list of dicts, one per example in data
order; T answer positions, k = `--top_k`, P prompt tokens. `RECORD_KEYS` says, for every on-disk key, its dtype,
its shape, what it means and which modes write it (i2i: the aligned model on its chat prompt; i2b: the base model
on the bare query; pair: both in one process). The record builder (`records.make_record`), the loader's
validation (`records.check_records`, which the merge, i2b reading its i2i file and data_prep all call), and the
scorers' dtypes (`scoring.STAT_DTYPES`) read it from here, and a test checks the README's tables against it.

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
RANKED = frozenset({"i2b", "pair"})  # the base model ranks the aligned top-1
PAIR = frozenset({"pair"})

# One side's statistics at each position; a pair record holds them twice, the base side's with BASE_PREFIX.
SIDE_STATS = ("topk_ids", "topk_logprobs", "token_logprob", "token_rank", "entropy")
BASE_PREFIX = "base_"
DIVERGENCES = ("kl_aligned_base", "kl_base_aligned", "js", "tv")


@dataclass(frozen=True)
class Key:
    """One on-disk key. dtype: numpy's name for arrays ("int32", "float32", "bool"), else "int", "str", "dict" or
    "any"; shape: "[T]", "[T, k]", "[P]" (P' for the base prompt) for arrays, "" for a scalar; modes: the modes whose records hold it;
    neg_inf: its values may be -inf; optional: absent in files written before it (read as all False)."""

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


def _side(prefix: str, modes: frozenset, whose: str) -> list[Key]:
    return [
        Key(f"{prefix}topk_ids", "int32", "[T, k]", modes, f"{whose}top-k ids of the full-vocabulary log-softmax at each "
            "position, descending (output rows no token maps to are left out)"),
        Key(f"{prefix}topk_logprobs", "float32", "[T, k]", modes, f"{whose}their log-probs", neg_inf=True),
        Key(f"{prefix}token_logprob", "float32", "[T]", modes, f"{whose}log-prob of the answer token (-inf: a token the "
            "model does not have)", neg_inf=True),
        Key(f"{prefix}token_rank", "int32", "[T]", modes, f"{whose}exact 0-based rank of the answer token over the whole "
            "vocabulary: the number of tokens strictly more likely (-1: a token the model does not have)"),
        Key(f"{prefix}entropy", "float32", "[T]", modes, f"{whose}entropy of the position's distribution, nats"),
    ]


RECORD_KEYS: tuple[Key, ...] = (
    Key("index", "int", "", ALL, "position of the example in the data file"),
    Key("id", "any", "", ALL, "the example's `id`"),
    Key("prompt", "str", "", ALL, "the text fed to the model (pair: the aligned model's)"),
    Key("probe_text", "str", "", ALL, "the answer text (`output[0]`)"),
    Key("prompt_ids", "int32", "[P]", ALL, "prompt token ids, special tokens included"),
    Key("response_ids", "int32", "[T]", ALL, "answer token ids (i2b: copied from the i2i record)"),
    *_side("", ALL, ""),
    Key("n_truncated", "int", "", ALL, "answer tokens dropped to fit the context (almost always 0)"),
    Key("final_generated_text", "str", "", ALIGNED_RUNS, "the answer ids decoded in context (after the prompt)"),
    Key("aligned_rank", "int32", "[T]", RANKED, "exact 0-based rank, in the whole base distribution, of the aligned "
        "model's top-1 token at that position (-1 when the base model does not have that token)"),
    Key("aligned_logprob", "float32", "[T]", RANKED, "its base log-prob (-inf when the base model does not have it)",
        neg_inf=True),
    Key("aligned_only", "bool", "[T]", RANKED, "the answer token or the aligned top-1 exists only in the aligned "
        "vocabulary (appended tokens), or an earlier answer token does; such positions are never classed",
        optional=True),
    Key("base_prompt", "str", "", PAIR, "the base model's prompt (`pure_input`, templated as in i2b)"),
    Key("base_prompt_ids", "int32", "[P']", PAIR, "its ids"),
    *_side(BASE_PREFIX, PAIR, "the base side's "),
    Key("kl_aligned_base", "float32", "[T]", PAIR, "exact full-vocabulary KL(P_aligned||P_base), nats"),
    Key("kl_base_aligned", "float32", "[T]", PAIR, "exact full-vocabulary KL(P_base||P_aligned), nats"),
    Key("js", "float32", "[T]", PAIR, "exact Jensen-Shannon divergence, nats (at most log 2)"),
    Key("tv", "float32", "[T]", PAIR, "exact total variation (at most 1)"),
    Key("meta", "dict", "", ALL, "how the run was made (`META_KEYS`); one dict shared by all records of a file"),
)
KEYS: dict[str, Key] = {k.name: k for k in RECORD_KEYS}


@dataclass(frozen=True)
class MetaKey:
    """One key of a record's `meta`. run: a run setting (shards of one run, and a shard kept on a re-run, must agree)."""

    name: str
    modes: frozenset
    meaning: str
    run: bool = False


META_KEYS: tuple[MetaKey, ...] = (
    MetaKey("model", ALL, "the model scored (pair: the aligned model): hub id (`id@revision`), folder or adapter", run=True),
    MetaKey("base_model", PAIR, "the base model", run=True),
    MetaKey("adapter", ALL, "a PEFT adapter: `{name, revision, base}`, else null", run=True),
    MetaKey("base_adapter", PAIR, "the base model's adapter, or null", run=True),
    MetaKey("mode", ALL, "`i2i`, `i2b` or `pair`", run=True),
    MetaKey("dtype", ALL, "the dtype the models ran in", run=True),
    MetaKey("top_k", ALL, "candidates stored per position", run=True),
    MetaKey("template", ALL, "the text the bare query was put in (null: the query alone; i2i: null)", run=True),
    MetaKey("tokenization", ALL, "`chat` or `reference`", run=True),
    MetaKey("n_data", ALL, "examples in the data file", run=True),
    MetaKey("data", ALL, "fingerprint of the examples' content", run=True),
    MetaKey("aligned", frozenset({"i2i", "i2b"}), "i2b: the i2i run it scored, `model (dtype)`; i2i: null", run=True),
    MetaKey("vocab", ALL, "fingerprint of the (aligned, in pair mode) tokenizer's vocabulary", run=True),
    MetaKey("revision", ALL, "the hub commit of the weights loaded (pair: the aligned model's; an adapter's base weights)"),
    MetaKey("base_revision", PAIR, "the same for the base model"),
    MetaKey("enable_template", ALL, "`--enable_template`"),
    MetaKey("base_template_file", ALL, "`--base_template`"),
    MetaKey("data_file", ALL, "the data file, as given"),
    MetaKey("vocab_size", ALL, "the tokenizer's size"),
    MetaKey("base_vocab", PAIR, "the base tokenizer's fingerprint"),
    MetaKey("base_vocab_size", PAIR, "the base tokenizer's size"),
    MetaKey("shared_vocab", RANKED, "S: the ids 0..S-1 both tokenizers share"),
    MetaKey("divergences", PAIR, "over which ids the divergences are computed"),
    MetaKey("shared_weights", PAIR, "both sides ran on one copy of the weights (an aligned adapter on the base model)"),
    MetaKey("answer_ids", ALL, "where the answer ids come from: `output_ids`, `text`, or (i2b) `i2i records`"),
    MetaKey("versions", ALL, "package, git commit, torch, transformers, numpy, python"),
)
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
