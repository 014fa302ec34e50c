"""MME (SPEC §4): two yes/no questions per image in 14 subtasks, scored as the official
calculation does: per subtask 100·acc (over questions) + 100·acc+ (over images with both
questions right); perception sums 10 subtasks, cognition 4."""

from __future__ import annotations

from collections import defaultdict

from tgg_jax import spec
from tgg_jax.evals.base import Evaluator, field

PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene",
              "landmark", "artwork", "OCR")
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation",
             "code_reasoning")


def parse_yes_no(text: str) -> str:
    """The official parser: lowercase; exactly "yes"/"no", else "yes" then "no" looked for in
    the first 4 characters, else "other" (always wrong)."""
    text = text.lower()
    if text in ("yes", "no"):
        return text
    head = text[:4]
    if "yes" in head:
        return "yes"
    if "no" in head:
        return "no"
    return "other"


def subtask_score(correct_by_image: dict[str, list[bool]]) -> dict[str, float]:
    """acc (over questions), acc+ (over images with every question right), both in percent, and
    score = acc + acc+ (at most 200)."""
    answers = [c for image in correct_by_image.values() for c in image]
    acc = 100 * sum(answers) / len(answers)
    acc_plus = 100 * sum(all(image) for image in correct_by_image.values()) / len(correct_by_image)
    return {"acc": acc, "acc_plus": acc_plus, "score": acc + acc_plus}


class MmeEvaluator(Evaluator):
    """Examples: `question` (as released, ending " Please answer yes or no."), `label`
    ("Yes"/"No"), `category` (subtask), `image` (its file name: pairs the questions for acc+).
    Metrics: "{subtask}/score|acc|acc_plus", and "perception" / "cognition" when every one of
    their subtasks is present (a partial sum would read like the benchmark's number)."""

    name = "mme"

    def prompt(self, example):
        # MME's questions carry their own instruction, used as given.
        return spec.human_turn(field(example, "question", self.name))

    def score(self, predictions):
        correct = defaultdict(lambda: defaultdict(list))  # subtask -> image -> [right?]
        for p in predictions:
            label = str(field(p, "label", self.name)).lower()
            right = parse_yes_no(field(p, "answer", self.name)) == label
            correct[field(p, "category", self.name)][field(p, "image", self.name)].append(right)
        scores = {}
        for subtask in sorted(correct):
            scores.update({f"{subtask}/{k}": v for k, v in subtask_score(correct[subtask]).items()})
        for total, subtasks in (("perception", PERCEPTION), ("cognition", COGNITION)):
            if all(s in correct for s in subtasks):
                scores[total] = sum(scores[f"{s}/score"] for s in subtasks)
        return scores
