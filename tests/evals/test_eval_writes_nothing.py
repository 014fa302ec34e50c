"""`tgg-eval` writes nothing in its workdir until the checkpoint has loaded: a mistyped
--checkpoint must not leave a run.json that refuses the corrected command."""

import os

import pytest

from tests.evals.test_runner import shapes_config
from tgg_jax.errors import UserError
from tgg_jax.evals import main as eval_main


def _files(path):
    return [os.path.join(r, f) for r, _, fs in os.walk(path) for f in fs]


def test_missing_checkpoint_is_one_line_and_writes_nothing(tmp_path):
    workdir = tmp_path / "eval"
    with pytest.raises(UserError, match="--checkpoint .*no_such_ckpt: no such directory"):
        eval_main.evaluate(shapes_config(), str(tmp_path / "no_such_ckpt"), str(workdir))
    assert _files(workdir) == []


def test_checkpoint_that_fails_to_load_writes_nothing(tmp_path):
    not_a_checkpoint = tmp_path / "ckpt"
    not_a_checkpoint.mkdir()
    workdir = tmp_path / "eval"
    with pytest.raises(FileNotFoundError, match="tgg_config.json"):
        eval_main.evaluate(shapes_config(), str(not_a_checkpoint), str(workdir))
    assert _files(workdir) == []
