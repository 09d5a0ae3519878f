"""Greedy answers of the aligned model to a file of instructions, in the data format logit_analysis reads.

    # the demo pair's aligned model on the demo instructions
    python src/generate_outputs.py --pair demo --data_file data/demo/instructions.json \
        --output_file data/demo/demo-aligned.json --max_new_tokens 160 --batch_size 32
    # any chat model, a slice of the instructions
    python src/generate_outputs.py --model meta-llama/Llama-2-7b-chat-hf --data_file questions.jsonl \
        --output_file data/llama2-chat.[0:250].json --start 0 --end 250 --batch_size 8
    # 8 processes, each writes data/parts/llama2-chat.[a:b].json; then the merge writes data/llama2-chat.json
    accelerate launch --multi_gpu --num_processes 8 src/generate_outputs.py --model meta-llama/Llama-2-7b-chat-hf \
        --data_file questions.jsonl --output_file data/llama2-chat.json
    python src/generate_outputs.py --data_file questions.jsonl --output_file data/llama2-chat.json --merge

Every flag: python src/generate_outputs.py --help
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # src/, for `import aligntds`

from aligntds.cli.generate_outputs import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
