"""tgg_shapes questions: the task text and answers about a scene (REC, region captions,
<object> questions, yes/no, image descriptions), in SPEC §2's prompts."""

from __future__ import annotations

import dataclasses

import numpy as np

from tgg_jax import spec
from tgg_jax.data import coords
from tgg_jax.data.shape_scenes import COLORS, KINDS, SIZES, Scene, Shape

TASKS = ("rec", "caption", "object", "yesno", "describe")


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
    question = spec.short_answer_prompt(f"Is there {_article(color)} {color} {kind} in the image?")
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
        return Turn(task, spec.rec_prompt(expression), _box_text(scene, shape), shape)
    if task == "caption":
        question = spec.region_caption_prompt(_box_text(scene, shape))
        return Turn(task, question, f"a {shape.name}", shape)
    if task == "object":
        if rng.random() < 0.5:
            # A zoomed crop shows colour and kind but not size, so the answer names only those.
            article = "an" if shape.color[0] in "aeiou" else "a"
            return Turn(task, f"Which shape is shown in {spec.OBJECT_TOKEN}?",
                        f"{article} {shape.color} {shape.kind}", shape, True)
        return Turn(task, f"Where is {spec.OBJECT_TOKEN} in the image?", _box_text(scene, shape), shape,
                    True)
    if task == "describe":
        return Turn(task, "Describe the image briefly.", describe(scene))
    raise ValueError(f"unknown tgg_shapes task {task!r}; expected one of {TASKS}")


def more_turns(scene: Scene, task: str, rng: np.random.Generator, count: int, asked: set) -> list[Turn]:
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


def vocabulary_phrases() -> list[str]:
    """Every attribute phrase and position word the tasks can produce (for tokenizer corpora)."""
    phrases = [f"the {size} {color} {kind}" for size in SIZES for color in COLORS for kind in KINDS]
    phrases += [f"Is there {_article(color)} {color} {kind} in the image?"
                for color in COLORS for kind in KINDS]
    phrases += ["on the left", "on the right", "at the top", "at the bottom", "Yes", "No"]
    return phrases
