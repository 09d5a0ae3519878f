"""Model pairs and loading: the presets (declared in `aligntds.presets`), dtype and device choice, tokenizer checks.

A pair is a base model and its aligned version; they must share a vocabulary (token id i means the
same text in both), which `vocab_fingerprint` lets us check across runs and machines, or one's
vocabulary must be the other's plus appended tokens (`shared_vocab`, `shared_ids`, `shared_with_recorded`).

    from aligntds.models import resolve_pair, load_tokenizer, load_model
    base, aligned = resolve_pair("llama2")
    tok = load_tokenizer(aligned); model = load_model(aligned, dtype="auto", device="cuda")
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch

from .errors import UserError
from .presets import DEMO_DIR, DTYPE_NAMES, PAIRS, REPO_ROOT, Pair  # noqa: F401  (models.PAIRS and the rest, as before)

log = logging.getLogger("aligntds")

DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES}


def resolve_pair(pair: str, base_model: str | None = None, aligned_model: str | None = None) -> tuple[str | None, str | None]:
    """(base, aligned) model ids or folders: the `--pair` preset, overridden by explicit flags.

    An unknown pair name is fine when the flags give the models: it only names the output files.
    """
    preset = PAIRS.get(pair)
    base = base_model or (preset.base if preset else None)
    aligned = aligned_model or (preset.aligned if preset else None)
    return base, aligned


def check_device(device: str) -> str:
    """`device` if this machine has it; a one-line `UserError` otherwise."""
    try:
        d = torch.device(device)
    except RuntimeError:
        raise UserError(f"--device {device!r} is not a device (cpu, cuda, cuda:1, ...)") from None
    if d.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {device}: no CUDA device is visible here (torch.cuda.is_available() is False)")
        if d.index is not None and d.index >= torch.cuda.device_count():
            raise UserError(f"--device {device}: only {torch.cuda.device_count()} CUDA devices are visible")
    elif d.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {device}: MPS is not available here")
    return device


def resolve_device(device: str | None) -> str:
    if device:
        return check_device(device)
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """`auto`: bfloat16 on CUDA, float32 elsewhere."""
    if dtype == "auto":
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    try:
        return DTYPES[dtype]
    except KeyError:
        raise UserError(f"unknown --dtype {dtype!r} (choose from auto, {', '.join(DTYPES)})") from None


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _split_revision(name: str) -> tuple[str, str | None]:
    """`org/model@rev` -> (`org/model`, `rev`), as the reference accepted; local folders are kept whole."""
    if "@" in name and not Path(name).exists():
        path, rev = name.rsplit("@", 1)
        return path, rev
    return name, None


def looks_local(path: str) -> bool:
    """True when a model name can only be a local folder, never a hub id (`name` or `org/name`): it starts with `.`, `/`
    or `~`, has more than one `/`, or its first component is a folder here (`models/x` beside a `models/` folder)."""
    return path.startswith((".", "/", "~")) or path.count("/") > 1 or ("/" in path and Path(path.split("/")[0]).is_dir())


def check_exists(name: str, what: str = "model") -> None:
    """A one-line `UserError`, before any network access, for a name that can only be a local folder (`looks_local`) and
    is not there (transformers would otherwise try the hub with it, for minutes without a network). `what` names it in
    the message (the flag that gave it)."""
    path, _ = _split_revision(name)
    if looks_local(path) and not Path(path).exists():
        tilde = path.startswith("~") and Path(path).expanduser().exists()
        raise UserError(f"{what} {name}: no such folder" + (" (a ~ is not expanded here: give the full path)" if tilde else ""))


def check_model_folder(name: str, what: str = "model") -> None:
    """`check_exists`, and a one-line `UserError` for a local path that is not a model folder: a file, or a folder with
    neither a model's `config.json` nor a PEFT adapter's `adapter_config.json`. A hub id is left to the loaders."""
    check_exists(name, what)
    path = Path(_split_revision(name)[0])
    if path.is_file():
        raise UserError(f"{what} {name}: a file, not a model folder")
    if path.is_dir() and not any((path / f).is_file() for f in ("config.json", "adapter_config.json")):
        raise UserError(f"{what} {name}: this folder is not a model: it has no config.json (a PEFT adapter's has "
                        "adapter_config.json)")


def _load_error(kind: str, name: str, e: Exception) -> UserError:
    """The loaders' error as one line: the library's message, its lines joined (cut at 400 characters)."""
    text = " ".join(line.strip() for line in str(e).splitlines() if line.strip()) or type(e).__name__
    return UserError(f"cannot load {kind} '{name}': {text if len(text) <= 400 else text[:399] + '…'}")


def load_tokenizer(name: str, trust_remote_code: bool = False):
    """The tokenizer of `name` (hub id, `id@revision` or folder); a one-line `UserError` when it cannot be loaded."""
    from transformers import AutoTokenizer

    check_exists(name)
    path, rev = _split_revision(name)
    try:
        return AutoTokenizer.from_pretrained(path, revision=rev, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError, ImportError) as e:
        raise _load_error("tokenizer", name, e) from None


def load_model(
    name: str,
    dtype: torch.dtype,
    device: str,
    device_map: str | None = None,
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
):
    """Load a causal LM for inference; `device_map="auto"` spreads a large model over the GPUs (accelerate)."""
    from transformers import AutoModelForCausalLM

    check_exists(name)
    path, rev = _split_revision(name)
    kwargs = dict(revision=rev, dtype=dtype, trust_remote_code=trust_remote_code)
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if device_map:
        kwargs["device_map"] = device_map
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError, KeyError, ImportError) as e:
        raise _load_error("model", name, e) from None
    if not device_map:
        model.to(device)
    model.eval()
    model.requires_grad_(False)
    return model


def model_revision(model) -> str | None:
    """The hub commit the weights came from, when loaded from the hub."""
    return getattr(model.config, "_commit_hash", None)


def vocab_fingerprint(tokenizer) -> str:
    """A short hash of the token -> id mapping (added tokens included): equal iff the vocabularies are equal."""
    items = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps(items, ensure_ascii=False).encode()).hexdigest()[:16]


def token_ids(tokenizer) -> list[int]:
    """Every id the tokenizer maps to a token (added tokens included), ascending."""
    return sorted(set(tokenizer.get_vocab().values()))


def shared_vocab(tok_a, tok_b) -> int | None:
    """How many leading ids mean the same in both tokenizers when one's vocabulary is the other's plus appended
    tokens (an aligned model's `<|im_end|>` or pad token): S = the smaller one's last id + 1, every id below S
    the same token in both (or in neither), every other id in the larger one only. None when they differ below S.
    """
    ia = {i: t for t, i in tok_a.get_vocab().items()}
    ib = {i: t for t, i in tok_b.get_vocab().items()}
    shared = min(max(ia, default=-1), max(ib, default=-1)) + 1
    if any(ia.get(i) != ib.get(i) for i in range(shared)):
        return None
    return shared


def vocab_difference(tok_a, tok_b, limit: int = 3) -> str:
    """A short description of how two vocabularies differ ('' when they are equal)."""
    va, vb = tok_a.get_vocab(), tok_b.get_vocab()
    ia = {i: t for t, i in va.items()}
    ib = {i: t for t, i in vb.items()}
    diffs = [i for i in sorted(set(ia) | set(ib)) if ia.get(i) != ib.get(i)]
    if not diffs:
        return ""
    shown = ", ".join(f"id {i}: {ia.get(i)!r} vs {ib.get(i)!r}" for i in diffs[:limit])
    return f"{len(diffs)} ids differ (sizes {len(va)} and {len(vb)}; {shown})"


def pad_id(tokenizer) -> int:
    """The id that pads a batch: the tokenizer's pad token, else its EOS, else 0."""
    return next((i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if i is not None), 0)


def shared_ids(tok_a, tok_b, aligned_name: str, base_name: str) -> int:
    """How many leading ids mean the same text in the aligned and the base tokenizer (both loaded): all of them when
    the vocabularies are equal, else `shared_vocab`'s S; a `UserError` when they differ below S."""
    if vocab_fingerprint(tok_a) == vocab_fingerprint(tok_b):
        return token_ids(tok_a)[-1] + 1
    shared = shared_vocab(tok_a, tok_b)
    if shared is None:
        raise UserError(f"the tokenizers of {aligned_name} and {base_name} differ ({vocab_difference(tok_a, tok_b)}): "
                        "token ids would not mean the same text")
    return shared


def shared_with_recorded(tok, model_name: str, aligned_meta: dict, i2i_file, trust_remote_code: bool = False) -> int:
    """i2b: how many leading ids mean the same text in the base tokenizer `tok` and the aligned one that made the i2i
    records (their `meta`, read from `i2i_file`).

    Equal fingerprints: all of them. Otherwise the aligned tokenizer named in the records is loaded again (it must
    still have the recorded fingerprint) and the two are compared id by id: one may be the other plus appended tokens
    (`shared_vocab`). Anything else is a `UserError`.
    """
    vocab = vocab_fingerprint(tok)
    if aligned_meta.get("vocab") == vocab:
        return token_ids(tok)[-1] + 1

    def refusal(why: str = "") -> UserError:
        return UserError(
            f"the base tokenizer of {model_name} (vocabulary {len(tok)}, fingerprint {vocab}) differs from the aligned "
            f"tokenizer of {aligned_meta.get('model')} recorded in {i2i_file} (vocabulary "
            f"{aligned_meta.get('vocab_size')}, fingerprint {aligned_meta.get('vocab')}): token ids would not mean the same "
            f"text{why}"
        )

    try:
        tok_a = load_tokenizer(aligned_meta.get("model"), trust_remote_code)
    except UserError as e:
        raise refusal(" (and the aligned tokenizer, needed to see whether one vocabulary extends the other, did not load: "
                      f"{e})") from None
    if vocab_fingerprint(tok_a) != aligned_meta.get("vocab"):
        raise refusal(f" (and the tokenizer at {aligned_meta.get('model')} is no longer the one recorded, so whether one "
                      "vocabulary "
                      "extends the other cannot be checked)")
    shared = shared_vocab(tok_a, tok)
    if shared is None:
        raise refusal()
    log.info(f"the aligned vocabulary ({len(tok_a)} tokens) and the base one ({len(tok)}) share ids 0..{shared - 1}: "
             "positions with a token only one side has are marked aligned_only")
    return shared


def context_length(model) -> int | None:
    """The longest sequence the model's positions allow, when its config says."""
    n = getattr(model.config, "max_position_embeddings", None)
    return int(n) if isinstance(n, int) and n > 0 else None
