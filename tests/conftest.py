"""Session fixtures: tiny tokenizers and models trained/built here, saved with save_pretrained.

- `tok_bos`: byte-level BPE with <s> prepended (Llama-like); `tok_nobos`: no BOS at all (Qwen-like);
  `tok_multi`: like `tok_bos`, with merges inside multi-byte characters (`MULTILINGUAL_ANSWERS`).
- `pair_llama`: base and aligned tiny Llama models sharing `tok_bos`.
- `pair_qwen2`: base and aligned tiny Qwen2 models (grouped-query attention, tied embeddings) with `tok_nobos`.
- `data_file`: a few just-eval-style examples (`helpers.EXAMPLES`: Llama-2 chat `input` starting with <s>, an empty
  answer, an answer ending in a literal </s>).
- `report`: the whole pipeline (i2i, i2b, merge, data_prep, generate_html) on `REPORT_EXAMPLES`, whose
  first prompt and answer hold <script>, <img onerror>, & and quotes.
- `demo_pair`: the demo pair, models/demo (or $ALIGNTDS_DEMO_DIR), built by its script (about a minute) unless a
  current build is there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Idle OpenMP threads sleep instead of spinning. On a CPU that other jobs share, spinning threads fight them
# for the cores and torch runs several times slower (measured: 1.3-1.8 s per training step instead of 0.3).
# libgomp reads this when torch is first imported, just below.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from aligntds.cli.data_prep import main as data_prep  # noqa: E402
from aligntds.cli.generate_html import main as generate_html  # noqa: E402
from aligntds.cli.logit_analysis import main as logit_analysis  # noqa: E402
from aligntds.cli.merge_logits import main as merge_logits  # noqa: E402
from aligntds.demo_pair import BuildConfig, is_current  # noqa: E402
from aligntds.presets import DEMO_DIR  # noqa: E402
from aligntds.store import load_records  # noqa: E402
from aligntds.tiny import save_pair_member, tiny_model, train_tokenizer  # noqa: E402
from helpers import CORPUS, MULTILINGUAL_CORPUS, REPO, REPORT_EXAMPLES, write_data  # noqa: E402

# One thread: the test models are tiny, and on a machine other jobs share, a second thread that is not
# scheduled makes every parallel region wait for it (the reference loops ran 6x slower with two threads).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tok_bos():
    return train_tokenizer(CORPUS, vocab_size=400)


@pytest.fixture(scope="session")
def tok_multi():
    """Byte-level BPE that has merged some of MULTILINGUAL_CORPUS's bytes: tokens of whole characters, of single
    bytes, and of bytes that end one character and start the next (`ĳ©âĢįðŁ`: the end of 👩, a ZWJ, the start of 👩)."""
    return train_tokenizer(CORPUS + MULTILINGUAL_CORPUS * 3, vocab_size=500)


@pytest.fixture(scope="session")
def tok_nobos():
    return train_tokenizer(CORPUS, vocab_size=400, add_bos=False)


def _pair(root: Path, arch: str, tok, **overrides) -> dict[str, Path]:
    out = {}
    for role, seed in (("base", 1), ("aligned", 2)):
        out[role] = save_pair_member(root / role, tiny_model(arch, len(tok), seed=seed, **overrides), tok)
    return out


@pytest.fixture(scope="session")
def pair_llama(tmp_path_factory, tok_bos):
    return _pair(tmp_path_factory.mktemp("llama"), "llama", tok_bos)


@pytest.fixture(scope="session")
def pair_qwen2(tmp_path_factory, tok_nobos):
    return _pair(tmp_path_factory.mktemp("qwen2"), "qwen2", tok_nobos)


@pytest.fixture(scope="session")
def data_file(tmp_path_factory) -> Path:
    return write_data(tmp_path_factory.mktemp("data") / "data.json")


@pytest.fixture(scope="session")
def report(tmp_path_factory, pair_llama):
    """The pipeline end to end on tiny models: records, prepared data, pages."""
    root = tmp_path_factory.mktemp("report")
    data = write_data(root / "data.json", REPORT_EXAMPLES)
    common = ["--data_file", str(data), "--pair", "r"]
    assert logit_analysis([*common, "--mode", "i2i", "--aligned_model", str(pair_llama["aligned"]), "--logits_folder",
                           str(root / "i2i/shards")]) == 0
    assert merge_logits([str(root / "i2i"), "r", "i2i"]) == 0
    assert logit_analysis([*common, "--mode", "i2b", "--base_model", str(pair_llama["base"]), "--enable_template",
                           "--i2i_pkl_file", str(root / "i2i/r-i2i.pkl"), "--logits_folder", str(root / "i2b/shards")]) == 0
    assert merge_logits([str(root / "i2b"), "r", "i2b"]) == 0
    prepared = root / "prep" / "r.pkl"
    assert data_prep(["r", str(root / "i2i/r-i2i.pkl"), str(root / "i2b/r-i2b.pkl"), "--out", str(prepared)]) == 0
    html = root / "html"
    assert generate_html(["r", "--data", str(prepared), "--out", str(html)]) == 0
    return {"root": root, "prepared": prepared, "html": html, "i2i": load_records(root / "i2i/r-i2i.pkl"),
            "i2b": load_records(root / "i2b/r-i2b.pkl")}


@pytest.fixture(scope="session")
def demo_pair(tmp_path_factory) -> Path:
    """models/demo (or $ALIGNTDS_DEMO_DIR), built by scripts/build_demo_pair.py unless a current build is there."""
    if not is_current(DEMO_DIR, BuildConfig()):
        instructions = tmp_path_factory.mktemp("build") / "instructions.json"
        run = subprocess.run([sys.executable, str(REPO / "scripts" / "build_demo_pair.py"), "--root", str(DEMO_DIR),
                              "--instructions", str(instructions)], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr[-3000:]
    return DEMO_DIR
