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

This module assembles the records; `shape_scenes` generates the scenes, `shape_render` draws
them and `shape_tasks` writes the questions and answers.
"""

from __future__ import annotations

import numpy as np

from tgg_jax.data.shape_render import encode_png, render_scene
from tgg_jax.data.shape_scenes import sample_scene
from tgg_jax.data.shape_tasks import TASKS, make_turn, more_turns

SPLITS = ("train", "validation", "test")


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
        turns += more_turns(scene, task, rng, more, asked={turns[0].question})
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
