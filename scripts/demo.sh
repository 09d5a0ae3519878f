#!/usr/bin/env bash
# The whole pipeline on the embedded demo pair (`make demo` runs this after installing .venv):
#   1. build the demo pair, or reuse it (models/demo: a small Llama base and its aligned version with
#      planted style), and write the demo instructions (data/demo/instructions.json);
#   2. answer them greedily with the aligned model (data/demo/demo-aligned.json);
#   3. i2i and i2b in two shards each, with the README's loop over "GPUs" (scripts/run_shards.sh), merged;
#   4. data_prep (prints the summary, with one line per topic category; the Parquet tables in
#      saved_logits/prepared/demo_tables/) and generate_html: docs/demo_justeval/index.html;
#   5. the demo's findings: class counts and ratios, most shifted tokens, style vs content, early shift.
# A step whose output is newer than its inputs is skipped, so a second run takes seconds. The steps run the installed
# package's command (`python -m aligntds COMMAND`, as `aligntds COMMAND`; `make demo` installs it), but for the sharded
# scoring, which runs the README's loop over the scripts.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
export PYTHON
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}  # idle threads sleep: much faster on shared cores
data=data/demo/demo-aligned.json
logits=saved_logits/just_eval
i2b=$logits/demo_tp/demo-i2b.pkl
prepared=saved_logits/prepared/just_eval+demo.pkl
tables=saved_logits/prepared/demo_tables

# The code data_prep and the pages are made by: a step is redone when it changed.
pkg=src/aligntds
prep_code="$pkg/data_prep.py $pkg/join.py $pkg/slices.py $pkg/summary.py $pkg/records.py $pkg/tokentext.py $pkg/frames.py"
page_code="$pkg/report.py $pkg/plots.py $pkg/summary.py $pkg/records.py $pkg/tokentext.py $(echo $pkg/templates/*)"

fresh() {  # fresh OUT IN...: OUT exists and is newer than every IN
    local out=$1
    shift
    [ -e "$out" ] || return 1
    for f in "$@"; do [ "$out" -nt "$f" ] || return 1; done
}

aligntds() { "$PYTHON" -m aligntds "$@"; }
aligntds build-demo-pair
if ! fresh "$data" models/demo/stamp.json data/demo/instructions.json; then
    aligntds generate --pair demo --data_file data/demo/instructions.json --output_file "$data" \
        --max_new_tokens 160 --batch_size 32
fi
if ! fresh "$i2b" "$data"; then
    rm -rf "$logits/demo" "$logits/demo_tp"  # records of earlier answers
    # Two processes of one CPU thread each stand in for two GPUs.
    OMP_NUM_THREADS=1 scripts/run_shards.sh 2 demo "$data"
fi
{ fresh "$prepared" "$i2b" $prep_code && fresh "$tables/positions.parquet" "$i2b" $prep_code; } ||
    aligntds prep demo "$logits/demo/demo-i2i.pkl" "$i2b" --slice_by category --parquet "$tables"
fresh docs/demo_justeval/index.html "$prepared" $page_code || aligntds html demo
echo
aligntds findings "$i2b"
echo
echo "Tables: $(pwd)/$tables/positions.parquet, examples.parquet"
echo "Pages: $(pwd)/docs/demo_justeval/index.html"
