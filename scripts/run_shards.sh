#!/usr/bin/env bash
# The reference's loop, generalised: one process per GPU over contiguous slices of the data
# (CUDA_VISIBLE_DEVICES=gpu, --start/--end), i2i on every GPU, merge, then i2b on every GPU reading
# the merged i2i records, merge. The slice size comes from the data length: ceil(examples / N_GPUS).
#
#   scripts/run_shards.sh N_GPUS PAIR DATA_FILE [more src/logit_analysis.py flags, given to every process]
#   scripts/run_shards.sh 4 llama2 data/Llama-2-7b-chat-hf.json
#   scripts/run_shards.sh 2 mypair data/x.json --aligned_model org/chat --base_model org/base --top_k 50
#   GENERATE_FROM=data/questions.json scripts/run_shards.sh 4 llama2 data/llama2-answers.json
#
# Environment (optional):
#   GENERATE_FROM  an instructions file: first answer it with src/generate_outputs.py in N_GPUS processes (one per
#                  GPU, ranks of one launch, each writing its part file), merge the parts into DATA_FILE, then score it
#   GENERATE_FLAGS generate_outputs.py flags, given to every process and to the merge (default "--pair PAIR";
#                  e.g. "--model org/chat --max_new_tokens 512")
#   START_GPU      first GPU id (default 0): GPUs START_GPU .. START_GPU + N_GPUS - 1
#   LOGITS_ROOT    output root (default saved_logits/just_eval): i2i in $LOGITS_ROOT/PAIR/, i2b in $LOGITS_ROOT/PAIR_tp/
#   I2B_TEMPLATE   i2b template flags (default --enable_template; "" for the bare query; --base_template FILE)
#   PYTHON         the interpreter (default python)
# Outputs: $LOGITS_ROOT/PAIR/PAIR-i2i.pkl and $LOGITS_ROOT/PAIR_tp/PAIR-i2b.pkl (shards under shards/); with
# GENERATE_FROM also DATA_FILE (parts under parts/ beside it).
# A shard or part that exists is kept, so after a crash the same command redoes only what is missing.
set -euo pipefail

usage() {  # the comment block above
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2
}
if [ $# -lt 3 ]; then
    usage
    exit 2
fi
n_shards=$1
pair=$2
instruct_data_file=$3
shift 3
if ! [[ $n_shards =~ ^[1-9][0-9]*$ ]]; then
    echo "error: N_GPUS must be a positive integer, got '$n_shards'" >&2
    exit 2
fi

repo=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python}
start_gpu=${START_GPU:-0}
logits_root=${LOGITS_ROOT:-saved_logits/just_eval}
i2b_template=${I2B_TEMPLATE---enable_template}

# Wait for every process in "$@" (pids); exit 1 naming the step if any failed (what they finished is kept).
wait_all() {
    local step=$1 pid failed=0
    shift
    for pid in "$@"; do
        wait "$pid" || failed=1
    done
    if [ $failed -ne 0 ]; then
        echo "error: a $step process failed (see above); run the same command again to redo the missing files" >&2
        exit 1
    fi
}

# Optional first step: generate DATA_FILE, one process per GPU, each a rank of one launch (RANK, WORLD_SIZE;
# LOCAL_RANK 0, as each sees one GPU), then merge their parts.
if [ -n "${GENERATE_FROM:-}" ]; then
    generate_flags=${GENERATE_FLAGS---pair $pair}
    pids=()
    for ((rank = 0; rank < n_shards; rank++)); do
        # shellcheck disable=SC2086  # GENERATE_FLAGS is a list of flags
        CUDA_VISIBLE_DEVICES=$((start_gpu + rank)) RANK=$rank WORLD_SIZE=$n_shards LOCAL_RANK=0 \
            "$PYTHON" "$repo/src/generate_outputs.py" --data_file "$GENERATE_FROM" --output_file "$instruct_data_file" \
            $generate_flags &
        pids+=($!)
    done
    wait_all generate "${pids[@]}"
    # shellcheck disable=SC2086
    "$PYTHON" "$repo/src/generate_outputs.py" --data_file "$GENERATE_FROM" --output_file "$instruct_data_file" $generate_flags --merge
fi

# The number of examples (the data file is checked here: a bad one is one line, exit status 2).
n_examples=$("$PYTHON" - "$repo/src" "$instruct_data_file" <<'EOF'
import sys
sys.path.insert(0, sys.argv[1])
from aligntds.data import load_examples
from aligntds.errors import UserError
try:
    print(len(load_examples(sys.argv[2])))
except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
EOF
)
if [ "$n_examples" -eq 0 ]; then
    echo "error: $instruct_data_file holds no examples" >&2
    exit 2
fi
shard_size=$(( (n_examples + n_shards - 1) / n_shards ))

# One process per GPU, each on its slice; fails if any process failed (its finished shards are kept).
run_mode() {
    local mode=$1 logits_folder=$2
    shift 2
    mkdir -p "$logits_folder"
    local pids=() start end gpu
    for ((start = 0, end = shard_size, gpu = start_gpu; gpu < n_shards + start_gpu; start += shard_size, end += shard_size, gpu++)); do
        CUDA_VISIBLE_DEVICES=$gpu "$PYTHON" "$repo/src/logit_analysis.py" \
                    --data_file "$instruct_data_file" \
                    --logits_folder "$logits_folder" \
                    --pair "$pair" \
                    --mode "$mode" \
                    --start $start --end $end "$@" &
        pids+=($!)
    done
    wait_all "$mode" "${pids[@]}"
}

echo "$n_examples examples, $n_shards processes of $shard_size examples" >&2
run_mode i2i "$logits_root/$pair/shards/" "$@"
"$PYTHON" "$repo/src/scripts/merge_logits.py" "$logits_root/$pair/" "$pair" i2i
# shellcheck disable=SC2086  # I2B_TEMPLATE is a list of flags
run_mode i2b "$logits_root/${pair}_tp/shards/" $i2b_template --i2i_pkl_file "$logits_root/$pair/$pair-i2i.pkl" "$@"
"$PYTHON" "$repo/src/scripts/merge_logits.py" "$logits_root/${pair}_tp/" "$pair" i2b
