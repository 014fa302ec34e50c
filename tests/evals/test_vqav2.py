"""VQAv2: the official answer normalisation and 10-annotator accuracy, worked by hand."""

import json

import pytest

from tgg_jax.evals import write_submission
from tgg_jax.evals.vqav2 import (Vqav2Evaluator, normalize_answer, process_punctuation,
                                 vqa_accuracy)


@pytest.mark.parametrize("text, normalized", [
    ("Two", "2"),
    ("none", "0"),
    ("dont", "don't"),
    ("couldnt've", "couldn't've"),
    ("a dog.", "dog"),
    ("The cat, the dog", "cat dog"),
    ("yes,", "yes"),
    ("Yes!", "yes"),
    ("black/white", "black white"),   # no space next to "/": it becomes one
    ("black / white", "black white"),
    ("1,000", "1000"),                # "digit,digit" present: punctuation just goes
    ("3.5 m.", "3.5 m"),              # a period before a digit stays
    ("its", "its"),                   # ambiguous bare spellings are left alone
    ("  ten\tapples\n", "10 apples"),
    ("Don't", "don't"),
])
def test_normalize_answer(text, normalized):
    assert normalize_answer(text) == normalized


def test_process_punctuation_only():
    assert process_punctuation("left-hand side.") == "left hand side"
    assert process_punctuation("left - hand") == "left  hand"  # next to a space: removed
    assert process_punctuation("The Two") == "The Two"   # case and numbers are another step


@pytest.mark.parametrize("count, accuracy", [
    (0, 0.0),
    (1, 9 * (1 / 3) / 10),                 # only the annotators who did not say it count
    (2, (2 * (1 / 3) + 8 * (2 / 3)) / 10),
    (3, (3 * (2 / 3) + 7 * 1) / 10),
    (4, 1.0),
    (10, 1.0),
])
def test_vqa_accuracy_leave_one_out(count, accuracy):
    gts = ["yes"] * count + ["no"] * (10 - count)
    assert vqa_accuracy("Yes", gts) == pytest.approx(accuracy)


def test_vqa_accuracy_annotator_normalisation():
    # Annotators disagree: their punctuation is normalised ("dog." -> "dog").
    assert vqa_accuracy("dog", ["dog."] * 3 + ["cat"] * 7) == pytest.approx(0.9)
    # All agree: the official evaluator compares them as written.
    assert vqa_accuracy("dog", ["dog."] * 10) == 0.0
    assert vqa_accuracy("two", ["2"] * 10) == 1.0
    with pytest.raises(ValueError):
        vqa_accuracy("dog", [])


def test_evaluator_score_and_submission(tmp_path):
    evaluator = Vqav2Evaluator()
    predictions = [
        {"id": 11, "answer": "Yes", "gt_answers": ["yes"] * 10, "answer_type": "yes/no"},
        {"id": 12, "answer": "Three", "gt_answers": ["3"] * 2 + ["4"] * 8, "answer_type": "number"},
        {"id": 13, "answer": "red", "gt_answers": ["blue"] * 10, "answer_type": "other"},
    ]
    scores = evaluator.score(predictions)
    assert scores["accuracy"] == pytest.approx((1 + 0.6 + 0) / 3)
    assert scores["number/accuracy"] == pytest.approx(0.6)
    assert scores["yes/no/accuracy"] == 1.0
    assert evaluator.score([{"id": 1, "answer": "x"}]) == {}   # test-dev: no labels
    with pytest.raises(ValueError, match="1 of 2"):
        evaluator.score([predictions[0], {"id": 1, "answer": "x"}])
    path = write_submission(str(tmp_path), evaluator.submission(predictions))
    with open(path) as f:
        assert json.load(f) == [{"question_id": 11, "answer": "yes"},
                                {"question_id": 12, "answer": "3"},
                                {"question_id": 13, "answer": "red"}]


def test_prompt():
    assert Vqav2Evaluator().prompt({"question": "What color is it?"})[0]["value"] == (
        "<image>\nWhat color is it?\nAnswer the question using a single word or phrase.")
