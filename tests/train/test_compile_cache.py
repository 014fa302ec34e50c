"""The persistent compilation cache is on by default, at a configurable place, and is written."""

import os
import subprocess
import sys

from configs import common

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_on_by_default_outside_the_workdir():
    assert common.get_base_config().compilation_cache_dir == "~/.cache/tgg_jax/jax_cache"


def test_enable_points_jax_at_the_directory_and_programs_land_there(tmp_path):
    cache = tmp_path / "cache"
    script = ("import jax, jax.numpy as jnp\n"
              "from absl import logging\n"
              "logging.set_verbosity(logging.INFO)\n"
              "from tgg_jax.train import compile_cache\n"
              f"assert compile_cache.enable({str(cache)!r}) == {str(cache)!r}\n"
              "jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)\n"
              "jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((8, 8))).block_until_ready()\n")
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                         timeout=120, env={**env, "PYTHONPATH": REPO})
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"compilation cache: {cache}" in out.stderr
    assert os.listdir(cache)
