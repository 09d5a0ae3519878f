"""What several test modules share: data, runs of the scripts, oracles and checks (no test module imports another).

- data: `CORPUS` (the tiny tokenizers' training text), `EXAMPLES`, `REPORT_EXAMPLES` (hostile prompt and answer first),
  `MULTILINGUAL_ANSWERS`, `chat_input`, `write_data`;
- scripts: `i2i`, `i2b` (one `logit_analysis` run), `run_i2i_i2b` (both, merged), `one_error_line` (the one-line error
  a script printed for a user's mistake);
- several processes: `launcher` (accelerate launch, torchrun), `subprocess_env`, `run_ranks` (each rank in turn, here);
- oracles: `brute_force` (KL, JS, TV from full distributions), `slow_answer_spans` (an answer cut into one span per
  token, the slow way), `reference_pickle` (a merged pickle as the reference wrote it);
- models and tokenizers: `make_adapter` (a LoRA and its merged model), `sp_folder` (Mistral-7B's real SentencePiece
  tokenizer, from mistral-common), `LLAMA2_TEMPLATE` (a Llama-2-like chat template);
- `assert_same_records`.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
import sys
from pathlib import Path

import numpy as np
import torch

from aligntds.cli.logit_analysis import main as logit_analysis
from aligntds.cli.merge_logits import main as merge_logits
from aligntds.prompts import ChatEncoder
from aligntds.store import load_records
from aligntds.tiny import save_pair_member

REPO = Path(__file__).resolve().parents[1]

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

HOSTILE_PROMPT = "What is <b>bold</b> & \"quoted\" 'text'? <script>alert('prompt')</script>"
HOSTILE_ANSWER = "Sure! <script>alert('x')</script> & <img src=x onerror=alert(1)> \"done\" 'ok'</s>"
REPORT_EXAMPLES = [
    (HOSTILE_PROMPT, HOSTILE_ANSWER),
    ("What is the capital of France?", "Sure! Paris is the capital of France. I hope this helps!</s>"),
    ("Say nothing.", ""),
    ("Tell me about cats.", "The cat sat on the mat.\nIt looked at the garden.</s>"),
]

# The answer (the é written as e + U+0301) and one with a ZWJ sequence, a flag, Devanagari (with its
# vowel signs and virama), Arabic, a rare emoji and CJK character (byte fallback in Mistral's SentencePiece), a line
# break and a tab: byte-level tokenizers split their characters over several tokens.
MULTILINGUAL_ANSWERS = [
    "Smile 😀 ok. 世界 and שלום and cafe\u0301 done</s>",
    "नमस्ते 👩\u200d👩\u200d👧 and 🇫🇷 🦩 鬱.\nمرحبا\tok!</s>",
]
MULTILINGUAL_CORPUS = ["Smile 😀 ok. 世界 and שלום and cafe\u0301 done.", "नमस्ते 👩\u200d👩\u200d👧 🇫🇷 🦩 鬱 مرحبا!",
                       "世界 😀 🦩 नमस्ते"]

LLAMA2_TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'user' %}{{ bos_token }}[INST] {{ m['content'] }} [/INST]"
                   "{% else %} {{ m['content'] }} {{ eos_token }}{% endif %}{% endfor %}")


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


# -- the scripts ---------------------------------------------------------------------------------------------

def i2i(data, folder, model, *extra):
    return logit_analysis(["--data_file", str(data), "--logits_folder", str(folder), "--pair", "t", "--mode", "i2i",
                           "--aligned_model", str(model), *extra])


def i2b(data, folder, model, i2i_file, *extra):
    return logit_analysis(["--data_file", str(data), "--logits_folder", str(folder), "--pair", "t", "--mode", "i2b",
                           "--base_model", str(model), "--i2i_pkl_file", str(i2i_file), *extra])


def run_i2i_i2b(tmp_path, pair, data_file, top_k=30):
    """i2i, then i2b with the reference's template, each merged: the records of both (lists of dicts)."""
    out = tmp_path / "out"
    common = ["--data_file", str(data_file), "--pair", "t", "--top_k", str(top_k)]
    assert logit_analysis([*common, "--mode", "i2i", "--aligned_model", str(pair["aligned"]), "--logits_folder",
                           str(out / "shards")]) == 0
    assert merge_logits([str(out), "t", "i2i"]) == 0
    args = [*common, "--mode", "i2b", "--base_model", str(pair["base"]), "--i2i_pkl_file", str(out / "t-i2i.pkl")]
    assert logit_analysis([*args, "--enable_template", "--logits_folder", str(out / "shards")]) == 0
    assert merge_logits([str(out), "t", "i2b"]) == 0
    return load_records(out / "t-i2i.pkl"), load_records(out / "t-i2b.pkl")


def assert_same_records(a, b):
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys()
        for k in ra:
            if isinstance(ra[k], np.ndarray):
                if ra[k].dtype.kind == "f":
                    np.testing.assert_allclose(ra[k], rb[k], atol=1e-5, rtol=0)
                else:
                    np.testing.assert_array_equal(ra[k], rb[k])
            else:
                assert ra[k] == rb[k], k


# -- several processes ---------------------------------------------------------------------------------------

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
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                "--main_process_port", str(free_port())]
    assert name == "torchrun"
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]


def run_ranks(main, world: int, args: list[str], monkeypatch, capsys) -> list[str]:
    """Run a script's `main(args)` as ranks 0..world-1 of one launch, one after the other in this process; their stderr."""
    from transformers.utils import logging as hf_logging

    errs = []
    try:
        for r in range(world):
            for name, value in (("RANK", r), ("WORLD_SIZE", world), ("LOCAL_RANK", r)):
                monkeypatch.setenv(name, str(value))
            assert main(args) == 0
            errs.append(capsys.readouterr().err)
    finally:
        for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
            monkeypatch.delenv(name)
        hf_logging.enable_progress_bar()  # ranks > 0 turned transformers' bars off in this process
        hf_logging.set_verbosity_warning()
    return errs


# -- oracles ---------------------------------------------------------------------------------------------------

def brute_force(ref_p: np.ndarray, ref_q: np.ndarray) -> dict[str, np.ndarray]:
    """KL, JS and TV from the oracle's full log-prob arrays [T, V], in float64, straight from the definitions
    (0 log 0 = 0)."""
    lp, lq = ref_p.astype(np.float64), ref_q.astype(np.float64)
    p, q = np.exp(lp), np.exp(lq)
    lm = np.log((p + q) / 2)

    def kl(pr, log_a, log_b):
        with np.errstate(invalid="ignore"):
            return np.where(pr > 0, pr * (log_a - log_b), 0.0).sum(1)

    return {
        "kl_aligned_base": kl(p, lp, lq),
        "kl_base_aligned": kl(q, lq, lp),
        "js": 0.5 * kl(p, lp, lm) + 0.5 * kl(q, lq, lm),
        "tv": 0.5 * np.abs(p - q).sum(1),
    }


def slow_spans(decode_first, n: int, text: str) -> list[str]:
    """The reference cut: token t's span ends where the decoding of the first t + 1 tokens (`decode_first(t + 1)`)
    stops agreeing with `text`, never before the previous end; the last ends at the end of the text."""
    ends = [0]
    for t in range(n):
        ends.append(max(ends[-1], len(os.path.commonprefix([decode_first(t + 1), text]))))
    ends[-1] = len(text) if n else 0
    return [text[a:b] for a, b in zip(ends, ends[1:])]


def slow_answer_spans(tok, ids, prompt=None, prompt_ids=None, tokenization="chat") -> list[str]:
    """`slow_spans` of an answer: after its prompt as `ChatEncoder.decode_answer` decodes it, or decoded alone."""
    if prompt is None:
        decode = lambda n: tok.decode(ids[:n], skip_special_tokens=False, clean_up_tokenization_spaces=False)  # noqa: E731
    else:
        decode = lambda n: ChatEncoder(tok, tokenization).decode_answer(prompt, prompt_ids, ids[:n])  # noqa: E731
    return slow_spans(decode, len(ids), decode(len(ids)))


def reference_pickle(path, n_positions, ids_fn, id_offset=0):
    """A merged pickle as the reference wrote it: numpy scalars in one dict per candidate."""
    recs = []
    for e, t in enumerate(n_positions):
        results = []
        for pos in range(t):
            ids = ids_fn(e, pos)
            probs = np.float32(0.5) ** np.arange(1, len(ids) + 1, dtype=np.float32)
            results.append({"tokens": [{"token_id": np.int64(i), "token": f"w{i}", "logit": np.float32(np.log(p)), "prob": p}
                                       for i, p in zip(ids, probs)], "prefix": "whatever"})
        recs.append({"id": e + id_offset, "prompt": "# Query: \n ```q``` \n\n \n# Answer: \n ```", "probe_text": "a",
                     "results": results, "final_generated_text": "a"})
    path.write_bytes(pickle.dumps(recs, protocol=4))
    return path


# -- models and tokenizers ---------------------------------------------------------------------------------

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


def mistral_data() -> Path:
    """The folder of the SentencePiece models mistral-common ships."""
    import mistral_common

    return Path(mistral_common.__file__).parent / "data"


SP_FILES = {"v1": "tokenizer.model.v1", "v3": "mistral_instruct_tokenizer_240323.model.v3"}


def sp_folder(root: Path, version: str, legacy: bool) -> Path:
    """A Llama-style tokenizer folder made from a real SentencePiece model, as on the hub (tokenizer.model + config)."""
    folder = root / f"{version}-legacy-{legacy}"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(mistral_data() / SP_FILES[version], folder / "tokenizer.model")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "add_bos_token": True, "add_eos_token": False, "legacy": legacy, "clean_up_tokenization_spaces": False,
    }))
    return folder
