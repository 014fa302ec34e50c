"""tgg_shapes: a procedurally generated grounding dataset, deterministic by seed (pure numpy + PIL).

Every record is a new scene: a non-square image (sides 160–224 px, so the pad-to-square of SPEC §2
matters) with a textured background (noise, stripes, gradient or checkers) and 2–5 non-overlapping
shapes. A shape has one of 5 kinds (circle, square, triangle, diamond, star), 6 colours and 3 sizes
whose pixel ranges do not touch (small 16–20, medium 30–36, large 50–58 px), so every attribute
is visible. Each object gets an expression that is unique in its scene ("the small red circle",
or "the small red circle on the left" when two objects share all three attributes).

Tasks (one conversation per record; eval records are single-turn, some train records multi-turn):

- ``rec``: "Output the coordinate of {expression}." -> "[x1, y1, x2, y2]" (padded-square box).
- ``caption``: "Describe the region [x1, y1, x2, y2]." -> "a small red circle".
- ``object``: "Which shape is shown in <object>?" -> "a blue square" (a zoomed crop shows no size),
  or "Where is <object> in the image?" -> the box; the record's `objects` holds the box in pixels.
- ``yesno``: "Is there a green triangle in the image?\\nAnswer the question using a single word or
  phrase." -> "Yes" / "No", exactly balanced; half of the negatives are hard (a kind that is in
  the scene, in a colour it does not have there).
- ``describe``: "Describe the image briefly." -> "A small red circle, a large blue square and a
  medium green star." (every shape, left to right: the image-level caption data of stage 1).

Chance levels, for reading evaluation numbers:

- rec (acc@IoU 0.5): the best constant box scores ~2 % (measured over a grid of constant boxes on
  2000 validation records); picking one of the scene's shapes at random scores
  1 / E[#shapes] ~ 0.33 (E[#shapes] ~ 3.5), so a model above ~0.33 reads the expression rather
  than only finding shapes.
- caption (exact match): 1 / 90 over kind × colour × size; "which shape": 1 / 30 over kind × colour.
- "where is <object>" (acc@IoU 0.5): as rec, ~0.33 when guessing among the scene's shapes.
- yesno (accuracy): 0.5; always answering "Yes" or "No" scores exactly 0.5.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
from PIL import Image, ImageDraw

from tgg_jax.data import coords

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
_LEVELS = 256 - len(COLORS)  # palette entries for background blends; the rest are shape colours
TASKS = ("rec", "caption", "object", "yesno", "describe")
SPLITS = ("train", "validation", "test")

SIDE_RANGE = (160, 224)
MIN_ASPECT_GAP = 16  # |W - H| at least this, so every image needs padding
GAP = 6  # free pixels between shapes, so boxes never touch
YESNO_SUFFIX = "\nAnswer the question using a single word or phrase."

# Vertices on the unit square, scaled into each object's box so the box is the tight bound.
_TRIANGLE = ((0.5, 0.0), (1.0, 1.0), (0.0, 1.0))
_DIAMOND = ((0.5, 0.0), (1.0, 0.5), (0.5, 1.0), (0.0, 0.5))


def _star_vertices() -> tuple[tuple[float, float], ...]:
    """Five-pointed star, point up, normalised to fill the unit square."""
    angles = np.pi / 2 + np.arange(10) * np.pi / 5
    radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
    xs, ys = radii * np.cos(angles), -radii * np.sin(angles)
    xs = (xs - xs.min()) / (xs.max() - xs.min())
    ys = (ys - ys.min()) / (ys.max() - ys.min())
    return tuple(zip(xs.tolist(), ys.tolist()))


_STAR = _star_vertices()


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


def _tone(rng: np.random.Generator) -> np.ndarray:
    """A muted background colour: grey with a faint tint, so the shape colours stand out."""
    grey = rng.uniform(95, 190)
    return np.clip(grey + rng.uniform(-18, 18, size=3), 0, 255)


def _texture(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """Background palette indices [height, width] uint8 in [0, _LEVELS) and palette [_LEVELS, 3]."""
    rng = np.random.default_rng(scene.texture_seed)
    h, w = scene.height, scene.width
    c1, c2 = _tone(rng), _tone(rng)
    yy, xx = np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]
    angle = rng.uniform(0, np.pi)
    along = np.float32(np.cos(angle)) * xx + np.float32(np.sin(angle)) * yy
    if scene.background == "gradient":
        t = (along - along.min()) / max(float(np.ptp(along)), 1.0)
    elif scene.background == "stripes":
        t = np.floor(along / rng.integers(4, 12)) % 2
    elif scene.background == "checkers":
        cell = int(rng.integers(8, 24))
        t = (xx // cell + yy // cell) % 2
    else:  # smooth value noise: a coarse random grid upscaled, cheap to compress as PNG
        cell = int(rng.integers(8, 20))
        grid = rng.random((h // cell + 2, w // cell + 2))
        small = Image.fromarray((grid * 255).astype(np.uint8))
        size = ((w // cell + 2) * cell, (h // cell + 2) * cell)
        t = np.asarray(small.resize(size, Image.BILINEAR), np.float32)[:h, :w] / 255.0
    levels = np.linspace(0.0, 1.0, _LEVELS)[:, None]
    palette = np.clip(c1 * (1.0 - levels) + c2 * levels, 0, 255).astype(np.uint8)
    index = np.broadcast_to(np.rint(t * (_LEVELS - 1)), (h, w)).astype(np.uint8)
    return index, palette


def render_scene(scene: Scene) -> Image.Image:
    """The scene as a palette ("P") image of size (width, height); .convert("RGB") for pixels.

    Background blends use the first 250 palette entries and the shape colours the last 6, so
    the PNG stores one byte per pixel (about 3x faster to encode than RGB).
    """
    index, palette = _texture(scene)
    image = Image.fromarray(index, mode="L")
    shape_colors = np.asarray(list(COLORS.values()), np.uint8)
    image.putpalette(np.concatenate([palette, shape_colors]).tobytes())
    draw = ImageDraw.Draw(image)
    for shape in scene.shapes:
        x1, y1, x2, y2 = (int(v) for v in shape.box)
        fill = _LEVELS + list(COLORS).index(shape.color)
        # PIL includes the end pixel, so the drawn pixels are columns x1 .. x2 - 1 (box = [x1, x2)).
        if shape.kind == "circle":
            draw.ellipse((x1, y1, x2 - 1, y2 - 1), fill=fill)
        elif shape.kind == "square":
            draw.rectangle((x1, y1, x2 - 1, y2 - 1), fill=fill)
        else:
            unit = {"triangle": _TRIANGLE, "diamond": _DIAMOND, "star": _STAR}[shape.kind]
            side = x2 - 1 - x1
            draw.polygon([(x1 + u * side, y1 + v * side) for u, v in unit], fill=fill)
    return image


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes (deterministic for a given PIL build)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def _position_word(shape: Shape, twin: Shape) -> str:
    """'on the left' / 'on the right' / 'at the top' / 'at the bottom' relative to its twin."""
    dx = (shape.box[0] + shape.box[2]) - (twin.box[0] + twin.box[2])
    dy = (shape.box[1] + shape.box[3]) - (twin.box[1] + twin.box[3])
    if abs(dx) >= abs(dy):
        return "on the left" if dx < 0 else "on the right"
    return "at the top" if dy < 0 else "at the bottom"


def referring_expressions(scene: Scene) -> list[str]:
    """One expression per shape, unique within the scene: 'the small red circle [on the left]'."""
    expressions = []
    for i, shape in enumerate(scene.shapes):
        twins = [s for j, s in enumerate(scene.shapes) if j != i and s.name == shape.name]
        suffix = f" {_position_word(shape, twins[0])}" if twins else ""
        expressions.append(f"the {shape.name}{suffix}")
    return expressions


def describe(scene: Scene) -> str:
    """Every shape, left to right: 'A small red circle, a large blue square and a green star.'
    The image-level caption (the paper's stage-1 alignment data) names what each region holds."""
    names = [f"a {s.name}" for s in sorted(scene.shapes, key=lambda s: (s.box[0], s.box[1]))]
    text = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return text[0].upper() + text[1:] + "."


def _box_text(scene: Scene, shape: Shape) -> str:
    return coords.format_box(coords.pixel_to_square(shape.box, scene.width, scene.height))


def yesno_target(present: set, colors, kinds, rng: np.random.Generator, positive: bool):
    """The (colour, kind) a yes/no question asks about, given the scene's `present` pairs: one of
    them if `positive`, else an absent pair, half of the time a hard negative (a kind that is
    present, in a colour it lacks here). Works on any colour / kind values (names or ids)."""
    if positive:
        return sorted(present)[rng.integers(len(present))]
    kinds_here = sorted({k for _, k in present})
    if rng.random() < 0.5:
        kind = kinds_here[rng.integers(len(kinds_here))]
    else:
        kind = kinds[rng.integers(len(kinds))]
    absent = [c for c in colors if (c, kind) not in present]
    return absent[rng.integers(len(absent))], kind


def _yesno_turn(scene: Scene, rng: np.random.Generator, positive: bool):
    """(question, answer) for a POPE-style 'Is there a {colour} {kind}' question."""
    present = {(s.color, s.kind) for s in scene.shapes}
    color, kind = yesno_target(present, list(COLORS), KINDS, rng, positive)
    question = f"Is there {_article(color)} {color} {kind} in the image?{YESNO_SUFFIX}"
    return question, "Yes" if positive else "No"


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


@dataclasses.dataclass(frozen=True)
class Turn:
    """One question/answer pair; `shape` is the object it is about (None for yes/no)."""

    task: str
    question: str
    answer: str
    shape: Shape | None = None
    uses_object: bool = False


def make_turn(scene: Scene, task: str, rng: np.random.Generator, positive: bool = True) -> Turn:
    """A question about the scene for `task`; `positive` only matters for yes/no."""
    if task == "yesno":
        return Turn(task, *_yesno_turn(scene, rng, positive))
    index = int(rng.integers(len(scene.shapes)))
    shape = scene.shapes[index]
    if task == "rec":
        expression = referring_expressions(scene)[index]
        return Turn(task, f"Output the coordinate of {expression}.", _box_text(scene, shape), shape)
    if task == "caption":
        question = f"Describe the region {_box_text(scene, shape)}."
        return Turn(task, question, f"a {shape.name}", shape)
    if task == "object":
        if rng.random() < 0.5:
            # A zoomed crop shows colour and kind but not size, so the answer names only those.
            article = "an" if shape.color[0] in "aeiou" else "a"
            return Turn(task, "Which shape is shown in <object>?", f"{article} {shape.color} {shape.kind}",
                        shape, True)
        return Turn(task, "Where is <object> in the image?", _box_text(scene, shape), shape, True)
    if task == "describe":
        return Turn(task, "Describe the image briefly.", describe(scene))
    raise ValueError(f"unknown tgg_shapes task {task!r}; expected one of {TASKS}")


def _more_turns(scene: Scene, task: str, rng: np.random.Generator, count: int, asked: set) -> list[Turn]:
    """Up to `count` turns of `task` (yes/no answers a fair coin), none repeating a question in
    `asked`: for REC, the scene's other shapes."""
    turns = []
    for _ in range(20 * count):  # a scene with one (colour, kind) pair can run out of "Yes" questions
        if len(turns) == count:
            break
        turn = make_turn(scene, task, rng, positive=bool(rng.random() < 0.5))
        if turn.question not in asked:
            asked.add(turn.question)
            turns.append(turn)
    return turns


def record_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Independent stream per (seed, split, record): splits never share images."""
    return np.random.default_rng([seed, SPLITS.index(split), index])


def make_record(seed: int, split: str, index: int, multi_turn: float = 0.0,
                render: bool = True, tasks: tuple[str, ...] = TASKS, yesno_turns: int = 1,
                rec_turns: int = 1) -> dict:
    """Record `index` of a split, in the SPEC §2 record format plus task / gt_box / answer.

    Tasks cycle through `tasks` by index (a task listed twice comes twice as often) and yes/no
    answers alternate from one cycle to the next, so they are exactly balanced. With probability `multi_turn` the record gets 1-2 more turns of random tasks
    (its task is then 'mixed', gt_box zeros, answer the last turn's); a record has at most one
    <object>, so max_objects=1 takes every record. `render=False` skips drawing (image b""),
    for text-only uses such as a tokenizer corpus; the text is the same either way.

    `yesno_turns` > 1 asks a yes/no record that many different questions about its one image
    (and no other turns): the first answer follows the alternation above, every later one is a
    fair coin, so earlier answers in the record say nothing about later ones. Records of the
    other tasks are the same for every `yesno_turns`. `rec_turns` > 1 likewise asks a REC record
    for up to that many of its scene's shapes (the first turn as with 1).
    """
    rng = record_rng(seed, split, index)
    scene = sample_scene(rng)
    image = encode_png(render_scene(scene)) if render else b""
    unknown = set(tasks) - set(TASKS)
    if unknown or not tasks:
        raise ValueError(f"tasks must be a non-empty sequence of {TASKS}, got {tasks}")
    task, positive = tasks[index % len(tasks)], (index // len(tasks)) % 2 == 0
    turns = [make_turn(scene, task, rng, positive=positive)]
    more = {"yesno": yesno_turns, "rec": rec_turns}.get(task, 1) - 1
    if more > 0:
        turns += _more_turns(scene, task, rng, more, asked={turns[0].question})
    elif rng.random() < multi_turn:
        for _ in range(int(rng.integers(1, 3))):
            task = TASKS[rng.integers(len(TASKS))]
            if task == "object" and any(t.uses_object for t in turns):
                task = "rec"
            turns.append(make_turn(scene, task, rng, positive=bool(rng.random() < 0.5)))
    conversations = []
    for turn in turns:
        conversations += [{"from": "human", "value": turn.question},
                          {"from": "gpt", "value": turn.answer}]
    objects = [t.shape.box for t in turns if t.uses_object]
    single = len(turns) == 1
    gt = turns[0].shape.box if single and turns[0].shape is not None else (0.0, 0.0, 0.0, 0.0)
    return {
        "id": f"tgg_shapes-{split}-{index:06d}",
        "image": image,
        "width": scene.width,
        "height": scene.height,
        "objects": np.asarray(objects, np.float32).reshape(-1, 4),
        "conversations": conversations,
        "source": "tgg_shapes",
        "task": turns[0].task if single else "mixed",
        "gt_box": np.asarray(gt, np.float32),
        "answer": turns[-1].answer,
    }


def vocabulary_phrases() -> list[str]:
    """Every attribute phrase and position word the tasks can produce (for tokenizer corpora)."""
    phrases = [f"the {size} {color} {kind}" for size in SIZES for color in COLORS for kind in KINDS]
    phrases += [f"Is there {_article(color)} {color} {kind} in the image?"
                for color in COLORS for kind in KINDS]
    phrases += ["on the left", "on the right", "at the top", "at the bottom", "Yes", "No"]
    return phrases
