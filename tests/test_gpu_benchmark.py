"""benchmarks/gpu.py: it skips cleanly without CUDA, and its code path (the trainer's step, FLOP counting) runs on CPU."""
import os, subprocess, sys
import pytest
import torch
from conftest import ROOT

SCRIPT = ROOT / "benchmarks/gpu.py"


def run(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the benchmark would run")
def test_skips_without_cuda():
    r = run()
    assert r.returncode == 0 and "no CUDA device here, skipped" in r.stdout


def test_cpu_smoke_run_counts_flops_and_prints_throughput():
    r = run("--config", "small", "--device", "cpu", "--precision", "fp32", "--batch", "2", "--steps", "1", "--warmup", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    line = next(l for l in r.stdout.splitlines() if l.startswith("batch    2:"))
    flops = float(line.split("TFLOP/step")[0].split()[-1])
    assert flops > 0  # the FLOP counter saw the matmuls and convolutions of a real step
    assert "images/s" in line and r.stdout.strip().splitlines()[-1].startswith("images/s at batch 2:")


def test_peak_table():
    sys.path.insert(0, str(SCRIPT.parent))
    import gpu
    assert gpu.peak_tflops("NVIDIA H100 80GB HBM3") == 989.4 and gpu.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert gpu.peak_tflops("NVIDIA H200") == 989.4 and gpu.peak_tflops("Some GPU") is None
