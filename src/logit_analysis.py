"""Score the aligned model's answers, one teacher-forced pass per answer, into shards of records.

    # i2i: the aligned model on its own chat prompt
    python src/logit_analysis.py --data_file data/Llama-2-7b-chat-hf.json --pair llama2 --mode i2i \
        --logits_folder saved_logits/just_eval/llama2/shards/ --start 0 --end 250
    # i2b: the base model on the bare query (in the reference's template), same answer token ids
    python src/logit_analysis.py --data_file data/Llama-2-7b-chat-hf.json --pair llama2 --mode i2b --enable_template \
        --i2i_pkl_file saved_logits/just_eval/llama2/llama2-i2i.pkl \
        --logits_folder saved_logits/just_eval/llama2_tp/shards/ --start 0 --end 250
    # pair: both models in one process, exact full-vocabulary KL / JS / TV at every position
    python src/logit_analysis.py --data_file data/Llama-2-7b-chat-hf.json --pair llama2 --mode pair --enable_template \
        --logits_folder saved_logits/just_eval/llama2_pair/shards/
    # one process per GPU, each on its own part of the data, each writing its own shard
    accelerate launch --multi_gpu --num_processes 8 src/logit_analysis.py --data_file data/Llama-2-7b-chat-hf.json \
        --pair llama2 --mode i2i --logits_folder saved_logits/just_eval/llama2/shards/

Every flag: python src/logit_analysis.py --help
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # src/, for `import aligntds`

from aligntds.cli.logit_analysis import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
