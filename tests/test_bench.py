"""scripts/bench_logits.py runs end to end (a CPU smoke test of its report, with short answers)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_logits", REPO / "scripts" / "bench_logits.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def test_bench_smoke(monkeypatch, capsys):
    bench = load_bench()
    monkeypatch.setattr(bench, "PROMPT_DECILES", [6] * 11)  # short answers: the reference loop is slow
    monkeypatch.setattr(bench, "ANSWER_DECILES", [4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14])
    assert bench.main(["--shape", "mini", "--answers", "5", "--ref_answers", "2", "--dtype", "bfloat16"]) == 0
    out = capsys.readouterr().out
    for line in ("model: mini Llama", "reference loop: 2 answers", "batched path:   5 answers", "speed-up:", "achieved:",
                 "storage:"):
        assert line in out, out
    assert bench.bf16_peak_tflops("cpu") == ("CPU", None)
    layer, head = bench.flops_per_token(bench.build_model("mini", bench.torch.float32, "cpu"))
    hidden, layers, _, _, inter, vocab = bench.SHAPES["mini"]
    assert head == 2 * hidden * vocab
    assert layer == 2 * layers * (4 * hidden * hidden + 3 * hidden * inter + 2 * hidden) + 2 * hidden


def test_peak_table(monkeypatch):
    bench = load_bench()
    for name, peak in (("NVIDIA H100 80GB HBM3", 989), ("NVIDIA H100 PCIe", 756), ("NVIDIA H200", 989),
                       ("NVIDIA GH200 480GB", 989), ("NVIDIA A100-SXM4-80GB", 312), ("NVIDIA L40S", 362), ("NVIDIA L4", 121),
                       ("Some GPU", None)):
        monkeypatch.setattr(bench.torch.cuda, "get_device_name", lambda device=None, name=name: name)
        assert bench.bf16_peak_tflops("cuda") == (name, peak)
