"""Join the i2i and i2b records, class every position, compute the metrics and the corpus summary.

    python src/demo/data_prep.py llama2_tp saved_logits/just_eval/llama2/llama2-i2i.pkl \
        saved_logits/just_eval/llama2_tp/llama2-i2b.pkl
    # writes saved_logits/prepared/just_eval+llama2_tp.pkl, .summary.json and .curves.csv; prints the summary

Every flag: python src/demo/data_prep.py --help
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # src/, for `import aligntds`

from aligntds.cli.data_prep import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
