"""Render a prepared pair as static, self-contained pages (no network, open them from file://).

    python src/demo/generate_html.py llama2_tp
    # reads saved_logits/prepared/just_eval+llama2_tp.pkl, writes docs/llama2_tp_justeval/index.html, 0.html, ..., summary.html

Every flag: python src/demo/generate_html.py --help
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # src/, for `import aligntds`

from aligntds.cli.generate_html import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
