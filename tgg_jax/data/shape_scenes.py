"""tgg_shapes scenes: a non-square image (sides 160-224 px) with a textured background and 2-5
non-overlapping shapes of 5 kinds, 6 colours and 3 sizes whose pixel ranges do not touch."""

from __future__ import annotations

import dataclasses

import numpy as np

KINDS = ("circle", "square", "triangle", "diamond", "star")
COLORS = {
    "red": (215, 35, 35),
    "green": (35, 160, 55),
    "blue": (35, 75, 215),
    "yellow": (240, 205, 30),
    "purple": (135, 50, 185),
    "orange": (245, 130, 20),
}
# Side-length ranges in pixels; gaps between them keep the three sizes apart at a glance.
SIZES = {"small": (16, 20), "medium": (30, 36), "large": (50, 58)}
BACKGROUNDS = ("noise", "stripes", "gradient", "checkers")

SIDE_RANGE = (160, 224)
MIN_ASPECT_GAP = 16  # |W - H| at least this, so every image needs padding
GAP = 6  # free pixels between shapes, so boxes never touch


@dataclasses.dataclass(frozen=True)
class Shape:
    """One object: attributes and its box [x1, y1, x2, y2] in pixels (x2 = x1 + side)."""

    kind: str
    color: str
    size: str
    box: tuple[float, float, float, float]

    @property
    def name(self) -> str:
        """'small red circle'."""
        return f"{self.size} {self.color} {self.kind}"


@dataclasses.dataclass(frozen=True)
class Scene:
    """An image's content; `render_scene` draws it and `texture_seed` fixes the background."""

    width: int
    height: int
    background: str
    texture_seed: int
    shapes: tuple[Shape, ...]


def _sample_side(rng: np.random.Generator) -> tuple[int, int]:
    while True:
        width, height = (int(v) for v in rng.integers(SIDE_RANGE[0], SIDE_RANGE[1] + 1, size=2))
        if abs(width - height) >= MIN_ASPECT_GAP:
            return width, height


def _overlaps(box, others) -> bool:
    x1, y1, x2, y2 = box
    return any(x1 < b[2] + GAP and b[0] < x2 + GAP and y1 < b[3] + GAP and b[1] < y2 + GAP
               for b in others)


def sample_scene(rng: np.random.Generator) -> Scene:
    """A random scene: size, background and 2-5 placed shapes (fewer if placement fails)."""
    width, height = _sample_side(rng)
    background = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    count = int(rng.integers(2, 6))
    shapes: list[Shape] = []
    for _ in range(count):
        # Reusing a kind already present makes colour/size words necessary, and hard negatives real.
        if shapes and rng.random() < 0.35:
            kind = shapes[rng.integers(len(shapes))].kind
        else:
            kind = KINDS[rng.integers(len(KINDS))]
        color = list(COLORS)[rng.integers(len(COLORS))]
        size = list(SIZES)[rng.integers(len(SIZES))]
        # At most two objects share all attributes: two can be told apart by one position word.
        if sum(s.kind == kind and s.color == color and s.size == size for s in shapes) >= 2:
            continue
        lo, hi = SIZES[size]
        side = int(rng.integers(lo, hi + 1))
        for _ in range(40):
            x1 = int(rng.integers(2, width - side - 1))
            y1 = int(rng.integers(2, height - side - 1))
            box = (float(x1), float(y1), float(x1 + side), float(y1 + side))
            if not _overlaps(box, [s.box for s in shapes]):
                shapes.append(Shape(kind, color, size, box))
                break
    return Scene(width, height, background, int(rng.integers(2**31)), tuple(shapes))
