"""The §3.2 filter: a record is dropped when an object image it shows is too small or too large
for the image, when two object-image options overlap too much (the right one would be
ambiguous), when an object it uses has a low detector confidence, or when the detector gave that
object's phrase too many boxes (the phrase does not pick one object out).

Verdicts are computed from what the store keeps (boxes, scores, box counts per phrase), so
`--refilter` can re-apply new thresholds without a model call.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

KEEP = "keep"
TOO_SMALL = "object image too small"
TOO_LARGE = "object image too large"
SIMILAR_OPTIONS = "options overlap"
LOW_CONFIDENCE = "low confidence"
TOO_MANY_BOXES = "too many boxes for phrase"


def area(box: Sequence[float]) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two [x1, y1, x2, y2] boxes (0 when both are empty)."""
    inter = area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


def verdict(record: Mapping[str, Any], objects: Mapping[str, Mapping[str, Any]],
            width: int, height: int, thresholds: Mapping[str, float]) -> str:
    """KEEP or the first failed check's reason.

    record: "uses" (ids of every object it refers to), "crops" (ids shown as object images),
    "options" (ids of object-image options). objects: id -> {box (pixels), score, phrase_boxes}.
    """
    image_area = float(width * height)
    for key in record["crops"]:
        fraction = area(objects[key]["box"]) / image_area
        if fraction < thresholds["min_area"]:
            return TOO_SMALL
        if fraction > thresholds["max_area"]:
            return TOO_LARGE
    for a, b in itertools.combinations(record["options"], 2):
        if iou(objects[a]["box"], objects[b]["box"]) > thresholds["max_option_iou"]:
            return SIMILAR_OPTIONS
    for key in record["uses"]:
        if objects[key]["score"] < thresholds["min_confidence"]:
            return LOW_CONFIDENCE
        if objects[key]["phrase_boxes"] > thresholds["max_boxes_per_phrase"]:
            return TOO_MANY_BOXES
    return KEEP
