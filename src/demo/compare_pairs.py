"""Compare several runs on one page: class ratios as grouped bars, shared and unique shifted tokens, curves.

    python src/demo/compare_pairs.py docs/llama2_tp_justeval/summary.json docs/mistral_tp_justeval/summary.json --out docs/compare
    python src/demo/compare_pairs.py docs/llama2_tp_justeval/summary.json docs/llama2_urial_justeval/summary.json \
        --labels "template,URIAL prefix"
    python src/demo/compare_pairs.py --chain saved_logits/chain/olmo2/prepared/olmo2-7b-{sft,dpo,instruct}.summary.json \
        --out docs/olmo2_chain        # a checkpoint chain, stages in order (scripts/run_chain.sh writes these)

Every flag: python src/demo/compare_pairs.py --help
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # src/, for `import aligntds`

from aligntds.cli.compare_pairs import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
