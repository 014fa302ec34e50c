"""POPE object hallucination (SPEC §4): yes/no questions in three categories (random, popular,
adversarial), scored with the official rule and binary metrics where "yes" is the positive class."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from tgg_jax import spec
from tgg_jax.evals.base import Evaluator, field

CATEGORIES = ("random", "popular", "adversarial")
_NEGATIVE_WORDS = ("No", "not", "no")


def answer_is_yes(text: str) -> bool:
    """The official rule: "no" if the first sentence (split on "."), commas removed and split on
    single spaces, contains the word "No", "not" or "no"; anything else is "yes"."""
    words = text.split(".")[0].replace(",", "").split(" ")
    return not any(w in words for w in _NEGATIVE_WORDS)


def binary_metrics(predicted_yes: Sequence[bool], label_yes: Sequence[bool]) -> dict[str, float]:
    """Accuracy, precision, recall, F1 and yes-ratio with "yes" positive.
    Precision (recall) is 0 when nothing is predicted (labelled) positive, and F1 then 0 too."""
    if len(predicted_yes) != len(label_yes):
        raise ValueError(f"{len(predicted_yes)} predictions for {len(label_yes)} labels")
    if not label_yes:
        return {}
    tp = sum(p and y for p, y in zip(predicted_yes, label_yes))
    fp = sum(p and not y for p, y in zip(predicted_yes, label_yes))
    fn = sum(y and not p for p, y in zip(predicted_yes, label_yes))
    tn = len(label_yes) - tp - fp - fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": (tp + tn) / len(label_yes),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": (tp + fp) / len(label_yes),
    }


def _label_is_yes(prediction) -> bool:
    label = field(prediction, "label", "pope")
    if label not in ("yes", "no"):
        raise ValueError(f"pope: prediction {prediction.get('id', '?')!r} has label {label!r}, "
                         "expected 'yes' or 'no'")
    return label == "yes"


class PopeEvaluator(Evaluator):
    """Examples: `question`, `label` ("yes"/"no"), `category`. Metrics per category
    ("adversarial/f1") and their mean over categories ("mean/f1", LLaVA's reported F1)."""

    name = "pope"

    def prompt(self, example):
        question = field(example, "question", self.name)
        return spec.human_turn(spec.short_answer_prompt(question))

    def score(self, predictions):
        by_category = defaultdict(lambda: ([], []))
        for p in predictions:
            predicted, labels = by_category[field(p, "category", self.name)]
            predicted.append(answer_is_yes(field(p, "answer", self.name)))
            labels.append(_label_is_yes(p))
        per_category = {c: binary_metrics(*by_category[c]) for c in sorted(by_category)}
        scores = {f"{c}/{k}": v for c, m in per_category.items() for k, v in m.items()}
        for metric in ("accuracy", "precision", "recall", "f1", "yes_ratio"):
            values = [m[metric] for m in per_category.values()]
            if values:
                scores[f"mean/{metric}"] = sum(values) / len(values)
        return scores
