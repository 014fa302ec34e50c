"""Scoring on tgg_shapes (the built-in synthetic grounding data), per task, plus the baselines a
trained model must beat: the best constant box and the majority answer (SPEC §4 metrics applied
to the synthetic tasks; chance levels are in tgg_jax/data/shapes.py)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from tgg_jax.data.coords import format_box, pixel_to_square, square_to_pixel
from tgg_jax.evals.rec import box_iou, predicted_pixel_box


def _norm(text: str) -> str:
    return text.strip().lower().rstrip(".")


def _is_box_question(record: dict) -> bool:
    return record["task"] == "rec" or (record["task"] == "object" and "Where" in record["question"])


def score(records: Sequence[dict], answers: Sequence[str]) -> dict[str, float]:
    """records: task, question, answer, gt_box (pixels), width, height; answers: model outputs."""
    ious, where, which, caption, yesno, describe = [], [], [], [], [], []
    for r, a in zip(records, answers, strict=True):
        if _is_box_question(r):
            box = predicted_pixel_box(a, int(r["width"]), int(r["height"]))
            iou = 0.0 if box is None else box_iou(box, r["gt_box"])
            (ious if r["task"] == "rec" else where).append(iou)
        elif r["task"] == "object":
            which.append(_norm(a) == _norm(r["answer"]))
        elif r["task"] == "caption":
            caption.append(_norm(a) == _norm(r["answer"]))
        elif r["task"] == "describe":
            describe.append(_norm(a) == _norm(r["answer"]))
        elif r["task"] == "yesno":
            # Strict: an answer must be exactly yes or no, so babble earns no free 50 %.
            yesno.append(_norm(a) == _norm(r["answer"]))
    out = {}
    if ious:
        out["rec/acc@0.5"] = float(np.mean(np.asarray(ious) >= 0.5))
        out["rec/mean_iou"] = float(np.mean(ious))
    if where:
        out["object_where/acc@0.5"] = float(np.mean(np.asarray(where) >= 0.5))
    if which:
        out["object_which/exact"] = float(np.mean(which))
    if caption:
        out["caption/exact"] = float(np.mean(caption))
    if yesno:
        out["yesno/accuracy"] = float(np.mean(yesno))
    if describe:
        out["describe/exact"] = float(np.mean(describe))
    return out


def best_constant_box(records: Sequence[dict]) -> tuple[float, float, float, float]:
    """The padded-square box that, answered for every REC question, scores best on these records
    (searched over every ground-truth box of the split: an upper bound on constant answers)."""
    rec = [r for r in records if r["task"] == "rec"]
    candidates = [pixel_to_square(r["gt_box"], int(r["width"]), int(r["height"])) for r in rec]
    best, best_acc = (0.25, 0.25, 0.75, 0.75), -1.0
    for cand in candidates:
        acc = np.mean([box_iou(square_to_pixel(cand, int(r["width"]), int(r["height"])), r["gt_box"]) >= 0.5
                       for r in rec])
        if acc > best_acc:
            best, best_acc = cand, acc
    return best


def baseline_answers(records: Sequence[dict]) -> list[str]:
    """Constant answers: the best constant box for box questions, the majority answer otherwise."""
    box = format_box(best_constant_box(records))
    majority = {task: Counter(r["answer"] for r in records if r["task"] == task).most_common(1)[0][0]
                for task in {r["task"] for r in records}}
    return [box if _is_box_question(r) else majority[r["task"]] for r in records]
