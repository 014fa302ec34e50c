"""Box text format, lenient parsing and pixel <-> padded-square conversion, worked by hand."""

import itertools

import pytest

from tgg_jax.data.coords import (format_box, pad_offset, parse_boxes, parse_first_box,
                                 pixel_to_square, square_to_pixel)


def approx_box(box, abs=1e-9):
    return pytest.approx(tuple(box), abs=abs)


def test_format_three_decimals_and_clipping():
    assert format_box((0.1234, 0.5, 0.9996, 1.2)) == "[0.123, 0.500, 1.000, 1.000]"
    assert format_box((-0.2, 0, 1, 0.0004)) == "[0.000, 0.000, 1.000, 0.000]"
    assert format_box([0.0126, 0.25, 0.75, 0.333333]) == "[0.013, 0.250, 0.750, 0.333]"


@pytest.mark.parametrize("text, boxes", [
    ("[0.1,0.2,0.3,0.4]", [(0.1, 0.2, 0.3, 0.4)]),
    ("It is at [ 0.100 , 0.2 ,0.3,  0.4 ] .", [(0.1, 0.2, 0.3, 0.4)]),
    ("[.5, 1., 1, 0]", [(0.5, 1.0, 1.0, 0.0)]),
    ("a [0.1, 0.2, 0.3, 0.4] and b [0.5, 0.6, 0.7, 0.8]", [(0.1, 0.2, 0.3, 0.4),
                                                          (0.5, 0.6, 0.7, 0.8)]),
    ("[-0.1, +0.2, 0.3, 0.4]", [(-0.1, 0.2, 0.3, 0.4)]),
    ("[0.1, 0.2, 0.3]", []),
    ("[0.1, 0.2, 0.3, zero]", []),
    ("(0.1, 0.2, 0.3, 0.4)", []),
    ("no box here", []),
])
def test_parse_boxes(text, boxes):
    assert parse_boxes(text) == [approx_box(b) for b in boxes]


def test_parse_first_box():
    assert parse_first_box("x [0.1, 0.2, 0.3, 0.4] y [0.5, 0.6, 0.7, 0.8]") == \
        approx_box((0.1, 0.2, 0.3, 0.4))
    assert parse_first_box("I cannot see it.") is None


@pytest.mark.parametrize("size, offset", [((640, 480), (0, 80)), ((480, 640), (80, 0)),
                                          ((100, 100), (0, 0)), ((101, 50), (0, 25)),
                                          ((50, 101), (25, 0))])
def test_pad_offset(size, offset):
    assert pad_offset(*size) == offset


def test_pixel_to_square_by_hand():
    # landscape 640x480: 80 rows of padding above, side 640
    assert pixel_to_square((0, 0, 640, 480), 640, 480) == approx_box((0, 0.125, 1, 0.875))
    # portrait 480x640: 80 columns of padding on the left
    assert pixel_to_square((100, 200, 300, 400), 480, 640) == \
        approx_box((180 / 640, 200 / 640, 380 / 640, 400 / 640))
    assert pixel_to_square((10, 20, 30, 40), 100, 100) == approx_box((0.1, 0.2, 0.3, 0.4))


def test_square_to_pixel_by_hand_and_clipping():
    assert square_to_pixel((0.25, 0.25, 0.75, 0.75), 640, 480) == approx_box((160, 80, 480, 400))
    # the whole square covers the padding too: clipped back to the image
    assert square_to_pixel((0, 0, 1, 1), 640, 480) == approx_box((0, 0, 640, 480))
    assert square_to_pixel((0, 0, 1, 1), 480, 640) == approx_box((0, 0, 480, 640))


SIZES = [(640, 480), (480, 640), (500, 500), (333, 1000), (1001, 7)]


@pytest.mark.parametrize("width, height", SIZES)
def test_round_trip_exact_without_text(width, height):
    for box in [(0, 0, width, height), (1, 2, width / 3, height / 2), (width - 5, height - 3,
                                                                        width, height)]:
        back = square_to_pixel(pixel_to_square(box, width, height), width, height)
        assert back == approx_box(box, abs=1e-9)


@pytest.mark.parametrize("width, height", SIZES)
def test_round_trip_through_text(width, height):
    # Three decimals on the square: each coordinate is off by at most 0.0005 x max(W, H) pixels.
    tol = 0.0005 * max(width, height) + 1e-9
    xs, ys = (0, width // 4, width // 2, width), (0, height // 3, height)
    for x1, x2 in itertools.combinations(xs, 2):
        for y1, y2 in itertools.combinations(ys, 2):
            text = "The box is " + format_box(pixel_to_square((x1, y1, x2, y2), width, height))
            back = square_to_pixel(parse_first_box(text), width, height)
            assert back == approx_box((x1, y1, x2, y2), abs=tol)
