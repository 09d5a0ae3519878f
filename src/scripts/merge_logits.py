"""Merge the shards of one pair and mode, in start order, refusing gaps and overlaps.

    python src/scripts/merge_logits.py saved_logits/just_eval/llama2/ llama2 i2i
    # reads saved_logits/just_eval/llama2/shards/llama2-i2i.[s:e].pkl, writes saved_logits/just_eval/llama2/llama2-i2i.pkl
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # src/, for `import aligntds`

from aligntds.cli.merge_logits import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
