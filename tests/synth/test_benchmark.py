"""benchmarks/synth_throughput.py runs end to end (short latency, two levels) and prints ratios."""

import re
import subprocess
import sys

from tests.synth.test_build import REPO


def test_synth_throughput_benchmark_runs():
    out = subprocess.run([sys.executable, str(REPO / "benchmarks/synth_throughput.py"),
                          "--latency_s", "0.05", "--in_flight", "1,4"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    ratios = [float(r) for r in re.findall(r"ratio\s*(?:\([^)]*\))?\s*([0-9.]+)x", out.stdout)]
    assert len(ratios) == 4 and all(r > 0 for r in ratios), out.stdout
