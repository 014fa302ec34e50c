"""LLaVA-Bench (In-the-Wild) (SPEC §4): open-ended answers judged by GPT-4 against reference
answers (LLaVA's eval_gpt_review_bench.py). There is no local score without that judge: this
evaluator only writes the answers file the judge script reads."""

from __future__ import annotations

from tgg_jax import spec
from tgg_jax.evals.base import Evaluator, field


class LlavaBenchEvaluator(Evaluator):
    """Examples: `question` (asked as given, no answer-format instruction). Metrics: none."""

    name = "llava_bench"

    def __init__(self, model_id: str = "tinygroundinggpt"):
        self.model_id = model_id

    def prompt(self, example):
        return spec.human_turn(field(example, "question", self.name))

    def score(self, predictions):
        return {}  # judged by GPT-4 from the submission file; nothing to compute locally

    def submission(self, predictions):
        """One JSON object a line, {"question_id", "prompt", "text", "answer_id", "model_id",
        "metadata"}, in question order: the judge pairs answers with questions line by line."""
        rows = []
        for p in sorted(predictions, key=lambda p: field(p, "id", self.name)):
            qid = p["id"]
            rows.append({"question_id": qid, "prompt": field(p, "question", self.name),
                         "text": field(p, "answer", self.name),
                         "answer_id": f"{self.model_id}-{qid}", "model_id": self.model_id,
                         "metadata": {}})
        return ("llava_bench_answers.jsonl", rows)
