import numpy as np
from PIL import Image

from tgg_jax.visualize import PRED_COLOR, TRUE_COLOR, draw_boxes


def test_draw_boxes_draws_inverted_predictions_instead_of_failing():
    # Regression: a trained tiny model answered a box with x2 < x1 and the final evaluation died
    # drawing it (PIL: "x1 must be greater than or equal to x0").
    image = Image.new("RGB", (40, 30), (255, 255, 255))
    out = np.asarray(draw_boxes(image, true_box=(2, 2, 10, 10), pred_box=(30, 25, 20, 5), scale=1))
    assert tuple(out[2, 6]) == TRUE_COLOR          # top edge of the true box
    assert tuple(out[5, 25]) == PRED_COLOR         # top edge of the predicted box, y = min(25, 5)
    assert tuple(out[15, 20]) == PRED_COLOR        # its left edge, x = min(30, 20)
    assert tuple(out[15, 25]) == (255, 255, 255)   # inside stays untouched
