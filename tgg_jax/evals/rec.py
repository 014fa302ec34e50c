"""Referring expression comprehension (RefCOCO / RefCOCO+ / RefCOCOg, SPEC §4): the first box in
the answer, mapped from the padded-square [0, 1] frame to original pixels, is correct when its IoU
with the ground-truth box is at least 0.5 (Acc@0.5 per split)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from tgg_jax import spec
from tgg_jax.data import coords
from tgg_jax.evals.base import Evaluator, Prediction, field

IOU_THRESHOLD = 0.5


def box_area(box: Sequence[float]) -> float:
    """Area of an xyxy box; an inverted or flat box (x2 <= x1 or y2 <= y1) has area 0."""
    x1, y1, x2, y2 = box
    return max(x2 - x1, 0.0) * max(y2 - y1, 0.0)


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two xyxy boxes in the same frame; 0 when the union is empty."""
    inter = box_area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))
    union = box_area(a) + box_area(b) - inter
    return inter / union if union > 0 else 0.0


def predicted_pixel_box(answer: str, width: int, height: int) -> coords.Box | None:
    """The answer's first box in original pixels (clipped to the image), or None if it has none."""
    box = coords.parse_first_box(answer)
    return None if box is None else coords.square_to_pixel(box, width, height)


def rec_metrics(ious: Sequence[float | None]) -> dict[str, float]:
    """Acc@0.5, mean IoU and unparsable rate; None marks an answer without a box (IoU 0, wrong)."""
    if not ious:
        return {}
    values = [0.0 if iou is None else iou for iou in ious]
    return {
        "accuracy": sum(v >= IOU_THRESHOLD for v in values) / len(values),
        "miou": sum(values) / len(values),
        "unparsable": sum(iou is None for iou in ious) / len(ious),
    }


class RecEvaluator(Evaluator):
    """Examples: `expression`, `gt_box` (pixels, xyxy), `width`, `height`, and `split`
    (e.g. "refcoco_val"), which keys the per-split metrics ("refcoco_val/accuracy"), plus
    "mean/accuracy" over splits when there are several."""

    name = "rec"

    def prompt(self, example):
        return spec.human_turn(spec.rec_prompt(field(example, "expression", self.name)))

    def iou(self, prediction: Prediction) -> float | None:
        """IoU of one prediction with its ground truth in original pixels; None if unparsable."""
        box = predicted_pixel_box(field(prediction, "answer", self.name),
                                  field(prediction, "width", self.name),
                                  field(prediction, "height", self.name))
        return None if box is None else box_iou(box, field(prediction, "gt_box", self.name))

    def score(self, predictions):
        by_split = defaultdict(list)
        for p in predictions:
            by_split[p.get("split", "all")].append(self.iou(p))
        scores = {}
        for split, ious in sorted(by_split.items()):
            scores.update({f"{split}/{k}": v for k, v in rec_metrics(ious).items()})
        if len(by_split) > 1:  # the paper's "avg" column: the mean over splits, not over examples
            scores["mean/accuracy"] = sum(scores[f"{s}/accuracy"] for s in by_split) / len(by_split)
        return scores
