#!/usr/bin/env bash
# A checkpoint chain (base -> SFT -> DPO -> RL ...): every stage scored against one base model on the same
# answers (the last stage's), to see at which stage each shifted token appears.
#   1. i2i of DATA_FILE's answers under every stage's model, N_GPUS stages at a time (one GPU each);
#   2. i2b once: the base model on the same answers (ranking the last stage's top-1 tokens; data_prep takes the
#      other stages' base ranks from the base's stored top-k: their classes are exact);
#   3. data_prep per stage, all at once (CPU; summary.json beside each prepared file);
#   4. the chain page: src/demo/compare_pairs.py --chain, stages in order.
#
#   scripts/run_chain.sh CHAIN DATA_FILE STAGE [STAGE ...] [-- more src/logit_analysis.py flags, given to every run]
#   scripts/run_chain.sh olmo2 data/olmo2-7b-instruct.json olmo2-7b-sft olmo2-7b-dpo olmo2-7b-instruct
#   BASE_MODEL=org/base scripts/run_chain.sh mine data/x.json sft=org/sft dpo=org/dpo rl=path/to/rl -- --dtype bfloat16
#
# STAGE is a --pair preset (its aligned model is the stage) or LABEL=MODEL (a hub id or a local folder); the
# label names the stage's files and its column on the chain page. DATA_FILE holds the last stage's answers
# (src/generate_outputs.py --pair LAST_PRESET ... writes them).
# Environment (optional):
#   N_GPUS           stages scored at once, each on its own GPU (default 1: one after the other on GPU START_GPU)
#   START_GPU        first GPU id (default 0): GPUs START_GPU .. START_GPU + N_GPUS - 1; the base runs on START_GPU
#   BASE_MODEL       the base model (default: the base of the last stage's preset)
#   LOGITS_ROOT      output root (default saved_logits/chain): $LOGITS_ROOT/CHAIN/<label>/<label>-i2i.pkl per stage,
#                    $LOGITS_ROOT/CHAIN/base/<last label>-i2b.pkl, $LOGITS_ROOT/CHAIN/prepared/<label>.pkl (+ .summary.json,
#                    .curves.csv, and .txt: the printed summary)
#   OUT              the chain page's folder (default docs/CHAIN_chain)
#   I2B_TEMPLATE     i2b template flags (default --enable_template; "" for the bare query; --base_template FILE)
#   DATA_PREP_FLAGS  flags for every data_prep, e.g. "--slice_by category"
#   PYTHON           the interpreter (default python)
# A run that exists is kept (logit_analysis skips existing shards), so after a crash the same command goes on.
set -euo pipefail

usage() {  # the comment block above
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2
}
if [ $# -lt 3 ]; then
    usage
    exit 2
fi
chain=$1
data_file=$2
shift 2
stages=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    stages+=("$1")
    shift
done
[ $# -gt 0 ] && shift  # the "--"
if [ ${#stages[@]} -lt 2 ]; then
    echo "error: a chain needs at least two stages, got ${#stages[@]}" >&2
    exit 2
fi

n_gpus=${N_GPUS:-1}
start_gpu=${START_GPU:-0}
if ! [[ $n_gpus =~ ^[1-9][0-9]*$ ]]; then
    echo "error: N_GPUS must be a positive integer, got '$n_gpus'" >&2
    exit 2
fi
repo=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python}
root=${LOGITS_ROOT:-saved_logits/chain}/$chain
out=${OUT:-docs/${chain}_chain}
i2b_template=${I2B_TEMPLATE---enable_template}
read -r -a prep_flags <<< "${DATA_PREP_FLAGS:-}"

labels=()
models=()
for stage in "${stages[@]}"; do
    if [[ $stage == *=* ]]; then
        labels+=("${stage%%=*}")
        models+=("${stage#*=}")
    else
        labels+=("$stage")
        models+=("")
    fi
done
declare -A seen=()
for label in "${labels[@]}"; do  # a label names its stage's files: a repeated one would make two stages share them
    if [ -z "$label" ]; then
        echo "error: a stage has an empty label: give LABEL=MODEL or a preset" >&2
        exit 2
    fi
    if [ -n "${seen[$label]+x}" ]; then
        echo "error: the stage label '$label' is given twice: each stage needs its own label (LABEL=MODEL)" >&2
        exit 2
    fi
    seen[$label]=1
done
last=${labels[-1]}
is_preset() {  # the label is a --pair preset (which names a base model)
    "$PYTHON" -c 'import sys; sys.path.insert(0, sys.argv[1]); from aligntds.presets import PAIRS; sys.exit(sys.argv[2] not in PAIRS)' \
        "$repo/src" "$1" 2> /dev/null
}
if [ -z "${BASE_MODEL:-}" ] && [ -n "${models[-1]}" ] && [[ " $* " != *" --base_model "* ]] && ! is_preset "$last"; then
    # only a preset knows its base: say so before any run
    echo "error: the last stage ($last=${models[-1]}) is not a preset, so it names no base model: give it with" \
        "BASE_MODEL=... scripts/run_chain.sh ..." >&2
    exit 2
fi

pids=()
wait_all() {  # wait for the background processes in pids; stop with status 1 if one failed
    local pid failed=0
    for pid in "${pids[@]}"; do
        wait "$pid" || failed=1
    done
    pids=()
    if [ $failed -ne 0 ]; then
        echo "error: a process failed (see above); run the same command again to redo what is missing" >&2
        exit 1
    fi
}

for n in "${!labels[@]}"; do
    label=${labels[$n]}
    model_flags=()
    [ -n "${models[$n]}" ] && model_flags=(--aligned_model "${models[$n]}")
    echo "== stage $((n + 1))/${#labels[@]}: $label (i2i)" >&2
    (CUDA_VISIBLE_DEVICES=$((start_gpu + n % n_gpus)) "$PYTHON" "$repo/src/logit_analysis.py" --data_file "$data_file" \
        --pair "$label" --mode i2i --logits_folder "$root/$label/shards/" "${model_flags[@]}" "$@" &&
        "$PYTHON" "$repo/src/scripts/merge_logits.py" "$root/$label/" "$label" i2i) &
    pids+=($!)
    if [ ${#pids[@]} -eq "$n_gpus" ]; then
        wait_all
    fi
done
wait_all

echo "== the base model (i2b, once)" >&2
base_flags=()
[ -n "${BASE_MODEL:-}" ] && base_flags=(--base_model "$BASE_MODEL")
# shellcheck disable=SC2086  # I2B_TEMPLATE is a list of flags
CUDA_VISIBLE_DEVICES=$start_gpu "$PYTHON" "$repo/src/logit_analysis.py" --data_file "$data_file" --pair "$last" --mode i2b $i2b_template \
    --i2i_pkl_file "$root/$last/$last-i2i.pkl" --logits_folder "$root/base/shards/" "${base_flags[@]}" "$@"
"$PYTHON" "$repo/src/scripts/merge_logits.py" "$root/base/" "$last" i2b

summaries=()
echo "== data_prep: ${labels[*]}" >&2
mkdir -p "$root/prepared"
for label in "${labels[@]}"; do  # each prints its summary into prepared/LABEL.txt
    "$PYTHON" "$repo/src/demo/data_prep.py" "$label" "$root/$label/$label-i2i.pkl" "$root/base/$last-i2b.pkl" \
        --out "$root/prepared/$label.pkl" "${prep_flags[@]}" > "$root/prepared/$label.txt" &
    pids+=($!)
    summaries+=("$root/prepared/$label.summary.json")
done
wait_all
for label in "${labels[@]}"; do  # the summaries, in stage order
    cat "$root/prepared/$label.txt"
done
"$PYTHON" "$repo/src/demo/compare_pairs.py" --chain "${summaries[@]}" --out "$out"
