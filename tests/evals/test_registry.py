"""The evaluator registry and the submission writer."""

import csv

import pytest

from tgg_jax.evals import EVALUATORS, get_evaluator, write_submission


def test_every_benchmark_is_registered():
    assert sorted(EVALUATORS) == ["gqa", "llava_bench", "mmbench", "mme", "pope", "rec",
                                  "scienceqa", "tgg_shapes", "vqav2"]
    for name in EVALUATORS:
        assert get_evaluator(name).name == name
    with pytest.raises(KeyError, match="unknown evaluator 'refcoco'"):
        get_evaluator("refcoco")


def test_write_submission_formats(tmp_path):
    path = write_submission(str(tmp_path / "out"), ("a.tsv", [{"index": 1, "prediction": "A"}]))
    with open(path, newline="") as f:
        assert list(csv.reader(f, delimiter="\t")) == [["index", "prediction"], ["1", "A"]]
    with pytest.raises(ValueError, match="a.csv"):
        write_submission(str(tmp_path), ("a.csv", []))
    with pytest.raises(ValueError, match="no rows"):
        write_submission(str(tmp_path), ("a.tsv", []))
