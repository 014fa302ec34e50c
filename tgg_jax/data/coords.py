"""Box coordinates in text: `[x1, y1, x2, y2]`, each in [0, 1] with three decimals, relative to
the padded square image (SPEC §2, GroundingGPT's convention), and exact conversions to and from
original pixels.

The padding offset is the integer one used when the image is pasted into its square
(LLaVA's expand2square: `(max(W, H) - W) // 2`), so pixels -> square -> pixels is exact up to
the three-decimal rounding of the text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

Box = tuple[float, float, float, float]

_NUM = r"([-+]?(?:\d+\.?\d*|\.\d+))"
_BOX = re.compile(r"\[\s*" + r"\s*,\s*".join([_NUM] * 4) + r"\s*\]")


def pad_offset(width: int, height: int) -> tuple[int, int]:
    """(x, y) position of the original image inside its centred max(W, H) square."""
    size = max(width, height)
    return (size - width) // 2, (size - height) // 2


def pixel_to_square(box: Sequence[float], width: int, height: int) -> Box:
    """Original-pixel box -> [0, 1] coordinates on the padded square."""
    size = max(width, height)
    ox, oy = pad_offset(width, height)
    x1, y1, x2, y2 = box
    return ((x1 + ox) / size, (y1 + oy) / size, (x2 + ox) / size, (y2 + oy) / size)


def square_to_pixel(box: Sequence[float], width: int, height: int) -> Box:
    """[0, 1] padded-square box -> original pixels: × max(W, H), minus the padding, clipped."""
    size = max(width, height)
    ox, oy = pad_offset(width, height)
    x1, y1, x2, y2 = box

    def clip(v, hi):
        return min(max(v, 0.0), float(hi))

    return (clip(x1 * size - ox, width), clip(y1 * size - oy, height),
            clip(x2 * size - ox, width), clip(y2 * size - oy, height))


def format_box(box: Sequence[float]) -> str:
    """[0, 1] box -> '[0.123, 0.456, 0.789, 1.000]' (values clipped to [0, 1])."""
    return "[" + ", ".join(f"{min(max(float(v), 0.0), 1.0):.3f}" for v in box) + "]"


def parse_boxes(text: str) -> list[Box]:
    """Every `[x1, y1, x2, y2]` in a text, in order; lenient about spaces and number forms."""
    return [tuple(float(g) for g in m.groups()) for m in _BOX.finditer(text)]


def parse_first_box(text: str) -> Box | None:
    """The first box in a text, or None when there is none (counts as wrong in REC)."""
    boxes = parse_boxes(text)
    return boxes[0] if boxes else None
