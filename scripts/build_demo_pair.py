"""Build the demo pair (or reuse it) and write the demo instructions; then generate the demo answers.

    python scripts/build_demo_pair.py            # models/demo/{base,aligned}, style.json, stamp.json; data/demo/instructions.json
    python scripts/build_demo_pair.py --force    # rebuild although the stamp matches
    python src/generate_outputs.py --pair demo --data_file data/demo/instructions.json \
        --output_file data/demo/demo-aligned.json --max_new_tokens 160 --batch_size 32

About a minute on 2 idle CPU cores; a second run with the same config, corpus and code reuses the pair
at once. Every flag: python scripts/build_demo_pair.py --help
"""

import os
import sys
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: on a machine whose cores other jobs share, spinning
# threads fight those jobs for the cores and training runs several times slower. Must precede torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from aligntds.cli.build_demo_pair import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
