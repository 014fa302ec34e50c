"""GQA (SPEC §4): exact match after the light normalisation LLaVA applies before the official
testdev-balanced evaluation (lowercase, trailing periods stripped)."""

from __future__ import annotations

from tgg_jax import spec
from tgg_jax.evals.base import Evaluator, field


def normalize_answer(text: str) -> str:
    """"Yes." -> "yes"; GQA's labels are lowercase words without final punctuation."""
    return text.strip().rstrip(".").lower()


class GqaEvaluator(Evaluator):
    """Examples: `question`, `label` (the answer). Metric: "accuracy" (exact match)."""

    name = "gqa"

    def prompt(self, example):
        question = field(example, "question", self.name)
        return spec.human_turn(spec.short_answer_prompt(question))

    def score(self, predictions):
        if not predictions:
            return {}
        right = [normalize_answer(field(p, "answer", self.name)) == field(p, "label", self.name)
                 for p in predictions]
        return {"accuracy": sum(right) / len(right)}

    def submission(self, predictions):
        """The official evaluator's predictions file: [{"questionId", "prediction"}]."""
        return ("testdev_balanced_predictions.json",
                [{"questionId": field(p, "id", self.name),
                  "prediction": normalize_answer(field(p, "answer", self.name))}
                 for p in predictions])
