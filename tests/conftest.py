"""Session fixtures: tiny tokenizers and models trained/built here, saved with save_pretrained.

- `tok_bos`: byte-level BPE with <s> prepended (Llama-like); `tok_nobos`: no BOS at all (Qwen-like);
  `tok_multi`: like `tok_bos`, with merges inside multi-byte characters (`MULTILINGUAL_ANSWERS`).
- `pair_llama`: base and aligned tiny Llama models sharing `tok_bos`.
- `pair_qwen2`: base and aligned tiny Qwen2 models (grouped-query attention, tied embeddings) with `tok_nobos`.
- `data_file`: a few just-eval-style examples (Llama-2 chat `input` starting with <s>, an empty
  answer, an answer ending in a literal </s>).
- `launcher`, `subprocess_env`: start a script in several processes (accelerate launch, torchrun) on the CPU;
  `run_ranks`: run a script as each rank of a launch in turn, in this process.
- `one_error_line`: the one-line error a script printed for a user's mistake.
- `make_adapter`: a LoRA adapter made with peft on a saved model, and the merged full model as its oracle.
- `report`: the whole pipeline (i2i, i2b, merge, data_prep, generate_html) on `REPORT_EXAMPLES`, whose
  first prompt and answer hold <script>, <img onerror>, & and quotes.
"""

from __future__ import annotations

import json
import os
import socket
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
from aligntds.store import load_records  # noqa: E402
from aligntds.tiny import save_pair_member, tiny_model, train_tokenizer  # noqa: E402

# One thread: the test models are tiny, and on a machine other jobs share, a second thread that is not
# scheduled makes every parallel region wait for it (the reference loops ran 6x slower with two threads).
torch.set_num_threads(1)

CORPUS = [
    "The cat sat on the mat and looked at the garden.",
    "Paris is the capital of France. Rome is the capital of Italy.",
    "Sure! Here is a short answer to your question.",
    "I hope this helps! Let me know if you have other questions.",
    "Water boils at one hundred degrees at sea level.",
    "To bake bread, mix flour, water, salt and yeast, then wait.",
    "However, I cannot help with that request because it is unsafe.",
    "# Query: ``` what is this? ``` # Answer: ``` it is a test.",
    "[INST] <<SYS>> You are a helpful assistant. <</SYS>> [/INST]",
] * 20

EXAMPLES = [
    ("What is the capital of France?", "Sure! Paris is the capital of France. I hope this helps!</s>"),
    ("How do I bake bread?", "To bake bread, mix flour, water, salt and yeast, then wait for the dough to rise.</s>"),
    ("Say nothing.", ""),
    ("Tell me about cats.", "The cat sat on the mat."),
    ("Where does water boil?", "Water boils at one hundred degrees at sea level. However, it depends on the pressure.</s>"),
    ("Is Rome in Italy?", "Yes. Rome is the capital of Italy.</s>"),
    ("A & B <script>alert(1)</script>", "I cannot help with that request because it is unsafe.</s>"),
]


def chat_input(query: str) -> str:
    """The Llama-2 chat format the real data uses: the prompt already starts with <s>."""
    return f"<s>[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\n{query} [/INST] "


def write_data(path: Path, examples=EXAMPLES, jsonl: bool = False) -> Path:
    items = [
        {"id": i, "pure_input": q, "input": chat_input(q), "output": [a], "reference": "N/A"} for i, (q, a) in enumerate(examples)
    ]
    if jsonl:
        path.write_text("".join(json.dumps(x) + "\n" for x in items))
    else:
        path.write_text(json.dumps(items, indent=1))
    return path


def one_error_line(capsys, *fragments):
    """The one `error: ...` line a script printed (and no traceback), holding every fragment."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


TIMEOUT = 600  # seconds for a launch of several processes


def subprocess_env(tmp_path) -> dict[str, str]:
    """One thread per process (two cores), no accelerate config of the user's (HF_HOME), and the launcher's
    temporary folders under the test's (TMPDIR)."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HOME": str(tmp_path / "hf"), "TOKENIZERS_PARALLELISM": "false",
            "TMPDIR": str(tmp_path)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launcher(name: str, processes: int) -> list[str]:
    """The command that starts a script (appended to it) in `processes` processes, as on a GPU node.

    On a machine without GPUs `accelerate launch --cpu --num_processes 2` starts ONE process (accelerate expects
    mpirun for several CPU processes), so accelerate gets --multi_gpu, which starts them with torch's launcher as on
    a GPU node; the scripts then need --device cpu to keep the work on the CPU wherever the test runs.
    """
    if name == "accelerate":
        return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port())]
    assert name == "torchrun"
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]


def run_ranks(main, world: int, args: list[str], monkeypatch, capsys) -> list[str]:
    """Run a script's `main(args)` as ranks 0..world-1 of one launch, one after the other in this process; their stderr."""
    from transformers.utils import logging as hf_logging

    errs = []
    try:
        for r in range(world):
            monkeypatch.setenv("RANK", str(r)), monkeypatch.setenv("WORLD_SIZE", str(world)), monkeypatch.setenv("LOCAL_RANK", str(r))
            assert main(args) == 0
            errs.append(capsys.readouterr().err)
    finally:
        for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
            monkeypatch.delenv(name)
        hf_logging.enable_progress_bar()  # ranks > 0 turned transformers' bars off in this process
        hf_logging.set_verbosity_warning()
    return errs


def make_adapter(base_folder: Path, folder: Path, tok, target_modules: list[str], seed: int = 0) -> tuple[Path, Path]:
    """A LoRA made with peft on the model in `base_folder`, its B matrices drawn at random (peft starts them at zero,
    which would make the adapter do nothing), saved in `folder` (its config names `base_folder`); and the merged
    full model (`merge_and_unload`) saved beside it, the oracle. Returns (adapter folder, merged folder)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_folder, dtype=torch.float32),
                           LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=target_modules))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.2)
    model.save_pretrained(folder)
    assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == str(base_folder)
    merged = save_pair_member(folder.with_name(folder.name + "-merged"), model.merge_and_unload(), tok)
    return folder, merged


@pytest.fixture(scope="session")
def tok_bos():
    return train_tokenizer(CORPUS, vocab_size=400)


# The answer (the é written as e + U+0301) and one with a ZWJ sequence, a flag, Devanagari (with its
# vowel signs and virama), Arabic, a rare emoji and CJK character (byte fallback in Mistral's SentencePiece), a line
# break and a tab: byte-level tokenizers split their characters over several tokens.
MULTILINGUAL_ANSWERS = [
    "Smile 😀 ok. 世界 and שלום and cafe\u0301 done</s>",
    "नमस्ते 👩\u200d👩\u200d👧 and 🇫🇷 🦩 鬱.\nمرحبا\tok!</s>",
]
MULTILINGUAL_CORPUS = ["Smile 😀 ok. 世界 and שלום and cafe\u0301 done.", "नमस्ते 👩\u200d👩\u200d👧 🇫🇷 🦩 鬱 مرحبا!",
                       "世界 😀 🦩 नमस्ते"]


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


HOSTILE_PROMPT = "What is <b>bold</b> & \"quoted\" 'text'? <script>alert('prompt')</script>"
HOSTILE_ANSWER = "Sure! <script>alert('x')</script> & <img src=x onerror=alert(1)> \"done\" 'ok'</s>"
REPORT_EXAMPLES = [
    (HOSTILE_PROMPT, HOSTILE_ANSWER),
    ("What is the capital of France?", "Sure! Paris is the capital of France. I hope this helps!</s>"),
    ("Say nothing.", ""),
    ("Tell me about cats.", "The cat sat on the mat.\nIt looked at the garden.</s>"),
]


@pytest.fixture(scope="session")
def report(tmp_path_factory, pair_llama):
    """The pipeline end to end on tiny models: records, prepared data, pages."""
    root = tmp_path_factory.mktemp("report")
    data = write_data(root / "data.json", REPORT_EXAMPLES)
    common = ["--data_file", str(data), "--pair", "r"]
    assert logit_analysis([*common, "--mode", "i2i", "--aligned_model", str(pair_llama["aligned"]), "--logits_folder", str(root / "i2i/shards")]) == 0
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
