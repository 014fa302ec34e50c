"""POPE scoring: the official yes/no rule, hand-counted metrics, and LLaVA-1.5-13B's published
numbers reproduced from its released answers."""

import json
import os
from collections import defaultdict

import pytest

from tgg_jax.evals.pope import PopeEvaluator, answer_is_yes, binary_metrics


@pytest.mark.parametrize("text, yes", [
    ("Yes", True),
    ("No", False),
    ("no", False),
    ("No, there is no dog.", False),
    ("There is not a dog", False),
    ("Yes, there is a dog. No other animals.", True),   # only the first sentence counts
    ("Yes, but not clearly.", False),
    ("NO", True),                                       # case-sensitive word list
    ("Nope", True),                                     # whole words only
    ("No.", False),
    ("no,", False),                                     # commas go before splitting
    ("Yes\nno", True),                                  # split on single spaces only
])
def test_answer_is_yes(text, yes):
    assert answer_is_yes(text) is yes


def test_binary_metrics_hand_counted():
    predicted = [True, True, False, False, True]
    labels = [True, False, False, True, True]
    # TP 2, FP 1, FN 1, TN 1.
    assert binary_metrics(predicted, labels) == pytest.approx({
        "accuracy": 3 / 5, "precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "yes_ratio": 3 / 5})


def test_binary_metrics_no_positive_prediction():
    m = binary_metrics([False, False], [True, False])
    assert (m["precision"], m["recall"], m["f1"], m["accuracy"]) == (0.0, 0.0, 0.0, 0.5)
    with pytest.raises(ValueError):
        binary_metrics([True], [True, False])


def test_evaluator_per_category_and_mean():
    predictions = [
        {"id": 1, "category": "random", "label": "yes", "answer": "Yes"},
        {"id": 2, "category": "random", "label": "no", "answer": "No, there is not."},
        {"id": 3, "category": "adversarial", "label": "no", "answer": "Yes"},
        {"id": 4, "category": "adversarial", "label": "yes", "answer": "Yes"},
    ]
    scores = PopeEvaluator().score(predictions)
    assert scores["random/accuracy"] == 1.0 and scores["random/f1"] == 1.0
    assert scores["adversarial/accuracy"] == 0.5
    assert scores["adversarial/precision"] == 0.5 and scores["adversarial/recall"] == 1.0
    assert scores["adversarial/f1"] == pytest.approx(2 / 3)
    assert scores["adversarial/yes_ratio"] == 1.0
    assert scores["mean/f1"] == pytest.approx((1 + 2 / 3) / 2)


def test_prompt_and_bad_label():
    evaluator = PopeEvaluator()
    assert evaluator.prompt({"question": "Is there a dog in the image?"}) == [{
        "from": "human",
        "value": "<image>\nIs there a dog in the image?\n"
                 "Answer the question using a single word or phrase."}]
    with pytest.raises(ValueError, match="pope: prediction 9 has label 'Yes'"):
        evaluator.score([{"id": 9, "category": "random", "label": "Yes", "answer": "Yes"}])


def _read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_reproduces_llava_v15_13b(testvectors_dir):
    root = os.path.join(testvectors_dir, "pope")
    questions = _read_jsonl(os.path.join(root, "llava_pope_test.jsonl"))
    questions = {q["question_id"]: q for q in questions}
    answers = _read_jsonl(os.path.join(root, "llava-v1.5-13b.jsonl"))
    by_category = defaultdict(list)
    for a in answers:
        by_category[questions[a["question_id"]]["category"]].append(a)
    predictions = []
    for category, cat_answers in by_category.items():
        labels = _read_jsonl(os.path.join(root, f"coco_pope_{category}.json"))
        assert len(labels) == len(cat_answers)
        # Label files number their questions from 1 per category; they pair in order.
        for a, label in zip(cat_answers, labels):
            question = questions[a["question_id"]]
            asked = question["text"].split("\n")[0]
            assert (question["image"], asked) == (label["image"], label["text"])
            predictions.append({"id": a["question_id"], "category": category,
                                "label": label["label"], "answer": a["text"]})
    scores = PopeEvaluator().score(predictions)
    published = {
        "adversarial": {"f1": 84.46, "accuracy": 85.50, "yes_ratio": 43.30},
        "popular": {"f1": 86.25, "accuracy": 87.43, "yes_ratio": 41.37},
        "random": {"f1": 87.14, "accuracy": 88.01, "yes_ratio": 41.68},
    }
    for category, metrics in published.items():
        for metric, value in metrics.items():
            assert round(scores[f"{category}/{metric}"] * 100, 2) == value, (category, metric)
    assert round(scores["mean/f1"] * 100, 2) == 85.95
