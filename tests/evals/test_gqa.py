"""GQA: exact match after lowercasing and stripping the trailing period, by hand."""

import json

import pytest

from tgg_jax.evals import write_submission
from tgg_jax.evals.gqa import GqaEvaluator, normalize_answer


@pytest.mark.parametrize("text, normalized", [
    ("Yes.", "yes"), ("Left", "left"), (" no ", "no"), ("t-shirt", "t-shirt"), ("Mr. T.", "mr. t"),
])
def test_normalize_answer(text, normalized):
    assert normalize_answer(text) == normalized


def test_score_and_submission(tmp_path):
    evaluator = GqaEvaluator()
    predictions = [{"id": "201", "answer": "Yes.", "label": "yes"},
                   {"id": "202", "answer": "the left", "label": "left"},   # no article removal
                   {"id": "203", "answer": "Table", "label": "table"},
                   {"id": "204", "answer": "red", "label": "blue"}]
    assert evaluator.score(predictions) == {"accuracy": 0.5}
    assert evaluator.score([]) == {}
    path = write_submission(str(tmp_path), evaluator.submission(predictions[:2]))
    with open(path) as f:
        assert json.load(f) == [{"questionId": "201", "prediction": "yes"},
                                {"questionId": "202", "prediction": "the left"}]
    assert path.endswith("testdev_balanced_predictions.json")


def test_prompt():
    assert GqaEvaluator().prompt({"question": "Is the cup on the left?"}) == [{
        "from": "human", "value": "<image>\nIs the cup on the left?\n"
                                  "Answer the question using a single word or phrase."}]
