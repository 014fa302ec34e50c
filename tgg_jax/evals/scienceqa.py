"""ScienceQA (SPEC §4, SQA-IMG): multiple choice in LLaVA-1.5's format, scored with LLaVA's
letter extraction on the questions that have an image."""

from __future__ import annotations

import re
from string import ascii_uppercase

from tgg_jax import spec
from tgg_jax.evals.base import Evaluator, field

_LETTERS = tuple("ABCDE")  # LLaVA's option letters (ScienceQA has at most 5 choices)
_ANSWER_IS = re.compile(r"The answer is ([A-Z]).")


def extract_choice(answer: str, num_choices: int) -> int | None:
    """The chosen option's index, by LLaVA's rule: the answer is a letter, or starts "X. ", or
    says "The answer is X." exactly once; a letter beyond the choices or anything else is None."""
    if answer in _LETTERS:
        letter = answer
    elif len(answer) >= 3 and answer[0] in _LETTERS and answer[1:3] == ". ":
        letter = answer[0]
    else:
        found = _ANSWER_IS.findall(answer)
        letter = found[0] if len(found) == 1 else None
    if letter is None or letter not in ascii_uppercase[:num_choices]:
        return None
    return ascii_uppercase.index(letter)


class ScienceqaEvaluator(Evaluator):
    """Examples: `question`, `choices` (list), `label` (index of the right choice), optional
    `hint` and `has_image` (default True). Metrics: "img_accuracy" (the SQA-IMG number) over
    questions with an image, "accuracy" over all."""

    name = "scienceqa"

    def prompt(self, example):
        text = spec.scienceqa_prompt(field(example, "question", self.name),
                                field(example, "choices", self.name), example.get("hint") or "")
        return spec.human_turn(text, image=example.get("has_image", True))

    def score(self, predictions):
        if not predictions:
            return {}
        right = []
        with_image = []
        for p in predictions:
            choice = extract_choice(field(p, "answer", self.name),
                                    len(field(p, "choices", self.name)))
            right.append(choice == field(p, "label", self.name))
            if p.get("has_image", True):
                with_image.append(right[-1])
        scores = {"accuracy": sum(right) / len(right)}
        if with_image:
            scores["img_accuracy"] = sum(with_image) / len(with_image)
        return scores
