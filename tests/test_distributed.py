"""Several processes: RANK/WORLD_SIZE parts, `accelerate launch`, `scripts/run_shards.sh`; merged = one process."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from aligntds.cli.logit_analysis import main as logit_analysis
from aligntds.cli.merge_logits import main as merge_logits
from aligntds.distributed import Rank, current_rank, device_for, part
from aligntds.errors import UserError
from aligntds.store import load_records
from helpers import REPO, TIMEOUT, assert_same_records, launcher, run_i2i_i2b, run_ranks, subprocess_env


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, data_file, pair_llama):
    """i2i and i2b records of a one-process run (merged), the files the distributed runs must reproduce."""
    return run_i2i_i2b(tmp_path_factory.mktemp("one"), pair_llama, data_file)


def model_flags(pair):
    return ["--aligned_model", str(pair["aligned"]), "--base_model", str(pair["base"])]


def test_parts_tile_the_slice():
    for start, end in ((0, 7), (5, 1000), (3, 3)):
        for world in (1, 2, 3, 8):
            parts = [part(start, end, Rank(r, world, r)) for r in range(world)]
            assert parts[0][0] == start and parts[-1][1] == end
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
            sizes = [b - a for a, b in parts]
            assert max(sizes) - min(sizes) <= 1


def test_rank_and_device_from_the_environment(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert current_rank() == Rank(0, 1, 0)
    monkeypatch.setenv("RANK", "5"), monkeypatch.setenv("WORLD_SIZE", "8"), monkeypatch.setenv("LOCAL_RANK", "1")
    assert current_rank() == Rank(5, 8, 1)
    monkeypatch.setenv("RANK", "8")
    with pytest.raises(UserError, match="RANK=8, WORLD_SIZE=8"):
        current_rank()

    assert device_for(Rank(5, 8, 1), "cpu", None) == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert device_for(Rank(5, 8, 1), None, None) == "cuda:1"  # one GPU per process of a node
    assert device_for(Rank(0, 1, 0), None, None) == "cuda"
    assert device_for(Rank(5, 8, 1), "cuda:0", None) == "cuda:0"  # --device wins
    assert device_for(Rank(0, 1, 0), None, "auto") == "cuda"  # --device_map places the model itself
    with pytest.raises(UserError, match="LOCAL_RANK 2 but this node has 2 visible GPUs"):
        device_for(Rank(2, 8, 2), None, None)


@pytest.mark.parametrize("world", [3, 8])
def test_ranks_write_their_parts_and_merge_to_one_process(world, tmp_path, data_file, pair_llama, one_process, monkeypatch,
                                                          capsys):
    shards = tmp_path / "shards"
    args = ["--data_file", str(data_file), "--pair", "t", "--mode", "i2i", "--logits_folder", str(shards),
            "--aligned_model", str(pair_llama["aligned"])]
    errs = run_ranks(logit_analysis, world, [*args, "--start", "1"], monkeypatch, capsys)
    expected = {f"t-i2i.[{a}:{b}].pkl" for a, b in (part(1, 7, Rank(r, world, r)) for r in range(world)) if b > a}
    assert len(expected) == min(world, 6) and {p.name for p in shards.iterdir()} == expected  # an empty part writes nothing
    assert "processes share examples [1:7]" in errs[0]  # messages and progress bars on rank 0 only
    assert ("wrote" in errs[0]) == (world == 3) and not any("wrote" in e or "%|" in e for e in errs[1:])
    assert logit_analysis([*args, "--end", "1"]) == 0  # the example before --start, from one process
    assert merge_logits([str(tmp_path), "t", "i2i"]) == 0
    assert_same_records(load_records(tmp_path / "t-i2i.pkl"), one_process[0])


def test_pair_mode_ranks_merge_to_one_process(tmp_path, data_file, pair_llama, monkeypatch, capsys):
    args = ["--data_file", str(data_file), "--pair", "t", "--mode", "pair", *model_flags(pair_llama)]
    assert logit_analysis([*args, "--logits_folder", str(tmp_path / "one" / "shards")]) == 0
    run_ranks(logit_analysis, 2, [*args, "--logits_folder", str(tmp_path / "two" / "shards")], monkeypatch, capsys)
    assert sorted(p.name for p in (tmp_path / "two" / "shards").iterdir()) == ["t-pair.[0:3].pkl", "t-pair.[3:7].pkl"]
    for name in ("one", "two"):
        assert merge_logits([str(tmp_path / name), "t", "pair"]) == 0
    assert_same_records(load_records(tmp_path / "two" / "t-pair.pkl"), load_records(tmp_path / "one" / "t-pair.pkl"))


@pytest.mark.slow
def test_accelerate_launch_two_processes(tmp_path, data_file, pair_llama, one_process):
    """`accelerate launch` starts two processes (see `helpers.launcher`); after the merge, the records of one process."""
    out = tmp_path / "out"
    cmd = [*launcher("accelerate", 2), "src/logit_analysis.py", "--data_file", str(data_file), "--pair", "t", "--mode", "i2i",
           "--device", "cpu", "--logits_folder", str(out / "shards"), *model_flags(pair_llama)]
    done = subprocess.run(cmd, cwd=REPO, env=subprocess_env(tmp_path), capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (out / "shards").iterdir()) == ["t-i2i.[0:3].pkl", "t-i2i.[3:7].pkl"]
    assert done.stderr.count("wrote ") == 1  # rank 0's message only
    assert merge_logits([str(out), "t", "i2i"]) == 0
    assert_same_records(load_records(out / "t-i2i.pkl"), one_process[0])


@pytest.mark.slow
def test_run_shards_script(tmp_path, data_file, pair_llama, one_process):
    """scripts/run_shards.sh with 2 "GPUs" (processes, on the CPU): i2i, merge, i2b, merge."""
    env = {**subprocess_env(tmp_path), "LOGITS_ROOT": str(tmp_path / "runs"), "PYTHON": sys.executable}
    done = subprocess.run(["bash", "scripts/run_shards.sh", "2", "t", str(data_file), *model_flags(pair_llama)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    runs = tmp_path / "runs"
    assert sorted(p.name for p in (runs / "t" / "shards").iterdir()) == ["t-i2i.[0:4].pkl", "t-i2i.[4:7].pkl"]
    assert sorted(p.name for p in (runs / "t_tp" / "shards").iterdir()) == ["t-i2b.[0:4].pkl", "t-i2b.[4:7].pkl"]
    assert_same_records(load_records(runs / "t" / "t-i2i.pkl"), one_process[0])
    assert_same_records(load_records(runs / "t_tp" / "t-i2b.pkl"), one_process[1])

    bad = subprocess.run(["bash", "scripts/run_shards.sh", "2", "t", str(tmp_path / "none.json")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert bad.returncode == 2 and bad.stderr.strip() == f"error: {tmp_path / 'none.json'}: data file not found"
