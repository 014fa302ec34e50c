"""The real path in miniature (launch/rehearse.sh): raw files in their public layouts ->
tgg-data -> import-hf -> stages 1a, 1b, 2, 3 -> every eval config -> export-hf -> transformers.
tests/rehearsal/check.py asserts what each stage changed and where it started."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_rehearsal_from_raw_files_to_exported_weights(tmp_path):
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "JAX_PLATFORMS": "cpu",
           "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax_cache")}  # not the user's home
    bin_dir = os.path.dirname(sys.executable)
    env["PATH"] = bin_dir + os.pathsep + env["PATH"]
    result = subprocess.run(["bash", os.path.join(REPO, "launch/rehearse.sh"), str(tmp_path)],
                            env=env, capture_output=True, text=True, timeout=1500)
    tail = (result.stdout + result.stderr)[-6000:]
    assert result.returncode == 0, tail
    assert "rehearsal check: every stage, eval and export as specified" in result.stdout, tail
