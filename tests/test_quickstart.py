"""The README's quick start runs as written: its Python block, taken from README.md, in a folder laid out as a checkout
after `make demo` (models/demo: the demo pair; data/demo/demo-aligned.json: the aligned model's answers, here to 24
demo instructions of every category), prints the class ratios of every category and saves the plot."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from aligntds import demo_corpus
from aligntds.cli.generate_outputs import main as generate
from helpers import REPO

pytestmark = pytest.mark.slow  # the demo pair (built in a minute when it is not), 24 answers, the block in a subprocess


def readme_quick_start() -> str:
    section = (REPO / "README.md").read_text().split("### Quick start in Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_quick_start_runs_as_written(tmp_path, demo_pair):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "demo").symlink_to(demo_pair)
    rows = demo_corpus.instructions(demo_corpus.topics())[::8][:24]
    assert {r["category"] for r in rows} == set(demo_corpus.CATEGORIES.values())
    (tmp_path / "instructions.json").write_text(json.dumps(rows))
    answers = tmp_path / "data" / "demo" / "demo-aligned.json"
    assert generate(["--pair", "demo", "--data_file", str(tmp_path / "instructions.json"), "--output_file", str(answers),
                     "--max_new_tokens", "160", "--batch_size", "24"]) == 0
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", readme_quick_start()], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert lines[0].split() == ["class", "unshifted", "marginal", "shifted"]
    table = {line.split()[0]: [float(x) for x in line.split()[1:]] for line in lines[2:]}
    assert set(table) == set(demo_corpus.CATEGORIES.values())
    assert all(abs(sum(ratios) - 1) < 0.002 and ratios[0] > 0.5 for ratios in table.values()), run.stdout
    assert (tmp_path / "shifted_by_position.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
