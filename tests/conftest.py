"""Test-wide setup: 8 simulated CPU devices (sharding tests), float32 matmuls, offline HF."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_default_matmul_precision", "highest")

import pytest  # noqa: E402

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared")


@pytest.fixture
def testvectors_dir():
    """../shared/testvectors (third-party benchmark outputs); tests skip when it is absent."""
    path = os.path.abspath(os.path.join(SHARED, "testvectors"))
    if not os.path.isdir(path):
        pytest.skip("../shared/testvectors is not present")
    return path


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """A TFDS data dir holding the tgg_shapes "tiny" build (tests/tiny_run.py's data), built once
    for the trainer, resume and launcher tests."""
    from tgg_jax.data.builders.tgg_shapes import ensure_built
    path = str(tmp_path_factory.mktemp("tfds"))
    ensure_built(path, "tiny")
    return path
