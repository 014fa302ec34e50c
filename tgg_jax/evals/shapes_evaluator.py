"""tgg_shapes (the built-in synthetic grounding data) behind the Evaluator protocol, so `tgg-eval`
scores it like any benchmark: tgg_jax.evals.shapes' per-task metrics, plus the same metrics of the
constant baselines on the same records ("constant_baseline/..."), which a trained model must beat.
"""

from __future__ import annotations

from tgg_jax import spec
from tgg_jax.evals import shapes
from tgg_jax.evals.base import Evaluator, field


class ShapesEvaluator(Evaluator):
    """Examples (tgg_shapes records as the runner passes them): `question`, `reference` (the
    expected answer), `task`, `gt_box` (pixels), `width`, `height`."""

    name = "tgg_shapes"

    def prompt(self, example):
        return spec.human_turn(field(example, "question", self.name))

    def score(self, predictions):
        if not predictions:
            return {}
        records = [{"task": field(p, "task", self.name), "question": field(p, "question", self.name),
                    "answer": field(p, "reference", self.name), "gt_box": field(p, "gt_box", self.name),
                    "width": field(p, "width", self.name), "height": field(p, "height", self.name)}
                   for p in predictions]
        answers = [field(p, "answer", self.name) for p in predictions]
        scores = shapes.score(records, answers)
        baseline = shapes.score(records, shapes.baseline_answers(records))
        scores.update({f"constant_baseline/{k}": v for k, v in baseline.items()})
        return scores
