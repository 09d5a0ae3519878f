"""Model pairs by name (`--pair`), the dtypes a model can run in, and where the project's own models live.

Nothing heavy is imported here: the scripts' flags (`aligntds.options`) list the presets in their help, and a script
that needs no model (merge_logits, generate_html, compare_pairs) starts without loading torch.

    from aligntds.presets import PAIRS
    PAIRS["llama2"].aligned      # 'meta-llama/Llama-2-7b-chat-hf'
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def checkout() -> Path | None:
    """The project's checkout when this package runs from one (a clone's src/aligntds, or an editable install of it);
    None for an installed copy (`pip install .`: site-packages/aligntds)."""
    here = Path(__file__).resolve().parent
    root = here.parents[1]
    return root if here == root / "src" / "aligntds" and (root / "pyproject.toml").is_file() else None


# The project folder: the checkout, or for an installed copy the folder it runs from (relative paths). The demo pair is
# built under it (models/demo, gitignored) and `--pair demo` points there.
REPO_ROOT = checkout() or Path()
DEMO_DIR = Path(os.environ.get("ALIGNTDS_DEMO_DIR", REPO_ROOT / "models" / "demo"))


@dataclass(frozen=True)
class Pair:
    base: str
    aligned: str


PAIRS: dict[str, Pair] = {
    # The reference's three pairs (URIAL paper: 7.8%, 4.8%, 5.2% shifted).
    "llama2": Pair("meta-llama/Llama-2-7b-hf", "meta-llama/Llama-2-7b-chat-hf"),
    "vicuna": Pair("meta-llama/Llama-2-7b-hf", "lmsys/vicuna-7b-v1.5"),
    "mistral": Pair("mistralai/Mistral-7B-v0.1", "mistralai/Mistral-7B-Instruct-v0.1"),
    # Current base/instruct pairs.
    "llama2-13b": Pair("meta-llama/Llama-2-13b-hf", "meta-llama/Llama-2-13b-chat-hf"),
    "llama3.1-8b": Pair("meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-8B-Instruct"),
    "mistral-v0.3": Pair("mistralai/Mistral-7B-v0.3", "mistralai/Mistral-7B-Instruct-v0.3"),
    "qwen2.5-7b": Pair("Qwen/Qwen2.5-7B", "Qwen/Qwen2.5-7B-Instruct"),
    "gemma2-9b": Pair("google/gemma-2-9b", "google/gemma-2-9b-it"),
    # OLMo-2 publishes every post-training stage: base -> SFT -> DPO -> Instruct (RLVR).
    "olmo2-7b-sft": Pair("allenai/OLMo-2-1124-7B", "allenai/OLMo-2-1124-7B-SFT"),
    "olmo2-7b-dpo": Pair("allenai/OLMo-2-1124-7B", "allenai/OLMo-2-1124-7B-DPO"),
    "olmo2-7b-instruct": Pair("allenai/OLMo-2-1124-7B", "allenai/OLMo-2-1124-7B-Instruct"),
    "olmo2-7b-sft-to-dpo": Pair("allenai/OLMo-2-1124-7B-SFT", "allenai/OLMo-2-1124-7B-DPO"),
    # The pair this project builds and trains locally (`make demo`).
    "demo": Pair(str(DEMO_DIR / "base"), str(DEMO_DIR / "aligned")),
}

DTYPE_NAMES = ("float32", "bfloat16", "float16")
