"""The findings of a merged i2b file: class ratios, style share of the shifted positions, early shift.

    python scripts/demo_findings.py saved_logits/just_eval/demo_tp/demo-i2b.pkl                 # style: models/demo/style.json
    python scripts/demo_findings.py saved_logits/just_eval/llama2_tp/llama2-i2b.pkl --style '' --json

Classes by `aligned_rank` (0 unshifted, 1-2 marginal, >= 3 shifted); a style position is a token overlapping a
planted phrase, a content position any other token with a letter or digit (`aligntds.findings`).
Every flag: python scripts/demo_findings.py --help
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from aligntds.cli.findings import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
