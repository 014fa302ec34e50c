"""REC scoring: IoU and Acc@0.5 on hand-worked boxes, including the padded-square mapping."""

import pytest

from tgg_jax.evals.rec import RecEvaluator, box_iou, predicted_pixel_box, rec_metrics


@pytest.mark.parametrize("a, b, iou", [
    ((0, 0, 4, 4), (0, 0, 4, 4), 1.0),            # identical
    ((0, 0, 1, 1), (1, 0, 2, 1), 0.0),            # touching edges: no area in common
    ((0, 0, 4, 4), (1, 1, 3, 3), 4 / 16),         # nested: inner area / outer area
    ((0, 0, 2, 2), (1, 1, 3, 3), 1 / 7),          # overlap 1, union 4 + 4 - 1
    ((0, 0, 2, 1), (0, 0, 1, 1), 0.5),            # exactly the threshold
    ((5, 5, 5, 9), (0, 0, 10, 10), 0.0),          # zero-width prediction
    ((8, 0, 2, 4), (0, 0, 10, 10), 0.0),          # x2 < x1: no area
    ((3, 3, 3, 3), (3, 3, 3, 3), 0.0),            # both empty: union 0, no division by zero
])
def test_box_iou(a, b, iou):
    assert box_iou(a, b) == pytest.approx(iou)
    assert box_iou(b, a) == pytest.approx(iou)


def test_padding_offset_portrait():
    # 100x200: square side 200, the image sits 50 px in from the left.
    assert predicted_pixel_box("[0.250, 0.000, 0.750, 0.500]", 100, 200) == (0, 0, 100, 100)
    # Odd width: offset (200 - 101) // 2 = 49.
    assert predicted_pixel_box("[0.250, 0.000, 0.750, 0.500]", 101, 200) == (1, 0, 101, 100)


def test_padding_offset_landscape():
    # 300x100: square side 300, the image sits 100 px down from the top.
    assert predicted_pixel_box("[0.1, 0.4, 0.2, 0.5]", 300, 100) == pytest.approx((30, 20, 60, 50))


def test_out_of_image_prediction_is_clipped():
    # The whole square on a portrait image: the padding columns fall outside and are cut off.
    assert predicted_pixel_box("[0.0, 0.0, 1.0, 1.0]", 100, 200) == (0, 0, 100, 200)
    assert predicted_pixel_box("[-0.5, 0.2, 1.7, 0.4]", 200, 200) == (0, 40, 200, 80)


def test_unparsable_is_none():
    assert predicted_pixel_box("the dog on the left", 100, 100) is None
    assert predicted_pixel_box("[0.1, 0.2, 0.3]", 100, 100) is None


def test_rec_metrics_counts_unparsable_as_wrong():
    assert rec_metrics([1.0, None, 0.25, 0.5]) == {
        "accuracy": 2 / 4, "miou": 1.75 / 4, "unparsable": 1 / 4}
    assert rec_metrics([]) == {}


def test_evaluator_scores_per_split():
    evaluator = RecEvaluator()
    square = {"width": 100, "height": 100}
    predictions = [
        {"id": 0, "split": "refcoco_val", "answer": "[0.000, 0.000, 0.500, 0.500]",
         "gt_box": [0, 0, 50, 100], **square},                          # IoU 0.5: right
        {"id": 1, "split": "refcoco_val", "answer": "It is the man.",
         "gt_box": [0, 0, 50, 50], **square},                           # no box: wrong
        {"id": 2, "split": "refcoco_val", "answer": "[0.1,0.1,0.3,0.3] and [0,0,1,1]",
         "gt_box": [0, 0, 40, 40], **square},                           # first box: IoU 0.25
        {"id": 3, "split": "refcocog_test", "answer": "[0.250, 0.000, 0.750, 0.500]",
         "gt_box": [0, 0, 100, 100], "width": 100, "height": 200},      # portrait: exact
    ]
    scores = evaluator.score(predictions)
    assert scores["refcoco_val/accuracy"] == pytest.approx(1 / 3)
    assert scores["refcoco_val/miou"] == pytest.approx((0.5 + 0 + 0.25) / 3)
    assert scores["refcoco_val/unparsable"] == pytest.approx(1 / 3)
    assert scores["refcocog_test/accuracy"] == 1.0
    assert scores["mean/accuracy"] == pytest.approx((1 / 3 + 1) / 2)


def test_prompt_and_missing_field():
    evaluator = RecEvaluator()
    assert evaluator.prompt({"expression": "the man in red"}) == [
        {"from": "human", "value": "<image>\nOutput the coordinate of the man in red."}]
    with pytest.raises(KeyError, match="rec: prediction 7"):
        evaluator.score([{"id": 7, "answer": "[0, 0, 1, 1]", "width": 10, "height": 10}])
    assert evaluator.submission([]) is None
