"""ScienceQA: LLaVA's letter extraction, its prompt format and IMG accuracy, by hand."""

import pytest

from tgg_jax.evals.scienceqa import ScienceqaEvaluator, extract_choice


@pytest.mark.parametrize("answer, num_choices, index", [
    ("A", 3, 0),
    ("C", 3, 2),
    ("D", 3, None),                         # beyond the choices
    ("B. slippery", 3, 1),
    ("b. slippery", 3, None),               # lowercase letters are not options
    ("The answer is B.", 4, 1),
    ("The answer is B. The answer is C.", 4, None),   # must be said exactly once
    ("F. foo The answer is A.", 4, 0),      # F is no option letter: the sentence decides
    ("E", 5, 4),
    ("I am not sure", 2, None),
    ("", 2, None),
])
def test_extract_choice(answer, num_choices, index):
    assert extract_choice(answer, num_choices) == index


def test_prompt_with_and_without_context():
    evaluator = ScienceqaEvaluator()
    example = {"question": "Which property do these objects have in common?",
               "choices": ["shiny", "slippery", "opaque"], "hint": "Select the best answer."}
    assert evaluator.prompt(example) == [{
        "from": "human",
        "value": "<image>\nContext: Select the best answer.\n"
                 "Which property do these objects have in common?\n"
                 "A. shiny\nB. slippery\nC. opaque\n"
                 "Answer with the option's letter from the given choices directly."}]
    text_only = {"question": "Which is farthest north?", "choices": ["Ohio", "Texas"],
                 "hint": "", "has_image": False}
    assert evaluator.prompt(text_only)[0]["value"] == (
        "Which is farthest north?\nA. Ohio\nB. Texas\n"
        "Answer with the option's letter from the given choices directly.")


def test_score_image_subset():
    predictions = [
        {"id": 1, "answer": "A", "choices": ["x", "y"], "label": 0, "has_image": True},
        {"id": 2, "answer": "B", "choices": ["x", "y"], "label": 0, "has_image": True},
        {"id": 3, "answer": "C. z", "choices": ["x", "y", "z"], "label": 2, "has_image": False},
        {"id": 4, "answer": "maybe", "choices": ["x", "y"], "label": 1},  # has_image defaults True
    ]
    assert ScienceqaEvaluator().score(predictions) == pytest.approx(
        {"accuracy": 2 / 4, "img_accuracy": 1 / 3})
    assert ScienceqaEvaluator().submission(predictions) is None
