"""MME scoring: the official answer parser, acc / acc+ by hand, and LLaVA-1.5-13B's published
perception and cognition scores reproduced from its released answers."""

import json
import os

import pytest

from tgg_jax.evals.mme import COGNITION, PERCEPTION, MmeEvaluator, parse_yes_no, subtask_score


@pytest.mark.parametrize("text, parsed", [
    ("Yes", "yes"),
    ("no", "no"),
    ("No.", "no"),                 # not exactly "no": found in the first 4 characters
    ("Yes, it is.", "yes"),
    ("Nope", "no"),
    ("Not sure", "no"),
    ("Yes and no", "yes"),         # "yes" is looked for first
    ("know", "no"),                # the official substring quirk
    ("I think yes", "other"),      # beyond the first 4 characters
    ("Church", "other"),
])
def test_parse_yes_no(text, parsed):
    assert parse_yes_no(text) == parsed


def test_subtask_score_by_hand():
    # Image a: both right; image b: one of two right -> acc 3/4, acc+ 1/2.
    assert subtask_score({"a": [True, True], "b": [True, False]}) == pytest.approx(
        {"acc": 75.0, "acc_plus": 50.0, "score": 125.0})


def test_evaluator_totals_need_every_subtask():
    def pair(category, image, answers):
        return [{"id": image, "category": category, "image": image, "label": label, "answer": a}
                for label, a in zip(("Yes", "No"), answers)]

    predictions = pair("color", "1.jpg", ("Yes", "No")) + pair("color", "2.jpg", ("Yes", "Yes"))
    scores = MmeEvaluator().score(predictions)
    assert scores["color/score"] == pytest.approx(125.0)
    assert "perception" not in scores and "cognition" not in scores
    full = [p for s in PERCEPTION for p in pair(s, "x.jpg", ("Yes", "No"))]
    full += [p for s in COGNITION for p in pair(s, "y.png", ("No", "No"))]  # acc 50, acc+ 0
    scores = MmeEvaluator().score(full)
    assert scores["perception"] == pytest.approx(2000.0)
    assert scores["cognition"] == pytest.approx(200.0)


def test_prompt_uses_question_as_given():
    q = 'Is the word in the logo "angie\'s"? Please answer yes or no.'
    assert MmeEvaluator().prompt({"question": q}) == [{"from": "human", "value": "<image>\n" + q}]


def _read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_reproduces_llava_v15_13b(testvectors_dir):
    root = os.path.join(testvectors_dir, "mme")
    labels = {}
    for name in os.listdir(os.path.join(root, "ground_truth")):
        with open(os.path.join(root, "ground_truth", name)) as f:
            for line in f:
                image, question, answer = line.rstrip("\n").split("\t")
                labels[(name[:-len(".txt")], image, question)] = answer
    questions = _read_jsonl(os.path.join(root, "llava_mme.jsonl"))
    answers = _read_jsonl(os.path.join(root, "llava-v1.5-13b.jsonl"))
    assert len(questions) == len(answers) == 2374
    predictions = []
    for q, a in zip(questions, answers):  # question_id repeats per image: pair by order
        assert (q["question_id"], q["text"]) == (a["question_id"], a["prompt"])
        # LLaVA swapped MME's instruction for its short-answer one; the released question has it.
        stem = q["text"].replace("\nAnswer the question using a single word or phrase.", "")
        image = os.path.basename(q["image"])
        # A few released questions have two spaces before the instruction.
        candidates = [(q["category"], image, stem + sep + "Please answer yes or no.")
                      for sep in (" ", "  ")]
        key = next((k for k in candidates if k in labels), None)
        assert key is not None, q
        predictions.append({"id": q["question_id"], "category": q["category"], "image": image,
                            "question": key[2], "label": labels[key], "answer": a["text"]})
    scores = MmeEvaluator().score(predictions)
    assert round(scores["perception"], 2) == 1531.32
    assert round(scores["cognition"], 2) == 295.36
